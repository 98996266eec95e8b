"""From a candidate to the partition ILP's arrays, and back: stage boundaries sized to each
stage's device speed, memory and the links its cuts cross."""

from __future__ import annotations

import itertools

from simplan.parallel import ParallelConfig
from simplan.planner.estimate import CostContext, inflight, megatron_bounds
from simplan.planner.ilp import PartitionProblem, SolveRecord, solve_partition
from simplan.planner.layouts import Layout, boundary_scale, slowest
from simplan.units import MiB


def default_bounds(ctx: CostContext, config: ParallelConfig, layout: Layout) -> tuple[int, ...]:
    """The first guess: Megatron's even split of the blocks when it applies, else cuts where
    stage 0's cumulative layer time crosses k / chunks of the total (O(n)). Where the pipeline
    ranks run on different devices (a mixed cluster), each chunk's share of stage 0's time is
    its rank's speed over the sum of the chunks' speeds (a rank's speed: 1 / the model's time on
    its devices), so that the guess, and the estimate that ranks the candidates for the
    partition ILP, do not load a slow rank as much as a fast one."""
    pp = config.pp
    if len({ctx.stage_model(layout, rank).name for rank in range(pp)}) > 1:
        totals = [ctx.prefix(config, layout, rank).time[-1] for rank in range(pp)]
        speeds = [1.0 / totals[c % pp] for c in range(config.chunks)]
        shares = [speed / sum(speeds) for speed in speeds]
        return quantile_bounds(ctx.prefix(config, layout, 0).time, config.chunks, shares)
    bounds = megatron_bounds(ctx.graph, config.chunks)
    if bounds is not None:
        return bounds
    return quantile_bounds(ctx.prefix(config, layout, 0).time, config.chunks)


def quantile_bounds(
    prefix: tuple[float, ...], chunks: int, shares: list[float] | None = None
) -> tuple[int, ...]:
    """Boundaries where a prefix sum crosses the cumulative shares of its total (k/chunks
    each by default), each chunk non-empty."""
    n = len(prefix) - 1
    total = prefix[-1]
    reached = list(itertools.accumulate(shares)) if shares is not None else None
    bounds = [0]
    j = 1
    for k in range(1, chunks):
        target = total * (reached[k - 1] if reached is not None else k / chunks)
        j = max(j, bounds[-1] + 1)
        while j < n - (chunks - k) and prefix[j] < target:
            j += 1
        if j > bounds[-1] + 1 and target - prefix[j - 1] < prefix[j] - target:
            j -= 1
        bounds.append(j)
    bounds.append(n)
    return tuple(bounds)


def partition_problem(ctx: CostContext, config: ParallelConfig, layout: Layout) -> PartitionProblem:
    """Rows per pipeline stage: layer times (TP collectives included) on the stage's devices,
    static + in-flight activation memory per layer, the capacity less the receive buffers."""
    pp, n = config.pp, len(ctx.graph.layers)
    dp, z, per = config.dp, config.zero, ctx.per
    per_param = (
        per["weights"] / (dp if z >= 3 else 1)
        + per["grads"] / (dp if z >= 2 else 1)
        + per["optimizer"] / (dp if z >= 1 else 1)
    )
    times, mems, caps = [], [], []
    buffers = 2 * max(ctx.cut_bytes[:-1], default=0.0) * config.micro_batch / config.tp
    for s in range(pp):
        model = slowest(ctx.cluster, layout.stage_devices(s))
        table = ctx.table(
            model, config.tp, config.micro_batch, config.recompute, config.sequence_parallel
        )
        times.append(tuple(ctx.layer_times(config, layout, s)))
        flight = inflight(config, s)
        mems.append(
            tuple(
                table.params[i] * per_param
                + table.frozen_bytes[i] / (dp if z >= 3 else 1)
                + table.act_bytes[i] * flight
                for i in range(n)
            )
        )
        extra = buffers + (2 * max(table.params) * ctx.grad_bytes if z >= 3 and dp > 1 else 0.0)
        extra += table.transient_bytes(config.recompute, [(0, n)])
        caps.append(ctx.headroom.usable_bytes(model.memory_bytes) - extra - 64 * MiB)
    cut = ctx.cut_seconds(config, layout)
    mean_cut = sum(ctx.cut_bytes) / max(n, 1) * config.micro_batch / config.tp
    scale, _ = boundary_scale(ctx.cluster, layout, mean_cut)
    return PartitionProblem(
        time=tuple(times),
        cut=(*cut[:-1], 0.0),
        mem=tuple(mems),
        cap=tuple(caps),
        microbatches=config.num_microbatches,
        cut_scale=scale,
    )


def ilp_bounds(
    ctx: CostContext,
    config: ParallelConfig,
    layout: Layout,
    time_limit_s: float,
    solver: str = "highs",
) -> tuple[tuple[int, ...] | None, SolveRecord]:
    """The ILP's stage boundaries for a GPipe/1F1B candidate (one chunk per rank)."""
    problem = partition_problem(ctx, config, layout)
    return solve_partition(problem, time_limit_s=time_limit_s, solver=solver)
