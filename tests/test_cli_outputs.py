"""Output paths are checked before any work: each bad one is a one-line error with exit status 2,
nothing is written, and the work (search, simulation, measurement, ranks) never starts."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from simplan.cli import main
from tests.plan_files import write_tiny_plan

PLAN = ["--model", "gpt3-125m", "--cluster", "dgx-a100", "--nodes", "1", "--global-batch", "16"]
SIM = [*PLAN, "--tp", "8"]
READ_ONLY = "/proc/simplan-no-such-dir/out"  # nothing can be created there, even by root


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(root.rglob("*"))
    }


def _no_work(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace every slow entry point with one that records that it was reached."""
    import simplan.commands.profile
    import simplan.planner
    import simplan.sim.run
    import simplan.topology.bench
    import simplan.validate

    started: list[str] = []

    def stub(name: str) -> Callable[..., None]:
        def reached(*args: object, **kwargs: object) -> None:
            started.append(name)
            raise AssertionError(f"{name} started before its output path was checked")

        return reached

    monkeypatch.setattr(simplan.planner, "search", stub("search"))
    monkeypatch.setattr(simplan.sim.run, "simulate", stub("simulate"))
    monkeypatch.setattr(simplan.topology.bench, "run_bench", stub("bench"))
    monkeypatch.setattr(simplan.validate, "validate", stub("validate"))
    monkeypatch.setattr(simplan.commands.profile, "_measure", stub("profile"))
    return started


@pytest.fixture
def place(tmp_path: Path) -> Path:
    (tmp_path / "a-dir").mkdir()
    (tmp_path / "a-file").write_text("the user's")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("the user's")
    return tmp_path


CASES = [
    (["simulate", *SIM, "--trace", "{t}/a-dir"], "--trace", "is a directory"),
    (["simulate", *SIM, "--trace", "{t}/a-file/x.json"], "--trace", "is not a directory"),
    (["simulate", *SIM, "--trace", READ_ONLY], "--trace", "choose another path"),
    (["simulate", *SIM, "--report", "{t}/a-file"], "--report", "is a file"),
    (["simulate", *SIM, "--report", "{t}/foreign"], "--report", "did not write (notes.txt)"),
    (["simulate", *SIM, "--report", "{t}/r", "--trace", "{t}/r/t.json"], "--trace", "inside"),
    (["plan", *PLAN, "--out", "{t}/a-file"], "--out", "is a file"),
    (["plan", *PLAN, "--out", "{t}/foreign"], "--out", "did not write"),
    (["plan", *PLAN, "--out", READ_ONLY], "--out", "choose another path"),
    (["plan", *PLAN, "--report", "{t}/a-file/r"], "--report", "is not a directory"),
    (["plan", *PLAN, "--out", "{t}/p", "--report", "{t}/p/r"], "--report", "overlap"),
    (["plan", *PLAN, "--out", "{t}/p", "--report", "{t}/p"], "--report", "overlap"),
    (["report", "plan", "{t}/plan.json", "--out", "{t}/a-file"], "--out", "is a file"),
    (["report", "plan", "{t}/plan.json", "--out", "{t}/foreign"], "--out", "did not write"),
    (["report", "validation", "--runs", "{t}", "--out", READ_ONLY], "--out", "another path"),
    (["profile", "mlp", "--device", "cpu", "--out", "{t}/a-dir"], "--out", "is a directory"),
    (["bench-comm", "--out", "{t}/a-dir"], "--out", "is a directory"),
    (["bench-comm", "--calibration", "{t}/a-file/c.json"], "--out", "is not a directory"),
    (["clusters", "show", "dgx-a100", "--plot", "{t}/a-dir"], "--plot", "is a directory"),
    (["clusters", "show", "dgx-a100", "--plot", READ_ONLY], "--plot", "another path"),
    (["validate", "--model", "mlp", "--runs-dir", "{t}/a-file"], "--runs-dir", "is a file"),
    (["validate", "--model", "mlp", "--runs-dir", READ_ONLY], "--runs-dir", "another path"),
    (["validate", "--model", "mlp", "--calibration", "{t}/none.json"], "none.json", "no such"),
]


@pytest.mark.parametrize(("argv", "flag", "needle"), CASES)
def test_a_bad_output_path_is_refused_before_any_work(
    place: Path,
    argv: list[str],
    flag: str,
    needle: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    started = _no_work(monkeypatch)
    monkeypatch.chdir(place)
    before = tree(place)
    code = main([a.replace("{t}", str(place)) for a in argv])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2 and out == "", err
    assert len(lines) == 1 and flag in lines[0] and needle in lines[0], err
    assert started == []
    assert tree(place) == before


def test_a_report_never_touches_a_user_directory(
    place: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A report of an existing simplan report directory replaces it; the user's is kept."""
    plan = write_tiny_plan(place)
    before = tree(place / "foreign")
    assert main(["report", "plan", str(plan), "--format", "png", "--out", str(place / "r")]) == 0
    first = json.loads((place / "r" / ".simplan-set.json").read_text())["files"]
    assert "index.md" in first and "compare.png" in first
    assert main(["report", "plan", str(plan), "--format", "svg", "--out", str(place / "r")]) == 0
    names = {p.name for p in (place / "r").iterdir()}
    assert "compare.svg" in names and "compare.png" not in names  # the old set is gone whole
    assert tree(place / "foreign") == before
    shutil.rmtree(place / "r")
