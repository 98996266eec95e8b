"""Multi-task training curves: every task's loss and weight over the steps of the real runs
that `simplan validate` recorded for a multi-task model (records of kind
mtl-validation-record, simplan.validate_mtl)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from simplan.errors import SimplanError
from simplan.io import read_json_object
from simplan.report.style import FONT_SIZE, new_figure

MTL_RECORD_KIND = "mtl-validation-record"
CURVE_KEYS = ("losses", "weights", "grad_norms")


@dataclass(frozen=True, kw_only=True)
class TaskRun:
    """One run's curves: per task, its loss, weight and feature-gradient norm per step."""

    label: str
    weighting: str
    curves: dict[str, dict[str, list[float]]]


def read_task_runs(runs_dir: str | Path) -> list[TaskRun]:
    """The multi-task records under runs_dir (oldest name first; others are skipped)."""
    runs = []
    for path in sorted(Path(runs_dir).glob("*.json")):
        data = read_json_object(path)
        schema = data.get("schema")
        if not isinstance(schema, dict) or schema.get("kind") != MTL_RECORD_KIND:
            continue
        runs.append(task_run(data, path))
    return runs


def task_run(data: dict[str, Any], path: str | Path = "") -> TaskRun:
    try:
        tasks = data["measured"]["tasks"]
        curves = {
            str(name): {k: [float(v) for v in curve[k]] for k in CURVE_KEYS}
            for name, curve in tasks.items()
        }
        return TaskRun(
            label=str(data["configuration"]), weighting=str(data["weighting"]), curves=curves
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SimplanError(f"{path}: damaged multi-task record ({exc!r})") from None


def task_curves_figure(run: TaskRun) -> Figure:
    """Loss (log scale) and weight of every task against the step, side by side."""
    fig = new_figure(8.0, 3.0, cols=2)
    loss_ax, weight_ax = fig.axes
    for name, curve in run.curves.items():
        steps = range(len(curve["losses"]))
        loss_ax.plot(steps, curve["losses"], label=name, linewidth=1.2)
        weight_ax.plot(steps, curve["weights"], label=name, linewidth=1.2)
    loss_ax.set_yscale("log")
    loss_ax.set_ylabel("task loss", fontsize=FONT_SIZE)
    weight_ax.set_ylabel(f"task weight ({run.weighting})", fontsize=FONT_SIZE)
    for ax in fig.axes:
        ax.set_xlabel("step (warm-up included)", fontsize=FONT_SIZE)
        ax.legend(fontsize=FONT_SIZE, frameon=False)
    fig.suptitle(run.label, fontsize=FONT_SIZE)
    return fig


def task_table(runs: Sequence[TaskRun]) -> tuple[list[str], list[list[str]]]:
    """Per run and task: the first and last loss and weight."""
    rows = [
        [
            run.label,
            name,
            f"{c['losses'][0]:.3f} -> {c['losses'][-1]:.3f}",
            f"{c['weights'][0]:.3f} -> {c['weights'][-1]:.3f}",
        ]
        for run in runs
        for name, c in run.curves.items()
    ]
    return ["run", "task", "loss (first -> last)", "weight (first -> last)"], rows
