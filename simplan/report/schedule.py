"""Figures and the report of cluster schedules: JCT CDFs per policy, allocated GPUs over time,
and a table of the metrics (simplan.schedule.metrics gives each formula)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from simplan.outputs import output_set, owned_names, write_json_atomic
from simplan.report.index import Figure as IndexFigure
from simplan.report.index import Section, write_index
from simplan.report.style import FONT_SIZE, FORMATS, new_figure, save_figure
from simplan.schedule.results import ScheduleResult, results_document

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
