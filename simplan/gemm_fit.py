"""Fitting and checking the GEMM model (simplan.gemm) against published matmul throughput.

Reads simplan/data/reference/gemm_efficiency_measurements.csv (16-bit rows only) and
simplan/data/reference/device_specs.csv. The fit uses XLA's default matmul table for sm_90
(Hopper: H100 / H200, the key does not tell them apart) and the one misaligned SwiGLU shape; the
rest is held out: XLA's sm_100 (B200) rows, the other best-shape rows and the aligned SwiGLU
shapes. Each family's best-shape efficiency is its own Maximum Achievable Matmul FLOPS row
(the 'level' rows, reproduced by construction).
"""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass

from simplan.device_fit import read_reference_csv
from simplan.devices import get_device
from simplan.gemm import TILES_16BIT, GemmHardware, GemmKernels, GemmShape, gemm_time_s
from simplan.units import TB, TFLOP

GEMM_TABLE = "gemm_efficiency_measurements.csv"
SPECS_TABLE = "device_specs.csv"
MAMF = "Maximum Achievable Matmul FLOPS comparison table"
# the HEAD best-shape row that sets each family's efficiency: (hardware cell, source marker)
LEVEL_ROWS = {
    "a100": "NVIDIA A100 SXM",
    "h100": "NVIDIA H100 SXM",
    "b200": "NVIDIA B200 SXM",
}
XLA_KEYS = {
    "NVIDIA sm_90 (compute capability key)": "h100",
    "NVIDIA sm_100 (compute capability key)": "b200",
}
LAUNCH_GRID = tuple(x * 0.5e-6 for x in range(2, 21))
TILE_OVERHEAD_GRID = tuple(x * 0.1e-6 for x in range(0, 31))
SMALL_TILE_GRID = tuple(x / 100 for x in range(50, 101, 5))
LEVEL_ITERATIONS = 6
MISALIGNED_GRID = tuple(x / 100 for x in range(30, 101))


@dataclass(frozen=True, kw_only=True)
class GemmCase:
    """One published GEMM measurement."""

    label: str
    family: str
    dtype: str
    shape: GemmShape
    tflops: float
    role: str  # 'fit', 'level' or 'held-out'
    group: str


def a100_mem_efficiency() -> float:
    """The A100 fit's HBM streaming efficiency (simplan/data/gpu_calibration.json), which the
    B200, without a fit of its own, borrows here."""
    return get_device("a100-80gb").mem_efficiency


def family_hardware(family: str, efficiency: float) -> GemmHardware:
    """The A100 and H100 from their presets; the B200 from device_specs.csv (no preset here)."""
    if family in ("a100", "h100"):
        device = get_device("a100-80gb" if family == "a100" else "h100-sxm")
        return GemmHardware(
            sm_count=device.sm_count,
            tiles=TILES_16BIT,
            peak_flops=device.peak("bf16"),
            efficiency=efficiency,
            memory_Bps=device.memory_bandwidth_Bps * device.mem_efficiency,
            elem_bytes=2,
        )
    row = next(r for r in read_reference_csv(SPECS_TABLE) if r["device"] == "NVIDIA B200 SXM")
    return GemmHardware(
        sm_count=int(row["sm_or_matrix_units"].split()[0]),
        tiles=TILES_16BIT,
        peak_flops=float(row["bf16_dense_tflops"]) * TFLOP,
        efficiency=efficiency,
        memory_Bps=float(row["hbm_bandwidth_TBps"]) * TB * a100_mem_efficiency(),
        elem_bytes=2,
    )


def _shape(row: dict[str, str]) -> GemmShape:
    batch = row["batch_or_groups"].replace("batch", "").replace("b=", "").strip() or "1"
    return GemmShape(g=int(batch), m=int(row["M"]), n=int(row["N"]), k=int(row["K"]))


def _tflops(row: dict[str, str]) -> float:
    return float(row["measured_tflops_as_printed"] or row["tflops_derived"])


def _is_16bit(row: dict[str, str]) -> bool:
    return row["dtype"].startswith(("bf16", "fp16"))


def level_efficiencies(all_cases: list[GemmCase], kernels: GemmKernels) -> dict[str, float]:
    """Each family's best-shape efficiency: the one with which the model reproduces the
    family's Maximum Achievable Matmul FLOPS row (solved by fixed-point iteration)."""
    out = {}
    for case in (c for c in all_cases if c.role == "level"):
        peak = family_hardware(case.family, 1.0).peak_flops
        eff = {case.family: case.tflops * TFLOP / peak}
        for _ in range(LEVEL_ITERATIONS):
            eff[case.family] = min(
                eff[case.family] * case.tflops / predict_tflops(case, kernels, eff), 1.0
            )
        out[case.family] = eff[case.family]
    return out


