"""Memory headroom: what a device's memory holds besides the tensors simplan models.

A plan is proposed only when every device's modelled peak fits within its capacity less the
headroom. The default is the published overhead of a training process outside its tensors
(simplan/data/reference/memory_overheads.csv, a copy of the shared reference table):

- CUDA context and preloaded kernels: 0.92 GiB, the largest value measured with PyTorch 2.x on
  an 80 GB GPU (stas00/ml-engineering, training/performance/README.md, 'Preloaded CUDA kernels
  memory usage', pytorch 2.1.1+cu121, CUDA_MODULE_LOADING=EAGER; lazy loading measured 0.47);
- torch.distributed / NCCL initialisation: 2.00 GiB, the largest of the three measurements of
  `init_process_group` + `barrier` with no tensors allocated (same source, 'torch.distributed
  memory usage'; the source says '~1-2GiB ... the more GPUs the higher').

2.92 GiB in all (3.7% of an 80 GiB device). These runtime overheads are not tensor memory: the
simulator reports them apart (`DeviceStats.overheads`, `Headroom.parts`) from the peak of the
tensors it models. Allocator fragmentation has no typical value in the
table (its rows are a pathological reproducer and a single-GPU QLoRA run), so it is not in the
default; give a larger headroom, in GiB or as a percentage of capacity, to keep more room.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from simplan.errors import SimplanError
from simplan.units import GiB

OVERHEADS_TABLE = "memory_overheads.csv"
CUDA_CONTEXT_BYTES = 0.92 * GiB  # memory_overheads.csv: CUDA context, pytorch 2.1.1, EAGER
NCCL_INIT_BYTES = 2.00 * GiB  # memory_overheads.csv: torch.distributed / NCCL init, largest row
DEFAULT_HEADROOM_BYTES = CUDA_CONTEXT_BYTES + NCCL_INIT_BYTES
MAX_HEADROOM_FRACTION = 0.9  # a larger share would leave a device no room for a model


@dataclass(frozen=True, kw_only=True)
class Headroom:
    """Memory kept free on every device: `reserved_bytes` plus `fraction` of its capacity."""

    reserved_bytes: float = DEFAULT_HEADROOM_BYTES
    fraction: float = 0.0

    def __post_init__(self) -> None:
        if not self.reserved_bytes >= 0:
            raise SimplanError(f"memory headroom must be >= 0 bytes, got {self.reserved_bytes}")
        if not 0.0 <= self.fraction <= MAX_HEADROOM_FRACTION:
            raise SimplanError(
                f"memory headroom must be a fraction from 0 to {MAX_HEADROOM_FRACTION:.0%} of "
                f"capacity, got {self.fraction:.1%}"
            )

    def bytes_for(self, capacity_bytes: float) -> float:
        """The headroom kept on a device of `capacity_bytes`."""
        return self.reserved_bytes + self.fraction * capacity_bytes

    def usable_bytes(self, capacity_bytes: float) -> float:
        """What a plan may use of a device of `capacity_bytes`."""
        return capacity_bytes - self.bytes_for(capacity_bytes)

    def parts(self, capacity_bytes: float) -> dict[str, float]:
        """What the headroom keeps free on a device of `capacity_bytes`, by cause (bytes): the
        default's published overheads (OVERHEAD_LABELS), or what --memory-headroom gave."""
        if self.reserved_bytes == DEFAULT_HEADROOM_BYTES:
            out = {"cuda_context": CUDA_CONTEXT_BYTES, "nccl_init": NCCL_INIT_BYTES}
        else:
            out = {"reserved": self.reserved_bytes} if self.reserved_bytes else {}
        if self.fraction:
            out["share_of_capacity"] = self.fraction * capacity_bytes
        return out

    def describe(self) -> str:
        parts = []
        if self.reserved_bytes or not self.fraction:
            parts.append(f"{self.reserved_bytes / GiB:.3g} GiB")
        if self.fraction:
            parts.append(f"{self.fraction * 100:g}% of capacity")
        return " + ".join(parts)


OVERHEAD_LABELS = {
    "cuda_context": "CUDA context and kernels",
    "nccl_init": "NCCL / torch.distributed",
    "reserved": "reserved",
    "share_of_capacity": "share of capacity",
}


def describe_overheads(parts: dict[str, float]) -> str:
    """'CUDA context and kernels 0.92 GiB + NCCL / torch.distributed 2.00 GiB'."""
    return " + ".join(f"{OVERHEAD_LABELS.get(k, k)} {v / GiB:.2f} GiB" for k, v in parts.items())


NO_HEADROOM = Headroom(reserved_bytes=0.0)
DEFAULT_HEADROOM = Headroom()

_VALUE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(%|GiB)?\s*", re.ASCII)


def parse_headroom(text: str, flag: str = "--memory-headroom") -> Headroom:
    """'4' or '4GiB': 4 GiB on every device; '10%': a tenth of each device's capacity."""
    match = _VALUE.fullmatch(text)
    if not match:
        raise SimplanError(
            f"{flag} takes GiB (e.g. 4 or 4GiB) or a percentage of capacity (e.g. 10%), "
            f"got {text!r}"
        )
    value, unit = float(match.group(1)), match.group(2)
    if unit == "%":
        if value > MAX_HEADROOM_FRACTION * 100:
            raise SimplanError(
                f"{flag} {text.strip()} leaves no room for the model; give at most "
                f"{MAX_HEADROOM_FRACTION:.0%}"
            )
        return Headroom(reserved_bytes=0.0, fraction=value / 100)
    return Headroom(reserved_bytes=value * GiB)


def published_overheads_bytes() -> dict[str, float]:
    """The two overheads of the default, recomputed from the reference table: the largest
    CUDA context measured with PyTorch 2.x and the largest torch.distributed initialisation."""
    from simplan.device_fit import read_reference_csv

    rows = read_reference_csv(OVERHEADS_TABLE)

    def gib(category: str, keep: str = "") -> float:
        values = [
            float(r["value"])
            for r in rows
            if r["category"] == category and keep in r["software"] and r["unit"] == "GiB"
        ]
        if not values:
            raise SimplanError(f"{OVERHEADS_TABLE}: no {category!r} rows; reinstall simplan")
        return max(values) * GiB

    return {
        "cuda_context": gib("CUDA context + preloaded kernels", "pytorch 2."),
        "nccl_init": gib("torch.distributed / NCCL init"),
    }
