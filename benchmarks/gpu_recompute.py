"""Activation recomputation on one GPU: step time and peak memory of the demo plan's model with
recomputation none, selective (the attention core), op (per-op checkpointing of every block) and
full (every block), run by the runtime.

    .venv/bin/python benchmarks/gpu_recompute.py [--model gpt3-1.3b] [--micro-batch 8]
        [--steps 10] [--warmup 3] [--dtype fp32] [--modes none,selective,op,full]
        [--runs-dir traces/runs]
    .venv/bin/python benchmarks/gpu_recompute.py --smoke      # gpt-tiny, 2 steps, seconds on CPU

The model is the one `simplan demo` plans (GPT-3 1.3B, sequence 2048). It is scaled to one GPU by
its micro-batch: starting at --micro-batch, halved until the step without recomputation fits the
device; every mode then runs at that micro-batch, so that the rows differ only in recomputation.
Each mode is one single-rank run of simplan.runtime (its worker's `train`, in this process, so
that the CUDA allocator's peaks can be read after it): --warmup untimed steps, then --steps timed
ones; step time is their median. Peak memory: torch.cuda.max_memory_allocated and
max_memory_reserved over the run (reset before each mode), beside the tensor memory the runtime
measures in its last warm-up step (RankResult.tracked_peak_bytes and the phase of its peak; on
CPU the only figure). A mode the runtime does not
run, or that runs out of memory, is a row with the reason.

Writes one JSON record to --runs-dir (traces/runs/<time>-gpu-recompute-<model>-<id>.json) with
the device, torch version, the commit of this tree and the rows; prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import statistics
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simplan.errors import SimplanError  # noqa: E402
from simplan.units import GiB  # noqa: E402

MODES = ("none", "selective", "op", "full")
DEMO_MODEL = "gpt3-1.3b"  # simplan/commands/demo.py plans this model
SMOKE = {"model": "gpt-tiny", "micro_batch": 2, "steps": 2, "warmup": 1, "cluster": "localhost-cpu"}
RECORD_KIND = "gpu-recompute"


@dataclass(frozen=True, kw_only=True)
class Row:
    """One recomputation mode: what it measured, or why it did not run."""

    mode: str
    micro_batch: int
    step_time_s: float | None = None
    step_s: tuple[float, ...] = ()
    max_memory_allocated_bytes: float | None = None
    max_memory_reserved_bytes: float | None = None
    runtime_peak_bytes: float | None = None  # live tensor bytes at the step's peak (the probe's)
    runtime_peak_phase: str = ""
    predicted_step_time_s: float | None = None
    predicted_peak_bytes: float | None = None
    error: str = ""


def commit() -> str:
    """This tree's commit ('+dirty' with uncommitted changes; 'unknown' outside git)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def job_config(args: argparse.Namespace, mode: str, micro_batch: int) -> Any:
    """One rank, one micro-batch per step, `mode` recomputation."""
    from simplan.parallel import ParallelConfig

    return ParallelConfig(
        dp=1,
        micro_batch=micro_batch,
        global_batch=micro_batch,
        recompute=mode,
        dtype=args.dtype,
        seq_len=args.seq_len,
    )


def job_for(args: argparse.Namespace, mode: str, micro_batch: int) -> Any:
    """The runtime's job: one rank, `mode` recomputation (a SimplanError if it refuses)."""
    from simplan.runtime import JobSpec

    return JobSpec(
        model=args.model,
        config=job_config(args, mode, micro_batch),
        steps=args.steps,
        warmup=args.warmup,
        baseline_steps=0,  # the unsplit model's passes would set the peak, not the mode's
        realtime=False,
        timeout_s=args.timeout,
    )


@dataclass(frozen=True)
class OneRank:
    """A single-rank run of the runtime: its result (None when it failed, `error` says why) and
    the CUDA allocator's peaks (None on the CPU)."""

    result: Any
    error: str = ""
    max_allocated_bytes: float | None = None
    max_reserved_bytes: float | None = None


def run_one_rank(job: Any, prefix: str) -> OneRank:
    """One single-rank run of the runtime in this process, with the allocator's peaks."""
    import torch

    from simplan.ranks import free_port
    from simplan.runtime.worker import train

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        try:
            result = train(0, 1, f"tcp://127.0.0.1:{free_port()}", job, Path(tmp))
        except torch.OutOfMemoryError:
            return OneRank(result=None, error="out of memory")
        except SimplanError as exc:
            return OneRank(result=None, error=f"not run: {exc}")
        finally:
            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
    return OneRank(
        result=result,
        max_allocated_bytes=float(torch.cuda.max_memory_allocated()) if cuda else None,
        max_reserved_bytes=float(torch.cuda.max_memory_reserved()) if cuda else None,
    )


def measure(args: argparse.Namespace, mode: str, micro_batch: int) -> Row:
    """One single-rank run of the runtime in this process, with the allocator's peaks."""
    try:
        job = job_for(args, mode, micro_batch)
    except SimplanError as exc:
        return Row(mode=mode, micro_batch=micro_batch, error=f"not run: {exc}")
    run = run_one_rank(job, "simplan-recompute-")
    if run.result is None:
        return Row(mode=mode, micro_batch=micro_batch, error=run.error)
    return Row(
        mode=mode,
        micro_batch=micro_batch,
        step_time_s=statistics.median(run.result.step_s),
        step_s=tuple(run.result.step_s),
        max_memory_allocated_bytes=run.max_allocated_bytes,
        max_memory_reserved_bytes=run.max_reserved_bytes,
        runtime_peak_bytes=float(run.result.tracked_peak_bytes) or None,
        runtime_peak_phase=run.result.peak_phase,
    )


