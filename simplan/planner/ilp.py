"""PuLP ILPs on plain arrays: the contiguous pipeline partition (prefix formulation).

The solver sees only numbers. Layers are in the DAG's topological order; stage s holds a
contiguous run of them. Runs of identical layers (same time, memory and cut cost on every stage)
are collapsed into one segment with an integer count per stage, so a 96-block GPT has three
segments, not 98 layers.

Variables, for segment j (k_j layers) and stage s (labels as in the constraints below):
  c[j,s] in 0..k_j   layers of segment j in stages <= s (the prefix variable; binary if k_j = 1)
  f[j,s] binary      segment j is complete by stage s         (C1: k f <= c <= k - 1 + f)
  h[j,s] binary      segment j has started by stage s         (C2: h <= c <= k h)
Constraints: (C3) c is non-decreasing in s and c[j,S-1] = k_j; (C4) contiguity h[j+1,s] <= f[j,s];
(C5) every stage is non-empty; (C6) memory of stage s <= cap[s]; (C7) T >= stage time t_s, where
t_s = sum_j time_j[s] (c[j,s] - c[j,s-1]) + the cut costs of its boundaries, the cut after stage s
costing sum_j cut_j (h[j,s] - h[j+1,s]). Objective: T (min-max) or (m - 1) T + sum_s t_s (the
step of a 1F1B/GPipe pipeline with m micro-batches).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import time as _time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pulp

from simplan.errors import SimplanError
from simplan.planner.partition_dp import minmax_partition, pipeline_objective, stage_cost


@dataclass(frozen=True, kw_only=True)
class PartitionProblem:
    """time[s][l], mem[s][l]: layer l on stage s; cap[s]; cut[l]: cut after layer l (seconds);
    microbatches: None for the min-max objective, else m of the pipeline objective."""

    time: tuple[tuple[float, ...], ...]
    cut: tuple[float, ...]
    mem: tuple[tuple[float, ...], ...] = ()
    cap: tuple[float, ...] = ()
    microbatches: int | None = None
    cut_scale: tuple[float, ...] = ()  # per boundary after stage s (slower links between nodes)

    @property
    def stages(self) -> int:
        return len(self.time)

    @property
    def layers(self) -> int:
        return len(self.cut)

    def objective(self, bounds: tuple[int, ...]) -> float:
        if self.microbatches is None:
            return max(
                stage_cost(self.time, self.cut, s, bounds[s], bounds[s + 1], self.cut_scale)
                for s in range(self.stages)
            )
        return pipeline_objective(self.time, self.cut, bounds, self.microbatches, self.cut_scale)


@dataclass(frozen=True, kw_only=True)
class SolveRecord:
    """What one solve did: for every ILP the planner reports these."""

    problem: str
    solver: str
    status: str
    sol_status: int
    objective: float | None
    gap: float | None
    solve_s: float
    variables: int
    constraints: int
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "problem": self.problem,
            "solver": self.solver,
            "status": self.status,
            "sol_status": self.sol_status,
            "sol_status_name": pulp.LpSolution.get(self.sol_status, "?"),
            "objective": self.objective,
            "gap": self.gap,
            "solve_s": self.solve_s,
            "variables": self.variables,
            "constraints": self.constraints,
            "notes": list(self.notes),
        }


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """HiGHS prints a banner on file descriptor 1 even with msg=False: silence it there."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def make_solver(time_limit_s: float, prefer: str = "highs") -> Any:
    """HiGHS through PuLP by default; CBC when HiGHS is unavailable (or asked for).

    HiGHS runs without presolve: on these partition models HiGHS 1.16's presolve returned a
    wrong "optimal" solution (objective 26 where 16 is feasible, an 18-layer chain on 7 stages)
    and called feasible ones infeasible; without presolve it agrees with the exact dynamic
    program and with CBC (tests/planner/test_ilp.py). The models are small (tens to hundreds of
    variables), so presolve buys little."""
    if prefer == "highs":
        highs = pulp.HiGHS(msg=False, timeLimit=time_limit_s, presolve="off")
        if highs.available():
            return highs
    if prefer not in ("highs", "cbc"):
        raise SimplanError(f"unknown solver {prefer!r}; use highs or cbc")
    return pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit_s)


