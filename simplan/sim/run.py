"""simulate(model, cluster, config) -> SimResult."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from dataclasses import replace
from typing import Any

from simplan.capabilities import CapabilityProvider
from simplan.compression import SYNC_WARMUP_STEPS
from simplan.deadline import Deadline
from simplan.devices import DeviceModel
from simplan.errors import SimplanError
from simplan.headroom import DEFAULT_HEADROOM, Headroom
from simplan.model_graph import ModelGraph
from simplan.parallel import ParallelConfig, check_config_for_model, check_world
from simplan.profiles import Profile
from simplan.sim.assemble import FP32, MIXED, Assembler, MemoryParts
from simplan.sim.engine import EnginePlan, RankStats
from simplan.sim.offload import check_host_memory, host_bytes_per_param, host_of, offloads
from simplan.sim.peak import Moment, Static, peak_moment
from simplan.sim.rank_devices import grid
from simplan.sim.rank_memory import kept_output_bytes, rank_moments, sweep_layers
from simplan.sim.result import DeviceStats, SimResult
from simplan.sim.steady import FULL_MICROBATCHES, BoundedRun, run_bounded


def resolve_model(model: ModelGraph | str, config: ParallelConfig) -> ModelGraph:
    if isinstance(model, ModelGraph):
        if config.seq_len and model.seq_len and config.seq_len != model.seq_len:
            raise SimplanError(
                f"the model graph was counted at seq_len {model.seq_len}, the "
                f"configuration asks for {config.seq_len}; load it at that length"
            )
        return model if model.dtype == config.dtype else recounted(model, config.dtype)
    from simplan.sources import load_model

    return load_model(model, seq_len=config.seq_len or None, dtype=config.dtype)


def recounted(graph: ModelGraph, dtype: str) -> ModelGraph:
    """`graph` counted again at `dtype`: its bytes (weights, saved activations, outputs) depend
    on the dtype it was counted at, so a graph counted at fp32 and trained in bf16 would double
    its memory and traffic. Recounted from the model it was loaded from when it is still that
    model's count; refused (one line) when it was built by hand or changed since."""
    from simplan.sources import load_model

    spec = graph.meta.get("spec")
    fix = f"load it at {dtype} (simplan.load_model(..., dtype={dtype!r}) or --dtype {graph.dtype})"
    if not isinstance(spec, str):
        raise SimplanError(
            f"model graph {graph.name} was counted at {graph.dtype}, the configuration trains in "
            f"{dtype}; {fix}"
        )
    own = load_model(spec, dtype=graph.dtype)  # at the model's own length: the usual case
    seq_len = None if own.seq_len == graph.seq_len else graph.seq_len
    if seq_len is not None:
        own = load_model(spec, seq_len=seq_len, dtype=graph.dtype)
    if own != graph:
        raise SimplanError(
            f"model graph {graph.name} was counted at {graph.dtype} and changed since, the "
            f"configuration trains in {dtype}; {fix}"
        )
    return load_model(spec, seq_len=seq_len, dtype=dtype)


def resolve_cluster(cluster: Any) -> Any:
    if isinstance(cluster, str):
        from simplan.topology import load_cluster

        return load_cluster(cluster)
    return cluster


def simulate(
    model: ModelGraph | str,
    cluster: Any,
    config: ParallelConfig,
    *,
    profile: Profile | None = None,
    placement: list[int] | None = None,
    record: bool = True,
    device: DeviceModel | None = None,
    capabilities: CapabilityProvider | None = None,
    full_microbatches: int = FULL_MICROBATCHES,
    deadline: Deadline | None = None,
    headroom: Headroom = DEFAULT_HEADROOM,
    spare_devices: bool = False,
) -> SimResult:
    """Simulate one training step of `config` for `model` on `cluster`.

    model: a ModelGraph or a model spec; cluster: a Cluster or a preset name; profile: measured
    layer times to use where they match the device; placement: the device of each rank (default:
    rank i on device i); record: keep the timeline (for traces and reports); device: a device
    model to use for every rank instead of the cluster's (what-if studies, calibration);
    capabilities: what each device can do (simplan.capabilities; default: the cluster's);
    full_microbatches: simulate every micro-batch up to this many, beyond it a few periods of the
    schedule, extrapolated exactly (simplan.sim.steady); deadline: stop with
    simplan.deadline.TimeLimitReached when it passes; headroom: memory kept free on every
    device (a step fits when its peak is within capacity less it)."""
    started = time.perf_counter()
    cluster = resolve_cluster(cluster)
    graph = resolve_model(model, config)
    if not (spare_devices and placement is not None and config.world_size < cluster.num_devices):
        check_world(config, cluster.num_devices)
    check_config_for_model(config, graph)
    g = grid(config, placement)
    assembler = Assembler(graph, cluster, config, g, profile, device, capabilities)
    local = config.local_sgd > 1 and config.dp > 1
    if local:
        assembler.exchange = "none"
    plan, memory, bounds = assembler.build()
    offload = offload_summary(assembler, plan, memory)
    run = run_bounded(plan, record, full_microbatches=full_microbatches, deadline=deadline)
    periodic = _local_sgd(assembler, run.step_s, full_microbatches, deadline) if local else None
    devices = tuple(
        _device(
            r,
            assembler,
            run.stats[r],
            _peak(assembler, r, bounds, memory[r], run.stats[r].peak_act_bytes),
            run.step_s,
            plan.ranks[r].device,
            headroom,
        )
        for r in range(config.pp)
    )
    result = _result(
        graph, cluster, config, assembler, devices, bounds, run, time.perf_counter() - started
    )
    if offload:
        result = replace(result, offload=offload)
    if periodic is None:
        return result
    return _with_step(result, periodic["period_mean_s"], periodic)


