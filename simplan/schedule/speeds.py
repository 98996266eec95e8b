"""Each job's speed on each shape from the planner and simulator, cached on disk by content.

`PlannedSpeeds(spec)` is a SpeedTable: the step time of a job on a shape is the simulated step
time of the best plan the planner finds for the job's model, global batch and sequence length on
the sub-cluster the shape stands for (simplan.schedule.shapes.shape_spec). `prepare(jobs)` fans
the (job kind x shape) searches out on an executor (simplan.schedule.executors); a shape not
prepared is searched when first asked for. Results are kept under $SIMPLAN_CACHE_DIR/speeds (by
default ~/.cache/simplan/speeds), one JSON file per search, named by a hash of everything that
decides it: the model file's content, global batch, sequence length, dtype, the sub-cluster's
spec, the search's time limit, simplan's version and COUNTING_VERSION.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterable
from concurrent.futures import as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simplan.errors import SimplanError
from simplan.schedule.core import Job, Shape, Speed
from simplan.schedule.shapes import (
    allows,
    candidate_shapes,
    kind_shapes,
    node_kinds,
    shape_label,
    shape_spec,
)
from simplan.topology.cluster_spec import ClusterSpec

SPEED_RECORD_VERSION = 1
DEFAULT_SEARCH_LIMIT_S = 30.0  # per (job kind, shape) search
ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True, kw_only=True)
class SpeedTask:
    """One search: a job kind on the sub-cluster of one shape (picklable, for any executor)."""

    model: str
    global_batch: int
    seq_len: int
    dtype: str
    shape: Shape
    spec: ClusterSpec
    time_limit_s: float


def model_digest(model: str) -> str:
    """A hash of what defines a model spec: its file's text (a preset written in Python with
    the presets beside it) and its factory's name."""
    from simplan.sources import resolve

    source = resolve(model)
    files = [source.path]
    if source.kind == "preset-py":  # presets may import each other
        files = sorted(source.path.parent.glob("*.py"))
    digest = hashlib.sha256(f"{source.kind}|{source.label}|{source.factory}".encode())
    for path in files:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def task_key(task: SpeedTask, model_hash: str) -> str:
    """The cache key of a search: a hash of everything that decides its result."""
    from simplan import __version__
    from simplan.sources import COUNTING_VERSION

    calibration = b""
    if task.spec.calibration and Path(task.spec.calibration).is_file():
        calibration = Path(task.spec.calibration).read_bytes()
    fields = (
        SPEED_RECORD_VERSION, __version__, COUNTING_VERSION, model_hash, task.global_batch,
        task.seq_len, task.dtype, repr(task.shape), _spec_text(task.spec), task.time_limit_s,
    )  # fmt: skip
    digest = hashlib.sha256(repr(fields).encode() + calibration).hexdigest()
    return digest[:32]


def _spec_text(spec: ClusterSpec) -> str:
    """The spec's values, without where its device numbers were read from (a measured CPU
    device names its benchmark file: the same numbers from another cache are the same spec)."""
    groups = tuple(
        dataclasses.replace(g, device=dataclasses.replace(g.device, sources={}))
        for g in spec.groups
    )
    return repr(dataclasses.replace(spec, groups=groups))


def search_speed(task: SpeedTask) -> dict[str, Any]:
    """The best plan's simulated step time for one task (a record for the cache); a job that
    does not fit the shape gets step_time_s None and the planner's reason."""
    from simplan.planner import SearchOptions, search
    from simplan.topology import load_cluster

    record: dict[str, Any] = {
        "kind": "simplan-speed", "version": SPEED_RECORD_VERSION, "model": task.model,
        "global_batch": task.global_batch, "seq_len": task.seq_len, "dtype": task.dtype,
        "shape": shape_label(task.shape), "cluster": task.spec.name,
    }  # fmt: skip
    options = SearchOptions(
        global_batch=task.global_batch, seq_len=task.seq_len or None, top=1,
        time_limit_s=task.time_limit_s, dtype=task.dtype,
    )  # fmt: skip
    try:
        result = search(task.model, load_cluster(task.spec), options)
    except SimplanError as exc:
        return {**record, "step_time_s": None, "plan": "", "reason": str(exc)}
    best = result.plans[0]
    return {
        **record,
        "step_time_s": best.step_time_s,
        "plan": best.config.describe(),
        "reason": "",
        "cut_short": list(result.cut_short),
    }


def speed_of(record: dict[str, Any]) -> Speed | None:
    if record.get("step_time_s") is None:
        return None
    meta = {"shape": str(record["shape"])}
    if record.get("cut_short"):
        meta["cut_short"] = "; ".join(record["cut_short"])
    return Speed(
        step_time_s=float(record["step_time_s"]),
        source="simulated",
        plan=str(record["plan"]),
        meta=meta,
    )


