"""Breakdown: a stacked bar per stage and per plan, one segment per category, in order."""

from __future__ import annotations

from matplotlib.colors import to_rgba

from simplan.report.breakdown import plan_breakdown_figure, stage_breakdown_figure
from simplan.report.style import BREAKDOWN_COLORS, BREAKDOWN_KEYS, BREAKDOWN_LABELS


def bar_patches(ax):
    return [p for p in ax.patches if p.get_width() > 0]


def test_stage_breakdown_has_a_segment_per_category_and_stage(result) -> None:
    fig = stage_breakdown_figure(result)
    ax = fig.axes[0]
    patches = bar_patches(ax)
    assert len(patches) == 2 * len(BREAKDOWN_KEYS)
    # patches are stacked category by category: first both stages' compute, then ...
    for i, key in enumerate(BREAKDOWN_KEYS):
        for p in patches[2 * i : 2 * i + 2]:
            assert p.get_facecolor() == to_rgba(BREAKDOWN_COLORS[key])
    compute0, compute1 = patches[0], patches[1]
    assert compute0.get_height() == 500.0 and compute1.get_height() == 600.0  # ms
    bubble1 = patches[2 * BREAKDOWN_KEYS.index("bubble_s") + 1]
    assert abs(bubble1.get_height() - 100.0) < 1e-9
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1"]
    assert "a100-80gb" in ax.get_xlabel()
    assert ax.get_ylabel() == "time per step (ms)"
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[: len(BREAKDOWN_KEYS)] == [BREAKDOWN_LABELS[k] for k in BREAKDOWN_KEYS]


def test_plan_breakdown_has_a_bar_per_plan() -> None:
    bars = [
        ("plan 1", {"compute_s": 12.0, "exposed_comm_s": 1.0, "bubble_s": 2.0}, 15.0),
        ("pure-dp", {"compute_s": 12.0, "exposed_comm_s": 8.0}, 20.0),
        ("megatron", {"compute_s": 11.0, "bubble_s": 4.0, "optimizer_s": 0.5}, 15.5),
    ]
    fig = plan_breakdown_figure(bars, title="t")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["plan 1", "pure-dp", "megatron"]
    assert len(ax.patches) == 3 * len(BREAKDOWN_KEYS)
    assert ax.get_ylabel() == "time per step (s)"  # 20 s steps are shown in seconds
    tops = [0.0, 0.0, 0.0]
    for i, p in enumerate(ax.patches):
        tops[i % 3] = max(tops[i % 3], p.get_y() + p.get_height())
    assert tops == [15.0, 20.0, 15.5]
