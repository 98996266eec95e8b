"""Typed argparse `type=` functions: every numeric flag is checked as it is parsed.

Each is a small frozen value that argparse calls with the flag's text; a bad value raises
argparse.ArgumentTypeError, which argparse reports as `argument --flag: ...` on one usage line
(exit 2). Integers are written in decimal digits only ("2.5", "1e3" and "" are refused, never
truncated); floats must be finite and within the flag's range.
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass

from simplan.limits import MAX_DEVICES_PER_NODE, MAX_NODES

_INT = re.compile(r"[+-]?[0-9]+", re.ASCII)

# the largest values any real job has, with room to spare; beyond them a flag is a typo (the
# sizes of models, clusters and batches are simplan.limits' and simplan.parallel's)
MAX_RANKS = 1024  # processes started on this machine
MAX_STEPS = 1_000_000  # timed or warm-up steps, repeats
MAX_SECONDS = 7 * 24 * 3600.0  # a time limit or timeout: a week
MAX_FACTOR = 1e6  # a what-if scale factor


def _show(text: str) -> str:
    return repr(text) if text.strip() else "an empty value"


@dataclass(frozen=True)
class IntRange:
    """A whole number lo <= n <= hi, in decimal digits."""

    lo: int
    hi: int

    def __call__(self, text: str) -> int:
        if not _INT.fullmatch(text.strip()):
            raise argparse.ArgumentTypeError(f"expected {self.wanted()}, got {_show(text)}")
        value = int(text)
        if not self.lo <= value <= self.hi:
            raise argparse.ArgumentTypeError(f"expected {self.wanted()}, got {value}")
        return value

    def wanted(self) -> str:
        return f"a whole number from {self.lo:,} to {self.hi:,}"


@dataclass(frozen=True)
class FloatRange:
    """A finite number lo <= x <= hi (lo excluded when open_lo)."""

    lo: float
    hi: float
    open_lo: bool = False

    def __call__(self, text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {self.wanted()}, got {_show(text)}"
            ) from None
        below = value <= self.lo if self.open_lo else value < self.lo
        if not math.isfinite(value) or below or value > self.hi:
            raise argparse.ArgumentTypeError(f"expected {self.wanted()}, got {text.strip()}")
        return value

    def wanted(self) -> str:
        low = f"above {self.lo:g}" if self.open_lo else f"from {self.lo:g}"
        return f"a finite number {low} up to {self.hi:g}"


def positive_int(hi: int) -> IntRange:
    return IntRange(1, hi)


def non_negative_int(hi: int) -> IntRange:
    return IntRange(0, hi)


def positive_float(hi: float) -> FloatRange:
    return FloatRange(0.0, hi, open_lo=True)


def non_negative_float(hi: float) -> FloatRange:
    return FloatRange(0.0, hi)


@dataclass(frozen=True)
class Text:
    """A non-empty text (a name or a path): an empty one would silently mean 'not given'."""

    def __call__(self, text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError("expected a name or a path, got an empty value")
        return text


@dataclass(frozen=True)
class IntSpan:
    """N (exactly N) or LO-HI (LO <= n <= HI), whole numbers from lo to hi: (LO, HI)."""

    lo: int
    hi: int

    def __call__(self, text: str) -> tuple[int, int]:
        one = IntRange(self.lo, self.hi)
        parts = text.split("-") if not text.strip().startswith("-") else [text]
        if len(parts) not in (1, 2):
            raise argparse.ArgumentTypeError(f"expected {self.wanted()}, got {_show(text)}")
        values = [one(part) for part in parts]
        if values[0] > values[-1]:
            raise argparse.ArgumentTypeError(
                f"expected {self.wanted()}, got {text.strip()} (LO above HI)"
            )
        return values[0], values[-1]

    def wanted(self) -> str:
        return f"N or LO-HI, whole numbers from {self.lo:,} to {self.hi:,}"


@dataclass(frozen=True)
class ChoiceList:
    """A comma-separated list of some of `names` (each at most once), in the given order."""

    names: tuple[str, ...]

    def __call__(self, text: str) -> tuple[str, ...]:
        items = [item.strip() for item in text.split(",")]
        for item in items:
            if item not in self.names:
                raise argparse.ArgumentTypeError(
                    f"expected a comma-separated list of {', '.join(self.names)}, got {_show(item)}"
                )
        if len(set(items)) != len(items):
            raise argparse.ArgumentTypeError(f"{_show(text)} names one value twice")
        return tuple(items)


@dataclass(frozen=True)
class HeadroomText:
    """GiB (4, 4GiB) or a percentage of capacity (10%): a simplan.headroom.Headroom."""

    def __call__(self, text: str) -> object:
        from simplan.errors import SimplanError
        from simplan.headroom import parse_headroom

        try:
            return parse_headroom(text, flag="the headroom")
        except SimplanError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None


# the flags several verbs share
HEADROOM = HeadroomText()
HEADROOM_HELP = (
    "memory kept free on every device, in GiB (4) or as a percentage of capacity (10%%); a step "
    "fits when its peak is within capacity less this (default 2.92 GiB: CUDA context 0.92 + NCCL "
    "buffers 2.00, published measurements, see the README)"
)
NODES = positive_int(MAX_NODES)
GPUS_PER_NODE = positive_int(MAX_DEVICES_PER_NODE)
SECONDS = positive_float(MAX_SECONDS)
STEPS = positive_int(MAX_STEPS)
WARMUP = non_negative_int(MAX_STEPS)
