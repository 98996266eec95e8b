"""Small hand-made inputs for the report figures: a 2-stage SimResult with known events, plan
files, sweep points and validation records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simplan.sim.result import DeviceStats, SimResult
from simplan.units import GiB

MEM = {
    "weights": 2 * GiB,
    "grads": 2 * GiB,
    "optimizer": 8 * GiB,
    "activations": 6 * GiB,
    "buffers": 1 * GiB,
}

# rank (= stage), stream, name, category, start_s, end_s
EVENTS = (
    (0, "compute", "F0 c0", "forward", 0.00, 0.10),
    (0, "compute", "F0 c0 tp", "tp-comm", 0.10, 0.12),
    (0, "p2p", "send F0", "p2p", 0.12, 0.13),
    (0, "compute", "F1 c0 l0", "forward", 0.12, 0.17),
    (0, "compute", "wait gather l1", "wait", 0.17, 0.18),
    (0, "compute", "F1 c0 l1", "forward", 0.18, 0.22),
    (1, "compute", "F0 c1", "forward", 0.13, 0.23),
    (1, "compute", "B0 c1", "backward", 0.23, 0.43),
    (1, "compute", "F1 c1", "forward", 0.43, 0.53),
    (0, "compute", "R0 c0", "recompute", 0.45, 0.50),
    (0, "compute", "B0 c0 b0", "backward", 0.50, 0.60),
    (0, "compute", "B0 c0 b1", "backward", 0.60, 0.70),
    (0, "comm", "grad b0", "comm", 0.60, 0.68),
    (1, "compute", "B1 c1", "backward", 0.53, 0.73),
    (0, "compute", "B1 c0", "backward", 0.75, 0.95),
    (0, "compute", "wait", "wait", 0.95, 0.97),
    (0, "compute", "adam", "optimizer", 0.97, 1.00),
    (1, "compute", "adam", "optimizer", 0.80, 0.83),
)


def device(stage: int, *, fits: bool = True, name: str = "a100-80gb") -> DeviceStats:
    memory = dict(MEM)
    if not fits:
        memory["activations"] = 90 * GiB
    peak = sum(memory.values())
    return DeviceStats(
        stage=stage,
        device=8 * stage,
        device_name=name,
        compute_s=0.5 + 0.1 * stage,
        recompute_s=0.05,
        optimizer_s=0.03,
        exposed_comm_s=0.1,
        bubble_s=0.2 - 0.1 * stage,
        busy_s=0.6,
        memory=memory,
        peak_memory_bytes=peak,
        capacity_bytes=80 * GiB,
    )


def make_result(
    stages: int = 2, events: tuple = EVENTS, dp: int = 2, tp: int = 4, fits: bool = True
) -> SimResult:
    series = tuple(
        ((0.1, 1 * GiB), (0.2, 4 * GiB), (0.6, 6 * GiB), (0.9, 0.0)) for _ in range(stages)
    )
    return SimResult(
        model="toy",
        cluster="dgx-a100",
        config={
            "dp": dp,
            "tp": tp,
            "pp": stages,
            "micro_batch": 1,
            "global_batch": 4,
            "num_microbatches": 2,
            "schedule": "1f1b",
            "zero": 0,
            "recompute": "full",
            "dtype": "bf16",
        },
        step_time_s=1.0,
        samples_per_s=4.0,
        tokens_per_s=8192.0,
        model_flops_per_step=1e15,
        tflops_per_device=100.0,
        mfu=0.32,
        breakdown={
            "compute_s": 0.55,
            "exposed_comm_s": 0.1,
            "bubble_s": 0.15,
            "recompute_s": 0.05,
            "optimizer_s": 0.03,
        },
        devices=tuple(device(s, fits=fits or s > 0) for s in range(stages)),
        stage_layers=tuple((s, s + 1) for s in range(stages)),
        critical_path=("stage 1 busiest",),
        event_count=len(events),
        sim_wall_s=0.01,
        cost_sources={"model": 2},
        events=events,
        memory_series=series,
    )


@pytest.fixture
def result() -> SimResult:
    return make_result()


def validation_record(i: int, predicted: float, measured: float, strategy: str) -> dict:
    return {
        "predicted_step_s": predicted,
        "measured_step_s": measured,
        "rel_error": (predicted - measured) / measured,
        "model": "mlp" if i % 2 else "gpt",
        "strategy": strategy,
        "nprocs": 2,
        "micro_batch": 8,
        "configuration": f"run {i}",
    }


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    root.mkdir()
    rows = [
        (0.010, 0.0105, "ddp"),
        (0.020, 0.030, "fsdp"),
        (0.005, 0.0049, "tp"),
        (0.100, 0.080, "ddp"),
    ]
    for i, (p, m, s) in enumerate(rows):
        (root / f"r{i}.json").write_text(json.dumps(validation_record(i, p, m, s)))
    return root
