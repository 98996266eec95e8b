"""The quantized forward-time model: per-shape interpolation and the fp32 -> int8 swap."""

from __future__ import annotations

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
