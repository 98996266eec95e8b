"""The training steps of a real distillation run (simplan.runtime.distill_run), on one rank:
a colocated DDP student with its own teacher, or the separate teacher and student."""

from __future__ import annotations

import itertools
import time
from typing import Any

from simplan.errors import SimplanError
from simplan.runtime.distill_run import DistillJob, distill_loss, frozen_teacher


def _models(job: DistillJob, device: Any) -> tuple[Any, Any, tuple[Any, ...], Any]:
    """(student, frozen teacher, the global batch's inputs, targets), the same on every rank;
    the teacher's output shape checked against the student's on one sample."""
    import torch

    from simplan.runtime.compose import seeded_model_and_batch

    _, student, inputs, target = seeded_model_and_batch(job.student, job.config, device)
    _, teacher, _, _ = seeded_model_and_batch(job.teacher, job.config, device)
    teacher = frozen_teacher(teacher, job.teacher_dtype)
    with torch.no_grad():
        s_shape = student(*(x[:1] for x in inputs)).shape
        t_shape = teacher(*(_cast(x[:1], teacher) for x in inputs)).shape
    if s_shape != t_shape:
        raise SimplanError(f"teacher output {tuple(t_shape)}, student {tuple(s_shape)}")
    return student, teacher, inputs, target


def _cast(x: Any, module: Any) -> Any:
    """Floating inputs in the module's dtype (a teacher in bf16 takes bf16 inputs)."""
    p = next(module.parameters(), None)
    return x.to(p.dtype) if p is not None and x.is_floating_point() else x


def _teacher_logits(teacher: Any, x: tuple[Any, ...]) -> Any:
    import torch

    with torch.no_grad():
        return teacher(*(_cast(v, teacher) for v in x)).float()


def _batches(job: DistillJob, inputs: tuple[Any, ...], target: Any, replica: int) -> list[Any]:
    from simplan.runtime.compose import micro_batches

    cfg = job.config
    per = cfg.global_batch // cfg.dp
    lo = replica * per
    mine = tuple(x[lo : lo + per] for x in inputs)
    return micro_batches(mine, target[lo : lo + per], cfg.num_microbatches)


class Colocated:
    """A DDP student replica with its own teacher: a step is timed after a barrier; the
    teacher's forwards within it are timed too."""

    def __init__(self, job: DistillJob, rank: int) -> None:
        import torch
        from torch.nn.parallel import DistributedDataParallel as DDP

        student, self.teacher, inputs, target = _models(job, torch.device("cpu"))
        self.job, self.ddp = job, DDP(student)
        self.opt = torch.optim.Adam(self.ddp.parameters(), lr=1e-3, fused=True)  # as compose
        self.batches = _batches(job, inputs, target, rank)
        self.losses: list[float] = []

    def block(self, count: int) -> tuple[list[float], list[float]]:
        """One untimed step, then `count` timed ones: (step times, teacher times)."""
        import torch.distributed as dist

        step_s, teacher_s = [], []
        for i in range(count + 1):
            dist.barrier()
            t0 = time.perf_counter()
            forward_s = self._step()
            if i:
                step_s.append(time.perf_counter() - t0)
                teacher_s.append(forward_s)
        return step_s, teacher_s

    def _step(self) -> float:
        import contextlib

        job, n = self.job, len(self.batches)
        total, forward_s = 0.0, 0.0
        for j, (x, t) in enumerate(self.batches):
            with contextlib.nullcontext() if j == n - 1 else self.ddp.no_sync():
                a = time.perf_counter()
                logits = _teacher_logits(self.teacher, x)
                forward_s += time.perf_counter() - a
                loss = distill_loss(self.ddp(*x), logits, t, job.temperature, job.alpha)
                (loss / n).backward()
            total += float(loss.detach()) / n
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.losses.append(total)
        return forward_s


class Separate:
    """Rank 0 the teacher, sending each micro-batch's logits to rank 1, the student; the
    teacher runs ahead by one micro-batch (an asynchronous send, waited before the next)."""

    def __init__(self, job: DistillJob, rank: int) -> None:
        import torch

        student, self.teacher, inputs, target = _models(job, torch.device("cpu"))
        self.job, self.rank, self.student = job, rank, student
        self.opt = torch.optim.Adam(student.parameters(), lr=1e-3, fused=True)
        self.batches = _batches(job, inputs, target, 0)
        self.shape = _teacher_logits(self.teacher, tuple(x[:1] for x in self.batches[0][0])).shape
        self.losses: list[float] = []

    def block(self, count: int) -> tuple[list[float], list[float]]:
        """After a barrier, count + 1 steps back to back: the student's intervals between step
        ends (its steady-state step), the teacher's busy time per step (both, after the first)."""
        import torch.distributed as dist

        dist.barrier()
        if self.rank == 0:
            busy = self._teach(count + 1)[1:]
            return busy, busy
        ends = [self._learn() for _ in range(count + 1)]
        return [b - a for a, b in itertools.pairwise(ends)], []

    def _teach(self, steps: int) -> list[float]:
        import torch.distributed as dist

        busy, pending = [], None
        for _ in range(steps):
            t0 = time.perf_counter()
            for x, _ in self.batches:
                logits = _teacher_logits(self.teacher, x)
                if pending is not None:
                    pending.wait()
                pending = dist.isend(logits.contiguous(), dst=1)
            busy.append(time.perf_counter() - t0)
        if pending is not None:
            pending.wait()
        return busy

    def _learn(self) -> float:
        import torch
        import torch.distributed as dist

        job, n = self.job, len(self.batches)
        total = 0.0
        for x, t in self.batches:
            logits = torch.empty((t.shape[0], *self.shape[1:]))
            dist.recv(logits, src=0)
            loss = distill_loss(self.student(*x), logits, t, job.temperature, job.alpha)
            (loss / n).backward()
            total += float(loss.detach()) / n
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.losses.append(total)
        return time.perf_counter()
