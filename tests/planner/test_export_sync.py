"""Exports and the synchronisation knobs: Megatron-LM (and torchrun, which launches it) and
torchtitan refuse gradient compression, local SGD and staleness in one line; DeepSpeed carries
fp16/bf16 compression as its communication_data_type and refuses the rest; the plan file, which
simplan run executes, carries every knob."""

from __future__ import annotations

import json
from typing import Any

import pytest

from simplan.errors import SimplanError
from simplan.parallel import ParallelConfig
from simplan.planfile import ClusterRef, PlanFile
from simplan.planner.plan import from_planfile

KNOBS: list[dict[str, Any]] = [
    {"compress": "fp16"},
    {"compress": "bf16"},
    {"compress": "powersgd", "powersgd_rank": 4},
    {"local_sgd": 8},
    {"staleness": 2},
]


def _plan(**knobs: Any) -> Any:
    config = ParallelConfig(dp=8, micro_batch=1, global_batch=8, **knobs)
    return from_planfile(
        PlanFile(model="llama3-8b", cluster=ClusterRef(spec="dgx-h100", nodes=1), config=config)
    )


@pytest.mark.parametrize("knobs", KNOBS)
@pytest.mark.parametrize("kind", ["megatron", "torchrun", "torchtitan"])
def test_frameworks_without_the_knob_refuse_it_in_one_line(kind: str, knobs: dict) -> None:
    with pytest.raises(SimplanError) as err:
        _plan(**knobs).export(kind)
    message = str(err.value)
    assert "\n" not in message and message.startswith("cannot export to ")
    flag = next(iter(knobs)).replace("_", "-")
    assert f"--{flag.replace('powersgd-rank', 'compress')}" in message


@pytest.mark.parametrize("compress", ["fp16", "bf16"])
def test_deepspeed_reduces_gradients_at_half_width(compress: str) -> None:
    config = json.loads(_plan(compress=compress).export("deepspeed"))
    assert config["communication_data_type"] == compress


@pytest.mark.parametrize("knobs", KNOBS[2:])
def test_deepspeed_refuses_what_it_cannot_express(knobs: dict) -> None:
    with pytest.raises(SimplanError, match="cannot export to DeepSpeed"):
        _plan(**knobs).export("deepspeed")


def test_the_plan_file_carries_every_knob() -> None:
    for knobs in KNOBS:
        plan = _plan(**knobs)
        back = ParallelConfig.from_dict(plan.config.to_dict())
        assert all(getattr(back, k) == v for k, v in knobs.items())
