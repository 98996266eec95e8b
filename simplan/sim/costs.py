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

from simplan.context_parallel import attention_core_s, cp_collectives, ring_merge_s, split_ops
from simplan.costmodel import (
    LayerCost,
    MmShape,
    fused_attention,
    layer_cost,
    pass_time_s,
    ratio,
)
from simplan.devices import DeviceModel
from simplan.errors import SimplanError
from simplan.fp8 import (
    FP8_COPY_BYTES_PER_PARAM,
    as_fp8,
    check_fp8_device,
    fp8_applies,
    fp8_pass_time_s,
    saved_input_savings_bytes,
)
from simplan.model_graph import Layer, ModelGraph, OpCost
from simplan.op_policy import op_checkpoint
from simplan.parallel import ParallelConfig
from simplan.profiles import Profile
from simplan.quantize import dequantize_s, frozen_share
from simplan.sim.experts import (
    ep_collectives,
    expert_parallel_ops,
    is_moe,
    rank_load,
    routed_ops,
    split_params,
)
from simplan.tp_overlap import paired_gemm_s
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
    fp8_copy_bytes: float = 0.0  # FP8 weight copies kept beside the weights (simplan.fp8)
    # with --tp-overlap: the GEMM seconds each TP collective hides behind (simplan.tp_overlap),
    # one per collective of tp_fwd / tp_bwd; empty: the collectives are not overlapped
    tp_fwd_gemm_s: tuple[float, ...] = ()
    tp_bwd_gemm_s: tuple[float, ...] = ()
    # context parallelism: K/V exchanges over the CP group and (ring) the seconds of attention
    # and per-step merges they hide behind (simplan.context_parallel)
    cp_fwd: tuple[Collective, ...] = ()
    cp_bwd: tuple[Collective, ...] = ()
    cp_fwd_attention_s: float = 0.0
    cp_bwd_attention_s: float = 0.0
    ep_fwd: tuple[Collective, ...] = ()  # MoE dispatch and combine (simplan.sim.experts)
    ep_bwd: tuple[Collective, ...] = ()
    expert_params: float = 0.0  # of params: routed experts (gradients synced over edp)
    # frozen quantized weights held (simplan.quantize), not in params: no gradient, no optimizer
    frozen_bytes: float = 0.0
    # full recomputation runs this layer's forward again, its TP collectives included
    # (ModelGraph.checkpointed: the blocks, not the embedding or the head)
    recomputed: bool = False


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
    """The layer's cost on one device: the whole layer's (measured or modelled) scaled by the
    device model's ratio of this device's share (its TP shard, its FP8 GEMMs, its experts'
    GEMMs under expert parallelism) to the whole."""
    whole = layer_cost(layer, device, config.dtype, b, profile)
    split = _tp_split(layer, config.tp)
    fp8 = fp8_applies(layer, config.fp8)
    experts = is_moe(layer) and config.ep > 1
    if not split and not fp8 and config.cp == 1 and not experts:
        return whole
    fwd = expert_parallel_ops(layer, layer.fwd_ops, config.ep)
    bwd, tp = expert_parallel_ops(layer, layer.bwd_ops, config.ep), 1
    if split:
        rep = _replicated_elems(layer, config) * dtype_bytes(config.dtype)
        tp = config.tp
        fwd = shard_ops(fwd, tp, rep)
        bwd = shard_ops(bwd, tp, 2 * rep, forward=False)
    fwd, bwd = split_ops(fwd, config.cp), split_ops(bwd, config.cp)
    attention = fused_attention(layer)
    base_f = pass_time_s(layer.fwd_ops, device, config.dtype, b, attention)
    base_b = pass_time_s(layer.bwd_ops, device, config.dtype, b, attention)
    if fp8:
        shards = config.ep * config.etp
        part_f = fp8_pass_time_s(layer, fwd, device, config.dtype, config.fp8, b,
                                 backward=False, tp=tp, expert_shards=shards)  # fmt: skip
        part_b = fp8_pass_time_s(layer, bwd, device, config.dtype, config.fp8, b,
                                 backward=True, tp=tp, expert_shards=shards)  # fmt: skip
    else:
        part_f = pass_time_s(fwd, device, config.dtype, b, attention)
        part_b = pass_time_s(bwd, device, config.dtype, b, attention)
    return LayerCost(
        fwd_s=whole.fwd_s * ratio(part_f, base_f),
        bwd_s=whole.bwd_s * ratio(part_b, base_b),
        source=whole.source,
    )


