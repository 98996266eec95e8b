"""Real 2-rank runs of the synchronisation knobs (gloo, CPU): torch's DDP hooks and post-local
SGD as simplan.runtime.compose registers them."""

from __future__ import annotations

import math

import pytest

from simplan.compression import SYNC_WARMUP_STEPS
from simplan.errors import SimplanError
from simplan.runtime import JobSpec, config_for
from simplan.runtime.job import runtime_refusal
from simplan.runtime.launch import run_job
from simplan.sources import load_model

pytestmark = pytest.mark.distributed


def _job(steps: int, warmup: int, **knobs: object) -> JobSpec:
    config = config_for("ddp", 2, micro_batch=16, **knobs)  # type: ignore[arg-type]
    return JobSpec(model="mlp", config=config, steps=steps, warmup=warmup, baseline_steps=0,
                   timeout_s=120)  # fmt: skip


def test_local_sgd_replicas_differ_between_averages_and_agree_right_after() -> None:
    h = 4
    measured = run_job(_job(steps=8, warmup=SYNC_WARMUP_STEPS, local_sgd=h))
    r0, r1 = measured.ranks
    # the averager counts every optimizer step: warm-up, the memory step, then the timed ones;
    # from step SYNC_WARMUP_STEPS on, every h-th step averages
    first = SYNC_WARMUP_STEPS + 1
    expected = [(first + i - SYNC_WARMUP_STEPS) % h == 0 for i in range(8)]
    assert list(r0.averaged) == expected == list(r1.averaged)
    for averaged, a, b in zip(r0.averaged, r0.param_checksums, r1.param_checksums, strict=True):
        if averaged:
            assert a == pytest.approx(b, rel=1e-12)
        else:  # each replica trained on its own half of the batch since the last average
            assert not math.isclose(a, b, rel_tol=1e-9)
    local = measured.local_sgd_steps
    assert local is not None and local["sync_steps"] == 2 and local["local_steps"] == 6


@pytest.mark.parametrize(
    "knobs",
    [{"compress": "fp16"}, {"compress": "bf16"}, {"compress": "powersgd", "powersgd_rank": 2}],
)
def test_compressed_ddp_trains(knobs: dict) -> None:
    measured = run_job(_job(steps=4, warmup=SYNC_WARMUP_STEPS, **knobs))
    losses = measured.losses
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]
    assert measured.job.strategy == "ddp+" + (
        "powersgd-r2" if "powersgd_rank" in knobs else knobs["compress"]
    )
    if "powersgd_rank" in knobs:  # PowerSGD's ranks keep the default policy (worker.train)
        assert {r.scheduling for r in measured.ranks} == {"default"}


def test_refusals_are_one_line() -> None:
    mlp = load_model("mlp")
    cases = {
        "needs DDP only": config_for("tp", 2, micro_batch=4, compress="fp16"),
        "drop --staleness": config_for("ddp", 2, micro_batch=4).replace(staleness=2),
        "use zero 2 or 3": config_for("ddp", 2, micro_batch=4).replace(offload="optimizer"),
    }
    for needle, config in cases.items():
        with pytest.raises(SimplanError, match=needle) as err:
            JobSpec(model="mlp", config=config)
        assert "\n" not in str(err.value)
    big = load_model("gpt-tiny")
    why = runtime_refusal(config_for("ddp", 2, micro_batch=4, compress="powersgd"), big)
    assert "one DDP bucket" in why and "\n" not in why
    assert runtime_refusal(config_for("ddp", 2, micro_batch=4, compress="powersgd"), mlp) == ""
