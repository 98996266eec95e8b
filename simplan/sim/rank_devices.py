"""Which device each rank runs on.

Ranks are numbered Megatron-style, tensor-parallel fastest, then context-parallel, then data-
parallel: rank = (stage * dp * cp + replica) * tp + tp_rank with replica = dp_rank * cp + cp_rank
(a stage's replicas are its dp * cp ranks that hold the same parameters). The default placement
puts rank i on device i (devices are numbered node by node), so a TP group sits inside a node, a
data-parallel group takes one device per node on the same rail, and pipeline stages span
consecutive nodes.
"""

from __future__ import annotations

from collections.abc import Sequence

from simplan.errors import SimplanError
from simplan.parallel import ParallelConfig

Grid = tuple[tuple[tuple[int, ...], ...], ...]  # [stage][replica][tp_rank] -> device


def rank_of(config: ParallelConfig, stage: int, replica: int, tp_rank: int) -> int:
    return (stage * config.replicas + replica) * config.tp + tp_rank


def grid(config: ParallelConfig, devices: Sequence[int] | None = None) -> Grid:
    """The device of every (stage, replica, tp rank); devices[rank] (default: rank itself)."""
    order = list(range(config.world_size)) if devices is None else [int(d) for d in devices]
    if len(order) != config.world_size:
        raise SimplanError(f"placement lists {len(order)} devices for {config.world_size} ranks")
    if len(set(order)) != len(order):
        raise SimplanError("placement puts two ranks on one device")
    return tuple(
        tuple(
            tuple(order[rank_of(config, s, d, t)] for t in range(config.tp))
            for d in range(config.replicas)
        )
        for s in range(config.pp)
    )


def tp_group(g: Grid, stage: int, replica: int = 0) -> tuple[int, ...]:
    return g[stage][replica]


def dp_group(g: Grid, stage: int, tp_rank: int = 0) -> tuple[int, ...]:
    return tuple(g[stage][d][tp_rank] for d in range(len(g[stage])))


def dp_groups(g: Grid, stage: int) -> list[tuple[int, ...]]:
    """All data-parallel groups of a stage (one per TP rank); they sync at the same time."""
    return [dp_group(g, stage, t) for t in range(len(g[stage][0]))]


def cp_group(g: Grid, stage: int, cp: int, tp_rank: int = 0) -> tuple[int, ...]:
    """The context-parallel group of the first data-parallel rank of a stage."""
    return tuple(g[stage][c][tp_rank] for c in range(cp))
