"""Memory: the peak of each stage's device by category (parameters, gradients, optimizer
state, activations, buffers) against its capacity, the fullest device over the step, and the
predicted peak against the tensor memory real runs measured (validation records)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matplotlib.figure import Figure

from simplan.report.style import (
    CAPACITY_COLOR,
    FONT_SIZE,
    MEMORY_COLORS,
    MEMORY_KEYS,
    MEMORY_LABELS,
    capacity_marks,
    figure_legend,
    gib,
    new_figure,
    stacked_bars,
    stage_ticks,
    time_unit,
)
from simplan.units import MiB

if TYPE_CHECKING:
    from simplan.sim.result import SimResult

STATIC_KEYS = ("weights", "grads", "optimizer", "buffers")
USABLE_LABEL = "capacity less headroom"


def memory_figure(result: SimResult, *, title: str | None = None) -> Figure:
    """Stacked bars per stage (GiB) with each device's capacity as a line over its bar."""
    devices = list(result.devices)
    fig = new_figure(max(6.0, 2.5 + 0.45 * len(devices)), 4.2)
    ax = fig.axes[0]
    xs = list(range(len(devices)))
    layers = [
        (
            [gib(float(d.memory.get(key, 0.0))) for d in devices],
            MEMORY_COLORS[key],
            MEMORY_LABELS[key],
        )
        for key in MEMORY_KEYS
    ]
    stacked_bars(ax, xs, layers)
    caps = [gib(float(d.capacity_bytes)) for d in devices]
    capacity_marks(ax, xs, caps, half_width=0.45, across="x")
    if any(d.headroom_bytes for d in devices):  # what a plan may use: capacity less headroom
        ax.hlines(
            [gib(d.usable_bytes) for d in devices],
            [x - 0.45 for x in xs],
            [x + 0.45 for x in xs],
            colors=CAPACITY_COLOR,
            linestyles="dashed",
            linewidth=1.0,
            label=USABLE_LABEL,
        )
    for x, d in zip(xs, devices, strict=True):
        if not d.fits:
            ax.annotate(
                "does not fit",
                (x, gib(d.peak_memory_bytes)),
                ha="center",
                va="bottom",
                fontsize=FONT_SIZE - 1,
                color=CAPACITY_COLOR,
            )
    ticks, xlabel = stage_ticks(devices)
    ax.set_xticks(xs, ticks, fontsize=FONT_SIZE - 1)
    ax.set_ylabel("peak memory per device (GiB)")
    ax.set_xlabel(xlabel)
    head = title or f"{result.model} on {result.cluster}"
    ax.set_title(f"{head}: peak memory per device", fontsize=FONT_SIZE + 1)
    ax.grid(axis="x", visible=False)
    figure_legend(fig, ax, last=(USABLE_LABEL, "capacity"), loc="outside right upper")
    return fig


def fullest_stage(result: SimResult) -> int:
    """Index (in result.devices) of the device with the largest share of its capacity."""
    devices = list(result.devices)
    shares = [d.peak_memory_bytes / max(d.capacity_bytes, 1.0) for d in devices]
    return max(range(len(devices)), key=lambda i: (shares[i], -i))


def memory_series(result: SimResult, index: int) -> list[tuple[float, float]]:
    """(time_s, bytes) of device `index`: static memory plus activations as they change; a
    flat line at the peak when the simulation kept no series."""
    d = result.devices[index]
    static = sum(float(d.memory.get(k, 0.0)) for k in STATIC_KEYS)
    step = float(result.step_time_s)
    series: Sequence = ()
    all_series = getattr(result, "memory_series", ())
    if index < len(all_series):
        series = all_series[index]
    points = [(0.0, static)] + [(float(t), static + float(a)) for t, a in series]
    points.append((step, points[-1][1]))
    return points


