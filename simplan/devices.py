"""Device models: what one accelerator (or the local CPU) can do, for layers nobody profiled.

A layer's time on a device model is a roofline per operation: matrix operations run at
`peak_flops * gemm_efficiency`, memory-bound operations at `memory_bandwidth * mem_efficiency`,
and every operation pays `kernel_overhead_s` (launch and ramp). The efficiency therefore
depends on the operation's shape: small GEMMs are dominated by the fixed overhead, large ones
approach `gemm_efficiency`. Every constant carries its source.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from simplan.errors import SimplanError
from simplan.units import TB, TFLOP, GiB, check_dtype

REF = "../shared/reference/README.md (vendor peak numbers quoted there)"
DATASHEET_A100 = "NVIDIA A100 datasheet (HBM2e 2,039 GB/s for 80GB SXM, 1,555 GB/s for 40GB)"
DATASHEET_H100 = "NVIDIA H100 datasheet (SXM5: 3.35 TB/s HBM3, 67 TFLOP/s FP32)"
DATASHEET_H200 = "NVIDIA H200 datasheet (4.8 TB/s HBM3e, 141 GB; 140 GiB seen by the CUDA driver)"


@dataclass(frozen=True, kw_only=True)
class DeviceModel:
    """One device type. peak_flops maps a dtype ('fp32', 'bf16', 'fp16') to FLOP/s."""

    name: str
    kind: str  # "gpu" or "cpu"
    peak_flops: dict[str, float]
    memory_bytes: float
    memory_bandwidth_Bps: float
    gemm_efficiency: float = 0.75
    mem_efficiency: float = 0.85
    kernel_overhead_s: float = 5e-6
    sm_count: int = 0
    sources: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("gpu", "cpu"):
            raise ValueError(f"device {self.name}: kind must be 'gpu' or 'cpu', not {self.kind!r}")
        for dtype, value in self.peak_flops.items():
            check_dtype(dtype)
            if value <= 0:
                raise ValueError(f"device {self.name}: peak_flops[{dtype}] must be > 0")
        if self.memory_bytes <= 0 or self.memory_bandwidth_Bps <= 0:
            raise ValueError(f"device {self.name}: memory and bandwidth must be > 0")
        for attr in ("gemm_efficiency", "mem_efficiency"):
            if not 0 < getattr(self, attr) <= 1:
                raise ValueError(f"device {self.name}: {attr} must be in (0, 1]")

    def peak(self, dtype: str) -> float:
        check_dtype(dtype)
        if dtype in self.peak_flops:
            return self.peak_flops[dtype]
        if dtype in ("bf16", "fp16") and "bf16" in self.peak_flops:
            return self.peak_flops["bf16"]
        return self.peak_flops["fp32"]

    def gemm_time_s(self, flops: float, dtype: str) -> float:
        return flops / (self.peak(dtype) * self.gemm_efficiency) + self.kernel_overhead_s

    def memory_time_s(self, nbytes: float) -> float:
        return nbytes / (self.memory_bandwidth_Bps * self.mem_efficiency) + self.kernel_overhead_s

    def with_(self, **changes: object) -> DeviceModel:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(data: dict[str, object]) -> DeviceModel:
        names = {f.name for f in dataclasses.fields(DeviceModel)}
        unknown = set(data) - names
        if unknown:
            raise SimplanError(
                f"device model: unknown field(s) {sorted(unknown)}; known: {sorted(names)}"
            )
        try:
            return DeviceModel(**data)  # type: ignore[arg-type]
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
) -> DeviceModel:
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
        sources={
            "peak_flops": f"{REF}; fp32 (no TF32) from {sheet}",
            "memory": sheet,
            "gemm_efficiency": GEMM_EFFICIENCY_SOURCE,
            "mem_efficiency": MEM_EFFICIENCY_SOURCE,
            "kernel_overhead_s": OVERHEAD_SOURCE,
        },
        **GPU_EFFICIENCY,
    )


def _calibration() -> dict[str, object]:
    path = Path(__file__).resolve().parent / "data" / "gpu_calibration.json"
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {"gemm_efficiency": 0.7, "source": f"{path} missing: uncalibrated default"}


_CAL = _calibration()
# Efficiency constants shared by the GPU presets. gemm_efficiency is derived from a published
# single-A100 iteration time by simplan/calibration.py (benchmarks/calibrate_devices.py).
GPU_EFFICIENCY: dict[str, float] = {
    "gemm_efficiency": float(_CAL["gemm_efficiency"]),  # type: ignore[arg-type]
    "mem_efficiency": 0.85,
    "kernel_overhead_s": 5e-6,
}
GEMM_EFFICIENCY_SOURCE = str(_CAL["source"])
MEM_EFFICIENCY_SOURCE = (
    "assumed, not calibrated: fraction of HBM bandwidth reached by "
    "streaming element-wise kernels; to be replaced by a GPU profile"
)
OVERHEAD_SOURCE = (
    "assumed, not calibrated: per-kernel launch and ramp time on a GPU; "
    "to be replaced by a GPU profile"
)


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
            fp32_tflops=67,
            memory_GiB=80,
            bandwidth_TBps=3.35,
            sm_count=132,
            sheet=DATASHEET_H100,
        ),
        "h200": _gpu(
            "h200",
            bf16_tflops=989.5,
            fp32_tflops=67,
            memory_GiB=140,
            bandwidth_TBps=4.8,
            sm_count=132,
            sheet=DATASHEET_H200,
        ),
    }


DEVICE_ALIASES = {"a100": "a100-80gb", "h100": "h100-sxm", "a100-80gb-sxm": "a100-80gb"}


def device_names() -> list[str]:
    return [*gpu_presets(), "cpu"]


def get_device(name: str) -> DeviceModel:
    """A device-model preset by name: a100-40gb, a100-80gb, h100-sxm, h200, or cpu (measured)."""
    key = DEVICE_ALIASES.get(name.lower(), name.lower())
    presets = gpu_presets()
    if key in presets:
        return presets[key]
    if key in ("cpu", "local-cpu"):
        from simplan.cpubench import local_cpu_device

        return local_cpu_device()
    raise SimplanError(f"unknown device model {name!r}: use one of {', '.join(device_names())}")
