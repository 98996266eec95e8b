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

    def shortfall(self) -> str:
        """'' when the chosen placement fits, else one line of what it needs."""
        best = self.best
        if best is None or best.fits:
            return ""
        return (
            f"no distillation placement fits; {best.placement} needs "
            f"{size_text(best.peak_memory_bytes)} of {size_text(best.usable_bytes)} usable"
        )

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
    from simplan.distill import INT8_DYNAMIC
    from simplan.model_knobs import with_knobs
    from simplan.sources import load_model

    seq = config.seq_len or None
    if distill.teacher_dtype == INT8_DYNAMIC:  # fp32 activations, int8 linear weights
        return load_model(with_knobs(distill.teacher, quantize=INT8_DYNAMIC), seq_len=seq)
    return load_model(distill.teacher, seq_len=seq, dtype=distill.teacher_dtype or config.dtype)


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


def size_text(nbytes: float) -> str:
    """Bytes in the largest binary unit that keeps the number at least 1."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes:.0f} B"


def ms_text(seconds: float) -> str:
    """Milliseconds, or seconds from 10 s on."""
    return f"{seconds:.4g} s" if seconds >= 10 else f"{seconds * 1e3:.4g} ms"


def _placement_line(r: DistillResult, alone_s: float) -> str:
    extra = f" (+{ms_text(r.step_time_s - alone_s)} over the student alone)" if alone_s else ""
    mem = r.teacher_memory
    where = {
        "colocated": f"teacher weights {size_text(mem['weights_bytes'])} + "
        f"{size_text(mem['activations_bytes'])} live forward on every student device",
        "separate": f"teacher on {r.teacher_devices} device(s) of its own "
        f"({size_text(mem['total_bytes'])}), {r.student_devices} student device(s)",
        "precomputed": "no teacher device",
    }[r.placement]
    moved = (
        f"logits {size_text(r.logits_bytes)} a step, {ms_text(r.transfer_s)} moving them"
        if r.placement != "colocated"
        else "no logits moved"
    )
    teacher = (
        f"teacher forward {ms_text(r.teacher_forward_s)} a micro-batch, run once beforehand"
        if r.placement == "precomputed"
        else f"teacher forward {ms_text(r.teacher_forward_s)} a micro-batch (busy "
        f"{ms_text(r.teacher_busy_s)} a step)"
    )
    return (
        f"{r.placement}: step {ms_text(r.step_time_s)}{extra}; student "
        f"{ms_text(r.student_step_s)}, {teacher}; {moved}; {where}; "
        f"peak {size_text(r.peak_memory_bytes)}{'' if r.fits else ' (does not fit)'}; "
        f"bound: {r.bound}"
    )


def _why(best: DistillResult, other: DistillResult) -> str:
    ratio = other.step_time_s / best.step_time_s if best.step_time_s > 0 else 1.0
    if not other.fits and best.fits:
        reason = "does not fit"
    elif best.placement == "colocated":
        reason = (
            f"its teacher, on its own device(s), takes {ms_text(other.teacher_busy_s)} a "
            f"step against the colocated teacher's {ms_text(best.teacher_busy_s)} in series "
            "on every student"
            if other.placement == "separate"
            else f"reading the logits takes {ms_text(other.transfer_s)} a step"
        )
    elif best.placement == "separate":
        reason = (
            f"its teacher's {ms_text(other.teacher_busy_s)} a step runs in series with "
            f"every student, where the separate teacher overlaps the students "
            f"({ms_text(best.teacher_busy_s)} a step, {ms_text(best.transfer_s)} of "
            "logits transfers)"
            if other.placement == "colocated"
            else f"reading the logits takes {ms_text(other.transfer_s)} a step"
        )
    else:
        reason = f"its teacher takes {ms_text(other.teacher_busy_s)} a step"
    return (
        f"{best.placement} ({ms_text(best.step_time_s)}) over {other.placement} "
        f"({ms_text(other.step_time_s)}, {ratio:.2f}x the step): {reason}"
    )
