"""Validate a multi-task placement: predict the step (simplan.sim.multitask.predict_task_step),
train the model's tasks for real (simplan.runtime.mtl_run), compare, and append a record to
traces/runs/ with every step's per-task loss, weight and feature-gradient norm.

    record = validate_mtl(MtlJob(model="mtl-vision#image=64", placement="task-parallel",
                                 nprocs=2, global_batch=8))
    record["predicted_step_s"], record["measured_step_s"], record["rel_error"]

The prediction uses the model's profile at the samples one rank's trunk runs a step (measured in
the run by every rank side by side, else in this process alone: cached, simplan.validate) and the
localhost-cpu cluster's calibration (`simplan bench-comm`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from simplan.environment import environment
from simplan.io import schema_header
from simplan.parallel import ParallelConfig
from simplan.profiles import Profile
from simplan.runtime.mtl_run import MtlJob
from simplan.validate import (
    PROFILE_REPEATS,
    RUNS_DIR,
    calibration_summary,
    local_cluster,
    profile_for,
    timed_steps,
    write_in_run_profile,
    write_record,
)

RECORD_KIND = "mtl-validation-record"
RECORD_VERSION = 1


def rank_config(job: MtlJob) -> ParallelConfig:
    """One rank's trunk samples a step as a configuration (what its profile is measured at)."""
    return ParallelConfig(
        dp=1, micro_batch=job.rank_batch, global_batch=job.rank_batch, dtype="fp32"
    )


def predict_mtl(job: MtlJob, profile: Profile, cluster: Any) -> Any:
    from simplan.sim.multitask import predict_task_step

    return predict_task_step(
        job.model, job.placement, job.nprocs, cluster, job.global_batch, profile=profile
    )


def validate_mtl(
    job: MtlJob,
    *,
    min_timed_s: float = 0.0,
    in_run_profile: bool = True,
    runs_dir: str | Path = RUNS_DIR,
) -> dict[str, Any]:
    """Predict and run `job` (at least job.steps timed steps, more if they would last less than
    `min_timed_s` by the standalone prediction); write and return the record."""
    from simplan.runtime.mtl_run import build_parts, run_mtl

    build_parts(job)  # a model the run cannot train is refused before anything slow
    alone, alone_path = profile_for(job.model, rank_config(job))
    cluster = local_cluster(job.nprocs)
    standalone = predict_mtl(job, alone, cluster)
    job = dataclasses.replace(
        job,
        steps=timed_steps(job.steps, min_timed_s, standalone.step_s),
        profile_repeats=PROFILE_REPEATS if in_run_profile else 0,
    )
    measured = run_mtl(job)
    predicted, profile_path = standalone, alone_path
    if measured.profile is not None:
        profile_path = write_in_run_profile(measured.profile, alone_path, f"x{job.nprocs}-mtl")
        predicted = predict_mtl(job, measured.profile, cluster)
    pred, meas = predicted.step_s, measured.step_time_s
    record = {
        "schema": schema_header(RECORD_KIND, RECORD_VERSION),
        "model": job.model,
        "placement": job.placement,
        "weighting": job.weighting,
        "strategy": f"mtl-{job.placement}",
        "nprocs": job.nprocs,
        "global_batch": job.global_batch,
        "micro_batch": job.rank_batch,
        "configuration": f"{job.model} mtl-{job.placement} {job.weighting} x{job.nprocs} "
        f"gb{job.global_batch}",
        "environment": environment(threads_per_rank=job.threads),
        "predicted_step_s": pred,
        "measured_step_s": meas,
        "rel_error": (pred - meas) / meas,
        "predicted": predicted.to_dict(),
        "predicted_standalone_step_s": standalone.step_s,
        "profile_source": "in-run" if measured.profile is not None else "standalone",
        "profile": str(profile_path),
        "measured": measured.to_dict(),
        "calibration": calibration_summary(cluster),
    }
    record["path"] = str(write_record(record, runs_dir))
    return record
