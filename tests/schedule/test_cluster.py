"""The SimPy cluster run against times computed by hand with LinearSpeeds."""

from __future__ import annotations

import pytest

from simplan.errors import SimplanError
from simplan.schedule.cluster import ClusterSim, SimOptions, Straggler
from simplan.schedule.policies import fifo, srtf
from simplan.schedule.run import Workload, run_policy
from simplan.schedule.state import ClusterState, Policy, cluster_nodes, find_nodes
from simplan.topology.cluster_spec import load_spec
from tests.schedule.fakes import LinearSpeeds, job, one_node

SPEEDS = LinearSpeeds({"m": 1.0})  # 1 s per step on 1 GPU, 1/g on g GPUs of one node


def simulate(jobs, spec, policy, options=None, speeds=SPEEDS):
    nodes = cluster_nodes(spec)
    policy = Policy(name="p", decide=policy)
    return ClusterSim(jobs, nodes, speeds, policy, options or SimOptions()).run()


def test_one_job_alone_runs_work_times_step_time():
    result = simulate([job("a", 800, gpus=8, arrival_s=5.0)], one_node(), fifo)
    (record,) = result.jobs
    assert record.first_start_s == 5.0
    assert record.finish_s == pytest.approx(5.0 + 800 / 8)
    assert result.metrics.utilization == pytest.approx(1.0)
    assert result.metrics.avg_finish_time_ratio == pytest.approx(1.0)


def test_fifo_queues_and_utilization_counts_idle_gpus():
    jobs = [job("a", 400, gpus=4), job("b", 400, gpus=8), job("c", 100, gpus=4)]
    result = simulate(jobs, one_node(), fifo)
    finish = {r.id: r.finish_s for r in result.jobs}
    # a runs 0-100 on 4 GPUs; b (8 GPUs) waits for a and blocks c: FIFO does not backfill
    assert finish == pytest.approx({"a": 100.0, "b": 150.0, "c": 175.0})
    busy = 4 * 100 + 8 * 50 + 4 * 25
    assert result.metrics.utilization == pytest.approx(busy / (8 * 175))


def test_preemption_charges_the_checkpoint_cost():
    jobs = [job("long", 8000, gpus=8), job("short", 80, gpus=8, arrival_s=100.0)]
    result = simulate(jobs, one_node(), srtf, SimOptions(checkpoint_s=40.0))
    rec = {r.id: r for r in result.jobs}
    assert rec["short"].finish_s == pytest.approx(110.0)  # preempts long at 100
    assert rec["long"].preemptions == 1 and rec["long"].restarts == 1
    assert rec["long"].finish_s == pytest.approx(1000.0 + 10.0 + 40.0)


def test_failure_loses_work_since_checkpoint_and_waits_for_repair():
    options = SimOptions(
        checkpoint_s=20.0, checkpoint_interval_s=300.0, repair_s=500.0, failures=((1000.0, 0),)
    )
    result = simulate([job("a", 16000, gpus=8)], one_node(), fifo, options)
    (rec,) = result.jobs
    # 2000 s of 8-GPU work; the checkpoint at 900 s of running keeps 900 s, loses 100 s
    assert rec.lost_steps == pytest.approx(100 * 8)
    assert rec.finish_s == pytest.approx(1000 + 500 + 20 + (2000 - 900))
    assert result.metrics.failures == 1


def test_random_failures_repeat_with_a_seed_and_change_without():
    jobs = [job(f"j{i}", 4000 * (i + 1), gpus=2, arrival_s=10.0 * i) for i in range(6)]
    spec = load_spec("dgx-a100", nodes=2, gpus_per_node=4)

    def finishes(seed):
        options = SimOptions(mtbf_s=3000.0, repair_s=200.0, seed=seed)
        return [r.finish_s for r in simulate(jobs, spec, srtf, options).jobs]

    assert finishes(7) == finishes(7)
    assert finishes(7) != finishes(8)


def test_straggler_slows_the_jobs_on_its_node():
    options = SimOptions(stragglers=(Straggler(node=0, factor=2.0, start_s=50.0),))
    result = simulate([job("a", 800, gpus=8)], one_node(), fifo, options)
    # 50 s at full speed (400 steps), the other 400 steps at 2/8 s per step
    assert result.jobs[0].finish_s == pytest.approx(50 + 400 * 2 / 8)


def test_placement_packs_then_spreads_and_the_spread_shape_is_slower():
    spec = load_spec("dgx-a100", nodes=4)
    state = ClusterState(nodes=cluster_nodes(spec), speeds=SPEEDS)
    packed = find_nodes(state, [4, 4, 8, 8], "a100-80gb", 8)
    assert packed is not None and packed.shape.nodes == 1
    spread = find_nodes(state, [4, 4, 4, 4], "a100-80gb", 8)
    assert spread is not None and spread.shape.nodes == 2
    j = job("a", 1, gpus=8)
    assert SPEEDS.step_time_s(j, spread.shape) > SPEEDS.step_time_s(j, packed.shape)


def test_a_job_spread_by_fragmentation_runs_at_the_spread_speed():
    spec = load_spec("dgx-a100", nodes=2, gpus_per_node=4)
    blockers = [job("b0", 30000, gpus=3), job("b1", 30000, gpus=3)]  # one per node, 1 GPU left
    result = simulate([*blockers, job("z", 400, gpus=2, arrival_s=1.0)], spec, srtf)
    z = next(r for r in result.jobs if r.id == "z")
    assert z.finish_s == pytest.approx(1.0 + 400 / 2 * 1.5)  # spread over 2 nodes: +50%
    alone = simulate([job("z", 400, gpus=2, arrival_s=1.0)], spec, srtf)
    assert alone.jobs[0].finish_s == pytest.approx(1.0 + 400 / 2)  # packed on one node


def test_a_job_that_fits_nowhere_is_refused_in_one_line():
    with pytest.raises(SimplanError, match="job big: no allowed GPU type"):
        simulate([job("big", 10, gpus=16)], one_node(), fifo)


def test_analytic_workload_runs_every_dynamic_policy():
    from simplan.schedule.analytic import AnalyticSpeeds, ModelCost

    spec = load_spec("mixed-a100-h100", nodes=2)
    speeds = AnalyticSpeeds(spec, {"m": ModelCost(flops_per_sample=1e12, params=1e8)})
    jobs = tuple(job(f"j{i}", 500 * (1 + i % 3), gpus=2 ** (i % 4), arrival_s=30.0 * i)
                 for i in range(12))  # fmt: skip
    workload = Workload(jobs=jobs, spec=spec, speeds=speeds)
    for name in ("fifo", "srtf", "las", "elastic"):
        result = run_policy(name, workload)
        assert len(result.jobs) == 12
        assert all(r.finish_s > r.arrival_s for r in result.jobs)