def _imbalance_cost(
    layer: Layer, device: DeviceModel, config: ParallelConfig, b: int, cost: LayerCost
) -> LayerCost:
    """The busiest rank's extra routed-expert GEMM time when the experts' load is uneven (the
    counted block assumes every expert takes the mean): (rank_load - 1) x the time of the
    rank's share of the routed GEMMs (timed by pass_time_s, as every layer's matrix operations
    are; in FP8 on the FP8 device), forward once and backward twice."""
    if not is_moe(layer):
        return cost
    a = layer.attrs
    load = rank_load(float(a.get("moe_load", 1.0)), int(a["num_experts"]), config.ep)
    if load <= 1.0:
        return cost
    gemms = as_fp8(device, config.dtype) if fp8_applies(layer, config.fp8) else device
    ops = routed_ops(layer, config.tp * config.cp, dtype_bytes(config.dtype))
    extra = pass_time_s(ops, gemms, config.dtype, b) * (load - 1.0)
    return dataclasses.replace(cost, fwd_s=cost.fwd_s + extra, bwd_s=cost.bwd_s + 2 * extra)


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
    if layer.attrs.get("head_dim"):  # heads wider than hidden / heads
        h = layer.attrs["head_dim"] * layer.attrs.get("num_heads", 0)
    flops = 4.0 * s * s * h * b / config.tp
    if not flops:
        return 0.0
    if layer.attrs.get("attention") == "math":
        return device.gemm_time_s(flops, config.dtype)
    return device.attention_time_s(flops, 0.0, config.dtype)


def _activations(layer: Layer, config: ParallelConfig, b: int) -> float:
    """Bytes kept for backward per micro-batch on one device, before recomputation."""
    total = layer.activation_bytes * b
    if not _tp_split(layer, config.tp):
        return total
    if layer.kind != "transformer_block" or config.sequence_parallel:
        return total / config.tp
    replicated = min(replicated_block_bytes(layer) * b, total)
    return (total - replicated) / config.tp + replicated


NORM_STATS_PER_TOKEN = {"layernorm": 2, "rmsnorm": 1}  # fp32 values a norm saves per token


def replicated_block_bytes(layer: Layer) -> float:
    """What every rank of a TP group (without sequence parallelism) saves whole of a transformer
    block, per sample (Korthikanti et al. 2022, section 4.2.2, the '10 sbh' of Table 2): the
    inputs of the two norms and their outputs (the inputs of the column-parallel QKV and MLP
    projections), the two dropout masks on the residual branches (one byte per element) and the
    norms' statistics (fp32 per token: mean and rstd for LayerNorm, rstd for RMSNorm; the paper
    leaves them out). The rest (the attention core, the projections' outputs, the MLP's hidden
    activations) is split over the group."""
    a = layer.attrs
    tokens, hidden = a.get("seq_len", 0), a.get("hidden_size", 0)
    norm = "layernorm" if a.get("activation", "gelu") == "gelu" else "rmsnorm"
    masks = 2 * tokens * hidden if a.get("dropout") else 0.0
    stats = 2 * NORM_STATS_PER_TOKEN[a.get("norm", norm)] * 4 * tokens
    return 4 * layer.input_bytes + masks + stats


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


def _per_op(
    layer: Layer, config: ParallelConfig, device: DeviceModel, b: int, cost: LayerCost
) -> tuple[float, float]:
    """(recompute seconds, saved bytes) of a block under per-op selective checkpointing
    (simplan.op_policy): it keeps its input and the outputs of the ops the policy saves, and
    runs the other forward ops again, at the measured forward time's share of their roofline."""
    if config.tp > 1 or config.cp > 1:
        raise SimplanError(
            f"--recompute op is modelled without tensor or context parallelism (tp {config.tp}, "
            f"cp {config.cp}); use --recompute selective or full"
        )
    saved, again = op_checkpoint(layer)
    attention = fused_attention(layer)
    whole = pass_time_s(layer.fwd_ops, device, config.dtype, b, attention)
    recompute = cost.fwd_s * ratio(pass_time_s(again, device, config.dtype, b, attention), whole)
    return recompute, (layer.input_bytes + saved) * b


