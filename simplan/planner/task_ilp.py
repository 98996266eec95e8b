"""The ILP that places the heads of a multi-task model, on plain arrays (simplan.planner.tasks
builds them from the cost model and the topology).

Choices: the trunk's data-parallel size R (one of `trunk_sizes`), and per head h an option o:
0 = replicated (runs with the trunk on each of the R replicas), or a group of `group_sizes[o-1]`
devices of its own. The devices used, R + the heads' groups, are at most `devices`.

Variables (binary): y[R] the trunk's size; x[h,o] the head's option; z[h,R] = x[h,0] and y[R]
(a replicated head's cost depends on R); w[h,o,R] = x[h,o] and y[R] for o > 0 (its transfers
depend on R). Linearised as z >= x + y - 1 (the objective pushes them down). Continuous: M, the
longest branch after the trunk's forward; S, the step.

  (1) sum_R y[R] = 1;  sum_o x[h,o] = 1 for every h
  (2) sum_R R y[R] + sum_h sum_{o>0} size(o) x[h,o] <= devices
  (3) M >= sum_h sum_R z[h,R] local[h][R] + sum_h sum_{o>0,R} w[h,o,R] trunk_comm[h][o][R]
      (a trunk device runs its replicated heads, and where communication holds compute, sends)
  (4) M >= sum_{o>0,R} w[h,o,R] path[h][o][R] for every h
      (a placed head: features in, forward, backward, gradients out)
  (5) S >= sum_R y[R] trunk[R] + sum_h sum_R z[h,R] trunk_extra[h][R] + M
      (the trunk's forward and backward, its sync and optimizer, the replicated heads' share)
  (6) S >= sum_R y[R] trunk_fwd[R] + sum_{o>0,R} w[h,o,R] (path[h][o][R] + tail[h][o])
      (a placed head's step ends with its own sync and optimizer)
  minimise S.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import pulp

from simplan.planner.ilp import SolveRecord, _gap, _var, make_solver, quiet_stdout


@dataclass(frozen=True, kw_only=True)
class HeadProblem:
    """Seconds of every choice (module docstring). Tables are indexed [head][option][R-index]
    for options o > 0 (o - 1 in the table) and [head][R-index] for replicated heads."""

    devices: int
    trunk_sizes: tuple[int, ...]
    group_sizes: tuple[int, ...]
    trunk: tuple[float, ...]
    trunk_fwd: tuple[float, ...]
    local: tuple[tuple[float, ...], ...]
    trunk_extra: tuple[tuple[float, ...], ...]
    path: tuple[tuple[tuple[float, ...], ...], ...]
    trunk_comm: tuple[tuple[tuple[float, ...], ...], ...]
    tail: tuple[tuple[float, ...], ...]

    @property
    def heads(self) -> int:
        return len(self.local)

    def step_s(self, r: int, options: tuple[int, ...]) -> float | None:
        """The objective of one choice (R-index r, an option per head), None if it needs too
        many devices: the oracle the ILP must equal."""
        used = self.trunk_sizes[r] + sum(self.group_sizes[o - 1] for o in options if o)
        if used > self.devices:
            return None
        local = sum(self.local[h][r] for h, o in enumerate(options) if o == 0)
        local += sum(self.trunk_comm[h][o - 1][r] for h, o in enumerate(options) if o)
        paths = [self.path[h][o - 1][r] for h, o in enumerate(options) if o]
        branch = max([local, *paths])
        extra = sum(self.trunk_extra[h][r] for h, o in enumerate(options) if o == 0)
        ends = [
            self.trunk_fwd[r] + self.path[h][o - 1][r] + self.tail[h][o - 1]
            for h, o in enumerate(options)
            if o
        ]
        return max([self.trunk[r] + extra + branch, *ends])


@dataclass(frozen=True, kw_only=True)
class HeadChoice:
    trunk_size: int
    options: tuple[int, ...]  # per head: 0 replicated, else its group's size
    objective_s: float


def brute_force(problem: HeadProblem) -> HeadChoice | None:
    """Every choice evaluated: the oracle for small problems."""
    best: HeadChoice | None = None
    options = range(len(problem.group_sizes) + 1)
    for r in range(len(problem.trunk_sizes)):
        for combo in itertools.product(options, repeat=problem.heads):
            value = problem.step_s(r, combo)
            if value is not None and (best is None or value < best.objective_s - 1e-15):
                sizes = tuple(problem.group_sizes[o - 1] if o else 0 for o in combo)
                best = HeadChoice(
                    trunk_size=problem.trunk_sizes[r], options=sizes, objective_s=value
                )
    return best


def solve_heads(
    problem: HeadProblem, *, time_limit_s: float = 10.0, solver: str = "highs"
) -> tuple[HeadChoice | None, SolveRecord]:
    """The ILP's choice (None when nothing fits), and what the solve did."""
    started = time.perf_counter()
    prob, y, x = _build(problem)
    engine = make_solver(time_limit_s, solver)
    with quiet_stdout():
        prob.solve(engine)
    choice = _read(problem, y, x) if prob.sol_status in (1, 2) else None
    value = choice.objective_s if choice else None
    return choice, SolveRecord(
        problem=f"head placement {problem.heads} heads / {problem.devices} devices",
        solver=type(engine).__name__,
        status=pulp.LpStatus[prob.status],
        sol_status=int(prob.sol_status),
        objective=value,
        gap=_gap(prob, engine, value),
        solve_s=time.perf_counter() - started,
        variables=prob.numVariables(),
        constraints=prob.numConstraints(),
    )


