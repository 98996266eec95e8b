"""Data- and tensor-parallel training steps with torch.distributed's own APIs (imports torch).

DDP (`DistributedDataParallel`, with a bucket size and an optional compression hook), FSDP2
(`fully_shard` on every layer, then the root) and tensor parallelism (DTensor `parallelize_module`
with Megatron's column/row pairs). Each builder returns a Trainer: one optimizer step is
`forward_backward()` over the replica's micro-batches, then `optimizer_step()`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn
from torch.nn import functional as F

from simplan.errors import SimplanError
from simplan.model_graph import ModelGraph
from simplan.nets.transformer import Attention, Block, TransformerLM
from simplan.runtime.job import JobSpec
from simplan.units import MiB


def loss_of(output: Any, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits (..., classes) against class indices (...)."""
    return F.cross_entropy(output.flatten(0, -2), target.flatten())


def make_optimizer(job: JobSpec, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """SGD with momentum, or Adam with the fused kernel; DTensor and plain parameters (a
    tensor-parallel model's sharded and replicated ones) in separate groups, as fused Adam
    needs."""
    from torch.distributed.tensor import DTensor

    groups = [
        {"params": [p for p in params if isinstance(p, DTensor) == dt]} for dt in (True, False)
    ]
    nonempty = [g for g in groups if g["params"]]
    if job.optimizer == "sgd":
        return torch.optim.SGD(nonempty, lr=1e-3, momentum=0.9)
    return torch.optim.Adam(nonempty, lr=1e-4, fused=True)  # one kernel per tensor: what
    # the simulator's optimizer model (28 bytes of traffic per parameter) describes


@dataclass
class Trainer:
    """One optimizer step = forward_backward() over the micro-batches, then optimizer_step()."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    batches: list[tuple[tuple[Any, ...], torch.Tensor]]  # (inputs, target) per micro-batch
    sync_context: Callable[[bool], AbstractContextManager[Any]]  # is_last_microbatch -> context
    loss_context: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext

    def forward_backward(self) -> None:
        n = len(self.batches)
        for i, (inputs, target) in enumerate(self.batches):
            with self.sync_context(i == n - 1), self.loss_context():
                loss = loss_of(self.model(*inputs), target) / n
                loss.backward()

    def optimizer_step(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def _always(_: bool) -> contextlib.nullcontext:
    return contextlib.nullcontext()


def _trainer(
    job: JobSpec,
    model: nn.Module,
    batches: list,
    sync_context: Callable[[bool], AbstractContextManager[Any]] = _always,
    loss_context: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
) -> Trainer:
    """A Trainer of the wrapped `model`, with the job's optimizer over its parameters."""
    return Trainer(
        model=model,
        optimizer=make_optimizer(job, list(model.parameters())),
        batches=batches,
        sync_context=sync_context,
        loss_context=loss_context,
    )


def ddp_trainer(job: JobSpec, model: nn.Module, batches: list, device: torch.device) -> Trainer:
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    ddp = DDP(model, device_ids=ids, bucket_cap_mb=job.config.bucket_bytes / MiB)
    if job.comm_hook == "fp16":
        ddp.register_comm_hook(None, default_hooks.fp16_compress_hook)

    def sync(last: bool) -> Any:
        return contextlib.nullcontext() if last else ddp.no_sync()

    return _trainer(job, ddp, batches, sync)


def fsdp_trainer(
    job: JobSpec, model: nn.Module, batches: list, device: torch.device, graph: ModelGraph
) -> Trainer:
    """FSDP2: every layer of the graph that holds parameters is its own unit, then the root."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (job.config.dp,))
    for layer in graph.layers:
        sub = model.get_submodule(layer.name)
        if any(True for _ in sub.parameters()):
            fully_shard(sub, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return _trainer(job, model, batches)


def tp_trainer(
    job: JobSpec, model: nn.Module, batches: list, device: torch.device, graph: ModelGraph
) -> Trainer:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import loss_parallel

    mesh = init_device_mesh(device.type, (job.config.tp,))
    blocks = [layer for layer in graph.layers if layer.kind == "transformer_block"]
    loss_context: Callable[[], AbstractContextManager[Any]]
    if blocks:
        _parallelize_transformer(model, mesh, job.config.tp)
        loss_context = loss_parallel
    else:
        _parallelize_linears(model, mesh, graph)
        loss_context = contextlib.nullcontext
    return _trainer(job, model, batches, loss_context=loss_context)


def _parallelize_linears(model: nn.Module, mesh: Any, graph: ModelGraph) -> None:
    """Plain linear layers in column/row pairs (fc1 column-, fc2 row-parallel), as simulated."""
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        ParallelStyle,
        RowwiseParallel,
        parallelize_module,
    )

    names = [layer.name for layer in graph.layers if layer.kind == "linear"]
    if not names or len(names) % 2:
        raise SimplanError(
            f"tensor parallelism needs transformer blocks or pairs of linear layers; "
            f"{graph.name} has {len(names)} linear layer(s)"
        )
    plan: dict[str, ParallelStyle] = {
        n: ColwiseParallel() if i % 2 == 0 else RowwiseParallel() for i, n in enumerate(names)
    }
    parallelize_module(model, mesh, plan)


def _parallelize_transformer(model: nn.Module, mesh: Any, tp: int) -> None:
    """Megatron-LM's split: qkv and up column-wise, proj and down row-wise; the embedding's
    vocabulary row-wise and the head's vocabulary column-wise (vocab-parallel cross-entropy)."""
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    if not isinstance(model, TransformerLM):
        raise SimplanError(
            f"tensor parallelism of transformer blocks needs simplan's TransformerLM "
            f"(a preset or a model TOML), got {type(model).__name__}"
        )
    for block in model.blocks:
        attn = cast(Block, block).attn
        if attn.heads % tp or attn.kv_heads % tp:
            raise SimplanError(f"tp {tp} must divide the attention heads ({attn.heads})")
        _group_qkv_by_rank(attn, tp)
        parallelize_module(
            block,
            mesh,
            {
                "attn.qkv": ColwiseParallel(),
                "attn.proj": RowwiseParallel(),
                "mlp.up": ColwiseParallel(),
                "mlp.down": RowwiseParallel(),
            },
        )
        attn.heads, attn.kv_heads = attn.heads // tp, attn.kv_heads // tp
    if getattr(model.head.out, "weight", None) is model.embed.tokens.weight:
        raise SimplanError("tensor parallelism here needs untied embeddings (tie_embeddings)")
    parallelize_module(
        model,
        mesh,
        {
            "embed.tokens": RowwiseParallel(input_layouts=Replicate()),
            "head.out": ColwiseParallel(use_local_output=False),
        },
    )


@torch.no_grad()
def _group_qkv_by_rank(attn: Attention, tp: int) -> None:
    """Reorder the fused qkv projection's rows as [q_0 k_0 v_0 | q_1 k_1 v_1 | ...] so that a
    contiguous column shard holds whole heads of q, k and v for one rank."""
    d = attn.head_dim
    sizes = [attn.heads * d, attn.kv_heads * d, attn.kv_heads * d]
    parts = torch.arange(sum(sizes)).split(sizes)
    order = torch.cat([p.chunk(tp)[r] for r in range(tp) for p in parts])
    attn.qkv.weight.copy_(attn.qkv.weight[order])
    if attn.qkv.bias is not None:
        attn.qkv.bias.copy_(attn.qkv.bias[order])
