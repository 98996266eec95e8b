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

A ring pass runs in cp steps, one chunk pair each; every step after the first merges its partial
result into the rank's accumulator, memory-bound work on the rank's own tokens (ring-flash-
attention's update_out_and_lse and backward accumulation, zhuzilin/ring-flash-attention
ring_flash_attn/utils.py and zigzag_ring_flash_attn.py, element-wise torch operations that each
read their operands and write their result):
  forward   the partial output (dtype, b bytes) cast to the fp32 accumulator (b + 4 bytes an
            element), both rescaled by their softmax weights (2 x (4 + 4)) and summed (4 + 4 + 4):
            b + 32 bytes per output element;
  backward  the partial dQ, dK and dV added into fp32 accumulators (b + 4 + 4 bytes per element of
            Q, K and V).
Overlap is per step: a step's K/V transfer hides behind that step's compute (its attention and
its merge) only, so a step whose transfer is longer leaves the difference exposed; the first
step's chunk is the rank's own, so nothing needs to arrive before it. In the backward the dK/dV
accumulated for a chunk travel with it, and the last step's go home after the last compute:
one step's dK/dV exposed.

The sequence layout sets each rank's share of the causal score matrix: Megatron's 2 x cp chunks
(rank i: chunks i and 2cp-1-i) give every rank the same share; a contiguous layout (rank i: the
i-th s/cp tokens, as ring_attn and llama3_attn lay packed sequences out in ring-flash-attention's
benchmarks) leaves the last rank of each sequence most of it, and the step ends when that rank
does: `causal_imbalance` is the slowest rank's share over the mean.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simplan.devices import DeviceModel
from simplan.fp8 import is_attention_core, kv_dim
from simplan.model_graph import Layer, OpCost
from simplan.units import dtype_bytes

if TYPE_CHECKING:
    from simplan.costmodel import MmShape

Collective = tuple[str, float]


def split_ops(ops: OpCost, cp: int) -> OpCost:
    """One CP rank's share of a pass: every matrix operation (recorded shapes too) and
    element-wise byte / cp."""
    if cp <= 1:
        return ops
    return OpCost(
        gemms=tuple((f / cp, nbytes / cp, n) for f, nbytes, n in ops.gemms),
        mem_bytes=ops.mem_bytes / cp,
        mem_ops=ops.mem_ops,
        mm_shapes=tuple(_split_mm(mm, cp) for mm in ops.mm_shapes),
    )


def _split_mm(mm: MmShape, cp: int) -> MmShape:
    """A recorded product on one CP rank: its per-sample dimension (the tokens, or the batched
    heads x queries of attention) over cp."""
    dims = list(mm[:4])
    dims[mm[4]] /= cp
    return (dims[0], dims[1], dims[2], dims[3], mm[4], mm[5])


def kv_bytes(layer: Layer, dtype: str, micro_batch: int, tp: int) -> float:
    """Bytes of the whole sequence's keys and values of one attention layer on one TP rank."""
    s = layer.attrs.get("seq_len", 0)
    return 2.0 * s * kv_dim(layer) * micro_batch * dtype_bytes(dtype) / tp


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
        n * device.attention_time_s(f * micro_batch / share, 0.0, dtype)
        for f, nbytes, n in ops.gemms
        if is_attention_core(layer, (f, nbytes, n))
    )


FP32_BYTES = 4


def merge_step_bytes(
    layer: Layer, dtype: str, micro_batch: int, tp: int, cp: int, backward: bool
) -> float:
    """Memory traffic of one ring step's merge on one rank (module docstring): the forward
    rescales and sums the output, the backward accumulates dQ, dK and dV."""
    a = layer.attrs
    s, h = a.get("seq_len", 0), a.get("hidden_size", 0)
    kv = kv_dim(layer)
    tokens = micro_batch * s / cp
    b = dtype_bytes(dtype)
    if not backward:
        return tokens * h / tp * (b + 8 * FP32_BYTES)
    return tokens * (h + 2 * kv) / tp * (b + 2 * FP32_BYTES)


def ring_merge_s(
    layer: Layer, device: DeviceModel, dtype: str, micro_batch: int, tp: int, cp: int,
    backward: bool,
) -> float:  # fmt: skip
    """Seconds of a ring pass's cp - 1 merges on one rank."""
    if cp <= 1 or layer.kind != "transformer_block":
        return 0.0
    step = device.memory_time_s(merge_step_bytes(layer, dtype, micro_batch, tp, cp, backward))
    return (cp - 1) * step


def ring_exposed_s(comm_s: float, compute_s: float, cp: int, backward: bool = False) -> float:
    """The part of a ring's transfers (comm_s: its cp - 1 steps together) that the compute of a
    pass (compute_s: its cp steps together) cannot hide, step by step. The backward's steps
    carry K/V and dK/dV alike (half each); the dK/dV of the last step travel home after the
    last compute, with nothing left to hide them."""
    if cp <= 1:
        return comm_s
    transfers = cp - 1
    step = comm_s / transfers
    drain = step / 2 if backward else 0.0
    return transfers * max(step - compute_s / cp, 0.0) + drain


def _prefix_work(first: int, end: int) -> float:
    """Causal score entries of the queries at positions first..end-1 of one sequence."""
    return (end * (end + 1) - first * (first + 1)) / 2.0


def causal_imbalance(seq_lens: tuple[int, ...], cp: int, layout: str) -> float:
    """The slowest rank's share of the causal attention work over the mean share, for sequences
    packed one after another (seq_lens) and split over cp ranks: 'balanced' (2 x cp chunks per
    sequence, rank i taking chunks i and 2cp-1-i) or 'contiguous' (rank i the i-th 1/cp of the
    tokens)."""
    if layout not in ("balanced", "contiguous"):
        raise ValueError(f"layout must be 'balanced' or 'contiguous', not {layout!r}")
    total = sum(seq_lens)
    if cp <= 1 or layout == "balanced" or total == 0:
        return 1.0
    if total % cp:
        raise ValueError(f"seq_lens must sum to a multiple of cp={cp}, not {total}")
    per_rank = total // cp
    work = [0.0] * cp
    start = 0
    for length in seq_lens:
        for rank in range(start // per_rank, (start + length - 1) // per_rank + 1):
            first = max(rank * per_rank, start) - start
            end = min((rank + 1) * per_rank, start + length) - start
            work[rank] += _prefix_work(first, end)
        start += length
    return max(work) / (sum(work) / cp)
