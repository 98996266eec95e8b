"""What the model knobs (pruning, quantization) change: the model before and after, and the
simulated step of one configuration before and after (time, memory, communication)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simplan.model_graph import ModelGraph
from simplan.model_knobs import split_spec
from simplan.sim.assemble import FP32, MIXED
from simplan.units import GiB, dtype_bytes


@dataclass(frozen=True, kw_only=True)
class Side:
    """One side of the comparison: the model's counts and, where simulated, its step."""

    params: int
    weight_bytes: float
    flops_per_sample: float
    grad_sync_bytes: float  # gradients each replica reduces per step
    trainable_params: int = 0  # less the frozen quantized weights (simplan.quantize)
    optimizer_bytes: float = 0.0  # the whole model's optimizer state (before ZeRO sharding)
    step_time_s: float = 0.0
    peak_memory_bytes: float = 0.0
    exposed_comm_s: float = 0.0


def side(graph: ModelGraph, config: Any, result: Any = None) -> Side:
    sim = {}
    if result is not None:
        sim = {
            "step_time_s": result.step_time_s,
            "peak_memory_bytes": result.peak_memory_bytes,
            "exposed_comm_s": result.breakdown.get("exposed_comm_s", 0.0),
        }
    per = MIXED if config.dtype in ("bf16", "fp16") else FP32
    return Side(
        params=graph.params,
        trainable_params=graph.trainable_params,
        weight_bytes=float(graph.param_bytes),
        optimizer_bytes=graph.trainable_params * per["optimizer"],
        flops_per_sample=graph.fwd_flops + graph.bwd_flops,
        grad_sync_bytes=graph.trainable_params * dtype_bytes(config.grad_reduce_dtype)
        if config.dp > 1
        else 0,
        **sim,
    )


def base_spec(spec: str) -> str:
    """The model spec without its knobs (the 'before')."""
    return split_spec(spec)[0]


def _change(before: float, after: float, scale: float, fmt: str) -> str:
    """'25.6M -> 12.9M (-49%)' from raw values divided by scale."""
    pct = f" ({after / before - 1:+.0%})" if before else ""
    return f"{fmt.format(before / scale)} -> {fmt.format(after / scale)}{pct}"


def effect_lines(spec: str, before: Side, after: Side) -> list[str]:
    """Lines for --explain: what the spec's knobs change."""
    knobs = split_spec(spec)[1]

    def change(name: str, scale: float, fmt: str) -> str:
        return _change(getattr(before, name), getattr(after, name), scale, fmt)

    lines = [
        f"model knobs ({knobs.describe()}): parameters {change('params', 1e6, '{:.3g}M')}, "
        f"weights {change('weight_bytes', 2**20, '{:.4g} MiB')}, FLOPs per sample "
        f"{change('flops_per_sample', 1e9, '{:.4g} GFLOP')}",
        f"training state: trainable parameters {change('trainable_params', 1e6, '{:.3g}M')}, "
        f"optimizer state {change('optimizer_bytes', 2**20, '{:.4g} MiB')}",
        "communication: gradient bytes each replica reduces per step "
        f"{change('grad_sync_bytes', 2**20, '{:.4g} MiB')}",
    ]
    if before.step_time_s and after.step_time_s:
        lines.append(
            f"simulated step: time {change('step_time_s', 1.0, '{:.4g} s')}, exposed "
            f"communication {change('exposed_comm_s', 1.0, '{:.3g} s')}, peak memory "
            f"{change('peak_memory_bytes', GiB, '{:.3g} GiB')}"
        )
    return lines


ROWS = (  # field, label, scale, format
    ("params", "parameters", 1e6, "{:.4g}M"),
    ("weight_bytes", "weights", 2**20, "{:.4g} MiB"),
    ("trainable_params", "trainable parameters", 1e6, "{:.4g}M"),
    ("optimizer_bytes", "optimizer state (whole model)", 2**20, "{:.4g} MiB"),
    ("flops_per_sample", "FLOPs per sample (fwd+bwd)", 1e9, "{:.4g} GFLOP"),
    ("grad_sync_bytes", "gradient bytes reduced per replica and step", 2**20, "{:.4g} MiB"),
    ("step_time_s", "simulated step time", 1e-3, "{:.4g} ms"),
    ("exposed_comm_s", "exposed communication", 1e-3, "{:.4g} ms"),
    ("peak_memory_bytes", "peak memory per device", GiB, "{:.3g} GiB"),
)


def effect_table(before: Side, after: Side) -> tuple[list[str], list[list[str]]]:
    """A before/after table (for reports): one row per quantity."""
    rows = []
    for name, label, scale, fmt in ROWS:
        b, a = getattr(before, name), getattr(after, name)
        change = f"{a / b - 1:+.1%}" if b else "-"
        rows.append([label, fmt.format(b / scale), fmt.format(a / scale), change])
    return ["", "before", "after", "change"], rows


def to_dict(before: Side, after: Side) -> dict[str, Any]:
    return {"before": before.__dict__, "after": after.__dict__}
