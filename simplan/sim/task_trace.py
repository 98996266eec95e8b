"""Chrome trace (Perfetto) of a simulated multi-task step: a process per device, a thread per
stream (compute, p2p, comm), in the format of simplan.sim.result.chrome_trace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from simplan.io import write_json_atomic
from simplan.sim.multitask import TaskStepResult
from simplan.sim.result import trace_events

STREAMS = {"compute": 0, "comm": 1, "p2p": 2}


def task_chrome_trace(result: TaskStepResult) -> dict[str, Any]:
    processes = [(d["device"], f"device {d['device']} ({d['role']})") for d in result.devices]
    events = trace_events(processes, STREAMS, result.events, other_tid=1)
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "model": result.model,
            "cluster": result.cluster,
            "placement": result.placement,
            "step_time_s": result.step_s,
        },
    }


def write_task_trace(result: TaskStepResult, path: str | Path) -> Path:
    return write_json_atomic(task_chrome_trace(result), path)