def _build(problem: HeadProblem) -> tuple[pulp.LpProblem, list, list]:
    p = problem
    prob = pulp.LpProblem("heads", pulp.LpMinimize)
    rs, opts, heads = range(len(p.trunk_sizes)), range(1, len(p.group_sizes) + 1), range(p.heads)
    binary, cont = pulp.LpBinary, pulp.LpContinuous
    y = [_var(prob, f"y_{r}", 0, 1, binary) for r in rs]
    x = [[_var(prob, f"x_{h}_{o}", 0, 1, binary) for o in range(len(opts) + 1)] for h in heads]
    z = [[_var(prob, f"z_{h}_{r}", 0, 1, cont) for r in rs] for h in heads]
    w = [[[_var(prob, f"w_{h}_{o}_{r}", 0, 1, cont) for r in rs] for o in opts] for h in heads]
    m, s = _var(prob, "M", 0, None, cont), _var(prob, "S", 0, None, cont)
    prob += s
    prob += pulp.lpSum(y) == 1, "one_trunk_size"
    for h in heads:
        prob += pulp.lpSum(x[h]) == 1, f"one_option_{h}"
        for r in rs:
            prob += z[h][r] >= x[h][0] + y[r] - 1, f"z_{h}_{r}"
            for o in opts:
                prob += w[h][o - 1][r] >= x[h][o] + y[r] - 1, f"w_{h}_{o}_{r}"
    prob += (
        (
            pulp.lpSum(p.trunk_sizes[r] * y[r] for r in rs)
            + pulp.lpSum(p.group_sizes[o - 1] * x[h][o] for h in heads for o in opts)
            <= p.devices
        ),
        "devices",
    )
    placed = [
        [pulp.lpSum(w[h][o - 1][r] * p.path[h][o - 1][r] for o in opts for r in rs)] for h in heads
    ]
    prob += (
        m
        >= pulp.lpSum(z[h][r] * p.local[h][r] for h in heads for r in rs)
        + pulp.lpSum(
            w[h][o - 1][r] * p.trunk_comm[h][o - 1][r] for h in heads for o in opts for r in rs
        ),
        "trunk_branch",
    )
    for h in heads:
        prob += m >= placed[h][0], f"head_branch_{h}"
        prob += (
            s
            >= pulp.lpSum(y[r] * p.trunk_fwd[r] for r in rs)
            + pulp.lpSum(
                w[h][o - 1][r] * (p.path[h][o - 1][r] + p.tail[h][o - 1]) for o in opts for r in rs
            ),
            f"head_end_{h}",
        )
    prob += (
        s
        >= pulp.lpSum(y[r] * p.trunk[r] for r in rs)
        + pulp.lpSum(z[h][r] * p.trunk_extra[h][r] for h in heads for r in rs)
        + m,
        "trunk_end",
    )
    return prob, y, x


def _read(problem: HeadProblem, y: list, x: list) -> HeadChoice:
    r = max(range(len(y)), key=lambda i: y[i].value() or 0.0)
    options = tuple(max(range(len(row)), key=lambda o: row[o].value() or 0.0) for row in x)
    value = problem.step_s(r, options)
    sizes = tuple(problem.group_sizes[o - 1] if o else 0 for o in options)
    return HeadChoice(
        trunk_size=problem.trunk_sizes[r], options=sizes, objective_s=float(value or 0.0)
    )
