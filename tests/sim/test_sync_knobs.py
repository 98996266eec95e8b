"""The simulator under the synchronisation knobs: compressed buckets sync what
simplan.compression says goes on the wire; local SGD syncs only every H-th step."""

from __future__ import annotations

import pytest

from simplan.compression import averaging_compute_s, bucket_compute, wire_bytes
from simplan.parallel import ParallelConfig
from simplan.sim.assemble import Assembler
from simplan.sim.rank_devices import grid
from simplan.sim.run import simulate
from simplan.sources import load_model
from simplan.validate import local_cluster

MLP_SHAPES = ((10,), (10, 128), (128,), (128, 784))  # one bucket, in DDP's (reverse) order


def _config(**knobs: object) -> ParallelConfig:
    return ParallelConfig(dp=2, micro_batch=64, global_batch=128, dtype="fp32", **knobs)  # type: ignore[arg-type]


def _assembler(config: ParallelConfig) -> Assembler:
    return Assembler(load_model("mlp"), local_cluster(2), config, grid(config, None), None)


@pytest.mark.parametrize(
    "knobs", [{"compress": "fp16"}, {"compress": "powersgd", "powersgd_rank": 2}]
)
def test_a_compressed_bucket_syncs_its_wire_bytes_and_computes(knobs: dict) -> None:
    config = _config(**knobs)
    asm = _assembler(config)
    steps = asm.steps[0]
    (bucket,) = asm.buckets(steps, 0, tuple(asm.graph.layers))
    shapes = MLP_SHAPES if config.compress == "powersgd" else ((1290,), (100480,))
    wires = wire_bytes(config.compress, shapes, config.powersgd_rank, 4)
    work = bucket_compute(config.compress, shapes, config.powersgd_rank, asm.devices[0], 4)
    fw = asm.caps[0].framework
    expected = sum(asm.grad_sync(w, 0) for w in wires) + sum(work.between_s)
    expected += fw.ddp_bucket_cost_s(101_770 * 4) + fw.ddp_sync_cost_s(101_770 * 4)
    assert bucket.comm_s == pytest.approx(expected)
    assert bucket.encode_s == pytest.approx(work.encode_s)
    assert bucket.compute_s == pytest.approx(sum(s.bwd_s for s in steps))


def test_powersgd_sends_fewer_bytes_than_fp16_than_fp32() -> None:
    sent = {c: sum(wire_bytes(c, MLP_SHAPES, 1, 4)) for c in ("none", "fp16", "powersgd")}
    assert sent["powersgd"] < sent["fp16"] < sent["none"]


def test_local_sgd_syncs_every_h_th_step() -> None:
    graph, cluster = load_model("mlp"), local_cluster(2)
    plain = simulate(graph, cluster, _config(), record=False)
    for h in (2, 4, 8):
        result = simulate(graph, cluster, _config(local_sgd=h), record=False)
        local = result.local_sgd
        assert local is not None and local["period"] == h
        # the warm-up steps all-reduce gradients as plain DDP does
        assert local["warmup_step_s"] == pytest.approx(plain.step_time_s)
        # a local step sends nothing; the averaging step adds the parameters' all-reduce and
        # the flatten/divide/copy after the optimizer (nothing overlaps on this CPU)
        asm = _assembler(_config(local_sgd=h))
        average = asm.collective("all_reduce", graph.params * 4, (0, 1)) + averaging_compute_s(
            graph.params, asm.devices[0], 4
        )
        assert local["sync_step_s"] - local["local_step_s"] == pytest.approx(average)
        assert local["local_step_s"] < plain.step_time_s
        mean = ((h - 1) * local["local_step_s"] + local["sync_step_s"]) / h
        assert result.step_time_s == pytest.approx(mean)
        assert local["period_mean_s"] == pytest.approx(mean)
        assert result.to_dict()["local_sgd"] == local


def test_local_sgd_period_1_is_plain_dp() -> None:
    graph, cluster = load_model("mlp"), local_cluster(2)
    assert simulate(graph, cluster, _config(local_sgd=1), record=False).local_sgd is None


def test_powersgd_with_tensor_parallelism_is_refused_in_one_line() -> None:
    from simplan.errors import SimplanError

    config = ParallelConfig(dp=2, tp=2, global_batch=8, dtype="fp32", compress="powersgd")
    with pytest.raises(SimplanError, match="tensor-parallel shards") as err:
        simulate(load_model("mlp"), local_cluster(4), config, record=False)
    assert "\n" not in str(err.value)
