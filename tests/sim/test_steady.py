"""The steady state of many identical micro-batches, extrapolated: equal to simulating them all."""

from __future__ import annotations

import math
from typing import Any

import pytest

from simplan.parallel import ParallelConfig
from simplan.sim.result import SimResult, chrome_trace
from simplan.sim.run import simulate
from simplan.sources import load_model
from simplan.topology import load_cluster

TOL = 1e-9
DEVICE_FIELDS = ("compute_s", "recompute_s", "optimizer_s", "exposed_comm_s", "bubble_s", "busy_s")

CASES: list[tuple[str, int | None, dict[str, Any]]] = [
    ("dgx-a100", 2, {"dp": 2, "tp": 2, "pp": 4, "schedule": "gpipe"}),
    ("dgx-a100", 2, {"dp": 2, "tp": 2, "pp": 4, "schedule": "1f1b", "sequence_parallel": True}),
    ("dgx-a100", 2, {"dp": 2, "tp": 2, "pp": 4, "schedule": "interleaved", "virtual_stages": 2}),
    ("dgx-a100", 2, {"dp": 4, "tp": 1, "pp": 4, "zero": 1, "recompute": "selective"}),
    ("dgx-a100", 2, {"dp": 4, "tp": 2, "pp": 2, "zero": 2, "recompute": "full"}),
    ("dgx-a100", 2, {"dp": 4, "tp": 1, "pp": 4, "zero": 3, "schedule": "gpipe"}),
    ("dgx-a100", 2, {"dp": 8, "tp": 2, "pp": 1, "zero": 0, "micro_batch": 2}),
    ("mixed-a100-h100", None, {"dp": 2, "tp": 2, "pp": 4, "schedule": "1f1b"}),
]


@pytest.fixture(scope="module")
def graph():
    return load_model("gpt3-125m", seq_len=512, dtype="bf16")


def _pair(graph: Any, cluster: Any, config: ParallelConfig) -> tuple[SimResult, SimResult]:
    """(every micro-batch simulated, steady state extrapolated from a few)."""
    full = simulate(graph, cluster, config, record=False, full_microbatches=10**9)
    short = simulate(graph, cluster, config, full_microbatches=0)
    return full, short


def _assert_same(full: SimResult, short: SimResult) -> None:
    assert not full.extrapolated
    assert short.extrapolated
    assert short.simulated_microbatches is not None
    assert short.simulated_microbatches < full.microbatches
    assert math.isclose(short.step_time_s, full.step_time_s, rel_tol=TOL)
    for key, value in full.breakdown.items():
        assert math.isclose(short.breakdown[key], value, rel_tol=TOL, abs_tol=TOL * 1e-3)
    for a, b in zip(full.devices, short.devices, strict=True):
        for name in DEVICE_FIELDS:
            x, y = getattr(a, name), getattr(b, name)
            assert math.isclose(y, x, rel_tol=TOL, abs_tol=TOL * full.step_time_s), (a.stage, name)
        assert math.isclose(b.peak_memory_bytes, a.peak_memory_bytes, rel_tol=TOL)
        assert math.isclose(b.memory["activations"], a.memory["activations"], rel_tol=TOL)


@pytest.mark.parametrize(("spec", "nodes", "knobs"), CASES)
def test_extrapolated_step_equals_the_full_simulation(graph, spec, nodes, knobs) -> None:
    cluster = load_cluster(spec, nodes=nodes)
    knobs = {"micro_batch": 1, **knobs}
    per = knobs["dp"] * knobs["micro_batch"]
    for m in (40, 53, 68):
        if knobs.get("schedule") == "interleaved":
            m -= m % knobs["pp"]
        config = ParallelConfig(global_batch=m * per, dtype="bf16", **knobs)
        _assert_same(*_pair(graph, cluster, config))


def test_cpu_ranks_without_overlap_extrapolate_exactly() -> None:
    graph = load_model("gpt-tiny", dtype="fp32")
    cluster = load_cluster("localhost-cpu")
    for m in (33, 50):
        config = ParallelConfig(dp=1, pp=2, micro_batch=1, global_batch=m, dtype="fp32")
        _assert_same(*_pair(graph, cluster, config))


def test_gpipe_peak_grows_with_every_micro_batch_and_stays_exact(graph) -> None:
    """GPipe keeps every micro-batch's activations: the extrapolated peak must keep growing."""
    cluster = load_cluster("dgx-a100", nodes=1)
    peaks = []
    for m in (40, 80):
        config = ParallelConfig(dp=1, tp=2, pp=4, global_batch=m, schedule="gpipe", dtype="bf16")
        full, short = _pair(graph, cluster, config)
        _assert_same(full, short)
        peaks.append(short.devices[0].memory["activations"])
    assert peaks[1] > 1.9 * peaks[0]


def test_work_does_not_grow_with_the_number_of_micro_batches(graph) -> None:
    """Same residue of m modulo pp: the same samples are simulated, whatever m."""
    cluster = load_cluster("dgx-a100", nodes=1)
    counts, steps = [], []
    for m in (2**16, 2**20):
        config = ParallelConfig(dp=1, tp=2, pp=4, global_batch=m, dtype="bf16")
        result = simulate(graph, cluster, config, record=False)
        counts.append(result.event_count)
        steps.append(result.step_time_s)
    assert counts[0] == counts[1]
    # 16 times the micro-batches: the steady part (all but warm-up and tail) 16 times longer
    assert 15 * steps[0] < steps[1] < 16 * steps[0]


def test_a_few_micro_batches_are_all_simulated(graph) -> None:
    cluster = load_cluster("dgx-a100", nodes=1)
    config = ParallelConfig(dp=1, tp=2, pp=4, global_batch=20, dtype="bf16")
    result = simulate(graph, cluster, config, full_microbatches=0)  # too few to sample
    assert result.simulated_microbatches == 20
    assert not result.extrapolated
    assert result.to_dict()["extrapolated"] is False


def test_extrapolated_trace_keeps_the_simulated_events_and_says_so(graph) -> None:
    cluster = load_cluster("dgx-a100", nodes=1)
    config = ParallelConfig(dp=1, tp=2, pp=4, global_batch=4096, dtype="bf16")
    result = simulate(graph, cluster, config)
    simulated = result.simulated_microbatches
    assert result.extrapolated and simulated is not None
    trace = chrome_trace(result)
    assert "extrapolated" in trace["otherData"]["extrapolated"]
    assert trace["otherData"]["simulated_microbatches"] == simulated
    names = [e["name"] for e in trace["traceEvents"] if e["ph"] == "X"]
    assert any(n.startswith(f"F{simulated - 1} ") for n in names)
    assert not any(n.startswith(f"F{simulated} ") for n in names)
    doc = result.to_dict()
    assert doc["extrapolated"] is True and doc["simulated_microbatches"] == simulated
