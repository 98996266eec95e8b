"""Weight-only quantization of a training job's layers (no torch).

A weight-only-quantized weight is frozen, as when a quantized base is fine-tuned (QLoRA) or a
quantized backbone is kept fixed: it is stored at its format's width plus its scales
(QUANT_SCALES), dequantized to the compute dtype at each use, and has no gradient, no optimizer
state and no gradient sync. The backward still computes the gradient of the layer's input for
the layers below it, so only the weight-gradient products (the recorded products whose
reduction runs over the tokens) leave the layer's backward.

Time: the products run at the compute dtype's rate (unchanged), plus one dequantization per use
of the weights, forward and (for the input gradient) backward: read the quantized bytes, write
the compute-dtype copy, at the device's memory bandwidth (bitsandbytes' unfused dequantize then
GEMM). An embedding table only has rows looked up: no dequantization of the whole table, and a
frozen embedding needs no backward (its input is token ids).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from simplan.errors import SimplanError
from simplan.model_graph import Layer, OpCost
from simplan.model_knobs import ALL_LINEAR, QUANT_BITS, QUANT_SCALES
from simplan.units import DTYPE_BYTES, dtype_bytes

if TYPE_CHECKING:  # the model graph's layer: no cost model at run time
    from simplan.devices import DeviceModel

WEIGHT_GRAD_AXIS = 3  # a backward product whose per-sample (token) axis is k: X^T dY


def quantized_bytes(shape: Sequence[int], dtype: str) -> int:
    """Bytes of one weight tensor of `shape` stored in `dtype` (a key of QUANT_BITS): the
    weights, two int4 per byte, and the format's scales (QUANT_SCALES)."""
    numel = math.prod(shape)
    per_scale, scale_bytes = QUANT_SCALES[dtype]
    if per_scale < 0:
        scales = 1
    elif per_scale == 0:
        scales = int(shape[0]) if len(shape) > 1 else 1
    else:
        scales = -(-numel // per_scale)
    return -(-numel * QUANT_BITS[dtype] // 8) + scales * scale_bytes


def check_kinds(pairs: Iterable[tuple[str, str]], kinds: Sequence[str], dtype: str) -> None:
    """One line for a --quantize kind the graph does not have, a float dtype other than the
    model's, or int8-dynamic (inference only) in a training job's model."""
    known = sorted(set(kinds))
    for kind, qdtype in pairs:
        if kind != ALL_LINEAR and kind not in known:
            raise SimplanError(
                f"--quantize {kind}={qdtype}: the model has no {kind!r} layers; its layer kinds "
                f"are {', '.join(known)}"
            )
        if qdtype in DTYPE_BYTES and qdtype != dtype:
            raise SimplanError(
                f"--quantize {kind}={qdtype}: a float dtype per layer kind other than the "
                f"model's ({dtype}) is not modelled; use --dtype {qdtype} for the whole model"
            )


def frozen_layer(
    layer: Layer, shapes: Sequence[Sequence[int]], qdtype: str, dtype: str, *, embedding: bool
) -> Layer:
    """The layer with its weights of `shapes` stored in `qdtype` and frozen (the rest of its
    parameters trainable in `dtype`): parameter bytes, no weight-gradient products, and an
    identity of its own (a profile of the trainable layer does not describe it)."""
    frozen = sum(math.prod(s) for s in shapes)
    if not frozen:
        return layer
    stored = sum(quantized_bytes(s, qdtype) for s in shapes)
    bwd = OpCost() if embedding else _without_weight_gradients(layer.bwd_ops)
    return dataclasses.replace(
        layer,
        param_bytes=(layer.params - frozen) * dtype_bytes(dtype) + stored,
        bwd_flops=0.0 if embedding else layer.bwd_flops - _weight_grad_flops(layer.bwd_ops),
        bwd_ops=bwd,
        identity=f"{layer.identity}:frozen-{qdtype}",
        attrs={
            **layer.attrs,
            "quantize": qdtype,
            "quantized_weights": frozen,
            "frozen_params": frozen,
            "frozen_bytes": stored,
            "frozen_shapes": [list(x) for x in shapes],
            "dequantize_passes": 0 if embedding else 2,
        },
    )


def _without_weight_gradients(ops: OpCost) -> OpCost:
    kept = tuple(mm for mm in ops.mm_shapes if mm[4] != WEIGHT_GRAD_AXIS)
    return dataclasses.replace(ops, mm_shapes=kept)


def _weight_grad_flops(ops: OpCost) -> float:
    return sum(
        2.0 * g * m * n * k * c for g, m, n, k, axis, c in ops.mm_shapes if axis == WEIGHT_GRAD_AXIS
    )


def frozen_share(layer: Layer, params_held: float) -> tuple[float, float]:
    """(trainable parameters, frozen weight bytes) of the `params_held` parameters of `layer`
    one device holds (its tensor-parallel share)."""
    frozen = float(layer.attrs.get("frozen_params", 0))
    if not frozen or not layer.params:
        return params_held, 0.0
    share = params_held / layer.params
    return params_held - frozen * share, float(layer.attrs["frozen_bytes"]) * share


def dequantize_s(layer: Layer, device: DeviceModel, dtype: str, frozen_bytes: float) -> float:
    """Seconds of one pass's dequantization of a device's `frozen_bytes` of the layer's frozen
    weights: read them, write the compute-dtype copy."""
    if not frozen_bytes or not layer.attrs.get("dequantize_passes"):
        return 0.0
    share = frozen_bytes / float(layer.attrs["frozen_bytes"])
    written = float(layer.attrs["frozen_params"]) * share * dtype_bytes(dtype)
    return device.memory_time_s(frozen_bytes + written)
