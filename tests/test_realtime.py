"""Real-time scheduling of a rank (simplan.realtime): what it asks for and what it reports."""

from __future__ import annotations

import os
import threading

import pytest

from simplan.realtime import DEFAULT, FIFO, enter_realtime


def _in_thread(enabled: bool) -> tuple[str, int]:
    """enter_realtime in a thread of its own (the policy is per thread: pytest's stays)."""
    out: list[tuple[str, int]] = []

    def body() -> None:
        got = enter_realtime(enabled)
        out.append((got, os.sched_getscheduler(threading.get_native_id())))

    t = threading.Thread(target=body)
    t.start()
    t.join()
    return out[0]


@pytest.mark.skipif(not hasattr(os, "sched_setscheduler"), reason="Linux scheduling only")
def test_disabled_changes_nothing() -> None:
    assert _in_thread(False) == (DEFAULT, os.SCHED_OTHER)


@pytest.mark.skipif(not hasattr(os, "sched_setscheduler"), reason="Linux scheduling only")
def test_reports_the_policy_the_thread_runs_under() -> None:
    got, policy = _in_thread(True)
    # permitted (root or CAP_SYS_NICE): FIFO; otherwise nothing changed and it says so
    assert (got, policy) in ((FIFO, os.SCHED_FIFO), (DEFAULT, os.SCHED_OTHER))
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the calling thread is untouched
