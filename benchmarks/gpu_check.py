"""GPU check kit: one command that measures what simplan's device models and memory model assume,
on one GPU, in under 8 minutes, and records it under traces/gpu_check/.

    python benchmarks/gpu_check.py                 # on a GPU (needs torch only: no simpy, pulp)
    python benchmarks/gpu_check.py --cpu-smoke     # tiny shapes on the CPU: the code paths, seconds

It measures, in this order (a part that would pass --budget-s is recorded as skipped):

1. memory the CUDA context takes before any tensor (total - free after initialisation), the
   figure simplan.headroom takes from simplan/data/reference/memory_overheads.csv;
2. a GEMM sweep: the projections of a transformer layer, (tokens x 3h x h), (tokens x 4h x h)
   and (tokens x h x 4h), for hidden sizes on and off the tile multiples, in bf16 and in FP8
   (torch._scaled_mm, where the GPU has FP8 tensor cores): median time and achieved TFLOP/s;
3. per-layer profiles of gpt3-1.3b and llama3-8b in bf16 (simplan.timing.measure: each distinct
   layer's forward and backward; a one-block stand-in where the whole model does not fit), and
   one block of each in FP8 through torchao's float8 training where torchao is installed;
4. a few real single-GPU training steps of gpt3-1.3b with each recomputation mode (none,
   selective, full) through simplan's runtime, with the allocator's peaks (allocated and
   reserved), reusing benchmarks/gpu_recompute.py.

The record (schema kind 'gpu-check') carries the device name, driver, CUDA and torch versions
and the date; the profiles are also written as simplan profiles beside it, for
`simplan simulate --profile`. Back where simplan is installed,

    python benchmarks/gpu_check.py --compare traces/gpu_check/RECORD.json [--cluster h200-1gpu]

prints the record's GEMMs beside the device model's roofline and its training steps beside
simulate()'s step time and peak memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_recompute  # noqa: E402

from simplan.errors import SimplanError  # noqa: E402

RECORD_KIND = "gpu-check"
FP8_CAPABILITY = (8, 9)  # Ada / Hopper and later have FP8 tensor cores


@dataclass(frozen=True, kw_only=True)
class Settings:
    """What one run measures."""

    device: str
    hidden_sizes: tuple[int, ...]  # on and off the tile multiples (128 / 256)
    tokens: int  # rows of every GEMM: micro-batch x sequence
    gemm_dtypes: tuple[str, ...]
    repeats: int
    warmup: int
    profile_models: tuple[str, ...]
    profile_micro_batch: int
    dtype: str  # of the profiles and the training steps
    train_model: str
    train_micro_batch: int
    train_steps: int
    train_warmup: int
    budget_s: float


GPU = Settings(
    device="cuda",
    hidden_sizes=(2048, 4096, 5120, 8192, 12288, 2000, 4000, 5000, 6100, 8200),
    tokens=8192,
    gemm_dtypes=("bf16", "fp8"),
    repeats=10,
    warmup=3,
    profile_models=("gpt3-1.3b", "llama3-8b"),
    profile_micro_batch=2,
    dtype="bf16",
    train_model="gpt3-1.3b",
    train_micro_batch=8,
    train_steps=5,
    train_warmup=2,
    budget_s=420.0,
)
CPU_SMOKE = Settings(
    device="cpu",
    hidden_sizes=(64, 100),
    tokens=64,
    gemm_dtypes=("fp32", "bf16", "fp8"),
    repeats=2,
    warmup=1,
    profile_models=("gpt-tiny",),
    profile_micro_batch=1,
    dtype="fp32",
    train_model="gpt-tiny",
    train_micro_batch=2,
    train_steps=1,
    train_warmup=1,
    budget_s=120.0,
)


@dataclass(frozen=True, kw_only=True)
class GemmRow:
    m: int
    n: int
    k: int
    dtype: str
    time_s: float | None = None
    tflops: float | None = None
    error: str = ""


class Budget:
    """Seconds left for the parts still to run."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left_s(self) -> float:
        return self.end - time.monotonic()


def synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def timed_s(fn: Callable[[], Any], device: str, warmup: int, repeats: int) -> float:
    """Median seconds of fn() after `warmup` untimed calls (CUDA events on a GPU)."""
    import torch

    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        if device == "cuda":
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            samples.append(start.elapsed_time(stop) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def fp8_unsupported(device: str) -> str:
    """Why FP8 matrix products cannot run here ('' when they can; torch runs them on the CPU
    too, slowly, which lets --cpu-smoke check the path)."""
    import torch

    if device == "cuda" and torch.cuda.get_device_capability() < FP8_CAPABILITY:
        return f"skipped: FP8 needs compute capability >= {FP8_CAPABILITY}"
    return ""


def gemm_fn(m: int, n: int, k: int, dtype: str, device: str) -> Callable[[], Any]:
    """A (m x k) @ (k x n) product in `dtype`; FP8 (e4m3, per-tensor scales, bf16 out) through
    torch._scaled_mm, which wants the second operand column-major."""
    import torch

    if dtype == "fp8":
        a = torch.randn(m, k, device=device).to(torch.float8_e4m3fn)
        b = torch.randn(n, k, device=device).to(torch.float8_e4m3fn).t()
        one = torch.ones((), device=device)
        return lambda: torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    kind = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    a = torch.randn(m, k, device=device, dtype=kind)
    b = torch.randn(k, n, device=device, dtype=kind)
    return lambda: a @ b


def gemm_row(m: int, n: int, k: int, dtype: str, s: Settings) -> GemmRow:
    why = fp8_unsupported(s.device) if dtype == "fp8" else ""
    if why:
        return GemmRow(m=m, n=n, k=k, dtype=dtype, error=why)
    try:
        seconds = timed_s(gemm_fn(m, n, k, dtype, s.device), s.device, s.warmup, s.repeats)
    except (RuntimeError, ValueError) as exc:  # e.g. FP8 shapes off its multiples of 16
        return GemmRow(m=m, n=n, k=k, dtype=dtype, error=f"not run: {str(exc).splitlines()[0]}")
    return GemmRow(
        m=m, n=n, k=k, dtype=dtype, time_s=seconds, tflops=2.0 * m * n * k / seconds / 1e12
    )


def gemm_sweep(s: Settings) -> list[GemmRow]:
    """The three projection shapes of a layer of each hidden size, in each dtype."""
    rows = []
    for h in s.hidden_sizes:
        for n, k in ((3 * h, h), (4 * h, h), (h, 4 * h)):
            rows += [gemm_row(s.tokens, n, k, dtype, s) for dtype in s.gemm_dtypes]
    return rows


def profile_model(model: str, s: Settings, out_dir: Path) -> dict[str, Any]:
    """simplan's per-layer profile of `model` (written beside the record), or why not."""
    from simplan.profiles import write_profile
    from simplan.timing import measure

    try:
        profile = measure(
            model, device=s.device, micro_batch=s.profile_micro_batch, dtype=s.dtype,
            warmup=s.warmup, repeats=s.repeats,
        )  # fmt: skip
    except (SimplanError, RuntimeError) as exc:
        return {"model": model, "error": f"not run: {str(exc).splitlines()[0]}"}
    path = write_profile(profile, out_dir / "profiles" / f"{model}-{s.dtype}.json")
    return {"model": model, "path": str(path), "profile": profile.to_dict()}


def fp8_block(model: str, s: Settings) -> dict[str, Any]:
    """One block of `model` (a one-layer model of its shape), forward + backward, in bf16 and
    then converted by torchao's float8 training (tensorwise scaling): median seconds of each."""
    why = fp8_unsupported(s.device)
    if why:
        return {"model": model, "error": why}
    try:
        from torchao.float8 import convert_to_float8_training
    except ImportError:
        return {"model": model, "error": "skipped: torchao is not installed"}
    try:
        step, module = _one_block_step(model, s)
        bf16_s = timed_s(step, s.device, s.warmup, s.repeats)
        convert_to_float8_training(module)
        fp8_s = timed_s(step, s.device, s.warmup, s.repeats)
    except (RuntimeError, ValueError, SimplanError) as exc:
        return {"model": model, "error": f"not run: {str(exc).splitlines()[0]}"}
    return {"model": model, "bf16_s": bf16_s, "fp8_s": fp8_s, "speedup": bf16_s / fp8_s}


def _one_block_step(model: str, s: Settings) -> tuple[Callable[[], Any], Any]:
    from simplan.build import instantiate
    from simplan.module_layers import tensors_in
    from simplan.sources import resolve, transformer_spec
    from simplan.timing import loss_targets, training_loss

    source = resolve(model)
    tspec = dataclasses.replace(transformer_spec(source), num_layers=1)
    module, inputs = instantiate(
        source, tspec, batch=s.profile_micro_batch, seq_len=None, device=s.device, dtype="bf16"
    )
    targets = loss_targets(module, inputs)

    def step() -> None:
        training_loss(tensors_in(module(*inputs)), targets).backward()

    return step, module


def train_steps(s: Settings) -> list[dict[str, Any]]:
    """Single-GPU training steps of s.train_model with each recomputation mode (the runtime,
    through benchmarks/gpu_recompute.py), with the allocator's peaks."""
    args = argparse.Namespace(
        model=s.train_model, micro_batch=s.train_micro_batch, seq_len=0, steps=s.train_steps,
        warmup=s.train_warmup, dtype=s.dtype, modes=gpu_recompute.MODES, timeout=600.0,
    )  # fmt: skip
    rows = gpu_recompute.measure_modes(args)
    return [dataclasses.asdict(r) | {"step_s": list(r.step_s)} for r in rows]


def context_memory(device: str) -> dict[str, float | None]:
    """Device memory in use once CUDA is initialised and before any tensor: the CUDA context
    and preloaded kernels (what memory_overheads.csv measures as total - free)."""
    import torch

    if device != "cuda":
        return {"total_bytes": None, "context_bytes": None}
    torch.cuda.init()
    torch.zeros(1, device="cuda")
    free, total = torch.cuda.mem_get_info()
    return {"total_bytes": float(total), "context_bytes": float(total - free)}


def driver_version() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.strip().splitlines()[0] if out.strip() else "unknown"


def metadata(s: Settings, commit: str) -> dict[str, Any]:
    import torch

    from simplan.environment import environment

    cuda = s.device == "cuda"
    return environment(
        device=gpu_recompute.device_name(),
        driver=driver_version() if cuda else "none",
        cuda=torch.version.cuda or "none",
        capability=list(torch.cuda.get_device_capability()) if cuda else None,
        commit=commit or gpu_recompute.commit(),
    )


PARTS = ("gemm", "profiles", "fp8_blocks", "training")


def run_part(name: str, s: Settings, out_dir: Path) -> Any:
    if name == "gemm":
        return [dataclasses.asdict(r) for r in gemm_sweep(s)]
    if name == "profiles":
        return [profile_model(m, s, out_dir) for m in s.profile_models]
    if name == "fp8_blocks":
        return [fp8_block(m, s) for m in s.profile_models]
    return train_steps(s)


def check(s: Settings, out_dir: Path, commit: str = "") -> dict[str, Any]:
    """Every part within the budget; a part reached past it is recorded as skipped."""
    from simplan.io import schema_header

    budget = Budget(s.budget_s)
    doc: dict[str, Any] = {
        "schema": schema_header(RECORD_KIND, 1),
        "settings": dataclasses.asdict(s),
        "meta": metadata(s, commit),
        "memory": context_memory(s.device),
    }
    for name in PARTS:
        started = time.monotonic()
        if budget.left_s() <= 0:
            doc[name] = {"error": f"skipped: past the {s.budget_s:.0f} s budget"}
            continue
        doc[name] = run_part(name, s, out_dir)
        doc.setdefault("elapsed_s", {})[name] = time.monotonic() - started
    return doc


def write_record(doc: dict[str, Any], out_dir: Path) -> Path:
    from simplan.outputs import write_json_atomic
    from simplan.profiles import slug

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    return write_json_atomic(
        doc, out_dir / f"{stamp}-{RECORD_KIND}-{slug(doc['meta']['device'])}.json"
    )


def summary(doc: dict[str, Any]) -> str:
    """A few lines: the device, the best GEMM per dtype, the recomputation rows."""
    meta = doc["meta"]
    lines = [f"{meta['device']}: torch {meta['torch_version']}, CUDA {meta['cuda']}, "
             f"driver {meta['driver']}"]  # fmt: skip
    gemms = doc["gemm"] if isinstance(doc["gemm"], list) else []
    for dtype in sorted({g["dtype"] for g in gemms}):
        done = [g for g in gemms if g["dtype"] == dtype and g["tflops"]]
        best = max(done, key=lambda g: g["tflops"], default=None)
        lines.append(
            f"gemm {dtype}: {len(done)} of {sum(g['dtype'] == dtype for g in gemms)} shapes ran"
            + (f", best {best['tflops']:.1f} TFLOP/s at {best['m']}x{best['n']}x{best['k']}"
               if best else "")
        )  # fmt: skip
    for row in doc["training"] if isinstance(doc["training"], list) else []:
        step = row["step_time_s"]
        lines.append(
            f"train recompute={row['mode']}: "
            + (f"{step * 1e3:.1f} ms/step" if step else row["error"])
        )
    return "\n".join(lines)


def gemm_table(rows: list[dict[str, Any]], device: Any) -> str:
    """Measured GEMM TFLOP/s beside the device model's roofline for the same product."""
    from simplan.table import render
    from simplan.units import DTYPE_BYTES

    body = []
    for g in rows:
        if not g["time_s"] or g["dtype"] not in DTYPE_BYTES:  # no FP8 device model yet
            continue
        m, n, k, flops = g["m"], g["n"], g["k"], 2.0 * g["m"] * g["n"] * g["k"]
        nbytes = (m * k + k * n + m * n) * DTYPE_BYTES[g["dtype"]]
        model_s = device.roofline_time_s(flops, nbytes, g["dtype"])
        body.append([f"{m}x{n}x{k}", g["dtype"], f"{g['tflops']:.3g}",
                     f"{flops / model_s / 1e12:.3g}", f"{model_s / g['time_s']:.3g}"])  # fmt: skip
    heads = ["m x n x k", "dtype", "measured TFLOP/s", f"{device.name} model TFLOP/s",
             "model / measured time"]  # fmt: skip
    return render(heads, body)


def compare(path: Path, cluster: str) -> str:
    """A record's GEMMs and training steps beside simplan's predictions for one device of
    `cluster` (the device model's roofline; simulate() of the same single-device step). Needs
    the simulator: run it where simplan is installed, on a record brought back from the GPU."""
    import json

    from simplan.topology import load_cluster

    doc = json.loads(path.read_text(encoding="utf-8"))
    one = load_cluster(cluster, gpus_per_node=1)
    out = [f"{doc['meta']['device']} against {cluster} ({one.device_model(0).name})"]
    if isinstance(doc.get("gemm"), list):
        out.append(gemm_table(doc["gemm"], one.device_model(0)))
    if isinstance(doc.get("training"), list):
        s = doc["settings"]
        args = argparse.Namespace(model=s["train_model"], dtype=s["dtype"], seq_len=0,
                                  cluster=cluster)  # fmt: skip
        rows = [gpu_recompute.Row(**(r | {"step_s": tuple(r["step_s"])})) for r in doc["training"]]
        rows = [r if r.error else gpu_recompute.predicted(args, r) for r in rows]
        out.append(gpu_recompute.table(rows))
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on the CPU, seconds")
    p.add_argument(
        "--out-dir", default=str(ROOT / "traces" / "gpu_check"), help="where the record goes"
    )
    p.add_argument("--budget-s", type=float, default=0.0, help="seconds for all parts (0: 420)")
    p.add_argument("--commit", default="", help="the commit to record outside a git checkout")
    p.add_argument(
        "--compare",
        metavar="RECORD",
        default="",
        help="measure nothing: print RECORD beside simplan's predictions (needs the simulator)",
    )
    p.add_argument(
        "--cluster",
        default="h200-1gpu",
        help="with --compare: the preset whose device predicts (default h200-1gpu)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.compare:
        try:
            print(compare(Path(args.compare), args.cluster))
        except (SimplanError, OSError, ValueError, KeyError) as exc:
            print(f"gpu_check: error: {args.compare}: {exc}", file=sys.stderr)
            return 2
        return 0
    s = CPU_SMOKE if args.cpu_smoke else GPU
    if args.budget_s:
        s = dataclasses.replace(s, budget_s=args.budget_s)
    if s.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("gpu_check: error: no CUDA device here; use --cpu-smoke", file=sys.stderr)
            return 2
    out_dir = Path(args.out_dir)
    doc = check(s, out_dir, args.commit)
    path = write_record(doc, out_dir)
    print(summary(doc))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
