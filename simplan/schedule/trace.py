"""Job traces: the jobs a cluster is asked to run, read from and written to CSV or JSON.

The schema (version 1) is documented in docs/job-trace.md. Every error names the file, the row
(CSV: its line number; JSON: jobs[i]) and the field, on one line.
"""

from __future__ import annotations

import csv
import functools
import io
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simplan.errors import SimplanError
from simplan.io import read_json, read_text
from simplan.schedule.core import WORK_UNITS, Job

TRACE_VERSION = 1
TRACE_KIND = "simplan-job-trace"
FORMATS = ("csv", "json")
GPU_TYPE_SEPARATOR = ";"  # between allowed GPU types in a CSV cell
MAX_JOBS = 1_000_000

# the columns of a v1 CSV, in the order write_trace writes them
COLUMNS = (
    "version",
    "id",
    "model",
    "global_batch",
    "seq_len",
    "work",
    "work_unit",
    "arrival_s",
    "weight",
    "deadline_s",
    "min_gpus",
    "max_gpus",
    "gpu_types",
)
REQUIRED = ("id", "model", "global_batch", "work")


# ------------------------------------------------------------------ GPU type names


def _normalised(name: str) -> str:
    text = re.sub(r"[\s_]+", "-", name.strip().lower())
    text = re.sub(r"^nvidia-", "", text)
    return re.sub(r"-(sxm\d?|pcie)(?=-|$)", "", text)


@functools.lru_cache(maxsize=256)
def canonical_gpu_type(name: str) -> str:
    """The device-table name (simplan.devices) of a GPU type as people write it:
    'A100' -> 'a100-80gb', 'NVIDIA H100 SXM' -> 'h100-sxm', 'a100_40gb' -> 'a100-40gb',
    'CPU' -> 'cpu'."""
    from simplan.devices import DEVICE_ALIASES, device_names

    known = device_names()
    text = _normalised(name)
    candidates = (text, f"{text}-sxm", text.replace("-80g", "-80gb").replace("-40g", "-40gb"))
    for key in candidates:
        key = DEVICE_ALIASES.get(key, key)
        if key in known:
            return key
    # '80gb a100' or 'a100 80gb' word orders
    words = sorted(text.split("-"))
    for name_known in known:
        if sorted(name_known.split("-")) == words:
            return name_known
    raise SimplanError(f"unknown GPU type {name!r}: use one of {', '.join(known)} (or A100, H100)")


# ------------------------------------------------------------------ reading


@dataclass(frozen=True)
class _Where:
    """Where a job's fields come from, for error messages."""

    path: Path
    row: str

    def fail(self, field: str, problem: str) -> SimplanError:
        return SimplanError(f"{self.path}: {self.row}, field {field}: {problem}")


