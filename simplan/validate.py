"""Validate the simulator against a real run: profile, simulate, execute, compare, record.

    record = validate("mlp", config_for("ddp", 2, micro_batch=64))
    record["predicted_step_s"], record["measured_step_s"], record["rel_error"]

The prediction uses a profile of the model measured on this machine with the ranks' thread count
(one per rank: recorded under traces/profiles/<cpu>/..., reused while torch and the thread count
match) and the localhost-cpu cluster calibrated by `simplan bench-comm`. The pipeline's stage
boundaries are the simulator's, so both split the model alike. Every validation appends one
record (JSON, unique name, written atomically) to traces/runs/.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simplan.environment import environment
from simplan.errors import SimplanError
from simplan.io import read_versioned_json, schema_header, write_json_atomic
from simplan.parallel import ParallelConfig
from simplan.profiles import Profile, default_profile_path, read_profile, write_profile

RECORD_SCHEMA_VERSION = 2  # 2: measured tensor memory per rank and record["memory"]
READABLE_RECORD_VERSIONS = (1, 2)  # 1: a resident-set delta instead of tensor memory
RUNS_DIR = Path("traces/runs")
PROFILE_WARMUP, PROFILE_REPEATS = 5, 30
MAX_STEPS = 5000  # the most timed steps a short step is given to fill the minimum time


def write_in_run_profile(profile: Profile, beside: Path, tag: str) -> Path:
    """An in-run profile, written as a new file per run beside the standalone profile `beside`
    (`<stem>-<tag>-in-run-<time>-<id>.json`), as its record is: a record's profile is never
    replaced by a later run."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    name = f"{beside.stem}-{tag}-in-run-{stamp}-{uuid.uuid4().hex[:8]}.json"
    return write_profile(profile, beside.with_name(name))


def timed_steps(steps: int, min_timed_s: float, predicted_step_s: float) -> int:
    """At least `steps`; more when steps are short, so that the timed steps last about
    `min_timed_s` (by the prediction) and their median is steady; at most MAX_STEPS."""
    if min_timed_s <= 0 or predicted_step_s <= 0:
        return steps
    return max(steps, min(MAX_STEPS, math.ceil(min_timed_s / predicted_step_s)))


def profile_for(
    model: str, config: ParallelConfig, *, threads: int = 1, refresh: bool = False
) -> tuple[Profile, Path]:
    """This machine's profile of `model` at the configuration's micro-batch, measured with
    `threads` torch threads (reused if one exists for this torch version and thread count)."""
    import torch

    from simplan.timing import TIMING_METHOD, measure

    seq = config.seq_len or None
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        path = _profile_path(model, config, threads)
        cached = _cached_profile(path) if not refresh else None
        if (
            cached is not None
            and cached.meta.get("torch_version") == torch.__version__
            and cached.meta.get("timing") == TIMING_METHOD
            and _has_shapes(cached)
        ):
            return cached, path
        profile = measure(
            model,
            device="cpu",
            micro_batch=config.micro_batch,
            seq_len=seq,
            dtype=config.dtype,
            warmup=PROFILE_WARMUP,
            repeats=PROFILE_REPEATS,
        )
    finally:
        torch.set_num_threads(old)
    path = _threads_path(default_profile_path(profile), threads)
    return profile, write_profile(profile, path)


def _has_shapes(profile: Profile) -> bool:
    """The profile's graph records its parameter shapes (counted since they are: PowerSGD's
    wire bytes need them)."""
    return all("param_shapes" in x.attrs for x in profile.model.layers if x.params)


def _cached_profile(path: Path) -> Profile | None:
    """A stored profile, or None when there is none or it no longer reads (measured again)."""
    if not path.is_file():
        return None
    try:
        return read_profile(path)
    except SimplanError:
        return None


def _threads_path(path: Path, threads: int) -> Path:
    return path.with_name(f"{path.stem}-t{threads}{path.suffix}")


