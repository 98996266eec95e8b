"""A real multi-task training run on local gloo ranks (torch imported inside the ranks).

The model's declared tasks (simplan.tasks) train jointly on the rendered-shapes data
(simplan.shapes_data) with a task-weighting strategy (simplan.runtime.task_weights), placed
replicated (DDP of the whole model, the global batch split over the ranks) or task-parallel
(2 ranks: the trunk and the cheaper heads on rank 0, the heaviest head on rank 1, features and
their gradient sent point-to-point); see simplan.runtime.mtl_ranks. Every step is timed after a
barrier; rank 0 records every step's per-task loss, weight and gradient norm on the shared
features.

The ranks flush subnormal floats to zero (flush_denormals, before the process group starts
gloo's threads, which inherit it): on an x86 CPU an operation on a subnormal operand takes a
microcode assist, a cost set by the values the training happens to reach, not by its work, so
no profile or device model prices it. mtl-vision at 224x224, replicated on 2 ranks (global
batch 4), reaches them from its 6th step: the backward of steps 6-17 took up to 1.0 s on a rank
against 0.43 s before and after them (DDP's all-reduce timed apart in a comm hook), and the
median step 0.95 s against 0.69 s with subnormals flushed (then every step 0.65-0.73 s).
"""

from __future__ import annotations

import datetime as dt
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from simplan.errors import SimplanError
from simplan.outputs import write_json_atomic
from simplan.profiles import read_profile
from simplan.runtime.task_weights import WEIGHTINGS

MTL_PLACEMENTS = ("replicated", "task-parallel")
DATA_BATCHES = 8  # the data set holds this many global batches, read cyclically
DATA_SEED = 0
MODEL_SEED = 0


@dataclass(frozen=True, kw_only=True)
class MtlJob:
    """One real multi-task run: `global_batch` samples a step (replicated: split over the
    ranks; task-parallel: every rank's heads see all of them)."""

    model: str
    placement: str
    nprocs: int
    global_batch: int
    weighting: str = "equal"
    steps: int = 30
    warmup: int = 5
    threads: int = 1
    timeout_s: float = 120.0
    realtime: bool = True  # SCHED_FIFO where permitted (simplan.realtime)
    profile_repeats: int = 0  # in-run profiles of the model at the rank's batch (0: none)
    flush_denormal: bool = True  # subnormal floats flushed to zero in the ranks (module doc)

    def __post_init__(self) -> None:
        if self.placement not in MTL_PLACEMENTS:
            raise SimplanError(
                f"multi-task placement {self.placement!r} is unknown: use one of "
                f"{', '.join(MTL_PLACEMENTS)}"
            )
        if self.placement == "task-parallel" and self.nprocs != 2:
            raise SimplanError(
                "the task-parallel run puts the trunk on rank 0 and the heaviest head on rank "
                "1: use --nprocs 2"
            )
        if self.weighting not in WEIGHTINGS:
            raise SimplanError(
                f"unknown task weighting {self.weighting!r}: use one of {', '.join(WEIGHTINGS)}"
            )
        if self.nprocs < 1 or self.global_batch < 1 or self.global_batch % self.nprocs:
            raise SimplanError(
                f"global batch {self.global_batch} does not split over {self.nprocs} ranks: "
                "give a multiple of --nprocs"
            )
        if self.warmup < 1 or self.steps < 1:
            raise SimplanError("a multi-task run needs at least one warm-up and one timed step")

    @property
    def rank_batch(self) -> int:
        """Samples each rank's trunk (or head) sees a step."""
        return (
            self.global_batch // self.nprocs
            if self.placement == "replicated"
            else self.global_batch
        )


def build_task_set(model: str) -> tuple[Any, Any]:
    """(graph, task set) of a model the multi-task run trains, or one line saying why not."""
    from simplan.sources import load_model
    from simplan.tasks import load_tasks

    graph = load_model(model)
    taskset = load_tasks(graph)
    if taskset is None:
        raise SimplanError(f"model {model} declares no tasks: it is not a multi-task model")
    partial = [t.name for t in taskset.tasks if t.batch_share != 1.0]
    if partial:
        raise SimplanError(
            f"task {partial[0]} labels part of the batch (batch_share); the multi-task run "
            "labels every sample for every task: simulate it instead"
        )
    return graph, taskset


