"""A plan as launch arguments: torchrun, Megatron-LM and torchtitan."""

from __future__ import annotations

import shlex
from typing import Any

from simplan.errors import SimplanError

EXPORTS = ("torchrun", "megatron", "torchtitan")


def export(plan: Any, kind: str) -> str:
    if kind == "torchrun":
        return torchrun(plan)
    if kind == "megatron":
        return " ".join(megatron_args(plan))
    if kind == "torchtitan":
        return " ".join(torchtitan_args(plan))
    raise SimplanError(f"unknown export {kind!r}: use {', '.join(EXPORTS)}")


def _blocks_per_chunk(plan: Any) -> list[int]:
    """Transformer blocks in each chunk (from the graph when known, else the layer counts)."""
    bounds = plan.config.stages
    graph = plan.graph
    out = []
    for c in range(len(bounds) - 1):
        if graph is None:
            out.append(bounds[c + 1] - bounds[c])
        else:
            layers = graph.layers[bounds[c] : bounds[c + 1]]
            out.append(sum(1 for x in layers if x.kind == "transformer_block"))
    return out


def megatron_args(plan: Any) -> list[str]:
    cfg = plan.config
    args = [
        f"--tensor-model-parallel-size {cfg.tp}",
        f"--pipeline-model-parallel-size {cfg.pp}",
        f"--micro-batch-size {cfg.micro_batch}",
        f"--global-batch-size {cfg.global_batch}",
    ]
    if cfg.seq_len:
        args.append(f"--seq-length {cfg.seq_len}")
    blocks = _blocks_per_chunk(plan) if cfg.stages else []
    if cfg.virtual_stages > 1 and blocks:
        args.append(f"--num-layers-per-virtual-pipeline-stage {max(blocks)}")
    elif cfg.pp > 2 and blocks and len(set(blocks[1:-1])) == 1:
        if blocks[0] != blocks[1]:
            args.append(f"--decoder-first-pipeline-num-layers {blocks[0]}")
        if blocks[-1] != blocks[1]:
            args.append(f"--decoder-last-pipeline-num-layers {blocks[-1]}")
    if cfg.recompute == "full":
        args += ["--recompute-granularity full", "--recompute-method uniform",
                 "--recompute-num-layers 1"]  # fmt: skip
    elif cfg.recompute == "selective":
        args.append("--recompute-granularity selective")
    if cfg.sequence_parallel:
        args.append("--sequence-parallel")
    if cfg.zero >= 1:
        args.append("--use-distributed-optimizer")  # ZeRO-1; Megatron has no ZeRO-2/3 switch
    if cfg.dtype in ("bf16", "fp16"):
        args.append(f"--{cfg.dtype}")
    return args


def torchtitan_args(plan: Any) -> list[str]:
    cfg = plan.config
    schedule = {"1f1b": "1F1B", "gpipe": "GPipe", "interleaved": "Interleaved1F1B"}
    shard = cfg.dp if cfg.zero >= 2 else 1
    replicate = cfg.dp // shard
    args = [
        f"--parallelism.data_parallel_replicate_degree {replicate}",
        f"--parallelism.data_parallel_shard_degree {shard}",
        f"--parallelism.tensor_parallel_degree {cfg.tp}",
        f"--parallelism.pipeline_parallel_degree {cfg.pp}",
        f"--training.global_batch_size {cfg.global_batch}",
        f"--training.local_batch_size {cfg.global_batch // cfg.dp}",
        f"--parallelism.pipeline_parallel_microbatch_size {cfg.micro_batch}",
    ]
    if cfg.pp > 1:
        args.append(f"--parallelism.pipeline_parallel_schedule {schedule[cfg.schedule]}")
    if cfg.seq_len:
        args.append(f"--training.seq_len {cfg.seq_len}")
    args.append(f"--activation_checkpoint.mode {cfg.recompute}")
    if cfg.dtype == "bf16":
        args.append("--training.mixed_precision_param bfloat16")
    return args


def node_order(plan: Any) -> list[int]:
    """Nodes in the order the ranks fill them (torchrun's node rank i runs on entry i)."""
    cluster = plan.load_cluster()
    devices = plan.placement or tuple(range(plan.config.world_size))
    order: list[int] = []
    for d in devices:
        node = cluster.devices[d].node
        if node not in order:
            order.append(node)
    return order


def torchrun(plan: Any) -> str:
    """A torchrun command for Megatron-LM's pretrain_gpt.py, with the node ranks to use."""
    cfg = plan.config
    nodes = node_order(plan)
    per_node = cfg.world_size // max(len(nodes), 1)
    lines = [
        f"# {plan.model}: {cfg.describe()}",
        "# node rank -> cluster node: "
        + ", ".join(f"{rank}->n{node}" for rank, node in enumerate(nodes)),
        "torchrun "
        + " ".join(
            [
                f"--nnodes {len(nodes)}",
                f"--nproc-per-node {per_node}",
                "--node-rank $NODE_RANK",
                "--rdzv-backend c10d",
                "--rdzv-endpoint $MASTER_ADDR:29500",
                shlex.quote("pretrain_gpt.py"),
                *megatron_args(plan),
            ]
        ),
    ]
    return "\n".join(lines)
