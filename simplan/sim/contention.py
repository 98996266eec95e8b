"""Collectives that run at the same time on sibling groups share links.

When every TP rank's data-parallel group all-reduces at once, the groups may cross the same
channels (one NIC per node shared by eight GPUs, say). The slowdown factor is the busiest
channel's load with all sibling groups, over the busiest channel's load of one group alone.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

NOMINAL_BYTES = 64 * 2**20

# per cluster: (op, groups) -> factor; the planner's estimates and the simulations of its
# candidates ask for the same groups, and on a large cluster each answer costs collective plans
_FACTORS: weakref.WeakKeyDictionary[Any, dict[tuple, float]] = weakref.WeakKeyDictionary()


def _max_load(plans: Sequence[Any], cluster: Any) -> float:
    worst = 0.0
    for phase_index in range(len(plans[0].phases)):
        loads: dict[str, float] = {}
        for plan in plans:
            if phase_index >= len(plan.phases):
                continue
            for channel, nbytes in plan.phases[phase_index].channel_bytes.items():
                loads[channel] = loads.get(channel, 0.0) + nbytes
        for channel, nbytes in loads.items():
            bandwidth = cluster.link(channel).effective_bandwidth_Bps
            worst = max(worst, nbytes / bandwidth)
    return worst


def sharing_factor(cluster: Any, op: str, groups: Sequence[Sequence[int]]) -> float:
    """How much slower one group's collective runs while all `groups` run it together (>= 1)."""
    shared = [tuple(g) for g in groups if len(g) > 1]
    if len(shared) <= 1:
        return 1.0
    try:
        known = _FACTORS.setdefault(cluster, {})
    except TypeError:  # an object that cannot be weakly referenced: no cache
        known = {}
    key = (op, tuple(shared))
    if key not in known:
        known[key] = _sharing_factor(cluster, op, shared)
    return known[key]


def _sharing_factor(cluster: Any, op: str, groups: list[tuple[int, ...]]) -> float:
    try:
        plans = [cluster.collective_plan(op, NOMINAL_BYTES, g) for g in groups]
    except Exception:  # a group shape the plan cannot describe: assume no sharing
        return 1.0
    alone = _max_load(plans[:1], cluster)
    together = _max_load(plans, cluster)
    return max(1.0, together / alone) if alone > 0 else 1.0
