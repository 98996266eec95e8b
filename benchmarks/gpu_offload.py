"""CPU offload of the optimizer on one GPU: step time and peak memory with and without
`--offload optimizer`, run by the runtime, beside simplan's prediction for the same plan.

    .venv/bin/python benchmarks/gpu_offload.py [--model gpt3-1.3b] [--micro-batch 2]
        [--seq-len 2048] [--steps 5] [--warmup 2] [--cluster h200-1gpu] [--runs-dir traces/runs]
    .venv/bin/python benchmarks/gpu_offload.py --smoke     # gpt-tiny, 2 steps: seconds on CPU

What runs (simplan.runtime, one rank, fp32, one micro-batch per step): 'none' is the plain model
with torch's fused Adam on the device; 'optimizer' is FSDP2 fully_shard(offload_policy=
CPUOffloadPolicy()) on every layer, the runtime's CPU offload: the fp32 parameters, their
gradients and Adam's states live in pinned host memory, each unit's parameters are copied to the
device for its forward (and kept for its backward: one rank, ZeRO-0's reshard_after_forward=
False), its gradients back to the host, and Adam steps on the CPU. What is predicted
(simplan.sim.offload, on --cluster's host): ZeRO-Offload, which keeps the parameters and
gradients on the device and sends the gradients to the host and the parameters back once per
step. So the measured device memory is below the predicted one by about the parameters and
gradients (FSDP2 offloads them too), and the traffic is the same bytes each way once per step
with one micro-batch. Offload needs CUDA: on CPU the 'optimizer' row records the runtime's
refusal (what --smoke checks, with the prediction and the record's format).

Peak memory: torch.cuda.max_memory_allocated and max_memory_reserved over each run (reset
before it). The host's torch Adam rate is measured too (benchmarks/cpu_adam.py's method, every
core), the constant the host-CPU model takes from this project's CPU. One JSON record goes to
--runs-dir (traces/runs/<time>-gpu-offload-<model>-<id>.json) with the device, driver, torch
version and the commit of this tree; the table is printed. A full run takes under 3 minutes on
one H200.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from cpu_adam import adam_step_s  # noqa: E402
from gpu_recompute import _gib, commit, device_name, run_one_rank, write_record  # noqa: E402

from simplan.errors import SimplanError  # noqa: E402

MODES = ("none", "optimizer")
RECORD_KIND = "gpu-offload"
SMOKE = {"model": "gpt-tiny", "micro_batch": 2, "seq_len": 0, "steps": 2, "warmup": 1,
         "cluster": "h200-1gpu", "host_adam_params": 1_000_000}  # fmt: skip
RUNTIME_OFFLOADS = "parameters, gradients and optimizer states (FSDP2 CPUOffloadPolicy)"
SIMULATED_OFFLOADS = "optimizer states and fp32 master weights (ZeRO-Offload)"


@dataclass(frozen=True, kw_only=True)
class Row:
    """One mode: what it measured (or why it did not run) and what simplan predicts."""

    mode: str
    step_time_s: float | None = None
    step_s: tuple[float, ...] = ()
    max_memory_allocated_bytes: float | None = None
    max_memory_reserved_bytes: float | None = None
    predicted_step_time_s: float | None = None
    predicted_peak_bytes: float | None = None
    predicted_host_bytes: float | None = None
    predicted_d2h_bytes: float | None = None
    predicted_h2d_bytes: float | None = None
    predicted_host_optimizer_s: float | None = None
    # the predicted peak's parts (weights, grads, optimizer, activations, buffers): less weights
    # and grads, what FSDP2's CPUOffloadPolicy (which offloads them too) should approach
    predicted_memory: dict[str, float] = dataclasses.field(default_factory=dict)
    error: str = ""


def config_for(args: argparse.Namespace, mode: str) -> Any:
    """One rank, one micro-batch per step, fp32 (what the runtime trains in)."""
    from simplan.parallel import ParallelConfig

    return ParallelConfig(
        micro_batch=args.micro_batch,
        global_batch=args.micro_batch,
        seq_len=args.seq_len,
        dtype="fp32",
        offload=mode,
    )


def measure(args: argparse.Namespace, mode: str) -> Row:
    """One single-rank run of the runtime in this process, with the allocator's peaks."""
    from simplan.runtime import JobSpec

    try:
        job = JobSpec(
            model=args.model, config=config_for(args, mode), steps=args.steps,
            warmup=args.warmup, baseline_steps=0, realtime=False, timeout_s=args.timeout,
        )  # fmt: skip
    except SimplanError as exc:
        return Row(mode=mode, error=f"not run: {exc}")
    run = run_one_rank(job, "simplan-offload-")
    if run.result is None:
        return Row(mode=mode, error=run.error)
    return Row(
        mode=mode,
        step_time_s=statistics.median(run.result.step_s),
        step_s=tuple(run.result.step_s),
        max_memory_allocated_bytes=run.max_allocated_bytes,
        max_memory_reserved_bytes=run.max_reserved_bytes,
    )


