"""The results of a simulated schedule, as frozen values that write to one JSON document."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SCHEDULE_SCHEMA_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class JobRecord:
    """One job's life: submitted at arrival_s, first placed at first_start_s, done at finish_s.
    isolated_s: its run time alone on the cluster (rigid GPU count, best type, packed), the
    denominator of its finish-time fairness."""

    id: str
    arrival_s: float
    first_start_s: float
    finish_s: float
    gpus: int
    gpu_s: float
    preemptions: int
    restarts: int
    lost_steps: float
    isolated_s: float

    @property
    def jct_s(self) -> float:
        return self.finish_s - self.arrival_s

    @property
    def queueing_s(self) -> float:
        return self.first_start_s - self.arrival_s


@dataclass(frozen=True, kw_only=True)
class Segment:
    """A job on some GPUs from start_s to end_s: (node index, GPUs) pairs; the first delay_s
    seconds it makes no progress (a restart's checkpoint load, a launch)."""

    job: str
    gpu_type: str
    per_node: tuple[tuple[int, int], ...]
    start_s: float
    end_s: float
    delay_s: float = 0.0

    def to_list(self) -> list[Any]:
        return [self.job, self.gpu_type, [list(p) for p in self.per_node], self.start_s,
                self.end_s, self.delay_s]  # fmt: skip

    @staticmethod
    def from_list(row: list[Any]) -> Segment:
        job, gpu_type, per_node, start_s, end_s, delay_s = row
        pairs = tuple((int(n), int(g)) for n, g in per_node)
        return Segment(
            job=str(job),
            gpu_type=str(gpu_type),
            per_node=pairs,
            start_s=float(start_s),
            end_s=float(end_s),
            delay_s=float(delay_s),
        )


@dataclass(frozen=True, kw_only=True)
class Metrics:
    """Aggregates of a schedule (formulas in simplan.schedule.metrics)."""

    jobs: int
    avg_jct_s: float
    median_jct_s: float
    p99_jct_s: float
    makespan_s: float
    utilization: float
    avg_queueing_s: float
    avg_finish_time_ratio: float
    max_finish_time_ratio: float
    preemptions: int
    failures: int


@dataclass(frozen=True, kw_only=True)
class ScheduleResult:
    """A policy's schedule of a trace on a cluster. busy: (time_s, allocated GPUs) at every
    change; notes: what the policy reports of itself (a static plan's solver status and gap)."""

    policy: str
    cluster: str
    total_gpus: int
    metrics: Metrics
    jobs: tuple[JobRecord, ...]
    busy: tuple[tuple[float, int], ...]
    events: int
    wall_s: float
    notes: tuple[str, ...] = ()
    segments: tuple[Segment, ...] = ()  # who ran where and when (the Gantt chart)

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "cluster": self.cluster,
            "total_gpus": self.total_gpus,
            "metrics": asdict(self.metrics),
            "jobs": [
                {**asdict(j), "jct_s": j.jct_s, "queueing_s": j.queueing_s} for j in self.jobs
            ],
            "busy": [list(b) for b in self.busy],
            "events": self.events,
            "wall_s": self.wall_s,
            "notes": list(self.notes),
            # [job, gpu type, [[node, GPUs], ...], start s, end s, delay s]
            "segments": [g.to_list() for g in self.segments],
        }


def results_document(results: list[ScheduleResult], trace: str) -> dict[str, Any]:
    """One JSON document for one or more policies' schedules of a trace."""
    return {
        "schema": {"kind": "schedule", "version": SCHEDULE_SCHEMA_VERSION},
        "trace": trace,
        "results": [r.to_dict() for r in results],
    }


def result_from_dict(data: dict[str, Any]) -> ScheduleResult:
    """A ScheduleResult from its to_dict() form (KeyError/TypeError/ValueError when malformed)."""
    jobs = tuple(
        JobRecord(**{k: v for k, v in j.items() if k not in ("jct_s", "queueing_s")})
        for j in data["jobs"]
    )
    return ScheduleResult(
        policy=str(data["policy"]),
        cluster=str(data["cluster"]),
        total_gpus=int(data["total_gpus"]),
        metrics=Metrics(**data["metrics"]),
        jobs=jobs,
        busy=tuple((float(t), int(g)) for t, g in data["busy"]),
        events=int(data["events"]),
        wall_s=float(data["wall_s"]),
        notes=tuple(str(n) for n in data["notes"]),
        segments=tuple(Segment.from_list(g) for g in data.get("segments", ())),
    )


def read_results(path: str | Path) -> tuple[str, list[ScheduleResult]]:
    """(trace, results) of a schedule.json written by `simplan schedule --out` or `--json`."""
    from simplan.errors import SimplanError
    from simplan.io import read_json_object

    data = read_json_object(path)
    schema = data.get("schema")
    if not isinstance(schema, dict) or schema.get("kind") != "schedule":
        raise SimplanError(
            f"{path}: not a simplan schedule file; write one with simplan schedule --out DIR"
        )
    if schema.get("version") != SCHEDULE_SCHEMA_VERSION:
        raise SimplanError(
            f"{path}: schedule schema version {schema.get('version')!r} is not supported; "
            "rerun simplan schedule"
        )
    try:
        return str(data["trace"]), [result_from_dict(r) for r in data["results"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise SimplanError(
            f"{path}: a malformed schedule result ({exc!r}); rerun simplan schedule"
        ) from None
