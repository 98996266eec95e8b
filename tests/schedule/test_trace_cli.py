"""`simplan trace check|speeds|generate` through the command line: summaries, the speed table
and its cache, and bad traces as one-line errors with exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simplan.schedule.trace import COLUMNS, read_trace
from tests.helpers import ROOT
from tests.helpers import run_main as _run

TINY = str(ROOT / "examples" / "traces" / "tiny.csv")
SMALL = str(ROOT / "examples" / "traces" / "small.csv")


def _refused(capsys, argv: tuple[str, ...], needle: str) -> None:
    code, out, err = _run(capsys, *argv)
    assert code == 2, (code, out, err)
    assert out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert needle in err, err


def test_check_summarises_the_examples(capsys) -> None:
    code, out, _ = _run(capsys, "trace", "check", TINY, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["jobs"] == 8
    assert doc["work_steps"] == pytest.approx(345.0)  # 20 + 50 + 20 + 40 + 30 + 60 + 25 + 100
    code, out, _ = _run(capsys, "trace", "check", SMALL, "--cluster", "dgx-a100", "--nodes", "2")
    assert code == 0 and "every job has an allocation on dgx-a100" in out
    assert len(read_trace(SMALL)) == 40


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ("1,a,nope,8,,10,steps,,,,,,", "line 2, field model: unknown model 'nope'"),
        ("1,a,mlp,8,,-3,steps,,,,,,", "line 2, field work: must be > 0, got -3"),
        ("1,a,mlp,8,,10,steps,,,,,,\n1,a,mlp,8,,10,steps,,,,,,", "line 3, field id: 'a' repeats"),
        ("1,a,mlp,8,,10", "line 2, field (row)"),
    ],
)
def test_bad_traces_are_one_line(capsys, tmp_path: Path, row: str, needle: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(",".join(COLUMNS) + "\n" + row + "\n")
    for verb in (("check", str(path)), ("speeds", str(path), "--cluster", "localhost-cpu")):
        _refused(capsys, ("trace", *verb), needle)


def test_a_job_that_fits_nowhere(capsys, tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(",".join(COLUMNS) + "\n1,big,mlp,8,,10,steps,,,,16,,\n")
    _refused(capsys, ("trace", "check", str(path), "--cluster", "localhost-cpu"),
             "job big, field min_gpus: needs 16..any GPUs")  # fmt: skip
    path.write_text(",".join(COLUMNS) + "\n1,huge,llama3-70b,16,,10,steps,,,,,1,\n")
    _refused(capsys, ("trace", "speeds", str(path), "--cluster", "dgx-h100", "--executor",
                      "inline"), "job huge: fits no allocation of dgx-h100")  # fmt: skip


def test_speeds_then_the_cache(capsys, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SIMPLAN_CACHE_DIR", str(tmp_path))
    argv = ("trace", "speeds", TINY, "--cluster", "localhost-cpu", "--executor", "inline")
    code, out, _ = _run(capsys, *argv, "--json")
    first = json.loads(out)
    kinds = {j.kind for j in read_trace(TINY)}
    assert code == 0 and {r["job_kind"] for r in first["speeds"]} == kinds
    assert first["searched"] == len(first["speeds"]) == len(list((tmp_path / "speeds").iterdir()))
    code, out, _ = _run(capsys, *argv, "--json")
    second = json.loads(out)
    assert second["searched"] == 0 and second["cached"] == first["searched"]
    assert second["speeds"] == first["speeds"]
    code, out, _ = _run(capsys, *argv)
    assert code == 0 and "0 plan searches run" in out and "gpt-tiny|gb8|s0" in out


def test_speeds_with_a_measured_table(capsys, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SIMPLAN_CACHE_DIR", str(tmp_path))
    measured = tmp_path / "m.csv"
    measured.write_text("job,gpu_type,gpus,steps_per_s\nmlp,cpu,1,250\nmlp,cpu,2,400\n")
    code, out, _ = _run(capsys, "trace", "speeds", TINY, "--cluster", "localhost-cpu",
                        "--executor", "inline", "--measured", str(measured), "--json")  # fmt: skip
    rows = json.loads(out)["speeds"]
    mlp = [r for r in rows if r["model"] == "mlp"]
    assert code == 0 and mlp and all(r["source"] == "measured" for r in mlp)
    assert {r["steps_per_s"] for r in mlp} == {250.0, 400.0}
    assert all(r["source"] == "simulated" for r in rows if r["model"] == "gpt-tiny")


def test_generate_writes_a_trace(capsys, tmp_path: Path) -> None:
    out_path = tmp_path / "g.json"
    argv = ("trace", "generate", "--jobs", "6", "--seed", "3", "--cluster", "dgx-a100",
            "--executor", "inline", "--out", str(out_path), "--json")  # fmt: skip
    code, out, _ = _run(capsys, *argv)
    doc = json.loads(out)
    jobs = read_trace(out_path)
    assert code == 0 and doc["jobs"] == 6 == len(jobs)
    assert all(j.min_gpus == j.max_gpus and j.work >= 1 for j in jobs)
    _refused(capsys, ("trace", "generate", "--cluster", "dgx-a100", "--out", "x.txt"),
             "name a .csv or .json file")  # fmt: skip
    _refused(capsys, ("trace", "speeds", TINY, "--cluster", "localhost-cpu", "--executor",
                      "ray"), "use local, local:N")  # fmt: skip
