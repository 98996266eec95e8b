"""Expert parallelism in the simulator: groups, all-to-all bytes, load, memory and errors."""

from __future__ import annotations

from typing import Any

import pytest

from simplan.build import graph_from_spec
from simplan.costmodel import pass_time_s
from simplan.devices import get_device
from simplan.errors import SimplanError
from simplan.parallel import ParallelConfig, check_config_for_model
from simplan.sim.costs import layer_steps
from simplan.sim.experts import (
    dispatch_bytes,
    edp_groups,
    ep_collectives,
    ep_groups,
    etp_groups,
    expert_parallel_ops,
    overlapped_ep_s,
    rank_load,
    routed_ops,
)
from simplan.sim.rank_devices import grid
from simplan.sim.run import simulate
from simplan.topology import load_cluster
from simplan.transformer_shape import TransformerSpec
from tests.helpers import assert_one_line_error, run_cli

# a Mixtral-like block at a tenth of the width: 8 experts, top-2, every layer MoE
SHAPE: dict[str, Any] = dict(
    name="moe-test",
    hidden_size=512,
    num_layers=4,
    num_heads=8,
    num_kv_heads=2,
    ffn_hidden_size=1792,
    seq_len=1024,
    vocab_size=1000,
    activation="swiglu",
    tie_embeddings=False,
    num_experts=8,
    moe_top_k=2,
)


def moe_graph(**changes: Any):
    return graph_from_spec(TransformerSpec(**{**SHAPE, **changes}), dtype="bf16")


@pytest.fixture(scope="module")
def graph():
    return moe_graph()


@pytest.fixture(scope="module")
def cluster():
    return load_cluster("dgx-h100", nodes=2)


def cfg(**kw: Any) -> ParallelConfig:
    base: dict[str, Any] = dict(dp=16, global_batch=32, micro_batch=1)
    return ParallelConfig(**{**base, **kw})


def test_groups_fold_expert_ranks_into_dp_x_tp() -> None:
    # 8 ranks of one stage (dp 4 x tp 2), ep 2 x etp 2 -> edp 2
    config = ParallelConfig(dp=4, tp=2, ep=2, etp=2, global_batch=4)
    g = grid(config)
    assert config.edp == 2
    assert etp_groups(g, 0, config) == [(0, 1), (2, 3), (4, 5), (6, 7)]
    assert ep_groups(g, 0, config) == [(0, 2), (1, 3), (4, 6), (5, 7)]
    assert edp_groups(g, 0, config) == [(0, 4), (1, 5), (2, 6), (3, 7)]


def test_all_to_all_bytes_per_rank(graph) -> None:
    block = graph.layer("blocks.0")
    # every token of the micro-batch goes to k experts: s * b * k rows of h bf16 elements
    assert dispatch_bytes(block, cfg(ep=8), 2, 2) == 1024 * 2 * 2 * 512 * 2
    # with TP the tokens of a TP group are split over its ranks
    assert dispatch_bytes(block, cfg(dp=8, tp=2, ep=8), 2, 2) == 1024 * 2 * 2 * 512 * 2 / 2
    fwd, bwd = ep_collectives(block, cfg(ep=8), 1, 2)
    a2a = 1024 * 2 * 512 * 2
    assert fwd == bwd == (("all_to_all", a2a), ("all_to_all", a2a))  # dispatch and combine
    fwd, _ = ep_collectives(block, cfg(ep=4, etp=2), 1, 2)
    assert fwd == (
        ("all_to_all", a2a),
        ("etp_all_gather", 2 * a2a),
        ("etp_reduce_scatter", 2 * a2a),
        ("all_to_all", a2a),
    )
    assert ep_collectives(graph.layer("embed"), cfg(ep=8), 1, 2) == ((), ())


def test_rank_load_by_hand() -> None:
    assert rank_load(2.0, 8, 1) == pytest.approx(1.0)  # every rank holds every expert
    assert rank_load(2.0, 8, 8) == pytest.approx(2.0)  # the busiest expert alone on a rank
    # 2 experts per rank: the busiest (2x) and one of the others, (8 - 2) / 7 of the mean
    assert rank_load(2.0, 8, 4) == pytest.approx((2.0 + 6 / 7) / 2)
    assert rank_load(1.0, 8, 8) == 1.0