def offload_summary(
    assembler: Assembler, plan: EnginePlan, memory: list[MemoryParts]
) -> dict[str, Any]:
    """CPU offload: each node's host memory (checked: a one-line error where it does not fit),
    the device memory it saves and each rank's traffic and host step; {} without offload."""
    cfg = assembler.config
    if not offloads(cfg):
        return {}
    g = assembler.grid
    per_device = {d: memory[r].host for r in range(cfg.pp) for rep in g[r] for d in rep}
    per_node = check_host_memory(assembler.cluster, per_device)
    per = MIXED if cfg.dtype in ("bf16", "fp16") else FP32
    stages = []
    for r, rank in enumerate(plan.ranks):
        shard_params = memory[r].host / host_bytes_per_param(cfg, per["optimizer"])
        step = assembler.host_step(shard_params, r)
        stages.append(
            {
                "stage": r,
                "device_bytes_saved": shard_params * per["optimizer"],
                "host_bytes": memory[r].host,
                "d2h_bytes": step.d2h_bytes,
                "h2d_bytes": step.h2d_bytes,
                "d2h_s": step.d2h_s,
                "h2d_s": step.h2d_s,
                "host_optimizer_s": rank.optimizer_s,
            }
        )
    host = host_of(assembler.cluster, g[0][0][0])
    return {
        "mode": cfg.offload,
        "host_link": host.link,
        "host_link_Bps": host.device_link_Bps(),
        "host_memory_bytes": host.memory_bytes,
        "host_bytes_per_node": max(per_node.values()),
        "stages": stages,
    }


def _local_sgd(
    assembler: Assembler, local_s: float, full_microbatches: int, deadline: Deadline | None
) -> dict[str, float]:
    """Local SGD as torch's post-local SGD runs it: SYNC_WARMUP_STEPS steps of plain gradient
    all-reduce, then per period of H steps, H - 1 local steps (no exchange) and one that ends
    with the model average. Step times of each kind and the mean over a period."""
    period = assembler.config.local_sgd
    times = {}
    for exchange in ("parameters", "gradients"):
        assembler.exchange = exchange
        plan, _, _ = assembler.build()
        times[exchange] = run_bounded(
            plan, False, full_microbatches=full_microbatches, deadline=deadline
        ).step_s
    assembler.exchange = "none"
    return {
        "period": period,
        "warmup_steps": SYNC_WARMUP_STEPS,
        "warmup_step_s": times["gradients"],
        "local_step_s": local_s,
        "sync_step_s": times["parameters"],
        "period_mean_s": ((period - 1) * local_s + times["parameters"]) / period,
    }


def _with_step(result: SimResult, step: float, local_sgd: dict[str, float]) -> SimResult:
    """The result with its step time (and the rates from it) replaced by the mean over a
    local SGD period."""
    scale = result.step_time_s / step
    return dataclasses.replace(
        result,
        step_time_s=step,
        samples_per_s=result.samples_per_s * scale,
        tokens_per_s=result.tokens_per_s * scale,
        tflops_per_device=result.tflops_per_device * scale,
        mfu=result.mfu * scale,
        local_sgd=local_sgd,
    )


