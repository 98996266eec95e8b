"""Figures and the report of cluster schedules: a Gantt chart of the cluster per policy, JCT
CDFs per policy, allocated GPUs over time, and a table of the metrics (simplan.schedule.metrics
gives each formula)."""

from __future__ import annotations

import heapq
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from simplan.outputs import output_set, owned_names, write_json_atomic
from simplan.report.index import Figure as IndexFigure
from simplan.report.index import Section, write_index
from simplan.report.style import FONT_SIZE, FORMATS, new_figure, save_figure
from simplan.schedule.results import ScheduleResult, Segment, results_document

SCHEDULE_FILES = owned_names(names=("index.md", "schedule.json"), suffixes=(".png", ".svg", ".pdf"))
HEADERS = ("policy", "avg JCT h", "p50 JCT h", "p99 JCT h", "makespan h", "utilization",
           "avg queueing h", "finish-time ratio avg / max", "preemptions", "failures")  # fmt: skip


def metrics_rows(results: Sequence[ScheduleResult]) -> list[list[str]]:
    rows = []
    for r in results:
        m = r.metrics
        rows.append([
            r.policy, f"{m.avg_jct_s / 3600:.2f}", f"{m.median_jct_s / 3600:.2f}",
            f"{m.p99_jct_s / 3600:.2f}", f"{m.makespan_s / 3600:.2f}", f"{m.utilization:.1%}",
            f"{m.avg_queueing_s / 3600:.2f}",
            f"{m.avg_finish_time_ratio:.2f} / {m.max_finish_time_ratio:.2f}",
            str(m.preemptions), str(m.failures),
        ])  # fmt: skip
    return rows


def jct_cdf_figure(results: Sequence[ScheduleResult]) -> Figure:
    """Cumulative share of jobs done within a JCT, one line per policy (log time axis)."""
    fig = new_figure(6.0, 3.6)
    ax = fig.axes[0]
    for r in results:
        jct_h = np.sort([j.jct_s / 3600 for j in r.jobs])
        share = np.arange(1, len(jct_h) + 1) / len(jct_h)
        ax.step(jct_h, share, where="post", label=r.policy, linewidth=1.2)
    ax.set_xscale("log")
    ax.set_xlabel("job completion time (h)", fontsize=FONT_SIZE)
    ax.set_ylabel("share of jobs", fontsize=FONT_SIZE)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=FONT_SIZE, frameon=False)
    return fig


def utilization_figure(results: Sequence[ScheduleResult]) -> Figure:
    """Allocated GPUs as a share of the cluster's over time, one line per policy."""
    fig = new_figure(6.0, 3.2)
    ax = fig.axes[0]
    for r in results:
        times = [t / 3600 for t, _ in r.busy]
        share = [g / r.total_gpus for _, g in r.busy]
        ax.step(times, share, where="post", label=r.policy, linewidth=1.0)
    ax.set_xlabel("time (h)", fontsize=FONT_SIZE)
    ax.set_ylabel("GPUs allocated (share)", fontsize=FONT_SIZE)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=FONT_SIZE, frameon=False)
    return fig


def gpu_lanes(segments: Sequence[Segment]) -> list[tuple[int, int, Segment]]:
    """(node, GPU lane, segment) for every GPU a segment holds: on each node, lanes are handed
    out in start order and taken back at each end (no two segments share a lane at once)."""
    out: list[tuple[int, int, Segment]] = []
    by_node: dict[int, list[tuple[Segment, int]]] = {}
    for seg in segments:
        for node, gpus in seg.per_node:
            by_node.setdefault(node, []).append((seg, gpus))
    for node, held in sorted(by_node.items()):
        free: list[int] = []  # a heap of returned lanes
        ends: list[tuple[float, int, list[int]]] = []  # (end, order, lanes) heap
        next_lane = 0
        for order, (seg, gpus) in enumerate(sorted(held, key=lambda h: h[0].start_s)):
            while ends and ends[0][0] <= seg.start_s + 1e-9:
                for lane in heapq.heappop(ends)[2]:
                    heapq.heappush(free, lane)
            lanes = []
            for _ in range(gpus):
                if free:
                    lanes.append(heapq.heappop(free))
                else:
                    lanes.append(next_lane)
                    next_lane += 1
            heapq.heappush(ends, (seg.end_s, order, lanes))
            out += [(node, lane, seg) for lane in lanes]
    return out


