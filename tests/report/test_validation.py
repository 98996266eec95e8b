"""Validation: records read from a directory, the scatter with y = x and the +-10% band."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from matplotlib.collections import PathCollection, PolyCollection

from simplan.errors import SimplanError
from simplan.report.validation import (
    error_figure,
    point_from_record,
    read_points,
    summary,
    validation_figure,
)


def test_points_from_flat_records(runs_dir: Path) -> None:
    points = read_points(runs_dir)
    assert [p.strategy for p in points] == ["ddp", "fsdp", "tp", "ddp"]
    assert points[1].rel_error == pytest.approx(-1 / 3)
    assert points[0].nprocs == 2 and points[0].micro_batch == 8
    assert summary(points) == "4 runs: 2 within ±10%, median |error| 14.9%"


def test_points_from_simplan_validate_records() -> None:
    record = {
        "schema": {"kind": "validation-record", "version": 1},
        "model": "mlp",
        "strategy": "pp",
        "configuration": "mlp pp 1f1b x2 mb8 gb64",
        "job": {"config": {"dp": 1, "tp": 1, "pp": 2, "micro_batch": 8}},
        "predicted_step_s": 0.02,
        "measured_step_s": 0.025,
        "rel_error": -0.2,
    }
    p = point_from_record(record, "r.json")
    assert (p.nprocs, p.micro_batch, p.label) == (2, 8, "mlp pp 1f1b x2 mb8 gb64")


def test_scatter_has_identity_line_band_and_a_marker_per_run(runs_dir: Path) -> None:
    fig = validation_figure(read_points(runs_dir))
    ax = fig.axes[0]
    assert ax.get_xlabel() == "measured step time (ms)"
    assert ax.get_ylabel() == "predicted step time (ms)"
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    identity = next(ln for ln in ax.lines if ln.get_label() == "y = x")
    xs, ys = identity.get_xdata(), identity.get_ydata()
    assert list(xs) == list(ys)
    band = next(c for c in ax.collections if isinstance(c, PolyCollection))
    assert band.get_label() == "±10%"
    vertices = band.get_paths()[0].vertices
    lo_x = min(vertices[:, 0])
    assert min(vertices[:, 1]) == pytest.approx(lo_x * 0.9)
    scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert sum(len(c.get_offsets()) for c in scatters) == 4
    # one series per (model, strategy), coloured by strategy
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"gpt, ddp", "mlp, ddp", "mlp, fsdp", "gpt, tp", "y = x", "±10%"} == set(legend)
    ddp = [c for c in scatters if c.get_label().endswith("ddp")]
    assert len({tuple(c.get_facecolor()[0]) for c in ddp}) == 1
    assert "2 within ±10%" in ax.get_title()


def test_error_figure_has_a_bar_per_run(runs_dir: Path) -> None:
    ax = error_figure(read_points(runs_dir)).axes[0]
    widths = [round(p.get_width(), 1) for p in ax.patches if p.get_height() == 0.7]
    assert widths == [-4.8, -33.3, 2.0, 25.0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["run 0", "run 1", "run 2", "run 3"]


def test_empty_or_foreign_input_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(SimplanError, match="no validation records"):
        read_points(tmp_path)
    (tmp_path / "x.json").write_text(json.dumps({"schema": {"kind": "plan", "version": 1}}))
    with pytest.raises(SimplanError, match="not a validation record"):
        read_points(tmp_path)
    (tmp_path / "x.json").write_text(json.dumps({"model": "m"}))
    with pytest.raises(SimplanError, match="predicted_step_s is missing"):
        read_points(tmp_path)
