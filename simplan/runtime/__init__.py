"""Execute a parallel configuration for real with torch.distributed and measure it.

    from simplan.runtime import JobSpec, config_for, run_job
    job = JobSpec(model="mlp", config=config_for("ddp", 2, micro_batch=64))
    m = run_job(job)          # 2 spawned gloo ranks (NCCL on GPUs)
    m.step_time_s, m.to_dict()

Strategies: DDP (bucket size, fp16 compression hook), FSDP2 (fully_shard per layer), tensor
parallel (DTensor parallelize_module), pipeline parallel (torch.distributed.pipelining, GPipe,
1F1B, interleaved). torch is imported only inside the ranks.
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

__all__ = [
    "STRATEGIES",
    "JobSpec",
    "Measurement",
    "RankFailure",
    "RankResult",
    "config_for",
    "job_from_dict",
    "job_to_dict",
    "run_job",
    "strategy_of",
]
