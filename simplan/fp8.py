"""FP8 training: which GEMMs run in FP8, what the casts cost, and what FP8 adds to memory.

What runs in FP8 (Transformer Engine's `fp8_autocast` around te.Linear / LayerNormLinear /
LayerNormMLP, torchao's Float8Linear): the GEMMs of the linear layers of the transformer blocks
(QKV, attention output, the MLP) and of plain `linear` layers, forward and backward (dgrad and
wgrad). What stays in the training dtype: the attention core (scores, softmax, context), norms,
element-wise work, the embedding, the output head (Megatron-LM's output layer is not a TE module;
torchtitan's float8 converter skips `output`; MPT ties it to the embedding) and the gradient
reduction (every framework reduces the bf16/fp32 main gradients).

The recipes (`--fp8`):
  delayed  per-tensor scale from an amax history (TE DelayedScaling): the amax is a by-product
           of the cast kernel, so each cast reads the bf16 tensor once and writes it in FP8 and
           transposed (Hopper's FP8 GEMMs take K-major operands only): 2 + 1 + 1 bytes/element.
  current  per-tensor scale from this tensor's own amax (TE Float8CurrentScaling, torchao
           tensorwise): one more read of the tensor to find the amax first: 6 bytes/element.
  block    1x128 / 128x128 block scales (TE Float8BlockScaling, DeepSeek-V3 style): the amax of
           each block is found in the cast kernel, which writes both layouts: 4 bytes/element.

Casts per linear GEMM: its input activation and its weight in the forward (the weight once per
micro-batch: llm-foundry and torchao cast every forward) and the output gradient in the
backward. Casting is memory-bound and is charged as memory operations of the device model.

FP8 GEMMs run at the device's FP8 peak with `FP8_GEMM_EFFICIENCY_RATIO` times the device's bf16
GEMM efficiency, and move 1-byte operands.

Memory: Transformer Engine keeps an FP8 copy of each FP8 layer's weight and its transpose
between micro-batches (2 bytes per parameter) next to the bf16 weight and the fp32 master copy;
the inputs a linear layer saves for its wgrad GEMM are kept in FP8 (1 byte per element instead
of 2).
"""

from __future__ import annotations

from simplan.devices import DeviceModel
from simplan.errors import SimplanError
from simplan.model_graph import Layer, OpCost
from simplan.units import dtype_bytes

FP8_RECIPES = ("none", "delayed", "current", "block")
FP8_KINDS = ("transformer_block", "linear")  # layers whose linear GEMMs run in FP8
# bytes moved per element cast to FP8 (see the module docstring): read bf16, write FP8 (+ the
# transposed FP8 copy), and for current scaling one more bf16 read to find the amax first
CAST_BYTES_PER_ELEMENT = {"delayed": 4.0, "current": 6.0, "block": 4.0}
FP8_COPY_BYTES_PER_PARAM = 2.0  # TE's cached FP8 weight and its transpose
# FP8 GEMM efficiency relative to bf16 on the same GPU: stas00/ml-engineering's maximum
# achievable matmul FLOPS on an H100 SXM, fp8 1402.6 of 1979 (70.9%) vs bf16 794.5 of 989
# (80.3%), torch 2.7.0 (/work/shared/reference/gemm_efficiency_measurements.csv, MAMF rows)
FP8_GEMM_EFFICIENCY_RATIO = (1402.6 / 1979) / (794.5 / 989)


def check_recipe(recipe: str) -> str:
    if recipe not in FP8_RECIPES:
        raise SimplanError(f"fp8 must be one of {', '.join(FP8_RECIPES)}, got {recipe!r}")
    return recipe


def check_fp8_device(recipe: str, device: DeviceModel) -> None:
    """FP8 needs FP8 tensor cores: a one-line error for a device without them."""
    if recipe != "none" and device.fp8_flops <= 0:
        raise SimplanError(
            f"--fp8 {recipe}: device {device.name} has no FP8 tensor cores; use an H100, H200, "
            f"B200 or GB200, or drop --fp8"
        )


def as_fp8(device: DeviceModel, dtype: str) -> DeviceModel:
    """The device as its FP8 GEMMs see it: the FP8 peak in place of `dtype`'s, at the FP8
    efficiency."""
    return device.with_(
        peak_flops={**device.peak_flops, dtype: device.fp8_flops},
        gemm_efficiency=device.gemm_efficiency * FP8_GEMM_EFFICIENCY_RATIO,
    )


def fp8_applies(layer: Layer, recipe: str) -> bool:
    return recipe != "none" and layer.kind in FP8_KINDS


def is_attention_core(layer: Layer, gemm: tuple[float, float, int]) -> bool:
    """Whether a counted matrix operation of a transformer block is its attention core: the
    fused kernel's 4*s*s*h FLOPs per sample forward (10*s*s*h backward, torch's count of the
    flash backward), or one of the unfused bmm's 2*s*s*h whose operands hold the s*s scores
    of every head (which tells it from an h x h projection when s == h)."""
    if layer.kind != "transformer_block":
        return False
    s, h = layer.attrs.get("seq_len", 0), layer.attrs.get("hidden_size", 0)
    heads = layer.attrs.get("num_heads", 0)
    flops, nbytes, _ = gemm
    unit = float(s) * s * h
    if unit <= 0:
        return False
    if flops in (4 * unit, 10 * unit):
        return True
    return flops == 2 * unit and nbytes >= float(s) * s * heads