def _peak(
    assembler: Assembler, r: int, bounds: tuple[int, ...], mem: MemoryParts, saved_peak: float
) -> Moment:
    """Rank r's largest moment of the step (simplan.sim.peak)."""
    cfg = assembler.config
    per = MIXED if cfg.dtype in ("bf16", "fp16") else FP32
    chunks = [
        (
            sweep_layers(assembler.graph, cfg, assembler.steps[r][lo:hi], lo, per["grads"]),
            sum(s.activation_bytes for s in assembler.steps[r][lo:hi]),
            kept_output_bytes(assembler.graph, cfg, assembler.steps[r][hi - 1]),
        )
        for c in range(r, cfg.chunks, cfg.pp)
        for lo, hi in [(bounds[c], bounds[c + 1])]
    ]
    static = Static(weights=mem.weights, optimizer=mem.optimizer, buffers=mem.buffers)
    moments = rank_moments(
        chunks, static, mem.grads, peak_saved_bytes=saved_peak, microbatches=cfg.num_microbatches
    )
    return peak_moment(moments)


def _device(
    r: int, assembler: Assembler, s: RankStats, peak: Moment, step: float, device: int,
    headroom: Headroom,
) -> DeviceStats:  # fmt: skip
    busy = s.compute_s + s.recompute_s + s.optimizer_s
    model = assembler.devices[r]
    parts = dict(peak.parts)
    capacity = min(
        assembler.cluster.device_model(d).memory_bytes for rep in assembler.grid[r] for d in rep
    )
    return DeviceStats(
        stage=r,
        device=device,
        device_name=model.name,
        compute_s=s.compute_s,
        recompute_s=s.recompute_s,
        optimizer_s=s.optimizer_s,
        exposed_comm_s=s.exposed_comm_s,
        bubble_s=max(step - busy - s.exposed_comm_s, 0.0),
        busy_s=busy,
        memory=parts,
        peak_memory_bytes=peak.total,
        peak_moment=peak.name,
        saved_activation_bytes=s.peak_act_bytes,
        capacity_bytes=capacity,
        headroom_bytes=headroom.bytes_for(capacity),
        overheads=headroom.parts(capacity),
    )


def _result(
    graph: ModelGraph,
    cluster: Any,
    config: ParallelConfig,
    assembler: Assembler,
    devices: tuple[DeviceStats, ...],
    bounds: tuple[int, ...],
    run: BoundedRun,
    wall: float,
) -> SimResult:
    step = run.step_s
    samples = config.global_batch
    flops = (graph.fwd_flops + graph.bwd_flops) * samples
    world = config.world_size
    peak = sum(cluster.device_model(d).peak(config.dtype) for d in range(cluster.num_devices))
    n = len(devices)
    breakdown = {
        key: sum(getattr(d, key) for d in devices) / n
        for key in ("compute_s", "exposed_comm_s", "bubble_s", "recompute_s", "optimizer_s")
    }
    sources = Counter(s.source for steps in assembler.steps for s in steps)
    return SimResult(
        model=graph.name,
        cluster=cluster.name,
        config=config.to_dict()
        | {"seq_len": graph.seq_len, "num_microbatches": config.num_microbatches},
        step_time_s=step,
        samples_per_s=samples / step,
        tokens_per_s=samples * graph.tokens_per_sample / step,
        model_flops_per_step=flops,
        tflops_per_device=flops / step / world / 1e12,
        mfu=flops / step / peak,
        breakdown=breakdown,
        devices=devices,
        stage_layers=tuple((bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)),
        critical_path=critical_path(devices, step),
        event_count=run.event_count,
        sim_wall_s=wall,
        cost_sources=dict(sorted(sources.items())),
        simulated_microbatches=run.simulated_microbatches,
        events=run.events,
        memory_series=tuple(tuple(s.memory_series) for s in run.stats),
    )


def critical_path(devices: tuple[DeviceStats, ...], step: float) -> tuple[str, ...]:
    """A few sentences: the bottleneck stage and where the step's time goes."""
    worst = max(devices, key=lambda d: (d.busy_s + d.exposed_comm_s, -d.stage))
    lines = [
        f"stage {worst.stage} is the busiest: {worst.busy_s / step:.0%} computing, "
        f"{worst.exposed_comm_s / step:.0%} waiting on communication"
    ]
    bubble = sum(d.bubble_s for d in devices) / len(devices)
    if bubble > 0.005 * step:
        lines.append(f"pipeline bubble: {bubble / step:.1%} of the step on average")
    full = max(devices, key=lambda d: d.peak_memory_bytes / d.capacity_bytes)
    lines.append(
        f"fullest device: stage {full.stage} at "
        f"{full.peak_memory_bytes / full.capacity_bytes:.0%} of its memory"
    )
    return tuple(lines)
