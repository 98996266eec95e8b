"""Timeline of one simulated step: a row per pipeline stage and stream, coloured by what the
stream does (forward, backward, recompute, optimizer, communication, idle), micro-batch numbers
on pipeline tasks where they fit.

The simulator folds identical data-parallel replicas and tensor-parallel ranks: each stage's row
stands for every GPU of that stage, and the figure says so. Bars are drawn with one
`broken_barh` (a PolyCollection) per (row, class), so a 1024-GPU step with ~30k events renders
in about a second."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from simplan.report.style import (
    EVENT_CLASS,
    FONT_SIZE,
    TIMELINE_COLORS,
    legend_patches,
    new_figure,
    time_unit,
)

if TYPE_CHECKING:
    from simplan.sim.result import SimResult

STREAMS: tuple[str, ...] = ("compute", "comm", "p2p", "host")
STREAM_LABELS = {
    "compute": "compute",
    "comm": "dp/zero comm",
    "p2p": "pipeline p2p",
    "host": "host link (offload)",
}
MIN_LABEL_PX_PER_CHAR = 6.5
MAX_LABELS = 2000
COMPACT_ABOVE_STAGES = 8  # deeper pipelines get one row per stage
BAR_HEIGHT = 0.8

Span = tuple[float, float]  # (start, width), as broken_barh wants


@dataclass(frozen=True, kw_only=True)
class TimelineRow:
    """One row of the figure: a stage's stream and its spans per class."""

    stage: int
    stream: str
    spans: dict[str, list[Span]]
    labels: list[tuple[float, float, str]]  # (start_s, end_s, text) of pipeline tasks
    y: int = 0  # the figure row it is drawn in
    band: tuple[float, float] = (-BAR_HEIGHT / 2, BAR_HEIGHT)  # (offset from y, height)

    @property
    def title(self) -> str:
        return f"stage {self.stage} · {STREAM_LABELS.get(self.stream, self.stream)}"


def compact(rows: list[TimelineRow]) -> list[TimelineRow]:
    """One figure row per stage: the compute stream at full height, the communication streams
    as a thin strip along its bottom (for pipelines too deep for a row per stream)."""
    stages = sorted({r.stage for r in rows})
    y_of = {s: i for i, s in enumerate(stages)}
    out = []
    for r in rows:
        band = (-BAR_HEIGHT / 2, BAR_HEIGHT) if r.stream == "compute" else (0.22, 0.18)
        out.append(replace(r, y=y_of[r.stage], band=band))
    return out


def expanded(rows: list[TimelineRow]) -> list[TimelineRow]:
    return [replace(r, y=i) for i, r in enumerate(rows)]


def fold_note(config: dict, stages: int) -> str:
    """What one row stands for, e.g. 'each stage row stands for 64 GPUs: dp 8 x tp 8'."""
    dp, tp = int(config.get("dp", 1)), int(config.get("tp", 1))
    gpus = dp * tp
    if gpus == 1:
        return f"{stages} stage(s), one GPU each"
    return f"each stage row stands for {gpus} GPUs (dp {dp} x tp {tp}), simulated once"


def task_label(name: str) -> str:
    """Micro-batch number of a pipeline task ('F3 c0' -> '3', 'B12 c1 b2' -> '12')."""
    head = name.split(" ", 1)[0]
    return head[1:] if head[:1] in "FBR" and head[1:].isdigit() else ""


def timeline_rows(events: Sequence[tuple], step_time_s: float) -> list[TimelineRow]:
    """Group events into rows (stage, stream) with spans per class; gaps on a compute stream
    become 'idle' spans. Streams without any event are left out."""
    spans: dict[tuple[int, str], dict[str, list[Span]]] = defaultdict(lambda: defaultdict(list))
    labels: dict[tuple[int, str], list[tuple[float, float, str]]] = defaultdict(list)
    last_task: dict[tuple[int, str], str] = {}
    for rank, stream, name, category, start, end in events:
        key = (int(rank), str(stream))
        cls = EVENT_CLASS.get(category, "communication")
        spans[key][cls].append((start, end - start))
        if cls in ("forward", "backward", "recompute"):
            text, task = task_label(name), " ".join(name.split()[:2])  # "F3 c0"
            if labels[key] and last_task.get(key) == task:  # pieces of one task: one label
                labels[key][-1] = (labels[key][-1][0], end, text)
            elif text:
                labels[key].append((start, end, text))
            last_task[key] = task
    rows = []
    for stage, stream in sorted(
        spans, key=lambda k: (k[0], STREAMS.index(k[1]) if k[1] in STREAMS else 9)
    ):
        by_class = spans[(stage, stream)]
        if stream == "compute":
            by_class["idle"].extend(_gaps(by_class, step_time_s))
        rows.append(
            TimelineRow(
                stage=stage, stream=stream, spans=dict(by_class), labels=labels[(stage, stream)]
            )
        )
    return rows


