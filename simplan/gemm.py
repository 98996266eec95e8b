"""Time of one matrix multiplication on a GPU: tiles, waves, split-K and the launch.

A GEMM library computes C (m x n) = A (m x k) @ B (k x n), for g independent products, by giving
each streaming multiprocessor (SM) one output tile of tm x tn at a time. With T tiles and S SMs
the kernel runs ceil(T / S) *waves*, and a wave lasts as long as one tile's work, whether the
last wave is full or not (wave quantization); a dimension that is not a multiple of the tile is
padded to it (tile quantization). A short reduction dimension can be split in s parts (split-K):
s times more tiles, each 1/s as long, plus a reduction of the partial sums through memory. The
library picks the fastest of its kernels, so the model takes the fastest candidate tile and split.

Per tile the SM works at `rate = peak / S * efficiency * tile_rate`, where `efficiency` is the
best-shape efficiency of the device (the Maximum Achievable Matmul FLOPS of the largest tiles)
and `tile_rate` the relative rate of a smaller tile (less reuse of each loaded operand). Each
tile also pays a fixed prologue and epilogue, `tile_overhead_s` (filling the operand pipeline,
writing the tile out): a time, not a share of the tile's work, so short reductions pay the most.
Operand rows that are not a multiple of 16 bytes forbid the vectorized (TMA / 128-bit) loads:
the kernel runs at `misaligned_rate`. Every kernel pays `launch_s` (launch, ramp and drain of one
kernel: what a tiny GEMM costs), and no kernel moves its operands faster than the memory allows.

The kernel constants are fitted by benchmarks/gemm_sweep.py and stored in
simplan/data/gemm_calibration.json with the rows they were fitted on.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CALIBRATION_FILE = Path(__file__).resolve().parent / "data" / "gemm_calibration.json"
ALIGN_BYTES = 16  # TMA and 128-bit vector loads need rows aligned to 16 bytes
PARTIAL_BYTES = 4  # split-K partial sums are fp32
SPLITS = (1, 2, 4, 8)
# cuBLAS / CUTLASS thread-block tiles for 16-bit Tensor Core GEMMs, largest first: NVIDIA's
# "Matrix Multiplication Background User's Guide" (docs.nvidia.com/deeplearning/performance,
# section 'Dimension Quantization Effects': 256x128 and 128x128 tiles on A100's 108 SMs) and
# CUTLASS's Hopper default 128x256 warp-specialized tile.
TILES_16BIT: tuple[tuple[int, int], ...] = ((128, 256), (256, 128), (128, 128))
TILES_SOURCE = (
    "NVIDIA Matrix Multiplication Background User's Guide (tile and wave quantization, "
    "256x128 / 128x128 tiles); CUTLASS Hopper 128x256 tile"
)


@dataclass(frozen=True, kw_only=True)
class GemmShape:
    """g independent products (m x k) @ (k x n)."""

    g: int
    m: int
    n: int
    k: int

    @property
    def flops(self) -> float:
        return 2.0 * self.g * self.m * self.n * self.k


@dataclass(frozen=True, kw_only=True)
class GemmKernels:
    """Constants of the GEMM library, shared by the GPUs it runs on (fitted, see module doc)."""

    launch_s: float
    tile_overhead_s: float
    small_tile_rate: float
    misaligned_rate: float
    source: str = ""


@dataclass(frozen=True, kw_only=True)
class GemmHardware:
    """What one GPU brings to a GEMM."""

    sm_count: int
    tiles: tuple[tuple[int, int], ...]
    peak_flops: float  # of the dtype
    efficiency: float  # of the largest tile, full waves
    memory_Bps: float  # achievable streaming bandwidth
    elem_bytes: int


def _tile_rate(tile: tuple[int, int], tiles: tuple[tuple[int, int], ...], small: float) -> float:
    """1 for the largest tile area, `small` for smaller ones."""
    largest = max(a * b for a, b in tiles)
    return 1.0 if tile[0] * tile[1] >= largest else small


def aligned(shape: GemmShape, elem_bytes: int) -> bool:
    """Whether the rows of A (k elements) and of B and C (n elements) are 16-byte multiples."""
    step = max(ALIGN_BYTES // elem_bytes, 1)
    return shape.k % step == 0 and shape.n % step == 0


def waves(tiles: int, sm_count: int) -> int:
    return math.ceil(tiles / sm_count)


def tile_count(shape: GemmShape, tile: tuple[int, int], split: int = 1) -> int:
    return shape.g * math.ceil(shape.m / tile[0]) * math.ceil(shape.n / tile[1]) * split


def candidate_time_s(
    shape: GemmShape,
    hw: GemmHardware,
    kernels: GemmKernels,
    tile: tuple[int, int],
    split: int,
) -> float:
    """Compute time (no launch) of one tile and split: waves x one tile's time, plus the
    reduction of split-K partial sums through memory."""
    rate = hw.peak_flops / hw.sm_count * hw.efficiency
    rate *= _tile_rate(tile, hw.tiles, kernels.small_tile_rate)
    if not aligned(shape, hw.elem_bytes):
        rate *= kernels.misaligned_rate
    k_part = math.ceil(shape.k / split)
    tile_s = 2.0 * tile[0] * tile[1] * k_part / rate + kernels.tile_overhead_s
    compute = waves(tile_count(shape, tile, split), hw.sm_count) * tile_s
    if split == 1:
        return compute
    partials = 2.0 * split * shape.g * shape.m * shape.n * PARTIAL_BYTES  # written, read back
    return compute + partials / hw.memory_Bps


def operand_bytes(shape: GemmShape, elem_bytes: int) -> float:
    """A and B read once, C written once."""
    return float(shape.g * (shape.m * shape.k + shape.k * shape.n + shape.m * shape.n) * elem_bytes)


@functools.lru_cache(maxsize=1 << 16)
def gemm_time_s(shape: GemmShape, hw: GemmHardware, kernels: GemmKernels) -> float:
    """Time of one GEMM: the fastest candidate kernel, bounded below by moving the operands.
    Cached: a planner asks for the same few shapes many times."""
    if shape.flops <= 0:
        return kernels.launch_s
    splits = [s for s in SPLITS if s == 1 or shape.k // s >= 128]
    compute = min(
        candidate_time_s(shape, hw, kernels, tile, s) for tile in hw.tiles for s in splits
    )
    memory = operand_bytes(shape, hw.elem_bytes) / hw.memory_Bps
    return kernels.launch_s + max(compute, memory)


def read_calibration(path: Path = CALIBRATION_FILE) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return {}


def kernels_from(data: dict[str, Any]) -> GemmKernels:
    fit = data.get("kernels", {})
    return GemmKernels(
        launch_s=float(fit.get("launch_s", 5e-6)),
        tile_overhead_s=float(fit.get("tile_overhead_s", 0.0)),
        small_tile_rate=float(fit.get("small_tile_rate", 1.0)),
        misaligned_rate=float(fit.get("misaligned_rate", 1.0)),
        source=str(fit.get("source", "simplan/data/gemm_calibration.json missing: uncalibrated")),
    )


KERNELS = kernels_from(read_calibration())
