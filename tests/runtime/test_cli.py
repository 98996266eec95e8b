"""`simplan validate` on bad input: one line, exit 2, no ranks started."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import assert_one_line_error, run_cli


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--strategy", "zero9"], "unknown strategy 'zero9'"),
        (["--nprocs", "0"], "argument --nprocs: expected a whole number from 1"),
        (["--micro-batch", "0"], "argument --micro-batch: expected a whole number from 1"),
        (["--strategy", "tp", "--compress", "fp16"], "needs DDP only"),
        (["--local-sgd", "4", "--compress", "fp16"], "choose one"),
        (["--powersgd-rank", "4"], "--powersgd-rank needs --compress powersgd"),
        (["--compress", "powersgd", "--warmup", "1"], "use --warmup 2 or more"),
        (["--min-time", "-1"], "argument --min-time: expected a finite number from 0"),
    ],
)
def test_bad_arguments(args: list[str], needle: str) -> None:
    result = run_cli("validate", "--model", "mlp", *args, timeout=120)
    assert_one_line_error(result, needle)


def test_plan_of_another_schema(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"schema": {"kind": "profile", "version": 1}}))
    assert_one_line_error(run_cli("validate", "--plan", str(path)), "not a simplan plan file")


def test_plan_of_another_version(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"schema": {"kind": "plan", "version": 99}}))
    assert_one_line_error(run_cli("validate", "--plan", str(path)), "version 99")


def test_unknown_model() -> None:
    assert_one_line_error(run_cli("validate", "--model", "nosuch"), "unknown model 'nosuch'")


def _plan(tmp_path: Path, **config: object) -> Path:
    from simplan.parallel import ParallelConfig
    from simplan.planfile import ClusterRef, PlanFile, write_plan

    plan = PlanFile(
        model="mlp",
        cluster=ClusterRef(spec="localhost-cpu", nodes=1, gpus_per_node=4),
        config=ParallelConfig(dtype="fp32", **config),  # type: ignore[arg-type]
    )
    return write_plan(plan, tmp_path / "plan.json")


def test_plan_the_runtime_cannot_run(tmp_path: Path) -> None:
    """Hybrid plans run (tests/runtime/test_oracle.py); what none can run is refused before any
    profile or rank."""
    path = _plan(tmp_path, dp=2, tp=2, global_batch=4, zero=1)
    assert_one_line_error(run_cli("validate", "--plan", str(path)), "ZeRO-1 with tp")
    path = _plan(tmp_path, dp=2, global_batch=4, recompute="selective")
    assert_one_line_error(run_cli("validate", "--plan", str(path)), "no attention")


def test_plan_on_other_world_size(tmp_path: Path) -> None:
    path = _plan(tmp_path, dp=4, global_batch=4)
    result = run_cli("validate", "--plan", str(path), "--nprocs", "2")
    assert_one_line_error(result, "the plan runs on 4 ranks")


def test_short_steps_are_timed_for_the_minimum_time() -> None:
    from simplan.validate import MAX_STEPS, timed_steps

    assert timed_steps(30, 1.0, 2e-3) == 500  # 1 s of 2 ms steps
    assert timed_steps(30, 1.0, 0.1) == 30  # long steps: --steps already lasts 3 s
    assert timed_steps(30, 1.0, 1e-6) == MAX_STEPS
    assert timed_steps(30, 0.0, 2e-3) == 30  # --min-time 0: exactly --steps


def test_validation_options_refuse_an_unknown_profile_source() -> None:
    from simplan.errors import SimplanError
    from simplan.validate import ValidationOptions

    with pytest.raises(SimplanError, match="profile source must be one of in-run, standalone"):
        ValidationOptions(profile_source="elsewhere")