def predicted(args: argparse.Namespace, row: Row) -> Row:
    """The row with the simulator's step time and peak memory for the same configuration on
    one device of --cluster."""
    from simplan.sim.run import simulate
    from simplan.topology import load_cluster

    config = job_config(args, row.mode, row.micro_batch)
    result = simulate(args.model, load_cluster(args.cluster, gpus_per_node=1), config, record=False)
    return dataclasses.replace(
        row,
        predicted_step_time_s=result.step_time_s,
        predicted_peak_bytes=float(result.peak_memory_bytes),
    )


def measure_modes(args: argparse.Namespace) -> list[Row]:
    """Every mode at the largest micro-batch (from args.micro_batch, halving) whose step without
    recomputation fits; the modes asked for (args.modes), in MODES order. Needs torch and the
    runtime only (benchmarks/gpu_check.py runs it where the simulator is not installed)."""
    micro_batch = args.micro_batch
    first = measure(args, "none", micro_batch)
    while first.error == "out of memory" and micro_batch > 1:
        micro_batch //= 2
        first = measure(args, "none", micro_batch)
    rows = [first] if "none" in args.modes else []
    return rows + [measure(args, mode, micro_batch) for mode in args.modes if mode != "none"]


def run_modes(args: argparse.Namespace) -> list[Row]:
    """measure_modes, each row beside the simulator's prediction."""
    return [predicted(args, r) for r in measure_modes(args)]


def device_name() -> str:
    import torch

    from simplan.environment import cpu_name

    return torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu: {cpu_name()}"


def record(args: argparse.Namespace, rows: list[Row]) -> dict[str, Any]:
    from simplan.environment import environment
    from simplan.io import schema_header

    return {
        "schema": schema_header(RECORD_KIND, 1),
        "model": args.model,
        "seq_len": args.seq_len or None,
        "dtype": args.dtype,
        "steps": args.steps,
        "warmup": args.warmup,
        "smoke": args.smoke,
        "simulated_on": args.cluster,
        "meta": environment(device=device_name(), commit=args.commit or commit()),
        "rows": [dataclasses.asdict(r) | {"step_s": list(r.step_s)} for r in rows],
    }


def write_record(doc: dict[str, Any], runs_dir: Path, kind: str = RECORD_KIND) -> Path:
    """The record under runs_dir, named by time, kind and model (written atomically)."""
    from simplan.outputs import write_json_atomic

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    path = runs_dir / f"{stamp}-{kind}-{doc['model']}-{uuid.uuid4().hex[:8]}.json"
    return write_json_atomic(doc, path)


def _gib(value: float | None) -> str:
    return "-" if value is None else f"{value / GiB:.2f}"


def table(rows: list[Row]) -> str:
    from simplan.table import render

    none = next((r for r in rows if r.mode == "none" and r.step_time_s), None)
    body = []
    for r in rows:
        slower = (
            f"{r.step_time_s / none.step_time_s:.2f}x"
            if none is not None and none.step_time_s and r.step_time_s
            else "-"
        )
        body.append(
            [
                r.mode,
                str(r.micro_batch),
                "-" if r.step_time_s is None else f"{r.step_time_s * 1e3:.1f}",
                slower,
                _gib(r.max_memory_allocated_bytes),
                _gib(r.max_memory_reserved_bytes),
                _gib(r.runtime_peak_bytes),
                r.runtime_peak_phase or "-",
                "-" if r.predicted_step_time_s is None else f"{r.predicted_step_time_s * 1e3:.1f}",
                _gib(r.predicted_peak_bytes),
                r.error,
            ]
        )
    heads = ["recompute", "mb", "step ms", "vs none", "max allocated GiB", "max reserved GiB",
             "runtime peak GiB", "peak phase", "simulated step ms", "simulated peak GiB",
             "note"]  # fmt: skip
    return render(heads, body)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default=DEMO_MODEL, help=f"model spec (default {DEMO_MODEL})")
    p.add_argument("--micro-batch", type=int, default=8, help="the first micro-batch tried")
    p.add_argument("--seq-len", type=int, default=0, help="tokens per sample (0: the model's)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per mode")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "fp16"))
    p.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated, of " + ", ".join(MODES)
    )
    p.add_argument(
        "--runs-dir", default=str(ROOT / "traces" / "runs"), help="where the record goes"
    )
    p.add_argument(
        "--cluster",
        default="h200-1gpu",
        help="the cluster preset whose device the simulator predicts for (default h200-1gpu)",
    )
    p.add_argument("--timeout", type=float, default=600.0, help="seconds a step may take")
    p.add_argument(
        "--commit",
        default="",
        help="the commit to record where this tree is not a git checkout (default: git's HEAD)",
    )
    p.add_argument("--smoke", action="store_true", help="gpt-tiny, 2 steps: a check in seconds")
    args = p.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    args.modes = tuple(m for m in MODES if m in args.modes.split(","))
    unknown = set(p.parse_args(argv).modes.split(",")) - set(MODES)
    if unknown or not args.modes:
        p.error(f"--modes takes some of {', '.join(MODES)}, got {', '.join(sorted(unknown))}")
    if min(args.micro_batch, args.steps) < 1 or args.warmup < 0 or args.seq_len < 0:
        p.error("--micro-batch and --steps must be >= 1, --warmup and --seq-len >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        rows = run_modes(args)
    except SimplanError as exc:
        print(f"gpu_recompute: error: {exc}", file=sys.stderr)
        return 2
    path = write_record(record(args, rows), Path(args.runs_dir))
    print(f"{args.model} on {device_name()}, {args.dtype}, {args.steps} timed steps per mode")
    print(table(rows))
    print(f"wrote {path}")
    return 0 if any(r.step_time_s for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
