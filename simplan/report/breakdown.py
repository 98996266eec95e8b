"""Where a step's time goes: stacked bars of compute, exposed communication, pipeline bubble,
recompute and optimizer, per pipeline stage of one plan and per plan."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from matplotlib.figure import Figure

from simplan.report.style import (
    BREAKDOWN_COLORS,
    BREAKDOWN_KEYS,
    BREAKDOWN_LABELS,
    FONT_SIZE,
    figure_legend,
    new_figure,
    stacked_bars,
    stage_ticks,
    time_unit,
)

if TYPE_CHECKING:
    from simplan.sim.result import SimResult


def stage_breakdowns(result: SimResult) -> list[tuple[str, dict[str, float]]]:
    """(label, breakdown) per stage's representative device of a SimResult."""
    out = []
    for d in result.devices:
        parts = {key: float(getattr(d, key)) for key in BREAKDOWN_KEYS}
        out.append((f"stage {d.stage}\n{d.device_name}", parts))
    return out


def stage_breakdown_bars(result: SimResult) -> tuple[list[tuple[str, dict[str, float]]], str]:
    devices = list(result.devices)
    ticks, xlabel = stage_ticks(devices)
    bars = [(t, b) for t, (_, b) in zip(ticks, stage_breakdowns(result), strict=True)]
    return bars, xlabel


def breakdown_figure(
    bars: Sequence[tuple[str, Mapping[str, float]]],
    *,
    title: str,
    xlabel: str,
    step_times_s: Sequence[float] | None = None,
) -> Figure:
    """Stacked bars, one per (label, breakdown); a segment per BREAKDOWN_KEYS entry (absent
    keys count as zero). step_times_s: a marker per bar at the step time."""
    longest = max((sum(b.get(k, 0.0) for k in BREAKDOWN_KEYS) for _, b in bars), default=0.0)
    scale, unit = time_unit(max([longest, *(step_times_s or [])], default=0.0))
    fig = new_figure(max(6.0, 2.5 + 0.45 * len(bars)), 4.2)
    ax = fig.axes[0]
    xs = list(range(len(bars)))
    layers = [
        (
            [float(b.get(key, 0.0)) * scale for _, b in bars],
            BREAKDOWN_COLORS[key],
            BREAKDOWN_LABELS[key],
        )
        for key in BREAKDOWN_KEYS
    ]
    stacked_bars(ax, xs, layers)
    if step_times_s:
        ax.plot(
            xs,
            [t * scale for t in step_times_s],
            linestyle="none",
            marker="_",
            markersize=22,
            color="black",
            label="step time",
        )
    ax.set_xticks(xs, [label for label, _ in bars], fontsize=FONT_SIZE - 1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"time per step ({unit})")
    ax.set_title(title, fontsize=FONT_SIZE + 1)
    ax.grid(axis="x", visible=False)
    figure_legend(fig, ax, last=("step time",), loc="outside right upper")
    return fig


def stage_breakdown_figure(result: SimResult, *, title: str | None = None) -> Figure:
    """Per-stage breakdown of one simulated step."""
    bars, xlabel = stage_breakdown_bars(result)
    head = title or f"{result.model} on {result.cluster}"
    return breakdown_figure(
        bars,
        title=f"{head}: time per stage",
        xlabel=xlabel,
        step_times_s=[float(result.step_time_s)] * len(bars),
    )


def plan_breakdown_figure(
    plans: Sequence[tuple[str, Mapping[str, float], float]], *, title: str
) -> Figure:
    """One bar per plan: (label, step breakdown averaged over stages, step time)."""
    return breakdown_figure(
        [(label, b) for label, b, _ in plans],
        title=title,
        xlabel="plan",
        step_times_s=[t for _, _, t in plans],
    )
