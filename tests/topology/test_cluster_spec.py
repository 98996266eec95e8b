from __future__ import annotations

import pytest

from simplan.errors import SimplanError
from simplan.topology import load_cluster, preset_names
from simplan.topology.cluster_spec import load_spec

GPU_PRESETS = ["dgx-a100", "dgx-h100", "h200", "h200-1gpu", "dgx-b200", "gb200-nvl72"]
GPU_PRESETS += ["pcie-a100", "mixed-a100-h100", "eth25-a100"]


def test_presets_are_listed() -> None:
    assert set(preset_names()) == {*GPU_PRESETS, "localhost-cpu"}


@pytest.mark.parametrize("name", GPU_PRESETS)
def test_presets_load(name: str) -> None:
    cluster = load_cluster(name)
    assert cluster.num_devices == sum(g.count * g.devices_per_node for g in cluster.spec.groups)
    assert [d.index for d in cluster.devices] == list(range(cluster.num_devices))


def test_dgx_a100_shape() -> None:
    cluster = load_cluster("dgx-a100", nodes=4)
    assert (cluster.nodes, cluster.gpus_per_node, cluster.num_devices) == (4, 8, 32)
    d = cluster.device(11)
    assert (d.name, d.node, d.local, d.rail) == ("n1.g3", 1, 3, 3)
    assert cluster.device("n1.g3") is d
    assert cluster.device_model(11).name == "a100-80gb"


def test_gpus_per_node_narrows_devices_and_nics() -> None:
    cluster = load_cluster("dgx-h100", nodes=2, gpus_per_node=2)
    assert cluster.num_devices == 4
    assert cluster.spec.groups[0].nics.count == 2
    with pytest.raises(SimplanError, match="gpus-per-node 9"):
        load_cluster("dgx-h100", gpus_per_node=9)


def test_mixed_cluster_is_heterogeneous_and_scales() -> None:
    cluster = load_cluster("mixed-a100-h100")
    assert [cluster.device_model(i).name for i in (0, 8)] == ["a100-80gb", "h100-sxm"]
    scaled = load_spec("mixed-a100-h100", nodes=5)
    assert [g.count for g in scaled.groups] == [3, 2]


def test_dict_spec_with_inline_device() -> None:
    cluster = load_cluster(
        {
            "name": "tiny",
            "node_group": [
                {
                    "count": 2,
                    "devices_per_node": 4,
                    "device": {"peak_tflops": 100, "memory_gib": 24, "memory_bandwidth_gbps": 900},
                    "fabric": {"kind": "nvlink-mesh", "bandwidth_GBps": 50},
                    "nics": {"count": 1, "bandwidth_Gbps": 100},
                }
            ],
        }
    )
    assert cluster.num_devices == 8
    assert cluster.device_model(0).memory_bandwidth_Bps == pytest.approx(900e9)
    assert cluster.path(0, 1) == ("n0.g0", "n0.g1")  # direct NVLink in a mesh


def test_unknown_preset_and_field() -> None:
    with pytest.raises(SimplanError, match="unknown cluster 'dgx-z'"):
        load_cluster("dgx-z")
    with pytest.raises(SimplanError, match=r"unknown field network\.color"):
        load_cluster({"node_group": [{"device": "h200"}], "network": {"color": "red"}})


def test_eth25_a100_is_the_slow_network_preset() -> None:
    """One 25 Gb/s Ethernet NIC per node: a quarter of pcie-a100's 100 Gb/s NIC between nodes,
    NVSwitch inside a node."""
    slow, fast = load_cluster("eth25-a100", nodes=2), load_cluster("pcie-a100", nodes=2)
    assert slow.bottleneck_bandwidth(0, 8) == pytest.approx(fast.bottleneck_bandwidth(0, 8) / 4)
    assert slow.bottleneck_bandwidth(0, 1) > 20 * slow.bottleneck_bandwidth(0, 8)


def test_h200_is_an_hgx_node_and_nvl72_one_nvlink_domain() -> None:
    """`h200` is the 8-GPU HGX node (NVLink 4 at 450 GB/s, device_specs.csv); one GPU alone is
    `h200-1gpu`; the GB200 NVL72 rack holds 72 GPUs in one NVLink domain at 900 GB/s."""
    hgx, one = load_cluster("h200"), load_cluster("h200-1gpu")
    assert (hgx.gpus_per_node, one.gpus_per_node) == (8, 1)
    rack = load_cluster("gb200-nvl72")
    assert rack.num_devices == 72 and rack.nodes == 1
    # NVLink 5 carries twice NVLink 4 (same link efficiency), between any two of the 72 GPUs
    assert rack.bottleneck_bandwidth(0, 71) == pytest.approx(2 * hgx.bottleneck_bandwidth(0, 7))
