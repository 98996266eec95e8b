"""The host of a node: host-link bandwidths from the reference table, the host-CPU Adam model's
constants from their measurement, presets and file parsing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from simplan.device_fit import read_reference_csv
from simplan.errors import SimplanError
from simplan.topology import load_cluster
from simplan.topology.cluster_spec import load_spec, preset_names
from simplan.topology.host import (
    ADAM_BYTES_PER_PARAM,
    ADAM_COPY_BPS,
    ADAM_PARAMS_PER_CORE_S,
    HOST_LINKS,
    REFERENCE_ROWS,
)
from simplan.units import GB, GiB

ROOT = Path(__file__).resolve().parents[2]


def test_host_link_bandwidths_are_the_reference_table_s():
    rows = {r["device"]: r for r in read_reference_csv("device_specs.csv")}
    for link, (device, column) in REFERENCE_ROWS.items():
        cell = rows[device][column]
        if column == "notes":
            cell = re.search(r"NVLink-C2C CPU-GPU ~(\d+)GBps", cell).group(1)
        assert HOST_LINKS[link] == float(cell) * GB


def test_adam_constants_are_the_stored_measurement():
    record = json.loads((ROOT / "traces/offload/cpu-adam.json").read_text())
    one = next(r for r in record["median"] if r["threads"] == 1)
    assert pytest.approx(one["adam_params_per_s"], rel=1e-3) == ADAM_PARAMS_PER_CORE_S
    assert pytest.approx(one["copy_Bps"], rel=1e-3) == ADAM_COPY_BPS
    assert record["environment"]["torch_version"]


def test_every_gpu_preset_describes_its_host():
    for name in preset_names():
        for group in load_spec(name).groups:
            assert (group.host is None) == (group.device.kind == "cpu"), name


def test_adam_rate_is_the_lesser_roofline_and_shared_by_the_node_s_devices():
    host = load_spec("dgx-a100").groups[0].host
    one, eight = host.adam_params_per_s(1, "bf16"), host.adam_params_per_s(8, "bf16")
    assert one == pytest.approx(8 * eight)
    cores = host.cores * ADAM_PARAMS_PER_CORE_S
    bandwidth = host.memory_bandwidth_Bps * (ADAM_PARAMS_PER_CORE_S * 28 / ADAM_COPY_BPS)
    assert one == pytest.approx(min(cores, bandwidth / ADAM_BYTES_PER_PARAM["bf16"]))


def test_a_shared_host_link_is_shared_only_by_the_devices_kept():
    full = load_cluster("dgx-a100").node_group(0).host
    assert full.device_link_Bps() == pytest.approx(31 * GB / 2)
    single = load_cluster("dgx-a100", gpus_per_node=1).node_group(0).host
    assert single.device_link_Bps() == pytest.approx(31 * GB)


def test_a_host_table_in_a_file_is_parsed_and_checked():
    spec = {
        "node_group": [
            {
                "device": "h100-sxm",
                "devices_per_node": 4,
                "fabric": {"kind": "nvswitch", "bandwidth_GBps": 450},
                "host": {"memory_gib": 480, "cores": 72, "memory_bandwidth_GBps": 512,
                         "link": "nvlink-c2c"},
            }
        ]
    }  # fmt: skip
    host = load_spec(spec).groups[0].host
    assert host.memory_bytes == 480 * GiB and host.link_bandwidth_Bps == 450 * GB
    spec["node_group"][0]["host"]["link"] = "pcie-gen9"
    with pytest.raises(SimplanError, match="link"):
        load_spec(spec)
