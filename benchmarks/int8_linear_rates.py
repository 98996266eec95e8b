"""Time fp32 and int8 dynamically quantized linear layers per shape on this CPU (1 thread).

    .venv/bin/python benchmarks/int8_linear_rates.py [--models gpt-tiny,...] [--features KxN,...]
        [--tokens 64,96,320,768,1536] [--repeats 7] [--out traces/quant/int8-linear-<cpu>.json]

For every (in K, out N) features of the models' linear layers (and --features) and every token
count M, the median CPU time of single calls (at least --repeats) of nn.Linear(K, N) in fp32 and of
its torch.ao.quantization.quantize_dynamic version (int8 weights, activations quantized per
call), under torch.no_grad. The JSON (one row per shape, with the machine's metadata) is what
simplan.quant_time fits and predicts quantized forward times from.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# every allocation of 128 KiB or more is fresh memory from mmap, first touched by the call that
# fills it (glibc's default threshold adapts: a loop of calls then reuses the last freed output,
# a forward pass, whose outputs live on, does not; with that default an isolated int8 256 -> 8192
# layer on 512 rows took 7.9 ms, inside gpt-tiny's forward 17.2 ms, with this fixed one 18.4 ms)
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def fixed_allocation() -> None:
    """Re-run this script under MALLOC_ENV unless it already is (glibc reads it at start)."""
    if any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})


import torch  # noqa: E402
from torch import nn  # noqa: E402

from simplan.environment import cpu_name, environment  # noqa: E402
from simplan.outputs import write_json_atomic  # noqa: E402


def quantized(module: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(module, {nn.Linear}, dtype=torch.qint8)


def l2_bytes() -> int:
    """The per-core L2 cache size (sysfs), 2 MiB where it cannot be read."""
    path = Path("/sys/devices/system/cpu/cpu0/cache/index2/size")
    try:
        text = path.read_text().strip().upper()
        return int(text.rstrip("KM")) * (1024 if text.endswith("K") else 1024**2)
    except (OSError, ValueError):
        return 2 * 1024**2


EVICT = torch.zeros(4 * l2_bytes() // 4)  # 4x the L2 cache, touched between timed calls


def time_call(fn: Any, x: Any, calls: int, budget_s: float = 0.3) -> float:
    """Median CPU seconds of single calls (this thread's CPU time: torch runs one thread here, on
    the caller): at least `calls`, more while they take under budget_s (up to 400). On a shared
    machine with more runnable processes than cores, a call longer than a scheduler time slice is
    preempted and its wall time grows with the load; its CPU time does not. Before each call a
    buffer of 4x the L2 cache is written, as the other layers of a forward pass do between two
    calls of one layer: warm-cache calls in a loop ran int8 layers up to 3x faster than that."""
    args = x if isinstance(x, tuple) else (x,)
    with torch.no_grad():
        for _ in range(3):
            fn(*args)
        times: list[float] = []
        spent = 0.0
        while len(times) < calls or (spent < budget_s and len(times) < 400):
            EVICT.add_(1.0)
            start = time.thread_time()
            fn(*args)
            times.append(time.thread_time() - start)
            spent += times[-1]
    return statistics.median(times)


def model_features(spec: str) -> set[tuple[int, int]]:
    from simplan.build import instantiate
    from simplan.quant_time import linear_shapes
    from simplan.sources import resolve, transformer_spec

    source = resolve(spec)
    tspec = transformer_spec(source) if source.kind == "toml" else None
    model, inputs = instantiate(source, tspec, batch=1, seq_len=None, device="cpu", dtype="fp32")
    return {(k, n) for _, k, n in linear_shapes(model.eval(), inputs)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", default="gpt-tiny,gpt-tiny#prune=heads:0.5,mlp,mlp-wide")
    p.add_argument("--features", default="", help="extra KxN pairs, comma-separated")
    p.add_argument("--tokens", default="64,96,320,768,1536")
    p.add_argument("--repeats", type=int, default=21, help="single calls timed, at least")
    p.add_argument("--out", default="")
    args = p.parse_args()
    fixed_allocation()
    torch.set_num_threads(1)
    features = set()
    for spec in filter(None, args.models.split(",")):
        features |= model_features(spec)
    for pair in filter(None, args.features.split(",")):
        k, n = pair.lower().split("x")
        features.add((int(k), int(n)))
    rows = []
    print(f"{'M':>6} {'K':>6} {'N':>6} {'fp32 ms':>9} {'int8 ms':>9} {'int8/fp32':>9}")
    for k, n in sorted(features):
        layer = nn.Linear(k, n).eval()
        qlayer = quantized(nn.Sequential(nn.Linear(k, n))).eval()
        for m in (int(t) for t in args.tokens.split(",")):
            x = torch.randn(m, k)
            fp32_s = time_call(layer, x, args.repeats)
            int8_s = time_call(qlayer, x, args.repeats)
            rows.append({"m": m, "k": k, "n": n, "fp32_s": fp32_s, "int8_s": int8_s})
            print(f"{m:6d} {k:6d} {n:6d} {fp32_s * 1e3:9.4f} {int8_s * 1e3:9.4f} "
                  f"{int8_s / fp32_s:9.2f}")  # fmt: skip
    slug = "".join(c if c.isalnum() else "-" for c in cpu_name().lower()).strip("-")
    out = Path(args.out or ROOT / "traces" / "quant" / f"int8-linear-{slug[:40]}.json")
    doc = {
        "what": "seconds per call of nn.Linear(K, N) on M rows: fp32 and int8 dynamic "
        "(torch.ao.quantization.quantize_dynamic), median CPU time (thread) of single calls "
        "after evicting L2, "
        "torch.no_grad, 1 thread",
        "method": {
            "threads": 1,
            "repeats": args.repeats,
            "models": args.models,
            "environment_variables": MALLOC_ENV,
            "evict_bytes": EVICT.nbytes,
        },
        "environment": environment(device="cpu", threads=1),
        "rows": rows,
    }
    write_json_atomic(doc, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