class PlannedSpeeds:
    """A SpeedTable from the planner and simulator (see the module's docstring)."""

    def __init__(
        self,
        spec: ClusterSpec | str,
        *,
        cache_dir: str | Path | None = None,
        executor: str = "local",
        time_limit_s: float = DEFAULT_SEARCH_LIMIT_S,
        dtype: str = "bf16",
    ) -> None:
        from simplan.schedule.executors import check_executor
        from simplan.sources import cache_dir as default_cache
        from simplan.topology.cluster_spec import load_spec

        self.spec = load_spec(spec) if isinstance(spec, str) else spec
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache() / "speeds"
        self.executor = check_executor(executor)
        if not time_limit_s > 0:
            raise SimplanError(f"time limit must be > 0 seconds, got {time_limit_s}")
        self.time_limit_s = time_limit_s
        self.dtype = dtype
        self.records: dict[str, dict[str, Any]] = {}  # by cache key
        self.searched = 0  # searches run by this table (the rest came from the cache)
        self._model_hashes: dict[str, str] = {}
        self._speeds: dict[tuple[str, Shape], Speed | None] = {}  # by (job kind, shape)
        self._shapes = frozenset(
            shape
            for kind in node_kinds(self.spec).values()
            for shape in kind_shapes(kind, 1, kind.gpus)
        )

    def task(self, job: Job, shape: Shape) -> SpeedTask:
        return SpeedTask(
            model=job.model, global_batch=job.global_batch, seq_len=job.seq_len,
            dtype=self.dtype, shape=shape, spec=shape_spec(self.spec, shape),
            time_limit_s=self.time_limit_s,
        )  # fmt: skip

    def key(self, task: SpeedTask) -> str:
        if task.model not in self._model_hashes:
            self._model_hashes[task.model] = model_digest(task.model)
        return task_key(task, self._model_hashes[task.model])

    def _path(self, key: str) -> Path:
        return self.cache_dir / f"{key}.json"

    def _cached(self, key: str) -> dict[str, Any] | None:
        if key in self.records:
            return self.records[key]
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return None  # a damaged entry is searched again and replaced
        if not isinstance(record, dict) or record.get("version") != SPEED_RECORD_VERSION:
            return None
        self.records[key] = record
        return record

    def _store(self, key: str, record: dict[str, Any]) -> None:
        from simplan.outputs import write_json_atomic

        write_json_atomic(record, self._path(key))
        self.records[key] = record
        self.searched += 1

    def _fits(self, job: Job, shape: Shape) -> bool:
        return shape in self._shapes and allows(job, shape)

    def prepare(
        self,
        jobs: Iterable[Job],
        shapes: Iterable[Shape] | None = None,
        progress: ProgressFn | None = None,
    ) -> int:
        """Search every (job kind x shape) not yet cached, on the executor: each job's
        candidate shapes, or those of `shapes` the job allows. Returns the searches run."""
        given = None if shapes is None else list(shapes)
        todo: dict[str, SpeedTask] = {}
        for job in jobs:
            chosen = candidate_shapes(self.spec, job)
            if given is not None:
                chosen = [s for s in given if s in chosen]
            for shape in chosen:
                task = self.task(job, shape)
                key = self.key(task)
                if key not in todo and self._cached(key) is None:
                    todo[key] = task
        self._run(todo, progress)
        return len(todo)

    def _run(self, todo: dict[str, SpeedTask], progress: ProgressFn | None) -> None:
        from simplan.schedule.executors import open_executor

        if not todo:
            return
        with open_executor(self.executor, tasks=len(todo)) as pool:
            futures = {pool.submit(search_speed, task): key for key, task in todo.items()}
            for done, future in enumerate(as_completed(futures), 1):
                self._store(futures[future], future.result())
                if progress:
                    progress("speeds", done, len(todo))

    def speed(self, job: Job, shape: Shape) -> Speed | None:
        """The job's speed on the shape (searched now if not prepared); None where the job
        does not allow the shape, the cluster has no such shape, or no plan fits."""
        if not self._fits(job, shape):
            return None
        known = (job.kind, shape)
        if known not in self._speeds:
            task = self.task(job, shape)
            key = self.key(task)
            record = self._cached(key)
            if record is None:
                record = search_speed(task)
                self._store(key, record)
            self._speeds[known] = speed_of(record)
        return self._speeds[known]

    def step_time_s(self, job: Job, shape: Shape) -> float | None:
        speed = self.speed(job, shape)
        return None if speed is None else speed.step_time_s

    def reason(self, job: Job, shape: Shape) -> str:
        """Why a job has no speed on a shape ('' when it has one)."""
        if not self._fits(job, shape):
            return "not a shape the job allows on this cluster"
        record = self._cached(self.key(self.task(job, shape)))
        return "" if record is None else str(record.get("reason", ""))
