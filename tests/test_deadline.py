"""A deadline for a whole verb: expiry, shares of the time left, and work that cannot look."""

from __future__ import annotations

import math
import threading
import time

import pytest

from simplan.deadline import Deadline, TimeLimitReached, call_before
from simplan.errors import SimplanError


def test_a_share_ends_before_the_whole_and_never_stays_never() -> None:
    whole = Deadline.after(100.0)
    half = whole.share(0.5)
    assert half.at_s < whole.at_s
    assert 49.0 < half.left_s() <= 50.0
    assert Deadline.never().share(0.5).at_s == math.inf
    assert Deadline(at_s=time.monotonic() - 1, limit_s=1).expired()
    assert Deadline(at_s=time.monotonic() - 1, limit_s=1).left_s() == 0.0


@pytest.mark.parametrize("seconds", [0.0, -1.0, math.nan])
def test_a_limit_must_be_positive(seconds: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        Deadline.after(seconds)


def test_work_that_ends_in_time_gives_its_value_or_its_error() -> None:
    soon = Deadline.after(60.0)
    assert call_before(soon, lambda: 42) == 42

    def bad() -> int:
        raise SimplanError("bad input")

    with pytest.raises(SimplanError, match="bad input"):
        call_before(soon, bad)


def test_work_past_the_deadline_is_left_behind() -> None:
    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(TimeLimitReached, match="time limit"):
        call_before(Deadline.after(0.05), lambda: release.wait(60))
    assert time.monotonic() - started < 30  # not the 60 s the work would have taken
    release.set()  # let the left-behind thread end
