"""Timeline: rows per stage and stream, colours by class, idle gaps, micro-batch labels,
the folding note, and one row per stage for deep pipelines."""

from __future__ import annotations

from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgba

from simplan.report.style import TIMELINE_COLORS
from simplan.report.timeline import task_label, timeline_figure, timeline_rows
from tests.report.conftest import EVENTS, make_result


def collections(fig) -> dict[str, PolyCollection]:
    ax = fig.axes[0]
    return {c.get_label(): c for c in ax.collections if isinstance(c, PolyCollection)}


def test_task_label_is_the_micro_batch_number() -> None:
    assert task_label("F3 c0") == "3"
    assert task_label("B12 c1 b2") == "12"
    assert task_label("R0 c0") == "0"
    assert task_label("adam") == ""


def test_rows_are_stage_and_stream_with_idle_gaps() -> None:
    rows = timeline_rows(EVENTS, 1.0)
    assert [(r.stage, r.stream) for r in rows] == [
        (0, "compute"),
        (0, "comm"),
        (0, "p2p"),
        (1, "compute"),
    ]
    stage1 = rows[3]
    # stage 1 computes 0.13-0.73 and 0.80-0.83: idle before, between and after
    idle = sorted(stage1.spans["idle"])
    assert [round(s, 2) for s, _ in idle] == [0.0, 0.73, 0.83]
    assert round(sum(w for _, w in idle), 2) == round(1.0 - 0.6 - 0.03, 2)
    # bucket pieces of one backward get one label
    assert [t for _, _, t in rows[0].labels] == ["0", "1", "0", "0", "1"]


def test_figure_rows_colours_labels_and_folding(result) -> None:
    fig = timeline_figure(result)
    ax = fig.axes[0]
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks == [
        "stage 0 · compute",
        "stage 0 · dp/zero comm",
        "stage 0 · pipeline p2p",
        "stage 1 · compute",
    ]
    cols = collections(fig)
    for label, cls in [
        ("stage 0 · compute: forward", "forward"),
        ("stage 1 · compute: backward", "backward"),
        ("stage 0 · compute: recompute", "recompute"),
        ("stage 0 · compute: communication", "communication"),
        ("stage 0 · pipeline p2p: communication", "communication"),
        ("stage 0 · compute: optimizer", "optimizer"),
        ("stage 0 · compute: idle", "idle"),
    ]:
        assert tuple(cols[label].get_facecolor()[0]) == to_rgba(TIMELINE_COLORS[cls]), label
    # one path per event of that (row, class): F0, and F1 in two pieces around a wait
    assert len(cols["stage 0 · compute: forward"].get_paths()) == 3
    assert len(cols["stage 1 · compute: backward"].get_paths()) == 2
    texts = [t.get_text() for t in ax.texts]
    assert sorted(texts) == sorted(["0", "1", "0", "0", "1", "0", "0", "1", "1"])
    assert "stands for 8 GPUs (dp 2 x tp 4)" in ax.get_title()
    assert ax.get_xlabel() == "time (ms)"
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == list(TIMELINE_COLORS)


def test_deep_pipelines_get_one_row_per_stage_and_skip_labels_that_do_not_fit() -> None:
    events = tuple(
        (s, stream, f"F{m} c{s}", cat, m * 1e-4 + s * 1e-3, m * 1e-4 + s * 1e-3 + 5e-5)
        for s in range(12)
        for m in range(200)
        for stream, cat in (("compute", "forward"), ("p2p", "p2p"))
    )
    fig = timeline_figure(make_result(stages=12, events=events))
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"stage {s}" for s in range(12)]
    assert len(ax.texts) == 0  # 50 us bars in a 1 s step: no room for numbers
    assert "thin strip" in ax.get_title()
