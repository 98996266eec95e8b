"""Chrome trace (Perfetto) of a simulated multi-task step: a process per device, a thread per
stream (compute, p2p, comm), in the format of simplan.sim.result.chrome_trace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from simplan.io import write_json_atomic
from simplan.sim.multitask import TaskStepResult

STREAMS = {"compute": 0, "comm": 1, "p2p": 2}


def task_chrome_trace(result: TaskStepResult) -> dict[str, Any]:
    events: list[dict[str, Any]] = []
    for d in result.devices:
        pid = d["device"]
        events.append(
            {
                "ph": "M",
                "name": "process_name",
                "pid": pid,
                "args": {"name": f"device {pid} ({d['role']})"},
            }
        )
        for stream, tid in STREAMS.items():
            events.append(
                {"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": stream}}
            )
    for device, stream, name, cat, start, end in result.events:
        events.append(
            {
                "ph": "X",
                "name": name,
                "cat": cat,
                "pid": device,
                "tid": STREAMS.get(stream, 1),
                "ts": start * 1e6,
                "dur": (end - start) * 1e6,
            }
        )
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