def _profile_path(model: str, config: ParallelConfig, threads: int) -> Path:
    """Where profile_for keeps the profile (found without measuring)."""
    from simplan.sources import load_model
    from simplan.timing import device_name

    graph = load_model(model, seq_len=config.seq_len or None, dtype=config.dtype)
    stub = Profile(
        model=graph,
        device="cpu",
        device_name=device_name("cpu"),
        dtype=config.dtype,
        micro_batch=config.micro_batch,
        seq_len=graph.seq_len,
        timings={},
    )
    return _threads_path(default_profile_path(stub), threads)


def predict(model: str, config: ParallelConfig, profile: Profile, cluster: Any) -> Any:
    from simplan.sim.run import simulate

    return simulate(profile.model, cluster, config, profile=profile, record=False)


def with_stages(config: ParallelConfig, result: Any) -> ParallelConfig:
    """The configuration with the simulator's pipeline split written in."""
    if config.pp == 1:
        return config
    bounds = (result.stage_layers[0][0], *(hi for _, hi in result.stage_layers))
    return config.replace(stages=tuple(bounds))


def local_cluster(
    world: int, name: str = "localhost-cpu", calibration: str | Path | None = None
) -> Any:
    """The local cluster of `world` ranks, calibrated by `calibration`, else by the file
    `simplan bench-comm --nprocs <world>` writes by default where there is one, else by the
    preset's own calibration."""
    from simplan.topology import load_cluster
    from simplan.topology.cluster import resolve_calibration
    from simplan.topology.cluster_spec import load_spec
    from simplan.topology.comm_calibration import local_calibration_path

    spec = load_spec(name, nodes=1)
    # a run of more ranks than the preset's node lists runs them all on this one machine
    groups = tuple(
        dataclasses.replace(g, devices_per_node=max(g.devices_per_node, world)) for g in spec.groups
    )
    spec = load_spec(dataclasses.replace(spec, groups=groups), gpus_per_node=world)
    if calibration is None and resolve_calibration(str(local_calibration_path(world))).is_file():
        calibration = local_calibration_path(world)
    if calibration is not None:
        spec = dataclasses.replace(spec, calibration=str(calibration))
    return load_cluster(spec)


PROFILE_SOURCES = ("in-run", "standalone")


@dataclass(frozen=True, kw_only=True)
class ValidationOptions:
    """How one validation runs.

    steps: timed steps, at least; more if they would last less than `min_timed_s` seconds (by
        the prediction; see `timed_steps`).
    warmup: untimed steps first.
    realtime: the ranks run under SCHED_FIFO where permitted (simplan.realtime), as bench-comm
        calibrates.
    threads: torch threads per rank.
    timeout_s: seconds a rank may go without progress before the run is stopped.
    profile_source: 'in-run', the prediction uses the profile every rank measured at the start
        of the run, side by side (the conditions of the run); 'standalone', the profile measured
        in this process alone (cached). Both predictions are recorded.
    refresh_profile: measure the standalone profile again.
    runs_dir: where the record goes.
    fault: a fault to inject in a rank (tests: 'crash@RANK:STEP', 'hang@RANK:STEP').
    calibration: a bench-comm file (default: see local_cluster).
    """

    steps: int = 30
    min_timed_s: float = 3.0
    warmup: int = 5
    realtime: bool = True
    threads: int = 1
    timeout_s: float = 120.0
    profile_source: str = "in-run"
    refresh_profile: bool = False
    runs_dir: str | Path = RUNS_DIR
    fault: str = ""
    calibration: str | Path | None = None

    def __post_init__(self) -> None:
        if self.profile_source not in PROFILE_SOURCES:
            raise SimplanError(f"profile source must be one of {', '.join(PROFILE_SOURCES)}")


