"""Bounded simulation of many identical micro-batches: simulate a few, extend the steady state.

Every micro-batch of a step costs the same, so after the pipeline's warm-up a schedule repeats:
from some m0 on, p more micro-batches (p = pp, a period of GPipe, 1F1B and interleaved 1F1B, and
the step interleaved needs m to be a multiple of) add the same seconds to the step, and the same
amounts to each rank's compute, recomputation, optimizer and exposed communication time and to
its activation peak (GPipe keeps every micro-batch in flight, so its peak grows by one period's
activations; 1F1B's and interleaved's stop growing after the warm-up). The warm-up and the tail
(the cool-down, the last backward's gradient buckets, the optimizer) are the same for every m
past m0.

`run_bounded` simulates every micro-batch up to `full_microbatches`. Beyond, it simulates
m0, m0 + p, m0 + 2p and m0 + 3p micro-batches (m0 = m mod p, counted up to at least 4 pp),
checks that each quantity's three successive differences agree (to 1e-9 of its size), and
extends the line to m: q(m) = q(m0 + 3p) + (m - m0 - 3p) / p * (q(m0 + 3p) - q(m0)) / 3.
If they disagree (a longer warm-up), m0 doubles; once the samples would reach m, all m
micro-batches are simulated. The kept timeline (trace events, memory series) is
the last sample's; `simulated_microbatches` says how many micro-batches it holds.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

from simplan.deadline import Deadline
from simplan.sim.engine import EnginePlan, Event, RankStats, run_engine

FULL_MICROBATCHES = 1024  # simulated one by one up to this many; beyond, extrapolated
SAMPLES = 4  # runs at m0, m0 + p, ...: three differences must agree
RELATIVE_TOLERANCE = 1e-9

_LINEAR = ("compute_s", "recompute_s", "optimizer_s", "exposed_comm_s", "finish_s")


@dataclass(frozen=True, kw_only=True)
class BoundedRun:
    """A step's time and per-rank totals for all the plan's micro-batches; the timeline of the
    run that was simulated (all of them, or the last steady-state sample)."""

    step_s: float
    stats: tuple[RankStats, ...]
    events: tuple[Event, ...]
    event_count: int  # events the engine processed, over every run
    microbatches: int
    simulated_microbatches: int  # micro-batches in the kept timeline

    @property
    def extrapolated(self) -> bool:
        return self.simulated_microbatches < self.microbatches


@dataclass(frozen=True, kw_only=True)
class _Sample:
    microbatches: int
    step_s: float
    stats: list[RankStats]
    events: list[Event]
    event_count: int


def run_bounded(
    plan: EnginePlan,
    record: bool = True,
    *,
    full_microbatches: int = FULL_MICROBATCHES,
    deadline: Deadline | None = None,
) -> BoundedRun:
    """Simulate `plan`'s step with work bounded independently of its number of micro-batches
    (and raise simplan.deadline.TimeLimitReached at `deadline`, if given)."""
    m, period = plan.microbatches, plan.pp
    start = max(4 * period, 8)
    count = 0
    while m > full_microbatches:
        m0 = start + (m - start) % period
        last = m0 + (SAMPLES - 1) * period
        if last >= m:
            break
        samples = []
        for k in range(SAMPLES):
            sample = _simulate(plan, m0 + k * period, record and k == SAMPLES - 1, deadline)
            count += sample.event_count
            samples.append(sample)
        extended = _extend(samples, m, period, count)
        if extended is not None:
            return extended
        start *= 2
    full = _simulate(plan, m, record, deadline)
    return BoundedRun(
        step_s=full.step_s,
        stats=tuple(full.stats),
        events=tuple(full.events),
        event_count=count + full.event_count,
        microbatches=m,
        simulated_microbatches=m,
    )


def _simulate(
    plan: EnginePlan, microbatches: int, record: bool, deadline: Deadline | None
) -> _Sample:
    step, stats, events, count = run_engine(
        replace(plan, microbatches=microbatches), record, deadline
    )
    return _Sample(
        microbatches=microbatches, step_s=step, stats=stats, events=events, event_count=count
    )


def _extend(samples: list[_Sample], m: int, period: int, count: int) -> BoundedRun | None:
    """The samples' line extended to m micro-batches, or None where they are not on a line."""
    last = samples[-1]
    periods = (m - last.microbatches) // period
    step = _line([s.step_s for s in samples], periods, last.step_s)
    if step is None:
        return None
    stats = []
    for r, final in enumerate(last.stats):
        values: dict[str, float] = {}
        for name in (*_LINEAR, "peak_act_bytes"):
            scale = last.step_s if name != "peak_act_bytes" else 0.0
            value = _line([getattr(s.stats[r], name) for s in samples], periods, scale)
            if value is None:
                return None
            values[name] = value
        stats.append(
            RankStats(
                **values,
                finished=final.finished,
                act_bytes=final.act_bytes,
                memory_series=final.memory_series,
            )
        )
    return BoundedRun(
        step_s=step,
        stats=tuple(stats),
        events=tuple(last.events),
        event_count=count,
        microbatches=m,
        simulated_microbatches=last.microbatches,
    )


def _line(values: list[float], periods: int, scale: float) -> float | None:
    """values[-1] + periods x the common difference of `values`, if their differences agree
    to RELATIVE_TOLERANCE of the largest of them, `scale` and the differences; else None."""
    steps = [b - a for a, b in itertools.pairwise(values)]
    size = max(abs(scale), *(abs(v) for v in values), *(abs(d) for d in steps))
    tolerance = RELATIVE_TOLERANCE * size
    if any(not math.isclose(d, steps[0], rel_tol=0.0, abs_tol=tolerance) for d in steps):
        return None
    slope = (values[-1] - values[0]) / len(steps)
    return values[-1] + periods * slope
