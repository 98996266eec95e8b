"""The values the scheduling parts share: a job, a candidate allocation, and the speed of a job
on an allocation (what the two-level view gives a policy).

A policy never asks how a job runs; it asks `SpeedTable.step_time_s(job, shape)`: the step time of
the job's best plan on that shape (None: it does not fit or is not allowed there).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

WORK_UNITS = ("steps", "samples", "tokens")


@dataclass(frozen=True, kw_only=True)
class Job:
    """One training job of a trace.

    model: a model spec (preset, TOML file or file.py:factory).
    global_batch: samples per optimizer step; seq_len: tokens per sample (0: the model's own).
    work, work_unit: how much training the job needs, in steps, samples or tokens.
    arrival_s: when the job is submitted, seconds from the trace's start.
    weight: its priority in weighted objectives (>= 0).
    deadline_s: optional completion deadline, seconds from the trace's start.
    min_gpus, max_gpus: the allocation sizes it accepts.
    gpu_types: device names it may run on (empty: any).
    """

    id: str
    model: str
    global_batch: int
    seq_len: int = 0
    work: float
    work_unit: str = "steps"
    arrival_s: float = 0.0
    weight: float = 1.0
    deadline_s: float | None = None
    min_gpus: int = 1
    max_gpus: int = 0  # 0: no upper bound
    gpu_types: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        """What decides its speed: jobs of one kind share their speed table rows."""
        return f"{self.model}|gb{self.global_batch}|s{self.seq_len}"


@dataclass(frozen=True, kw_only=True, order=True)
class Shape:
    """A candidate allocation, as far as speed is concerned: how many GPUs of one type, over
    how many nodes (packed: as few nodes as hold them; spread: one GPU count per node)."""

    gpu_type: str
    gpus: int
    nodes: int


@dataclass(frozen=True, kw_only=True)
class Speed:
    """A job kind's speed on a shape: the step time of its best plan there, and where it came
    from ('simulated' with the plan's description, or 'measured')."""

    step_time_s: float
    source: str
    plan: str = ""
    meta: dict[str, str] = field(default_factory=dict)


class SpeedTable(Protocol):
    """Step time of a job's best plan on a shape; None where it does not fit or is not allowed."""

    def step_time_s(self, job: Job, shape: Shape) -> float | None: ...
