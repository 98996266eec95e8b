"""The GEMM model: tile and wave quantization worked out by hand, and the published sweep."""

from __future__ import annotations

import math

import pytest

from simplan.gemm import (
    KERNELS,
    TILES_16BIT,
    GemmHardware,
    GemmKernels,
    GemmShape,
    gemm_time_s,
    tile_count,
)
from simplan.gemm_fit import cases, level_efficiencies, predict_tflops

# An H100 SXM with one 128 x 256 tile, no split-K benefit (k too short to split), no memory
# bound: every SM computes at 989.5e12 / 132 FLOP/s.
H100_ONE_TILE = GemmHardware(
    sm_count=132,
    tiles=((128, 256),),
    peak_flops=989.5e12,
    efficiency=1.0,
    memory_Bps=1e30,
    elem_bytes=2,
)
BARE = GemmKernels(launch_s=0.0, tile_overhead_s=0.0, small_tile_rate=1.0, misaligned_rate=0.5)


def test_133_tiles_take_two_waves_as_long_as_264_tiles() -> None:
    k = 128  # 128 // 2 < 128: no split-K candidate
    full = GemmShape(g=1, m=128 * 12, n=256 * 11, k=k)  # 132 tiles: one wave
    one_more = GemmShape(g=1, m=128 * 7, n=256 * 19, k=k)  # 133 tiles
    doubled = GemmShape(g=1, m=128 * 24, n=256 * 11, k=k)  # 264 tiles: two full waves
    assert [tile_count(s, (128, 256)) for s in (full, one_more, doubled)] == [132, 133, 264]
    one_wave = 2 * 128 * 256 * k / (989.5e12 / 132)  # one tile on one SM, by hand
    assert gemm_time_s(full, H100_ONE_TILE, BARE) == pytest.approx(one_wave)
    assert gemm_time_s(one_more, H100_ONE_TILE, BARE) == pytest.approx(2 * one_wave)
    assert gemm_time_s(doubled, H100_ONE_TILE, BARE) == pytest.approx(2 * one_wave)


def test_a_dimension_one_past_the_tile_pads_a_whole_tile() -> None:
    k = 4096
    exact = GemmShape(g=1, m=128, n=256, k=k)
    past = GemmShape(g=1, m=129, n=256, k=k)  # two tiles, one SM each: same wave, same time
    assert gemm_time_s(past, H100_ONE_TILE, BARE) == pytest.approx(
        gemm_time_s(exact, H100_ONE_TILE, BARE)
    )


def test_misaligned_rows_run_at_the_misaligned_rate() -> None:
    aligned = GemmShape(g=1, m=1024, n=1024, k=1024)
    odd = GemmShape(g=1, m=1024, n=1024, k=1022)  # 2044 bytes: not a multiple of 16
    # both split k in 4 (32 tiles x 4 = 128 <= 132 SMs): parts of ceil(1022 / 4) = 256 = 1024 / 4
    ratio = gemm_time_s(odd, H100_ONE_TILE, BARE) / gemm_time_s(aligned, H100_ONE_TILE, BARE)
    assert ratio == pytest.approx(1 / BARE.misaligned_rate)


def test_hidden_sizes_off_the_tile_grid_dip_on_the_h100_preset() -> None:
    """The calibrated H100 model (all its tiles and splits): m = 1536, n = 2816 is 12 x 11 = 132
    tiles of 128 x 256, one wave; n = 2824 needs a 12th tile column (144 tiles: two waves), or
    276 tiles of 128 x 128 (three half-size waves), or a split k: about 1.5 times the time.
    n = 2820 is not a multiple of 8 (misaligned)."""
    eff = level_efficiencies(cases(), KERNELS)
    hw = GemmHardware(
        sm_count=132,
        tiles=TILES_16BIT,
        peak_flops=989.5e12,
        efficiency=eff["h100"],
        memory_Bps=3.35e12 * 0.75,
        elem_bytes=2,
    )

    def tflops(n: int) -> float:
        shape = GemmShape(g=1, m=1536, n=n, k=4096)
        return shape.flops / gemm_time_s(shape, hw, KERNELS) / 1e12

    assert 0.6 * tflops(2816) < tflops(2824) < 0.75 * tflops(2816)
    assert tflops(2820) < 0.75 * tflops(2816)
    assert tflops(2816 - 8) > 0.95 * tflops(2816)  # still 11 columns: no dip below the grid


def test_tiny_gemms_are_bound_by_the_launch() -> None:
    tiny = GemmShape(g=1, m=8, n=8, k=8)
    hw = H100_ONE_TILE
    padded_tile_s = 2 * 128 * 256 * 8 / (989.5e12 / 132)  # the whole tile is computed
    assert gemm_time_s(tiny, hw, KERNELS) == pytest.approx(
        KERNELS.launch_s + KERNELS.tile_overhead_s + padded_tile_s
    )


def test_the_sweep_reproduces_the_published_table_within_ten_percent() -> None:
    all_cases = cases()
    eff = level_efficiencies(all_cases, KERNELS)
    absolute = [c for c in all_cases if not c.group.startswith("SwiGLU")]
    errors = sorted(abs(math.log(predict_tflops(c, KERNELS, eff) / c.tflops)) for c in absolute)
    assert len(absolute) >= 30
    assert errors[len(errors) // 2] < math.log(1.10)
