"""Device models: what one accelerator (or the local CPU) can do, for layers nobody profiled.

A layer's time on a device model is a roofline per operation: matrix products of known shape go
through the GEMM model (simplan.gemm: `sm_count` SMs compute `gemm_tiles` in waves, full tiles at
`peak_flops * gemm_efficiency`); other matrix operations run at `peak_flops * gemm_efficiency`
(or at the memory's pace when their operands are large for their arithmetic), memory-bound
operations at `memory_bandwidth * mem_efficiency`, and no operation takes less than
`kernel_overhead_s`, the time to issue one (launches are asynchronous: issuing the next operation
overlaps the current one, so the overhead is a floor, not a surcharge). The efficiency therefore
depends on the operation's shape: tiny operations are bound by the issue rate, large ones
approach `gemm_efficiency`. Every constant carries its source.

The device's constants are kept apart from the training stack's. `gemm_efficiency` is the
device's: the full-tile rate at which the GEMM model reproduces the device's Maximum Achievable
Matmul FLOPS (a kernel benchmark, simplan/data/gemm_calibration.json). Two constants describe
the software stack that trains on it: `stack_gemm_efficiency`, the share of that rate its matrix
kernels reach (an older GEMM library, gaps between back-to-back products), and
`kernel_overhead_s`, the least time one operation of the stack costs (launch, and in an eager
framework the host-side dispatch). Matrix work runs at `gemm_efficiency *
stack_gemm_efficiency` of peak (`matrix_efficiency`); the stack's fused attention kernels (flash
attention: the matrix work of a transformer block outside the GEMM model) at
`stack_attention_efficiency` of that (their inner products are one head wide, and the softmax
between them runs on the same SM). The presets carry the stack fitted end to
end on llm-foundry's MPT runs of 2023 (simplan/device_fit.py); `kernels_only` gives the device
with a stack that loses nothing beyond each kernel's launch.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simplan.errors import SimplanError
from simplan.gemm import TILES_16BIT, TILES_SOURCE
from simplan.units import GB, TB, TFLOP, GiB, check_dtype

REF = "simplan/data/reference/README.md (vendor peak numbers quoted there)"
DATASHEET_A100 = "NVIDIA A100 datasheet (HBM2e 2,039 GB/s for 80GB SXM, 1,555 GB/s for 40GB)"
DATASHEET_H100 = "NVIDIA H100 datasheet (SXM5: 3.35 TB/s HBM3, 67 TFLOP/s FP32)"
FP8_PEAKS = (
    "dense FP8 peak from /work/shared/reference/device_specs.csv (stas00/ml-engineering "
    "@744d01e1: H100 SXM and H200 SXM 1979 TFLOP/s dense; A100: X, no FP8)"
)
SM_SOURCE = (
    "simplan/data/reference/device_specs.csv, sm_or_matrix_units column (A100: 108 SMs; "
    "H100 SXM and H200: 132 SMs)"
)
DATASHEET_H200 = "NVIDIA H200 datasheet (4.8 TB/s HBM3e, 141 GB; 140 GiB seen by the CUDA driver)"


@dataclass(frozen=True, kw_only=True)
class DeviceModel:
    """One device type. peak_flops maps a dtype ('fp32', 'bf16', 'fp16') to FLOP/s; fp8_flops is
    the dense FP8 tensor-core peak (0: no FP8 tensor cores)."""

    name: str
    kind: str  # "gpu" or "cpu"
    peak_flops: dict[str, float]
    memory_bytes: float
    memory_bandwidth_Bps: float
    gemm_efficiency: float = 0.75
    mem_efficiency: float = 0.85
    kernel_overhead_s: float = 5e-6
    # share of gemm_efficiency the training stack's matrix kernels reach (module doc)
    stack_gemm_efficiency: float = 1.0
    # share of that matrix rate the stack's fused attention kernels reach (module doc)
    stack_attention_efficiency: float = 1.0
    sm_count: int = 0
    fp8_flops: float = 0.0
    # GEMM thread-block tiles (rows x columns of the output) its libraries use for 16-bit
    # matrices, largest first; empty: matrix products on the roofline (simplan.gemm)
    gemm_tiles: tuple[tuple[int, int], ...] = ()
    sources: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        tiles = tuple((int(a), int(b)) for a, b in self.gemm_tiles)
        if any(a <= 0 or b <= 0 for a, b in tiles) or self.sm_count < 0:
            raise ValueError(f"device {self.name}: gemm_tiles and sm_count must be positive")
        object.__setattr__(self, "gemm_tiles", tiles)
        if self.kind not in ("gpu", "cpu"):
            raise ValueError(f"device {self.name}: kind must be 'gpu' or 'cpu', not {self.kind!r}")
        for dtype, value in self.peak_flops.items():
            check_dtype(dtype)
            if value <= 0:
                raise ValueError(f"device {self.name}: peak_flops[{dtype}] must be > 0")
        if self.fp8_flops < 0:
            raise ValueError(f"device {self.name}: fp8_flops must be >= 0")
        if self.memory_bytes <= 0 or self.memory_bandwidth_Bps <= 0:
            raise ValueError(f"device {self.name}: memory and bandwidth must be > 0")
        for attr in (
            "gemm_efficiency",
            "mem_efficiency",
            "stack_gemm_efficiency",
            "stack_attention_efficiency",
        ):
            if not 0 < getattr(self, attr) <= 1:
                raise ValueError(f"device {self.name}: {attr} must be in (0, 1]")

    def peak(self, dtype: str) -> float:
        check_dtype(dtype)
        if dtype in self.peak_flops:
            return self.peak_flops[dtype]
        if dtype in ("bf16", "fp16") and "bf16" in self.peak_flops:
            return self.peak_flops["bf16"]
        if "fp32" not in self.peak_flops:
            given = ", ".join(self.peak_flops)
            raise SimplanError(
                f"device {self.name} has no {dtype} peak (its datasheet gives {given}); "
                f"use --dtype bf16"
            )
        return self.peak_flops["fp32"]

    @property
    def matrix_efficiency(self) -> float:
        """Share of peak at which the training stack's matrix kernels run on this device."""
        return self.gemm_efficiency * self.stack_gemm_efficiency

    def gemm_time_s(self, flops: float, dtype: str) -> float:
        return max(flops / (self.peak(dtype) * self.matrix_efficiency), self.kernel_overhead_s)

    def roofline_time_s(self, flops: float, nbytes: float, dtype: str) -> float:
        """A matrix operation: bound by compute or by moving its operands, plus the overhead."""
        compute = flops / (self.peak(dtype) * self.matrix_efficiency)
        memory = nbytes / (self.memory_bandwidth_Bps * self.mem_efficiency)
        return max(compute, memory, self.kernel_overhead_s)

    def attention_time_s(self, flops: float, nbytes: float, dtype: str) -> float:
        """A fused attention kernel (flash attention): the roofline at the share of the matrix
        rate the stack's attention kernels reach."""
        compute = flops / (self.peak(dtype) * self.matrix_efficiency)
        compute /= self.stack_attention_efficiency
        memory = nbytes / (self.memory_bandwidth_Bps * self.mem_efficiency)
        return max(compute, memory, self.kernel_overhead_s)

    def memory_time_s(self, nbytes: float) -> float:
        return max(
            nbytes / (self.memory_bandwidth_Bps * self.mem_efficiency), self.kernel_overhead_s
        )

    def with_(self, **changes: Any) -> DeviceModel:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> DeviceModel:
        names = {f.name for f in dataclasses.fields(DeviceModel)}
        unknown = set(data) - names
        if unknown:
            raise SimplanError(
                f"device model: unknown field(s) {sorted(unknown)}; known: {sorted(names)}"
            )
        try:
            return DeviceModel(**data)
        except (TypeError, ValueError) as exc:
            raise SimplanError(f"device model: {exc}") from None


