"""Compute time of layers: a measured profile where one matches, else the device model.

Every LayerCost says where it came from: `measured` (a profile of this layer at this dtype and
micro-batch), `measured-scaled` (a profile at another micro-batch, scaled by the ratio of the
device model's times at the two micro-batches), or `model` (the device model's roofline).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from simplan.devices import DeviceModel
from simplan.gemm import KERNELS, GemmHardware, GemmShape, gemm_time_s, operand_bytes
from simplan.model_graph import Layer, ModelGraph, OpCost
from simplan.profiles import Profile
from simplan.units import dtype_bytes

MEASURED, SCALED, MODEL = "measured", "measured-scaled", "model"

# Adam with mixed precision touches per parameter: fp32 master weight, fp32 grad (or 16-bit grad
# upcast), two fp32 moments (read + write each) and the 16-bit weight copy written back:
# reads 4+4+4+4 and writes 4+4+4+2 bytes = 30 bytes. Plain fp32 Adam: 16 read + 12 written = 28.
ADAM_BYTES_PER_PARAM = {"bf16": 30.0, "fp16": 30.0, "fp32": 28.0}
ADAM_KERNELS = 4  # multi-tensor (foreach) kernels per step, each paying the launch overhead


@dataclass(frozen=True, kw_only=True)
class LayerCost:
    fwd_s: float
    bwd_s: float
    source: str


TILED_DTYPES = ("bf16", "fp16")  # Tensor Core dtypes the GEMM model's tiles describe
MmShape = tuple[float, float, float, float, int, int]


def gemm_hardware(device: DeviceModel, dtype: str) -> GemmHardware | None:
    """The device as the GEMM model sees it, full tiles at the training stack's matrix
    efficiency (the device's measured rate times the stack's share of it); None where the tile
    model does not apply (a CPU, a device without SM count or tiles, fp32)."""
    if device.kind != "gpu" or device.sm_count <= 0 or not device.gemm_tiles:
        return None
    if dtype not in TILED_DTYPES:
        return None
    return GemmHardware(
        sm_count=device.sm_count,
        tiles=device.gemm_tiles,
        peak_flops=device.peak(dtype),
        efficiency=device.matrix_efficiency,
        memory_Bps=device.memory_bandwidth_Bps * device.mem_efficiency,
        elem_bytes=dtype_bytes(dtype),
    )


def at_micro_batch(mm: MmShape, micro_batch: int) -> GemmShape:
    """A recorded product's shape for b samples: its per-sample dimension times b."""
    dims = list(mm[:4])
    dims[mm[4]] *= micro_batch
    g, m, n, k = (max(math.ceil(d - 1e-9), 1) for d in dims)
    return GemmShape(g=g, m=m, n=n, k=k)


def mm_time_s(mm: MmShape, device: DeviceModel, dtype: str, micro_batch: int) -> float:
    """One recorded product: the GEMM model where it applies, else the roofline; never under
    the device's per-kernel floor."""
    hw = gemm_hardware(device, dtype)
    if hw is None:
        shape = at_micro_batch(mm, micro_batch)
        nbytes = operand_bytes(shape, dtype_bytes(dtype))
        return device.roofline_time_s(shape.flops, nbytes, dtype)
    return _tiled_s((mm,), hw, device.kernel_overhead_s, micro_batch) / mm[5]


@functools.lru_cache(maxsize=1 << 14)
def _tiled_s(mms: tuple[MmShape, ...], hw: GemmHardware, floor_s: float, micro_batch: int) -> float:
    """All calls of recorded products on the GEMM model (cached: a planner times the same
    layers at the same few micro-batches and TP degrees many times)."""
    return sum(
        mm[5] * max(gemm_time_s(at_micro_batch(mm, micro_batch), hw, KERNELS), floor_s)
        for mm in mms
    )


def shaped_time_s(
    mms: tuple[MmShape, ...], device: DeviceModel, dtype: str, micro_batch: int
) -> float:
    """All calls of recorded products: the GEMM model where it applies, else the roofline."""
    if not mms:
        return 0.0
    hw = gemm_hardware(device, dtype)
    if hw is not None:
        return _tiled_s(mms, hw, device.kernel_overhead_s, micro_batch)
    return sum(mm[5] * mm_time_s(mm, device, dtype, micro_batch) for mm in mms)