def layer_steps(
    graph: ModelGraph, device: DeviceModel, config: ParallelConfig, profile: Profile | None = None
) -> tuple[LayerStep, ...]:
    """Every layer's costs on one device of the configuration, per micro-batch."""
    check_fp8_device(config.fp8, device)
    b = config.micro_batch
    steps = []
    linear_index = 0
    cache: dict[tuple[str, int], LayerStep] = {}
    for layer in graph.layers:
        key = (layer.identity, linear_index % 2 if layer.kind == "linear" else 0)
        if key not in cache:
            step = _step(layer, device, config, b, profile, linear_index, graph.checkpointed(layer))
            cache[key] = _context_parallel(step, layer, device, config, b)
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
    checkpointed: bool,
) -> LayerStep:
    cost = _sharded_cost(layer, device, config, b, profile)
    cost = _imbalance_cost(layer, device, config, b, cost)
    fwd_c, bwd_c = tp_collectives(layer, config, b, linear_index)
    ep_f, ep_b = ep_collectives(layer, config, b, dtype_bytes(config.dtype))
    split = _tp_split(layer, config.tp)
    params, expert_params = split_params(layer, config, split)
    params, frozen_bytes = frozen_share(layer, params)
    if frozen_bytes:
        _check_frozen(layer, config, expert_params)
        dequantize = dequantize_s(layer, device, config.dtype, frozen_bytes)
        cost = dataclasses.replace(
            cost, fwd_s=cost.fwd_s + dequantize, bwd_s=cost.bwd_s + dequantize
        )
    acts = _activations(layer, config, b)
    if fp8_applies(layer, config.fp8):
        tp = config.tp if split else 1
        acts = max(acts - saved_input_savings_bytes(layer, config.dtype, b, tp), 0.0)
    recompute = 0.0
    full = acts
    shard_in = config.tp if split and config.sequence_parallel else 1
    recomputed = config.recompute == "full" and checkpointed
    if recomputed:
        recompute = cost.fwd_s
        acts = layer.input_bytes * b / shard_in
    elif config.recompute == "selective" and layer.kind == "transformer_block":
        recompute = _attention_core(layer, config, device, b)
        acts = max(acts - _attention_core_bytes(layer, config, b), 0.0)
    elif config.recompute == "op" and layer.kind == "transformer_block":
        recompute, acts = _per_op(layer, config, device, b, cost)
    hide: tuple[float, ...] = ()
    if config.tp_overlap and split and layer.kind == "transformer_block":
        fp8 = fp8_applies(layer, config.fp8)
        hide = paired_gemm_s(layer, device, config.dtype, fp8, b, config.tp)
    return LayerStep(
        name=layer.name,
        fwd_s=cost.fwd_s,
        bwd_s=cost.bwd_s,
        recompute_s=recompute,
        tp_fwd=fwd_c,
        tp_bwd=bwd_c,
        params=params,
        expert_params=expert_params,
        frozen_bytes=frozen_bytes,
        ep_fwd=ep_f,
        ep_bwd=ep_b,
        activation_bytes=acts,
        input_bytes=layer.input_bytes * b / shard_in,
        output_bytes=layer.output_bytes * b / shard_in,
        source=cost.source,
        rematerialized_bytes=max(full - acts, 0.0),
        fp8_copy_bytes=params * FP8_COPY_BYTES_PER_PARAM if fp8_applies(layer, config.fp8) else 0.0,
        tp_fwd_gemm_s=hide,
        tp_bwd_gemm_s=tuple(reversed(hide)),  # the backward meets the pairs in reverse
        recomputed=recomputed,
    )


def _check_frozen(layer: Layer, config: ParallelConfig, expert_params: float) -> None:
    """Quantized frozen weights are modelled on dense layers in the compute dtype: one line for
    routed experts or --fp8 on them."""
    if expert_params:
        raise SimplanError(
            f"layer {layer.name}: quantized routed experts are not modelled; quantize other "
            "layer kinds"
        )
    if fp8_applies(layer, config.fp8):
        raise SimplanError(
            f"layer {layer.name}: --fp8 on quantized frozen weights is not modelled; drop "
            "--fp8 or --quantize"
        )


def _context_parallel(
    step: LayerStep, layer: Layer, device: DeviceModel, config: ParallelConfig, b: int
) -> LayerStep:
    """One CP rank's share of a layer step (simplan.context_parallel): the per-token work,
    bytes, TP transfers and MoE dispatches / cp (the time is already split: _sharded_cost), a
    ring's per-step merges, and its K/V exchange with the compute it hides behind (ring:
    attention and merges)."""
    cp = config.cp
    if cp == 1:
        return step
    tp = config.tp if _tp_split(layer, config.tp) else 1
    cp_fwd, cp_bwd = cp_collectives(layer, config.dtype, b, tp, cp, config.cp_comm)
    ring = config.cp_comm == "ring" and bool(cp_fwd)
    share = tp * cp
    merge_f = ring_merge_s(layer, device, config.dtype, b, tp, cp, False) if ring else 0.0
    merge_b = ring_merge_s(layer, device, config.dtype, b, tp, cp, True) if ring else 0.0
    recompute = step.recompute_s / cp if config.recompute == "selective" else step.recompute_s
    attention_f = attention_core_s(layer, layer.fwd_ops, device, config.dtype, b, share)
    attention_b = attention_core_s(layer, layer.bwd_ops, device, config.dtype, b, share)
    return dataclasses.replace(
        step,
        fwd_s=step.fwd_s + merge_f,
        bwd_s=step.bwd_s + merge_b,
        recompute_s=recompute + merge_f if recompute > 0 else 0.0,
        tp_fwd=tuple((op, n / cp) for op, n in step.tp_fwd),
        tp_bwd=tuple((op, n / cp) for op, n in step.tp_bwd),
        ep_fwd=tuple((op, n / cp) for op, n in step.ep_fwd),  # a rank dispatches its tokens
        ep_bwd=tuple((op, n / cp) for op, n in step.ep_bwd),
        activation_bytes=step.activation_bytes / cp,
        input_bytes=step.input_bytes / cp,
        output_bytes=step.output_bytes / cp,
        rematerialized_bytes=step.rematerialized_bytes / cp,
        tp_fwd_gemm_s=tuple(g / cp for g in step.tp_fwd_gemm_s),
        tp_bwd_gemm_s=tuple(g / cp for g in step.tp_bwd_gemm_s),
        cp_fwd=cp_fwd,
        cp_bwd=cp_bwd,
        cp_fwd_attention_s=attention_f + merge_f if ring else 0.0,
        cp_bwd_attention_s=attention_b + merge_b if ring else 0.0,
    )
