"""`simplan validate` of a multi-task model: one-line refusals (exit 2) before any rank starts,
and the report's per-task curves from a multi-task record."""

from __future__ import annotations

import json

import pytest

from simplan.io import schema_header
from simplan.outputs import write_json_atomic
from simplan.report.reports import write_validation_report
from tests.helpers import run_cli, run_main

MODEL = "mtl-vision#image=32"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (("--model", "mlp", "--weighting", "gradnorm"), "declares no tasks"),
        (("--model", "mlp", "--placement", "task-parallel"), "declares no tasks"),
        (("--model", MODEL, "--placement", "colocated"), "places a distillation teacher"),
        (
            ("--model", "mlp", "--teacher", "mlp-wide", "--placement", "task-parallel"),
            "--teacher distils",
        ),
        (("--model", MODEL, "--placement", "task-parallel", "--nprocs", "3"), "--nprocs 2"),
        (("--model", MODEL, "--strategy", "fsdp"), "drop them"),
        (("--model", MODEL, "--global-batch", "5"), "multiple of 2"),
        (("--model", "mtl-text"), "labels part of the batch"),
    ],
)
def test_bad_multitask_validations_are_one_line_exit_2(capsys, tmp_path, argv, needle):
    code, _, err = run_main(capsys, "validate", *argv, "--runs-dir", str(tmp_path))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and needle in lines[0], err
    assert not list(tmp_path.iterdir())  # nothing ran, nothing recorded


def _record(weights: list[float]) -> dict:
    steps = len(weights)
    curve = {"losses": [2.0 / (i + 1) for i in range(steps)], "weights": weights}
    curve["grad_norms"] = [1.0] * steps
    return {
        "schema": schema_header("mtl-validation-record", 1),
        "model": MODEL,
        "placement": "task-parallel",
        "weighting": "gradnorm",
        "strategy": "mtl-task-parallel",
        "nprocs": 2,
        "micro_batch": 4,
        "configuration": f"{MODEL} mtl-task-parallel gradnorm x2 gb4",
        "predicted_step_s": 0.1,
        "measured_step_s": 0.11,
        "rel_error": -1 / 11,
        "measured": {"tasks": {"classify": curve, "detect": dict(curve, weights=weights[::-1])}},
    }


def test_the_validation_report_plots_every_tasks_loss_and_weight(tmp_path):
    runs = tmp_path / "runs"
    write_json_atomic(_record([1.0, 0.8, 0.6]), runs / "a.json")
    index = write_validation_report(runs, tmp_path / "out", formats=("png",))
    text = index.read_text()
    assert "Multi-task training: loss and weight per task" in text
    assert "| classify | 2.000 -> 0.667 | 1.000 -> 0.600 |" in text
    assert "| detect | 2.000 -> 0.667 | 0.600 -> 1.000 |" in text
    assert (tmp_path / "out" / "tasks-0.png").is_file()


@pytest.mark.distributed
def test_validate_runs_a_placement_and_records_the_task_curves(tmp_path):
    """The whole verb, in a directory of its own (profiles under tmp_path/traces)."""
    result = run_cli(
        "validate", "--model", MODEL, "--nprocs", "2", "--placement", "task-parallel",
        "--micro-batch", "2", "--steps", "2", "--warmup", "1", "--min-time", "0",
        "--weighting", "dwa", "--default-scheduling", "--runs-dir", str(tmp_path / "runs"),
        "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["placement"] == "task-parallel" and record["weighting"] == "dwa"
    assert record["predicted_step_s"] > 0 and record["measured_step_s"] > 0
    assert record["profile_source"] == "in-run"
    tasks = record["measured"]["tasks"]
    assert set(tasks) == {"classify", "detect"} and len(tasks["detect"]["weights"]) == 3
    assert [d["role"] for d in record["predicted"]["devices"]] == ["trunk", "head detect"]
    assert len(list((tmp_path / "runs").glob("*.json"))) == 1
