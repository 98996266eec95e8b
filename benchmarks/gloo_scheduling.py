"""What the scheduling policy does to gloo here: the default scheduler against SCHED_FIFO.

    .venv/bin/python benchmarks/gloo_scheduling.py [--steps 300] [--out FILE.json]

Two ranks (spawned, one torch thread each, barrier before every step, slowest rank per step):
a 4 KiB all-reduce right after the barrier, about 3 ms of matrix products on both ranks alone
and followed by the same all-reduce, and a training step of the 784-128-10 MLP at micro-batch
512, plain and under DDP. Each under the default scheduler and under SCHED_FIFO
(simplan.realtime, as `simplan validate` and `simplan bench-comm` run their ranks). Prints
median and p90 in ms and writes benchmarks/results/gloo_scheduling.json. Run it on a quiet machine.
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

from benchmarks.two_ranks import run_two, slowest  # noqa: E402
from simplan.environment import environment  # noqa: E402
from simplan.io import write_json_atomic  # noqa: E402
from simplan.realtime import enter_realtime  # noqa: E402

CASES = (
    "all-reduce 4 KiB",
    "compute (~3 ms)",
    "compute, then all-reduce 4 KiB",
    "mlp step",
    "mlp step, DDP",
)


def _timed(dist: Any, step: Any, steps: int) -> list[float]:
    times = []
    for k in range(steps + 20):
        dist.barrier()
        t0 = time.perf_counter()
        step()
        if k >= 20:
            times.append(time.perf_counter() - t0)
    return times


def _steps(torch: Any, dist: Any) -> dict[str, Any]:
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel as DDP

    flat, a = torch.zeros(1024), torch.randn(128, 128)

    def compute() -> None:
        for _ in range(100):  # about 3 ms on one core of the development machine
            a @ a

    def after_compute() -> None:
        compute()
        dist.all_reduce(flat)

    def trainer(wrap: bool) -> Any:
        torch.manual_seed(0)
        model: nn.Module = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
        model = DDP(model) if wrap else model
        opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
        x, y = torch.randn(512, 784), torch.randint(0, 10, (512,))

        def step() -> None:
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    return dict(
        zip(
            CASES,
            (
                lambda: dist.all_reduce(flat),
                compute,
                after_compute,
                trainer(False),
                trainer(True),
            ),
            strict=True,
        )
    )


def _rank(rank: int, port: int, realtime: bool, steps: int, out: Any) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    policy = enter_realtime(realtime)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    rows = {}
    for name, step in _steps(torch, dist).items():
        per_step = slowest(dist, torch, _timed(dist, step, steps))
        rows[name] = {
            "median_s": statistics.median(per_step),
            "p90_s": statistics.quantiles(per_step, n=10)[-1],
        }
    dist.barrier()
    dist.destroy_process_group()
    if rank == 0:
        out.put({"scheduling": policy, "rows": rows})


def measure(realtime: bool, steps: int) -> dict[str, Any]:
    return run_two(_rank, realtime, steps)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/gloo_scheduling.json"))
    args = parser.parse_args()
    results = {"default": measure(False, args.steps), "fifo": measure(True, args.steps)}
    print(f"{'case':34s} {'default median/p90 ms':>24s} {'SCHED_FIFO median/p90 ms':>26s}")
    for case in CASES:
        cells = [results[k]["rows"][case] for k in ("default", "fifo")]
        text = [f"{c['median_s'] * 1e3:.2f} / {c['p90_s'] * 1e3:.2f}" for c in cells]
        print(f"{case:34s} {text[0]:>24s} {text[1]:>26s}")
    print(f"policies obtained: {results['default']['scheduling']}, {results['fifo']['scheduling']}")
    meta = environment(steps=args.steps)
    write_json_atomic({"meta": meta, "results": results}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
