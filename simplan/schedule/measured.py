"""A user's measured throughput table as a SpeedTable, in front of the simulated one.

CSV columns (one header line; blank lines and # comments skipped):
  job          a job kind (Job.kind, e.g. 'gpt3-1.3b|gb512|s2048') or a model spec ('gpt3-1.3b')
  gpu_type     a GPU type as people write it (A100, H100 SXM, ...; see trace.canonical_gpu_type)
  gpus         GPUs of the allocation
  steps_per_s  measured optimizer steps per second
  nodes        optional: nodes of the allocation (empty or absent: any)

A job whose kind or model the table names gets its speeds from the table only: a shape the table
does not list has no speed (None), so a policy never mixes measured and simulated speeds of one
job. Other jobs are asked of the fallback table (e.g. PlannedSpeeds).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from simplan.errors import SimplanError
from simplan.io import read_text
from simplan.schedule.core import Job, Shape, Speed, SpeedTable
from simplan.schedule.shapes import allows
from simplan.schedule.trace import canonical_gpu_type

MEASURED_COLUMNS = ("job", "gpu_type", "gpus", "steps_per_s", "nodes")
MEASURED_REQUIRED = ("job", "gpu_type", "gpus", "steps_per_s")


@dataclass(frozen=True, kw_only=True)
class Measurement:
    job: str
    gpu_type: str
    gpus: int
    nodes: int  # 0: any
    steps_per_s: float


def _field(path: Path, line: int, field: str, problem: str) -> SimplanError:
    return SimplanError(f"{path}: line {line}, field {field}: {problem}")


def _row(path: Path, line: int, row: dict[str, str | None]) -> Measurement:
    for name in MEASURED_REQUIRED:
        if not (row.get(name) or "").strip():
            raise _field(path, line, name, "is missing; give job, gpu_type, gpus, steps_per_s")
    try:
        gpu_type = canonical_gpu_type(str(row["gpu_type"]))
    except SimplanError as exc:
        raise _field(path, line, "gpu_type", str(exc)) from None
    counts = {}
    for name in ("gpus", "nodes"):
        text = (row.get(name) or "").strip() or "0"
        if not text.isdigit() or (name == "gpus" and int(text) < 1):
            raise _field(path, line, name, f"must be a whole number >= 1, got {text!r}")
        counts[name] = int(text)
    try:
        rate = float(str(row["steps_per_s"]))
    except ValueError:
        rate = math.nan
    if not (rate > 0 and math.isfinite(rate)):
        raise _field(path, line, "steps_per_s", f"must be a number > 0, got {row['steps_per_s']!r}")
    return Measurement(
        job=str(row["job"]).strip(), gpu_type=gpu_type, gpus=counts["gpus"],
        nodes=counts["nodes"], steps_per_s=rate,
    )  # fmt: skip


def read_measurements(path: str | Path) -> list[Measurement]:
    """The rows of a measured throughput CSV; one-line errors naming line and field."""
    p = Path(path)
    kept = [
        (number, line)
        for number, line in enumerate(read_text(p).splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    reader = csv.DictReader(line for _, line in kept)
    header = list(reader.fieldnames or [])
    missing = [c for c in MEASURED_REQUIRED if c not in header]
    unknown = [c for c in header if c not in MEASURED_COLUMNS]
    if missing or unknown:
        raise SimplanError(
            f"{p}: the header needs {', '.join(MEASURED_REQUIRED)} (and may have nodes); "
            f"{'missing ' + ', '.join(missing) if missing else 'unknown ' + ', '.join(unknown)}"
        )
    rows = [_row(p, kept[i + 1][0], row) for i, row in enumerate(reader)]
    if not rows:
        raise SimplanError(f"{p}: holds no measurements; give at least one row")
    return rows


class MeasuredSpeeds:
    """A SpeedTable from measurements, asking `fallback` for jobs the table does not name."""

    def __init__(self, rows: list[Measurement], fallback: SpeedTable | None = None) -> None:
        self.rows = rows
        self.fallback = fallback
        self.names = {r.job for r in rows}
        self.index: dict[tuple[str, str, int], list[Measurement]] = {}
        for r in rows:
            self.index.setdefault((r.job, r.gpu_type, r.gpus), []).append(r)

    @classmethod
    def from_csv(cls, path: str | Path, fallback: SpeedTable | None = None) -> MeasuredSpeeds:
        return cls(read_measurements(path), fallback)

    def covers(self, job: Job) -> bool:
        return job.kind in self.names or job.model in self.names

    def _match(self, job: Job, shape: Shape) -> Measurement | None:
        for name in (job.kind, job.model):  # the kind is the more specific
            for r in self.index.get((name, shape.gpu_type, shape.gpus), []):
                if r.nodes in (0, shape.nodes):
                    return r
        return None

    def speed(self, job: Job, shape: Shape) -> Speed | None:
        if not self.covers(job):
            if self.fallback is None:
                return None
            speed_fn = getattr(self.fallback, "speed", None)
            if speed_fn is not None:
                result: Speed | None = speed_fn(job, shape)
                return result
            step = self.fallback.step_time_s(job, shape)
            return None if step is None else Speed(step_time_s=step, source="fallback")
        row = self._match(job, shape) if allows(job, shape) else None
        if row is None:
            return None
        return Speed(step_time_s=1.0 / row.steps_per_s, source="measured")

    def step_time_s(self, job: Job, shape: Shape) -> float | None:
        speed = self.speed(job, shape)
        return None if speed is None else speed.step_time_s