def build_trainer(job: MtlJob, rank: int) -> Any:
    """This rank's trainer (simplan.runtime.mtl_ranks) on build_parts(job)."""
    from simplan.runtime.mtl_ranks import Replicated, TaskParallel

    split, data = build_parts(job)
    if job.placement == "replicated":
        return Replicated(split, data, job.weighting, job.global_batch, rank, job.nprocs)
    return TaskParallel(split, data, job.weighting, job.global_batch, rank)


def build_parts(job: MtlJob) -> tuple[Any, Any]:
    """(the seeded model cut by its tasks, the seeded data): the same on every rank and in a
    single process."""
    import torch

    from simplan.build import instantiate
    from simplan.model_knobs import split_spec
    from simplan.runtime.mtl_steps import Split
    from simplan.shapes_data import shapes
    from simplan.sources import resolve

    graph, taskset = build_task_set(job.model)
    torch.manual_seed(MODEL_SEED)
    module, inputs = instantiate(
        resolve(job.model), None, batch=1, seq_len=None, device="cpu", dtype="fp32"
    )
    module.train()
    if inputs[0].dim() != 4 or inputs[0].shape[1] != 3:
        raise SimplanError(
            f"model {job.model}: the multi-task run trains on rendered RGB images "
            "(simplan.shapes_data); this model takes other inputs"
        )
    split = Split(module, graph, taskset)
    size = split_spec(job.model)[1].image_size or int(inputs[0].shape[-1])
    with torch.no_grad():
        z = split.trunk(inputs[0])
    anchors = _anchors(split, z)
    data = shapes(
        DATA_BATCHES * job.global_batch,
        image_size=size,
        grid=int(z.shape[-1]),
        anchors=anchors,
        seed=DATA_SEED,
    )
    return split, data


def _anchors(split: Any, z: Any) -> int:
    """Anchors per cell of a detection task: its box output's channels / 4 (1 without one)."""
    for task in split.taskset.tasks:
        if task.loss == "detection":
            return int(split.head(task, z)[0].shape[1]) // 4
    return 1


def flush_denormals(enabled: bool) -> bool:
    """Flush subnormal floats to zero (FTZ/DAZ) in the calling thread and the threads it
    starts afterwards, or stop flushing them; whether they are flushed now (False where the
    CPU cannot flush them)."""
    import torch

    return bool(torch.set_flush_denormal(enabled)) and enabled


PROFILE_ROUNDS = 4  # the in-run profile's repeats, spread over the run in this many rounds


def _timed_rounds(job: MtlJob, trainer: Any, beat: Any, profile_path: Path) -> list[float]:
    """The timed steps in rounds, each after a share of the in-run profile's repeats (every
    rank at once, each pass after a barrier), so that the profile sees the machine the steps
    see (as simplan.runtime's ranks do); the profile written to `profile_path`."""
    import torch.distributed as dist

    from simplan.profiles import write_profile
    from simplan.runtime.worker import _shares
    from simplan.timing import ProfileSession

    session = None
    if job.profile_repeats:
        session = ProfileSession(job.model, micro_batch=job.rank_batch)
    rounds = min(PROFILE_ROUNDS, job.steps) if session else 1
    step_s: list[float] = []
    first = job.warmup
    shares = zip(_shares(job.profile_repeats, rounds), _shares(job.steps, rounds), strict=True)
    for i, (repeats, steps) in enumerate(shares):
        beat.beat(2 * i + 1)
        if session is not None:
            session.run(repeats, before_pass=dist.barrier)
        step_s += trainer.block(first, steps)
        first += steps
    if session is not None:
        write_profile(session.profile(), profile_path)
        session.close()
    return step_s


