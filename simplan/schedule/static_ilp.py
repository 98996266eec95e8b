"""The static schedule of a known job set: a time-indexed ILP (PuLP, HiGHS) that chooses each
job's option (GPU type and count) and start slot, minimising the weighted sum of completion
times or the makespan; an exact brute force for small instances (its test oracle); and a list
schedule (Smith's rule) for sets too large for the ILP.

The problem is plain arrays (the solver never sees jobs or clusters):
- time is cut into slots of slot_s; job j is released at slot release[j] and option o runs
  it for dur[j][o] slots (its run time rounded up) on gpus[j][o] GPUs of pool[j][o];
- GPUs of one pool (a GPU type) are pooled: placement on nodes is the simulator's;
- x[j,o,s] = 1 when job j starts option o at slot s, for release[j] <= s <= H - dur[j][o],
  with H = last release + sum of each job's shortest duration (a serial schedule fits);
- (1) each job starts once: sum_{o,s} x[j,o,s] = 1;
- (2) capacity: for each pool p and slot t, sum of gpus[j][o] x[j,o,s] over the options of p
  running at t (s <= t < s + len) <= capacity[p];
- a job with resume[j] > 0 (one running now, released at slot 0) runs resume[j] slots longer
  when it starts later (it is stopped and restarts from a checkpoint): len(j,o,s);
- completion C_j = sum_{o,s} (s + len(j,o,s)) x[j,o,s]; objective sum_j w_j C_j (weighted) or
  M >= C_j for all j, min M (makespan).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pulp

from simplan.planner.ilp import make_solver, quiet_stdout

OBJECTIVES = ("weighted", "makespan")


@dataclass(frozen=True, kw_only=True)
class StaticProblem:
    release: tuple[int, ...]
    weight: tuple[float, ...]
    pool: tuple[tuple[int, ...], ...]
    gpus: tuple[tuple[int, ...], ...]
    dur: tuple[tuple[int, ...], ...]
    capacity: tuple[int, ...]
    objective: str = "weighted"
    pinned: tuple[bool, ...] = ()  # jobs that must start at their release slot
    resume: tuple[int, ...] = ()  # extra slots when a job starts after its release (a restart)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}")
        for j, options in enumerate(self.dur):
            if not options or any(d < 1 for d in options):
                raise ValueError(f"job {j}: needs at least one option of >= 1 slot")
            if any(self.gpus[j][o] > self.capacity[p] for o, p in enumerate(self.pool[j])):
                raise ValueError(f"job {j}: an option needs more GPUs than its pool has")

    def length(self, j: int, o: int, s: int) -> int:
        """Slots option o of job j runs when it starts at slot s."""
        late = bool(self.resume) and s > self.release[j]
        return self.dur[j][o] + (self.resume[j] if late else 0)

    def is_pinned(self, j: int) -> bool:
        return bool(self.pinned) and self.pinned[j]

    def starts(self, j: int, o: int) -> range:
        """The start slots of option o of job j within the horizon."""
        if self.is_pinned(j):
            return range(self.release[j], self.release[j] + 1)
        extra = self.resume[j] if self.resume else 0
        last = self.horizon - self.dur[j][o] - extra
        return range(self.release[j], max(last, self.release[j]) + 1)

    @property
    def jobs(self) -> int:
        return len(self.release)

    @cached_property
    def horizon(self) -> int:
        extra = sum(self.resume) if self.resume else 0
        return max(self.release) + sum(min(d) for d in self.dur) + extra


@dataclass(frozen=True, kw_only=True)
class StaticSolution:
    """option[j], start[j] (slots); objective value in slots; how it was found."""

    option: tuple[int, ...]
    start: tuple[int, ...]
    objective: float
    method: str
    status: str
    gap: float | None = None
    solve_s: float = 0.0
    notes: tuple[str, ...] = field(default=())


def objective_value(
    problem: StaticProblem, option: tuple[int, ...], start: tuple[int, ...]
) -> float:
    ends = [start[j] + problem.length(j, option[j], start[j]) for j in range(problem.jobs)]
    if problem.objective == "makespan":
        return float(max(ends))
    return float(sum(w * c for w, c in zip(problem.weight, ends, strict=True)))


def feasible(problem: StaticProblem, option: tuple[int, ...], start: tuple[int, ...]) -> bool:
    use = np.zeros((len(problem.capacity), 2 * problem.horizon + max(max(d) for d in problem.dur)))
    for j in range(problem.jobs):
        o = option[j]
        if start[j] < problem.release[j]:
            return False
        end = start[j] + problem.length(j, o, start[j])
        use[problem.pool[j][o], start[j] : end] += problem.gpus[j][o]
    return bool((use <= np.array(problem.capacity)[:, None]).all())


def brute_force(problem: StaticProblem) -> StaticSolution:
    """Every option and start slot of every job within the horizon: exact, exponential."""
    started = time.perf_counter()
    choices = [
        [(o, s) for o in range(len(problem.dur[j])) for s in problem.starts(j, o)]
        for j in range(problem.jobs)
    ]
    best: tuple[float, tuple[int, ...], tuple[int, ...]] | None = None
    for combo in itertools.product(*choices):
        option = tuple(c[0] for c in combo)
        start = tuple(c[1] for c in combo)
        value = objective_value(problem, option, start)
        if (best is None or value < best[0]) and feasible(problem, option, start):
            best = (value, option, start)
    assert best is not None  # the serial schedule is always within the horizon
    return StaticSolution(
        option=best[1], start=best[2], objective=best[0], method="brute force",
        status="optimal", gap=0.0, solve_s=time.perf_counter() - started,
    )  # fmt: skip


def solve_ilp(problem: StaticProblem, *, time_limit_s: float = 10.0) -> StaticSolution:
    """The time-indexed ILP of the module doc; falls back to the list schedule when the solver
    finds nothing in time (status says so)."""
    started = time.perf_counter()
    horizon = problem.horizon
    prob = pulp.LpProblem("static_schedule", pulp.LpMinimize)
    x: dict[tuple[int, int, int], pulp.LpVariable] = {}
    for j in range(problem.jobs):
        for o in range(len(problem.dur[j])):
            for s in problem.starts(j, o):
                x[j, o, s] = prob.add_variable(f"x_{j}_{o}_{s}", 0, 1, cat="Binary")
    completion = {
        j: pulp.lpSum((s + problem.length(j, o, s)) * v for (jj, o, s), v in x.items() if jj == j)
        for j in range(problem.jobs)
    }
    if problem.objective == "makespan":
        m = prob.add_variable("makespan", 0, None, cat="Continuous")
        prob += m
        for c in completion.values():
            prob += m >= c
    else:
        prob += pulp.lpSum(w * completion[j] for j, w in enumerate(problem.weight))
    for j in range(problem.jobs):
        prob += pulp.lpSum(v for (jj, _, _), v in x.items() if jj == j) == 1, f"once_{j}"
    _capacity_rows(prob, problem, x, horizon)
    solver = make_solver(time_limit_s)
    with quiet_stdout():
        prob.solve(solver)
    solve_s = time.perf_counter() - started
    if prob.sol_status not in (1, 2):
        fallback = list_schedule(problem)
        return StaticSolution(
            option=fallback.option, start=fallback.start, objective=fallback.objective,
            method="list schedule", status=f"ILP found no solution ({pulp.LpStatus[prob.status]})",
            solve_s=solve_s,
        )  # fmt: skip
    option, start = _read(problem, x)
    from simplan.planner.ilp import _gap

    value = objective_value(problem, option, start)
    status = "optimal" if prob.sol_status == 1 else "feasible (time limit)"
    return StaticSolution(
        option=option, start=start, objective=value, method="time-indexed ILP", status=status,
        gap=_gap(prob, solver, value), solve_s=solve_s,
    )  # fmt: skip


def _capacity_rows(
    prob: pulp.LpProblem, problem: StaticProblem, x: dict[tuple[int, int, int], pulp.LpVariable],
    horizon: int,
) -> None:  # fmt: skip
    rows: dict[tuple[int, int], list[tuple[int, pulp.LpVariable]]] = {}
    for (j, o, s), v in x.items():
        for t in range(s, s + problem.length(j, o, s)):
            rows.setdefault((problem.pool[j][o], t), []).append((problem.gpus[j][o], v))
    for (p, t), terms in sorted(rows.items()):
        if sum(g for g, _ in terms) > problem.capacity[p]:
            prob += pulp.lpSum(g * v for g, v in terms) <= problem.capacity[p], f"cap_{p}_{t}"


def _read(
    problem: StaticProblem, x: dict[tuple[int, int, int], pulp.LpVariable]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    option = [0] * problem.jobs
    start = [0] * problem.jobs
    for (j, o, s), v in x.items():
        if (v.value() or 0.0) > 0.5:
            option[j], start[j] = o, s
    return tuple(option), tuple(start)


def list_schedule(problem: StaticProblem, order: list[int] | None = None) -> StaticSolution:
    """Jobs in Smith's-rule order (weight / shortest duration, highest first; or `order`), each
    at the option and earliest start slot that complete it first given the jobs before it. The
    slots it tracks start at a work-conserving estimate of the makespan and double when a job
    finds no room (the serial horizon of the ILP would cost memory and time for nothing)."""
    started = time.perf_counter()
    if order is None:
        order = sorted(
            range(problem.jobs),
            key=lambda j: (not problem.is_pinned(j), -problem.weight[j] / min(problem.dur[j]), j),
        )
    free = _Free(problem.capacity, 2 * makespan_estimate(problem))
    option, start = [0] * problem.jobs, [0] * problem.jobs
    for j in order:
        best: tuple[int, int, int] | None = None
        for o, d in enumerate(problem.dur[j]):
            s = problem.release[j]
            if not problem.is_pinned(j):
                s = free.earliest(problem.pool[j][o], problem.gpus[j][o], d, s)
                if s > problem.release[j] and problem.resume:
                    d = problem.length(j, o, s)
                    s = free.earliest(problem.pool[j][o], problem.gpus[j][o], d, s)
            if best is None or s + d < best[0]:
                best = (s + d, o, s)
        assert best is not None
        end, o, s = best
        free.take(problem.pool[j][o], problem.gpus[j][o], s, end)
        option[j], start[j] = o, s
    value = objective_value(problem, tuple(option), tuple(start))
    return StaticSolution(
        option=tuple(option), start=tuple(start), objective=value, method="list schedule",
        status="heuristic (Smith's rule)", solve_s=time.perf_counter() - started,
    )  # fmt: skip


def makespan_estimate(problem: StaticProblem) -> int:
    """Slots: the last release, plus the jobs' GPU-slots (shortest option) over the GPUs, plus
    the longest job: about the makespan of a work-conserving schedule."""
    work = sum(problem.gpus[j][0] * min(problem.dur[j]) for j in range(problem.jobs))
    longest = max(max(d) for d in problem.dur)
    extra = max(problem.resume, default=0)
    return max(problem.release) + -(-work // sum(problem.capacity)) + longest + extra + 1


class _Free:
    """Free GPUs per pool and slot, growing on demand."""

    def __init__(self, capacity: tuple[int, ...], slots: int) -> None:
        self.capacity = np.array(capacity, dtype=np.int64)
        self.free = self.capacity[:, None].repeat(max(slots, 1), axis=1)

    def _grow(self, slots: int) -> None:
        if slots > self.free.shape[1]:
            more = max(slots, 2 * self.free.shape[1]) - self.free.shape[1]
            self.free = np.hstack([self.free, self.capacity[:, None].repeat(more, axis=1)])

    def earliest(self, pool: int, gpus: int, dur: int, release: int) -> int:
        """The first slot s >= release with `gpus` free in every slot of [s, s + dur)."""
        self._grow(release + dur)
        while True:
            s = earliest_start(self.free[pool], gpus, dur, release)
            if s >= 0:
                return s
            self._grow(2 * self.free.shape[1])

    def take(self, pool: int, gpus: int, start: int, end: int) -> None:
        self._grow(end)
        self.free[pool, start:end] -= gpus


def earliest_start(free: np.ndarray, gpus: int, dur: int, release: int) -> int:
    """The first slot s >= release with at least gpus free in every slot of [s, s + dur), where
    the window lies within `free`; -1 when there is none."""
    ok = free[release:] >= gpus
    if dur == 1:
        hits = np.flatnonzero(ok)
    else:
        # windows of dur consecutive True: differences of a running count
        count = np.concatenate(([0], np.cumsum(ok, dtype=np.int64)))
        hits = np.flatnonzero(count[dur:] - count[:-dur] == dur)
    return release + int(hits[0]) if hits.size else -1
