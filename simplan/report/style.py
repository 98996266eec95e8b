"""One look for every figure: colours by category, sizes, units, and a headless save.

Figures are built with the object-oriented API (`matplotlib.figure.Figure`, Agg canvas), never
pyplot, so rendering needs no display and keeps no global state between figures."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

if "matplotlib.pyplot" not in sys.modules:  # headless, unless a notebook already chose one
    matplotlib.use("Agg")
matplotlib.rcParams["svg.hashsalt"] = "simplan"  # stable ids: regenerated SVGs diff cleanly

from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from simplan.outputs import write_with  # noqa: E402
from simplan.units import GiB  # noqa: E402

if TYPE_CHECKING:
    from simplan.sim.result import DeviceStats

DPI = 100
FORMATS = ("png", "svg")
FONT_SIZE = 9.0

# Timeline classes: what a device's stream is doing.
TIMELINE_COLORS: dict[str, str] = {
    "forward": "#4C72B0",
    "backward": "#55A868",
    "recompute": "#8172B2",
    "optimizer": "#937860",
    "communication": "#DD8452",
    "idle": "#E5E5E5",
}
# Simulator event category -> timeline class.
EVENT_CLASS: dict[str, str] = {
    "forward": "forward",
    "backward": "backward",
    "recompute": "recompute",
    "optimizer": "optimizer",
    "tp-comm": "communication",
    "zero-comm": "communication",
    "comm": "communication",
    "p2p": "communication",
    "offload": "communication",
    "wait": "idle",
}

# Step-time breakdown (SimResult.breakdown keys) and their labels.
BREAKDOWN_KEYS: tuple[str, ...] = (
    "compute_s",
    "exposed_comm_s",
    "bubble_s",
    "recompute_s",
    "optimizer_s",
)
BREAKDOWN_LABELS: dict[str, str] = {
    "compute_s": "compute",
    "exposed_comm_s": "exposed communication",
    "bubble_s": "pipeline bubble",
    "recompute_s": "recompute",
    "optimizer_s": "optimizer",
}
BREAKDOWN_COLORS: dict[str, str] = {
    "compute_s": TIMELINE_COLORS["forward"],
    "exposed_comm_s": TIMELINE_COLORS["communication"],
    "bubble_s": "#BBBBBB",
    "recompute_s": TIMELINE_COLORS["recompute"],
    "optimizer_s": TIMELINE_COLORS["optimizer"],
}

# Memory categories (DeviceStats.memory keys) and their labels.
MEMORY_KEYS: tuple[str, ...] = ("weights", "grads", "optimizer", "activations", "buffers")
MEMORY_LABELS: dict[str, str] = {
    "weights": "parameters",
    "grads": "gradients",
    "optimizer": "optimizer state",
    "activations": "activations",
    "buffers": "buffers",
}
MEMORY_COLORS: dict[str, str] = {
    "weights": "#4C72B0",
    "grads": "#55A868",
    "optimizer": "#C44E52",
    "activations": "#DD8452",
    "buffers": "#8C8C8C",
}
CAPACITY_COLOR = "#C00000"
PLAN_COLOR = "#4C72B0"
BASELINE_COLOR = "#A0A0A0"


def new_figure(width_in: float, height_in: float, *, rows: int = 1, cols: int = 1) -> Figure:
    """A figure in the house style with rows x cols axes (fig.axes)."""
    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    fig.subplots(rows, cols, squeeze=False)
    for ax in fig.axes:
        style_axes(ax)
    return fig


def style_axes(ax: Axes) -> None:
    ax.tick_params(labelsize=FONT_SIZE)
    ax.grid(axis="both", color="#EEEEEE", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def legend_patches(colors: dict[str, str], labels: dict[str, str] | None = None) -> list[Patch]:
    return [Patch(facecolor=c, label=(labels or {}).get(k, k)) for k, c in colors.items()]


def time_unit(seconds: float) -> tuple[float, str]:
    """(scale, unit) for showing times around `seconds`: ms below 10 s, s above."""
    return (1.0, "s") if seconds >= 10.0 else (1e3, "ms")


def gib(n_bytes: float) -> float:
    return n_bytes / GiB


def save_figure(
    fig: Figure, out_dir: str | Path, name: str, formats: Sequence[str] = FORMATS
) -> list[Path]:
    """Write fig as out_dir/name.<fmt> for each format, atomically; returns the paths."""
    out = Path(out_dir)
    paths = []
    for fmt in formats:
        metadata = {"Date": None} if fmt == "svg" else {}

        def render(tmp: Path, fmt: str = fmt, metadata: dict = metadata) -> None:
            fig.savefig(tmp, format=fmt, dpi=DPI, metadata=metadata)

        paths.append(write_with(out / f"{name}.{fmt}", render))
    return paths


def stage_ticks(devices: Sequence[DeviceStats]) -> tuple[list[str], str]:
    """Tick labels for per-stage bars and the axis label: the device name goes in the axis
    label when every stage runs on the same kind of device."""
    names = {d.device_name for d in devices}
    if len(names) == 1:
        label = f"pipeline stage (representative {names.pop()} of each stage)"
        return [str(d.stage) for d in devices], label
    ticks = [f"{d.stage}\n{d.device_name}" for d in devices]
    return ticks, "pipeline stage (its representative device)"


def stacked_bars(
    ax: Axes,
    xs: Sequence[float],
    layers: Sequence[tuple[Sequence[float], str, str]],
) -> list[float]:
    """Bars at xs stacked from (heights, color, label) layers, bottom first; returns the tops."""
    bottom = [0.0] * len(xs)
    for heights, color, label in layers:
        ax.bar(xs, heights, bottom=bottom, width=0.7, color=color, label=label)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    return bottom


def capacity_marks(
    ax: Axes, positions: Sequence[float], caps: Sequence[float], *, half_width: float, across: str
) -> None:
    """A short capacity line per bar at `positions`: across the bar's width, horizontal for
    vertical bars (`across` "x") or vertical for horizontal bars ("y")."""
    lows = [p - half_width for p in positions]
    highs = [p + half_width for p in positions]
    draw = ax.hlines if across == "x" else ax.vlines
    draw(caps, lows, highs, colors=CAPACITY_COLOR, linewidth=1.5, label="capacity")


def figure_legend(fig: Figure, ax: Axes, *, last: Sequence[str] = (), **kwargs: Any) -> None:
    """A figure legend of ax's artists in drawing order, with the labels in `last` (reference
    lines such as capacity or step time) moved to the end."""
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: labels[i] in last)
    options: dict[str, Any] = {"fontsize": FONT_SIZE, "frameon": False, **kwargs}
    fig.legend([handles[i] for i in order], [labels[i] for i in order], **options)
