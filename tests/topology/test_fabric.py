from __future__ import annotations

import time

import pytest

from simplan.errors import SimplanError
from simplan.topology import load_cluster


def test_paths_inside_and_across_nodes() -> None:
    cluster = load_cluster("dgx-a100", nodes=2)
    assert cluster.path(0, 3) == ("n0.g0", "n0.nvswitch", "n0.g3")
    # across nodes: out through the source's rail NIC, in through the same rail
    assert cluster.path(3, 11) == ("n0.g3", "n0.nic3", "rail3", "n1.nic3", "n1.g3")
    assert cluster.transfer_links(3, 11)[0] == "n0.g3>n0.nic3"
    assert cluster.bottleneck_bandwidth(0, 3) > cluster.bottleneck_bandwidth(3, 11)


def test_link_lookup_and_bandwidths() -> None:
    cluster = load_cluster("dgx-a100", nodes=2)
    nv = cluster.link("n0.g0>n0.nvswitch")
    assert nv is cluster.link("n0.g0--n0.nvswitch")
    assert (nv.kind, nv.bandwidth_Bps) == ("nvlink", 300e9)
    assert cluster.link("n0.nic0>rail0").bandwidth_Bps == pytest.approx(25e9)
    with pytest.raises(SimplanError, match="no link"):
        cluster.link("n0.g0--n9.g9")


def test_groups_node_and_rail() -> None:
    cluster = load_cluster("dgx-a100", nodes=4)
    assert cluster.node_devices(1) == tuple(range(8, 16))
    assert cluster.rail_devices(0) == (0, 8, 16, 24)


def test_extra_link_changes_paths_on_its_node_only() -> None:
    spec = {
        "name": "bridged",
        "node_group": [
            {
                "count": 2,
                "devices_per_node": 4,
                "device": "a100-80gb",
                "fabric": {"kind": "pcie-switch", "bandwidth_GBps": 32, "devices_per_switch": 2},
                "nics": {"count": 1, "bandwidth_Gbps": 100},
            }
        ],
        "link": [{"a": "n1.g1", "b": "n1.g2", "kind": "nvlink", "bandwidth_GBps": 100}],
    }
    cluster = load_cluster(spec)
    assert cluster.path(5, 6) == ("n1.g1", "n1.g2")
    assert cluster.path(1, 2) == ("n0.g1", "n0.pcie0", "n0.host", "n0.pcie1", "n0.g2")


def test_pcie_tree_paths_share_the_uplink() -> None:
    cluster = load_cluster("pcie-a100")
    assert cluster.path(0, 1) == ("n0.g0", "n0.pcie0", "n0.g1")
    assert "n0.host" in cluster.path(0, 2)


def test_1024_gpu_graph_builds_fast() -> None:
    t0 = time.perf_counter()
    cluster = load_cluster("dgx-a100", nodes=128)
    groups = [tuple(range(8 * n, 8 * n + 8)) for n in range(128)]
    for g in groups:
        cluster.collective_time("all_reduce", 2**26, g)
    for rail in range(8):
        cluster.collective_time("all_reduce", 2**26, cluster.rail_devices(rail))
    elapsed = time.perf_counter() - t0
    assert cluster.num_devices == 1024
    assert cluster.graph.number_of_nodes() > 2000
    assert elapsed < 5.0
