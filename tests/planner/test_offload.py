"""The planner and CPU offload of the optimizer: offload where nothing fits without it, never
where a plan fits without it, and what --explain says about it."""

from __future__ import annotations

import pytest

from simplan.errors import SimplanError
from simplan.planner import SearchOptions, SearchSpace, search
from simplan.planner.explain import explain
from simplan.sources import load_model
from simplan.topology import load_cluster

SPACE = SearchSpace(micro_batches=(1, 2), recompute=("none", "full"), fewer_nodes=0)


@pytest.fixture(scope="module")
def gpt67b():
    return load_model("gpt3-6.7b", dtype="bf16")


@pytest.fixture(scope="module")
def one_a100_search(gpt67b):
    cluster = load_cluster("dgx-a100", gpus_per_node=1)
    return search(gpt67b, cluster, SearchOptions(global_batch=4, space=SPACE, top=2))


def test_a_model_that_does_not_fit_without_offload_is_planned_with_it(gpt67b, one_a100_search):
    # 6.7B parameters x 18 bytes (bf16 weights, fp32 gradients, Adam) = 120 GB > one A100's 80 GB
    cluster = load_cluster("dgx-a100", gpus_per_node=1)
    plain = SearchSpace(
        micro_batches=(1, 2), recompute=("none", "full"), fewer_nodes=0, offload=("none",)
    )
    with pytest.raises(SimplanError, match=r"needs at least .* GiB per device"):
        search(gpt67b, cluster, SearchOptions(global_batch=4, space=plain))
    best = one_a100_search.plans[0]
    assert best.config.offload == "optimizer" and best.fits
    result = best.simulate(record=True)
    assert result.fits_memory
    names = [e[2] for e in result.events if e[3] == "offload"]
    assert any(n.startswith("grad D2H") for n in names)
    assert "params H2D" in names
    stage = result.offload["stages"][0]
    assert stage["d2h_bytes"] == pytest.approx(gpt67b.params * 2)  # bf16 gradients, dp 1
    assert stage["h2d_bytes"] == pytest.approx(gpt67b.params * 2)


def test_explain_says_what_offload_changes(one_a100_search):
    lines = explain(list(one_a100_search.plans), list(one_a100_search.baselines))
    text = "\n".join(lines)
    assert "offload optimizer:" in text and "GiB less device memory per device" in text
    assert "over pcie-gen4" in text and "Adam on the host CPU" in text
    assert "without offload no plan considered fits" in text


def test_a_model_that_fits_is_planned_without_offload():
    graph = load_model("gpt3-125m", seq_len=512, dtype="bf16")
    result = search(
        graph, load_cluster("dgx-a100", gpus_per_node=2),
        SearchOptions(global_batch=8, space=SPACE, top=2),
    )  # fmt: skip
    assert all(p.config.offload == "none" for p in result.plans)
    assert result.infeasible.get("offload: the plan fits without it (offload only adds time)")


def test_a_cluster_without_hosts_is_searched_without_offload():
    graph = load_model("gpt3-125m", seq_len=512, dtype="bf16")
    raw = {"node_group": [{"device": "h100-sxm", "devices_per_node": 2,
                           "fabric": {"kind": "nvswitch", "bandwidth_GBps": 450}}]}  # fmt: skip
    result = search(graph, load_cluster(raw), SearchOptions(global_batch=8, space=SPACE, top=1))
    assert result.plans[0].config.offload == "none"
    assert any(k.startswith("offload: the cluster describes no host") for k in result.infeasible)