def _number(where: _Where, field: str, value: Any) -> float:
    if isinstance(value, bool):
        raise where.fail(field, f"must be a number, got {value!r}")
    if isinstance(value, int | float):
        number = float(value)
    else:
        try:
            number = float(str(value).strip())
        except ValueError:
            raise where.fail(field, f"must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise where.fail(field, f"must be a finite number, got {value!r}")
    return number


def _integer(where: _Where, field: str, value: Any) -> int:
    number = _number(where, field, value)
    if number != int(number):
        raise where.fail(field, f"must be a whole number, got {value!r}")
    return int(number)


def _at_least(where: _Where, field: str, value: float, low: float, fix: str) -> None:
    if value < low:
        raise where.fail(field, f"must be >= {low:g}, got {value:g}; {fix}")


def _model(where: _Where, value: Any) -> str:
    text = str(value).strip()
    if not text:
        raise where.fail("model", "is empty; give a preset, a .toml file or file.py:factory")
    path_part = text.rsplit(":", 1)[0] if ".py:" in text else text
    is_file = text.endswith(".toml") or ".py:" in text
    beside = where.path.parent / path_part  # a model file named relative to the trace
    if is_file and not Path(path_part).exists() and beside.exists():
        text = str(where.path.parent / text)
    try:
        _resolved(text, os.getcwd())
    except SimplanError as exc:
        raise where.fail("model", str(exc)) from None
    return text


@functools.lru_cache(maxsize=1024)
def _resolved(model: str, cwd: str) -> str:
    """The model spec if it names a model (a preset, a model file, from `cwd`); cached while
    the process runs, so a trace of 10,000 jobs looks each model up once."""
    from simplan.sources import resolve

    resolve(model)
    return model


def _gpu_types(where: _Where, value: Any) -> tuple[str, ...]:
    if isinstance(value, list | tuple):
        names = [str(v) for v in value]
    else:
        names = [v for v in str(value).split(GPU_TYPE_SEPARATOR) if v.strip()]
    out: list[str] = []
    for name in names:
        try:
            canonical = canonical_gpu_type(name)
        except SimplanError as exc:
            raise where.fail("gpu_types", str(exc)) from None
        if canonical not in out:
            out.append(canonical)
    return tuple(out)


def _present(raw: Mapping[str, Any], field: str) -> bool:
    value = raw.get(field)
    return value is not None and not (isinstance(value, str) and not value.strip())


def _job(where: _Where, raw: Mapping[str, Any]) -> Job:
    """One Job from one row's fields (strings from CSV, values from JSON)."""
    for field in REQUIRED:
        if not _present(raw, field):
            raise where.fail(field, "is missing; every job needs id, model, global_batch, work")
    unknown = sorted(set(raw) - set(COLUMNS))
    if unknown:
        raise where.fail(unknown[0], f"is not a v1 field; use {', '.join(COLUMNS)}")

    def get(field: str, default: Any) -> Any:
        return raw[field] if _present(raw, field) else default

    global_batch = _integer(where, "global_batch", raw["global_batch"])
    _at_least(where, "global_batch", global_batch, 1, "give samples per optimizer step")
    seq_len = _integer(where, "seq_len", get("seq_len", 0))
    _at_least(where, "seq_len", seq_len, 0, "give tokens per sample, or 0 for the model's own")
    work = _number(where, "work", raw["work"])
    if work <= 0:
        raise where.fail("work", f"must be > 0, got {work:g}; give the training the job needs")
    unit = str(get("work_unit", "steps")).strip()
    if unit not in WORK_UNITS:
        raise where.fail("work_unit", f"must be one of {', '.join(WORK_UNITS)}, got {unit!r}")
    arrival_s = _number(where, "arrival_s", get("arrival_s", 0.0))
    _at_least(where, "arrival_s", arrival_s, 0, "give seconds from the trace's start")
    weight = _number(where, "weight", get("weight", 1.0))
    _at_least(where, "weight", weight, 0, "give a priority >= 0")
    deadline = get("deadline_s", None)
    deadline_s = None if deadline is None else _number(where, "deadline_s", deadline)
    if deadline_s is not None and deadline_s <= arrival_s:
        raise where.fail(
            "deadline_s", f"{deadline_s:g} is not after arrival_s {arrival_s:g}; give a later one"
        )
    min_gpus = _integer(where, "min_gpus", get("min_gpus", 1))
    _at_least(where, "min_gpus", min_gpus, 1, "a job needs at least one GPU")
    max_gpus = _integer(where, "max_gpus", get("max_gpus", 0))
    if max_gpus and max_gpus < min_gpus:
        raise where.fail(
            "max_gpus", f"{max_gpus} is below min_gpus {min_gpus}; raise it (0: no bound)"
        )
    _at_least(where, "max_gpus", max_gpus, 0, "0 means no bound")
    return Job(
        id=str(raw["id"]).strip(),
        model=_model(where, raw["model"]),
        global_batch=global_batch,
        seq_len=seq_len,
        work=work,
        work_unit=unit,
        arrival_s=arrival_s,
        weight=weight,
        deadline_s=deadline_s,
        min_gpus=min_gpus,
        max_gpus=max_gpus,
        gpu_types=_gpu_types(where, get("gpu_types", "")),
    )


def _check_version(where: _Where, value: Any) -> None:
    if str(value).strip() not in (str(TRACE_VERSION), f"{TRACE_VERSION}.0"):
        raise where.fail(
            "version", f"is {value!r}; this simplan reads version {TRACE_VERSION} traces"
        )


def _csv_rows(path: Path) -> list[tuple[_Where, dict[str, Any]]]:
    """The rows of a CSV trace with their line numbers (blank lines and # comments skipped)."""
    kept = [
        (number, line)
        for number, line in enumerate(read_text(path).splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    reader = csv.DictReader(line for _, line in kept)
    header = reader.fieldnames or []
    if "version" not in header:
        raise SimplanError(
            f"{path}: the header has no version column; a v1 trace starts with "
            f"{','.join(COLUMNS)} (see docs/job-trace.md)"
        )
    rows = []
    for index, row in enumerate(reader):
        where = _Where(path, f"line {kept[index + 1][0]}")
        if None in row or any(v is None for v in row.values()):
            raise where.fail(
                "(row)",
                f"has not the {len(header)} cells of the header; quote cells holding commas",
            )
        _check_version(where, row.pop("version"))
        rows.append((where, row))
    return rows


def _json_rows(path: Path) -> list[tuple[_Where, dict[str, Any]]]:
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("jobs"), list):
        raise SimplanError(
            f'{path}: a JSON trace is an object {{"version": {TRACE_VERSION}, "jobs": [...]}}; '
            "see docs/job-trace.md"
        )
    _check_version(_Where(path, "top level"), data.get("version"))
    extra = sorted(set(data) - {"version", "jobs", "kind", "description"})
    if extra:
        raise SimplanError(f"{path}: unknown top-level field {extra[0]!r}; use version and jobs")
    rows = []
    for index, raw in enumerate(data["jobs"]):
        where = _Where(path, f"jobs[{index}]")
        if not isinstance(raw, dict):
            raise where.fail("(job)", "must be an object of fields")
        rows.append((where, dict(raw)))
    return rows


def trace_format(path: str | Path, flag: str = "trace") -> str:
    """'csv' or 'json', from the file's extension."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise SimplanError(f"{flag} {path}: name a .csv or .json file")
    return suffix


def read_trace(path: str | Path) -> list[Job]:
    """The jobs of a v1 trace (CSV or JSON), in file order; a one-line SimplanError naming the
    row and field for anything wrong."""
    p = Path(path)
    rows = _csv_rows(p) if trace_format(p) == "csv" else _json_rows(p)
    if not rows:
        raise SimplanError(f"{p}: holds no jobs; give at least one")
    if len(rows) > MAX_JOBS:
        raise SimplanError(f"{p}: {len(rows):,} jobs is beyond the limit of {MAX_JOBS:,}")
    jobs: list[Job] = []
    seen: dict[str, str] = {}
    for where, raw in rows:
        job = _job(where, raw)
        if job.id in seen:
            raise where.fail("id", f"{job.id!r} repeats the id of {seen[job.id]}; ids are unique")
        seen[job.id] = where.row
        jobs.append(job)
    return jobs


# ------------------------------------------------------------------ writing


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if value != int(value) else str(int(value))
    return str(value)


def job_record(job: Job) -> dict[str, Any]:
    """A job's v1 fields (the JSON form)."""
    return {
        "id": job.id,
        "model": job.model,
        "global_batch": job.global_batch,
        "seq_len": job.seq_len,
        "work": job.work,
        "work_unit": job.work_unit,
        "arrival_s": job.arrival_s,
        "weight": job.weight,
        "deadline_s": job.deadline_s,
        "min_gpus": job.min_gpus,
        "max_gpus": job.max_gpus,
        "gpu_types": list(job.gpu_types),
    }


def trace_text(jobs: list[Job], fmt: str) -> str:
    """The text of a v1 trace of jobs in 'csv' or 'json'."""
    from simplan.outputs import json_text

    if fmt == "json":
        doc = {"kind": TRACE_KIND, "version": TRACE_VERSION, "jobs": [job_record(j) for j in jobs]}
        return json_text(doc)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for job in jobs:
        record = job_record(job)
        record["gpu_types"] = GPU_TYPE_SEPARATOR.join(job.gpu_types)
        writer.writerow([_cell(TRACE_VERSION)] + [_cell(record[c]) for c in COLUMNS[1:]])
    return out.getvalue()


def write_trace(jobs: list[Job], path: str | Path) -> Path:
    """Write jobs as a v1 trace (CSV or JSON by the extension), atomically."""
    from simplan.outputs import write_text_atomic

    return write_text_atomic(trace_text(jobs, trace_format(path)), path)


# ------------------------------------------------------------------ work


def model_seq_len(model: str) -> int:
    """The sequence length a model is defined with (TOML files without counting; others by
    loading the model graph)."""
    from simplan.sources import load_model, resolve, transformer_spec

    source = resolve(model)
    if source.kind == "toml":
        return int(transformer_spec(source).seq_len)
    return int(load_model(model).seq_len)


def work_steps(job: Job) -> float:
    """The job's work in optimizer steps: steps as given; samples / global batch; tokens /
    (global batch x sequence length, the model's own when the job's is 0)."""
    if job.work_unit == "steps":
        return job.work
    if job.work_unit == "samples":
        return job.work / job.global_batch
    seq_len = job.seq_len or model_seq_len(job.model)
    if seq_len <= 0:
        raise SimplanError(
            f"job {job.id}: work in tokens needs a sequence length, and {job.model} has none; "
            "give seq_len or work in steps or samples"
        )
    return job.work / (job.global_batch * seq_len)
