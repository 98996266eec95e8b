"""Execute a plan for real with torch.distributed and measure it.

    from simplan.runtime import JobSpec, config_for, run_job, run_plan
    job = JobSpec(model="mlp", config=config_for("ddp", 2, micro_batch=64))
    m = run_job(job)          # 2 spawned gloo ranks (NCCL on GPUs)
    m.step_time_s, m.losses, m.to_dict()
    run_plan(read_plan("plan.json"), steps=5, reference=True).comparison.equal

Any configuration runs (simplan.runtime.compose): one DeviceMesh over (pp, dp_replicate,
dp_shard, tp) composing torch.distributed.pipelining (GPipe, 1F1B, interleaved), DTensor tensor
and sequence parallelism, activation recomputation, and DDP, HSDP or FSDP2 by ZeRO stage; the
single-process reference (simplan.runtime.reference) checks that it trains as one process
does. torch is imported only inside the ranks.
"""

from __future__ import annotations

from simplan.ranks import RankFailure
from simplan.runtime.job import (
    STRATEGIES,
    JobSpec,
    Measurement,
    RankResult,
    config_for,
    strategy_of,
)
from simplan.runtime.launch import job_from_dict, job_to_dict, run_job
from simplan.runtime.plan_run import PlanRun, run_plan

__all__ = [
    "STRATEGIES",
    "JobSpec",
    "Measurement",
    "PlanRun",
    "RankFailure",
    "RankResult",
    "config_for",
    "job_from_dict",
    "job_to_dict",
    "run_job",
    "run_plan",
    "strategy_of",
]
