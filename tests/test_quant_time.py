"""The quantized forward-time model: per-shape interpolation and the fp32 -> int8 swap."""

from __future__ import annotations

from pathlib import Path

import pytest

from simplan.errors import SimplanError
from simplan.quant_time import MeasuredTimes, predict_int8_forward_s, rates_from

DOC = {
    "rows": [
        {"m": 100, "k": 4, "n": 8, "fp32_s": 1.0, "int8_s": 0.6},
        {"m": 300, "k": 4, "n": 8, "fp32_s": 3.0, "int8_s": 1.0},
        {"m": 500, "k": 4, "n": 8, "fp32_s": 4.0, "int8_s": 2.0},
    ]
}


def test_times_are_interpolated_between_measured_token_counts() -> None:
    times = MeasuredTimes(points=((100, 1.0), (300, 3.0), (500, 4.0)))
    assert times.time_s(100) == 1.0
    assert times.time_s(200) == pytest.approx(2.0)
    assert times.time_s(400) == pytest.approx(3.5)
    assert times.time_s(700) == pytest.approx(5.0)  # the last segment extended
    assert times.time_s(0) == 0.0  # never negative


def test_prediction_swaps_each_linear_layers_fp32_time_for_int8() -> None:
    rates = rates_from(DOC, "test")
    # two calls of the (4, 8) layer on 200 and 500 rows: fp32 2.0 + 4.0 s, int8 0.8 + 2.0 s
    predicted = predict_int8_forward_s(10.0, [(200, 4, 8), (500, 4, 8)], rates)
    assert predicted == pytest.approx(10.0 - 6.0 + 2.8)


def test_unmeasured_shape_is_refused_in_one_line() -> None:
    rates = rates_from(DOC, "rates.json")
    with pytest.raises(SimplanError, match="no int8 linear time measured for 4 -> 16"):
        predict_int8_forward_s(1.0, [(10, 4, 16)], rates)


def test_an_int8_dynamic_teachers_forward_swaps_its_linear_layers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mlp-wide (784-512-512-10) at 64 samples: the fp32 forward, less each linear layer's fp32
    time at 64 rows, plus its int8 time (rates: fp32 2 us and int8 1 us per row at every shape,
    measured at 32 and 96 rows)."""
    from simplan import quant_time
    from simplan.devices import get_device
    from simplan.distill import teacher_forward_s
    from simplan.io import write_json_atomic
    from simplan.sources import load_model

    shapes = [(784, 512), (512, 512), (512, 10)]
    rows = [
        {"m": m, "k": k, "n": n, "fp32_s": 2e-6 * m, "int8_s": 1e-6 * m}
        for k, n in shapes
        for m in (32, 96)
    ]
    path = tmp_path / "rates.json"
    write_json_atomic({"rows": rows}, path)
    monkeypatch.setattr(quant_time, "rates_path", lambda _cpu: path)
    cpu = get_device("cpu")
    fp32 = load_model("mlp-wide")
    int8 = load_model("mlp-wide#quantize=int8-dynamic")
    assert quant_time.graph_linear_shapes(int8, 64) == [(64, k, n) for k, n in shapes]
    base = teacher_forward_s(fp32, cpu, 64)
    assert teacher_forward_s(int8, cpu, 64) == pytest.approx(base - 3 * 64e-6)
    with pytest.raises(SimplanError, match="runs torch's CPU kernels"):
        teacher_forward_s(int8, get_device("h100-sxm"), 64)
