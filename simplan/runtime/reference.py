"""The correctness oracle of the runtime: the same model, seed and global batch in one process.

A parallel run executes the plan it was given when the loss of every step equals the loss of
`reference_losses` (same seeded model and global batch, the same optimizer, gradients
accumulated over the same micro-batches) within fp32 rounding: `compare_losses`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from simplan.errors import SimplanError
from simplan.parallel import ParallelConfig

# fp32: reductions in another order (over ranks, shards, micro-batches) move the loss by
# below 1e-7 relative (1.4e-8 to 4.2e-8 measured on dp x tp, dp x pp, tp x pp with sp, FSDP x TP);
# a wrong data split (every replica on the first slice, dp2 x tp2) moved it 4.3e-3 in 5 steps
LOSS_RTOL = 1e-5


@dataclass(frozen=True, kw_only=True)
class LossComparison:
    """Step-by-step losses of a parallel run and of the single-process reference."""

    run: tuple[float, ...]
    reference: tuple[float, ...]
    rtol: float

    @property
    def max_rel_diff(self) -> float:
        return max(
            (
                abs(a - b) / max(abs(b), 1e-30)
                for a, b in zip(self.run, self.reference, strict=True)
            ),
            default=0.0,
        )

    @property
    def equal(self) -> bool:
        return len(self.run) == len(self.reference) and all(
            math.isclose(a, b, rel_tol=self.rtol, abs_tol=0.0)
            for a, b in zip(self.run, self.reference, strict=True)
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "equal": self.equal,
            "rtol": self.rtol,
            "max_rel_diff": self.max_rel_diff,
            "run": list(self.run),
            "reference": list(self.reference),
        }


def compare_losses(
    run: Sequence[float], reference: Sequence[float], rtol: float = LOSS_RTOL
) -> LossComparison:
    if len(run) != len(reference):
        raise SimplanError(
            f"the run recorded {len(run)} step losses and the reference {len(reference)}: "
            "compare the same number of steps"
        )
    return LossComparison(run=tuple(run), reference=tuple(reference), rtol=rtol)


def reference_losses(
    model: str, config: ParallelConfig, steps: int, *, optimizer: str = "adam", threads: int = 1
) -> tuple[float, ...]:
    """`steps` optimizer steps of the unsplit model in this process, on the configuration's
    global batch cut into its micro-batches (global_batch / micro_batch of them): the loss of
    each step (mean over micro-batches), as a parallel run of `config` records it."""
    import torch

    from simplan.runtime.compose import loss_of, micro_batches, seeded_model_and_batch
    from simplan.runtime.job import JobSpec

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        plain = config.replace(
            dp=1,
            tp=1,
            pp=1,
            zero=0,
            recompute="none",
            sequence_parallel=False,
            schedule="1f1b",
            virtual_stages=1,
            stages=(),
        )
        job = JobSpec(model=model, config=plain, optimizer=optimizer)
        _, module, inputs, target = seeded_model_and_batch(model, plain, torch.device("cpu"))
        from simplan.runtime.compose import make_optimizer

        opt = make_optimizer(job, list(module.parameters()))
        n = plain.num_microbatches
        batches = micro_batches(inputs, target, n)
        losses = []
        for _ in range(steps):
            total = 0.0
            for x, t in batches:
                loss = loss_of(module(*x), t)
                (loss / n).backward()
                total += float(loss.detach())
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(total / n)
        return tuple(losses)
    finally:
        torch.set_num_threads(old)
