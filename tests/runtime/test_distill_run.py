"""Both distillation placements run for real on 2 gloo ranks and train the same student."""

from __future__ import annotations

import json

import pytest

from simplan.distill import separate_config
from simplan.errors import SimplanError
from simplan.runtime import config_for
from simplan.runtime.distill_run import DistillJob, run_distill

pytestmark = pytest.mark.distributed


def _job(placement: str) -> DistillJob:
    cfg = config_for("ddp", 2, micro_batch=16)
    return DistillJob(
        student="mlp",
        teacher="mlp-wide",
        placement=placement,
        config=cfg if placement == "colocated" else separate_config(cfg, 1),
        steps=4,
        warmup=2,
        profile_repeats=2,
        timeout_s=60.0,
    )


def test_colocated_and_separate_train_alike():
    """Two DDP replicas of 16 samples and one student with two micro-batches of 16 compute
    the same averaged gradients from the same teacher logits: their losses agree step by step,
    and fall."""
    colocated, separate = run_distill(_job("colocated")), run_distill(_job("separate"))
    for m in (colocated, separate):
        assert len(m.student_step_s) == 4 and m.step_time_s > 0
        assert set(m.profiles) == {"student", "teacher"}
        # warm-up, and per block of timed steps (4 rounds of profiling and steps) one untimed
        # step first, then its timed one
        assert len(m.losses) == 2 + 4 * 2
        assert m.losses[-1] < m.losses[0]
        assert m.to_dict()["teacher_s"] > 0
    assert separate.losses == pytest.approx(colocated.losses, rel=1e-4)


def test_simulated_only_placement_is_refused():
    with pytest.raises(SimplanError, match="simulated only"):
        _job("precomputed")


def test_cli_validates_a_separate_teacher_and_records_it(tmp_path):
    """simplan validate --teacher, in a fresh folder (its profiles and record land there)."""
    from tests.helpers import run_cli

    argv = ("validate", "--model", "mlp", "--teacher", "mlp-wide", "--placement", "separate")
    result = run_cli(*argv, "--steps", "20", "--min-time", "0", "--json", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["schema"]["kind"] == "distill-validation-record"
    pred, meas = record["predicted_step_s"], record["measured_step_s"]
    assert pred > 0 and meas > 0
    assert record["rel_error"] == pytest.approx((pred - meas) / meas)
    assert record["profile_source"] == "in-run"
    predicted = record["predicted"]
    assert predicted["logits_bytes"] == 2 * 64 * 10 * 4  # 2 micro-batches of 64 x 10 fp32
    assert predicted["teacher_memory"]["weights_bytes"] == 669_706 * 4
    assert len(record["measured"]["per_step_s"]) == 20
    assert (tmp_path / record["path"]).is_file()
    assert all((tmp_path / p).is_file() for p in record["profiles"].values())
