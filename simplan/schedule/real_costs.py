"""What a real schedule on this machine's CPU slots is predicted with, and what it costs to
start, stop and restart a job there.

- `RunSpeeds`: a SpeedTable of the plan each job really runs on n CPU slots (data parallel over n
  gloo ranks, one micro-batch of global_batch / n per rank, fp32, `run_config`), priced by
  simplan's simulator: with this machine's layer profile of the model at that micro-batch
  (simplan.validate.profile_for, written under traces/profiles/) and the local cluster's
  calibration (validate.local_cluster), or, with profiled=False, the device model alone (fast,
  for tests). None where global_batch is not divisible by n. Each profile is measured afresh,
  once per run, as the ranks run (one thread, SCHED_FIFO where permitted; on a busy machine a
  profile measured at normal priority prices the other tenants' load, which the ranks do not
  see): on one slot in a child process; on n > 1 slots by the n ranks of a short run side by
  side (the in-run profile of `simplan validate`), which prices the cores' sharing with the
  other ranks and their communication threads.
- `LaunchCosts`: measured once per model and rank count before a schedule runs
  (`measure_costs`): one launch that saves a checkpoint without training and one that loads it;
  launch_s is the time a launch holds its slots besides training, saving and loading (process
  start, rendezvous, model construction, exit), save_s and load_s those of the checkpoint.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simplan.parallel import ParallelConfig
from simplan.schedule.core import Job, Shape
from simplan.schedule.real_rank import RankTask

DEFAULT_TIMEOUT_S = 120.0


def run_config(job: Job, gpus: int) -> ParallelConfig | None:
    """The data-parallel plan a job runs on `gpus` CPU slots (None: the batch does not split)."""
    from simplan.runtime.job import config_for

    if gpus < 1 or job.global_batch % gpus:
        return None
    return config_for(
        "ddp", gpus, micro_batch=job.global_batch // gpus, global_batch=job.global_batch,
        seq_len=job.seq_len,
    )  # fmt: skip


def run_spec(job: Job, gpus: int, timeout_s: float = DEFAULT_TIMEOUT_S) -> Any:
    """The runtime's JobSpec of a job on `gpus` slots: adam, one thread per rank, SCHED_FIFO
    where permitted (as the runtime runs and as its calibration was measured)."""
    from simplan.runtime.job import JobSpec

    config = run_config(job, gpus)
    assert config is not None
    return JobSpec(model=job.model, config=config, warmup=0, baseline_steps=0,
                   timeout_s=timeout_s, realtime=True)  # fmt: skip


class RunSpeeds:
    """Step time of the plan a job runs on a shape of CPU slots (see the module's docstring)."""

    def __init__(self, *, profiled: bool = True, context: Any = None) -> None:
        self.profiled, self.context = profiled, context
        self._memo: dict[tuple[str, int], float | None] = {}

    def step_time_s(self, job: Job, shape: Shape) -> float | None:
        key = (job.kind, shape.gpus)
        if key not in self._memo:
            self._memo[key] = self._simulate(job, shape.gpus)
        return self._memo[key]

    def _simulate(self, job: Job, gpus: int) -> float | None:
        from simplan.sim.run import simulate
        from simplan.validate import local_cluster, profile_for

        config = run_config(job, gpus)
        if config is None:
            return None
        cluster = local_cluster(gpus)
        if not self.profiled:
            return float(simulate(job.model, cluster, config, record=False).step_time_s)
        if gpus == 1:
            measure_profile(job.model, config, self.context)
            profile, _ = profile_for(job.model, config, threads=1)
        else:
            profile = in_run_profile(job, gpus)
        result = simulate(profile.model, cluster, config, profile=profile, record=False)
        return float(result.step_time_s)


def in_run_profile(job: Job, gpus: int) -> Any:
    """The layer profile every rank of the job's plan on `gpus` slots measures side by side in
    a short run (as `simplan validate` does by default): the cores' sharing with the other
    ranks and their gloo threads is in it, which a profile measured alone misses."""
    import dataclasses

    from simplan.errors import SimplanError
    from simplan.runtime import run_job
    from simplan.validate import PROFILE_REPEATS

    spec = dataclasses.replace(run_spec(job, gpus), steps=2, warmup=1,
                               profile_repeats=PROFILE_REPEATS)  # fmt: skip
    measured = run_job(spec)
    if measured.profile is None:
        raise SimplanError(f"the run of {job.model} on {gpus} slots measured no layer profile")
    return measured.profile


def measure_profile(model: str, config: ParallelConfig, context: Any = None) -> None:
    """Measure (again) the layer profile profile_for keeps, in a child process under the
    ranks' scheduling; SimplanError when that fails."""
    import multiprocessing

    from simplan.errors import SimplanError

    ctx = context or multiprocessing.get_context("spawn")
    child = ctx.Process(target=_profile_child, args=(model, config))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SimplanError(
            f"measuring the layer profile of {model} at micro-batch {config.micro_batch} failed "
            f"(exit status {child.exitcode}); check that `simplan profile {model}` runs"
        )


def _profile_child(model: str, config: ParallelConfig) -> None:
    from simplan.realtime import enter_realtime
    from simplan.validate import profile_for

    enter_realtime(True)
    profile_for(model, config, threads=1, refresh=True)


@dataclass(frozen=True, kw_only=True)
class LaunchCost:
    """One model on one rank count: seconds a launch holds its slots besides its steps
    (launch_s), and its checkpoint's save and load (save_s, load_s)."""

    launch_s: float
    save_s: float
    load_s: float


@dataclass(frozen=True, kw_only=True)
class LaunchCosts:
    """Measured LaunchCost by (model, ranks); `delay_s` is what a start costs a job."""

    costs: tuple[tuple[str, int, LaunchCost], ...]

    def of(self, model: str, ranks: int) -> LaunchCost:
        for m, r, cost in self.costs:
            if m == model and r == ranks:
                return cost
        raise KeyError(f"no measured launch cost for {model} on {ranks} ranks")

    def delay_s(self, model: str, ranks: int, restart: bool) -> float:
        """A start's time before the first step (and the exit after the last); a restart adds
        the checkpoint's load (its save is paid when the job is stopped)."""
        cost = self.of(model, ranks)
        return cost.launch_s + (cost.load_s if restart else 0.0)

    def to_dict(self) -> list[dict[str, Any]]:
        return [
            {"model": m, "ranks": r, "launch_s": c.launch_s, "save_s": c.save_s,
             "load_s": c.load_s}
            for m, r, c in self.costs
        ]  # fmt: skip


def measure_costs(
    jobs: Iterable[Job],
    sizes: Callable[[Job], Iterable[int]],
    base_dir: Path,
    context: Any,
    echo: Callable[[str], None] = lambda _: None,
) -> LaunchCosts:
    """Launch each (model, rank count) the jobs may use twice: once saving a checkpoint at step
    0 (asked to stop before training), once loading it (no steps left)."""
    seen: dict[tuple[str, int], Job] = {}
    for job in jobs:
        for n in sizes(job):
            if run_config(job, n) is not None:
                seen.setdefault((job.model, n), job)
    costs = []
    for i, ((model, ranks), job) in enumerate(sorted(seen.items())):
        echo(f"measuring the launch cost of {model} on {ranks} rank(s)")
        costs.append((model, ranks, _measure_one(job, ranks, base_dir / f"m{i}", context)))
    return LaunchCosts(costs=tuple(costs))


def _measure_one(job: Job, ranks: int, folder: Path, context: Any) -> LaunchCost:
    """Launch 0 is asked to stop before its first step (it saves a checkpoint of step 0);
    launch 1 loads it and has no step left. Each launch's time besides its save and load
    (rank 0's phases) is a launch cost; launch_s is their mean."""
    from simplan.schedule.real_launch import Launch

    folder.mkdir(parents=True, exist_ok=True)
    stop = folder / "stop"
    stop.touch()
    spec = run_spec(job, ranks)
    overheads, save, load = [], 0.0, 0.0
    for i, steps in enumerate((1, 0)):
        task = RankTask(job=spec, total_steps=steps, ckpt_dir=str(folder / "ckpt"),
                        stop_file=str(stop))  # fmt: skip
        launch = Launch(task, ranks, folder / f"launch{i}", context)
        t = launch.wait()["times"]
        assert launch.ended_s is not None
        if i == 0:
            save = t["saved"] - t["stepped"]
        else:
            load = t["loaded"] - t["built"]
        overheads.append(launch.ended_s - launch.started_s - (t["saved"] - t["built"]))
    return LaunchCost(launch_s=statistics.mean(overheads), save_s=save, load_s=load)