def _check_warmup(config: ParallelConfig, warmup: int) -> None:
    """PowerSGD and post-local SGD all-reduce plainly for their first SYNC_WARMUP_STEPS steps:
    the untimed warm-up must cover them, so that the timed steps are the ones simulated."""
    from simplan.compression import SYNC_WARMUP_STEPS, has_sync_warmup

    knob = "--compress powersgd" if config.compress == "powersgd" else "--local-sgd"
    if has_sync_warmup(config) and warmup < SYNC_WARMUP_STEPS:
        raise SimplanError(
            f"{knob} all-reduces plainly for its first {SYNC_WARMUP_STEPS} steps: use "
            f"--warmup {SYNC_WARMUP_STEPS} or more"
        )


def validate(
    model: str, config: ParallelConfig, options: ValidationOptions | None = None
) -> dict[str, Any]:
    """Predict and measure one configuration as `options` say; write and return the
    validation record."""
    from simplan.runtime import JobSpec, run_job

    o = options or ValidationOptions()
    job = JobSpec(
        model=model,
        config=config,
        steps=o.steps,
        warmup=o.warmup,
        threads=o.threads,
        timeout_s=o.timeout_s,
        fault=o.fault,
        profile_repeats=PROFILE_REPEATS if o.profile_source == "in-run" else 0,
        realtime=o.realtime,
    )  # checks the strategy before anything slow
    _check_warmup(config, o.warmup)
    _refuse_unrunnable(model, config)
    alone, alone_path = profile_for(model, config, threads=o.threads, refresh=o.refresh_profile)
    cluster = local_cluster(config.world_size, calibration=o.calibration)
    standalone = predict(model, config, alone, cluster)
    job = dataclasses.replace(
        job,
        config=with_stages(config, standalone),
        steps=timed_steps(o.steps, o.min_timed_s, standalone.step_time_s),
        check_bytes=check_size(cluster),
    )
    measured = run_job(job)
    result, profile_path = standalone, alone_path
    if measured.profile is not None:
        profile_path = write_in_run_profile(measured.profile, alone_path, f"x{config.world_size}")
        result = predict(model, job.config, measured.profile, cluster)
    record = make_record(job, result, measured, profile_path)
    record["calibration"] = calibration_summary(cluster)
    record["calibration_check"] = calibration_check(cluster, job.check_bytes, measured.check_s)
    record["predicted_standalone_step_s"] = standalone.step_time_s
    record["profile_source"] = o.profile_source
    record["profiles"] = {
        "standalone": _profile_summary(alone, alone_path),
        "in_run": None
        if measured.profile is None
        else _profile_summary(measured.profile, profile_path),
    }
    record["path"] = str(write_record(record, o.runs_dir))
    return record


def _refuse_unrunnable(model: str, config: ParallelConfig) -> None:
    """What the runtime cannot run on this model, refused before any profile or rank."""
    from simplan.runtime.job import runtime_refusal
    from simplan.sources import load_model

    graph = load_model(model, seq_len=config.seq_len or None, dtype=config.dtype)
    refusal = runtime_refusal(config, graph)
    if refusal:
        raise SimplanError(refusal)


def check_size(cluster: Any) -> int:
    """The all-reduce the run times to check its calibration: the smallest size the calibration
    measured (0: no calibration, no check)."""
    cal = cluster.calibration
    fit = None if cal is None else cal.op_fits.get("all_reduce")
    return int(fit.points[0][0]) if fit is not None and fit.points else 0


def calibration_check(cluster: Any, nbytes: int, measured_s: float | None) -> dict | None:
    """The run's all-reduce of `nbytes` against what the calibration says it takes: a ratio far
    from 1 means the machine's communication is not what bench-comm measured (re-run it)."""
    if not nbytes or measured_s is None or cluster.calibration is None:
        return None
    calibrated = cluster.calibration.op_fits["all_reduce"].time_s(nbytes)
    return {
        "op": "all_reduce",
        "size_B": nbytes,
        "measured_s": measured_s,
        "calibrated_s": calibrated,
        "ratio": measured_s / calibrated,
    }