def fused_attention(layer: Layer) -> bool:
    """Whether the layer's matrix work outside the GEMM model is a fused attention kernel: in a
    transformer block every linear and unfused-attention product is a recorded shape, so what
    remains is the flash-attention kernel."""
    return layer.kind == "transformer_block"


def pass_time_s(
    ops: OpCost, device: DeviceModel, dtype: str, micro_batch: int, attention: bool = False
) -> float:
    """Time of one pass (forward or backward) of a layer for a micro-batch: products of known
    shape through the GEMM model, other matrix operations and memory-bound ones on the
    roofline; with `attention`, those other matrix operations are fused attention kernels
    (DeviceModel.attention_time_s)."""
    b = micro_batch
    roofline = device.attention_time_s if attention else device.roofline_time_s
    gemm = sum(n * roofline(f * b, nbytes * b, dtype) for f, nbytes, n in ops.gemms)
    gemm += shaped_time_s(ops.mm_shapes, device, dtype, b)
    if ops.mem_ops == 0:
        return gemm
    per_op = ops.mem_bytes * micro_batch / ops.mem_ops
    return gemm + ops.mem_ops * device.memory_time_s(per_op)


def model_cost(layer: Layer, device: DeviceModel, dtype: str, micro_batch: int) -> LayerCost:
    attention = fused_attention(layer)
    return LayerCost(
        fwd_s=pass_time_s(layer.fwd_ops, device, dtype, micro_batch, attention),
        bwd_s=pass_time_s(layer.bwd_ops, device, dtype, micro_batch, attention),
        source=MODEL,
    )


def layer_cost(
    layer: Layer, device: DeviceModel, dtype: str, micro_batch: int, profile: Profile | None = None
) -> LayerCost:
    """The cost of one layer for a micro-batch: measured if possible, else modelled."""
    modelled = model_cost(layer, device, dtype, micro_batch)
    timing = profile.timings.get(layer.identity) if profile and profile.dtype == dtype else None
    if timing is None or profile is None:
        return modelled
    fwd_k, bwd_k = profile.layer_scale()
    fwd_s, bwd_s = timing.fwd_s * fwd_k, timing.bwd_s * bwd_k
    if profile.micro_batch == micro_batch:
        return LayerCost(fwd_s=fwd_s, bwd_s=bwd_s, source=MEASURED)
    base = model_cost(layer, device, dtype, profile.micro_batch)
    return LayerCost(
        fwd_s=fwd_s * ratio(modelled.fwd_s, base.fwd_s),
        bwd_s=bwd_s * ratio(modelled.bwd_s, base.bwd_s),
        source=SCALED,
    )


def ratio(a: float, b: float) -> float:
    """a / b, or 1 when b is 0 (a cost that is 0 either way scales by nothing)."""
    return a / b if b > 0 else 1.0


def layer_costs(
    graph: ModelGraph,
    device: DeviceModel,
    dtype: str,
    micro_batch: int,
    profile: Profile | None = None,
) -> tuple[LayerCost, ...]:
    """Every layer's cost. A profile applies layer by layer through the identity keys, which
    include input shapes and dtypes: a profile at another sequence length matches no layer."""
    cache: dict[str, LayerCost] = {}
    out = []
    for layer in graph.layers:
        if layer.identity not in cache:
            cache[layer.identity] = layer_cost(layer, device, dtype, micro_batch, profile)
        out.append(cache[layer.identity])
    return tuple(out)


def optimizer_step_s(params: float, device: DeviceModel, dtype: str) -> float:
    """Adam step over `params` parameters held by one device (memory-bound)."""
    nbytes = params * ADAM_BYTES_PER_PARAM.get(dtype, 28.0)
    return (
        nbytes / (device.memory_bandwidth_Bps * device.mem_efficiency)
        + ADAM_KERNELS * device.kernel_overhead_s
    )
