"""Exports of plans that offload the optimizer to the host: DeepSpeed's offload_optimizer (read
back by DeepSpeed's own config class), Megatron-LM's --optimizer-cpu-offload (names in the pinned
argument list), and one-line refusals where a framework cannot express it exactly."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from simplan.errors import SimplanError
from simplan.parallel import ParallelConfig
from simplan.planfile import ClusterRef, PlanFile
from simplan.planner.plan import from_planfile
from tests.planner.test_export import PINS
from tests.planner.test_export_frameworks import installed


def _plan(model: str = "gpt3-125m", **fields):
    config = ParallelConfig(micro_batch=1, seq_len=0, offload="optimizer", **fields)
    ref = ClusterRef(spec="dgx-a100", nodes=1, gpus_per_node=config.world_size)
    return from_planfile(PlanFile(model=model, cluster=ref, config=config))


DEEPSPEED_OFFLOAD = """
import json, sys
import deepspeed.runtime.config as config
config.dist.get_rank = lambda *args, **kwargs: 0
class DataParallel:
    def __init__(self, size): self.size = size
    def get_data_parallel_world_size(self): return self.size
    def get_data_parallel_rank(self): return 0
    def get_model_parallel_world_size(self): return 1
    def get_model_parallel_rank(self): return 0
out = []
for arg in sys.argv[1:]:
    path, dp = arg.rsplit(":", 1)
    c = config.DeepSpeedConfig(json.load(open(path)), mpu=DataParallel(int(dp)))
    off = c.zero_config.offload_optimizer
    device = getattr(off.device, "value", off.device)
    out.append({"zero": int(c.zero_optimization_stage), "device": str(device),
                "pin_memory": bool(off.pin_memory), "params": c.zero_config.offload_param})
print(json.dumps(out))
"""


@pytest.mark.skipif(not installed("deepspeed"), reason="the frameworks extra is not installed")
def test_deepspeed_reads_offload_optimizer_to_the_cpu(tmp_path):
    plans = [_plan(global_batch=4), _plan(dp=2, zero=1, global_batch=4),
             _plan(dp=2, zero=3, global_batch=4)]  # fmt: skip
    args = []
    for i, plan in enumerate(plans):
        path = tmp_path / f"ds-{i}.json"
        path.write_text(plan.export("deepspeed"))
        args.append(f"{path}:{plan.config.dp}")
    done = subprocess.run(
        [sys.executable, "-c", DEEPSPEED_OFFLOAD, *args], capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert [g["zero"] for g in got] == [2, 1, 3]  # one rank: ZeRO-Offload's stage 2
    assert all(g["device"] == "cpu" and g["pin_memory"] for g in got)
    assert all(g["params"] is None for g in got)  # the parameters stay on the device


def test_megatron_offloads_its_distributed_optimizer_with_pinned_flags():
    args = _plan(global_batch=4).export("megatron")
    for flag in ("--use-distributed-optimizer", "--optimizer-cpu-offload",
                 "--optimizer-offload-fraction 1.0"):  # fmt: skip
        assert flag in args
        assert flag.split()[0] in PINS["megatron"]["arguments"]
    assert "--optimizer-cpu-offload" in _plan(dp=2, zero=1, global_batch=4).export("megatron")


@pytest.mark.skipif(not installed("megatron.core"), reason="the frameworks extra is not installed")
def test_megatron_core_has_the_optimizer_offload_it_is_exported_to():
    from megatron.core.optimizer.optimizer_config import OptimizerConfig

    config = OptimizerConfig(
        optimizer="adam", use_distributed_optimizer=True, optimizer_cpu_offload=True,
        optimizer_offload_fraction=1.0,
    )  # fmt: skip
    assert config.optimizer_cpu_offload and config.optimizer_offload_fraction == 1.0


@pytest.mark.parametrize(
    ("kind", "fields", "says"),
    [
        ("torchtitan", {"model": "llama3-8b", "global_batch": 4}, "parameters and gradients on"),
        ("megatron", {"dp": 2, "zero": 2, "global_batch": 4}, "plan with --zero 1"),
        ("megatron", {"dp": 2, "zero": 0, "global_batch": 4}, "plan with --zero 1"),
        ("deepspeed", {"dp": 2, "zero": 0, "global_batch": 4}, "needs ZeRO 1, 2 or 3"),
    ],
)
def test_frameworks_that_cannot_express_it_refuse_in_one_line(kind, fields, says):
    with pytest.raises(SimplanError, match=says) as err:
        _plan(**fields).export(kind)
    assert "\n" not in str(err.value)
