"""A fast analytic estimate of a candidate: per-stage time and memory from layer_steps.

Formulas (per micro-batch, stage s holding layers L_s on its slowest device):
  t_s   = sum_{l in L_s} (fwd + bwd + recompute + TP collectives) + p2p of the cuts at its ends
  pipe  = sum_s t_s + (m - 1) max_s t_s                 (GPipe, 1F1B)
        = (m + (pp - 1) / v) max_r (rank r's chunks)    (interleaved, v chunks per rank)
  tail  = max_s (gradient sync not hidden behind the last micro-batch's backward
                 + optimizer step + ZeRO-1/2 parameter all-gather)
  step  = pipe + tail;  ZeRO-3 adds each micro-batch's gather/scatter time not hidden by compute.
Memory follows simplan.sim.assemble (MIXED/FP32 bytes per parameter, ZeRO sharding, receive
buffers) with activations x micro-batches in flight (1F1B: pp - s; GPipe: m).
CPU offload (simplan.sim.offload): no optimizer state on the device; the tail's optimizer step is
the host's, plus the parameters' way back and the gradients' way to the host not hidden by the
last backward; the host memory of a node is bounded by its devices times the fullest rank's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from simplan.costmodel import optimizer_step_s
from simplan.devices import DeviceModel
from simplan.model_graph import ModelGraph
from simplan.parallel import ParallelConfig
from simplan.planner.context import CostContext, Prefix
from simplan.planner.layouts import Layout
from simplan.sim.offload import HostStep, host_bytes_per_param, host_of, host_step, offloads
from simplan.units import dtype_bytes

__all__ = ["CostContext", "Estimate", "estimate", "inflight", "megatron_bounds"]


@dataclass(frozen=True, kw_only=True)
class Estimate:
    step_time_s: float
    stage_time_s: tuple[float, ...]  # per micro-batch, per pipeline rank
    stage_memory_bytes: tuple[float, ...]
    stage_capacity_bytes: tuple[float, ...]
    parts: dict[str, float] = field(default_factory=dict)
    host_fits: bool = True  # CPU offload: every node's host memory holds its ranks' share

    @property
    def peak_memory_bytes(self) -> float:
        return max(self.stage_memory_bytes)

    @property
    def fits(self) -> bool:
        return self.host_fits and all(
            m <= c for m, c in zip(self.stage_memory_bytes, self.stage_capacity_bytes, strict=True)
        )

    @property
    def bottleneck(self) -> int:
        return max(range(len(self.stage_time_s)), key=lambda s: self.stage_time_s[s])


def inflight(config: ParallelConfig, rank: int) -> float:
    """Micro-batches (in chunk units / v) whose activations a rank keeps at its peak."""
    m, pp, v = config.num_microbatches, config.pp, config.virtual_stages
    if config.schedule == "gpipe":
        return m
    if config.schedule == "1f1b":
        return min(pp - rank, m)
    total = m * v
    warm = total if m == pp else min((pp - rank - 1) * 2 + (v - 1) * pp, total)
    return min(warm + 1, total) / v


def estimate(
    ctx: CostContext, config: ParallelConfig, layout: Layout, bounds: tuple[int, ...]
) -> Estimate:
    """The analytic step time and memory of `config` laid out by `layout`, chunked by bounds."""
    pp, v, n = config.pp, config.virtual_stages, len(bounds) - 1
    cut = ctx.cut_seconds(config, layout)
    last = len(cut)
    stage_t = [0.0] * pp
    for c in range(n):
        lo, hi = bounds[c], bounds[c + 1]
        pre = ctx.prefix(config, layout, c % pp)
        t = pre.time[hi] - pre.time[lo] + (cut[lo - 1] if lo > 0 else 0.0)
        stage_t[c % pp] += t + (cut[hi - 1] if hi < last else 0.0)
    zero_extra = [_zero3_exposed(ctx, config, layout, bounds, r) for r in range(pp)]
    stage_t = [t + z for t, z in zip(stage_t, zero_extra, strict=True)]
    mem, cap, tail = [], [], []
    for r in range(pp):
        m_r, c_r, tail_r = _rank_memory_and_tail(ctx, config, layout, bounds, r)
        mem.append(m_r)
        cap.append(c_r)
        tail.append(tail_r)
    m = config.num_microbatches
    if config.schedule == "interleaved":
        pipe = (m + (pp - 1) / v) * max(stage_t)
    else:
        pipe = sum(stage_t) + (m - 1) * max(stage_t)
    busy = m * max(stage_t)
    return Estimate(
        host_fits=_host_fits(ctx, config, layout, bounds),
        step_time_s=pipe + max(tail),
        stage_time_s=tuple(stage_t),
        stage_memory_bytes=tuple(mem),
        stage_capacity_bytes=tuple(cap),
        parts={
            "pipeline_s": pipe,
            "busy_s": busy,
            "bubble_s": pipe - busy,
            "tail_s": max(tail),
            "zero3_exposed_s": m * max(zero_extra),
        },
    )


def _ranges(config: ParallelConfig, bounds: tuple[int, ...], r: int) -> list[tuple[int, int]]:
    return [(bounds[c], bounds[c + 1]) for c in range(r, config.chunks, config.pp)]


def _rank_memory_and_tail(
    ctx: CostContext, config: ParallelConfig, layout: Layout, bounds: tuple[int, ...], r: int
) -> tuple[float, float, float]:
    """(peak bytes, capacity bytes, seconds after the last backward) of pipeline rank r."""
    model = ctx.stage_model(layout, r)
    pre = ctx.prefix(config, layout, r)
    mine = _ranges(config, bounds, r)
    params = Prefix.span(pre.params, mine) + _tied(ctx, config, bounds, mine)
    dp, z, per = config.dp, config.zero, ctx.per
    static = params * (
        per["weights"] / (dp if z >= 3 else 1)
        + per["grads"] / (dp if z >= 2 else 1)
        + (0.0 if offloads(config) else per["optimizer"] / (dp if z >= 1 else 1))
    )
    static += Prefix.span(pre.frozen, mine) / (dp if z >= 3 else 1)
    if z >= 3 and dp > 1:
        static += 2 * max(pre.table.params) * ctx.grad_bytes
    if config.pp > 1:
        inner = [ctx.cut_bytes[b - 1] for b in bounds[1:-1]]
        static += 2 * max(inner, default=0.0) * config.micro_batch / config.tp
    acts = Prefix.span(pre.act, mine) * inflight(config, r)
    acts += pre.table.transient_bytes(config.recompute, mine)
    capacity = ctx.headroom.usable_bytes(model.memory_bytes)
    bwd = Prefix.span(pre.bwd, mine)
    return static + acts, capacity, _tail(ctx, config, layout, r, model, params, bwd)


def _tied(
    ctx: CostContext, config: ParallelConfig, bounds: tuple[int, ...], mine: list[tuple[int, int]]
) -> float:
    """A head tied to an embedding on another rank keeps its own copy of the weights."""
    extra = 0.0
    for head, tied, params in ctx.tied:
        here = any(lo <= head < hi for lo, hi in mine)
        if here and not any(lo <= tied < hi for lo, hi in mine):
            extra += params / max(config.tp, 1)
    return extra


def _tail(
    ctx: CostContext,
    config: ParallelConfig,
    layout: Layout,
    r: int,
    model: DeviceModel,
    params: float,
    bwd: float,
) -> float:
    """Gradient sync not hidden by the last backward, optimizer step, ZeRO-1/2 all-gather."""
    shard = config.dp if config.zero >= 1 else 1
    if offloads(config):
        tail = _offload_tail(ctx, config, layout, r, params / shard, bwd)
    else:
        tail = optimizer_step_s(params / shard, model, config.dtype)
    if config.dp == 1:
        return tail
    groups = ctx.dp_groups(layout, r)
    group = groups[0]
    factor = ctx.factor("all_reduce", groups)
    nbytes = params * ctx.grad_bytes
    if config.zero in (1, 2):
        tail += ctx.coll("all_gather", nbytes, group) * factor
    if config.zero == 3:
        return tail
    op = "reduce_scatter" if config.zero == 2 else "all_reduce"
    cap = config.bucket_bytes
    full, rest = divmod(nbytes, cap)
    sync = (full * ctx.coll(op, cap, group) + ctx.coll(op, rest, group)) * factor
    last = ctx.coll(op, rest or cap, group) * factor
    overlap = model.kind == "gpu"
    hidden = bwd if overlap else 0.0
    return tail + max(sync - hidden, last if overlap else sync)


def _host_step(
    ctx: CostContext, config: ParallelConfig, layout: Layout, r: int, shard_params: float
) -> HostStep:
    device = ctx.dp_groups(layout, r)[0][0]
    group = ctx.cluster.node_group(device)
    return host_step(config, host_of(ctx.cluster, device), group.devices_per_node, shard_params)


def _offload_tail(
    ctx: CostContext, config: ParallelConfig, layout: Layout, r: int, shard_params: float,
    bwd: float,
) -> float:  # fmt: skip
    """The host's Adam step, the parameters' way back, and the gradients' way to the host not
    hidden by the last backward (at least the last bucket's)."""
    step = _host_step(ctx, config, layout, r, shard_params)
    full = shard_params * dtype_bytes(config.grad_reduce_dtype) * (config.dp if config.zero else 1)
    last = step.d2h_s * min(1.0, config.bucket_bytes / full) if full > 0 else 0.0
    return step.optimizer_s + step.h2d_s + max(step.d2h_s - bwd, last)


def _host_fits(
    ctx: CostContext, config: ParallelConfig, layout: Layout, bounds: tuple[int, ...]
) -> bool:
    """CPU offload: whether every node's host holds its devices' optimizer shards (bounded by
    the fullest rank's times the devices a node gives the plan)."""
    if not offloads(config):
        return True
    shard = config.dp if config.zero >= 1 else 1
    worst, host_memory = 0.0, math.inf
    for r in range(config.pp):
        pre = ctx.prefix(config, layout, r)
        mine = _ranges(config, bounds, r)
        params = (Prefix.span(pre.params, mine) + _tied(ctx, config, bounds, mine)) / shard
        worst = max(worst, params * host_bytes_per_param(config, ctx.per["optimizer"]))
        device = ctx.dp_groups(layout, r)[0][0]
        host_memory = min(host_memory, host_of(ctx.cluster, device).memory_bytes)
    per_node = min(ctx.cluster.gpus_per_node, config.world_size)
    return worst * per_node <= host_memory


def _zero3_exposed(
    ctx: CostContext, config: ParallelConfig, layout: Layout, bounds: tuple[int, ...], r: int
) -> float:
    """ZeRO-3: per micro-batch, parameter gathers and gradient scatters not hidden by compute."""
    if config.zero < 3 or config.dp == 1:
        return 0.0
    model = ctx.stage_model(layout, r)
    pre = ctx.prefix(config, layout, r)
    groups = ctx.dp_groups(layout, r)
    group = groups[0]
    factor = ctx.factor("all_reduce", groups)
    mine = _ranges(config, bounds, r)
    gather = scatter = 0.0
    first = -1.0
    for lo, hi in mine:
        for i in range(lo, hi):
            nbytes = pre.table.params[i] * ctx.grad_bytes
            g = ctx.coll("all_gather", nbytes + pre.table.frozen_bytes[i], group) * factor
            gather += g
            scatter += ctx.coll("reduce_scatter", nbytes, group) * factor
            first = g if first < 0 else first
    fwd = Prefix.span(pre.fwd, mine)
    bwd = Prefix.span(pre.time, mine) - fwd
    exposed = max(gather - fwd, 0.0) + max(gather + scatter - bwd, 0.0)
    return max(first, 0.0) + exposed if model.kind == "gpu" else gather * 2 + scatter


def megatron_bounds(graph: ModelGraph, chunks: int) -> tuple[int, ...] | None:
    """The simulator's default split (blocks evenly, embedding first, head last), if it
    applies; else None."""
    n = len(graph.layers)
    blocks = [i for i, layer in enumerate(graph.layers) if layer.kind == "transformer_block"]
    if blocks and len(blocks) % chunks == 0 and blocks == list(range(1, n - 1)):
        per = len(blocks) // chunks
        return (0, *[1 + per * k for k in range(1, chunks)], n)
    return None


def even_bounds(n: int, chunks: int) -> tuple[int, ...]:
    """Layers split as evenly as possible by count."""
    return tuple(math.floor(n * k / chunks) for k in range(chunks + 1))
