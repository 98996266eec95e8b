"""Synthetic traces follow the cited Philly statistics within sampling error."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simplan.errors import SimplanError
from simplan.schedule.core import Job, Shape
from simplan.schedule.synthetic import (
    JobKind,
    default_kinds,
    draw_jobs,
    duration_cdf,
    load_workload,
    packed_shape,
    synthetic_trace,
    workload_names,
)
from simplan.topology.cluster_spec import load_spec

N = 20_000
RATE = 30.0  # jobs per hour
KS_CRITICAL = 1.95  # / sqrt(n): the Kolmogorov-Smirnov test at alpha = 0.001


def _ks(samples: np.ndarray, cdf) -> float:
    x = np.sort(samples)
    model = np.array([cdf(v) for v in x])
    n = len(x)
    above = np.arange(1, n + 1) / n - model
    below = model - np.arange(0, n) / n
    return float(max(above.max(), below.max()))


@pytest.fixture(scope="module")
def draws():
    return draw_jobs(N, seed=7, jobs_per_hour=RATE, workload=load_workload("philly"), kinds=3)


def test_philly_is_a_workload_with_its_source() -> None:
    assert "philly" in workload_names()
    w = load_workload("philly")
    assert "Jeon" in w.source and "Gavel" in w.source
    assert sum(w.gpu_probabilities) == pytest.approx(1.0)


def test_gpu_counts_follow_the_distribution(draws) -> None:
    w = load_workload("philly")
    gpus = np.array([d.gpus for d in draws])
    for value, p in zip(w.gpu_values, w.gpu_probabilities, strict=True):
        share = float(np.mean(gpus == value))
        assert abs(share - p) < 4.5 * math.sqrt(p * (1 - p) / N), (value, share, p)
    assert set(gpus) == set(w.gpu_values)


def test_durations_follow_the_log_uniform_mixture(draws) -> None:
    w = load_workload("philly")
    durations = np.array([d.duration_s for d in draws])
    assert _ks(durations, lambda v: duration_cdf(w, v)) < KS_CRITICAL / math.sqrt(N)
    # by hand: 20% of the jobs run 10**3..10**4 minutes, none under 10**1.5 minutes
    long = float(np.mean(durations > 60 * 1e3))
    assert abs(long - 0.2) < 4.5 * math.sqrt(0.2 * 0.8 / N)
    assert durations.min() >= 60 * 10**1.5 and durations.max() <= 60 * 1e4


def test_arrivals_are_poisson_at_the_rate(draws) -> None:
    arrivals = np.array([d.arrival_s for d in draws])
    assert arrivals[0] == 0.0 and np.all(np.diff(arrivals) > 0)
    gaps = np.diff(arrivals)
    mean = 3600.0 / RATE
    assert abs(gaps.mean() - mean) < 4.5 * mean / math.sqrt(len(gaps))
    assert _ks(gaps, lambda v: 1 - math.exp(-v / mean)) < KS_CRITICAL / math.sqrt(len(gaps))


def test_kinds_are_uniform(draws) -> None:
    kinds = np.array([d.kind for d in draws])
    for k in range(3):
        assert abs(float(np.mean(kinds == k)) - 1 / 3) < 4.5 * math.sqrt(2 / 9 / N)


def test_seeded() -> None:
    w = load_workload("philly")
    a = draw_jobs(50, seed=1, jobs_per_hour=5, workload=w)
    assert a == draw_jobs(50, seed=1, jobs_per_hour=5, workload=w)
    assert a != draw_jobs(50, seed=2, jobs_per_hour=5, workload=w)
    faster = draw_jobs(50, seed=1, jobs_per_hour=10, workload=w)
    assert [d.gpus for d in faster] == [d.gpus for d in a]  # own streams: only arrivals change
    assert [d.arrival_s * 2 for d in faster] == pytest.approx([d.arrival_s for d in a])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"count": 0}, "--jobs must be"), ({"jobs_per_hour": 0.0}, "--jobs-per-hour must be")],
)
def test_bad_settings(kwargs, message) -> None:
    settings = {"count": 5, "seed": 0, "jobs_per_hour": 1.0, "workload": load_workload()}
    with pytest.raises(SimplanError, match=message):
        draw_jobs(**{**settings, **kwargs})


class FakeSpeeds:
    """1 s per step on one GPU, perfectly linear; 'huge' fits nowhere."""

    def step_time_s(self, job: Job, shape: Shape) -> float | None:
        return None if job.model == "huge" else 1.0 / shape.gpus


def test_work_is_the_duration_over_the_step_time() -> None:
    spec = load_spec("dgx-a100", nodes=2)
    draws = draw_jobs(200, seed=3, jobs_per_hour=10, workload=load_workload())
    kinds = (JobKind(model="huge", global_batch=8), JobKind(model="gpt3-125m", global_batch=256))
    jobs = synthetic_trace(draws, kinds=kinds, speeds=FakeSpeeds(), spec=spec, gpu_type="a100-80gb")
    assert len(jobs) == 200 and len({j.id for j in jobs}) == 200
    for job, draw in zip(jobs, draws, strict=True):
        assert job.model == "gpt3-125m"  # huge gives way
        assert job.min_gpus == job.max_gpus == draw.gpus
        assert job.work == round(draw.duration_s * draw.gpus)
        assert job.arrival_s == pytest.approx(draw.arrival_s, abs=1e-3)


def test_packed_shape() -> None:
    spec = load_spec("dgx-a100", nodes=2)
    assert packed_shape(spec, "a100-80gb", 8) == Shape(gpu_type="a100-80gb", gpus=8, nodes=1)
    assert packed_shape(spec, "a100-80gb", 16).nodes == 2
    with pytest.raises(SimplanError, match="cannot hold a 32-GPU job"):
        packed_shape(spec, "a100-80gb", 32)


def test_default_kinds_are_presets() -> None:
    from simplan.sources import resolve

    for kind in default_kinds():
        assert resolve(kind.model).kind == "toml"
