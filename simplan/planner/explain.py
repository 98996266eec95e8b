"""Why the winner beat the runners-up: bottleneck stage, exposed communication, bubble, memory."""

from __future__ import annotations

from typing import Any

from simplan.units import GiB

PARTS = (
    ("compute_s", "compute"),
    ("recompute_s", "recomputation"),
    ("exposed_comm_s", "exposed communication"),
    ("bubble_s", "pipeline bubble"),
    ("optimizer_s", "optimizer"),
)


def bottleneck(plan: Any) -> str:
    stages = plan.predicted.get("stages", [])
    if not stages:
        return "no simulated stages"
    worst = max(stages, key=lambda d: d["busy_s"] + d["exposed_comm_s"])
    full = max(stages, key=lambda d: d["peak_memory_bytes"] / d["capacity_bytes"])
    return (
        f"busiest stage {worst['stage']} ({worst['device_name']}, "
        f"{worst['busy_s']:.3g} s busy + {worst['exposed_comm_s']:.3g} s exposed comm); "
        f"fullest stage {full['stage']} at {full['peak_memory_bytes'] / GiB:.1f} of "
        f"{full['capacity_bytes'] / GiB:.0f} GiB"
    )


def compare(winner: Any, other: Any) -> str:
    """One line: how much faster the winner is and which parts of the step explain it."""
    a, b = winner.predicted.get("breakdown", {}), other.predicted.get("breakdown", {})
    gap = other.step_time_s - winner.step_time_s
    deltas = sorted(
        ((b.get(k, 0.0) - a.get(k, 0.0), label) for k, label in PARTS),
        key=lambda x: -abs(x[0]),
    )
    why = ", ".join(
        f"{label} {b.get(k, 0.0):.3g} s vs {a.get(k, 0.0):.3g} s"
        for d, label in deltas[:2]
        for k, lab in PARTS
        if lab == label and abs(d) > 1e-9
    )
    pct = gap / other.step_time_s if other.step_time_s else 0.0
    return (
        f"vs {other.role} [{other.config.describe()}]: {other.step_time_s:.4g} s per step, "
        f"the winner is {pct:.1%} faster ({why or 'same breakdown'}); its peak memory "
        f"{other.predicted.get('peak_memory_bytes', 0) / GiB:.1f} GiB vs "
        f"{winner.predicted.get('peak_memory_bytes', 0) / GiB:.1f} GiB"
    )


def explain(plans: list[Any], baselines: list[Any]) -> list[str]:
    if not plans:
        return []
    winner = plans[0]
    lines = [
        f"winner [{winner.config.describe()}] on {winner.layout}: "
        f"{winner.step_time_s:.4g} s per step; {bottleneck(winner)}",
    ]
    lines += [f"  {x}" for x in winner.predicted.get("critical_path", [])]
    for other in list(plans[1:]) + [b for b in baselines if b.config != winner.config]:
        lines.append(compare(winner, other))
    return lines
