"""TP communication overlap: the exposed part by hand, and a tp 8 simulation whose TP transfers
run during its GEMMs."""

from __future__ import annotations

import pytest

from simplan.devices import get_device
from simplan.errors import SimplanError
from simplan.parallel import ParallelConfig
from simplan.sim.costs import layer_steps
from simplan.sim.run import simulate
from simplan.sources import load_model
from simplan.tp_overlap import exposed_s
from tests.sim.test_oracles import h100s


def test_exposed_part_by_hand() -> None:
    # GEMM longer than the transfer: only the first of 8 chunks is exposed
    assert exposed_s(1.0, 2.0, 8) == pytest.approx(1.0 / 8)
    # transfer longer: one chunk plus the difference over the other 3 of 4 chunks
    assert exposed_s(2.0, 1.0, 4) == pytest.approx(0.5 + 1.0 * 3 / 4)
    assert exposed_s(2.0, 1.0, 1) == 2.0  # nothing to pipeline
    assert exposed_s(2.0, 0.0, 8) == 2.0  # nothing to hide behind


def test_blocks_pair_each_collective_with_its_gemm() -> None:
    graph = load_model("gpt3-1.3b", seq_len=2048, dtype="bf16")
    dev = get_device("h100-sxm").with_(kernel_overhead_s=1e-15)
    config = ParallelConfig(tp=8, micro_batch=1, global_batch=1, sequence_parallel=True,
                            tp_overlap=True)  # fmt: skip
    block = next(s for s in layer_steps(graph, dev, config) if s.tp_fwd_gemm_s)
    s, h = 2048, 2048
    rate = 989.5e12 * dev.matrix_efficiency * 8  # the GEMMs are split over tp 8
    qkv, out, fc1, fc2 = (2 * s * h * 3 * h, 2 * s * h * h, 2 * s * h * 4 * h, 2 * s * 4 * h * h)
    assert [op for op, _ in block.tp_fwd] == ["all_gather", "reduce_scatter"] * 2
    assert block.tp_fwd_gemm_s == pytest.approx((qkv / rate, out / rate, fc1 / rate, fc2 / rate))
    assert block.tp_bwd_gemm_s == pytest.approx((fc2 / rate, fc1 / rate, out / rate, qkv / rate))


def test_tp8_simulation_hides_tp_communication_behind_compute() -> None:
    graph = load_model("gpt3-1.3b", seq_len=2048, dtype="bf16")
    base = ParallelConfig(tp=8, micro_batch=1, global_batch=2, sequence_parallel=True)
    plain = simulate(graph, h100s(8), base)
    over = simulate(graph, h100s(8), base.replace(tp_overlap=True))
    hidden = [e for e in over.events if e[1] == "tp"]
    compute = [e for e in over.events if e[1] == "compute" and e[3] in ("forward", "backward")]
    assert hidden and not [e for e in plain.events if e[1] == "tp"]
    for _, _, name, cat, start, end in hidden:
        assert cat == "tp-comm-hidden"
        # each hidden transfer runs inside the forward or backward compute it overlaps
        assert any(c[4] <= start < end <= c[5] + 1e-12 for c in compute), name
    # what is hidden is what the step saves: one stage, no data parallelism
    hidden_s = sum(e[5] - e[4] for e in hidden)
    saved = plain.devices[0].exposed_comm_s - over.devices[0].exposed_comm_s
    assert saved == pytest.approx(hidden_s)
    assert plain.step_time_s - over.step_time_s == pytest.approx(saved)
    assert over.devices[0].compute_s == pytest.approx(plain.devices[0].compute_s)


def test_tp_overlap_needs_sequence_parallel_tp() -> None:
    with pytest.raises(SimplanError, match="needs --tp > 1 and --sequence-parallel"):
        ParallelConfig(tp=8, tp_overlap=True)
