"""Run a plan for real on local ranks and, optionally, check it against the single-process
reference (simplan.runtime.reference): `simplan run --plan PLAN.json`.

    result = run_plan(read_plan("plan.json"), steps=5, reference=True)
    result.losses, result.comparison.equal

The ranks train in fp32 (CPU ranks do, and the oracle compares at fp32 precision): a plan's
bf16 or fp16 mixed precision is reported, not run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simplan.errors import SimplanError
from simplan.planfile import PlanFile
from simplan.runtime.reference import LossComparison

RUN_DTYPE = "fp32"


@dataclass(frozen=True, kw_only=True)
class PlanRun:
    """What a plan's run recorded: the loss of every step, the step time, and the comparison
    with the reference when one was asked for."""

    model: str
    strategy: str
    configuration: str
    plan_dtype: str
    world_size: int
    losses: tuple[float, ...]
    step_time_s: float
    wall_s: float
    comparison: LossComparison | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "strategy": self.strategy,
            "configuration": self.configuration,
            "plan_dtype": self.plan_dtype,
            "run_dtype": RUN_DTYPE,
            "world_size": self.world_size,
            "losses": list(self.losses),
            "step_time_s": self.step_time_s,
            "wall_s": self.wall_s,
            "reference": None if self.comparison is None else self.comparison.to_dict(),
        }


def runnable_job(plan: PlanFile, *, steps: int, timeout_s: float, optimizer: str = "adam") -> Any:
    """The JobSpec that runs `plan` (in fp32), after every refusal that needs no rank."""
    from simplan.runtime.job import JobSpec, runtime_refusal
    from simplan.sources import load_model

    config = plan.config.replace(dtype=RUN_DTYPE)
    job = JobSpec(
        model=plan.model,
        config=config,
        steps=steps,
        warmup=0,
        optimizer=optimizer,
        timeout_s=timeout_s,
        baseline_steps=0,
        realtime=False,
    )
    graph = load_model(plan.model, seq_len=config.seq_len or None, dtype=config.dtype)
    refusal = runtime_refusal(config, graph)
    if refusal:
        raise SimplanError(refusal)
    if config.pp > 1:
        from simplan.sim.assemble import chunk_bounds

        chunk_bounds(graph, config, [1.0] * len(graph.layers))  # a bad split, before any rank
    return job


def run_plan(
    plan: PlanFile, *, steps: int = 5, reference: bool = False, timeout_s: float = 120.0
) -> PlanRun:
    """Run `plan` for `steps` optimizer steps on world-size local ranks (gloo on CPUs)."""
    from simplan.runtime.launch import run_job
    from simplan.runtime.reference import compare_losses, reference_losses

    job = runnable_job(plan, steps=steps, timeout_s=timeout_s)
    measured = run_job(job)
    comparison = None
    if reference:
        expected = reference_losses(job.model, job.config, steps, optimizer=job.optimizer)
        comparison = compare_losses(measured.losses, expected)
    return PlanRun(
        model=plan.model,
        strategy=job.strategy,
        configuration=job.config.describe(),
        plan_dtype=plan.config.dtype,
        world_size=job.config.world_size,
        losses=measured.losses,
        step_time_s=measured.step_time_s,
        wall_s=measured.wall_s,
        comparison=comparison,
    )
