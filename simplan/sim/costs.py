"""Per-layer costs of one device of a parallel configuration, for one micro-batch.

Tensor parallelism follows Megatron-LM: a transformer block's matrix multiplications are split
column- then row-wise over the TP group, with two all-reduces of the block's activations in the
forward pass and two in the backward pass (with sequence parallelism: an all-gather and a
reduce-scatter in place of each all-reduce, and the element-wise work split too). The vocabulary
of the embedding and the output head is split as well. Plain `linear` layers split in
column/row pairs (one all-reduce forward, one backward per pair). Other layers are replicated.

Measured times are scaled to a TP shard by the device model's ratio of the sharded to the whole
layer's time.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from simplan.costmodel import LayerCost, MmShape, layer_cost, pass_time_s, ratio
from simplan.devices import DeviceModel
from simplan.model_graph import Layer, ModelGraph, OpCost
from simplan.parallel import ParallelConfig
from simplan.profiles import Profile
from simplan.units import dtype_bytes

TP_KINDS = ("transformer_block", "lm_head", "embedding", "linear")

Collective = tuple[str, float]  # (op, nbytes per rank)


@dataclass(frozen=True, kw_only=True)
class LayerStep:
    """One layer on one device for one micro-batch."""

    name: str
    fwd_s: float
    bwd_s: float
    recompute_s: float
    tp_fwd: tuple[Collective, ...]
    tp_bwd: tuple[Collective, ...]
    params: float  # parameters held by this device (before ZeRO sharding)
    activation_bytes: float  # kept for backward, per micro-batch, on this device
    input_bytes: float  # the layer's input, per micro-batch, on this device
    output_bytes: float  # the layer's output (what crosses a pipeline cut), per micro-batch
    source: str
    rematerialized_bytes: float = 0.0  # recomputed for its backward (recomputation), live then


def _tp_split(layer: Layer, tp: int) -> bool:
    return tp > 1 and layer.kind in TP_KINDS


def _replicated_elems(layer: Layer, config: ParallelConfig) -> float:
    """Elements per sample of element-wise work that TP does not split (layer norms and residual
    adds of a block: about 10 s*h reads+writes forward); sequence parallelism splits them."""
    if layer.kind != "transformer_block" or config.sequence_parallel:
        return 0.0
    return 10.0 * layer.attrs.get("seq_len", 0) * layer.attrs.get("hidden_size", 0)


def shard_mm(mm: MmShape, tp: int, forward: bool) -> MmShape:
    """One device's part of a recorded product under Megatron-LM's TP split. Batched products
    (attention) split their heads; a weight's product splits the weight's split dimension, the
    larger of the two dimensions other than the tokens (the 3h, 4h or vocabulary side). A square
    weight is the block's row-parallel output projection: its forward splits the reduction k,
    its backward the output n."""
    g, m, n, k, axis, calls = mm
    dims = [g, m, n, k]
    if axis == 0:
        split = 0
    else:
        first, second = (i for i in (1, 2, 3) if i != axis)
        if dims[first] != dims[second]:
            split = first if dims[first] > dims[second] else second
        else:
            split = 3 if forward and axis == 1 else 2
    dims[split] /= tp
    return (dims[0], dims[1], dims[2], dims[3], axis, calls)


def shard_ops(ops: OpCost, tp: int, replicated_bytes: float, forward: bool = True) -> OpCost:
    kept = min(replicated_bytes, ops.mem_bytes)
    return OpCost(
        gemms=tuple((f / tp, nbytes / tp, n) for f, nbytes, n in ops.gemms),
        mem_bytes=(ops.mem_bytes - kept) / tp + kept,
        mem_ops=ops.mem_ops,
        mm_shapes=tuple(shard_mm(mm, tp, forward) for mm in ops.mm_shapes),
    )


def _sharded_cost(
    layer: Layer, device: DeviceModel, config: ParallelConfig, b: int, profile: Profile | None
) -> LayerCost:
    whole = layer_cost(layer, device, config.dtype, b, profile)
    if not _tp_split(layer, config.tp):
        return whole
    rep = _replicated_elems(layer, config) * dtype_bytes(config.dtype)
    tp = config.tp
    fwd = shard_ops(layer.fwd_ops, tp, rep)
    bwd = shard_ops(layer.bwd_ops, tp, 2 * rep, forward=False)
    base_f = pass_time_s(layer.fwd_ops, device, config.dtype, b)
    base_b = pass_time_s(layer.bwd_ops, device, config.dtype, b)
    part_f = pass_time_s(fwd, device, config.dtype, b)
    part_b = pass_time_s(bwd, device, config.dtype, b)
    return LayerCost(
        fwd_s=whole.fwd_s * ratio(part_f, base_f),
        bwd_s=whole.bwd_s * ratio(part_b, base_b),
        source=whole.source,
    )


def tp_collectives(
    layer: Layer, config: ParallelConfig, b: int, index_in_linears: int
) -> tuple[tuple[Collective, ...], tuple[Collective, ...]]:
    """(forward, backward) collectives of one layer inside its TP group, for b samples."""
    if not _tp_split(layer, config.tp):
        return (), ()
    act = layer.output_bytes * b
    if layer.kind == "transformer_block":
        if config.sequence_parallel:
            pair = (("all_gather", act), ("reduce_scatter", act))
            return pair * 2, pair * 2
        return (("all_reduce", act),) * 2, (("all_reduce", act),) * 2
    if layer.kind == "embedding":
        return (("all_reduce", act),), ()
    if layer.kind == "lm_head":
        return (), (("all_reduce", layer.input_bytes * b),)
    # plain linear layers alternate column- and row-parallel
    if index_in_linears % 2 == 0:
        return (), (("all_reduce", layer.input_bytes * b),)
    return (("all_reduce", act),), ()


def _attention_core(layer: Layer, config: ParallelConfig, device: DeviceModel, b: int) -> float:
    """Forward time of the attention core (scores, softmax, context) for selective recompute."""
    s, h = layer.attrs.get("seq_len", 0), layer.attrs.get("hidden_size", 0)
    flops = 4.0 * s * s * h * b / config.tp
    return device.gemm_time_s(flops, config.dtype) if flops else 0.0


def _activations(layer: Layer, config: ParallelConfig, b: int) -> float:
    """Bytes kept for backward per micro-batch on one device, before recomputation."""
    total = layer.activation_bytes * b
    if not _tp_split(layer, config.tp):
        return total
    if layer.kind != "transformer_block" or config.sequence_parallel:
        return total / config.tp
    # the inputs of the two layer norms are replicated across the TP group
    replicated = min(2 * layer.input_bytes * b, total)
    return (total - replicated) / config.tp + replicated


def _attention_core_bytes(layer: Layer, config: ParallelConfig, b: int) -> float:
    """What selective recomputation frees: the attention core's saved tensors. Unfused ('math')
    attention keeps the soft-maxed scores (and, with dropout, its mask and output); the fused
    kernel keeps q, k, v and its output."""
    if layer.kind != "transformer_block":
        return 0.0
    if layer.attrs.get("attention") == "math":
        s, heads = layer.attrs.get("seq_len", 0), layer.attrs.get("num_heads", 0)
        elem = layer.input_bytes / max(s * layer.attrs.get("hidden_size", 1), 1)
        per = 2 * elem + 1 if layer.attrs.get("dropout") else elem
        return heads * s * s * per * b / config.tp
    return 4 * layer.input_bytes * b / config.tp


def layer_steps(
    graph: ModelGraph, device: DeviceModel, config: ParallelConfig, profile: Profile | None = None
) -> tuple[LayerStep, ...]:
    """Every layer's costs on one device of the configuration, per micro-batch."""
    b = config.micro_batch
    steps = []
    linear_index = 0
    cache: dict[tuple[str, int], LayerStep] = {}
    for layer in graph.layers:
        key = (layer.identity, linear_index % 2 if layer.kind == "linear" else 0)
        if key not in cache:
            cache[key] = _step(layer, device, config, b, profile, linear_index)
        steps.append(dataclasses.replace(cache[key], name=layer.name))
        if layer.kind == "linear":
            linear_index += 1
    return _with_glue(_without_saved_data(_without_data_gradient(graph, steps)), config, profile)


