"""Framework costs (DDP buckets, FSDP2 units, DTensor collectives) in the simulator: each adds
exactly what it costs where its mechanism runs. CPU ranks overlap nothing, so the step grows by
the sum of the costs charged."""

from __future__ import annotations

import dataclasses

import pytest

from simplan.parallel import ParallelConfig
from simplan.sim.run import simulate
from simplan.topology import load_cluster
from simplan.topology.comm_calibration import FrameworkCosts
from simplan.units import KiB

MLP_GRAD_BYTES = (784 * 128 + 128 + 128 * 10 + 10) * 4  # 407,080 bytes of fp32 gradients
NONE = FrameworkCosts()


def _step(config: ParallelConfig, costs: FrameworkCosts) -> float:
    cluster = load_cluster("localhost-cpu").with_framework(costs)
    return simulate("mlp", cluster, config, record=False).step_time_s


def _added(config: ParallelConfig, **costs: float) -> float:
    return _step(config, FrameworkCosts(**costs)) - _step(config, NONE)


DDP = ParallelConfig(dp=2, micro_batch=64, global_batch=128, dtype="fp32", bucket_bytes=100 * KiB)


def test_ddp_charges_each_bucket_and_each_sync_once() -> None:
    buckets = 4  # 407,080 bytes in 102,400-byte buckets: three full ones and the rest
    assert _added(DDP, ddp_bucket_s=1e-3) == pytest.approx(buckets * 1e-3, rel=1e-9)
    assert _added(DDP, ddp_step_s=1e-3) == pytest.approx(1e-3, rel=1e-9)
    assert _added(DDP, ddp_s_per_byte=1e-9) == pytest.approx(MLP_GRAD_BYTES * 1e-9, rel=1e-9)


def test_ddp_sync_points_price_the_whole_sync_by_its_bytes() -> None:
    """Measured points replace the per-bucket terms: one charge per sync, interpolated at the
    bytes it syncs (all of the MLP's gradients, whatever the buckets)."""
    points = ((100_000.0, 1e-3), (500_000.0, 3e-3))
    expected = 1e-3 + (3e-3 - 1e-3) * (MLP_GRAD_BYTES - 100_000) / 400_000
    costs = {"ddp_sync_points": points, "ddp_bucket_s": 1.0, "ddp_step_s": 1.0}
    assert _added(DDP, **costs) == pytest.approx(expected, rel=1e-9)


def test_ddp_sync_points_interpolate_flat_below_and_on_the_last_slope_above() -> None:
    costs = FrameworkCosts(ddp_sync_points=((1e5, 1e-3), (2e5, 2e-3), (4e5, 3e-3)))
    assert costs.ddp_sync_cost_s(5e4) == 1e-3
    assert costs.ddp_sync_cost_s(1.5e5) == pytest.approx(1.5e-3)
    assert costs.ddp_sync_cost_s(3e5) == pytest.approx(2.5e-3)
    assert costs.ddp_sync_cost_s(6e5) == pytest.approx(4e-3)
    assert costs.ddp_bucket_cost_s(1e5) == 0.0
    with pytest.raises(ValueError, match="ascending"):
        FrameworkCosts(ddp_sync_points=((2e5, 1e-3), (1e5, 2e-3)))


def test_ddp_costs_follow_the_bucket_count() -> None:
    one = dataclasses.replace(DDP, bucket_bytes=25 * 2**20)
    assert _added(one, ddp_bucket_s=1e-3) == pytest.approx(1e-3, rel=1e-9)


def test_fsdp_charges_two_gathers_and_one_scatter_per_unit() -> None:
    fsdp = ParallelConfig(dp=2, zero=3, micro_batch=64, global_batch=128, dtype="fp32")
    units = 2  # fc1 and fc2 hold parameters; relu is no unit
    assert _added(fsdp, fsdp_collective_s=1e-3) == pytest.approx(3 * units * 1e-3, rel=1e-9)
    assert _added(fsdp, fsdp_step_s=1e-3) == pytest.approx(1e-3, rel=1e-9)
    # each all-gather and reduce-scatter moves its unit's bytes: 3 x all the parameters
    assert _added(fsdp, fsdp_s_per_byte=1e-9) == pytest.approx(3 * MLP_GRAD_BYTES * 1e-9, rel=1e-9)


