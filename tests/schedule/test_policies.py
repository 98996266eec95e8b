"""Each policy's defining behaviour on a case small enough to follow by hand."""

from __future__ import annotations

import pytest

from simplan.schedule.cluster import ClusterSim, SimOptions
from simplan.schedule.gavel import (
    lp_shares,
    make_gavel,
    max_min_shares,
    one_type_shares,
    throughputs,
)
from simplan.schedule.policies import elastic, fifo, make_las, srtf
from simplan.schedule.run import Workload, run_policy
from simplan.schedule.state import ClusterState, JobState, Policy, cluster_nodes, place
from tests.schedule.fakes import LinearSpeeds, job, mixed, one_node

SPEEDS = LinearSpeeds({"m": 1.0})


def finishes(jobs, policy, spec=None, speeds=SPEEDS):
    if not isinstance(policy, Policy):
        policy = Policy(name="p", decide=policy)
    sim = ClusterSim(jobs, cluster_nodes(spec or one_node()), speeds, policy, SimOptions())
    return {r.id: r for r in sim.run().jobs}


def test_srtf_runs_the_short_job_first_and_fifo_does_not():
    jobs = [job("long", 1000, gpus=8), job("short", 100, gpus=8)]
    by_srtf = finishes(jobs, srtf)
    assert by_srtf["short"].finish_s == pytest.approx(12.5)
    assert by_srtf["long"].finish_s == pytest.approx(137.5)
    by_fifo = finishes(jobs, fifo)
    assert by_fifo["long"].finish_s == pytest.approx(125.0)
    assert by_fifo["short"].finish_s == pytest.approx(137.5)


def test_las_demotes_a_long_job_when_it_crosses_the_threshold():
    # A (8 GPUs) crosses 3600 GPU-s at t = 450; B, arrived at 100 into the same queue, waits
    # behind it until then, then preempts it (B has attained nothing: a higher queue)
    jobs = [job("a", 8000, gpus=8), job("b", 800, gpus=8, arrival_s=100.0)]
    rec = finishes(jobs, make_las(thresholds=(3600.0,)))
    assert rec["b"].first_start_s == pytest.approx(450.0)
    assert rec["b"].finish_s == pytest.approx(550.0)
    assert rec["a"].preemptions == 1
    assert rec["a"].finish_s == pytest.approx(1000.0 + 100.0 + 30.0)  # + the restart cost


def _states(jobs, spec, speeds):
    state = ClusterState(nodes=cluster_nodes(spec), speeds=speeds)
    out = {
        j.id: JobState(job=j, total_steps=j.work, rigid_gpus=j.min_gpus, nominal_step_s=1.0)
        for j in jobs
    }
    return state, out


def test_gavel_gives_each_job_the_type_where_its_speedup_is_best():
    # "c" is compute bound (4x faster on H100), "n" runs as fast on both: the aware policy
    # gives c all the H100 time and n the A100 time (n's progress is the same, c's best)
    speeds = LinearSpeeds({"c": 8.0, "n": 8.0}, {"c@a100-80gb": 4.0})
    jobs = [job("n", 1000, model="n", gpus=8), job("c", 1000, model="c", gpus=8)]
    state, states = _states(jobs, mixed(), speeds)
    queue = list(states.values())
    placed = place(state, states, make_gavel(aware=True).decide(state, queue))
    assert placed["c"].gpu_type == "h100-sxm" and placed["n"].gpu_type == "a100-80gb"
    tput = {js.id: throughputs(state, js) for js in queue}
    shares = max_min_shares(queue, tput, {"a100-80gb": 8, "h100-sxm": 8})
    assert shares["c", "h100-sxm"] == pytest.approx(1.0)
    assert shares["n", "a100-80gb"] == pytest.approx(1.0)
    aware = finishes(jobs, make_gavel(aware=True), mixed(), speeds)
    assert aware["c"].finish_s == pytest.approx(1000.0) and aware["c"].preemptions == 0


def test_gavel_shares_one_type_between_more_jobs_than_fit_over_rounds():
    jobs = [job(f"j{i}", 3000, gpus=8) for i in range(3)]  # 3 jobs, one 8-GPU node each round
    rec = finishes(jobs, make_gavel(aware=True), one_node(), SPEEDS)
    assert all(r.preemptions >= 1 for r in rec.values())  # time-sliced, not run to completion


def test_elastic_grows_a_lone_job_and_splits_the_cluster_between_two():
    alone = finishes([job("a", 800, gpus=1, max_gpus=8)], elastic)
    assert alone["a"].finish_s == pytest.approx(100.0)  # all 8 GPUs
    two = finishes([job("a", 800, gpus=1, max_gpus=8), job("b", 800, gpus=1, max_gpus=8)], elastic)
    assert two["a"].finish_s == pytest.approx(200.0)  # 4 GPUs each
    assert two["b"].finish_s == pytest.approx(200.0)


def test_elastic_stops_growing_where_the_speed_curve_flattens():
    # on 2 nodes of 4 a job spreading to 8 GPUs pays 3x: 4 packed GPUs are faster
    speeds = LinearSpeeds({"m": 1.0}, spread_penalty=2.0)
    from simplan.topology.cluster_spec import load_spec

    spec = load_spec("dgx-a100", nodes=2, gpus_per_node=4)
    rec = finishes([job("a", 400, gpus=1, max_gpus=8)], elastic, spec, speeds)
    assert rec["a"].finish_s == pytest.approx(100.0)  # 4 GPUs, 1 node


def test_policies_by_name_run_the_same_workload():
    jobs = tuple(
        job(f"j{i}", 200 * (i + 1), gpus=2 ** (i % 3), arrival_s=5.0 * i) for i in range(8)
    )
    workload = Workload(jobs=jobs, spec=mixed(), speeds=SPEEDS)
    for name in ("fifo", "srtf", "las", "gavel", "gavel-agnostic", "elastic"):
        assert run_policy(name, workload).metrics.jobs == 8


@pytest.mark.parametrize("seed", range(8))
def test_gavel_on_one_type_solves_both_lps_exactly(seed):
    """The closed form reaches the LP's optimum: the same max-min value and, at it, the same
    total normalised progress (shares may differ where the optimum is not unique)."""
    import random

    rng = random.Random(seed)
    jobs = [
        job(f"j{i}", 100, gpus=rng.choice((1, 2, 4, 8)), weight=float(rng.randint(1, 3)))
        for i in range(rng.randint(2, 12))
    ]
    state, states = _states(jobs, one_node(8), SPEEDS)
    queue = list(states.values())
    tput = {js.id: throughputs(state, js) for js in queue}
    capacity = {t: state.gpus_of_type(t) for t in state.gpu_types}
    closed, lp = one_type_shares(queue, tput, capacity), lp_shares(queue, tput, capacity)

    def progress(shares):  # each job's X / w, and the GPUs used
        per_job = [sum(x for (i, _), x in shares.items() if i == js.id) / js.job.weight
                   for js in queue]  # fmt: skip
        used = sum(x * states[i].rigid_gpus for (i, _), x in shares.items())
        return min(per_job), sum(per_job), used

    (z_closed, total_closed, used_closed), (z_lp, total_lp, _) = progress(closed), progress(lp)
    assert z_closed == pytest.approx(z_lp, rel=1e-5)
    assert total_closed == pytest.approx(total_lp, rel=1e-5)
    assert used_closed <= 8 + 1e-9
    assert all(0 <= x <= 1 + 1e-12 for x in closed.values())