def gantt_figure(result: ScheduleResult) -> Figure:
    """Each GPU of each node (rows, grouped by node) over time: the job on it (a colour per
    job), its restart or launch time without progress in grey."""
    placed = gpu_lanes(result.segments)
    rows_of: dict[int, int] = {}
    for node, lane, _ in placed:
        rows_of[node] = max(rows_of.get(node, 0), lane + 1)
    base, y = {}, 0
    for node in sorted(rows_of):
        base[node], y = y, y + rows_of[node]
    fig = new_figure(7.0, min(2.0 + 0.02 * y, 12.0))
    ax = fig.axes[0]
    cmap = _job_colours()
    bars: dict[tuple[int, tuple[float, float, float, float]], list[tuple[float, float]]] = {}
    for node, lane, seg in placed:
        row = base[node] + lane
        start_h, delay_h = seg.start_s / 3600, seg.delay_s / 3600
        run_h = (seg.end_s - seg.start_s) / 3600 - delay_h
        if delay_h > 0:
            bars.setdefault((row, (0.6, 0.6, 0.6, 1.0)), []).append((start_h, delay_h))
        colour = cmap[zlib.crc32(seg.job.encode()) % len(cmap)]
        bars.setdefault((row, colour), []).append((start_h + delay_h, run_h))
    for (row, colour), spans in bars.items():
        ax.broken_barh(spans, (row, 0.9), facecolors=colour, linewidth=0)
    ax.set_ylim(0, max(y, 1))
    ax.invert_yaxis()
    shown = sorted(rows_of)[:: max(1, len(rows_of) // 16)]  # at most about 16 labels
    ax.set_yticks([base[n] + rows_of[n] / 2 for n in shown])
    ax.set_yticklabels([f"node {n}" for n in shown], fontsize=FONT_SIZE)
    ax.set_xlabel("time (h)", fontsize=FONT_SIZE)
    ax.set_title(f"{result.policy}: GPUs by node", fontsize=FONT_SIZE)
    return fig


def _job_colours() -> list[tuple[float, float, float, float]]:
    from matplotlib import colormaps

    return [colormaps["tab20"](i) for i in range(20)]


def write_schedule_report(
    results: Sequence[ScheduleResult],
    out_dir: str | Path,
    *,
    trace: str,
    formats: Sequence[str] = FORMATS,
    command: str = "",
    flag: str = "--out",
    new: bool = False,
) -> Path:
    """schedule.json (every result), the figures and index.md in out_dir, written as one set;
    returns out_dir/index.md."""
    with output_set(out_dir, flag, owns=SCHEDULE_FILES, new=new) as stage:
        write_json_atomic(results_document(list(results), trace), stage / "schedule.json")
        figures = []
        for name, make, caption in (
            ("jct_cdf", jct_cdf_figure, "cumulative share of jobs by completion time"),
            ("utilization", utilization_figure, "share of the cluster's GPUs allocated over time"),
        ):
            save_figure(make(results), stage, name, formats)
            figures.append(IndexFigure(name=name, caption=caption, formats=tuple(formats)))
        for r in results:
            if r.segments:
                name = f"gantt-{r.policy}"
                save_figure(gantt_figure(r), stage, name, formats)
                caption = f"{r.policy}: the job on each GPU over time (grey: restart or launch)"
                figures.append(IndexFigure(name=name, caption=caption, formats=tuple(formats)))
        notes = tuple(f"{r.policy}: {n}" for r in results for n in r.notes)
        section = Section(
            title="Policies",
            text=f"Trace `{trace}` on {results[0].cluster} ({results[0].total_gpus} GPUs).",
            figures=tuple(figures),
            table=(HEADERS, metrics_rows(results)),
            bullets=notes,
        )
        intro = f"Regenerate with `{command}`." if command else "Written by `simplan schedule`."
        write_index(stage, "Cluster schedule", intro, [section])
    return Path(out_dir) / "index.md"
