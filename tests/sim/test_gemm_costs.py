"""Layer costs through the GEMM model: shapes at a micro-batch, TP shards, the fallbacks."""

from __future__ import annotations

import pytest

from simplan.build import graph_from_spec
from simplan.costmodel import at_micro_batch, gemm_hardware, mm_time_s, pass_time_s
from simplan.devices import get_device
from simplan.gemm import KERNELS, GemmShape, gemm_time_s
from simplan.model_graph import OpCost
from simplan.sim.costs import shard_mm, shard_ops
from simplan.transformer_shape import TransformerSpec

QKV = (1.0, 2048.0, 3072.0, 1024.0, 1, 1)  # tokens x 3h x h, h = 1024, seq 2048


def test_a_recorded_product_grows_along_its_batch_axis() -> None:
    assert at_micro_batch(QKV, 4) == GemmShape(g=1, m=8192, n=3072, k=1024)
    wgrad = (1.0, 3072.0, 1024.0, 2048.0, 3, 1)
    assert at_micro_batch(wgrad, 4) == GemmShape(g=1, m=3072, n=1024, k=8192)


def test_a_pass_adds_its_products_model_times() -> None:
    h100 = get_device("h100-sxm")
    hw = gemm_hardware(h100, "bf16")
    assert hw is not None and hw.sm_count == 132 and hw.efficiency == h100.matrix_efficiency
    ops = OpCost(mm_shapes=(QKV, (16.0, 2048.0, 2048.0, 64.0, 0, 2)))  # 2 calls of the second
    qkv = gemm_time_s(GemmShape(g=1, m=4096, n=3072, k=1024), hw, KERNELS)  # micro-batch 2
    scores = gemm_time_s(GemmShape(g=32, m=2048, n=2048, k=64), hw, KERNELS)
    floor = h100.kernel_overhead_s  # no kernel issues faster than the device's floor
    assert pass_time_s(ops, h100, "bf16", 2) == pytest.approx(
        max(qkv, floor) + 2 * max(scores, floor)
    )


def test_cpu_and_fp32_products_stay_on_the_roofline() -> None:
    cpu = get_device("cpu")
    flops = 2.0 * 2048 * 3072 * 1024
    nbytes = 4.0 * (2048 * 1024 + 1024 * 3072 + 2048 * 3072)
    assert mm_time_s(QKV, cpu, "fp32", 1) == pytest.approx(
        cpu.roofline_time_s(flops, nbytes, "fp32")
    )
    assert gemm_hardware(get_device("a100-80gb"), "fp32") is None


def test_tp_splits_the_weight_side_of_each_product() -> None:
    assert shard_mm(QKV, 8, forward=True) == (1.0, 2048.0, 384.0, 1024.0, 1, 1)  # column
    fc2 = (1.0, 2048.0, 1024.0, 4096.0, 1, 1)
    assert shard_mm(fc2, 8, forward=True) == (1.0, 2048.0, 1024.0, 512.0, 1, 1)  # row
    proj = (1.0, 2048.0, 1024.0, 1024.0, 1, 1)
    assert shard_mm(proj, 8, forward=True)[3] == 128.0  # row-parallel: k
    assert shard_mm(proj, 8, forward=False)[2] == 128.0  # its input gradient: n
    scores = (16.0, 2048.0, 2048.0, 64.0, 0, 1)
    assert shard_mm(scores, 8, forward=True)[0] == 2.0  # heads


def test_tp8_shards_of_a_small_model_lose_efficiency() -> None:
    """h = 1024 at micro-batch 1: 8 shards of a block's products take longer together than the
    whole products on one GPU (fewer tiles than SMs, launch and tile overheads), where the flat
    roofline made them exactly as fast (the product fact that TP-sharded small GEMMs were
    predicted too fast)."""
    spec = TransformerSpec(
        name="t",
        hidden_size=1024,
        num_layers=1,
        num_heads=16,
        seq_len=2048,
        vocab_size=512,
        attention="math",
    )
    block = graph_from_spec(spec, dtype="bf16").layer("blocks.0")
    h100 = get_device("h100-sxm")
    mm_only = OpCost(mm_shapes=block.fwd_ops.mm_shapes)
    whole = pass_time_s(mm_only, h100, "bf16", 1)
    shard = pass_time_s(shard_ops(mm_only, 8, 0.0), h100, "bf16", 1)
    assert 8 * shard > 1.3 * whole
