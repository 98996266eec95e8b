"""The static policy (a plan of the whole known trace, followed as written) and the hybrid one
(a plan of the jobs known so far, repaired on arrivals, failures, repairs and stragglers with
bounded re-planning).

Both plan with simplan.schedule.static_ilp on GPU types pooled: each job's options are its
rigid GPU count on each allowed type, run for its remaining steps at its packed step time,
rounded up to slots. A plan of at most ILP_MAX_JOBS waiting jobs is solved by the time-indexed
ILP (time limit, status and gap reported); a larger one by the list schedule.

- static: plans every job of the trace once, at the start (arrival times known in advance);
  a job starts when its planned start comes and its planned GPUs are free, in plan order and
  never early (no backfilling); it never preempts.
- hybrid: plans the arrived jobs, running ones included (a plan by the ILP that starts a
  running job later stops it now and charges it the restart time; a list schedule keeps
  running jobs running), and re-plans when a job arrives or
  completes, a node fails or is repaired, or a straggler starts or ends
  (each re-plan bounded: at most ILP_MAX_JOBS jobs by the ILP within REPLAN_TIME_LIMIT_S, else
  the list schedule). It runs the jobs whose planned start has come, in plan order as far as
  they fit (a running job planned later is stopped), and moves a running job off a slowed
  node when GPUs elsewhere are free. Re-planning at every completion keeps it
  work-conserving: a job that finishes early pulls the plan forward.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from simplan.schedule.cluster import rigid_size
from simplan.schedule.core import Job, Shape
from simplan.schedule.state import (
    Allocation,
    ClusterState,
    JobState,
    Policy,
    Request,
    allowed_types,
)
from simplan.schedule.static_ilp import StaticProblem, StaticSolution, list_schedule, solve_ilp

if TYPE_CHECKING:
    from simplan.schedule.run import Workload

ILP_MAX_JOBS = 10
REPLAN_MAX_JOBS = 64  # a re-plan orders at most this many waiting jobs (Smith's rule picks)
ILP_MAX_SLOTS = 80
# list schedules: slots over the estimated makespan, a few per job (a job's run time is rounded
# up to whole slots: more slots, less idle time reserved; each job scans them once)
LIST_SLOTS_PER_JOB = 4
LIST_MIN_SLOTS = 1000
LIST_MAX_SLOTS = 40000
STATIC_TIME_LIMIT_S = 30.0
REPLAN_TIME_LIMIT_S = 2.0


@dataclass(frozen=True, kw_only=True)
class PlanEntry:
    gpu_type: str
    start_s: float
    rank: int  # order in the plan (start, then job order)


def _options(state: ClusterState, js: JobState, now_s: float) -> list[tuple[str, float]]:
    """(type, remaining run time) of the job's rigid count packed on each allowed type."""
    out = []
    for gpu_type in allowed_types(js.job, state):
        per_node = state.nodes[state.nodes_by_type[gpu_type][0]].gpus
        nodes = -(-js.rigid_gpus // per_node)
        if js.rigid_gpus % nodes or nodes > len(state.nodes_by_type[gpu_type]):
            continue
        shape = Shape(gpu_type=gpu_type, gpus=js.rigid_gpus, nodes=nodes)
        step = state.speeds.step_time_s(js.job, shape)
        if step is not None and js.rigid_gpus <= state.gpus_of_type(gpu_type):
            out.append((gpu_type, js.steps_left(now_s) * step))
    return out


def _slots(duration_s: float, slot_s: float) -> int:
    return max(1, math.ceil(duration_s / slot_s - 1e-9))


def build_plan(
    state: ClusterState,
    waiting: Sequence[JobState],
    running: Sequence[JobState],
    *,
    now_s: float,
    time_limit_s: float,
    objective: str = "weighted",
) -> tuple[dict[str, PlanEntry], StaticSolution | None]:
    """Plan the waiting jobs (released at their arrival) and the running ones (released now, on
    their current GPU type; in a plan by the ILP they may be stopped and started later, paying
    the restart time; in a list schedule they keep running)."""
    types = state.gpu_types
    options = {js.id: _options(state, js, now_s) for js in waiting}
    for js in running:
        assert js.placement is not None
        options[js.id] = [(js.placement.gpu_type, js.steps_left(now_s) * js.seg_step_s)]
    jobs = [js for js in [*running, *waiting] if options[js.id]]
    if not waiting or not jobs:
        return {js.id: PlanEntry(gpu_type=o[0][0], start_s=now_s, rank=r)
                for r, js in enumerate(running) if (o := options[js.id])}, None  # fmt: skip
    releases = [max(0.0, js.job.arrival_s - now_s) for js in jobs]
    shortest = [min(d for _, d in options[js.id]) for js in jobs]
    exact = len(jobs) <= ILP_MAX_JOBS
    if exact:  # the ILP's horizon: every job one after another
        total_s = max(releases) + sum(shortest) + state.restart_s * len(running)
        slot_s = max(total_s / ILP_MAX_SLOTS, 1e-6)
    else:  # the list schedule's: about a work-conserving makespan (its slots grow if short)
        gpus = max(1, sum(state.gpus_of_type(t) for t in types))
        work = sum(js.rigid_gpus * d for js, d in zip(jobs, shortest, strict=True))
        total_s = max(releases) + work / gpus + max(shortest)
        slots = min(max(LIST_SLOTS_PER_JOB * len(jobs), LIST_MIN_SLOTS), LIST_MAX_SLOTS)
        slot_s = max(total_s / slots, 1e-6)
    problem = StaticProblem(
        release=tuple(math.ceil(r / slot_s - 1e-9) for r in releases),
        weight=tuple(js.job.weight for js in jobs),
        pool=tuple(tuple(types.index(t) for t, _ in options[js.id]) for js in jobs),
        gpus=tuple(tuple(js.rigid_gpus for _ in options[js.id]) for js in jobs),
        dur=tuple(tuple(_slots(d, slot_s) for _, d in options[js.id]) for js in jobs),
        capacity=tuple(max(1, state.gpus_of_type(t)) for t in types),
        objective=objective,
        resume=tuple(_slots(state.restart_s, slot_s) if js.running and exact else 0
                     for js in jobs),
        pinned=() if exact else tuple(js.running for js in jobs),
    )  # fmt: skip
    solution = solve_ilp(problem, time_limit_s=time_limit_s) if exact else list_schedule(problem)
    run_s = [options[js.id][solution.option[j]][1] for j, js in enumerate(jobs)]
    order = sorted(range(len(jobs)), key=lambda j: (solution.start[j], run_s[j], j))
    plan = {
        jobs[j].id: PlanEntry(
            gpu_type=options[jobs[j].id][solution.option[j]][0],
            start_s=now_s + solution.start[j] * slot_s,
            rank=rank,
        )
        for rank, j in enumerate(order)
    }
    return plan, solution


def _describe(solution: StaticSolution | None) -> str:
    if solution is None:
        return "nothing to plan"
    gap = f", gap {solution.gap:.2%}" if solution.gap is not None else ""
    return f"{solution.method}: {solution.status}{gap}, {solution.solve_s:.2f} s"


class Static:
    """Plans the whole trace at its first decision; then follows the plan."""

    def __init__(self, jobs: Sequence[Job], work: Callable[[Job], float]) -> None:
        self.jobs, self.work = jobs, work
        self.plan: dict[str, PlanEntry] = {}
        self.notes: list[str] = []

    def decide(self, state: ClusterState, queue: Sequence[JobState]) -> Allocation:
        if not self.notes:
            self._plan_all(state)
        now = state.now_s
        running = [js for js in queue if js.running]
        due = sorted(
            (js for js in queue if not js.running and self.plan[js.id].start_s <= now + 1e-6),
            key=lambda js: self.plan[js.id].rank,
        )
        later = [self.plan[js.id].start_s for js in queue if self.plan[js.id].start_s > now + 1e-6]
        requests = [Request(job_id=js.id, gpus=js.rigid_gpus) for js in running]
        requests += [
            Request(job_id=js.id, gpus=js.rigid_gpus, gpu_type=self.plan[js.id].gpu_type)
            for js in due
        ]
        return Allocation(requests=tuple(requests), backfill=False, wake_s=min(later, default=None))

    def _plan_all(self, state: ClusterState) -> None:
        every = []
        for job in self.jobs:
            gpus, step_s = rigid_size(job, state)
            every.append(
                JobState(
                    job=job, total_steps=self.work(job), rigid_gpus=gpus, nominal_step_s=step_s
                )
            )
        self.plan, solution = build_plan(
            state, every, [], now_s=state.now_s, time_limit_s=STATIC_TIME_LIMIT_S
        )
        self.notes.append(f"static plan of {len(every)} jobs by {_describe(solution)}")


class Hybrid:
    def __init__(self) -> None:
        self.plan: dict[str, PlanEntry] = {}
        self.planned: frozenset[str] = frozenset()
        self.condition: tuple[tuple[bool, ...], tuple[float, ...]] = ((), ())
        self.replans = 0
        self.by_ilp = 0
        self.uncontended = 0  # re-plans skipped: every waiting job fitted in free GPUs
        self.statuses: dict[str, int] = {}

    def decide(self, state: ClusterState, queue: Sequence[JobState]) -> Allocation:
        now = state.now_s
        ids = frozenset(js.id for js in queue)
        condition = (tuple(state.up), tuple(state.slowdown))
        if ids != self.planned or condition != self.condition:
            waiting = [js for js in queue if not js.running]
            running = [js for js in queue if js.running]
            self._replan(state, waiting, running, now)
            self.planned, self.condition = ids, condition
        due = sorted(
            (js for js in queue if self.plan[js.id].start_s <= now + 1e-6),
            key=lambda js: self.plan[js.id].rank,
        )
        later = [
            self.plan[js.id].start_s
            for js in queue
            if now + 1e-6 < self.plan[js.id].start_s < math.inf
        ]
        requests = []
        for js in due:
            first = self.plan[js.id].gpu_type
            requests.append(
                Request(job_id=js.id, gpus=js.rigid_gpus, gpu_type=first, move_off_slow=True)
            )
            requests.append(Request(job_id=js.id, gpus=js.rigid_gpus, move_off_slow=True))
        return Allocation(requests=tuple(requests), backfill=True, wake_s=min(later, default=None))

    def _replan(
        self, state: ClusterState, waiting: list[JobState], running: list[JobState], now: float
    ) -> None:
        """Plan the running jobs and the REPLAN_MAX_JOBS waiting ones first by Smith's rule;
        the others wait for a later plan (bounded re-planning)."""
        if len(waiting) + len(running) > ILP_MAX_JOBS:
            at_once = start_now(state, waiting, running, now)
            if at_once is not None:  # no contention: the list schedule would say the same
                self.plan = at_once
                self.uncontended += 1
                return
        ranked = sorted(
            waiting,
            key=lambda js: -js.job.weight / max(js.steps_left(now) * js.nominal_step_s, 1e-9),
        )
        planned, later = ranked[:REPLAN_MAX_JOBS], ranked[REPLAN_MAX_JOBS:]
        plan, solution = build_plan(
            state, planned, running, now_s=now, time_limit_s=REPLAN_TIME_LIMIT_S
        )
        for rank, js in enumerate(later, start=len(plan)):
            plan[js.id] = PlanEntry(gpu_type="", start_s=math.inf, rank=rank)
        self.plan = plan
        if solution is not None:
            self.replans += 1
            self.by_ilp += solution.method == "time-indexed ILP"
            self.statuses[solution.status] = self.statuses.get(solution.status, 0) + 1

    def notes(self) -> tuple[str, ...]:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.statuses.items()))
        return (
            f"hybrid: {self.replans} plans ({self.by_ilp} by the ILP; {counts}); "
            f"no plan needed at {self.uncontended} decisions (every waiting job fitted in free "
            "GPUs)",
        )