def _gpu(
    name: str,
    *,
    bf16_tflops: float,
    fp32_tflops: float,
    memory_GiB: float,
    bandwidth_TBps: float,
    sm_count: int,
    sheet: str,
    fp8_tflops: float = 0.0,
) -> DeviceModel:
    efficiency, efficiency_sources = _efficiency(name)
    return DeviceModel(
        name=name,
        kind="gpu",
        peak_flops={
            "bf16": bf16_tflops * TFLOP,
            "fp16": bf16_tflops * TFLOP,
            "fp32": fp32_tflops * TFLOP,
        },
        memory_bytes=memory_GiB * GiB,
        memory_bandwidth_Bps=bandwidth_TBps * TB,
        sm_count=sm_count,
        fp8_flops=fp8_tflops * TFLOP,
        gemm_tiles=TILES_16BIT,
        sources={
            "peak_flops": f"{REF}; fp32 (no TF32) from {sheet}",
            "fp8_flops": FP8_PEAKS if fp8_tflops else "no FP8 tensor cores",
            "memory": sheet,
            "sm_count": SM_SOURCE,
            "gemm_tiles": TILES_SOURCE,
            **efficiency_sources,
        },
        **efficiency,
    )


SPECS_TABLE = "device_specs.csv"
# Device models built from a datasheet row of simplan/data/reference/device_specs.csv alone
# (dense bf16/fp16 peak, HBM capacity and bandwidth, SM count): no measurement calibrates them yet.
DATASHEET_ROWS = {
    "b200": "NVIDIA B200 SXM",
    "b300": "NVIDIA B300 SXM",
    "gb200": "NVIDIA GB200 (per GPU)",
}
UNCALIBRATED = (
    "datasheet-derived until calibrated: no measurement on this device yet, so the efficiencies "
    "are simplan's uncalibrated defaults"
)


