"""Context parallelism: each sample's sequence split over cp ranks (Megatron-LM
--context-parallel-size; ring attention).

Every per-token cost divides by cp: the GEMMs, the element-wise work, the activations, the
layer inputs and outputs, the TP collectives. The attention core divides by cp too: the sequence
is cut into 2 x cp chunks and rank i takes chunks i and 2cp-1-i (Megatron's load balancing of
causal attention), so every rank does the same share of the causal score matrix. Parameters are
whole on every CP rank; gradients are reduced over dp x cp ranks.

What CP adds is the exchange of keys and values of each attention layer. On one TP rank the whole
sequence's K and V hold 2 * s * kv_dim / tp elements per sample:
  ring        (Megatron's p2p) cp - 1 steps pass a K/V chunk to the next rank, each overlapped
              with the attention of the chunk already held: as much data as a ring all-gather
              of K and V, hidden behind the attention core as simplan.tp_overlap hides a TP
              transfer behind its GEMM (one of cp chunks, and any excess, stay exposed). The
              backward passes K/V again and returns dK/dV: twice the bytes.
  all_gather  K and V gathered before the attention (and dK/dV reduce-scattered after its
              backward): the same bytes, not overlapped.
"""

from __future__ import annotations

from simplan.devices import DeviceModel
from simplan.fp8 import is_attention_core
from simplan.model_graph import Layer, OpCost
from simplan.units import dtype_bytes

Collective = tuple[str, float]


def split_ops(ops: OpCost, cp: int) -> OpCost:
    """One CP rank's share of a pass: every matrix operation and element-wise byte / cp."""
    if cp <= 1:
        return ops
    return OpCost(
        gemms=tuple((f / cp, nbytes / cp, n) for f, nbytes, n in ops.gemms),
        mem_bytes=ops.mem_bytes / cp,
        mem_ops=ops.mem_ops,
    )


def kv_bytes(layer: Layer, dtype: str, micro_batch: int, tp: int) -> float:
    """Bytes of the whole sequence's keys and values of one attention layer on one TP rank."""
    a = layer.attrs
    s, h = a.get("seq_len", 0), a.get("hidden_size", 0)
    heads = max(a.get("num_heads", 1), 1)
    kv_dim = a.get("num_kv_heads", heads) * (h // heads)
    return 2.0 * s * kv_dim * micro_batch * dtype_bytes(dtype) / tp


def cp_collectives(
    layer: Layer, dtype: str, micro_batch: int, tp: int, cp: int, comm: str
) -> tuple[tuple[Collective, ...], tuple[Collective, ...]]:
    """(forward, backward) K/V exchanges of one layer over its CP group."""
    if cp <= 1 or layer.kind != "transformer_block":
        return (), ()
    kv = kv_bytes(layer, dtype, micro_batch, tp)
    if comm == "ring":
        return (("all_gather", kv),), (("all_gather", 2 * kv),)
    return (("all_gather", kv),), (("reduce_scatter", kv),)


def attention_core_s(
    layer: Layer, ops: OpCost, device: DeviceModel, dtype: str, micro_batch: int, share: int
) -> float:
    """Seconds of the attention core of one pass (ops: the whole layer's) for a micro-batch,
    on one of `share` ranks that split it (tp * cp)."""
    return sum(
        n * device.gemm_time_s(f * micro_batch / share, dtype)
        for f, nbytes, n in ops.gemms
        if is_attention_core(layer, (f, nbytes, n))
    )
