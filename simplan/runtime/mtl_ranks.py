"""The training steps of a real multi-task run (simplan.runtime.mtl_run) on one gloo rank.

replicated: every rank is a DDP replica of the whole model on its share of the global batch; one
    backward per step (simplan.runtime.mtl_steps); stateful strategies (uncertainty, gradnorm,
    dwa) average the step's losses and gradient norms over the ranks (one small all-reduce) so
    that every replica moves its weights alike.
task-parallel (2 ranks): rank 0 runs the trunk and every head but the heaviest, rank 1 the
    heaviest head, both on the whole global batch. Rank 0 sends the trunk's features (and the
    step's task weights) to rank 1 point-to-point, runs its own heads forward and backward, then
    waits for rank 1's feature gradient (and its loss) to run the trunk's backward; each rank
    steps the optimizer of its own parameters. Rank 0 owns the weighting strategy.
"""

from __future__ import annotations

import abc
import time
import warnings
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from simplan.runtime.mtl_steps import (
    Split,
    StepStats,
    declared,
    split_views,
    step_rows,
    task_loss,
    weighted_total,
)
from simplan.runtime.task_weights import Equal, make_weighting
from simplan.shapes_data import ShapesData

STATELESS = ("equal", "pcgrad", "mgda")  # strategies whose weights need no shared statistics


class Trainer(abc.ABC):
    """What both placements share: the split model, the data and this rank's batches."""

    def __init__(self, split: Split, data: ShapesData, weighting: str, batch: int) -> None:
        self.split, self.data, self.batch = split, data, batch
        self.tasks = split.taskset.tasks
        self.weighting_name = weighting
        self.weighting = make_weighting(weighting, len(self.tasks))
        self.stats: list[StepStats] = []

    def rows(self, step: int, lo: int, hi: int) -> ShapesData:
        return step_rows(self.data, step, self.batch, lo, hi)

    def block(self, first: int, count: int) -> list[float]:
        """Steps first..first+count-1, each timed after a barrier."""
        times = []
        for i in range(first, first + count):
            dist.barrier()
            t0 = time.perf_counter()
            self.step(i)
            times.append(time.perf_counter() - t0)
        return times

    @abc.abstractmethod
    def step(self, i: int) -> None:
        """Step `i` of this rank's training."""


class Replicated(Trainer):
    def __init__(
        self, split: Split, data: ShapesData, weighting: str, batch: int, rank: int, world: int
    ) -> None:
        super().__init__(split, data, weighting, batch)
        with warnings.catch_warnings():  # its replacement still syncs buffers at init
            warnings.simplefilter("ignore", FutureWarning)
            # batch-norm statistics stay rank-local: no buffer broadcast each forward
            self.ddp = DDP(Whole(split, self.weighting), broadcast_buffers=False)
        self.opt = torch.optim.Adam(self.ddp.parameters(), lr=1e-3, fused=True)
        per = batch // world
        self.lo, self.hi, self.world = rank * per, (rank + 1) * per, world

    def step(self, i: int) -> None:
        data = self.rows(i, self.lo, self.hi)
        weights = self.weighting.weights()
        _, outputs = self.ddp(data.images)
        _, captured = outputs
        losses = [task_loss(t, out, data) for t, out in zip(self.tasks, outputs[0], strict=True)]
        weighted_total(self.tasks, losses, weights).backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        values = [float(x.detach()) for x in losses] + [float(g.norm()) for g in captured]
        if self.weighting_name not in STATELESS:
            shared = torch.tensor(values)
            dist.all_reduce(shared)
            values = (shared / self.world).tolist()
        n = len(self.tasks)
        stats = StepStats(
            losses=tuple(values[:n]), weights=tuple(weights), grad_norms=tuple(values[n:])
        )
        self.weighting.update(declared(self.tasks, stats.losses), list(stats.grad_norms))
        self.stats.append(stats)


class Whole(nn.Module):
    """The whole split model as one module for DDP: forward returns (features, (the tasks'
    outputs, the per-task feature gradients as the backward fills them))."""

    def __init__(self, split: Split, weighting: Any) -> None:
        super().__init__()
        self.model, self.split, self.weighting = split.module, split, weighting

    def forward(self, x: Any) -> Any:
        tasks = self.split.taskset.tasks
        z = self.split.trunk(x)
        views, captured = split_views(z, len(tasks), self.weighting)
        outs = [self.split.head(t, v) for t, v in zip(tasks, views, strict=True)]
        return z, (outs, captured)


class TaskParallel(Trainer):
    def __init__(
        self, split: Split, data: ShapesData, weighting: str, batch: int, rank: int
    ) -> None:
        super().__init__(split, data, weighting, batch)
        self.rank, self.remote = rank, split.heaviest_task()
        self.local = tuple(t for t in self.tasks if t is not self.remote)
        heads = split.taskset.heads
        layers = (
            (*split.taskset.trunk, *(x for t in self.local for x in heads[t.name]))
            if rank == 0
            else heads[self.remote.name]
        )
        self.opt = torch.optim.Adam(split.parameters(layers), lr=1e-3, fused=True)
        with torch.no_grad():
            self.z_shape = split.trunk(data.images[:1]).shape[1:]

    def step(self, i: int) -> None:
        if self.rank == 0:
            self._trunk_step(i)
        else:
            self._head_step(i)

    def _trunk_step(self, i: int) -> None:
        data = self.rows(i, 0, self.batch)
        weights = self.weighting.weights()
        z = self.split.trunk(data.images)
        sends = [_isend(z.detach(), 1), _isend(torch.tensor(weights), 1)]
        leaf = z.detach().requires_grad_()
        views, captured = split_views(leaf, len(self.local), Equal(len(self.local)))
        idx = [self.tasks.index(t) for t in self.local]
        losses = [
            task_loss(t, self.split.head(t, v), data)
            for t, v in zip(self.local, views, strict=True)
        ]
        weighted_total(self.local, losses, [weights[j] for j in idx]).backward()
        remote_grad, remote_loss = torch.empty_like(z), torch.zeros(1)
        dist.recv(remote_grad, src=1)
        dist.recv(remote_loss, src=1)
        grads: list[Any] = [None] * len(self.tasks)
        values = [0.0] * len(self.tasks)
        for j, g, x in zip(idx, captured, losses, strict=True):
            grads[j], values[j] = g, float(x.detach())
        r = self.tasks.index(self.remote)
        grads[r], values[r] = remote_grad, float(remote_loss)
        z.backward(self.weighting.trunk_grad(grads))
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        for req in sends:
            req.wait()
        norms = [float(g.norm()) for g in grads]
        stats = StepStats(losses=tuple(values), weights=tuple(weights), grad_norms=tuple(norms))
        self.weighting.update(declared(self.tasks, stats.losses), norms)
        self.stats.append(stats)

    def _head_step(self, i: int) -> None:
        data = self.rows(i, 0, self.batch)
        z = torch.empty((self.batch, *self.z_shape))
        weights = torch.empty(len(self.tasks))
        dist.recv(z, src=0)
        dist.recv(weights, src=0)
        z.requires_grad_()
        loss = task_loss(self.remote, self.split.head(self.remote, z), data)
        w = float(weights[self.tasks.index(self.remote)])
        (self.remote.weight * w * loss).backward()
        send = _isend(z.grad, 0)
        dist.send(loss.detach().reshape(1), dst=0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        send.wait()


def _isend(tensor: Any, dst: int) -> Any:
    """dist.isend's request (it is None only for ranks outside the group, never here)."""
    req = dist.isend(tensor, dst=dst)
    if req is None:
        raise RuntimeError(f"no send request to rank {dst}")
    return req