def segments(problem: PartitionProblem) -> list[tuple[int, int]]:
    """Runs [start, end) of layers identical on every stage (time, memory, cut)."""

    def key(layer: int) -> tuple:
        mem = tuple(row[layer] for row in problem.mem) if problem.mem else ()
        return (tuple(row[layer] for row in problem.time), mem, problem.cut[layer])

    runs: list[tuple[int, int]] = []
    start = 0
    for layer in range(1, problem.layers + 1):
        if layer == problem.layers or key(layer) != key(start):
            runs.append((start, layer))
            start = layer
    return runs


def _gap(prob: pulp.LpProblem, solver: Any, value: float | None) -> float | None:
    """HiGHS's MIP gap; or, when the ILP found nothing in time and the dynamic program's
    partition is kept, that partition's gap to the ILP's proven lower bound."""
    model: Any = getattr(solver, "solverModel", None) or getattr(prob, "solverModel", None)
    if model is None:
        return None
    try:
        info = model.getInfo()
        gap, bound = float(info.mip_gap), float(info.mip_dual_bound)
    except Exception:
        return None
    if prob.sol_status in (1, 2):
        return gap if gap == gap and gap < 1e30 else None
    if value and abs(bound) < 1e30:
        return max(value - bound, 0.0) / abs(value)
    return None


def solve_partition(
    problem: PartitionProblem,
    *,
    time_limit_s: float = 10.0,
    solver: str = "highs",
    warm_start: bool = True,
) -> tuple[tuple[int, ...] | None, SolveRecord]:
    """The optimal contiguous partition (boundaries of length S + 1), or None if none fits."""
    started = _time.perf_counter()
    notes: list[str] = []
    upper = None
    if warm_start:
        guess = minmax_partition(
            problem.time, problem.cut, problem.mem or None, problem.cap or None, problem.cut_scale
        )
        if guess is None:
            return None, _record(problem, "infeasible (dynamic program)", -1, started, ("dp",))
        upper = problem.objective(guess[0])
        notes.append(f"dynamic-program bound {upper:.6g}")
    prob, c, segs = _build(problem, upper)
    engine = make_solver(time_limit_s, solver)
    with quiet_stdout():
        prob.solve(engine)
    status = pulp.LpStatus[prob.status]
    bounds = _read_bounds(c, segs, problem) if prob.sol_status in (1, 2) else None
    if warm_start and guess is not None:
        if bounds is None:
            bounds = guess[0]
            notes.append("no ILP solution in time: kept the dynamic program's partition")
        elif problem.objective(guess[0]) < problem.objective(bounds) - 1e-12:
            bounds = guess[0]
            notes.append("the dynamic program's partition beat the unfinished ILP's")
    value = problem.objective(bounds) if bounds else None
    return bounds, SolveRecord(
        problem=f"partition {problem.layers} layers / {problem.stages} stages "
        f"({len(segs)} segments)",
        solver=type(engine).__name__,
        status=status,
        sol_status=int(prob.sol_status),
        objective=value,
        gap=_gap(prob, engine, value),
        solve_s=_time.perf_counter() - started,
        variables=prob.numVariables(),
        constraints=prob.numConstraints(),
        notes=tuple(notes),
    )


def _record(
    problem: PartitionProblem, status: str, sol: int, started: float, notes: tuple[str, ...]
) -> SolveRecord:
    return SolveRecord(
        problem=f"partition {problem.layers} layers / {problem.stages} stages",
        solver="none",
        status=status,
        sol_status=sol,
        objective=None,
        gap=None,
        solve_s=_time.perf_counter() - started,
        variables=0,
        constraints=0,
        notes=notes,
    )


def _var(prob: pulp.LpProblem, name: str, low: float, up: float | None, cat: str) -> Any:
    """A variable attached to the problem (PuLP >= 3.3), or a plain one on older PuLP."""
    if hasattr(prob, "add_variable"):
        return prob.add_variable(name, low, up, cat=cat)
    return pulp.LpVariable(name, low, up, cat=cat)


