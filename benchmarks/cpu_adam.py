"""torch's Adam on this CPU: parameters updated per second, per core, and the host memory copy
rate beside it (the two constants of simplan.topology.host's host-CPU model).

    .venv/bin/python benchmarks/cpu_adam.py [--params 50000000] [--tensors 50] [--repeats 7]
        [--threads 1,2] [--rounds 5] [--out traces/offload/cpu-adam.json]

For each thread count: fp32 parameters split into --tensors equal tensors with fp32 gradients,
torch.optim.Adam (its default foreach implementation, what FSDP2's CPUOffloadPolicy steps on the
host), 2 untimed steps then --repeats timed ones; the median is kept. The copy rate: the median
time of `dst.copy_(src)` over a tensor of the same size (bytes read + written per second).
Everything is measured --rounds times, spread out (the machine is shared: its load varies); the
summary is the median over rounds of each figure. Writes one JSON record with the machine's
metadata (simplan.environment) and prints a table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simplan.environment import environment  # noqa: E402
from simplan.outputs import write_json_atomic  # noqa: E402


def adam_step_s(params: int, tensors: int, repeats: int) -> float:
    import torch

    size = params // tensors
    weights = [torch.nn.Parameter(torch.randn(size)) for _ in range(tensors)]
    for w in weights:
        w.grad = torch.randn(size)
    opt = torch.optim.Adam(weights, lr=1e-4)
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def copy_Bps(params: int, repeats: int) -> float:
    import torch

    src, dst = torch.randn(params), torch.empty(params)
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        dst.copy_(src)
        if i >= 2:
            times.append(time.perf_counter() - start)
    return 2 * 4 * params / statistics.median(times)


def measure(params: int, tensors: int, repeats: int, threads: list[int]) -> list[dict[str, Any]]:
    import torch

    rows = []
    for n in threads:
        torch.set_num_threads(n)
        step = adam_step_s(params, tensors, repeats)
        rows.append(
            {
                "threads": n,
                "adam_step_s": step,
                "adam_params_per_s": params / step,
                "adam_params_per_s_per_thread": params / step / n,
                "copy_Bps": copy_Bps(params, repeats),
            }
        )
    return rows


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per thread count, the median over rounds of every figure."""
    out = []
    for n in sorted({r["threads"] for r in rows}):
        mine = [r for r in rows if r["threads"] == n]
        keys = [k for k in mine[0] if k not in ("threads", "round")]
        out.append({"threads": n} | {k: statistics.median(r[k] for r in mine) for k in keys})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=int, default=50_000_000)
    parser.add_argument("--tensors", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "traces/offload/cpu-adam.json"))
    args = parser.parse_args(argv)
    threads = [int(x) for x in args.threads.split(",")]
    rows = []
    for k in range(args.rounds):
        measured = measure(args.params, args.tensors, args.repeats, threads)
        rows += [r | {"round": k} for r in measured]
    medians = summary(rows)
    record = {
        "kind": "cpu-adam",
        "method": "torch.optim.Adam (foreach) fp32 step, median of repeats; copy_ of fp32",
        "params": args.params,
        "tensors": args.tensors,
        "repeats": args.repeats,
        "rounds": args.rounds,
        "rows": rows,
        "median": medians,
        "environment": environment(),
    }
    write_json_atomic(record, args.out)
    print(f"{'threads':>7} {'step s':>8} {'Mparam/s':>9} {'/thread':>8} {'copy GB/s':>9}")
    for r in medians:
        print(
            f"{r['threads']:>7} {r['adam_step_s']:>8.3f} {r['adam_params_per_s'] / 1e6:>9.1f} "
            f"{r['adam_params_per_s_per_thread'] / 1e6:>8.1f} {r['copy_Bps'] / 1e9:>9.2f}"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
