"""Predicted against measured step time of real runs (validation records in traces/runs/):
a scatter with the y = x line and a +-10% band, and the relative error per run."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from simplan.errors import SimplanError
from simplan.io import read_json_object
from simplan.limits import MAX_DEVICES
from simplan.parallel import MAX_SAMPLES
from simplan.report.style import FONT_SIZE, new_figure
from simplan.schema import Float, Int, Str, Table, validate

BAND = 0.10
STRATEGY_COLORS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B2", "#937860", "#DA8BC3")
MODEL_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
RECORD_KIND = "validation-record"
# the record kinds whose predicted and measured steps are plotted: simplan validate's, and its
# distillation runs' (simplan.validate_distill; strategy 'distill-<placement>')
RECORD_KINDS = (RECORD_KIND, "distill-validation-record", "mtl-validation-record")
_STEP_S = Float(min=0.0, min_open=True, max=1e6)
RECORD_FIELDS = Table(
    {
        "predicted_step_s": _STEP_S,
        "measured_step_s": _STEP_S,
        "rel_error": Float(min=-1e6, max=1e6),
        "model": Str(nonempty=True),
        "strategy": Str(nonempty=True),
        "configuration": Str(),
        "nprocs": Int(min=1, max=MAX_DEVICES),
        "micro_batch": Int(min=1, max=MAX_SAMPLES),
        "job": Table(
            {
                "config": Table(
                    {k: Int(min=1, max=MAX_DEVICES) for k in ("dp", "tp", "pp")}
                    | {"micro_batch": Int(min=1, max=MAX_SAMPLES)},
                    open=True,
                )
            },
            open=True,
        ),
    },
    required=("predicted_step_s", "measured_step_s", "model", "strategy"),
    open=True,
    fix="run `simplan validate` again",
)


@dataclass(frozen=True, kw_only=True)
class ValidationPoint:
    label: str
    model: str
    strategy: str
    nprocs: int
    micro_batch: int
    predicted_step_s: float
    measured_step_s: float
    rel_error: float  # (predicted - measured) / measured
    source: str = ""


def read_points(runs_dir: str | Path) -> list[ValidationPoint]:
    """Every validation record (*.json) under runs_dir, oldest name first. An empty or missing
    directory, or a file that is not a validation record, is a one-line SimplanError."""
    root = Path(runs_dir)
    files = (
        sorted(p for p in root.glob("*.json") if not p.name.startswith("."))
        if root.is_dir()
        else []
    )
    if not files:
        raise SimplanError(
            f"{root}: no validation records (*.json); run `simplan validate` to make some"
        )
    return [point_from_record(read_json_object(f), f) for f in files]


def point_from_record(data: Any, path: str | Path = "") -> ValidationPoint:
    """A point from a record of `simplan validate` (schema kind validation-record) or a flat
    record with predicted_step_s, measured_step_s, model, strategy, nprocs, micro_batch."""
    if not isinstance(data, dict):
        raise SimplanError(f"{path}: not a validation record (expected a JSON object)")
    schema = data.get("schema")
    if isinstance(schema, dict) and schema.get("kind") not in RECORD_KINDS:
        raise SimplanError(f"{path}: a {schema.get('kind')!r} file, not a validation record")
    data = validate(data, RECORD_FIELDS, origin=str(path))
    config = (data.get("job") or {}).get("config") or {}
    try:
        predicted, measured = float(data["predicted_step_s"]), float(data["measured_step_s"])
        nprocs = data.get("nprocs") or (
            int(config["dp"]) * int(config["tp"]) * int(config["pp"]) if config else 0
        )
        point = ValidationPoint(
            label=str(data.get("configuration") or Path(path).stem),
            model=str(data["model"]),
            strategy=str(data["strategy"]),
            nprocs=int(nprocs),
            micro_batch=int(data.get("micro_batch") or config.get("micro_batch") or 0),
            predicted_step_s=predicted,
            measured_step_s=measured,
            rel_error=float(data.get("rel_error", (predicted - measured) / measured)),
            source=str(path),
        )
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise SimplanError(f"{path}: damaged validation record ({exc!r})") from None
    if not (predicted > 0 and measured > 0 and math.isfinite(predicted + measured)):
        raise SimplanError(f"{path}: step times must be positive, got {predicted}, {measured}")
    return point


def _styles(points: Sequence[ValidationPoint]) -> tuple[dict[str, str], dict[str, str]]:
    strategies = sorted({p.strategy for p in points})
    models = sorted({p.model for p in points})
    colors = {s: STRATEGY_COLORS[i % len(STRATEGY_COLORS)] for i, s in enumerate(strategies)}
    markers = {m: MODEL_MARKERS[i % len(MODEL_MARKERS)] for i, m in enumerate(models)}
    return colors, markers


def summary(points: Sequence[ValidationPoint]) -> str:
    within = sum(abs(p.rel_error) <= BAND for p in points)
    median = statistics.median(abs(p.rel_error) for p in points)
    return f"{len(points)} runs: {within} within ±{BAND:.0%}, median |error| {median:.1%}"


def validation_figure(points: Sequence[ValidationPoint], *, title: str = "") -> Figure:
    """Predicted (y) against measured (x) step time in ms, log-log, with y = x and +-10%."""
    colors, markers = _styles(points)
    fig = new_figure(6.4, 5.6)
    ax = fig.axes[0]
    values = [v * 1e3 for p in points for v in (p.predicted_step_s, p.measured_step_s)]
    lo, hi = min(values) / 1.5, max(values) * 1.5
    ax.fill_between(
        [lo, hi],
        [lo * (1 - BAND), hi * (1 - BAND)],
        [lo * (1 + BAND), hi * (1 + BAND)],
        color="#DDDDDD",
        label=f"±{BAND:.0%}",
    )
    ax.plot([lo, hi], [lo, hi], color="black", linewidth=0.8, label="y = x")
    for (strategy, model), group in _groups(points).items():
        ax.scatter(
            [p.measured_step_s * 1e3 for p in group],
            [p.predicted_step_s * 1e3 for p in group],
            color=colors[strategy],
            marker=markers[model],
            s=36,
            edgecolors="black",
            linewidths=0.4,
            label=f"{model}, {strategy}",
            zorder=3,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("measured step time (ms)")
    ax.set_ylabel("predicted step time (ms)")
    ax.set_title(f"{title or 'predicted vs measured'}\n{summary(points)}", fontsize=FONT_SIZE + 1)
    ax.legend(fontsize=FONT_SIZE - 1, frameon=False, loc="upper left")
    return fig


def _groups(points: Sequence[ValidationPoint]) -> dict[tuple[str, str], list[ValidationPoint]]:
    groups: dict[tuple[str, str], list[ValidationPoint]] = {}
    for p in points:
        groups.setdefault((p.strategy, p.model), []).append(p)
    return dict(sorted(groups.items()))


def error_figure(points: Sequence[ValidationPoint]) -> Figure:
    """Relative error per run (horizontal bars, coloured by strategy), with the +-10% band."""
    colors, _ = _styles(points)
    fig = new_figure(8.0, 1.2 + 0.25 * len(points))
    ax = fig.axes[0]
    ys = list(range(len(points)))
    ax.axvspan(-BAND * 100, BAND * 100, color="#DDDDDD", label=f"±{BAND:.0%}")
    ax.barh(
        ys,
        [p.rel_error * 100 for p in points],
        height=0.7,
        color=[colors[p.strategy] for p in points],
    )
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(ys, [p.label for p in points], fontsize=FONT_SIZE - 1)
    ax.set_ylim(len(points) - 0.5, -0.5)
    ax.set_xlabel("relative error of the prediction (%)  (predicted - measured) / measured")
    ax.grid(axis="y", visible=False)
    ax.set_title("error per run", fontsize=FONT_SIZE + 1)
    return fig


def validation_table(points: Sequence[ValidationPoint]) -> tuple[list[str], list[list[str]]]:
    headers = [
        "run",
        "model",
        "strategy",
        "processes",
        "micro-batch",
        "predicted (ms)",
        "measured (ms)",
        "error",
    ]
    rows = [
        [
            p.label,
            p.model,
            p.strategy,
            str(p.nprocs),
            str(p.micro_batch),
            f"{p.predicted_step_s * 1e3:.3g}",
            f"{p.measured_step_s * 1e3:.3g}",
            f"{p.rel_error:+.1%}",
        ]
        for p in points
    ]
    return headers, rows