def _build(
    problem: PartitionProblem, upper: float | None
) -> tuple[pulp.LpProblem, dict, list[tuple[int, int]]]:
    segs = segments(problem)
    stages, n = problem.stages, problem.layers
    prob = pulp.LpProblem("partition", pulp.LpMinimize)
    c: dict[tuple[int, int], Any] = {}
    f: dict[tuple[int, int], Any] = {}
    h: dict[tuple[int, int], Any] = {}
    for j, (a, b) in enumerate(segs):
        k = b - a
        for s in range(stages):
            if k == 1:
                c[j, s] = f[j, s] = h[j, s] = _var(prob, f"y_{j}_{s}", 0, 1, "Binary")
                continue
            c[j, s] = _var(prob, f"c_{j}_{s}", 0, k, "Integer")
            f[j, s] = _var(prob, f"f_{j}_{s}", 0, 1, "Binary")
            h[j, s] = _var(prob, f"h_{j}_{s}", 0, 1, "Binary")
            prob += k * f[j, s] <= c[j, s], f"C1a_{j}_{s}"
            prob += c[j, s] <= k - 1 + f[j, s], f"C1b_{j}_{s}"
            prob += h[j, s] <= c[j, s], f"C2a_{j}_{s}"
            prob += c[j, s] <= k * h[j, s], f"C2b_{j}_{s}"
        prob += c[j, stages - 1] == k, f"C3end_{j}"
        for s in range(stages - 1):
            prob += c[j, s] <= c[j, s + 1], f"C3_{j}_{s}"
    for j in range(len(segs) - 1):
        for s in range(stages):
            prob += h[j + 1, s] <= f[j, s], f"C4_{j}_{s}"
    for s in range(stages):  # prefix counts: stages <= s hold between s+1 and n-S+1+s layers
        total = pulp.lpSum(c[j, s] for j in range(len(segs)))
        prob += total >= s + 1, f"C5a_{s}"
        prob += total <= n - stages + 1 + s, f"C5b_{s}"
    _stage_constraints(prob, problem, segs, c, h, upper)
    return prob, c, segs


def _stage_constraints(
    prob: pulp.LpProblem,
    problem: PartitionProblem,
    segs: list[tuple[int, int]],
    c: dict,
    h: dict,
    upper: float | None,
) -> None:
    stages = problem.stages
    big_t = _var(prob, "T", 0, None, "Continuous")

    def count(j: int, s: int) -> Any:
        return c[j, s] - c[j, s - 1] if s > 0 else c[j, s]

    scale = problem.cut_scale or (1.0,) * stages

    def cut_after(s: int) -> Any:  # cut cost of the boundary after stage s
        return pulp.lpSum(
            scale[s] * problem.cut[b - 1] * (h[j, s] - (h[j + 1, s] if j + 1 < len(segs) else 0))
            for j, (_a, b) in enumerate(segs)
        )

    times = []
    for s in range(stages):
        t = pulp.lpSum(problem.time[s][a] * count(j, s) for j, (a, _b) in enumerate(segs))
        if s > 0:
            t += cut_after(s - 1)
        if s < stages - 1:
            t += cut_after(s)
        prob += pulp.lpSum(count(j, s) for j in range(len(segs))) >= 1, f"C5_{s}"
        if problem.mem:
            used = pulp.lpSum(problem.mem[s][a] * count(j, s) for j, (a, _b) in enumerate(segs))
            prob += used <= problem.cap[s] * (1 + 1e-9), f"C6_{s}"
        prob += big_t >= t, f"C7_{s}"
        times.append(t)
    m = problem.microbatches
    objective = big_t if m is None else (m - 1) * big_t + pulp.lpSum(times)
    prob += objective
    if upper is not None:
        prob += objective <= upper * (1 + 1e-7) + 1e-12, "warm_start_bound"


def _read_bounds(
    c: dict, segs: list[tuple[int, int]], problem: PartitionProblem
) -> tuple[int, ...] | None:
    bounds = [0]
    for s in range(problem.stages):
        total = sum(round(pulp.value(c[j, s]) or 0) for j in range(len(segs)))
        bounds.append(total)
    if any(a >= b for a, b in itertools.pairwise(bounds)) or bounds[-1] != problem.layers:
        return None
    return tuple(bounds)