def memory_time_figure(result: SimResult, *, title: str | None = None) -> Figure:
    """Memory of the fullest device over one step: static part shaded, activations on top."""
    index = fullest_stage(result)
    d = result.devices[index]
    points = memory_series(result, index)
    scale, unit = time_unit(float(result.step_time_s))
    fig = new_figure(8.0, 3.6)
    ax = fig.axes[0]
    xs = [t * scale for t, _ in points]
    ys = [gib(b) for _, b in points]
    static = gib(sum(float(d.memory.get(k, 0.0)) for k in STATIC_KEYS))
    ax.fill_between(
        [xs[0], xs[-1]],
        0,
        static,
        color=MEMORY_COLORS["weights"],
        alpha=0.35,
        label="parameters + gradients + optimizer state + buffers",
    )
    ax.fill_between(
        xs,
        static,
        ys,
        step="post",
        color=MEMORY_COLORS["activations"],
        alpha=0.8,
        label="activations",
    )
    ax.step(xs, ys, where="post", color="black", linewidth=0.8, label="total")
    ax.axhline(gib(d.capacity_bytes), color=CAPACITY_COLOR, linewidth=1.5, label="capacity")
    ax.set_xlim(xs[0], xs[-1])
    ax.set_ylim(0, max(gib(d.capacity_bytes), max(ys)) * 1.05)
    ax.set_xlabel(f"time ({unit})")
    ax.set_ylabel("memory (GiB)")
    head = title or f"{result.model} on {result.cluster}"
    ax.set_title(
        f"{head}: memory of the fullest device (stage {d.stage}, {d.device_name}), "
        f"peak {gib(d.peak_memory_bytes):.1f} of {gib(d.capacity_bytes):.0f} GiB",
        fontsize=FONT_SIZE + 1,
    )
    fig.legend(loc="outside lower center", ncol=4, fontsize=FONT_SIZE, frameon=False)
    return fig


@dataclass(frozen=True, kw_only=True)
class MemoryPoint:
    """One rank's predicted and measured peak tensor memory from a validation record."""

    label: str
    predicted_bytes: float
    measured_bytes: float

    @property
    def rel_error(self) -> float:
        return (self.predicted_bytes - self.measured_bytes) / self.measured_bytes


def memory_points(record: dict[str, Any]) -> list[MemoryPoint]:
    """The first rank of each pipeline stage of a record's memory comparison (the ranks of a
    stage hold the same); none for records from before memory was measured."""
    rows = (record.get("memory") or {}).get("ranks") or []
    points, seen = [], set()
    for row in rows:
        if row["stage"] in seen or not row["measured_peak_bytes"]:
            continue
        seen.add(row["stage"])
        stage = f" stage {row['stage']}" if len({r["stage"] for r in rows}) > 1 else ""
        points.append(
            MemoryPoint(
                label=f"{record.get('configuration', '')}{stage}",
                predicted_bytes=float(row["predicted_peak_bytes"]),
                measured_bytes=float(row["measured_peak_bytes"]),
            )
        )
    return points


def read_memory_points(runs_dir: str | Path) -> list[MemoryPoint]:
    """memory_points of every record (*.json) under runs_dir, oldest name first."""
    from simplan.io import read_json_object

    files = sorted(p for p in Path(runs_dir).glob("*.json") if not p.name.startswith("."))
    return [p for f in files for p in memory_points(read_json_object(f))]


def memory_validation_figure(points: Sequence[MemoryPoint]) -> Figure:
    """Predicted (y) against measured (x) peak tensor memory per rank in MiB, log-log, with
    y = x and +-10%."""
    fig = new_figure(6.4, 5.6)
    ax = fig.axes[0]
    values = [v / MiB for p in points for v in (p.predicted_bytes, p.measured_bytes)]
    lo, hi = min(values) / 1.5, max(values) * 1.5
    ax.fill_between(
        [lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="#DDDDDD", label="±10%"
    )
    ax.plot([lo, hi], [lo, hi], color="black", linewidth=0.8, label="y = x")
    ax.scatter(
        [p.measured_bytes / MiB for p in points],
        [p.predicted_bytes / MiB for p in points],
        color=MEMORY_COLORS["activations"],
        edgecolors="black",
        linewidths=0.4,
        s=36,
        zorder=3,
        label="rank (first of its stage)",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("measured peak tensor memory (MiB)")
    ax.set_ylabel("predicted peak memory (MiB)")
    errors = [abs(p.rel_error) for p in points]
    median = statistics.median(errors)
    ax.set_title(
        f"peak memory: predicted vs measured\n{len(points)} ranks, median |error| "
        f"{median:.1%}, max {max(errors):.1%}",
        fontsize=FONT_SIZE + 1,
    )
    ax.legend(fontsize=FONT_SIZE - 1, frameon=False, loc="upper left")
    return fig