def predicted(args: argparse.Namespace, row: Row) -> Row:
    """The row with simplan's step time, peak memory and offload traffic for the same plan on
    one device of --cluster."""
    from simplan.sim.run import simulate
    from simplan.topology import load_cluster

    cluster = load_cluster(args.cluster, gpus_per_node=1)
    result = simulate(args.model, cluster, config_for(args, row.mode), record=False)
    stage = result.offload["stages"][0] if result.offload else {}
    return dataclasses.replace(
        row,
        predicted_step_time_s=result.step_time_s,
        predicted_peak_bytes=float(result.peak_memory_bytes),
        predicted_host_bytes=stage.get("host_bytes"),
        predicted_d2h_bytes=stage.get("d2h_bytes"),
        predicted_h2d_bytes=stage.get("h2d_bytes"),
        predicted_host_optimizer_s=stage.get("host_optimizer_s"),
        predicted_memory=dict(result.devices[0].memory),
    )


def host_adam(params: int) -> dict[str, Any]:
    """torch's Adam on this host's every core (benchmarks/cpu_adam.py's method)."""
    import os

    import torch

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    step = adam_step_s(params, 50, 5)
    torch.set_num_threads(1)
    return {"threads": threads, "params": params, "step_s": step, "params_per_s": params / step}


def driver() -> str:
    """The CUDA driver's version as nvidia-smi reports it ('' without one)."""
    import subprocess

    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip().splitlines()[0] if done.stdout.strip() else ""


def record(args: argparse.Namespace, rows: list[Row], adam: dict[str, Any]) -> dict[str, Any]:
    import torch

    from simplan.environment import environment
    from simplan.io import schema_header

    return {
        "schema": schema_header(RECORD_KIND, 1),
        "model": args.model,
        "micro_batch": args.micro_batch,
        "seq_len": args.seq_len or None,
        "dtype": "fp32",
        "steps": args.steps,
        "warmup": args.warmup,
        "smoke": args.smoke,
        "simulated_on": args.cluster,
        "runtime_offloads": RUNTIME_OFFLOADS,
        "simulated_offloads": SIMULATED_OFFLOADS,
        "host_adam": adam,
        "meta": environment(
            device=device_name(),
            driver=driver(),
            cuda=torch.version.cuda or "",
            commit=args.commit or commit(),
        ),
        "rows": [dataclasses.asdict(r) | {"step_s": list(r.step_s)} for r in rows],
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1e3:.1f}"


def table(rows: list[Row]) -> str:
    from simplan.table import render

    body = [
        [r.mode, _ms(r.step_time_s), _gib(r.max_memory_allocated_bytes),
         _gib(r.max_memory_reserved_bytes), _ms(r.predicted_step_time_s),
         _gib(r.predicted_peak_bytes), _gib(r.predicted_host_bytes),
         _ms(r.predicted_host_optimizer_s), r.error]
        for r in rows
    ]  # fmt: skip
    heads = ["offload", "step ms", "max allocated GiB", "max reserved GiB", "sim step ms",
             "sim peak GiB", "sim host GiB", "sim host Adam ms", "note"]  # fmt: skip
    return render(heads, body)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="gpt3-1.3b", help="model spec (default gpt3-1.3b)")
    p.add_argument("--micro-batch", type=int, default=2, help="samples per step (default 2)")
    p.add_argument("--seq-len", type=int, default=2048, help="tokens per sample (0: the model's)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per mode")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--cluster", default="h200-1gpu", help="the preset simplan predicts for")
    p.add_argument(
        "--host-adam-params", type=int, default=50_000_000,
        help="parameters of the host Adam measurement (default 50M)",
    )  # fmt: skip
    p.add_argument(
        "--runs-dir", default=str(ROOT / "traces" / "runs"), help="where the record goes"
    )
    p.add_argument("--timeout", type=float, default=600.0, help="seconds a step may take")
    p.add_argument(
        "--commit", default="",
        help="the commit to record where this tree is not a git checkout (default: git's HEAD)",
    )  # fmt: skip
    p.add_argument("--smoke", action="store_true", help="gpt-tiny, 2 steps: a check in seconds")
    args = p.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    if min(args.micro_batch, args.steps, args.host_adam_params) < 1 or args.warmup < 0:
        p.error("--micro-batch, --steps and --host-adam-params must be >= 1, --warmup >= 0")
    if args.seq_len < 0:
        p.error("--seq-len must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        rows = [predicted(args, measure(args, mode)) for mode in MODES]
    except SimplanError as exc:
        print(f"gpu_offload: error: {exc}", file=sys.stderr)
        return 2
    adam = host_adam(args.host_adam_params)
    path = write_record(record(args, rows, adam), Path(args.runs_dir), RECORD_KIND)
    print(f"{args.model} on {device_name()}, fp32, {args.steps} timed steps per mode")
    print(table(rows))
    print(
        f"host Adam: {adam['params_per_s'] / 1e6:.0f} M parameters/s on {adam['threads']} threads"
    )
    print(f"runtime offloads {RUNTIME_OFFLOADS}; simplan predicts {SIMULATED_OFFLOADS}")
    print(f"wrote {path}")
    return 0 if any(r.step_time_s for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
