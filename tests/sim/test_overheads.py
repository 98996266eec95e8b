"""Runtime overheads (CUDA context, NCCL) are reported apart from the tensor memory the
simulator models: the headroom's parts, from simplan/data/reference/memory_overheads.csv."""

from __future__ import annotations

import json

import pytest

from simplan.cli import main
from simplan.headroom import NO_HEADROOM, Headroom, published_overheads_bytes
from simplan.parallel import ParallelConfig
from simplan.sim.run import simulate
from simplan.units import GiB

CONFIG = ParallelConfig(micro_batch=2, global_batch=2, dtype="bf16")


def test_overheads_are_the_headroom_by_cause_and_not_in_the_peak() -> None:
    default = simulate("gpt3-125m", "h200-1gpu", CONFIG, record=False)
    bare = simulate("gpt3-125m", "h200-1gpu", CONFIG, record=False, headroom=NO_HEADROOM)
    (d,) = default.devices
    assert d.overheads == published_overheads_bytes()  # 0.92 + 2.00 GiB
    assert sum(d.overheads.values()) == pytest.approx(d.headroom_bytes)
    assert d.peak_memory_bytes == bare.devices[0].peak_memory_bytes  # tensors only
    assert bare.devices[0].overheads == {}
    share = simulate("gpt3-125m", "h200-1gpu", CONFIG, record=False, headroom=Headroom(
        reserved_bytes=0.0, fraction=0.1))  # fmt: skip
    assert share.devices[0].overheads == {"share_of_capacity": 0.1 * d.capacity_bytes}


def test_simulate_prints_and_writes_the_overheads(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["simulate", "--model", "gpt3-125m", "--cluster", "h200-1gpu", "--global-batch", "2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "CUDA context and kernels 0.92 GiB + NCCL / torch.distributed 2.00 GiB" in out
    assert main([*argv, "--json"]) == 0
    (device,) = json.loads(capsys.readouterr().out)["devices"]
    assert device["overheads"] == {"cuda_context": 0.92 * GiB, "nccl_init": 2.00 * GiB}
