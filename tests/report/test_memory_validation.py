"""Predicted against measured peak memory from validation records."""

from __future__ import annotations

import pytest

from simplan.report.memory import memory_points, memory_validation_figure


def _row(rank: int, stage: int, predicted: float, measured: float) -> dict:
    return {
        "rank": rank,
        "stage": stage,
        "predicted_peak_bytes": predicted,
        "measured_peak_bytes": measured,
    }


def test_one_point_per_stage_and_none_for_old_records() -> None:
    record = {
        "configuration": "gpt-tiny pp 1f1b x2 mb1 gb4",
        "memory": {"ranks": [_row(0, 0, 110.0, 100.0), _row(1, 1, 90.0, 120.0)]},
    }
    points = memory_points(record)
    assert [p.label for p in points] == [
        "gpt-tiny pp 1f1b x2 mb1 gb4 stage 0",
        "gpt-tiny pp 1f1b x2 mb1 gb4 stage 1",
    ]
    assert points[0].rel_error == pytest.approx(0.1)
    assert points[1].rel_error == pytest.approx(-0.25)
    dp = {"configuration": "mlp ddp", "memory": {"ranks": [_row(0, 0, 1, 2), _row(1, 0, 1, 2)]}}
    assert [p.label for p in memory_points(dp)] == ["mlp ddp"]
    assert memory_points({"configuration": "old"}) == []
    fig = memory_validation_figure(points)
    assert "median |error| 17.5%, max 25.0%" in fig.axes[0].get_title()