@functools.cache
def _spec_rows() -> tuple[dict[str, str], ...]:
    """device_specs.csv, read once per process (every preset lookup builds the presets)."""
    from simplan.device_fit import read_reference_csv

    return tuple(read_reference_csv(SPECS_TABLE))


def _spec_row(device: str) -> dict[str, str]:
    rows = [r for r in _spec_rows() if r["device"] == device]
    if len(rows) != 1:
        raise SimplanError(f"{SPECS_TABLE}: no row for {device!r}; reinstall simplan")
    return rows[0]


def _datasheet_gpu(name: str) -> DeviceModel:
    """A GPU from its device_specs.csv row: dense bf16, fp16 and FP8 peaks (no plain-fp32 peak
    is given, so fp32 is refused), HBM capacity (vendor GB, decimal) and bandwidth, SM count (the
    first number given, 0 when none)."""
    row = _spec_row(DATASHEET_ROWS[name])
    sms = re.match(r"\d+", row["sm_or_matrix_units"])
    efficiency, efficiency_sources = _efficiency(name)
    sheet = f"simplan/data/reference/{SPECS_TABLE}, row {row['device']!r} ({UNCALIBRATED})"
    return DeviceModel(
        name=name,
        kind="gpu",
        peak_flops={
            "bf16": float(row["bf16_dense_tflops"]) * TFLOP,
            "fp16": float(row["fp16_dense_tflops"]) * TFLOP,
        },
        memory_bytes=float(row["hbm_capacity_GB"]) * GB,
        memory_bandwidth_Bps=float(row["hbm_bandwidth_TBps"]) * TB,
        sm_count=int(sms.group()) if sms else 0,
        fp8_flops=float(row["fp8_dense_tflops"] or 0.0) * TFLOP,
        sources={"peak_flops": sheet, "fp8_flops": sheet, "memory": sheet, **efficiency_sources},
        gemm_efficiency=efficiency["gemm_efficiency"],
        mem_efficiency=efficiency["mem_efficiency"],
        kernel_overhead_s=efficiency["kernel_overhead_s"],
        stack_gemm_efficiency=efficiency["stack_gemm_efficiency"],
        stack_attention_efficiency=efficiency["stack_attention_efficiency"],
    )


def _calibration() -> dict[str, dict[str, Any]]:
    path = Path(__file__).resolve().parent / "data" / "gpu_calibration.json"
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


_CAL = _calibration()
_FAMILY = {"a100-40gb": "a100", "a100-80gb": "a100", "h100-sxm": "h100", "h200": "h100"}
KERNEL_OVERHEAD_S = 5e-6
OVERHEAD_SOURCE = (
    "assumed, not calibrated: per-kernel launch and ramp time on a GPU; to be replaced by a "
    "GPU profile"
)


def _efficiency(name: str) -> tuple[dict[str, float], dict[str, str]]:
    """GEMM rate (the family's MAMF), memory efficiency and the fitted stack (its GEMM share and
    per-operation overhead) of a GPU preset from simplan/data/gpu_calibration.json (written by
    benchmarks/calibrate_devices.py; see simplan/device_fit.py)."""
    fit = _CAL.get(_FAMILY.get(name, ""), {})
    missing = UNCALIBRATED if name in DATASHEET_ROWS else "gpu_calibration.json missing"
    source = str(fit.get("source", f"{missing}: uncalibrated"))
    if name == "h200":
        source = f"the H100 fit (same chip; the H200 has faster memory): {source}"
    values = {
        "gemm_efficiency": float(fit.get("gemm_efficiency", 0.7)),
        "mem_efficiency": float(fit.get("mem_efficiency", 0.7)),
        "kernel_overhead_s": float(fit.get("kernel_overhead_s", KERNEL_OVERHEAD_S)),
        "stack_gemm_efficiency": float(fit.get("stack_gemm_efficiency", 1.0)),
        "stack_attention_efficiency": float(fit.get("stack_attention_efficiency", 1.0)),
    }
    sources = {
        "gemm_efficiency": str(fit.get("gemm_source", source)),
        "mem_efficiency": source,
        "stack_gemm_efficiency": source,
        "stack_attention_efficiency": str(fit.get("attention_source", source)),
        "kernel_overhead_s": source if fit.get("kernel_overhead_identified") else OVERHEAD_SOURCE,
    }
    return values, sources


