"""A real distillation run on local gloo ranks (torch imported inside the ranks).

colocated: every rank is a DDP student replica that runs its own frozen teacher forward on its
    micro-batch before its forward/backward; a step is timed after a barrier, like other runs.
separate: rank 0 is the teacher (forward only) and sends every micro-batch's logits to rank 1,
    the student, with torch.distributed send/recv; the teacher runs ahead by one micro-batch
    (its send is asynchronous, waited before the next), so the two overlap. A step is the
    interval between the student's step ends (steady state, no barrier).

The student's loss: alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha)
* cross-entropy on the hard labels (Hinton et al., 2015).
"""

from __future__ import annotations

import datetime as dt
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from simplan.distill import INT8_DYNAMIC, PLACEMENTS
from simplan.errors import SimplanError
from simplan.outputs import write_json_atomic
from simplan.parallel import ParallelConfig
from simplan.profiles import Profile, read_profile

RUNTIME_PLACEMENTS = ("colocated", "separate")


@dataclass(frozen=True, kw_only=True)
class DistillJob:
    """One real distillation run: `config` is the student's (colocated: dp = world; separate:
    dp 1 on the last rank), the teacher on the first rank when separate."""

    student: str
    teacher: str
    placement: str
    config: ParallelConfig
    steps: int = 30
    warmup: int = 5
    temperature: float = 2.0
    alpha: float = 0.5
    teacher_dtype: str = ""
    threads: int = 1
    timeout_s: float = 120.0
    realtime: bool = True  # SCHED_FIFO where permitted (simplan.realtime)
    profile_repeats: int = 30  # in-run profiles of the models each rank computes (0: none)

    def __post_init__(self) -> None:
        if self.placement not in RUNTIME_PLACEMENTS:
            known = ", ".join(RUNTIME_PLACEMENTS)
            what = "is simulated only" if self.placement in PLACEMENTS else "is unknown"
            raise SimplanError(f"placement {self.placement!r} {what}: run one of {known}")
        if self.placement == "separate" and self.config.world_size != 1:
            raise SimplanError(
                "the separate run has one teacher rank and one student rank: use --nprocs 2"
            )
        if self.warmup < 1 or self.steps < 1:
            raise SimplanError("a distillation run needs at least one warm-up and one timed step")

    @property
    def world_size(self) -> int:
        return self.config.world_size + (1 if self.placement == "separate" else 0)


def distill_loss(student: Any, teacher: Any, target: Any, temperature: float, alpha: float) -> Any:
    """alpha * T^2 * KL(p_teacher,T || p_student,T) + (1 - alpha) * CE(student, target), on
    logits (..., classes)."""
    import torch.nn.functional as F

    s, t = student.flatten(0, -2), teacher.flatten(0, -2).to(student.dtype)
    soft = F.kl_div(
        F.log_softmax(s / temperature, dim=-1),
        F.log_softmax(t / temperature, dim=-1),
        reduction="batchmean",
        log_target=True,
    )
    hard = F.cross_entropy(s, target.flatten())
    return alpha * temperature**2 * soft + (1 - alpha) * hard


LOSS_WARMUP, LOSS_REPEATS = 50, 400


def loss_extra_s(
    logits_shape: tuple[int, ...], temperature: float, alpha: float, threads: int = 1
) -> float:
    """What the distillation loss's forward+backward costs beyond the hard-label cross-entropy
    the student's profile already holds, for one micro-batch's logits, measured here: median
    of LOSS_REPEATS each (one thread, as the ranks run)."""
    import torch
    import torch.nn.functional as F

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(0)
        s = torch.randn(logits_shape, generator=gen, requires_grad=True)
        t = torch.randn(logits_shape, generator=gen)
        y = torch.randint(0, logits_shape[-1], logits_shape[:-1], generator=gen)
        kd = _median_s(lambda: distill_loss(s, t, y, temperature, alpha).backward())
        ce = _median_s(lambda: F.cross_entropy(s.flatten(0, -2), y.flatten()).backward())
    finally:
        torch.set_num_threads(old)
    return max(kd - ce, 0.0)


