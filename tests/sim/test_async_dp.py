"""Asynchronous data parallelism with bounded staleness, checked against runs worked by hand."""

from __future__ import annotations

import json

import pytest

from simplan.errors import SimplanError
from simplan.parallel import ParallelConfig
from simplan.sim.async_dp import AsyncWorker, simulate_async, workers_for_step
from simplan.sim.run import resolve_model, simulate
from simplan.topology import load_cluster
from tests.helpers import run_main

FAST, SLOW = AsyncWorker(compute_s=1.0), AsyncWorker(compute_s=2.0)


def test_two_workers_unbounded_by_hand() -> None:
    """Workers A (1 s per gradient) and B (2 s), an ideal server, no effective bound.
    Updates land at t = 1 (A), 2 (B, then A: B's gradient was started first), 3 (A), 4 (B, A),
    5 (A), 6 (B, A); a worker reads right after its own update. Staleness = the updates of
    others applied between its read and its apply: A@1 0; B@2 1 (A@1); A@2 1 (B@2); A@3 0;
    B@4 2 (A@2, A@3); A@4 1 (B@4); A@5 0; B@6 2 (A@4, A@5); A@6 1 (B@6)."""
    r = simulate_async([FAST, SLOW], bound=100, updates=9)
    assert r.staleness == (0, 1, 1, 0, 2, 1, 0, 2, 1)
    assert r.duration_s == 6.0
    assert r.updates_per_s == pytest.approx(1.5)  # 1/1 + 1/2
    assert r.staleness_max == 2
    assert r.staleness_mean == pytest.approx(8 / 9)
    assert r.updates_per_worker == (6, 3)
    assert r.blocked_s == (0.0, 0.0)
    assert r.staleness_histogram == {0: 3, 1: 4, 2: 2}


def test_bound_zero_is_lockstep() -> None:
    """s = 0: every round each worker pushes once; rounds take the slow worker's 2 s, the fast
    one waits 1 s of each: 9 updates by t = 9 (1 update/s), staleness 0 (A) and 1 (B)."""
    r = simulate_async([FAST, SLOW], bound=0, updates=9)
    assert r.staleness == (0, 1, 0, 1, 0, 1, 0, 1, 0)
    assert r.updates_per_s == pytest.approx(1.0)
    assert r.blocked_s == (4.0, 0.0)


def test_a_finite_bound_runs_at_the_slowest_workers_pace_in_the_long_run() -> None:
    """Within s gradients of the slowest, the fast worker makes as many as it: 2 x 0.5/s."""
    r = simulate_async([FAST, SLOW], bound=2, updates=600)
    assert r.updates_per_s == pytest.approx(1.0, rel=0.01)
    assert r.staleness_max <= 2


def test_more_bound_never_fewer_updates_per_second() -> None:
    rates = [simulate_async([FAST, SLOW], bound=s, updates=60).updates_per_s for s in range(6)]
    assert rates == sorted(rates)


def test_pushes_share_the_servers_link_by_hand() -> None:
    """Two 1 s workers, 0.5 s pushes one at a time: A's lands at 1.5, B's at 2.0, then every
    1.5 s each: 8 updates by t = 6.5; every update after the first saw the other's."""
    w = AsyncWorker(compute_s=1.0, push_s=0.5)
    r = simulate_async([w, w], bound=100, updates=8)
    assert r.duration_s == 6.5
    assert r.staleness == (0, 1, 1, 1, 1, 1, 1, 1)


def test_bad_inputs() -> None:
    with pytest.raises(SimplanError, match="at least one worker"):
        simulate_async([], bound=1, updates=1)
    with pytest.raises(SimplanError, match="bound must be >= 0"):
        simulate_async([FAST], bound=-1, updates=1)
    with pytest.raises(ValueError, match="compute_s"):
        AsyncWorker(compute_s=0.0)


