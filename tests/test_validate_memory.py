"""Predicted against measured memory: each rank against its stage, components by name."""

from __future__ import annotations

import pytest

from simplan.validate_memory import compare_memory, memory_lines, stage_of


def _device(stage: int, act: float) -> dict:
    memory = {"weights": 100.0, "grads": 100.0, "optimizer": 200.0, "activations": act}
    return {
        "stage": stage,
        "memory": memory | {"buffers": 50.0},
        "peak_memory_bytes": sum(memory.values()) + 50.0,
        "peak_moment": "backward of chunk 0 layer 1",
    }


def _rank(rank: int, act: int) -> dict:
    parts = {"parameters": 100, "gradients": 100, "optimizer": 200, "activations": act}
    return {
        "rank": rank,
        "memory_parts": parts | {"other": 50},
        "tracked_peak_bytes": sum(parts.values()) + 50,
        "peak_phase": "forward_backward",
    }


def test_each_pipeline_rank_is_compared_with_its_stage() -> None:
    predicted = {"devices": [_device(0, 150.0), _device(1, 50.0)]}
    mem = compare_memory(predicted, [_rank(0, 150), _rank(1, 150)], pp=2)
    first, second = mem["ranks"]
    assert first["rel_error"] == 0.0 and first["stage"] == 0
    # stage 1: 500 predicted against 600 measured
    assert second["rel_error"] == pytest.approx(-100 / 600)
    rest = second["components"]["activations+buffers"]
    assert (rest["predicted_bytes"], rest["measured_bytes"]) == (100.0, 200.0)
    assert second["components"]["parameters"]["rel_error"] == 0.0
    assert mem["max_abs_error"] == pytest.approx(100 / 600)
    assert mem["median_abs_error"] == pytest.approx(50 / 600)
    lines = memory_lines(mem)
    assert "-16.7%" in lines[2] or "-16.7%" in lines[3]


def test_data_parallel_ranks_share_stage_zero_and_old_records_are_left_out() -> None:
    assert [stage_of(r, 4, 1) for r in range(4)] == [0, 0, 0, 0]
    assert [stage_of(r, 4, 2) for r in range(4)] == [0, 0, 1, 1]
    old = {"rank": 0, "tracked_peak_bytes": 0}
    mem = compare_memory({"devices": [_device(0, 1.0)]}, [old], pp=1)
    assert mem["ranks"] == [] and mem["median_abs_error"] is None
    assert "not measured" in memory_lines(mem)[0]
