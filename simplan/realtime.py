"""Real-time scheduling of a rank's process (Linux; no torch).

gloo hands every collective to helper threads of the rank's process (its worker pool and the TCP
transport's event loop) and wakes the waiting thread when it completes. On a small machine whose
cores the ranks keep busy, the default scheduler lets a woken thread wait for a core: on 2 ranks
of a 2-core VM a 4 KiB all-reduce took 0.36 ms median but 3.66 ms at p90, and a DDP step of the
784-128-10 MLP (micro-batch 512) 4.13 ms against 2.28 ms for the same step without
communication. Under SCHED_FIFO the all-reduce took 0.13 ms (p90 0.25 ms) and the DDP step
2.84 ms (benchmarks/gloo_scheduling.py): every thread runs as soon as it is woken, the way a
device's communication engine progresses while compute keeps the device busy. The kernel
throttles real-time threads after 950 ms of every second, so a rank that computes without ever
waiting is slowed by up to 5%.

`enter_realtime()` is called by the runtime's ranks and bench-comm's ranks before they create
their process groups (threads inherit the policy); both record what they ran under, so that a
calibration and the runs it predicts can be checked to run alike. Where it is not permitted
(no CAP_SYS_NICE) nothing changes and the records say 'default'.
"""

from __future__ import annotations

import os

PRIORITY = 1  # the lowest SCHED_FIFO priority: above every normal thread, below the kernel's
DEFAULT = "default"
FIFO = "SCHED_FIFO"


def enter_realtime(enabled: bool = True, priority: int = PRIORITY) -> str:
    """SCHED_FIFO for the calling thread and the threads it starts afterwards.

    Returns the policy it runs under: 'SCHED_FIFO', or 'default' (disabled, or not
    permitted: then nothing changed)."""
    if not enabled or not hasattr(os, "sched_setscheduler"):
        return DEFAULT
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (PermissionError, OSError):
        return DEFAULT
    return FIFO
