"""CPU offload of the optimizer in the simulator: device memory, host memory, the transfers on
the host link and the host's Adam step, checked against hand formulas (simplan.sim.offload)."""

from __future__ import annotations

import pytest

from simplan.errors import SimplanError
from simplan.parallel import ParallelConfig
from simplan.sim.run import simulate
from simplan.sources import load_model
from simplan.topology import load_cluster
from simplan.units import GB

GRAPH = load_model("gpt3-125m", seq_len=512, dtype="bf16")


def _run(cluster, **knobs):
    config = ParallelConfig(micro_batch=2, global_batch=4 * knobs.get("dp", 1), **knobs)
    return simulate(GRAPH, cluster, config)


def _events(result, prefix):
    return [e for e in result.events if e[3] == "offload" and e[2].startswith(prefix)]


def test_device_memory_drops_by_exactly_the_optimizer_part_and_the_host_holds_16_bytes():
    cluster = load_cluster("dgx-a100", gpus_per_node=1)
    base, off = _run(cluster), _run(cluster, offload="optimizer")
    b, o = base.devices[0], off.devices[0]
    assert o.memory["optimizer"] == 0.0
    assert b.peak_memory_bytes - o.peak_memory_bytes == pytest.approx(b.memory["optimizer"])
    params = b.memory["optimizer"] / 12  # fp32 master weights and two moments
    stage = off.offload["stages"][0]
    assert stage["device_bytes_saved"] == pytest.approx(b.memory["optimizer"])
    assert stage["host_bytes"] == pytest.approx(16 * params)  # ZeRO-Offload's count
    assert off.offload["host_bytes_per_node"] == pytest.approx(16 * params)


def test_the_trace_shows_gradients_to_the_host_and_parameters_back_at_the_link_s_rate():
    cluster = load_cluster("dgx-a100", gpus_per_node=1)  # one device: the whole Gen4 x16 link
    off = _run(cluster, offload="optimizer")
    params = off.offload["stages"][0]["host_bytes"] / 16
    link = 31 * GB
    d2h = sum(e[5] - e[4] for e in _events(off, "grad D2H"))
    h2d = sum(e[5] - e[4] for e in _events(off, "params H2D"))
    assert d2h == pytest.approx(params * 2 / link)  # bf16 gradients
    assert h2d == pytest.approx(params * 2 / link)  # bf16 parameters
    assert all(e[1] == "host" for e in _events(off, ""))
    optimizer = next(e for e in off.events if e[3] == "optimizer")
    assert optimizer[2] == "optimizer (host CPU)"
    first_h2d = min(e[4] for e in _events(off, "params H2D"))
    assert first_h2d >= optimizer[5]  # parameters come back after the host's step


def test_the_host_step_is_the_host_cpu_model_s_and_the_step_pays_it_and_the_way_back():
    cluster = load_cluster("dgx-a100", gpus_per_node=1)
    base, off = _run(cluster), _run(cluster, offload="optimizer")
    host = cluster.node_group(0).host
    params = off.offload["stages"][0]["host_bytes"] / 16
    assert off.devices[0].optimizer_s == pytest.approx(params / host.adam_params_per_s(1, "bf16"))
    stage = off.offload["stages"][0]
    least = base.step_time_s - base.devices[0].optimizer_s + off.devices[0].optimizer_s
    assert off.step_time_s >= least + stage["h2d_s"] - 1e-12


def test_zero_shards_what_goes_to_the_host_over_data_parallel_ranks():
    cluster = load_cluster("dgx-h100", gpus_per_node=2)
    one = _run(load_cluster("dgx-h100", gpus_per_node=1), offload="optimizer")
    for zero in (1, 2, 3):
        two = _run(cluster, dp=2, zero=zero, offload="optimizer")
        a, b = one.offload["stages"][0], two.offload["stages"][0]
        assert b["host_bytes"] == pytest.approx(a["host_bytes"] / 2)
        assert b["d2h_bytes"] == pytest.approx(a["d2h_bytes"] / 2)
        assert _events(two, "grad D2H"), zero
        assert two.offload["host_bytes_per_node"] == pytest.approx(a["host_bytes"])


def test_every_zero_stage_of_one_rank_sends_its_gradients_to_the_host():
    cluster = load_cluster("dgx-h100", gpus_per_node=1)
    for zero in (0, 1, 2, 3):
        result = _run(cluster, zero=zero, offload="optimizer")
        assert _events(result, "grad D2H"), zero


def test_more_host_link_bandwidth_never_makes_the_step_slower():
    times = []
    for gbps in (8, 32, 128):
        raw = {
            "node_group": [
                {
                    "device": "h100-sxm",
                    "fabric": {"kind": "nvswitch", "bandwidth_GBps": 450},
                    "host": {"memory_gib": 256, "cores": 32, "memory_bandwidth_GBps": 300,
                             "link": "pcie-gen5", "link_bandwidth_GBps": gbps},
                }
            ]
        }  # fmt: skip
        times.append(_run(load_cluster(raw), offload="optimizer").step_time_s)
    assert times[0] > times[1] > times[2]


def test_a_host_too_small_is_one_line():
    graph = load_model("gpt3-13b", dtype="bf16")
    config = ParallelConfig(micro_batch=1, global_batch=1, recompute="full", offload="optimizer")
    with pytest.raises(SimplanError, match=r"host memory on node 0 of h200-1gpu.*GiB") as err:
        simulate(graph, load_cluster("h200-1gpu"), config)
    assert "\n" not in str(err.value)


def test_offload_is_refused_on_cpu_devices_and_on_hosts_not_described():
    with pytest.raises(SimplanError, match="needs GPU devices"):
        _run(load_cluster("localhost-cpu", gpus_per_node=1), offload="optimizer")
    raw = {"node_group": [{"device": "h100-sxm", "fabric": {"kind": "nvswitch",
                                                           "bandwidth_GBps": 450}}]}  # fmt: skip
    with pytest.raises(SimplanError, match="add host ="):
        _run(load_cluster(raw), offload="optimizer")


def test_nvlink_c2c_moves_the_same_bytes_faster_than_pcie():
    """examples/clusters/gh200.toml: the same GPU behind Grace's NVLink-C2C (450 GB/s) and
    behind PCIe Gen5 (63 GB/s): the same traffic, in the ratio of the links' bandwidths."""
    from pathlib import Path

    from simplan.io import read_toml

    path = Path(__file__).resolve().parents[2] / "examples/clusters/gh200.toml"
    c2c = _run(load_cluster(str(path)), offload="optimizer")
    raw = read_toml(path)
    raw["node_group"][0]["host"]["link"] = "pcie-gen5"
    pcie = _run(load_cluster(raw), offload="optimizer")
    a, b = c2c.offload["stages"][0], pcie.offload["stages"][0]
    assert a["h2d_bytes"] == b["h2d_bytes"] and a["d2h_bytes"] == b["d2h_bytes"]
    assert b["h2d_s"] / a["h2d_s"] == pytest.approx(450 / 63)
    assert c2c.step_time_s < pcie.step_time_s
