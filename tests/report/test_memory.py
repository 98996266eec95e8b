"""Memory: stacked categories per stage against capacity; the fullest device over time."""

from __future__ import annotations

from matplotlib.colors import to_rgba

from simplan.report.memory import fullest_stage, memory_figure, memory_series, memory_time_figure
from simplan.report.style import CAPACITY_COLOR, MEMORY_COLORS, MEMORY_KEYS, MEMORY_LABELS
from simplan.units import GiB
from tests.report.conftest import make_result


def test_memory_bars_by_category_against_capacity(result) -> None:
    fig = memory_figure(result)
    ax = fig.axes[0]
    assert len(ax.patches) == 2 * len(MEMORY_KEYS)
    for i, key in enumerate(MEMORY_KEYS):
        assert ax.patches[2 * i].get_facecolor() == to_rgba(MEMORY_COLORS[key])
    assert ax.patches[0].get_height() == 2.0  # parameters, GiB
    assert ax.get_ylabel() == "peak memory per device (GiB)"
    capacity = [c for c in ax.collections if c.get_label() == "capacity"]
    assert len(capacity) == 1 and tuple(capacity[0].get_color()[0]) == to_rgba(CAPACITY_COLOR)
    segments = capacity[0].get_segments()
    assert len(segments) == 2 and all(seg[0][1] == 80.0 for seg in segments)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert [MEMORY_LABELS[k] for k in MEMORY_KEYS] == legend[: len(MEMORY_KEYS)]
    assert "capacity" in legend
    assert not [t for t in ax.texts if "does not fit" in t.get_text()]


def test_a_device_that_does_not_fit_is_marked() -> None:
    r = make_result(fits=False)
    assert fullest_stage(r) == 0
    ax = memory_figure(r).axes[0]
    assert [t.get_text() for t in ax.texts] == ["does not fit"]


def test_memory_over_time_adds_activations_to_static_memory(result) -> None:
    static = (2 + 2 + 8 + 1) * GiB
    points = memory_series(result, 0)
    assert points[0] == (0.0, static)
    assert points[3] == (0.6, static + 6 * GiB)
    assert points[-1] == (1.0, static)
    ax = memory_time_figure(result).axes[0]
    line = next(ln for ln in ax.lines if ln.get_label() == "total")
    assert max(line.get_ydata()) == 19.0
    assert ax.get_xlabel() == "time (ms)" and ax.get_ylabel() == "memory (GiB)"
    assert "stage 0" in ax.get_title()


def test_the_headroom_is_drawn_below_capacity(result) -> None:
    from dataclasses import replace

    kept = replace(
        result, devices=tuple(replace(d, headroom_bytes=8 * GiB) for d in result.devices)
    )
    fig = memory_figure(kept)
    usable = [c for c in fig.axes[0].collections if c.get_label() == "capacity less headroom"]
    assert len(usable) == 1
    assert all(seg[0][1] == 72.0 for seg in usable[0].get_segments())
    assert "capacity less headroom" in [t.get_text() for t in fig.legends[0].get_texts()]
    plain = memory_figure(result).axes[0].collections
    assert not [c for c in plain if c.get_label() == "capacity less headroom"]