def calibration_summary(cluster: Any) -> dict[str, Any] | None:
    """Which bench-comm file priced the communication: its path, and when and how (torch
    version, scheduling policy) it was measured."""
    cal = cluster.calibration
    if cal is None:
        return None
    from simplan.io import read_json

    meta = read_json(cal.path).get("metadata", {})
    keys = ("date", "scheduling", "repeats", "warmup")
    torch = meta.get("torch_version", meta.get("torch"))  # "torch" in files before 2026-12-03
    return {"path": cal.path, "torch": torch} | {k: meta.get(k) for k in keys}


def _profile_summary(profile: Profile, path: Path) -> dict[str, Any]:
    whole = profile.whole_model
    return {
        "path": str(path),
        "layer_sum_s": profile.layer_sum_s,
        "whole_model_s": None if whole is None else whole.fwd_s + whole.bwd_s,
        "date": profile.meta.get("date"),
        "threads": profile.meta.get("threads"),
    }


def make_record(job: Any, result: Any, measured: Any, profile_path: Path) -> dict[str, Any]:
    from simplan.runtime import job_to_dict
    from simplan.validate_memory import compare_memory

    pred, meas = result.step_time_s, measured.step_time_s
    predicted, measured_dict = result.to_dict(), measured.to_dict()
    return {
        "schema": schema_header("validation-record", RECORD_SCHEMA_VERSION),
        "model": job.model,
        "strategy": job.strategy,
        "configuration": config_label(job),
        "sync": sync_knob(job.config),
        "job": job_to_dict(job),
        "environment": environment(threads_per_rank=job.threads),
        "profile": str(profile_path),
        "predicted_step_s": pred,
        "measured_step_s": meas,
        "rel_error": (pred - meas) / meas,
        "predicted": predicted,
        "measured": measured_dict,
        "per_rank_step_s": [r["median_step_s"] for r in measured_dict["ranks"]],
        "memory": compare_memory(predicted, measured_dict["ranks"], job.config.pp),
    }


def config_label(job: Any) -> str:
    cfg = job.config
    extra = f" {cfg.schedule}" + (f" v{cfg.virtual_stages}" if cfg.virtual_stages > 1 else "")
    return (
        f"{job.model} {job.strategy}{extra if cfg.pp > 1 else ''} x{cfg.world_size} "
        f"mb{cfg.micro_batch} gb{cfg.global_batch}"
    )


def sync_knob(config: ParallelConfig) -> dict[str, Any]:
    """How the replicas synchronised, for the record: the knob's fields and, where it has
    them, its warm-up steps of plain all-reduce."""
    from simplan.compression import SYNC_WARMUP_STEPS, has_sync_warmup

    knob = {"compress": config.compress, "local_sgd": config.local_sgd}
    if config.compress == "powersgd":
        knob["powersgd_rank"] = config.powersgd_rank
    if has_sync_warmup(config):
        knob["warmup_steps"] = SYNC_WARMUP_STEPS
    return knob


def write_record(record: dict[str, Any], runs_dir: str | Path = RUNS_DIR) -> Path:
    """A new file per record (timestamp + random suffix): earlier records are never touched."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    slug = record["configuration"].replace(" <- ", "-from-").replace(" ", "-").replace("/", "-")
    path = Path(runs_dir) / f"{stamp}-{slug}-{uuid.uuid4().hex[:8]}.json"
    return write_json_atomic(record, path)


def read_record(path: str | Path) -> dict[str, Any]:
    """A validation record of a version this simplan reads (READABLE_RECORD_VERSIONS)."""
    from simplan.io import read_json_object

    schema = read_json_object(path).get("schema")
    version = schema.get("version") if isinstance(schema, dict) else None
    if version in READABLE_RECORD_VERSIONS:
        return read_versioned_json(path, "validation-record", version)
    return read_versioned_json(path, "validation-record", RECORD_SCHEMA_VERSION)
