"""Mixture-of-experts shapes: validation, counted FLOPs and parameters against hand counts."""

from __future__ import annotations

from typing import Any

import pytest

from simplan.build import graph_from_spec
from simplan.transformer_shape import TransformerSpec, approx_params

# h 64, 4 heads of 16, s 32, SwiGLU; block 0 dense (ffn 128), block 1 MoE: 4 experts of ffn 32,
# top-2, one shared expert of ffn 32
SMALL: dict[str, Any] = dict(
    name="moe-small",
    hidden_size=64,
    num_layers=2,
    num_heads=4,
    seq_len=32,
    vocab_size=100,
    ffn_hidden_size=128,
    activation="swiglu",
    num_experts=4,
    moe_top_k=2,
    moe_ffn_hidden_size=32,
    moe_shared_experts=1,
    moe_dense_layers=1,
)


def small(**changes: Any) -> TransformerSpec:
    return TransformerSpec(**{**SMALL, **changes})


@pytest.fixture(scope="module")
def graph():
    return graph_from_spec(small(), dtype="fp32")


def test_moe_block_params_by_hand(graph) -> None:
    block = graph.layer("blocks.1")
    attention = 64 * (64 + 2 * 64) + 64 * 64  # qkv and output projection (no biases)
    norms = 2 * 64
    router = 64 * 4
    routed = 4 * (64 * 2 * 32 + 32 * 64)  # per expert: gate+up (h x 2f) and down (f x h)
    shared = 64 * 2 * 32 + 32 * 64
    assert block.params == attention + norms + router + routed + shared == 47488
    assert block.attrs["expert_params"] == routed == 24576
    assert block.attrs["num_experts"] == 4 and block.attrs["moe_top_k"] == 2
    assert "num_experts" not in graph.layer("blocks.0").attrs  # the first block stays dense


def test_moe_block_forward_flops_by_hand(graph) -> None:
    s, h = 32, 64
    attention = 2 * s * h * (3 * h) + 2 * s * h * h + 4 * s * s * h  # projections + core
    router = 2 * s * h * 4
    routed = 2 * (s * 2) * (h * 2 * 32 + 32 * h)  # s * k token copies through both matrices
    shared = 2 * s * (h * 2 * 32 + 32 * h)
    assert graph.layer("blocks.1").fwd_flops == attention + router + routed + shared == 2506752


def test_active_params_leave_out_unrouted_experts(graph) -> None:
    routed = 24576
    assert graph.active_params == graph.params - routed * (1 - 2 / 4)


def test_approx_params_matches_the_counted_model(graph) -> None:
    spec = small()
    norms_and_biases = 2 * 64 * 2 + 64  # two norms per block and the head's norm
    assert approx_params(spec) == graph.params - norms_and_biases


def test_moe_runs_on_a_real_device_with_routing() -> None:
    import torch

    from simplan.nets.transformer import build

    model, inputs = build(small(), batch=2)
    out = model(*inputs)
    out.float().sum().backward()
    assert out.shape == (2, 32, 100)
    experts = model.blocks[1].mlp.experts
    assert experts.up.grad is not None and torch.isfinite(experts.up.grad).all()


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"moe_top_k": 5}, "moe_top_k must be between 1 and num_experts 4"),
        ({"moe_top_k": 0}, "moe_top_k must be between 1"),
        ({"num_experts": 0}, "moe_* settings need num_experts > 0"),
        ({"moe_imbalance": 0.5}, "moe_imbalance"),
        ({"moe_capacity_factor": 0.5}, "moe_capacity_factor must be 0 (dropless) or >= 1"),
        ({"moe_dense_layers": 2}, "leaves no MoE block"),
    ],
)
def test_bad_moe_shapes_are_refused(changes: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValueError) as info:
        small(**changes)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_capacity_factor_caps_the_declared_imbalance() -> None:
    assert small(moe_imbalance=2.0).routed_load == 2.0
    assert small(moe_imbalance=2.0, moe_capacity_factor=1.25).routed_load == 1.25


def test_kv_channels_widen_the_heads() -> None:
    spec = TransformerSpec(
        name="wide", hidden_size=64, num_layers=1, num_heads=4, kv_channels=32, seq_len=8,
        vocab_size=10, activation="swiglu",
    )  # fmt: skip
    graph = graph_from_spec(spec, dtype="fp32")
    attention = 64 * (4 * 32 * 3) + 4 * 32 * 64  # q, k, v of 4 x 32 and the projection back
    mlp = 3 * 64 * 256  # SwiGLU of ffn 4h, no biases
    assert graph.layer("blocks.0").params == attention + mlp + 2 * 64  # + two RMSNorms


@pytest.mark.parametrize(
    ("preset", "total", "active"),
    [
        # Mixtral paper (Jiang et al. 2024): 47B parameters, 13B active per token
        ("mixtral-8x7b", 46.7e9, 12.9e9),
        # Qwen3 model card: 30.5B total, 3.3B activated
        ("qwen3-30b-a3b", 30.5e9, 3.3e9),
    ],
)
def test_presets_match_published_parameter_counts(preset: str, total: float, active: float) -> None:
    from simplan.sources import load_model

    graph = load_model(preset, dtype="bf16")
    assert graph.params == pytest.approx(total, rel=0.01)
    assert graph.active_params == pytest.approx(active, rel=0.02)


def test_every_published_row_with_a_preset_and_a_recipe_is_expressible() -> None:
    """benchmarks/sim_moe.py: each row it simulates has a preset of the row's exact shape and
    a valid configuration of the row's degrees; FP8 blockwise and (on B200 / GB200) MXFP8 rows
    run with --fp8 block; CP rows run with --cp folded into the expert groups; the rows it
    leaves out are hardware without a preset (B300, GB300), MXFP8 on part of the GEMMs,
    activation offloading or another architecture (DeepSeek's MLA, Qwen3-Next's linear
    attention, Llama 4)."""
    import importlib.util
    import sys
    from pathlib import Path

    from simplan.device_fit import read_reference_csv
    from simplan.parallel import check_config_for_model
    from simplan.sources import load_model

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "sim_moe.py"
    spec = importlib.util.spec_from_file_location("sim_moe", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules["sim_moe"] = bench  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    rows = read_reference_csv(bench.TABLE)
    kept = [i for i, row in enumerate(rows) if not bench.why_not(row)]
    assert len(kept) == 31
    fp8 = [i for i in kept if bench.fp8_recipe(rows[i]) != "none"]
    assert fp8 == [19, 21, 22, 24, 27, 28, 45, 50]  # MXFP8 on B200/GB200, blockwise on H100
    assert [i for i in kept if bench.case_of(i, rows[i]).config.cp > 1] == [*range(37, 43), 45]
    assert [i for i in kept if bench.overlaps(rows[i])] == [18, 19, 21, 22, 30, 47]
    assert all(bench.fp8_recipe(rows[i]) == "block" for i in fp8)
    for row in rows:
        why = bench.why_not(row)
        reasons = ("precision", "no cluster", "no preset", "activation offloading")
        assert not why or why.startswith(reasons)
    for i in kept:
        case = bench.case_of(i, rows[i])
        graph = load_model(case.preset, seq_len=case.config.seq_len, dtype="bf16")
        assert bench.shape_mismatch(graph, rows[i]) == ""
        check_config_for_model(case.config, graph)
        assert case.config.world_size == case.gpus
        assert f"--ep {case.config.ep}" in case.cli()