def test_expert_parallelism_shards_expert_memory(graph, cluster) -> None:
    one = simulate(graph, cluster, cfg(), record=False)
    eight = simulate(graph, cluster, cfg(ep=8), record=False)
    experts = sum(x.attrs.get("expert_params", 0) for x in graph.layers)
    # weights, fp32 gradients and Adam states: 18 bytes per parameter (mixed precision)
    saved = 18 * experts * (1 - 1 / 8)

    def state(result: Any) -> float:
        memory = result.devices[0].memory
        return memory["weights"] + memory["grads"] + memory["optimizer"]

    assert state(one) - state(eight) == pytest.approx(saved)


def test_all_to_all_across_nodes_costs_more(graph, cluster) -> None:
    inside = simulate(graph, cluster, cfg(ep=8), record=False)
    across = simulate(graph, cluster, cfg(ep=8, dp=16), record=False, placement=_spread())
    assert across.step_time_s > inside.step_time_s
    assert inside.step_time_s > simulate(graph, cluster, cfg(), record=False).step_time_s


def _spread() -> list[int]:
    """Ranks alternate between the two nodes: every ep group of 8 spans both."""
    return [(r % 2) * 8 + r // 2 for r in range(16)]


def test_more_network_bandwidth_never_slows_expert_parallelism(graph) -> None:
    from simplan.io import read_toml
    from simplan.topology.cluster_spec import PRESET_DIR

    spec = read_toml(PRESET_DIR / "dgx-h100.toml")
    spec["node_group"][0]["count"] = 2
    faster = {**spec, "node_group": [dict(spec["node_group"][0])]}
    faster["node_group"][0]["nics"] = {"count": 8, "bandwidth_Gbps": 800}
    times = [
        simulate(graph, load_cluster(s), cfg(ep=8), record=False, placement=_spread()).step_time_s
        for s in (spec, faster)
    ]
    assert times[1] < times[0]


def test_imbalance_slows_the_busiest_rank(cluster) -> None:
    balanced = simulate(moe_graph(), cluster, cfg(ep=8), record=False)
    skewed = simulate(moe_graph(moe_imbalance=2.0), cluster, cfg(ep=8), record=False)
    ep1 = simulate(moe_graph(moe_imbalance=2.0), cluster, cfg(ep=1), record=False)
    assert skewed.step_time_s > balanced.step_time_s
    # without expert parallelism every rank holds every expert: the imbalance evens out
    assert ep1.step_time_s == pytest.approx(
        simulate(moe_graph(), cluster, cfg(ep=1), record=False).step_time_s
    )


def test_expert_degrees_must_fit_the_model_and_the_ranks(graph) -> None:
    with pytest.raises(SimplanError, match="ep 3 does not divide the 8 experts"):
        check_config_for_model(cfg(dp=12, ep=3, global_batch=12), graph)
    with pytest.raises(SimplanError, match=r"ep 32 x etp 1 = 32 must divide dp 16 x cp 1 x tp 1"):
        cfg(ep=32)
    dense = graph_from_spec(
        TransformerSpec(
            **{k: v for k, v in SHAPE.items() if k not in ("num_experts", "moe_top_k")}
        ),
        dtype="bf16",
    )
    with pytest.raises(SimplanError, match="has none; leave --ep and --etp at 1"):
        check_config_for_model(cfg(ep=2), dense)


def test_cli_simulates_expert_parallelism_and_refuses_bad_degrees() -> None:
    ok = run_cli(
        "simulate", "--model", "mixtral-8x7b", "--cluster", "dgx-h100", "--nodes", "8",
        "--pp", "4", "--ep", "8", "--global-batch", "256", "--schedule", "interleaved",
        "--virtual-stages", "8", "--zero", "1",
    )  # fmt: skip
    assert ok.returncode in (0, 3), ok.stderr
    assert "dp 16 tp 1 pp 4 ep 8 etp 1" in ok.stdout
    bad = run_cli(
        "simulate", "--model", "mixtral-8x7b", "--cluster", "dgx-h100", "--nodes", "2",
        "--pp", "2", "--ep", "16", "--global-batch", "16",
    )  # fmt: skip
    assert_one_line_error(bad, "ep 16 x etp 1 = 16 must divide dp 8")
    plan = run_cli(
        "plan", "--model", "mixtral-8x7b", "--cluster", "dgx-h100", "--global-batch", "64"
    )
    assert_one_line_error(plan, "does not search expert parallelism", "--ep")


def test_exports_and_runtime_refuse_what_they_cannot_express(graph) -> None:
    from simplan.planner.export import Refusal, check_model, unsupported
    from simplan.runtime.job import runtime_refusal

    why = unsupported("megatron", cfg(ep=8))
    assert why is not None and "ep 8" in why
    with pytest.raises(Refusal, match="mixture-of-experts"):
        check_model("mixtral-8x7b", "torchtitan")
    assert "mixture-of-experts" in runtime_refusal(cfg(), graph)
    assert "expert parallelism" in runtime_refusal(cfg(ep=8), graph)


def test_deepep_sends_one_copy_per_other_node() -> None:
    from math import comb

    from simplan.sim.experts import remote_nodes

    # 8 experts on 2 nodes (4 each), top-2: a token misses the other node with probability
    # C(4, 2) / C(8, 2) = 6 / 28
    assert remote_nodes(8, 2, 2) == pytest.approx(1 - 6 / 28)
    assert remote_nodes(128, 8, 4) == pytest.approx(3 * (1 - comb(96, 8) / comb(128, 8)))
    assert remote_nodes(8, 2, 1) == 0.0


def test_deepep_is_faster_across_nodes_and_needs_ep(graph, cluster) -> None:
    plain = simulate(graph, cluster, cfg(ep=8), record=False, placement=_spread())
    deepep = simulate(
        graph, cluster, cfg(ep=8, moe_dispatcher="deepep"), record=False, placement=_spread()
    )
    assert deepep.step_time_s < plain.step_time_s
    with pytest.raises(SimplanError, match="give --ep > 1"):
        cfg(moe_dispatcher="deepep")


def test_routed_gemms_count_the_hand_formula(graph) -> None:
    # s k / tp token copies through an h x 2f FC1 (SwiGLU gate) and an f x h FC2
    block = next(layer for layer in graph.layers if layer.attrs.get("num_experts"))
    s, k, h, f, tp = 1024, 2, 512, 1792, 2
    ops = routed_ops(block, tp, 2)
    assert sum(flops for flops, _, _ in ops.gemms) == 2 * (s * k / tp) * h * f * 3
    assert ops.gemms[0][1] == (s * k / tp) * (h + 2 * f) * 2


def test_imbalance_adds_the_routed_gemm_time_at_the_busiest_rank_load(graph) -> None:
    # one expert at 2x the mean, one expert per rank: the busiest rank does 1x more routed
    # work, timed as the cost model times any layer's GEMMs (forward once, backward twice)
    device = get_device("h100-sxm")
    config = cfg(ep=8)
    skewed = moe_graph(moe_imbalance=2.0)
    even = layer_steps(graph, device, config)
    uneven = layer_steps(skewed, device, config)
    block = next(layer for layer in graph.layers if layer.attrs.get("num_experts"))
    extra = pass_time_s(routed_ops(block, 1, 2), device, "bf16", 1)
    moe_steps = [i for i, layer in enumerate(graph.layers) if layer.attrs.get("num_experts")]
    for i in moe_steps:
        assert uneven[i].fwd_s - even[i].fwd_s == pytest.approx(extra)
        assert uneven[i].bwd_s - even[i].bwd_s == pytest.approx(2 * extra)


def test_overlapped_all_to_alls_expose_what_both_passes_cannot_hide() -> None:
    # 3 s forward and 1 s backward of all-to-all behind 1 + 1 s of compute: 2 s exposed,
    # shared 3:1; behind more compute than transfers, none
    assert overlapped_ep_s(3.0, 1.0, 1.0, 1.0) == pytest.approx((1.5, 0.5))
    assert overlapped_ep_s(1.0, 1.0, 2.0, 4.0) == (0.0, 0.0)
    assert overlapped_ep_s(0.0, 0.0, 1.0, 1.0) == (0.0, 0.0)


def test_moe_overlap_hides_the_dispatch_behind_compute() -> None:
    # one node, ep 8 over NVLink: the all-to-alls are far shorter than the blocks' compute, so
    # with the overlap only the gradient sync's tail stays exposed, and compute is unchanged
    node = load_cluster("dgx-h100", nodes=1)
    plain = simulate(moe_graph(), node, cfg(dp=8, ep=8), record=False)
    overlap = simulate(moe_graph(), node, cfg(dp=8, ep=8, moe_overlap=True), record=False)
    assert overlap.breakdown["compute_s"] == pytest.approx(plain.breakdown["compute_s"])
    assert overlap.step_time_s < plain.step_time_s
    assert overlap.breakdown["exposed_comm_s"] < 0.1 * plain.breakdown["exposed_comm_s"]
    assert "moe-overlap" in cfg(dp=8, ep=8, moe_overlap=True).describe()


def test_moe_overlap_needs_expert_parallelism() -> None:
    with pytest.raises(SimplanError, match=r"--moe-overlap .* give --ep > 1"):
        cfg(moe_overlap=True)
    flags = "--model mixtral-8x7b --cluster dgx-h100 --global-batch 8 --moe-overlap"
    assert_one_line_error(run_cli("simulate", *flags.split()), "--moe-overlap")


def test_context_parallel_ranks_fold_into_the_expert_groups(graph, cluster) -> None:
    # Megatron-Core's folding: dp 4 x cp 2 ranks of a stage form one ep 8 group (edp 1); each
    # rank dispatches its own s / cp tokens: s b k h x 2 bytes / cp per all-to-all
    config = cfg(dp=4, cp=2, ep=8, global_batch=8)
    assert config.edp == 1 and cfg(dp=8, cp=2, ep=8).edp == 2
    assert ep_groups(grid(config), 0, config) == [tuple(range(8))]
    device = get_device("h100-sxm")
    block = next(i for i, layer in enumerate(graph.layers) if layer.attrs.get("num_experts"))
    with_cp = layer_steps(graph, device, config)[block]
    assert with_cp.ep_fwd == (("all_to_all", 1024 * 2 * 512 * 2 / 2),) * 2
    result = simulate(graph, load_cluster("dgx-h100", nodes=1), config, record=False)
    assert result.step_time_s > 0 and result.fits_memory
    with pytest.raises(SimplanError, match=r"ep 16 x etp 1 = 16 must divide dp 4 x cp 2 x tp 1"):
        cfg(dp=4, cp=2, ep=16, global_batch=8)


def test_imbalance_with_context_parallelism_takes_the_rank_s_tokens(graph) -> None:
    # with cp 2 a rank routes s / 2 tokens: the busiest rank's extra is the routed GEMMs of
    # s k / 2 copies
    device = get_device("h100-sxm")
    config = cfg(dp=8, cp=2, ep=8)
    even = layer_steps(graph, device, config)
    uneven = layer_steps(moe_graph(moe_imbalance=2.0), device, config)
    block = next(i for i, layer in enumerate(graph.layers) if layer.attrs.get("num_experts"))
    extra = pass_time_s(routed_ops(graph.layers[block], 2, 2), device, "bf16", 1)
    assert uneven[block].fwd_s - even[block].fwd_s == pytest.approx(extra)


def test_expert_parallel_rank_runs_fewer_taller_expert_gemms(graph) -> None:
    # 8 experts over ep 4: a rank's grouped GEMMs are 2 experts x 4 ranks' token copies
    # (256 x 4 = 1024 rows), the same FLOPs; the other products are untouched
    block = next(layer for layer in graph.layers if layer.attrs.get("num_experts"))
    ops = expert_parallel_ops(block, block.fwd_ops, 4)
    grouped = [mm for mm in ops.mm_shapes if mm[0] == 2.0]
    assert sorted(grouped) == [
        (2.0, 1024.0, 512.0, 1792.0, 1, 1),
        (2.0, 1024.0, 3584.0, 512.0, 1, 1),
    ]
    assert [mm for mm in ops.mm_shapes if mm[0] == 1.0] == [
        mm for mm in block.fwd_ops.mm_shapes if mm[0] == 1.0
    ]
    flops = sum(g * m * n * k for g, m, n, k, _, _ in ops.mm_shapes)
    assert flops == sum(g * m * n * k for g, m, n, k, _, _ in block.fwd_ops.mm_shapes)
    wgrad = [mm for mm in expert_parallel_ops(block, block.bwd_ops, 4).mm_shapes if mm[4] == 3]
    assert (2.0, 512.0, 3584.0, 1024.0, 3, 1) in wgrad  # the tokens are the reduction k