def _rank_entry(rank: int, world: int, init: str, job: MtlJob, out_dir: str) -> None:
    import torch
    import torch.distributed as dist

    from simplan.ranks import enter_rank_process
    from simplan.realtime import enter_realtime
    from simplan.runtime.worker import Heartbeat, _write_error

    enter_rank_process()
    out = Path(out_dir)
    try:
        torch.set_num_threads(job.threads)
        scheduling = enter_realtime(job.realtime)
        flushed = flush_denormals(job.flush_denormal)
        beat = Heartbeat(out, rank)
        timeout = dt.timedelta(seconds=2 * job.timeout_s + 30)
        dist.init_process_group(
            "gloo", init_method=init, rank=rank, world_size=world, timeout=timeout
        )
        try:
            trainer = build_trainer(job, rank)
            beat.beat(0)
            trainer.block(0, job.warmup)
            step_s = _timed_rounds(job, trainer, beat, out / f"profile{rank}.json")
        finally:
            dist.destroy_process_group()
            beat.close()
        result = {
            "rank": rank,
            "scheduling": scheduling,
            "flush_denormal": flushed,
            "step_s": step_s,
            "tasks": [t.name for t in trainer.tasks],
            "stats": [asdict(s) for s in trainer.stats],
        }
        write_json_atomic(result, out / f"rank{rank}.json")
    except BaseException as exc:  # the supervisor reports it
        _write_error(out, rank, exc)
        sys.exit(1)


@dataclass(frozen=True, kw_only=True)
class MtlMeasurement:
    """What a multi-task run measured: per rank its step times and (rank 0 always, every rank
    when replicated) per-step task statistics."""

    job: MtlJob
    ranks: tuple[dict[str, Any], ...]
    wall_s: float
    profile: Any = None  # rank 0's in-run profile (simplan.profiles.Profile), if measured

    @property
    def per_step_s(self) -> list[float]:
        """Each timed step's time on its slowest rank."""
        return [max(t) for t in zip(*(r["step_s"] for r in self.ranks), strict=True)]

    @property
    def step_time_s(self) -> float:
        return statistics.median(self.per_step_s)

    def task_curves(self) -> dict[str, dict[str, list[float]]]:
        """Per task: its loss, weight and feature-gradient norm at every step (warm-up
        included; replicated: the ranks' mean)."""
        rows = [r for r in self.ranks if r["stats"]]
        names = rows[0]["tasks"]
        curves: dict[str, dict[str, list[float]]] = {}
        for k, name in enumerate(names):
            curves[name] = {
                key: [
                    statistics.fmean(r["stats"][s][key][k] for r in rows)
                    for s in range(len(rows[0]["stats"]))
                ]
                for key in ("losses", "weights", "grad_norms")
            }
        return curves

    def to_dict(self) -> dict[str, Any]:
        return {
            "step_time_s": self.step_time_s,
            "per_step_s": self.per_step_s,
            "per_rank_step_s": [statistics.median(r["step_s"]) for r in self.ranks],
            "scheduling": [r.get("scheduling", "") for r in self.ranks],
            "flush_denormal": [r.get("flush_denormal", False) for r in self.ranks],
            "tasks": self.task_curves(),
            "wall_s": self.wall_s,
            "job": asdict(self.job),
        }


def run_mtl(job: MtlJob) -> MtlMeasurement:
    """Run `job` on its local gloo ranks (supervised: a rank that fails or stalls stops all)."""
    from simplan.runtime.launch import read_ranks, run_gloo_ranks

    def collect(out: Path) -> tuple[tuple[dict[str, Any], ...], Any]:
        path = out / "profile0.json"
        return read_ranks(out, job.nprocs), read_profile(path) if path.is_file() else None

    started = time.perf_counter()
    ranks, profile = run_gloo_ranks(
        _rank_entry, job, job.nprocs, job.timeout_s, "simplan-mtl-", collect
    )
    wall_s = time.perf_counter() - started
    return MtlMeasurement(job=job, ranks=ranks, wall_s=wall_s, profile=profile)
