"""Tensor and sequence parallelism with DTensor `parallelize_module` (imports torch).

Transformers get Megatron-LM's split: qkv and up column-wise, proj and down row-wise, the
embedding's vocabulary row-wise and the head's vocabulary column-wise. With sequence parallelism
the norms work on sequence shards (SequenceParallel) and every row-wise layer reduce-scatters
its output along the sequence instead of all-reducing it (torchtitan's layer plan). Plain linear
stacks get column/row pairs (fc1 column-, fc2 row-parallel).
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from simplan.errors import SimplanError
from simplan.model_graph import ModelGraph
from simplan.nets.transformer import MLP, Attention, Block, TransformerLM


def parallelize(
    model: nn.Module,
    mesh: Any,
    graph: ModelGraph,
    *,
    sequence_parallel: bool,
    vocab_parallel_loss: bool,
) -> None:
    """Shard `model` in place over the 1-D tensor-parallel `mesh`. vocab_parallel_loss: the head
    leaves its logits sharded over the vocabulary for `loss_parallel`; otherwise it gathers them
    (a pipeline's last stage computes a plain loss)."""
    if any(layer.kind == "transformer_block" for layer in graph.layers):
        parallelize_transformer(
            model,
            mesh,
            sequence_parallel=sequence_parallel,
            vocab_parallel_loss=vocab_parallel_loss,
        )
        return
    if sequence_parallel:
        raise SimplanError(
            f"sequence parallelism needs transformer blocks; {graph.name} has none: "
            "set sequence_parallel to false"
        )
    parallelize_linears(model, mesh, graph)


def parallelize_linears(model: nn.Module, mesh: Any, graph: ModelGraph) -> None:
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


def parallelize_transformer(
    model: nn.Module, mesh: Any, *, sequence_parallel: bool, vocab_parallel_loss: bool
) -> None:
    """Megatron-LM's split of every block, the embedding and the head (see the module doc)."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleOutput,
        RowwiseParallel,
        SequenceParallel,
        parallelize_module,
    )

    if not isinstance(model, TransformerLM):
        raise SimplanError(
            f"tensor parallelism of transformer blocks needs simplan's TransformerLM "
            f"(a preset or a model TOML), got {type(model).__name__}"
        )
    tp = mesh.size()
    if getattr(model.head.out, "weight", None) is model.embed.tokens.weight:
        raise SimplanError(
            "tensor parallelism here needs untied embeddings: set tie_embeddings = false"
        )
    if sequence_parallel and model.spec.seq_len % tp:
        raise SimplanError(
            f"sequence parallelism needs tp {tp} to divide the sequence length {model.spec.seq_len}"
        )
    for block in model.blocks:
        attn, mlp = cast(Block, block).attn, cast(Block, block).mlp
        if not isinstance(mlp, MLP):
            raise SimplanError("tensor parallelism here does not split mixture-of-experts layers")
        if attn.heads % tp or attn.kv_heads % tp:
            raise SimplanError(f"tp {tp} must divide the attention heads ({attn.heads})")
        _group_qkv_by_rank(attn, tp)
        _group_swiglu_by_rank(mlp, tp)
        parallelize_module(block, mesh, _block_plan(sequence_parallel))
        attn.heads, attn.kv_heads = attn.heads // tp, attn.kv_heads // tp
    seq = Shard(1) if sequence_parallel else Replicate()
    plan: dict[str, Any] = {
        "embed.tokens": RowwiseParallel(input_layouts=Replicate()),
        "head.out": ColwiseParallel(
            input_layouts=seq,
            output_layouts=Shard(-1) if vocab_parallel_loss else Replicate(),
            use_local_output=not vocab_parallel_loss,
        ),
    }
    if sequence_parallel:
        # the embedding's output (tokens + positions, replicated) is cut along the sequence
        plan["embed"] = PrepareModuleOutput(
            output_layouts=Replicate(), desired_output_layouts=Shard(1)
        )
        plan["head.norm"] = SequenceParallel()
    parallelize_module(model, mesh, plan)


def _block_plan(sequence_parallel: bool) -> dict[str, Any]:
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleInput,
        RowwiseParallel,
        SequenceParallel,
    )

    if not sequence_parallel:
        return {
            "attn.qkv": ColwiseParallel(),
            "attn.proj": RowwiseParallel(),
            "mlp.up": ColwiseParallel(),
            "mlp.down": RowwiseParallel(),
        }
    gather = PrepareModuleInput(
        input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),), use_local_output=True
    )
    return {
        "norm1": SequenceParallel(),
        "attn": gather,
        "attn.qkv": ColwiseParallel(),
        "attn.proj": RowwiseParallel(output_layouts=Shard(1)),
        "norm2": SequenceParallel(),
        "mlp": PrepareModuleInput(
            input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),), use_local_output=True
        ),
        "mlp.up": ColwiseParallel(),
        "mlp.down": RowwiseParallel(output_layouts=Shard(1)),
    }


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


@torch.no_grad()
def _group_swiglu_by_rank(mlp: MLP, tp: int) -> None:
    """A SwiGLU's fused [gate | up] projection reordered as [gate_0 up_0 | gate_1 up_1 | ...],
    so that each rank's column shard pairs its gate rows with the same up rows."""
    if not mlp.swiglu:
        return
    gate, up = torch.arange(mlp.up.out_features).chunk(2)
    order = torch.cat([torch.cat((gate.chunk(tp)[r], up.chunk(tp)[r])) for r in range(tp)])
    mlp.up.weight.copy_(mlp.up.weight[order])
    if mlp.up.bias is not None:
        mlp.up.bias.copy_(mlp.up.bias[order])
