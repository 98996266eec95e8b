"""Memory: the peak of each stage's device by category (parameters, gradients, optimizer
state, activations, buffers) against its capacity, and the fullest device over the step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

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
