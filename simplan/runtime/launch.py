"""Start the ranks of a real run, watch them, and stop them all on the first failure.

Each rank is a torch.multiprocessing (spawn) process in its own process group. The launcher
polls: a rank that exits with an error or a signal ends the run at once; a rank that makes no
progress for `job.timeout_s` (start-up or one step) ends it too. Either way every rank's process
group is killed before the one-line error (naming the rank) is raised.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

from simplan.errors import SimplanError
from simplan.io import read_json
from simplan.parallel import ParallelConfig
from simplan.profiles import read_profile
from simplan.runtime.job import (
    PROGRESS_FORMAT,
    JobSpec,
    Measurement,
    RankResult,
    slowest_rank_profile,
)

POLL_S = 0.05
GRACE_S = 1.0  # after a failure, how long to wait for the other ranks' errors (to find the cause)


class RankFailure(SimplanError):
    """A rank crashed, was killed or hung; every rank has been stopped."""


def job_to_dict(job: JobSpec) -> dict[str, Any]:
    return dataclasses.asdict(job) | {"config": job.config.to_dict()}


def job_from_dict(d: dict[str, Any]) -> JobSpec:
    d = dict(d.get("job", d))
    d["config"] = ParallelConfig.from_dict(d["config"])
    return JobSpec(**d)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_job(job: JobSpec) -> Measurement:
    """Run `job` on config.world_size local ranks; returns what they measured."""
    import torch.multiprocessing as mp

    from simplan.runtime.worker import rank_entry

    world = job.config.world_size
    ctx = mp.get_context("spawn")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="simplan-run-") as tmp:
        init = f"tcp://127.0.0.1:{free_port()}"
        procs = [
            ctx.Process(target=rank_entry, args=(r, world, init, job, tmp), daemon=True)
            for r in range(world)
        ]
        previous = _raise_on_sigterm()
        try:
            for p in procs:
                p.start()
            supervise(procs, Path(tmp), job.timeout_s)
        finally:
            stop_all(procs)
            _restore_sigterm(previous)
        ranks = tuple(
            RankResult.from_dict(read_json(Path(tmp) / f"rank{r}.json")) for r in range(world)
        )
        profile_path = Path(tmp) / "profile0.json"
        profile = read_profile(profile_path) if profile_path.is_file() else None
    if profile is not None:
        profile = slowest_rank_profile(profile, ranks)
    return Measurement(job=job, ranks=ranks, wall_s=time.perf_counter() - started, profile=profile)


def _raise_on_sigterm() -> Any:
    """SIGTERM to the launcher stops the ranks too (SystemExit runs the cleanup)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    return signal.signal(signal.SIGTERM, handler)


def _restore_sigterm(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def _result(out_dir: Path, rank: int) -> RankResult:
    return RankResult.from_dict(read_json(out_dir / f"rank{rank}.json"))


def supervise(procs: list[Any], out_dir: Path, timeout_s: float) -> None:
    """Return when every rank has exited cleanly; raise RankFailure on the first failure."""
    last_progress = {r: (-1, time.monotonic()) for r in range(len(procs))}
    while True:
        codes = [p.exitcode for p in procs]
        if all(c == 0 for c in codes):
            return
        if any(c not in (None, 0) for c in codes):
            time.sleep(GRACE_S)
            raise RankFailure(_failure_message(procs, out_dir))
        now = time.monotonic()
        for r in range(len(procs)):
            mark = read_progress(out_dir / f"hb{r}")
            if mark != last_progress[r][0]:
                last_progress[r] = (mark, now)
        if all(now - t > timeout_s for _, t in last_progress.values()):
            raise RankFailure(_hang_message(last_progress, timeout_s))
        time.sleep(POLL_S)


def read_progress(path: Path) -> int:
    """A rank's progress marker (PROGRESS_FORMAT; -1 before it has one)."""
    try:
        data = path.read_bytes()
    except OSError:
        return -1
    if len(data) != struct.calcsize(PROGRESS_FORMAT):
        return -1
    return int(struct.unpack(PROGRESS_FORMAT, data)[0])


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _failure_message(procs: list[Any], out_dir: Path) -> str:
    """The most telling failure: a rank killed by a signal, else one whose error is not a
    consequence of a peer's loss (a closed connection), else the first."""
    failed = [(r, p.exitcode) for r, p in enumerate(procs) if p.exitcode not in (None, 0)]
    killed = [(r, c) for r, c in failed if c is not None and c < 0]
    if killed:
        r, code = killed[0]
        return (
            f"rank {r} was killed by {signal.Signals(-code).name}; stopped all {len(procs)} ranks"
        )
    errors = {r: _read(out_dir / f"rank{r}.error") for r, _ in failed}
    peer_loss = ("Connection closed", "Connection reset", "peer", "Broken pipe", "Timed out")
    primary = [r for r, _ in failed if not any(s in errors[r] for s in peer_loss)]
    r = (primary or [failed[0][0]])[0]
    error = errors[r] or f"exited with status {procs[r].exitcode}"
    return f"rank {r} failed: {error}; stopped all {len(procs)} ranks"


def _hang_message(progress: dict[int, tuple[int, float]], timeout_s: float) -> str:
    """Name the rank that fell behind (its progress marker is the lowest)."""
    lowest = min(m for m, _ in progress.values())
    behind = [r for r, (m, _) in progress.items() if m == lowest]
    where = "during start-up" if lowest < 0 else f"at step {lowest // 2}"
    who = f"rank {behind[0]}" if len(behind) == 1 else f"ranks {', '.join(map(str, behind))}"
    return (
        f"{who} made no progress for {timeout_s:g} s ({where}); stopped all {len(progress)} ranks"
    )


def stop_all(procs: list[Any]) -> None:
    """Kill every rank's process group (the rank and anything it started) and reap it."""
    for p in procs:
        if p.pid is None:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p.pid, signal.SIGKILL)
    for p in procs:
        if p.pid is not None:
            p.join(timeout=5)
