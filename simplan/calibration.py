"""Derive the GPU device models' GEMM efficiency from a published single-GPU measurement.

Reference: ../shared/reference/megatron_2020_gpt2_model_parallel_scaling.csv, the row
`model-parallel weak scaling, 1B, DGX-A100, 1 GPU`: GPT-2 with hidden 1920, 15 heads, 24 layers,
seq 1024, vocab 51200, batch 16 on one A100, 1076 ms per iteration, trained with activation
checkpointing (Megatron-LM's GPT-2 scripts of 2020), i.e. per sample a forward pass, a recomputed
forward pass and a backward pass, plus the optimizer step. With the memory-bound operations and
per-kernel overhead taken from the device model, the step time is G / e + R, where G is the time
of the matrix work at peak and R the rest; e = G / (1076 ms - R). The A100's e is used for every
GPU preset (the same cuBLAS/CUTLASS kernel families run on Hopper) until a profile of the target
GPU replaces the model.

Run `python benchmarks/calibrate_devices.py` to re-derive and store it in
simplan/data/gpu_calibration.json.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import Any

from simplan.costmodel import optimizer_step_s, pass_time_s
from simplan.devices import DeviceModel
from simplan.errors import SimplanError
from simplan.graph import ModelGraph, OpCost
from simplan.spec import TransformerSpec

REFERENCE_FILE = "megatron_2020_gpt2_model_parallel_scaling.csv"
CALIBRATION_FILE = Path(__file__).resolve().parent / "data" / "gpu_calibration.json"


def reference_dir() -> Path:
    import os

    env = os.environ.get("SIMPLAN_REFERENCE_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "reference"


def read_reference_csv(name: str) -> list[dict[str, str]]:
    path = reference_dir() / name
    if not path.is_file():
        raise SimplanError(f"{path}: reference table not found; set SIMPLAN_REFERENCE_DIR")
    with path.open() as handle:
        lines = [line for line in handle if not line.startswith("#")]
    return list(csv.DictReader(lines))


def single_a100_row() -> dict[str, str]:
    for row in read_reference_csv(REFERENCE_FILE):
        if row["system"] == "DGX-A100" and row["num_gpus"] == "1":
            return row
    raise SimplanError(f"{REFERENCE_FILE}: no single DGX-A100 row")


def spec_of(row: dict[str, str]) -> TransformerSpec:
    return TransformerSpec(
        name=f"gpt2-{row['case'].lower()}",
        hidden_size=int(row["hidden_size"]),
        num_heads=int(row["attention_heads"]),
        num_layers=int(row["num_layers"]),
        seq_len=int(row["seq_len"]),
        vocab_size=51200,
        activation="gelu",
        tie_embeddings=True,
    )


def _gemm_only(ops: OpCost) -> OpCost:
    return OpCost(gemms=ops.gemms)


def _mem_only(ops: OpCost) -> OpCost:
    return dataclasses.replace(ops, gemms=())


def recompute_step_parts(
    graph: ModelGraph, device: DeviceModel, dtype: str, batch: int
) -> tuple[float, float]:
    """(G, R): matrix work at peak (efficiency 1) and everything else, for one step."""
    ideal = dataclasses.replace(device, gemm_efficiency=1.0, kernel_overhead_s=0.0)
    g = r = 0.0
    for layer in graph.layers:
        for ops, passes in ((layer.fwd_ops, 2), (layer.bwd_ops, 1)):
            g += passes * pass_time_s(_gemm_only(ops), ideal, dtype, batch)
            calls = ops.gemm_calls * device.kernel_overhead_s
            r += passes * (pass_time_s(_mem_only(ops), device, dtype, batch) + calls)
    return g, r + optimizer_step_s(graph.params, device, dtype)


def derive_gemm_efficiency(a100: DeviceModel) -> dict[str, Any]:
    from simplan.build import graph_from_spec

    row = single_a100_row()
    graph = graph_from_spec(spec_of(row), dtype="fp16")
    batch = int(row["global_batch_size"])
    measured = float(row["iteration_time_ms"]) / 1e3
    g, r = recompute_step_parts(graph, a100, "fp16", batch)
    if measured <= r:
        raise SimplanError("calibration: the non-GEMM time alone exceeds the measured step")
    efficiency = g / (measured - r)
    return {
        "gemm_efficiency": round(efficiency, 4),
        "source": (
            f"../shared/reference/{REFERENCE_FILE}: DGX-A100 1 GPU, GPT-2 {row['case']} "
            f"(h {row['hidden_size']}, {row['num_layers']} layers, seq {row['seq_len']}, "
            f"batch {batch}), {row['iteration_time_ms']} ms/iteration with activation "
            f"recomputation; e = G/(T - R) with G = {g * 1e3:.1f} ms of GEMM at peak and "
            f"R = {r * 1e3:.1f} ms of memory-bound work, kernel overhead and Adam"
        ),
        "derived_by": "benchmarks/calibrate_devices.py (simplan.calibration)",
    }
