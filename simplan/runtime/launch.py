"""Start the ranks of a real run, watch them, and stop them all on the first failure.

Each rank is a torch.multiprocessing (spawn) process under simplan.ranks' supervisor: a rank
that exits with an error or a signal ends the run at once; ranks that make no progress for
`job.timeout_s` (start-up or one step) end it too. Either way every rank's process group is
killed before the one-line error (naming the rank) is raised. A rank's progress is its
heartbeat file (OUT_DIR/hb{rank}), its error OUT_DIR/rank{rank}.error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from simplan.io import read_json
from simplan.parallel import ParallelConfig
from simplan.profiles import read_profile
from simplan.ranks import Watch, free_port, rank_processes, supervise
from simplan.runtime.job import (
    PROGRESS_FORMAT,
    JobSpec,
    Measurement,
    RankResult,
    slowest_rank_profile,
)


def job_to_dict(job: JobSpec) -> dict[str, Any]:
    return dataclasses.asdict(job) | {"config": job.config.to_dict()}


def job_from_dict(d: dict[str, Any]) -> JobSpec:
    d = dict(d.get("job", d))
    config = dict(d["config"])
    hook = d.pop("comm_hook", "")  # records before the config's compress field held it
    if hook:
        config["compress"] = hook
    d["config"] = ParallelConfig.from_dict(config)
    return JobSpec(**d)


def run_job(job: JobSpec) -> Measurement:
    """Run `job` on config.world_size local ranks; returns what they measured."""
    import torch.multiprocessing as mp

    from simplan.runtime.worker import rank_entry

    world = job.config.world_size
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="simplan-run-") as tmp:
        out_dir = Path(tmp)
        init = f"tcp://127.0.0.1:{free_port()}"
        with rank_processes(
            rank_entry, lambda r: (r, world, init, job, tmp), world, mp.get_context("spawn")
        ) as procs:
            supervise(procs, run_watch(out_dir, world), job.timeout_s)
        ranks = tuple(
            RankResult.from_dict(read_json(out_dir / f"rank{r}.json")) for r in range(world)
        )
        profile_path = out_dir / "profile0.json"
        profile = read_profile(profile_path) if profile_path.is_file() else None
    if profile is not None:
        profile = slowest_rank_profile(profile, ranks)
    return Measurement(job=job, ranks=ranks, wall_s=time.perf_counter() - started, profile=profile)


def read_progress(path: Path) -> int:
    """A rank's progress marker (PROGRESS_FORMAT; -1 before it has one)."""
    try:
        data = path.read_bytes()
    except OSError:
        return -1
    if len(data) != struct.calcsize(PROGRESS_FORMAT):
        return -1
    return int(struct.unpack(PROGRESS_FORMAT, data)[0])


T = TypeVar("T")


def run_gloo_ranks(
    entry: Callable[..., None],
    job: Any,
    world: int,
    timeout_s: float,
    prefix: str,
    collect: Callable[[Path], T],
) -> T:
    """Start `world` spawned ranks running entry(rank, world, init_method, job, out_dir),
    supervise them (a rank that fails or stalls stops all) and return collect(out_dir) before
    the run's folder is removed."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        init = f"tcp://127.0.0.1:{free_port()}"
        with rank_processes(
            entry, lambda r: (r, world, init, job, tmp), world, mp.get_context("spawn")
        ) as procs:
            supervise(procs, run_watch(Path(tmp), world), timeout_s)
        return collect(Path(tmp))


def read_ranks(out_dir: Path, world: int) -> tuple[dict[str, Any], ...]:
    """Each rank's result file (OUT_DIR/rank{r}.json)."""
    return tuple(read_json(out_dir / f"rank{r}.json") for r in range(world))


def run_watch(out_dir: Path, world: int) -> Watch:
    """What the supervisor reads of a run's ranks: their heartbeats and error files."""
    return Watch(
        progress=lambda: [read_progress(out_dir / f"hb{r}") for r in range(world)],
        errors=lambda: _errors(out_dir, world),
        where=_where,
    )


def _errors(out_dir: Path, world: int) -> dict[int, str]:
    """The ranks' error reports (OUT_DIR/rank{r}.error, one line each) so far."""
    found = {}
    for r in range(world):
        path = out_dir / f"rank{r}.error"
        if path.exists():
            with contextlib.suppress(OSError):
                found[r] = path.read_text()
    return found


def _where(mark: int) -> str:
    return "during start-up" if mark < 0 else f"at step {mark // 2}"
