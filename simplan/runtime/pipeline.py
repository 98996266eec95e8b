"""Pipeline-parallel training steps with torch.distributed.pipelining (imports torch).

The model's layers (the ModelGraph's, in order) are cut into pp x virtual_stages chunks at the
configuration's stage boundaries (the simulator's, when validating); rank r holds chunks r,
r + pp, ... as `PipelineStage`s and runs ScheduleGPipe, Schedule1F1B or ScheduleInterleaved1F1B.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from simplan.errors import SimplanError
from simplan.model_graph import ModelGraph
from simplan.parallel import ParallelConfig
from simplan.runtime.job import JobSpec
from simplan.runtime.strategies import loss_of, make_optimizer


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


@dataclass
class PipelineTrainer:
    schedule: Any
    optimizer: torch.optim.Optimizer
    first_inputs: tuple[Any, ...] | None  # the whole step's batch, on the rank with chunk 0
    target: torch.Tensor | None  # on the rank with the last chunk

    def forward_backward(self) -> None:
        # return_outputs=False: the last stage does not keep every micro-batch's output (the
        # logits) for the step's caller, who does not read them
        kwargs: dict[str, Any] = {"return_outputs": False}
        if self.target is not None:
            kwargs |= {"target": self.target, "losses": []}
        self.schedule.step(*(self.first_inputs or ()), **kwargs)

    def optimizer_step(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def pp_trainer(
    job: JobSpec,
    model: nn.Module,
    graph: ModelGraph,
    inputs: tuple[Any, ...],
    target: torch.Tensor,
    device: torch.device,
    rank: int,
) -> PipelineTrainer:
    from torch.distributed.pipelining import PipelineStage

    cfg = job.config
    bounds = stage_bounds(graph, cfg)
    mine = list(range(rank, cfg.chunks, cfg.pp))
    stages, params = [], []
    for c in mine:
        sub = chunk_module(model, graph, bounds[c], bounds[c + 1]).to(device)
        params += list(sub.parameters())
        stages.append(PipelineStage(sub, c, cfg.chunks, device))
    schedule = _schedule(cfg)(stages, cfg.num_microbatches, _loss)
    return PipelineTrainer(
        schedule=schedule,
        optimizer=make_optimizer(job, params),
        first_inputs=inputs if 0 in mine else None,
        target=target if cfg.chunks - 1 in mine else None,
    )


def _loss(output: Any, target: torch.Tensor) -> torch.Tensor:
    return loss_of(output, target)


def _schedule(cfg: ParallelConfig) -> Callable[..., Any]:
    from torch.distributed import pipelining as pl

    if cfg.schedule == "interleaved":
        return pl.ScheduleInterleaved1F1B
    single = pl.ScheduleGPipe if cfg.schedule == "gpipe" else pl.Schedule1F1B
    return lambda stages, n, loss: single(stages[0], n, loss)
