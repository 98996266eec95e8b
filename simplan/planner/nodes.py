"""Node-level placement ILP: the order in which the pipeline walks through a set of nodes.

Consecutive pipeline stages exchange activations every micro-batch, so the nodes are chained
into a path minimizing the sum of the p2p times between neighbours on the real links (an open
travelling-salesman path, MTZ formulation: x[a,b] = the path goes from node a to node b,
u[a] = position of node a; the first node is fixed, which breaks the path's symmetry). On the
presets' non-blocking fabrics every pair costs the same and the natural order is returned
without a solve.
"""

from __future__ import annotations

import itertools
import time
from functools import lru_cache
from typing import Any

import pulp

from simplan.planner.ilp import SolveRecord, make_solver, quiet_stdout

NOMINAL_BYTES = 16 * 2**20
MAX_NODES = 16


def order_nodes(
    cluster: Any, nodes: tuple[int, ...], time_limit_s: float = 2.0
) -> tuple[tuple[int, ...], SolveRecord | None]:
    """The nodes in pipeline order, and the solve's record (None when no solve was needed)."""
    if len(nodes) < 3 or len(nodes) > MAX_NODES:
        return nodes, None
    cost = _costs(cluster, nodes)
    values = {round(c, 12) for row in cost for c in row if c > 0}
    if len(values) <= 1:
        return nodes, None
    return _solve(nodes, cost, time_limit_s)


def _costs(cluster: Any, nodes: tuple[int, ...]) -> list[list[float]]:
    firsts = [cluster.node_devices(n)[0] for n in nodes]
    return [
        [cluster.transfer_time(a, b, NOMINAL_BYTES) if a != b else 0.0 for b in firsts]
        for a in firsts
    ]


@lru_cache(maxsize=256)
def _solve_cached(
    nodes: tuple[int, ...], cost: tuple[tuple[float, ...], ...], time_limit_s: float
) -> tuple[tuple[int, ...], SolveRecord]:
    started = time.perf_counter()
    n = len(nodes)
    prob = pulp.LpProblem("node_order", pulp.LpMinimize)
    x = {
        (a, b): prob.add_variable(f"x_{a}_{b}", 0, 1, cat="Binary")
        for a in range(n)
        for b in range(n)
        if a != b and b != 0
    }
    u = {a: prob.add_variable(f"u_{a}", 0, n - 1, cat="Continuous") for a in range(n)}
    prob += pulp.lpSum(cost[a][b] * v for (a, b), v in x.items())
    prob += pulp.lpSum(x.values()) == n - 1, "path_edges"
    prob += u[0] == 0, "start"
    for a in range(n):
        prob += pulp.lpSum(v for (i, _j), v in x.items() if i == a) <= 1, f"out_{a}"
        if a:
            prob += pulp.lpSum(v for (_i, j), v in x.items() if j == a) == 1, f"in_{a}"
    for (a, b), v in x.items():  # MTZ: positions increase along the path
        prob += u[b] >= u[a] + 1 - n * (1 - v), f"mtz_{a}_{b}"
    engine = make_solver(time_limit_s)
    with quiet_stdout():
        prob.solve(engine)
    order = _read(x, n) if prob.sol_status in (1, 2) else list(range(n))
    value = sum(cost[a][b] for a, b in itertools.pairwise(order))
    record = SolveRecord(
        problem=f"node order over {n} nodes",
        solver=type(engine).__name__,
        status=pulp.LpStatus[prob.status],
        sol_status=int(prob.sol_status),
        objective=value,
        gap=None,
        solve_s=time.perf_counter() - started,
        variables=prob.numVariables(),
        constraints=prob.numConstraints(),
    )
    return tuple(nodes[i] for i in order), record


def _solve(
    nodes: tuple[int, ...], cost: list[list[float]], time_limit_s: float
) -> tuple[tuple[int, ...], SolveRecord]:
    return _solve_cached(nodes, tuple(tuple(r) for r in cost), time_limit_s)


def _read(x: dict[tuple[int, int], Any], n: int) -> list[int]:
    nxt = {a: b for (a, b), v in x.items() if (pulp.value(v) or 0) > 0.5}
    order = [0]
    while order[-1] in nxt and len(order) < n:
        order.append(nxt[order[-1]])
    return order if len(order) == n else list(range(n))