def kv_dim(layer: Layer) -> int:
    """Width of one token's keys (or values) in an attention layer: KV heads x head width."""
    a = layer.attrs
    heads = max(a.get("num_heads", 1), 1)
    return int(a.get("num_kv_heads", heads) * (a.get("hidden_size", 0) // heads))


def _linear_gemms(layer: Layer, ops: OpCost) -> tuple[tuple[float, float, int], ...]:
    return tuple(g for g in ops.gemms if not is_attention_core(layer, g))


def _mlp_elements(layer: Layer, backward: bool) -> float:
    """Elements per token cast around the MLP's GEMMs: forward their inputs, backward their
    output gradients. A dense MLP: FC1 (and gate) and FC2. An MoE block: each token's k routed
    copies through an expert's FC1 and FC2 (the router stays in the training dtype, as
    Megatron-Core's router is not a Transformer Engine module), and the shared experts'
    MLP on every token."""
    a = layer.attrs
    h = a.get("hidden_size", 0)
    gated = 2 if a.get("activation") == "swiglu" else 1
    if not layer.is_moe:
        ffn = a.get("ffn_hidden_size", 4 * h)
        return gated * ffn + h if backward else h + ffn
    f, k = a.get("moe_ffn_hidden_size", 0), a.get("moe_top_k", 0)
    shared = a.get("moe_shared_experts", 0) * f
    if backward:
        return k * (gated * f + h) + (gated * shared + h if shared else 0)
    return k * (h + f) + (h + shared if shared else 0)


def _cast_weights(layer: Layer, tp: int, expert_shards: int) -> float:
    """Weight elements one rank casts per micro-batch: its TP shard of the layer, and of an
    MoE block's routed experts its expert-parallel shard (ep x etp ranks)."""
    experts = float(layer.attrs.get("expert_params", 0)) if layer.is_moe else 0
    return (layer.params - experts) / tp + experts / expert_shards


def cast_elements(
    layer: Layer,
    backward: bool,
    dtype: str,
    micro_batch: int,
    tp: int,
    expert_shards: int = 1,
) -> float:
    """Elements cast to FP8 in one pass of a layer for a micro-batch, on one TP rank: forward,
    each linear GEMM's input and weight; backward, each one's output gradient. expert_shards:
    the ranks an MoE block's routed experts are split over (ep x etp)."""
    if layer.kind == "linear":
        size = layer.output_bytes if backward else layer.input_bytes
        weights = 0.0 if backward else layer.params
        return (size / dtype_bytes(dtype) * micro_batch + weights) / tp
    s, h = layer.attrs.get("seq_len", 0), layer.attrs.get("hidden_size", 0)
    kv = kv_dim(layer)
    mlp = _mlp_elements(layer, backward)
    if backward:  # gradients of QKV, attention output and the MLP's GEMMs' outputs
        return s * (h + 2 * kv + h + mlp) * micro_batch / tp
    # inputs of QKV, attention output and the MLP's GEMMs (the sequence is whole inside them)
    return s * (h + h + mlp) * micro_batch / tp + _cast_weights(layer, tp, expert_shards)


def fp8_pass_time_s(
    layer: Layer,
    ops: OpCost,
    device: DeviceModel,
    dtype: str,
    recipe: str,
    micro_batch: int,
    *,
    backward: bool,
    tp: int = 1,
    expert_shards: int = 1,
) -> float:
    """Roofline time of one pass of a layer with its linear GEMMs in FP8 (ops: the pass's
    counts, already split over the TP group when the layer is split; expert_shards: see
    cast_elements)."""
    b = micro_batch
    fp8_device = as_fp8(device, dtype)
    narrow = 1.0 / dtype_bytes(dtype)  # FP8 operands are 1 byte
    linear = _linear_gemms(layer, ops)
    total = 0.0
    for gemm in ops.gemms:
        f, nbytes, n = gemm
        if gemm in linear:
            total += n * fp8_device.roofline_time_s(f * b, nbytes * b * narrow, dtype)
        else:  # the attention core stays in dtype, a fused kernel
            total += n * device.attention_time_s(f * b, nbytes * b, dtype)
    # recorded products (simplan.gemm): a weight's product (its per-sample axis is the tokens)
    # runs in FP8 on the GEMM model at the FP8 peak; batched ones (attention) stay in dtype
    from simplan.costmodel import (
        shaped_time_s,  # costmodel imports the configuration, which imports us
    )

    weight_mms = tuple(mm for mm in ops.mm_shapes if mm[4] != 0)
    batched_mms = tuple(mm for mm in ops.mm_shapes if mm[4] == 0)
    total += shaped_time_s(weight_mms, fp8_device, dtype, b)
    total += shaped_time_s(batched_mms, device, dtype, b)
    if ops.mem_ops:
        per_op = ops.mem_bytes * b / ops.mem_ops
        total += ops.mem_ops * device.memory_time_s(per_op)
    casts = sum(n for _, _, n in linear) + sum(mm[5] for mm in weight_mms)
    cast_bytes = cast_elements(layer, backward, dtype, b, tp, expert_shards)
    cast_bytes *= CAST_BYTES_PER_ELEMENT[recipe]
    if casts and cast_bytes > 0:
        total += casts * device.memory_time_s(cast_bytes / casts)
    return total


def saved_input_savings_bytes(layer: Layer, dtype: str, micro_batch: int, tp: int) -> float:
    """Activation bytes FP8 saves for one micro-batch on one TP rank: the inputs the linear
    GEMMs keep for their wgrad are stored in FP8 (1 byte instead of the dtype's)."""
    if layer.kind != "transformer_block":
        return 0.0
    s, h = layer.attrs.get("seq_len", 0), layer.attrs.get("hidden_size", 0)
    elements = s * (2 * h + _mlp_elements(layer, backward=False)) * micro_batch / tp
    return elements * (dtype_bytes(dtype) - 1)
