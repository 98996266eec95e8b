"""Launch one job's ranks in the background, watch them without blocking, stop them.

A `Launch` starts `world` rank processes (simplan.ranks.rank_processes: each in its own process
group, killed with its parent) running simplan.schedule.real_rank.rank_main, and is polled by
the scheduler: `poll()` returns the rank 0 result once every rank has exited cleanly, None while
they run, and raises RankFailure (every rank stopped) when one fails or none makes progress for
the job's timeout. `close()` kills whatever is left; it is safe to call twice.

Ranks are forked from a forkserver that has imported torch once (`rank_context`), so a launch
costs a fork, the rendezvous and the model's construction rather than a fresh interpreter's
torch import.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from pathlib import Path
from typing import Any, cast

from simplan.io import read_json
from simplan.ranks import RankFailure, failure_message, free_port, hang_message, rank_processes
from simplan.runtime.launch import run_watch
from simplan.schedule.real_rank import RankTask, rank_main

PRELOAD = (
    "torch",
    "torch.distributed",
    "torch.distributed.checkpoint",
    "simplan.schedule.real_rank",
)


def rank_context() -> Any:
    """A forkserver context that has imported torch, started and ready (the import happens
    here, once, not in the first launch)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(PRELOAD))
    first = ctx.Process(target=_nothing, daemon=True)
    first.start()
    first.join()
    return ctx


def _nothing() -> None:
    return None


class Launch:
    """One launch of a job: its ranks, their run folder, and when it started (monotonic)."""

    def __init__(self, task: RankTask, world: int, run_dir: Path, context: Any = None) -> None:
        self.task, self.world, self.run_dir = task, world, run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        init = f"tcp://127.0.0.1:{free_port()}"
        self._stack = contextlib.ExitStack()
        self.started_s = time.monotonic()
        self.procs = self._stack.enter_context(
            rank_processes(
                rank_main,
                lambda r: (r, world, init, task, str(run_dir)),
                world,
                cast(Any, context or rank_context()),
            )
        )
        self.watch = run_watch(run_dir, world)
        now = time.monotonic()
        self._last = {r: (-1, now) for r in range(world)}
        self.ended_s: float | None = None

    def poll(self) -> dict[str, Any] | None:
        """Rank 0's result when all ranks are done; None while running; RankFailure else."""
        errors = self.watch.errors()
        codes = [p.exitcode for p in self.procs]
        if errors or any(c not in (None, 0) for c in codes):
            time.sleep(0.2)  # let the other ranks report (the cause may be theirs)
            message = failure_message(self.procs, self.watch.errors())
            self.close()
            raise RankFailure(f"job {self.task.job.model}: {message}")
        if all(c == 0 for c in codes):
            self.close()
            return dict(read_json(self.run_dir / "rank0.json"))
        now = time.monotonic()
        for r, mark in enumerate(self.watch.progress()):
            if mark != self._last[r][0]:
                self._last[r] = (mark, now)
        timeout = self.task.job.timeout_s
        if all(now - t > timeout for _, t in self._last.values()):
            marks = {r: m for r, (m, _) in self._last.items()}
            self.close()
            raise RankFailure(hang_message(marks, timeout, self.watch))
        return None

    def request_stop(self) -> None:
        Path(self.task.stop_file).touch()

    def wait(self, poll_s: float = 0.02) -> dict[str, Any]:
        """Block until the ranks are done (or fail: RankFailure); rank 0's result."""
        while True:
            result = self.poll()
            if result is not None:
                return result
            time.sleep(poll_s)

    def close(self) -> None:
        if self.ended_s is None:
            self.ended_s = time.monotonic()
        self._stack.close()
