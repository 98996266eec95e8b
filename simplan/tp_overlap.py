"""TP communication overlap: sequence-parallel all-gathers and reduce-scatters hidden behind the
GEMMs they feed (Megatron-LM --tp-comm-overlap with Transformer Engine's userbuffers ring
exchange; torchtitan's async TP, micro-pipelined by torch.compile; Flux's fused kernels).

With sequence parallelism a transformer block's forward runs all-gather -> QKV GEMM, attention
output GEMM -> reduce-scatter, all-gather -> FC1 GEMM, FC2 GEMM -> reduce-scatter; the backward
runs the same four pairs around the data-gradient GEMMs (of the same shapes). Overlap splits each
pair into tp chunks: the GEMM of one chunk runs while the next chunk moves. What cannot be hidden
stays exposed: one chunk of the transfer (the pipeline's fill or drain), and, where the transfer
is slower than its GEMM, the difference over the other chunks:

    exposed = c / n + max(c - g, 0) * (n - 1) / n        (c: transfer, g: GEMM, n: tp)

The GEMM itself keeps its time (Flux's fused GEMMs run as fast as cuBLAS's: 0.814 vs 0.846 ms,
simplan/data/reference/tp_comm_overlap_and_cp.csv). benchmarks/sim_tp_overlap.py checks the
formula on the published GEMM and NCCL times there.
"""

from __future__ import annotations

from simplan.devices import DeviceModel
from simplan.fp8 import as_fp8, kv_dim
from simplan.model_graph import Layer


def exposed_s(comm_s: float, gemm_s: float, chunks: int) -> float:
    """The part of a transfer of comm_s seconds that its GEMM (gemm_s) cannot hide when both
    are split into `chunks` pieces."""
    if chunks <= 1 or gemm_s <= 0:
        return comm_s
    return comm_s / chunks + max(comm_s - gemm_s, 0.0) * (chunks - 1) / chunks


def paired_gemm_flops(layer: Layer) -> tuple[float, float, float, float]:
    """FLOPs per sample (forward) of the four linear GEMMs of a transformer block, in the order
    of its sequence-parallel collectives: QKV, attention output, FC1 (with the gate), FC2."""
    a = layer.attrs
    s, h = a.get("seq_len", 0), a.get("hidden_size", 0)
    kv = kv_dim(layer)
    ffn = a.get("ffn_hidden_size", 4 * h)
    gated = 2 if a.get("activation") == "swiglu" else 1
    return (
        2.0 * s * h * (h + 2 * kv),
        2.0 * s * h * h,
        2.0 * s * h * ffn * gated,
        2.0 * s * ffn * h,
    )


def paired_gemm_s(
    layer: Layer, device: DeviceModel, dtype: str, fp8: bool, micro_batch: int, tp: int
) -> tuple[float, ...]:
    """Seconds of each GEMM a TP collective of the block hides behind, on one TP rank, for a
    micro-batch (the forward GEMMs; the backward's data-gradient GEMMs have the same shapes)."""
    if fp8:
        device = as_fp8(device, dtype)
    return tuple(device.gemm_time_s(f * micro_batch / tp, dtype) for f in paired_gemm_flops(layer))