def kernels_only(device: DeviceModel) -> DeviceModel:
    """The device under a training stack that loses nothing beyond each kernel's launch: matrix
    kernels at the device's measured rate (stack_gemm_efficiency 1) and no operation under the
    launch time (KERNEL_OVERHEAD_S), as the datasheet presets are until a stack is fitted on
    them."""
    sources = {
        **device.sources,
        "stack_gemm_efficiency": "1: matrix kernels at the device's measured rate",
        "stack_attention_efficiency": "1: fused attention at the device's measured GEMM rate",
        "kernel_overhead_s": OVERHEAD_SOURCE,
    }
    return device.with_(
        stack_gemm_efficiency=1.0,
        stack_attention_efficiency=1.0,
        kernel_overhead_s=KERNEL_OVERHEAD_S,
        sources=sources,
    )


# the training stack a device's rates describe: "fitted", the preset as fitted (the GPU presets
# carry llm-foundry's 2023 stack, fitted on its MPT runs: simplan/data/gpu_calibration.json), or
# "kernels", the device under a stack that loses nothing beyond each kernel's launch
# (kernels_only: fused kernels and CUDA graphs, as Megatron-Core with Transformer Engine runs)
STACKS = ("fitted", "kernels")


def with_stack(device: DeviceModel, stack: str) -> DeviceModel:
    """The device under a training stack of STACKS (CPU devices are measured: unchanged)."""
    if stack not in STACKS:
        raise SimplanError(f"unknown stack {stack!r}: use one of {', '.join(STACKS)}")
    if stack == "fitted" or device.kind == "cpu":
        return device
    return kernels_only(device)


def gpu_presets() -> dict[str, DeviceModel]:
    return {
        "a100-40gb": _gpu(
            "a100-40gb",
            bf16_tflops=312,
            fp32_tflops=19.5,
            memory_GiB=40,
            bandwidth_TBps=1.555,
            sm_count=108,
            sheet=DATASHEET_A100,
        ),
        "a100-80gb": _gpu(
            "a100-80gb",
            bf16_tflops=312,
            fp32_tflops=19.5,
            memory_GiB=80,
            bandwidth_TBps=2.039,
            sm_count=108,
            sheet=DATASHEET_A100,
        ),
        "h100-sxm": _gpu(
            "h100-sxm",
            bf16_tflops=989.5,
            fp8_tflops=1979,
            fp32_tflops=67,
            memory_GiB=80,
            bandwidth_TBps=3.35,
            sm_count=132,
            sheet=DATASHEET_H100,
        ),
        "h200": _gpu(
            "h200",
            bf16_tflops=989.5,
            fp8_tflops=1979,
            fp32_tflops=67,
            memory_GiB=140,
            bandwidth_TBps=4.8,
            sm_count=132,
            sheet=DATASHEET_H200,
        ),
        **{name: _datasheet_gpu(name) for name in DATASHEET_ROWS},
    }


DEVICE_ALIASES = {"a100": "a100-80gb", "h100": "h100-sxm", "a100-80gb-sxm": "a100-80gb"}


def device_names() -> list[str]:
    return [*gpu_presets(), "cpu"]


def describes(device: DeviceModel, measured_name: str) -> bool:
    """Whether a device model stands for a device reported as `measured_name` (the CPU, or a GPU
    whose name contains the preset's family, e.g. 'h200' in 'NVIDIA H200')."""
    if device.kind == "cpu":
        return not any(word in measured_name.lower() for word in ("nvidia", "amd instinct"))
    family = device.name.split("-")[0]
    return family in re.split(r"[\s_-]+", measured_name.lower())


def preset_for(measured_name: str) -> DeviceModel | None:
    """The GPU preset that stands for a measured device name, if any."""
    return next((d for d in gpu_presets().values() if describes(d, measured_name)), None)


def get_device(name: str) -> DeviceModel:
    """A device-model preset by name: a100-40gb, a100-80gb, h100-sxm, h200, b200, b300, gb200,
    or cpu (measured)."""
    key = DEVICE_ALIASES.get(name.lower(), name.lower())
    presets = gpu_presets()
    if key in presets:
        return presets[key]
    if key in ("cpu", "local-cpu"):
        from simplan.cpubench import local_cpu_device

        return local_cpu_device()
    raise SimplanError(f"unknown device model {name!r}: use one of {', '.join(device_names())}")