def _median_s(fn: Any) -> float:
    for _ in range(LOSS_WARMUP):
        fn()
    times = []
    for _ in range(LOSS_REPEATS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def frozen_teacher(module: Any, dtype: str) -> Any:
    """The teacher for inference: eval mode, no gradients (so no optimizer state either), in
    `dtype` where given; int8-dynamic: torch.ao's dynamic quantization of its linear layers."""
    import warnings

    import torch
    from torch import nn

    from simplan.build import TORCH_DTYPES

    module.eval().requires_grad_(False)
    if dtype == INT8_DYNAMIC:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated
            return torch.ao.quantization.quantize_dynamic(module, {nn.Linear}, dtype=torch.qint8)
    if dtype:
        module.to(TORCH_DTYPES[dtype])
    return module


def profiled_teacher_dtype(teacher_dtype: str, config: ParallelConfig) -> str:
    """The dtype the teacher is profiled in: its own, but an int8-dynamic teacher is profiled
    unquantized (its prediction swaps the linear layers' times: simplan.quant_time)."""
    return config.dtype if teacher_dtype in ("", INT8_DYNAMIC) else teacher_dtype


PROFILE_ROUNDS = 4  # the in-run profiles' repeats, spread over the run in this many rounds


def _profiled_models(job: DistillJob, rank: int) -> dict[str, str]:
    """What this rank profiles in the run, by role: the models it computes."""
    if job.placement == "colocated":
        return {"student": job.student, "teacher": job.teacher}
    return {"teacher": job.teacher} if rank == 0 else {"student": job.student}


def _train(job: DistillJob, rank: int, beat: Any, out: Path) -> dict[str, Any]:
    """Warm-up, then rounds of (in-run profiles of this rank's models, side by side with the
    other rank's, each pass after a barrier; a block of timed steps), as simplan.runtime's
    ranks do: the profiles see the machine the steps see."""
    import torch.distributed as dist

    from simplan.profiles import write_profile
    from simplan.runtime.distill_steps import Colocated, Separate
    from simplan.runtime.worker import _shares
    from simplan.timing import ProfileSession

    trainer = Colocated(job, rank) if job.placement == "colocated" else Separate(job, rank)
    beat.beat(0)
    trainer.block(job.warmup - 1)
    cfg = job.config
    dtypes = {"student": cfg.dtype, "teacher": profiled_teacher_dtype(job.teacher_dtype, cfg)}
    sessions = {
        role: ProfileSession(
            spec, micro_batch=cfg.micro_batch, seq_len=cfg.seq_len or None, dtype=dtypes[role]
        )
        for role, spec in _profiled_models(job, rank).items()
    }
    rounds = min(PROFILE_ROUNDS, job.steps) if job.profile_repeats else 1
    step_s: list[float] = []
    teacher_s: list[float] = []
    for i, (repeats, steps) in enumerate(
        zip(_shares(job.profile_repeats, rounds), _shares(job.steps, rounds), strict=True)
    ):
        beat.beat(2 * i + 1)
        for session in sessions.values():
            session.run(repeats, before_pass=dist.barrier)
        block = trainer.block(steps)
        step_s += block[0]
        teacher_s += block[1]
    if job.profile_repeats:
        for role, session in sessions.items():
            write_profile(session.profile(), out / f"profile{rank}-{role}.json")
    for session in sessions.values():
        session.close()
    return {"step_s": step_s, "teacher_s": teacher_s, "losses": trainer.losses}


def _rank_entry(rank: int, world: int, init: str, job: DistillJob, out_dir: str) -> None:
    import torch
    import torch.distributed as dist

    from simplan.ranks import enter_rank_process
    from simplan.realtime import enter_realtime
    from simplan.runtime.worker import Heartbeat, _write_error

    enter_rank_process()
    out = Path(out_dir)
    try:
        torch.set_num_threads(job.threads)
        scheduling = enter_realtime(job.realtime)  # before any thread starts, as simplan.runtime
        beat = Heartbeat(out, rank)
        timeout = dt.timedelta(seconds=2 * job.timeout_s + 30)
        dist.init_process_group(
            "gloo", init_method=init, rank=rank, world_size=world, timeout=timeout
        )
        try:
            result = _train(job, rank, beat, out)
        finally:
            dist.destroy_process_group()
            beat.close()
        write_json_atomic(
            {"rank": rank, "scheduling": scheduling} | result, out / f"rank{rank}.json"
        )
    except BaseException as exc:  # the supervisor reports it
        _write_error(out, rank, exc)
        sys.exit(1)


@dataclass(frozen=True, kw_only=True)
class DistillMeasurement:
    """What a distillation run measured: per rank its step times (separate: the teacher's busy
    time per step on rank 0, the student's step-end intervals on rank 1), the teacher's time
    per step (colocated: its forwards within the step; separate: its busy time) and losses."""

    job: DistillJob
    ranks: tuple[dict[str, Any], ...]
    wall_s: float
    profiles: dict[str, Profile] = field(default_factory=dict)  # in-run, by role

    @property
    def student_step_s(self) -> list[float]:
        if self.job.placement == "separate":
            return list(self.ranks[-1]["step_s"])
        return [max(t) for t in zip(*(r["step_s"] for r in self.ranks), strict=True)]

    @property
    def step_time_s(self) -> float:
        return statistics.median(self.student_step_s)

    @property
    def losses(self) -> list[float]:
        """Every step's loss over the global batch (colocated: the replicas' mean)."""
        if self.job.placement == "separate":
            return list(self.ranks[-1]["losses"])
        per_rank = [r["losses"] for r in self.ranks]
        return [statistics.fmean(x) for x in zip(*per_rank, strict=True)]

    def to_dict(self) -> dict[str, Any]:
        teacher = self.ranks[0].get("teacher_s")
        return {
            "step_time_s": self.step_time_s,
            "per_step_s": self.student_step_s,
            "teacher_s": None if teacher is None else statistics.median(teacher),
            "scheduling": [r.get("scheduling", "") for r in self.ranks],
            "losses": self.losses,
            "wall_s": self.wall_s,
            "job": asdict(self.job) | {"config": self.job.config.to_dict()},
        }


def run_distill(job: DistillJob) -> DistillMeasurement:
    """Run `job` on its local gloo ranks (supervised: a rank that fails or stalls stops all)."""
    from simplan.runtime.launch import read_ranks, run_gloo_ranks

    world = job.world_size

    def collect(out: Path) -> tuple[tuple[dict[str, Any], ...], dict[str, Profile]]:
        profiles = {
            role: read_profile(path)
            for role in ("student", "teacher")
            for path in sorted(out.glob(f"profile*-{role}.json"))[:1]
        }
        return read_ranks(out, world), profiles

    started = time.perf_counter()
    ranks, profiles = run_gloo_ranks(
        _rank_entry, job, world, job.timeout_s, "simplan-distill-", collect
    )
    wall_s = time.perf_counter() - started
    return DistillMeasurement(job=job, ranks=ranks, wall_s=wall_s, profiles=profiles)