def start_now(
    state: ClusterState, waiting: Sequence[JobState], running: Sequence[JobState], now_s: float
) -> dict[str, PlanEntry] | None:
    """When the free GPUs of each type (pooled, as the plans pool them) hold every waiting job
    on its fastest type that has room: that plan, everything starting
    now; else None (a plan is needed)."""
    used: dict[str, int] = {}
    for js in running:
        assert js.placement is not None
        used[js.placement.gpu_type] = used.get(js.placement.gpu_type, 0) + js.placement.gpus
    free = {t: state.gpus_of_type(t) - used.get(t, 0) for t in state.gpu_types}
    plan = {js.id: PlanEntry(gpu_type=js.placement.gpu_type, start_s=now_s, rank=r)
            for r, js in enumerate(running) if js.placement is not None}  # fmt: skip
    for js in waiting:
        fits = [(d, t) for t, d in _options(state, js, now_s) if free[t] >= js.rigid_gpus]
        if not fits:
            return None
        _, gpu_type = min(fits)
        free[gpu_type] -= js.rigid_gpus
        plan[js.id] = PlanEntry(gpu_type=gpu_type, start_s=now_s, rank=len(plan))
    return plan


def make_static(workload: Workload) -> tuple[Policy, Callable[[], tuple[str, ...]]]:
    static = Static(workload.jobs, workload.work)
    return Policy(name="static", decide=static.decide), lambda: tuple(static.notes)


def make_hybrid(workload: Workload) -> tuple[Policy, Callable[[], tuple[str, ...]]]:
    hybrid = Hybrid()
    return Policy(name="hybrid", decide=hybrid.decide), hybrid.notes