def _gaps(by_class: dict[str, list[Span]], step_time_s: float) -> list[Span]:
    busy = sorted(s for cls, spans in by_class.items() if cls != "idle" for s in spans)
    gaps, t = [], 0.0
    for start, width in busy:
        if start > t + 1e-12:
            gaps.append((t, start - t))
        t = max(t, start + width)
    if step_time_s > t + 1e-12:
        gaps.append((t, step_time_s - t))
    return gaps


def timeline_figure(
    result: SimResult,
    *,
    title: str | None = None,
    width_in: float = 13.0,
    compact_rows: bool | None = None,
) -> Figure:
    """The timeline of a SimResult simulated with record=True. compact_rows: one row per stage
    (default: when the pipeline has more than COMPACT_ABOVE_STAGES stages)."""
    step = float(result.step_time_s)
    rows = timeline_rows(getattr(result, "events", ()), step)
    stages = sorted({r.stage for r in rows})
    if compact_rows is None:
        compact_rows = len(stages) > COMPACT_ABOVE_STAGES
    rows = compact(rows) if compact_rows else expanded(rows)
    ticks = _row_ticks(rows, compact_rows)
    fig = new_figure(width_in, min(2.0 + 0.28 * max(len(ticks), 1), 30.0))
    ax = fig.axes[0]
    scale, unit = time_unit(step)
    draw_rows(ax, rows, scale)
    ax.set_yticks(range(len(ticks)), ticks)
    ax.set_ylim(len(ticks) - 0.5, -0.5)
    ax.set_xlim(0, step * scale)
    ax.set_xlabel(f"time ({unit})")
    ax.grid(axis="y", visible=False)
    head = title or f"{result.model} on {result.cluster}"
    note = fold_note(dict(result.config), len(stages))
    if compact_rows:
        note += "; communication streams: thin strip under each row"
    ax.set_title(f"{head}: one step, {step * scale:.4g} {unit}\n{note}", fontsize=FONT_SIZE + 1)
    fig.legend(
        handles=legend_patches(TIMELINE_COLORS),
        loc="outside lower center",
        ncol=len(TIMELINE_COLORS),
        fontsize=FONT_SIZE,
        frameon=False,
    )
    if rows:
        label_tasks(fig, ax, rows, scale, width_in)
    return fig


def _row_ticks(rows: list[TimelineRow], compact_rows: bool) -> list[str]:
    if not compact_rows:
        return [r.title for r in rows]
    return [f"stage {s}" for s in sorted({r.stage for r in rows})]


def draw_rows(ax: Axes, rows: list[TimelineRow], scale: float) -> None:
    """One broken_barh (PolyCollection) per (row, class); its label names both."""
    for row in rows:
        offset, height = row.band
        for cls in TIMELINE_COLORS:
            spans = row.spans.get(cls)
            if not spans:
                continue
            thin = cls == "communication"
            ax.broken_barh(
                [(s * scale, w * scale) for s, w in spans],
                (row.y + offset, height),
                facecolors=TIMELINE_COLORS[cls],
                edgecolors=TIMELINE_COLORS[cls] if thin else "none",
                linewidth=0.5 if thin else 0.0,
                label=f"{row.title}: {cls}",
            )


def label_tasks(
    fig: Figure, ax: Axes, rows: list[TimelineRow], scale: float, width_in: float
) -> int:
    """Write micro-batch numbers inside the bars wide enough to hold them; returns how many."""
    x0, x1 = ax.get_xlim()
    px_per_unit = 0.8 * width_in * fig.dpi / max(x1 - x0, 1e-12)
    count = 0
    for row in rows:
        for start, end, text in row.labels:
            if (end - start) * scale * px_per_unit < MIN_LABEL_PX_PER_CHAR * (len(text) + 1):
                continue
            if count >= MAX_LABELS:
                return count
            ax.text(
                (start + end) / 2 * scale,
                row.y,
                text,
                ha="center",
                va="center",
                fontsize=FONT_SIZE - 2,
                color="white",
                clip_on=True,
            )
            count += 1
    return count
