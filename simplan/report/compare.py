"""The top plans beside the baselines: step time, tokens/s, MFU and peak memory."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from matplotlib.figure import Figure

from simplan.report.style import (
    BASELINE_COLOR,
    FONT_SIZE,
    PLAN_COLOR,
    capacity_marks,
    gib,
    new_figure,
    time_unit,
)


@dataclass(frozen=True, kw_only=True)
class PlanRow:
    """One plan or baseline as the report shows it (from its `predicted` record)."""

    label: str  # short: "plan 1", "pure-dp", "megatron"
    role: str  # "plan", "baseline:pure-dp", "baseline:megatron"
    describe: str  # the configuration, e.g. "dp2 tp4 pp2 mb2 gb64 1f1b"
    step_time_s: float
    tokens_per_s: float
    mfu: float
    peak_memory_bytes: float
    capacity_bytes: float
    fits: bool
    breakdown: dict[str, float] = field(default_factory=dict)

    @property
    def is_baseline(self) -> bool:
        return self.role.startswith("baseline")


def plan_row(plan: Any, label: str) -> PlanRow:
    """A PlanRow from a planner Plan or a PlanFile (role in plan.role or plan.extra)."""
    pred = dict(plan.predicted)
    role = getattr(plan, "role", None) or getattr(plan, "extra", {}).get("role", "plan")
    stages = pred.get("stages") or []
    caps = [float(s.get("capacity_bytes", 0.0)) for s in stages if s.get("capacity_bytes")]
    return PlanRow(
        label=label,
        role=str(role),
        describe=plan.config.describe(),
        step_time_s=float(pred.get("step_time_s", 0.0)),
        tokens_per_s=float(pred.get("tokens_per_s") or 0.0),
        mfu=float(pred.get("mfu") or 0.0),
        peak_memory_bytes=float(pred.get("peak_memory_bytes") or 0.0),
        capacity_bytes=min(caps) if caps else 0.0,
        fits=bool(pred.get("fits_memory", True)),
        breakdown={k: float(v) for k, v in (pred.get("breakdown") or {}).items()},
    )


def plan_rows(plans: Sequence[Any], baselines: Sequence[Any]) -> list[PlanRow]:
    rows = [plan_row(p, f"plan {i + 1}") for i, p in enumerate(plans)]
    for b in baselines:
        role = getattr(b, "role", None) or getattr(b, "extra", {}).get("role", "baseline")
        rows.append(plan_row(b, str(role).removeprefix("baseline:")))
    return rows


def compare_figure(rows: Sequence[PlanRow], *, title: str) -> Figure:
    """Four panels of horizontal bars, one bar per plan (baselines grey and hatched)."""
    scale, unit = time_unit(max((r.step_time_s for r in rows), default=0.0))
    panels = [
        (f"step time ({unit})", [r.step_time_s * scale for r in rows]),
        ("throughput (tokens/s)", [r.tokens_per_s for r in rows]),
        ("MFU (%)", [r.mfu * 100 for r in rows]),
        ("peak memory per device (GiB)", [gib(r.peak_memory_bytes) for r in rows]),
    ]
    fig = new_figure(12.0, 1.4 + 0.38 * max(len(rows), 2), cols=len(panels))
    ys = list(range(len(rows)))
    colors = [BASELINE_COLOR if r.is_baseline else PLAN_COLOR for r in rows]
    hatches = ["//" if r.is_baseline else "" for r in rows]
    for i, (ax, (xlabel, values)) in enumerate(zip(fig.axes, panels, strict=True)):
        bars = ax.barh(ys, values, height=0.65, color=colors, edgecolor="white")
        for bar, hatch in zip(bars, hatches, strict=True):
            bar.set_hatch(hatch)
        ax.bar_label(
            bars, labels=[short_number(v) for v in values], fontsize=FONT_SIZE - 2, padding=2
        )
        ax.set_yticks(ys, [r.label for r in rows] if i == 0 else [""] * len(rows))
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_xlabel(xlabel)
        ax.margins(x=0.2)
        ax.grid(axis="y", visible=False)
    _capacity_marks(fig.axes[-1], rows)
    fig.suptitle(title, fontsize=FONT_SIZE + 1)
    return fig


def short_number(value: float) -> str:
    """1234567 -> '1,234,567'; 12.345 -> '12.3'; 0.01234 -> '0.0123'."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _capacity_marks(ax: Any, rows: Sequence[PlanRow]) -> None:
    caps = [gib(r.capacity_bytes) for r in rows]
    if any(caps):
        capacity_marks(ax, list(range(len(rows))), caps, half_width=0.4, across="y")
        ax.legend(fontsize=FONT_SIZE - 1, frameon=False, loc="lower right")


def compare_table(rows: Sequence[PlanRow]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows for the markdown index."""
    headers = [
        "plan",
        "role",
        "configuration",
        "step time (s)",
        "tokens/s",
        "MFU",
        "peak memory (GiB)",
        "fits",
    ]
    body = [
        [
            r.label,
            r.role,
            r.describe,
            f"{r.step_time_s:.4g}",
            f"{r.tokens_per_s:,.0f}",
            f"{r.mfu:.1%}",
            f"{gib(r.peak_memory_bytes):.1f}",
            "yes" if r.fits else "no",
        ]
        for r in rows
    ]
    return headers, body
