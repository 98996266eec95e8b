"""Local rank processes: start N, watch them, and stop them all, whatever happens.

Used by every verb that runs ranks of torch.distributed on this machine (`validate`'s runs in
simplan.runtime, `bench-comm`'s measurements in simplan.topology.bench). Each rank is a spawned
process that calls `enter_rank_process` first: it gets its own process group (so that stopping
it also stops anything it started) and dies with its parent. The parent watches (`supervise`):
a rank that reports an error or exits with one ends the run at once; ranks that make no progress
for `timeout_s` (start-up or one step) end it too. Either way every rank's process group is
killed (`rank_processes` leaves no process behind, on success, failure, Ctrl-C or SIGTERM) and a
one-line error names the rank.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.context import SpawnContext
from multiprocessing.process import BaseProcess
from typing import Any

from simplan.errors import SimplanError

POLL_S = 0.05
GRACE_S = 1.0  # after a failure, how long to wait for the other ranks' errors (to find the cause)
PEER_LOSS = ("Connection closed", "Connection reset", "peer", "Broken pipe", "Timed out")


class RankFailure(SimplanError):
    """A rank crashed, was killed or hung; every rank has been stopped."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def enter_rank_process() -> None:
    """The first call of a spawned rank: its own process group, and (Linux) SIGKILL when its
    parent dies, however it dies."""
    os.setpgid(0, 0)
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


@contextlib.contextmanager
def rank_processes(
    target: Callable[..., None],
    args: Callable[[int], tuple[Any, ...]],
    world: int,
    context: SpawnContext | None = None,
) -> Iterator[list[BaseProcess]]:
    """Start `world` processes `target(*args(rank))` (spawned); on leaving, kill every one's
    process group and reap it. SIGTERM to this process raises SystemExit meanwhile, so that a
    terminated parent stops its ranks too."""
    ctx = context or multiprocessing.get_context("spawn")
    procs: list[BaseProcess] = [
        ctx.Process(target=target, args=args(r), daemon=True) for r in range(world)
    ]
    previous = _raise_on_sigterm()
    try:
        for p in procs:
            p.start()
        yield procs
    finally:
        stop_all(procs)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _raise_on_sigterm() -> Any:
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    return signal.signal(signal.SIGTERM, handler)


def stop_all(procs: Sequence[BaseProcess]) -> None:
    """Kill every rank's process group (the rank and anything it started) and reap it."""
    for p in procs:
        if p.pid is None:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        if p.exitcode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p.pid, signal.SIGKILL)
    for p in procs:
        if p.pid is not None:
            p.join(timeout=5)


@dataclass(frozen=True, kw_only=True)
class Watch:
    """What the supervisor reads of the ranks, each call a fresh look.

    progress: each rank's progress marker (any increasing integer; -1 before it has one).
    errors: the ranks' own reports of a failure so far (rank -> one line).
    where: a progress marker in words, for a hang ("during start-up", "at step 3").
    """

    progress: Callable[[], Sequence[int]]
    errors: Callable[[], Mapping[int, str]]
    where: Callable[[int], str]


def supervise(
    procs: Sequence[BaseProcess],
    watch: Watch,
    timeout_s: float,
    *,
    poll_s: float = POLL_S,
    grace_s: float = GRACE_S,
) -> None:
    """Return when every rank has exited cleanly; raise RankFailure on the first failure (a
    rank's error report, a non-zero exit or a signal) or when no rank has made progress for
    `timeout_s`."""
    now = time.monotonic()
    last = {r: (-1, now) for r in range(len(procs))}
    while True:
        marks = watch.progress()
        codes = [p.exitcode for p in procs]
        if watch.errors() or any(c not in (None, 0) for c in codes):
            time.sleep(grace_s)
            raise RankFailure(failure_message(procs, watch.errors()))
        if all(c == 0 for c in codes):
            return
        now = time.monotonic()
        for r, mark in enumerate(marks):
            if mark != last[r][0]:
                last[r] = (mark, now)
        if all(now - t > timeout_s for _, t in last.values()):
            raise RankFailure(hang_message({r: m for r, (m, _) in last.items()}, timeout_s, watch))
        time.sleep(poll_s)


def failure_message(procs: Sequence[BaseProcess], errors: Mapping[int, str]) -> str:
    """The most telling failure: a rank killed by a signal, else one whose error is not a
    consequence of a peer's loss (a closed connection), else the first."""
    failed = sorted(set(errors) | {r for r, p in enumerate(procs) if p.exitcode not in (None, 0)})
    killed = [r for r in failed if (procs[r].exitcode or 0) < 0]
    if killed:
        r, code = killed[0], procs[killed[0]].exitcode or 0
        return (
            f"rank {r} was killed by {signal.Signals(-code).name}; stopped all {len(procs)} ranks"
        )
    primary = [r for r in failed if not any(s in errors.get(r, "") for s in PEER_LOSS)]
    r = (primary or failed)[0]
    error = errors.get(r) or f"exited with status {procs[r].exitcode}"
    return f"rank {r} failed: {error}; stopped all {len(procs)} ranks"


def hang_message(marks: Mapping[int, int], timeout_s: float, watch: Watch) -> str:
    """Name the rank that fell behind (its progress marker is the lowest)."""
    lowest = min(marks.values())
    behind = [r for r, m in marks.items() if m == lowest]
    who = f"rank {behind[0]}" if len(behind) == 1 else f"ranks {', '.join(map(str, behind))}"
    return (
        f"{who} made no progress for {timeout_s:g} s ({watch.where(lowest)}); "
        f"stopped all {len(marks)} ranks"
    )
