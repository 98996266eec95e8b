"""Simulator oracles a person can check by hand: sums, bubble fractions, ring all-reduce."""

from __future__ import annotations

import pytest

from simplan.costmodel import layer_costs, optimizer_step_s
from simplan.model_graph import ModelGraph, OpCost
from simplan.parallel import ParallelConfig
from simplan.sim.run import simulate
from simplan.sources import load_model
from simplan.topology import load_cluster
from tests.helpers import chain_graph

BLOCK = OpCost(gemms=((2e12, 1e8, 4),), mem_bytes=1e7, mem_ops=4)
BLOCK_BWD = OpCost(gemms=((2e12, 1e8, 8),), mem_bytes=2e7, mem_ops=4)


def uniform_chain(n: int = 8, params: int = 0, output_bytes: float = 1.0) -> ModelGraph:
    """n identical layers (about 10 ms each on an H100) whose activations barely cost anything
    to send (a send still pays the collective launch latency, tens of microseconds)."""
    return chain_graph(n, params=params, io_bytes=output_bytes, fwd_ops=BLOCK, bwd_ops=BLOCK_BWD)


def h100s(n: int):
    return load_cluster("dgx-h100", nodes=1, gpus_per_node=n)


def test_one_device_is_the_sum_of_layers_plus_the_optimizer() -> None:
    graph = load_model("gpt3-125m", seq_len=512, dtype="bf16")
    cluster = h100s(1)
    config = ParallelConfig(micro_batch=2, global_batch=6, dtype="bf16")
    result = simulate(graph, cluster, config)
    device = cluster.device_model(0)
    costs = layer_costs(graph, device, "bf16", 2)
    expected = 3 * sum(c.fwd_s + c.bwd_s for c in costs) + optimizer_step_s(
        graph.params, device, "bf16"
    )
    assert result.step_time_s == pytest.approx(expected, rel=1e-9)
    assert result.breakdown["bubble_s"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
@pytest.mark.parametrize("p,m", [(2, 4), (4, 8), (4, 16)])
def test_bubble_fraction(schedule: str, p: int, m: int) -> None:
    result = simulate(
        uniform_chain(),
        h100s(p),
        ParallelConfig(pp=p, micro_batch=1, global_batch=m, schedule=schedule),
    )
    busy = result.devices[0].compute_s
    bubble = result.devices[0].bubble_s
    assert bubble / (busy + bubble) == pytest.approx((p - 1) / (m + p - 1), rel=0.01)


def test_interleaving_shrinks_the_bubble_by_v() -> None:
    p, m, v = 4, 8, 2
    plain = simulate(
        uniform_chain(16), h100s(p), ParallelConfig(pp=p, micro_batch=1, global_batch=m)
    )
    inter = simulate(
        uniform_chain(16),
        h100s(p),
        ParallelConfig(
            pp=p, micro_batch=1, global_batch=m, schedule="interleaved", virtual_stages=v
        ),
    )
    stage_time = plain.devices[0].compute_s / m  # tf + tb of one full stage
    assert plain.breakdown["bubble_s"] == pytest.approx((p - 1) * stage_time, rel=0.01)
    assert inter.breakdown["bubble_s"] == pytest.approx((p - 1) * stage_time / v, rel=0.01)


def test_pure_dp_adds_exactly_the_ring_all_reduce() -> None:
    graph = uniform_chain(1, params=50_000_000)
    grads = 50_000_000 * 2
    one = simulate(
        graph, h100s(1), ParallelConfig(dp=1, global_batch=2, micro_batch=2, bucket_bytes=2 * grads)
    )
    cluster = h100s(4)
    four = simulate(
        graph, cluster, ParallelConfig(dp=4, global_batch=8, micro_batch=2, bucket_bytes=2 * grads)
    )
    ring = cluster.collective_time("all_reduce", grads, [0, 1, 2, 3])
    assert cluster.algorithm("all_reduce", grads, [0, 1, 2, 3]) == "ring"
    opt_saving = 0.0  # no ZeRO: every replica runs the same optimizer step
    assert four.step_time_s - one.step_time_s == pytest.approx(ring - opt_saving, rel=1e-6)


def test_dp_overlaps_gradient_sync_with_backward() -> None:
    graph = load_model("gpt3-350m", seq_len=1024, dtype="bf16")
    cluster = load_cluster("dgx-a100", nodes=2)
    cfg = ParallelConfig(dp=16, global_batch=32, micro_batch=2, dtype="bf16")
    overlapped = simulate(graph, cluster, cfg, record=False)
    after = simulate(graph, cluster, cfg.replace(overlap_grad_reduce=False), record=False)
    assert overlapped.step_time_s < after.step_time_s
    assert overlapped.breakdown["exposed_comm_s"] < after.breakdown["exposed_comm_s"]
