"""The pipeline split with torch.distributed.pipelining (imports torch).

The model's layers (the ModelGraph's, in order) are cut into pp x virtual_stages chunks at the
configuration's stage boundaries (the plan's, else the simulator's); simplan.runtime.compose
makes pipeline rank r hold chunks r, r + pp, ... as `PipelineStage`s and run ScheduleGPipe,
Schedule1F1B or ScheduleInterleaved1F1B.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from simplan.errors import SimplanError
from simplan.model_graph import ModelGraph
from simplan.parallel import ParallelConfig


def stage_bounds(graph: ModelGraph, config: ParallelConfig) -> tuple[int, ...]:
    """The configuration's stage boundaries, else the simulator's default split (by FLOPs)."""
    from simplan.sim.assemble import chunk_bounds

    weights = [layer.fwd_flops + layer.bwd_flops for layer in graph.layers]
    return chunk_bounds(graph, config, weights)


def chunk_module(model: nn.Module, graph: ModelGraph, lo: int, hi: int) -> nn.Module:
    """Layers [lo, hi) of the model as one sequential module (the layers must form a chain)."""
    for a, b in zip(graph.layers[lo:hi], graph.layers[lo + 1 : hi], strict=False):
        if graph.edges and (a.name, b.name) not in set(graph.edges):
            raise SimplanError(
                f"{graph.name} is not a chain of layers ({a.name} does not feed {b.name}); "
                f"pipelining here needs a sequential model"
            )
    return nn.Sequential(*(model.get_submodule(layer.name) for layer in graph.layers[lo:hi]))


def schedule_class(cfg: ParallelConfig) -> Callable[..., Any]:
    from torch.distributed import pipelining as pl

    if cfg.schedule == "interleaved":
        return pl.ScheduleInterleaved1F1B
    single = pl.ScheduleGPipe if cfg.schedule == "gpipe" else pl.Schedule1F1B
    return lambda stages, n, loss: single(stages[0], n, loss)
