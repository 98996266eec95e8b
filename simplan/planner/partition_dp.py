"""Exact dynamic programs for contiguous pipeline partitions (oracles and warm starts).

A partition problem is given as plain arrays (see `PartitionProblem` in simplan.planner.ilp):
time[s][l] is the time of layer l when it runs on stage s (per-stage speeds make the rows
differ), mem[s][l] its memory on stage s, cap[s] the memory of stage s's device, cut[l] the time
to send the activations across a cut placed after layer l (paid by both neighbouring stages).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

INF = float("inf")


def stage_cost(
    time: Sequence[Sequence[float]],
    cut: Sequence[float],
    s: int,
    lo: int,
    hi: int,
    scale: Sequence[float] = (),
) -> float:
    """Time of stage s holding layers [lo, hi): its layers plus the cuts on both sides (the cut
    after stage s costs scale[s] x cut[last layer], scale defaulting to 1)."""
    n = len(cut)
    total = sum(time[s][lo:hi])
    if lo > 0:
        total += cut[lo - 1] * (scale[s - 1] if scale else 1.0)
    if hi < n:
        total += cut[hi - 1] * (scale[s] if scale else 1.0)
    return total


def _fits(mem: Sequence[Sequence[float]], cap: Sequence[float], s: int, lo: int, hi: int) -> bool:
    return sum(mem[s][lo:hi]) <= cap[s] * (1 + 1e-9)


def minmax_partition(
    time: Sequence[Sequence[float]],
    cut: Sequence[float],
    mem: Sequence[Sequence[float]] | None = None,
    cap: Sequence[float] | None = None,
    scale: Sequence[float] = (),
) -> tuple[tuple[int, ...], float] | None:
    """Contiguous split of n layers into S = len(time) non-empty stages minimizing the largest
    stage time under the memory limits; (boundaries, largest stage time), or None when no split
    fits. O(S n^2)."""
    stages, n = len(time), len(cut)
    if stages > n:
        return None
    prefix = [[0.0] for _ in range(stages)]
    mprefix = [[0.0] for _ in range(stages)]
    for s in range(stages):
        for layer in range(n):
            prefix[s].append(prefix[s][-1] + time[s][layer])
            mprefix[s].append(mprefix[s][-1] + (mem[s][layer] if mem else 0.0))
    best = [[INF] * (n + 1) for _ in range(stages + 1)]
    arg = [[0] * (n + 1) for _ in range(stages + 1)]
    best[0][0] = 0.0
    for k in range(1, stages + 1):
        s = k - 1
        limit = cap[s] * (1 + 1e-9) if cap else INF
        for j in range(k, n - (stages - k) + 1):
            for i in range(k - 1, j):
                if best[k - 1][i] == INF or mprefix[s][j] - mprefix[s][i] > limit:
                    continue
                t = prefix[s][j] - prefix[s][i]
                if i > 0:
                    t += cut[i - 1] * (scale[s - 1] if scale else 1.0)
                if j < n:
                    t += cut[j - 1] * (scale[s] if scale else 1.0)
                cost = max(best[k - 1][i], t)
                if cost < best[k][j] - 1e-15:
                    best[k][j], arg[k][j] = cost, i
    if best[stages][n] == INF:
        return None
    bounds = [n]
    for k in range(stages, 0, -1):
        bounds.append(arg[k][bounds[-1]])
    return tuple(reversed(bounds)), best[stages][n]


def pipeline_objective(
    time: Sequence[Sequence[float]],
    cut: Sequence[float],
    bounds: Sequence[int],
    microbatches: int,
    scale: Sequence[float] = (),
) -> float:
    """(m - 1) x the slowest stage + the sum of the stages: a 1F1B/GPipe step's length."""
    costs = [
        stage_cost(time, cut, s, bounds[s], bounds[s + 1], scale) for s in range(len(bounds) - 1)
    ]
    return (microbatches - 1) * max(costs) + sum(costs)


def brute_force_partition(
    time: Sequence[Sequence[float]],
    cut: Sequence[float],
    mem: Sequence[Sequence[float]] | None = None,
    cap: Sequence[float] | None = None,
    microbatches: int | None = None,
    scale: Sequence[float] = (),
) -> tuple[tuple[int, ...], float] | None:
    """Every contiguous split (small cases only): the best under the pipeline objective when
    microbatches is given, else under the largest stage time."""
    stages, n = len(time), len(cut)
    best: tuple[tuple[int, ...], float] | None = None
    for inner in itertools.combinations(range(1, n), stages - 1):
        bounds = (0, *inner, n)
        if (
            mem
            and cap
            and not all(_fits(mem, cap, s, bounds[s], bounds[s + 1]) for s in range(stages))
        ):
            continue
        if microbatches is None:
            value = max(
                stage_cost(time, cut, s, bounds[s], bounds[s + 1], scale) for s in range(stages)
            )
        else:
            value = pipeline_objective(time, cut, bounds, microbatches, scale)
        if best is None or value < best[1] - 1e-12:
            best = (bounds, value)
    return best
