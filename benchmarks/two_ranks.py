"""Two spawned ranks for the benchmark scripts: start them, collect rank 0's result, stop them.

A target is called as target(rank, port, *args, out) and rank 0 puts its result on `out`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simplan.ranks import free_port, rank_processes  # noqa: E402


def slowest(dist: Any, torch: Any, times: list[float]) -> list[float]:
    """Per index, the slowest rank's time (every rank calls it with as many times)."""
    mine = torch.tensor(times)
    every = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(every, mine)
    return torch.stack(every).max(0).values.tolist()


def run_two(target: Callable[..., None], *args: Any, timeout_s: float = 600) -> Any:
    """Run target on two spawned ranks; rank 0's result. The ranks are stopped once it is in
    (or on any failure), none left behind (simplan.ranks)."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    out, port = ctx.Queue(), free_port()
    with rank_processes(target, lambda r: (r, port, *args, out), 2, ctx):
        return out.get(timeout=timeout_s)
