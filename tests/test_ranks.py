"""The rank supervisor: a failing or silent rank ends the run, named, and no process is left."""

from __future__ import annotations

import os
import socket
import sys
import time

import pytest

from simplan.ranks import RankFailure, Watch, free_port, rank_processes, supervise


def _rank(rank: int, exit_status: int, sleep_s: float) -> None:
    """A rank that sleeps, then exits with `exit_status` (rank 1 only; rank 0 keeps sleeping)."""
    time.sleep(sleep_s)
    if rank == 1:
        sys.exit(exit_status)
    time.sleep(600)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as handle:  # a zombie is not alive
        return handle.read().rsplit(")", 1)[1].split()[0] != "Z"


def _watch(marks: list[int]) -> Watch:
    return Watch(progress=lambda: marks, errors=dict, where=lambda m: f"at mark {m}")


def test_a_rank_that_fails_ends_the_run_and_every_rank_is_stopped() -> None:
    pids: list[int | None] = []
    with (
        pytest.raises(RankFailure) as failure,
        rank_processes(_rank, lambda r: (r, 3, 0.2), 2) as procs,
    ):
        pids = [p.pid for p in procs]
        supervise(procs, _watch([0, 0]), timeout_s=60, grace_s=0)
    assert str(failure.value) == "rank 1 failed: exited with status 3; stopped all 2 ranks"
    assert not any(_alive(pid) for pid in pids if pid is not None)


def test_ranks_without_progress_end_the_run_within_the_timeout() -> None:
    started = time.monotonic()
    pids: list[int | None] = []
    with (
        pytest.raises(RankFailure, match=r"^rank 1 made no progress for 1 s \(at mark 2\)"),
        rank_processes(_rank, lambda r: (r, 0, 600), 2) as procs,
    ):
        pids = [p.pid for p in procs]
        supervise(procs, _watch([5, 2]), timeout_s=1)
    assert time.monotonic() - started < 20
    assert not any(_alive(pid) for pid in pids if pid is not None)


def test_a_rank_error_report_ends_the_run_before_any_exit() -> None:
    errors = {0: "RuntimeError: Connection closed by peer", 1: "ValueError: bad shape"}
    watch = Watch(progress=lambda: [0, 0], errors=lambda: errors, where=str)
    with (
        pytest.raises(RankFailure, match=r"^rank 1 failed: ValueError: bad shape; stopped all 2"),
        rank_processes(_rank, lambda r: (r, 0, 600), 2) as procs,
    ):
        supervise(procs, watch, timeout_s=60, grace_s=0)


def test_free_port_can_be_bound() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port()))
