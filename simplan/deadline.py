"""A time limit for a whole verb: a monotonic deadline passed down to every loop that may run long.

A verb makes one `Deadline.after(seconds)` as it starts (before loading its inputs) and passes it
down; a loop asks `expired()` between items, a solver gets `left_s()` as its own time limit, and
a phase may take only a share of what is left (`share`), so that later phases keep some time.
Everything is read from `time.monotonic()`: a clock change does not move a deadline.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from simplan.errors import SimplanError

T = TypeVar("T")

_LEFT_BEHIND: list[threading.Thread] = []  # work call_before stopped waiting for


class TimeLimitReached(SimplanError):
    """Work stopped at its deadline; the caller keeps what was done before it."""


@dataclass(frozen=True, kw_only=True)
class Deadline:
    """A point in time.monotonic() by which the work should end; `limit_s` is what was given."""

    at_s: float
    limit_s: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        """The deadline `seconds` from now (math.inf: none)."""
        if math.isnan(seconds) or seconds <= 0:
            raise ValueError(f"a time limit must be a positive number of seconds, got {seconds}")
        return cls(at_s=time.monotonic() + seconds, limit_s=seconds)

    @classmethod
    def never(cls) -> Deadline:
        return cls(at_s=math.inf, limit_s=math.inf)

    def left_s(self) -> float:
        """Seconds until the deadline (0 once it has passed)."""
        return max(self.at_s - time.monotonic(), 0.0)

    def expired(self) -> bool:
        return time.monotonic() >= self.at_s

    def share(self, fraction: float) -> Deadline:
        """A deadline for a phase that may take `fraction` of the time left now."""
        if self.at_s == math.inf:
            return self
        return Deadline(at_s=time.monotonic() + fraction * self.left_s(), limit_s=self.limit_s)


def call_before(deadline: Deadline, work: Callable[[], T]) -> T:
    """work(), or TimeLimitReached once `deadline` passes first. The work runs on a daemon
    thread, so that a step that cannot look at the clock (building a large cluster's collective
    plans, say) does not hold the caller past the deadline; left behind, it ends at its own
    next deadline check, or with the process."""
    if deadline.at_s == math.inf:
        return work()
    values: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            values.append(work())
        except BaseException as exc:  # handed to the caller below
            errors.append(exc)

    thread = threading.Thread(target=run, name="simplan-deadline", daemon=True)
    thread.start()
    thread.join(deadline.left_s())
    if thread.is_alive():
        _LEFT_BEHIND.append(thread)
        raise TimeLimitReached(f"the time limit of {deadline.limit_s:g} s stopped the work")
    if errors:
        raise errors[0]
    return values[0]


def work_left_behind() -> bool:
    """Whether work that call_before stopped waiting for is still running. The process should
    then end without the interpreter's shutdown, which can abort ("terminate called without an
    active exception") when that thread is inside a native library's initialisation, such as
    torch's first import."""
    return any(thread.is_alive() for thread in _LEFT_BEHIND)
