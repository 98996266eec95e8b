"""`simplan report ...` and `simplan simulate --report`: report directories, and one-line
errors with exit status 2 for empty or foreign input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simplan.cli import main
from simplan.io import schema_header, write_json_atomic
from simplan.parallel import ParallelConfig
from simplan.planfile import ClusterRef, PlanFile, write_plan
from tests.plan_files import TINY_MODEL


def one_line_error(capsys: pytest.CaptureFixture[str], code: int, *needles: str) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err
    return err


def test_validation_report(runs_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "val"
    assert main(["report", "validation", "--runs", str(runs_dir), "--out", str(out)]) == 0
    index = (out / "index.md").read_text()
    assert "![predicted against measured step time, y = x and ±10%](validation.png)" in index
    assert "| run 1 | mlp | fsdp | 2 | 8 | 20 | 30 | -33.3% |" in index
    for name in ("validation.png", "validation.svg", "errors.png", "errors.svg"):
        assert (out / name).stat().st_size > 1000
    assert str(out / "index.md") in capsys.readouterr().out


def test_empty_runs_directory_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "runs").mkdir()
    code = main(
        ["report", "validation", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "o")]
    )
    one_line_error(capsys, code, "no validation records")
    assert not (tmp_path / "o").exists()


def test_a_file_of_another_schema_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    other = write_json_atomic({"schema": schema_header("sim-result", 1)}, tmp_path / "r.json")
    one_line_error(capsys, main(["report", "plan", str(other)]), "not a simplan plan")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    one_line_error(capsys, main(["report", "plan", str(bad)]), "malformed JSON")
    empty = write_json_atomic(
        {"schema": schema_header("plans", 1), "plans": []}, tmp_path / "plans.json"
    )
    one_line_error(capsys, main(["report", "plan", str(empty)]), "lists no plans")
    broken = write_json_atomic(
        {"schema": schema_header("plans", 1), "plans": [{"schema": schema_header("plan", 1)}]},
        tmp_path / "broken.json",
    )
    one_line_error(capsys, main(["report", "plan", str(broken)]), "plans[0]: model is missing")
    one_line_error(capsys, main(["report", "plan", str(tmp_path / "missing.json")]), "no such")


def test_sweep_with_an_unknown_knob_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "report",
                "sweep",
                "--model",
                "m",
                "--cluster",
                "c",
                "--vary",
                "colour",
                "--values",
                "1",
                "--global-batch",
                "8",
            ]
        )
    assert exc.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.fixture
def tiny_plans(tmp_path: Path) -> Path:
    model = tmp_path / "tiny.toml"
    model.write_text(TINY_MODEL)
    ref = ClusterRef(spec="dgx-h100", nodes=1, gpus_per_node=4)

    def doc(role: str, dp: int, pp: int) -> dict:
        config = ParallelConfig(dp=dp, pp=pp, micro_batch=1, global_batch=8)
        return PlanFile(
            model=str(model), cluster=ref, config=config, extra={"role": role}
        ).to_dict()

    write_plan(
        PlanFile(model=str(model), cluster=ref, config=ParallelConfig(dp=2, pp=2, global_batch=8)),
        tmp_path / "plan.json",
    )
    plans = {
        "schema": schema_header("plans", 1),
        "plans": [doc("plan", 2, 2)],
        "baselines": [doc("baseline:pure-dp", 4, 1)],
    }
    return write_json_atomic(plans, tmp_path / "plans.json")


def test_plan_report_from_a_plans_file(tiny_plans: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    assert main(["report", "plan", str(tiny_plans), "--out", str(out), "--format", "png"]) == 0
    index = (out / "index.md").read_text()
    for name in ("compare", "breakdown_plans", "timeline", "breakdown", "memory", "memory_time"):
        assert f"({name}.png)" in index
        assert (out / f"{name}.png").is_file() and not (out / f"{name}.svg").exists()
    assert "| plan 1 | plan | dp2 tp1 pp2 mb1 gb8 1f1b |" in index
    assert "| pure-dp | baseline:pure-dp | dp4 tp1 pp1 mb1 gb8 1f1b |" in index


def test_plan_report_default_name_and_single_plan(
    tiny_plans: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    kept = tmp_path / "reports" / "tiny-dgx-h100-1n" / "index.md"  # an earlier, committed one
    kept.parent.mkdir(parents=True)
    kept.write_text("kept")
    written = []
    plan = str(tiny_plans.parent / "plan.json")
    for _ in range(2):
        assert main(["report", "plan", plan, "--format", "png"]) == 0
        written.append(capsys.readouterr().out.strip().removeprefix("report written to "))
    assert kept.read_text() == "kept"  # without --out, each report goes to a new folder
    assert len(set(written)) == 2
    for index in written:
        assert Path(index).parent.parent == Path("reports")
        assert Path(index).parent.name.startswith("tiny-dgx-h100-1n-")
        assert "compare.png" in Path(index).read_text()


def test_simulate_report(tiny_plans: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "sim"
    code = main(
        ["simulate", "--plan", str(tiny_plans.parent / "plan.json"), "--json", "--report", str(out)]
    )
    assert code == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["config"]["pp"] == 2  # the JSON stays parseable
    assert "report written" in captured.err
    assert {"timeline.png", "timeline.svg", "index.md"} <= {p.name for p in out.iterdir()}
