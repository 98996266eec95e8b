"""What one rank keeps through a step, in the terms of simplan.sim.peak: the buffers live all
step (the data, pipeline receive buffers) and each layer of its chunks as the backward reaches
it.

The data: the runtime holds the step's inputs (every micro-batch of the replica) on the rank
that runs the first layer and the targets (class indices, int64, one per output position) on
the rank that runs the last. Pipeline receive buffers: torch.distributed.pipelining's
PipelineStage allocates one buffer per micro-batch for what it receives, the activations from
the previous stage and the gradients from the next.
"""

from __future__ import annotations

from collections.abc import Sequence

from simplan.model_graph import ModelGraph
from simplan.parallel import ParallelConfig
from simplan.sim.costs import LayerStep
from simplan.sim.peak import Moment, Static, SweepLayer, backward_moments, optimizer_moment
from simplan.units import dtype_bytes

TARGET_BYTES = 8  # one int64 class index per output position


def step_buffers_bytes(
    graph: ModelGraph, config: ParallelConfig, chunks: Sequence[int], bounds: Sequence[int]
) -> float:
    """The data and the pipeline receive buffers of the rank that runs `chunks` (its share of
    the sequence under context parallelism)."""
    samples = config.micro_batch * config.num_microbatches
    total = 0.0
    if 0 in chunks:
        total += graph.layers[0].input_bytes * samples
    if config.chunks - 1 in chunks:
        total += TARGET_BYTES * max(graph.seq_len, 1) * samples
    if config.pp > 1:
        per = config.num_microbatches * config.micro_batch / config.tp
        for c in chunks:
            if c > 0:  # activations from the previous chunk
                total += per * graph.cut_bytes(bounds[c] - 1)
            if c < config.chunks - 1:  # gradients from the next chunk
                total += per * graph.cut_bytes(bounds[c + 1] - 1)
    return total / config.cp


def sweep_layers(
    graph: ModelGraph,
    config: ParallelConfig,
    steps: Sequence[LayerStep],
    first: int,
    grad_bytes_per_param: float,
) -> list[SweepLayer]:
    """The layers steps[...] (the model's layers from index `first` on) for simplan.sim.peak.
    The model's first layer needs no input gradient. The last layer carries the loss. A
    vocabulary-parallel head's logits are split over the TP group."""
    fsdp = config.zero == 3 and config.replicas > 1
    shard = config.replicas if config.zero >= 2 else 1
    expert_shard = config.edp if config.zero >= 2 else 1  # routed experts shard over edp
    weight_b = dtype_bytes(config.dtype)
    last = len(graph.layers) - 1
    out = []
    for offset, s in enumerate(steps):
        index = first + offset
        kind = graph.layers[index].kind
        grad_out = s.output_bytes / (config.tp if kind == "lm_head" and config.tp > 1 else 1)
        out.append(
            SweepLayer(
                activation_bytes=s.activation_bytes,
                rematerialized_bytes=s.rematerialized_bytes,
                grad_out_bytes=grad_out,
                grad_in_bytes=0.0 if index == 0 else s.input_bytes,
                loss_bytes=grad_out if index == last else 0.0,
                param_grad_bytes=grad_bytes_per_param
                * ((s.params - s.expert_params) / shard + s.expert_params / expert_shard),
                gathered_bytes=s.params * weight_b + s.frozen_bytes if fsdp else 0.0,
                unsharded_grad_bytes=s.params * grad_bytes_per_param if fsdp else 0.0,
            )
        )
    return out


def kept_output_bytes(graph: ModelGraph, config: ParallelConfig, step: LayerStep) -> float:
    """What a pipeline stage keeps of its output for each micro-batch in flight besides what its
    last layer saves: torch.distributed.pipelining's PipelineStage holds every forwarded
    micro-batch's output (fwd_cache) until that micro-batch's backward. None without a
    pipeline."""
    if config.pp == 1:
        return 0.0
    layer = graph.by_name[step.name]
    unsaved = 1.0 - min(layer.saved_output_bytes / layer.output_bytes, 1.0)
    return step.output_bytes * unsaved if layer.output_bytes else 0.0


def rank_moments(
    chunk_layers: Sequence[tuple[list[SweepLayer], float, float]],
    static: Static,
    grad_bytes: float,
    *,
    peak_saved_bytes: float,
    microbatches: int,
) -> list[Moment]:
    """Every moment of a rank's step: the backward of each of its chunks (chunk_layers: the
    chunk's sweep layers, its saved activations and its kept output per micro-batch, as the
    schedule counts them), when the schedule holds its most activations (peak_saved_bytes: as
    many micro-batches' kept outputs), and the optimizer step. With several micro-batches, the
    gradients exist from the first one's backward on."""
    accumulated = grad_bytes if microbatches > 1 else 0.0
    moments = [optimizer_moment(static, grad_bytes)]
    for i, (layers, saved, kept) in enumerate(chunk_layers):
        in_flight = peak_saved_bytes / saved if saved > 0 else 1.0
        moments += backward_moments(
            layers,
            static,
            held_bytes=max(peak_saved_bytes - saved, 0.0) + in_flight * kept,
            accumulated_grad_bytes=accumulated,
            label=f"backward of chunk {i}",
        )
    return moments