def _without_saved_data(steps: list[LayerStep]) -> list[LayerStep]:
    """The model's first layer saves its input, the data, which the step holds anyway (counted
    with the buffers: simplan.sim.rank_memory): not an activation of each micro-batch."""
    if steps:
        first = steps[0]
        saved = first.activation_bytes - min(first.activation_bytes, first.input_bytes)
        steps[0] = dataclasses.replace(first, activation_bytes=saved)
    return steps


def _without_data_gradient(graph: ModelGraph, steps: list[LayerStep]) -> list[LayerStep]:
    """The first layer with parameters needs no gradient of its input (the data, or param-less
    layers over it): a column-parallel linear or head there has no backward all-reduce."""
    first = next((i for i, s in enumerate(steps) if s.params > 0), None)
    if first is None or graph.layers[first].kind not in ("linear", "lm_head"):
        return steps
    steps[first] = dataclasses.replace(steps[first], tp_bwd=())
    return steps


def _with_glue(
    steps: list[LayerStep], config: ParallelConfig, profile: Profile | None
) -> tuple[LayerStep, ...]:
    """Charge the measured time outside the layers (the loss, the parent module's own work) to
    the last layer, where the loss is, scaled to the micro-batch."""
    if profile is None or profile.dtype != config.dtype or not steps:
        return tuple(steps)
    glue_f, glue_b = profile.glue_s()
    scale = config.micro_batch / profile.micro_batch
    last = steps[-1]
    steps[-1] = dataclasses.replace(
        last, fwd_s=last.fwd_s + glue_f * scale, bwd_s=last.bwd_s + glue_b * scale
    )
    return tuple(steps)


def _step(
    layer: Layer,
    device: DeviceModel,
    config: ParallelConfig,
    b: int,
    profile: Profile | None,
    linear_index: int,
) -> LayerStep:
    cost = _sharded_cost(layer, device, config, b, profile)
    fwd_c, bwd_c = tp_collectives(layer, config, b, linear_index)
    split = _tp_split(layer, config.tp)
    acts = _activations(layer, config, b)
    recompute = 0.0
    full = acts
    shard_in = config.tp if split and config.sequence_parallel else 1
    if config.recompute == "full":
        recompute = cost.fwd_s
        acts = layer.input_bytes * b / shard_in
    elif config.recompute == "selective" and layer.kind == "transformer_block":
        recompute = _attention_core(layer, config, device, b)
        acts = max(acts - _attention_core_bytes(layer, config, b), 0.0)
    return LayerStep(
        name=layer.name,
        fwd_s=cost.fwd_s,
        bwd_s=cost.bwd_s,
        recompute_s=recompute,
        tp_fwd=fwd_c,
        tp_bwd=bwd_c,
        params=layer.params / config.tp if split else float(layer.params),
        activation_bytes=acts,
        input_bytes=layer.input_bytes * b / shard_in,
        output_bytes=layer.output_bytes * b / shard_in,
        source=cost.source,
        rematerialized_bytes=max(full - acts, 0.0),
    )
