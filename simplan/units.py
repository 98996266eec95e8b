"""Units and dtypes. Everything inside simplan is SI: seconds, bytes, FLOP, bytes/s."""

from __future__ import annotations

from simplan.errors import SimplanError

KiB = 1024
MiB = 1024**2
GiB = 1024**3
KB = 1000
MB = 1000**2
GB = 1000**3
TB = 1000**4
TFLOP = 1e12
GBIT_PER_S_IN_BPS = 1e9 / 8  # 1 Gb/s in bytes/s

DTYPE_BYTES: dict[str, int] = {"fp32": 4, "bf16": 2, "fp16": 2}


def check_dtype(dtype: str) -> str:
    """Return dtype if it is one simplan knows, else raise a one-line SimplanError."""
    if dtype not in DTYPE_BYTES:
        known = ", ".join(DTYPE_BYTES)
        raise SimplanError(f"unknown dtype {dtype!r}: use one of {known}")
    return dtype


def dtype_bytes(dtype: str) -> int:
    return DTYPE_BYTES[check_dtype(dtype)]