def test_workers_of_a_mixed_cluster_run_at_their_devices_speed() -> None:
    """On A100 + H100 nodes a worker's gradient time scales with its device's peak FLOP/s,
    and a push crosses the topology (nothing for the server's own replica)."""
    cluster = load_cluster("mixed-a100-h100")
    config = ParallelConfig(dp=16, micro_batch=64, global_batch=1024, staleness=2)
    graph = resolve_model("mlp", config)
    step = simulate(graph, cluster, config, record=False)
    workers, apply_s = workers_for_step(graph, cluster, config, step)
    a100, h100 = workers[0], workers[8]
    peak = [cluster.device_model(d).peak("bf16") for d in (0, 8)]
    assert a100.compute_s / h100.compute_s == pytest.approx(peak[1] / peak[0])
    assert a100.push_s == 0.0 and h100.push_s > workers[1].push_s > 0.0
    assert apply_s == step.devices[0].optimizer_s


def test_tensor_or_pipeline_parallel_replicas_are_refused() -> None:
    cluster = load_cluster("dgx-a100")
    config = ParallelConfig(dp=4, tp=2, global_batch=64, staleness=1)
    graph = resolve_model("gpt-tiny", config)
    step = simulate(graph, cluster, config, record=False)
    with pytest.raises(SimplanError, match="needs --tp 1 --pp 1"):
        workers_for_step(graph, cluster, config, step)


ARGS = ("simulate", "--model", "mlp", "--cluster", "localhost-cpu", "--global-batch", "128",
        "--micro-batch", "64", "--dtype", "fp32")  # fmt: skip


def test_simulate_reports_staleness(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, *ARGS, "--staleness", "2", "--json")
    assert code == 0
    doc = json.loads(out)["async_dp"]
    assert doc["bound"] == 2 and doc["updates"] == 200
    assert doc["updates_per_s"] > 0 and 0 <= doc["staleness_mean"] <= doc["staleness_max"]
    code, out, _ = run_main(capsys, *ARGS, "--staleness", "2")
    assert code == 0 and "asynchronous DP" in out and "staleness (updates applied" in out
    code, out, _ = run_main(capsys, *ARGS, "--json")
    assert "async_dp" not in json.loads(out)


def test_simulate_refuses_staleness_with_tensor_parallelism(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run_main(
        capsys, "simulate", "--model", "gpt-tiny", "--cluster", "dgx-a100",
        "--global-batch", "64", "--tp", "2", "--staleness", "1",
    )  # fmt: skip
    assert code == 2 and "needs --tp 1 --pp 1" in err and err.count("\n") == 1


def test_a_straggler_sets_the_pace_of_a_bounded_run() -> None:
    """Four A100 replicas, the last 4x slower; with an ideal server (their transfers left
    out), bound 0 runs in rounds of the straggler's time (4 updates per 4/r s: r updates/s);
    a bound never reached lets the three others run free (3r + r/4 updates/s)."""
    cluster = load_cluster("dgx-a100", gpus_per_node=4)
    config = ParallelConfig(dp=4, micro_batch=64, global_batch=256, staleness=1)
    graph = resolve_model("mlp", config)
    step = simulate(graph, cluster, config, record=False)
    workers, _ = workers_for_step(graph, cluster, config, step, slowdown={3: 4.0})
    assert workers[3].compute_s == pytest.approx(4 * workers[0].compute_s)
    ideal = [AsyncWorker(compute_s=w.compute_s) for w in workers]
    lockstep = simulate_async(ideal, bound=0, updates=400)
    free = simulate_async(ideal, bound=10_000, updates=400)
    rate = 1 / workers[0].compute_s
    assert lockstep.updates_per_s == pytest.approx(rate, rel=0.02)
    assert free.updates_per_s == pytest.approx(3.25 * rate, rel=0.02)
    with pytest.raises(SimplanError, match="slowdown must be >= 1"):
        workers_for_step(graph, cluster, config, step, slowdown={0: 0.5})
