"""The hybrid policy (static plan, repaired dynamically) against static and dynamic ones."""

from __future__ import annotations

import pytest

from simplan.schedule.cluster import SimOptions, Straggler
from simplan.schedule.run import Workload, run_policy
from simplan.topology.cluster_spec import load_spec
from tests.schedule.fakes import LinearSpeeds, job

SPEC = load_spec("dgx-a100", nodes=2, gpus_per_node=4)
SPEEDS = LinearSpeeds({"m": 1.0})

# four long jobs known at the start, one short one, and three short ones that arrive late;
# node 1 fails at 250 s for 400 s
KNOWN = [job("k0", 3000, gpus=2), job("k1", 3000, gpus=2), job("k2", 3000, gpus=4),
         job("k3", 3000, gpus=4), job("k4", 200, gpus=2)]  # fmt: skip
LATE = [job("late0", 100, gpus=2, arrival_s=300.0), job("late1", 100, gpus=2, arrival_s=350.0),
        job("late2", 400, gpus=4, arrival_s=400.0)]  # fmt: skip
FAILURE = SimOptions(failures=((250.0, 1),), repair_s=400.0)


def avg_jct(name: str, options: SimOptions = FAILURE) -> float:
    workload = Workload(jobs=tuple(KNOWN + LATE), spec=SPEC, speeds=SPEEDS)
    return run_policy(name, workload, options).metrics.avg_jct_s


def test_hybrid_is_no_worse_than_the_better_of_static_and_dynamic():
    hybrid = avg_jct("hybrid")
    static = avg_jct("static")
    dynamic = min(avg_jct(name) for name in ("fifo", "srtf", "las"))
    assert hybrid <= min(static, dynamic) + 1e-6


def test_static_follows_its_plan_and_reports_the_solver_status():
    workload = Workload(jobs=tuple(KNOWN + LATE), spec=SPEC, speeds=SPEEDS)
    result = run_policy("static", workload)
    assert "time-indexed ILP: optimal" in result.notes[0]
    assert all(r.preemptions == 0 for r in result.jobs)  # a static plan never preempts


def test_hybrid_replans_on_arrivals_and_reports_it():
    workload = Workload(jobs=tuple(KNOWN + LATE), spec=SPEC, speeds=SPEEDS)
    result = run_policy("hybrid", workload, FAILURE)
    assert result.notes[0].startswith("hybrid: ")
    plans = int(result.notes[0].split()[1])
    assert plans >= 1 + len(LATE)  # the first plan, then one per late arrival at least


def test_hybrid_moves_a_job_off_a_straggler_when_it_pays():
    # one job on node 0, which slows 4x at 10 s; node 1 is free: moving costs 30 s and saves
    # most of the remaining time
    slow = SimOptions(stragglers=(Straggler(node=0, factor=4.0, start_s=10.0),))
    workload = Workload(jobs=(job("a", 4000, gpus=4),), spec=SPEC, speeds=SPEEDS)
    (record,) = run_policy("hybrid", workload, slow).jobs
    assert record.restarts == 1
    assert record.finish_s == pytest.approx(10.0 + 30.0 + (4000 - 40) / 4)


def test_a_static_plan_of_thousands_of_jobs_keeps_the_cluster_busy():
    """1,500 one-GPU jobs of 100 to 300 s, arriving over an hour on 8 GPUs: too many for the ILP,
    so a list schedule plans them. Its slots must be fine next to a job (a slot as long as a
    few jobs would leave the GPUs idle most of the time): the static plan's makespan stays within
    15% of FIFO's, which never leaves a GPU idle while a job waits."""
    jobs = tuple(job(f"j{i}", 100 + 100 * (i % 3), arrival_s=2.4 * i) for i in range(1500))
    workload = Workload(jobs=jobs, spec=SPEC, speeds=SPEEDS)
    static = run_policy("static", workload)
    fifo = run_policy("fifo", workload)
    assert "list schedule" in static.notes[0]
    assert static.metrics.makespan_s <= 1.15 * fifo.metrics.makespan_s
