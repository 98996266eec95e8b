"""Where a distillation teacher runs: every placement simulated for one cluster and student
configuration (simplan.distill), the fastest that fits chosen, and the choice explained with
both numbers and what the teacher changes (time, memory, communication)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from simplan.distill import Distillation, DistillResult, separate_config, simulate_distill
from simplan.errors import SimplanError
from simplan.model_graph import ModelGraph
from simplan.parallel import ParallelConfig
from simplan.profiles import Profile
from simplan.units import MiB


@dataclass(frozen=True, kw_only=True)
class DistillChoice:
    """The placements simulated (fastest first among those that fit), those that could not be
    (placement: why), and the student's step alone on the whole cluster."""

    results: tuple[DistillResult, ...]
    refused: dict[str, str] = field(default_factory=dict)
    student_alone_s: float = 0.0

    @property
    def best(self) -> DistillResult | None:
        return self.results[0] if self.results else None

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        return {
            "chosen": None if best is None else best.placement,
            "student_alone_step_s": self.student_alone_s,
            "placements": [r.to_dict() for r in self.results],
            "refused": dict(self.refused),
            "why": self.lines(),
        }

    def lines(self) -> list[str]:
        return explain_choice(self)


def load_teacher(distill: Distillation, config: ParallelConfig) -> ModelGraph:
    """The teacher's graph at its inference dtype (the student's where none is given)."""
    from simplan.sources import load_model

    dtype = distill.teacher_dtype or config.dtype
    return load_model(distill.teacher, seq_len=config.seq_len or None, dtype=dtype)


def compare_placements(
    student: ModelGraph,
    cluster: Any,
    config: ParallelConfig,
    distills: list[Distillation],
    *,
    profile: Profile | None = None,
    teacher_profile: Profile | None = None,
    student_alone_s: float = 0.0,
) -> DistillChoice:
    """Each of `distills` on `cluster`, the student's `config` using every device when
    colocated (separate: the teacher's devices taken from its data-parallel replicas, the
    same global batch). A shape mismatch is refused for all (one line)."""
    results, refused = [], {}
    for d in distills:
        teacher = load_teacher(d, config)
        try:
            cfg = (
                separate_config(config, d.teacher_devices) if d.placement == "separate" else config
            )
            results.append(
                simulate_distill(
                    student,
                    teacher,
                    cluster,
                    cfg,
                    d,
                    student_profile=profile,
                    teacher_profile=teacher_profile,
                )
            )
        except SimplanError as exc:
            if "logits per sample" in str(exc):
                raise
            refused[d.placement] = str(exc)
    results.sort(key=lambda r: (not r.fits, r.step_time_s))
    return DistillChoice(results=tuple(results), refused=refused, student_alone_s=student_alone_s)


def explain_choice(choice: DistillChoice) -> list[str]:
    """Lines: each placement's step and its parts, then why the chosen one won, with both
    numbers."""
    out = [_placement_line(r, choice.student_alone_s) for r in choice.results]
    out += [f"{p}: not possible here: {why}" for p, why in choice.refused.items()]
    best = choice.best
    if best is None:
        return out
    for other in choice.results[1:]:
        out.append(_why(best, other))
    return out


def _placement_line(r: DistillResult, alone_s: float) -> str:
    extra = (
        f" (+{(r.step_time_s - alone_s) * 1e3:.3g} ms over the student alone)" if alone_s else ""
    )
    mem = r.teacher_memory
    where = {
        "colocated": f"teacher weights {mem['weights_bytes'] / MiB:.1f} MiB + "
        f"{mem['activations_bytes'] / MiB:.1f} MiB live forward on every student device",
        "separate": f"teacher on {r.teacher_devices} device(s) of its own "
        f"({mem['total_bytes'] / MiB:.1f} MiB), {r.student_devices} student device(s)",
        "precomputed": "no teacher device",
    }[r.placement]
    moved = (
        f"logits {r.logits_bytes / 1024:.1f} KiB a step, {r.transfer_s * 1e3:.3g} ms moving them"
        if r.placement != "colocated"
        else "no logits moved"
    )
    return (
        f"{r.placement}: step {r.step_time_s * 1e3:.3g} ms{extra}; student "
        f"{r.student_step_s * 1e3:.3g} ms, teacher forward {r.teacher_forward_s * 1e3:.3g} ms "
        f"a micro-batch (busy {r.teacher_busy_s * 1e3:.3g} ms a step); {moved}; {where}; "
        f"peak {r.peak_memory_bytes / MiB:.1f} MiB{'' if r.fits else ' (does not fit)'}; "
        f"bound: {r.bound}"
    )


def _why(best: DistillResult, other: DistillResult) -> str:
    ratio = other.step_time_s / best.step_time_s if best.step_time_s > 0 else 1.0
    if not other.fits and best.fits:
        reason = "does not fit"
    elif best.placement == "colocated":
        reason = (
            f"its teacher, on its own device(s), takes {other.teacher_busy_s * 1e3:.3g} ms a "
            f"step against the colocated teacher's {best.teacher_busy_s * 1e3:.3g} ms in series "
            "on every student"
            if other.placement == "separate"
            else f"reading the logits takes {other.transfer_s * 1e3:.3g} ms a step"
        )
    elif best.placement == "separate":
        reason = (
            f"its teacher's {other.teacher_busy_s * 1e3:.3g} ms a step runs in series with "
            f"every student, where the separate teacher overlaps the students "
            f"({best.teacher_busy_s * 1e3:.3g} ms a step, {best.transfer_s * 1e3:.3g} ms of "
            "logits transfers)"
            if other.placement == "colocated"
            else f"reading the logits takes {other.transfer_s * 1e3:.3g} ms a step"
        )
    else:
        reason = f"its teacher takes {other.teacher_busy_s * 1e3:.3g} ms a step"
    return (
        f"{best.placement} ({best.step_time_s * 1e3:.3g} ms) over {other.placement} "
        f"({other.step_time_s * 1e3:.3g} ms, {ratio:.2f}x the step): {reason}"
    )
