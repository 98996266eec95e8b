"""Where and with what a measurement was made: the metadata every stored measurement carries.

Profiles, CPU benchmarks, bench-comm calibrations and validation records all record the same
facts about the machine (so that a stale or foreign measurement can be detected), built here;
each adds its own keys (device, dtype, repetitions, method). torch is imported only when called.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
from typing import Any


def cpu_name() -> str:
    """The host CPU's model name (/proc/cpuinfo), else what the platform says."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def environment(**extra: Any) -> dict[str, Any]:
    """torch and Python versions, host, CPU model and count, UTC date and load average, then
    the caller's `extra` keys (which win where they repeat one)."""
    import torch

    return {
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "date": utc_now(),
        "load_average": list(os.getloadavg()),
    } | extra
