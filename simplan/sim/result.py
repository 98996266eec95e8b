"""SimResult: what one simulated training step costs, and why; JSON and Chrome-trace export."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simplan.io import write_json_atomic
from simplan.sim.engine import Event

RESULT_SCHEMA_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class DeviceStats:
    """One pipeline stage's representative device (every TP rank and DP replica of the stage
    behaves the same)."""

    stage: int
    device: int
    device_name: str
    compute_s: float
    recompute_s: float
    optimizer_s: float
    exposed_comm_s: float
    bubble_s: float
    busy_s: float
    memory: dict[str, float]  # weights, grads, optimizer, activations, buffers
    peak_memory_bytes: float
    capacity_bytes: float
    headroom_bytes: float = 0.0  # kept free (simplan.headroom): the step must fit without it
    overheads: dict[str, float] = field(default_factory=dict)  # headroom_bytes by cause
    peak_moment: str = ""  # when the peak happens (simplan.sim.peak); memory is what is live then
    saved_activation_bytes: float = 0.0  # the most activations the schedule keeps saved

    @property
    def usable_bytes(self) -> float:
        return self.capacity_bytes - self.headroom_bytes

    @property
    def fits(self) -> bool:
        return self.peak_memory_bytes <= self.usable_bytes


@dataclass(frozen=True, kw_only=True)
class SimResult:
    model: str
    cluster: str
    config: dict[str, Any]
    step_time_s: float
    samples_per_s: float
    tokens_per_s: float
    model_flops_per_step: float
    tflops_per_device: float
    mfu: float
    breakdown: dict[str, float]
    devices: tuple[DeviceStats, ...]
    stage_layers: tuple[tuple[int, int], ...]  # per chunk: [first, last) layer index
    critical_path: tuple[str, ...]
    event_count: int
    sim_wall_s: float
    cost_sources: dict[str, int]
    # micro-batches simulated one by one; fewer than the step's when the schedule's steady state
    # was extrapolated (simplan.sim.steady): totals and peaks are the whole step's, exactly,
    # and the timeline (events, memory_series) is that of the simulated micro-batches
    simulated_microbatches: int | None = None
    # local SGD (config.local_sgd > 1): its period, warm-up steps, the time of a warm-up step
    # (gradient all-reduce), a local step and a step with the model average, and the mean over
    # a period (= step_time_s; the devices' breakdown is that of a local step)
    local_sgd: dict[str, float] | None = None
    events: tuple[Event, ...] = field(default=(), repr=False, compare=False)
    memory_series: tuple[tuple[tuple[float, float], ...], ...] = field(
        default=(), repr=False, compare=False
    )
    # CPU offload of the optimizer (simplan.sim.offload): host memory, traffic and the host's
    # step; empty without offload
    offload: dict[str, Any] = field(default_factory=dict)

    @property
    def peak_memory_bytes(self) -> float:
        return max(d.peak_memory_bytes for d in self.devices)

    @property
    def fits_memory(self) -> bool:
        return all(d.fits for d in self.devices)

    @property
    def microbatches(self) -> int:
        return int(self.config.get("num_microbatches", 0))

    @property
    def extrapolated(self) -> bool:
        """True when the steady state was extrapolated from fewer simulated micro-batches."""
        simulated = self.simulated_microbatches
        return simulated is not None and simulated < self.microbatches

    def extrapolation_note(self) -> str:
        """One line saying what was simulated, or '' when every micro-batch was."""
        if not self.extrapolated:
            return ""
        return (
            f"steady state extrapolated: {self.simulated_microbatches} of {self.microbatches} "
            f"micro-batches simulated, the rest one schedule period at a time (exact)"
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON document; deterministic (no wall-clock time in it)."""
        out: dict[str, Any] = {
            "schema": {"kind": "sim-result", "version": RESULT_SCHEMA_VERSION},
            "model": self.model,
            "cluster": self.cluster,
            "config": self.config,
            "step_time_s": self.step_time_s,
            "samples_per_s": self.samples_per_s,
            "tokens_per_s": self.tokens_per_s,
            "tflops_per_device": self.tflops_per_device,
            "mfu": self.mfu,
            "peak_memory_bytes": self.peak_memory_bytes,
            "fits_memory": self.fits_memory,
            "breakdown": self.breakdown,
            "stage_layers": [list(x) for x in self.stage_layers],
            "devices": [_device_dict(d) for d in self.devices],
            "critical_path": list(self.critical_path),
            "event_count": self.event_count,
            "simulated_microbatches": self.simulated_microbatches or self.microbatches,
            "extrapolated": self.extrapolated,
            "cost_sources": self.cost_sources,
        }
        if self.offload:
            out["offload"] = self.offload
        if self.local_sgd is not None:
            out["local_sgd"] = self.local_sgd
        return out


def _device_dict(d: DeviceStats) -> dict[str, Any]:
    return {
        "stage": d.stage,
        "device": d.device,
        "device_name": d.device_name,
        "compute_s": d.compute_s,
        "recompute_s": d.recompute_s,
        "optimizer_s": d.optimizer_s,
        "exposed_comm_s": d.exposed_comm_s,
        "bubble_s": d.bubble_s,
        "busy_s": d.busy_s,
        "memory": d.memory,
        "peak_memory_bytes": d.peak_memory_bytes,
        "peak_moment": d.peak_moment,
        "saved_activation_bytes": d.saved_activation_bytes,
        "capacity_bytes": d.capacity_bytes,
        "headroom_bytes": d.headroom_bytes,
        "overheads": d.overheads,
        "fits": d.fits,
    }


def trace_events(
    processes: list[tuple[int, str]],
    streams: dict[str, int],
    spans: Any,
    other_tid: int,
) -> list[dict[str, Any]]:
    """Chrome trace events: a named process per (pid, name), a named thread per stream in each,
    and a complete event per (pid, stream, name, category, start_s, end_s) span (a stream not
    in `streams` goes to thread `other_tid`)."""
    events: list[dict[str, Any]] = []
    for pid, label in processes:
        events.append({"ph": "M", "name": "process_name", "pid": pid, "args": {"name": label}})
        for stream, tid in streams.items():
            events.append(
                {"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": stream}}
            )
    for pid, stream, name, cat, start, end in spans:
        events.append(
            {
                "ph": "X",
                "name": name,
                "cat": cat,
                "pid": pid,
                "tid": streams.get(stream, other_tid),
                "ts": start * 1e6,
                "dur": (end - start) * 1e6,
            }
        )
    return events


def chrome_trace(result: SimResult) -> dict[str, Any]:
    """Chrome trace format (opens in Perfetto): a process per stage's representative device,
    a thread per stream; events named by layer chunk, stage and micro-batch."""
    streams = {"compute": 0, "comm": 1, "p2p": 2, "tp": 3, "host": 4}  # tp: overlapped TP
    processes = [
        (d.stage, f"stage {d.stage} (device {d.device}, {d.device_name})") for d in result.devices
    ]
    events = trace_events(processes, streams, result.events, other_tid=3)
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "model": result.model,
            "cluster": result.cluster,
            "config": result.config,
            "step_time_s": result.step_time_s,
            "simulated_microbatches": result.simulated_microbatches or result.microbatches,
            "extrapolated": result.extrapolation_note(),
        },
    }


def write_trace(result: SimResult, path: str | Path) -> Path:
    return write_json_atomic(chrome_trace(result), path)