def cases() -> list[GemmCase]:
    """Every 16-bit row with a shape, for A100, H100-class and B200 GPUs."""
    out = []
    for row in read_reference_csv(GEMM_TABLE):
        if not _is_16bit(row) or not row["M"]:
            continue
        family, role, group = _classify(row)
        if family:
            out.append(
                GemmCase(
                    label=row["shape_as_printed"],
                    family=family,
                    dtype=row["dtype"].split()[0],
                    shape=_shape(row),
                    tflops=_tflops(row),
                    role=role,
                    group=group,
                )
            )
    return out


def _classify(row: dict[str, str]) -> tuple[str, str, str]:
    """(family, role, group) of a row; family '' for hardware outside the sweep."""
    hw = row["hardware"]
    if hw in XLA_KEYS:
        family = XLA_KEYS[hw]
        return family, "fit" if family == "h100" else "held-out", f"XLA table {hw.split()[1]}"
    if "SwiGLU" in row["source"]:
        return "h100", "fit" if row["K"] == "10922" else "held-out", "SwiGLU bmm sweep (H100)"
    if MAMF in row["source"]:
        level = hw in LEVEL_ROWS.values() and "744d01e" in row["source"]
        family = {
            "NVIDIA A100 SXM": "a100",
            "NVIDIA A100 PCIe": "a100",
            "NVIDIA H100 SXM": "h100",
            "NVIDIA GH200 SXM": "h100",
            "NVIDIA B200 SXM": "b200",
        }.get(hw, "")
        return family, "level" if level else "held-out", f"MAMF best shape ({hw})"
    return "", "", ""


def predict_tflops(case: GemmCase, kernels: GemmKernels, efficiency: dict[str, float]) -> float:
    hw = family_hardware(case.family, efficiency[case.family])
    return case.shape.flops / gemm_time_s(case.shape, hw, kernels) / TFLOP


def _log_loss(rows: list[GemmCase], kernels: GemmKernels, levels: list[GemmCase]) -> float:
    eff = level_efficiencies(levels, kernels)
    return sum(math.log(predict_tflops(c, kernels, eff) / c.tflops) ** 2 for c in rows)


def fit_kernels(all_cases: list[GemmCase]) -> GemmKernels:
    """Least squares in log on the aligned fit rows (launch, per-tile overhead, small-tile rate),
    then the misaligned rate from the one misaligned row against its aligned neighbour."""
    rows = [c for c in all_cases if c.role == "fit" and c.group.startswith("XLA")]
    levels = [c for c in all_cases if c.role == "level" and c.family == "h100"]
    best: tuple[float, GemmKernels] | None = None
    for launch, k0, small in itertools.product(LAUNCH_GRID, TILE_OVERHEAD_GRID, SMALL_TILE_GRID):
        kernels = GemmKernels(
            launch_s=launch, tile_overhead_s=k0, small_tile_rate=small, misaligned_rate=1.0
        )
        loss = _log_loss(rows, kernels, levels)
        if best is None or loss < best[0] - 1e-12:
            best = (loss, kernels)
    assert best is not None
    base = best[1]
    eff = level_efficiencies(levels, base)
    dip = next(c for c in all_cases if c.role == "fit" and c.group.startswith("SwiGLU"))
    neighbours = [c for c in all_cases if c.group == dip.group and c.role != "fit"]
    measured = dip.tflops / statistics.median(c.tflops for c in neighbours)

    def ratio(rate: float) -> float:
        k = GemmKernels(
            launch_s=base.launch_s,
            tile_overhead_s=base.tile_overhead_s,
            small_tile_rate=base.small_tile_rate,
            misaligned_rate=rate,
        )
        return dip_ratio(dip, neighbours, k, eff)

    rate = min(MISALIGNED_GRID, key=lambda r: abs(ratio(r) - measured))
    return GemmKernels(
        launch_s=base.launch_s,
        tile_overhead_s=base.tile_overhead_s,
        small_tile_rate=base.small_tile_rate,
        misaligned_rate=rate,
        source=(
            f"simplan/data/reference/{GEMM_TABLE}: least-squares (log) fit over the "
            f"{len(rows)} bf16 rows of XLA's sm_90 default matmul table (grid), misaligned rate "
            f"from the SwiGLU K={dip.shape.k} row against its aligned neighbours' median "
            "(benchmarks/gemm_sweep.py)"
        ),
    )


def dip_ratio(
    case: GemmCase, neighbours: list[GemmCase], kernels: GemmKernels, eff: dict[str, float]
) -> float:
    """Predicted throughput of one shape over the median of its neighbours' predictions."""
    others = statistics.median(predict_tflops(c, kernels, eff) for c in neighbours)
    return predict_tflops(case, kernels, eff) / others


def summary(errors: list[float]) -> dict[str, float]:
    return {
        "rows": len(errors),
        "median_abs_error": statistics.median(abs(e) for e in errors) if errors else 0.0,
        "max_abs_error": max((abs(e) for e in errors), default=0.0),
    }