def test_tp_charges_each_collective_and_each_pass() -> None:
    """fc1 (column-parallel) needs no backward all-reduce, its input is the data; fc2
    (row-parallel) all-reduces its output in the forward pass: one collective per micro-batch."""
    tp = ParallelConfig(tp=2, micro_batch=64, global_batch=128, dtype="fp32")  # 2 micro-batches
    assert _added(tp, tp_collective_s=1e-3) == pytest.approx(2 * 1e-3, rel=1e-9)
    out_bytes = 64 * 10 * 4  # fc2's output, all-reduced once per micro-batch
    assert _added(tp, tp_s_per_byte=1e-9) == pytest.approx(2 * out_bytes * 1e-9, rel=1e-9)
    assert _added(tp, tp_step_s=1e-3) == pytest.approx(2 * 1e-3, rel=1e-9)


def test_costs_of_other_strategies_change_nothing() -> None:
    others = FrameworkCosts(fsdp_collective_s=1.0, tp_collective_s=1.0, tp_step_s=1.0)
    assert _step(DDP, others) == _step(DDP, NONE)


def test_zero_costs_leave_gpu_results_unchanged() -> None:
    cluster = load_cluster("dgx-h100", nodes=1)
    config = ParallelConfig(dp=2, tp=2, pp=2, micro_batch=1, global_batch=16, dtype="bf16")
    plain = simulate("gpt3-125m", cluster, config, record=False)
    zero = simulate("gpt3-125m", cluster.with_framework(NONE), config, record=False)
    assert zero.step_time_s == plain.step_time_s
    assert zero.breakdown == plain.breakdown


TP = ParallelConfig(tp=2, micro_batch=64, global_batch=128, dtype="fp32")


def test_dtensor_optimizer_costs_per_step_and_per_tensor_of_the_sharded_layers() -> None:
    """fc1 and fc2 are tensor-parallel, each with a weight and a bias: 4 DTensor parameters."""
    assert _added(TP, tp_optimizer_tensor_s=1e-3) == pytest.approx(4 * 1e-3, rel=1e-9)
    assert _added(TP, tp_optimizer_step_s=1e-3) == pytest.approx(1e-3, rel=1e-9)
    assert _step(DDP, FrameworkCosts(tp_optimizer_tensor_s=1.0)) == _step(DDP, NONE)


PP = ParallelConfig(pp=2, micro_batch=64, global_batch=256, dtype="fp32")  # 4 micro-batches


def test_pipeline_schedule_costs_once_per_step_on_every_rank() -> None:
    assert _added(PP, pp_step_s=1e-3) == pytest.approx(1e-3, rel=1e-9)


def test_pipeline_actions_cost_each_send_and_receive_of_a_stage() -> None:
    """Each of the 2 stages receives or sends once per micro-batch and direction: 2 x 4
    actions of its own; the step grows by at least that, and at most by the 2 x 8 actions
    of both stages in a row."""
    c = 1e-3
    added = _added(PP, pp_action_s=c)
    assert 8 * c - 1e-12 <= added <= 16 * c + 1e-12
    plain = simulate("mlp", load_cluster("localhost-cpu").with_framework(NONE), PP, record=False)
    costly = simulate(
        "mlp",
        load_cluster("localhost-cpu").with_framework(FrameworkCosts(pp_action_s=c)),
        PP,
        record=False,
    )
    more = costly.breakdown["exposed_comm_s"] - plain.breakdown["exposed_comm_s"]
    assert more == pytest.approx(8 * c, rel=1e-9)  # mean over stages of each one's own actions
    assert _step(DDP, FrameworkCosts(pp_action_s=1.0, pp_step_s=1.0)) == _step(DDP, NONE)


def test_fsdp_parameters_are_dtensors_in_the_optimizer_step() -> None:
    """FSDP2 shards every parameter as a DTensor: all 4 of the MLP's tensors pay DTensor's
    optimizer cost."""
    fsdp = ParallelConfig(dp=2, zero=3, micro_batch=64, global_batch=128, dtype="fp32")
    assert _added(fsdp, tp_optimizer_tensor_s=1e-3) == pytest.approx(4 * 1e-3, rel=1e-9)
    assert _added(fsdp, tp_optimizer_step_s=1e-3) == pytest.approx(1e-3, rel=1e-9)
