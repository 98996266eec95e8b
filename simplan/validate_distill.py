"""Validate a distillation placement: predict (simplan.distill), run it for real
(simplan.runtime.distill_run), compare, and append a record to traces/runs/.

    record = validate_distill("mlp", "mlp-wide", "separate", micro_batch=64)
    record["predicted_step_s"], record["measured_step_s"], record["rel_error"]

Both models are profiled on this machine with one thread per rank (cached, as simplan.validate
does); the communication is the localhost-cpu cluster's calibration (`simplan bench-comm`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from simplan.distill import (
    Distillation,
    DistillResult,
    check_pair,
    logits_per_sample,
    separate_config,
    simulate_distill,
)
from simplan.environment import environment
from simplan.errors import SimplanError
from simplan.io import schema_header
from simplan.parallel import ParallelConfig
from simplan.profiles import Profile
from simplan.validate import (
    RUNS_DIR,
    calibration_summary,
    local_cluster,
    profile_for,
    timed_steps,
    write_in_run_profile,
    write_record,
)

RECORD_KIND = "distill-validation-record"
RECORD_VERSION = 1


def placement_config(config: ParallelConfig, placement: str) -> ParallelConfig:
    """The student's configuration for `placement` out of the colocated one over all ranks:
    separate gives one rank to the teacher."""
    return separate_config(config, 1) if placement == "separate" else config


def standalone_profiles(
    student: str, teacher: str, config: ParallelConfig, threads: int = 1, teacher_dtype: str = ""
) -> dict[str, Profile]:
    """Both models' profiles measured in this process alone (cached: simplan.validate), the
    teacher's at its inference dtype (int8-dynamic: unquantized, simplan.quant_time)."""
    from simplan.runtime.distill_run import profiled_teacher_dtype

    t_config = dataclasses.replace(config, dtype=profiled_teacher_dtype(teacher_dtype, config))
    return {
        "student": profile_for(student, config, threads=threads)[0],
        "teacher": profile_for(teacher, t_config, threads=threads)[0],
    }


def predict_distill(
    distill: Distillation,
    config: ParallelConfig,
    world: int,
    profiles: dict[str, Profile],
    threads: int = 1,
) -> tuple[DistillResult, Any]:
    """The simulated step of `distill` with the student's `config` on the local cluster of
    `world` ranks, from this machine's `profiles` of both models; and the cluster."""
    from simplan.planner.distill import load_teacher

    s_prof, t_prof = profiles["student"], profiles["teacher"]
    t_graph = load_teacher(distill, config)
    cluster = local_cluster(world)
    from simplan.runtime.distill_run import loss_extra_s

    shape = (config.micro_batch, logits_per_sample(s_prof.model))
    result = simulate_distill(
        s_prof.model,
        t_graph,
        cluster,
        config,
        distill,
        student_profile=s_prof,
        teacher_profile=t_prof,
        loss_extra_s=loss_extra_s(shape, distill.temperature, distill.alpha, threads),
    )
    return result, cluster


def validate_distill(
    student: str,
    distill: Distillation,
    config: ParallelConfig,
    *,
    steps: int = 30,
    min_timed_s: float = 0.0,
    warmup: int = 5,
    runs_dir: str | Path = RUNS_DIR,
) -> dict[str, Any]:
    """Predict and run `distill` (colocated or separate) with the student's colocated
    `config` over its ranks, at least `steps` timed steps, more if they would last less than
    `min_timed_s` by the standalone prediction (simplan.validate.timed_steps); write and
    return the record."""
    from simplan.runtime.distill_run import DistillJob, run_distill
    from simplan.sources import load_model

    if distill.placement == "separate" and config.world_size != 2:
        raise SimplanError(
            "the separate run has one teacher rank and one student rank: use --nprocs 2"
        )
    cfg = placement_config(config, distill.placement)
    job = DistillJob(
        student=student,
        teacher=distill.teacher,
        placement=distill.placement,
        config=cfg,
        steps=steps,
        warmup=warmup,
        temperature=distill.temperature,
        alpha=distill.alpha,
        teacher_dtype=distill.teacher_dtype,
    )  # refuses a placement that does not run, before anything slow
    check_pair(
        load_model(student, seq_len=cfg.seq_len or None, dtype=cfg.dtype),
        load_model(distill.teacher, seq_len=cfg.seq_len or None, dtype=cfg.dtype),
    )
    alone = standalone_profiles(student, distill.teacher, cfg, teacher_dtype=distill.teacher_dtype)
    standalone, cluster = predict_distill(distill, cfg, config.world_size, alone)
    job = dataclasses.replace(job, steps=timed_steps(steps, min_timed_s, standalone.step_time_s))
    measured = run_distill(job)
    predicted = standalone
    if set(measured.profiles) == {"student", "teacher"}:
        predicted = predict_distill(distill, cfg, config.world_size, measured.profiles)[0]
    pred, meas = predicted.step_time_s, measured.step_time_s
    record = {
        "schema": schema_header(RECORD_KIND, RECORD_VERSION),
        "model": student,
        "teacher": distill.teacher,
        "placement": distill.placement,
        "teacher_dtype": distill.teacher_dtype or cfg.dtype,
        "strategy": f"distill-{distill.placement}",
        "nprocs": config.world_size,
        "micro_batch": cfg.micro_batch,
        "configuration": f"{student} <- {distill.teacher}"
        f"{' ' + distill.teacher_dtype if distill.teacher_dtype else ''} {distill.placement} "
        f"x{config.world_size} mb{cfg.micro_batch} gb{cfg.global_batch}",
        "environment": environment(threads_per_rank=1),
        "predicted_step_s": pred,
        "measured_step_s": meas,
        "rel_error": (pred - meas) / meas,
        "predicted": predicted.to_dict(),
        "predicted_standalone_step_s": standalone.step_time_s,
        "profile_source": "in-run" if predicted is not standalone else "standalone",
        "measured": measured.to_dict(),
        "calibration": calibration_summary(cluster),
        "profiles": _write_in_run_profiles(measured.profiles, cfg, config.world_size),
    }
    record["path"] = str(write_record(record, runs_dir))
    return record


def _write_in_run_profiles(
    profiles: dict[str, Profile], config: ParallelConfig, world: int
) -> dict[str, str]:
    """The run's in-run profiles, each a new file beside the standalone one (as
    simplan.validate keeps them): role -> path."""
    from simplan.profiles import default_profile_path

    return {
        role: str(
            write_in_run_profile(profile, default_profile_path(profile), f"t1-x{world}-distill")
        )
        for role, profile in profiles.items()
    }
