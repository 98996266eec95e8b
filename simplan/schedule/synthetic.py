"""Synthetic job traces whose arrivals, GPU counts and durations follow published statistics of a
real cluster (simplan/data/cluster_workloads.json holds the numbers and their sources).

A job is drawn as (arrival, GPU count, duration on that many GPUs, job kind); its work in
optimizer steps is the duration divided by its step time on that many GPUs of the reference GPU
type packed in as few nodes as hold them (from a SpeedTable, e.g. PlannedSpeeds), so that a job
run alone on what it asked for lasts the drawn duration.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simplan.errors import SimplanError
from simplan.schedule.core import Job, Shape, SpeedTable
from simplan.schedule.shapes import node_kinds

WORKLOADS_FILE = Path(__file__).resolve().parent.parent / "data" / "cluster_workloads.json"
DURATION_UNITS_S = {"seconds": 1.0, "minutes": 60.0, "hours": 3600.0}
MAX_SYNTHETIC_JOBS = 1_000_000


@dataclass(frozen=True, kw_only=True)
class Workload:
    """The distributions of one published cluster workload.

    gpu_values, gpu_probabilities: GPUs a job asks for, and how often.
    duration_components: (weight, log10_low, log10_high): the duration in `duration_unit_s`
        units is 10**U(low, high) with probability weight.
    """

    name: str
    gpu_values: tuple[int, ...]
    gpu_probabilities: tuple[float, ...]
    duration_components: tuple[tuple[float, float, float], ...]
    duration_unit_s: float
    source: str


@dataclass(frozen=True, kw_only=True)
class JobKind:
    """What a synthetic job trains: a model spec, its global batch and sequence length."""

    model: str
    global_batch: int
    seq_len: int = 0


@dataclass(frozen=True, kw_only=True)
class Draw:
    """One drawn job before its work is known: arrival, GPUs, duration, kind (an index)."""

    arrival_s: float
    gpus: int
    duration_s: float
    kind: int


def _workloads_doc() -> dict[str, Any]:
    from simplan.io import read_json_object

    return read_json_object(WORKLOADS_FILE)


def workload_names() -> list[str]:
    return sorted(_workloads_doc()["workloads"])


def load_workload(name: str = "philly") -> Workload:
    """A workload of simplan/data/cluster_workloads.json by name."""
    workloads = _workloads_doc()["workloads"]
    if name not in workloads:
        raise SimplanError(f"unknown workload {name!r}: use one of {', '.join(workloads)}")
    raw = workloads[name]
    duration = raw["duration"]
    return Workload(
        name=name,
        gpu_values=tuple(int(v) for v in raw["gpus"]["values"]),
        gpu_probabilities=tuple(float(p) for p in raw["gpus"]["probabilities"]),
        duration_components=tuple(
            (float(c["weight"]), float(c["log10_low"]), float(c["log10_high"]))
            for c in duration["components"]
        ),
        duration_unit_s=DURATION_UNITS_S[duration["unit"]],
        source=str(raw["description"]),
    )


def default_kinds() -> tuple[JobKind, ...]:
    """The job kinds of cluster_workloads.json's `models` (GPT-3 sizes, published batches)."""
    return tuple(
        JobKind(model=k["model"], global_batch=int(k["global_batch"]), seq_len=int(k["seq_len"]))
        for k in _workloads_doc()["models"]["jobs"]
    )


def duration_cdf(workload: Workload, duration_s: float) -> float:
    """P(duration <= duration_s) under the workload's mixture (closed form)."""
    if duration_s <= 0:
        return 0.0
    x = math.log10(duration_s / workload.duration_unit_s)
    return sum(
        w * min(1.0, max(0.0, (x - lo) / (hi - lo))) for w, lo, hi in workload.duration_components
    )


def draw_jobs(
    count: int, *, seed: int, jobs_per_hour: float, workload: Workload, kinds: int = 1
) -> list[Draw]:
    """`count` jobs: Poisson arrivals at `jobs_per_hour` (the first at 0), GPU counts and
    durations from the workload, kinds uniform over range(kinds). Each quantity has its own
    random stream, so changing one setting does not reshuffle the others."""
    if not 1 <= count <= MAX_SYNTHETIC_JOBS:
        raise SimplanError(f"--jobs must be 1..{MAX_SYNTHETIC_JOBS:,}, got {count}")
    if not (jobs_per_hour > 0 and math.isfinite(jobs_per_hour)):
        raise SimplanError(f"--jobs-per-hour must be a number > 0, got {jobs_per_hour}")
    arrivals, sizes, mixture, spans, kind_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)
    )
    gaps = arrivals.exponential(3600.0 / jobs_per_hour, size=count)
    arrival_s = np.concatenate(([0.0], np.cumsum(gaps[1:])))
    gpus = sizes.choice(workload.gpu_values, size=count, p=workload.gpu_probabilities)
    weights = np.array([c[0] for c in workload.duration_components])
    component = mixture.choice(len(weights), size=count, p=weights / weights.sum())
    low = np.array([workload.duration_components[c][1] for c in component])
    high = np.array([workload.duration_components[c][2] for c in component])
    duration_s = workload.duration_unit_s * 10 ** spans.uniform(low, high)
    kind = kind_rng.integers(0, kinds, size=count)
    return [
        Draw(arrival_s=float(a), gpus=int(g), duration_s=float(d), kind=int(k))
        for a, g, d, k in zip(arrival_s, gpus, duration_s, kind, strict=True)
    ]


def packed_shape(spec: Any, gpu_type: str, gpus: int) -> Shape:
    """`gpus` GPUs of `gpu_type` in as few nodes of the cluster as hold them."""
    kind = node_kinds(spec).get(gpu_type)
    if kind is None:
        raise SimplanError(
            f"{spec.name} has no {gpu_type} nodes; use one of {', '.join(node_kinds(spec))}"
        )
    nodes = -(-gpus // kind.gpus_per_node)
    if gpus > kind.gpus or gpus % nodes:
        raise SimplanError(
            f"{spec.name} cannot hold a {gpus}-GPU job on {gpu_type} ({kind.nodes} nodes of "
            f"{kind.gpus_per_node}); use a larger cluster (--nodes)"
        )
    return Shape(gpu_type=gpu_type, gpus=gpus, nodes=nodes)


def synthetic_trace(
    draws: list[Draw],
    *,
    kinds: tuple[JobKind, ...],
    speeds: SpeedTable,
    spec: Any,
    gpu_type: str,
) -> list[Job]:
    """Jobs from draws: each rigid on its drawn GPU count (min = max), its work the drawn
    duration over its step time on the packed reference shape. A kind that does not fit that
    shape gives way to the next kind that does."""
    jobs = []
    for i, draw in enumerate(draws):
        shape = packed_shape(spec, gpu_type, draw.gpus)
        for offset in range(len(kinds)):
            kind = kinds[(draw.kind + offset) % len(kinds)]
            job = Job(
                id=f"job-{i:05d}", model=kind.model, global_batch=kind.global_batch,
                seq_len=kind.seq_len, work=1.0, arrival_s=round(draw.arrival_s, 3),
                min_gpus=draw.gpus, max_gpus=draw.gpus,
            )  # fmt: skip
            step_s = speeds.step_time_s(job, shape)
            if step_s:
                work = max(1.0, round(draw.duration_s / step_s))
                jobs.append(dataclasses.replace(job, work=float(work)))
                break
        else:
            raise SimplanError(
                f"no job kind fits {draw.gpus} {gpu_type} GPUs "
                f"({', '.join(k.model for k in kinds)}); give smaller models"
            )
    return jobs
