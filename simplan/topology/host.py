"""The host of a node: its memory, its CPU and the link between each device and it.

What CPU offload of the optimizer (ZeRO-Offload style) needs from the topology: host memory to
hold the optimizer states, fp32 master weights and gradients; the device<->host link the
gradients and the updated parameters cross every step; and the host CPU that runs the Adam step.

Host links (per device, per direction, x16), from simplan/data/reference/device_specs.csv:
PCIe Gen4 31 GB/s (its A100 PCIe row), PCIe Gen5 63 GB/s (its H100 PCIe row), NVLink-C2C
450 GB/s (its GB200 row's note: "NVLink-C2C CPU-GPU ~450GBps unidirectional"). Devices behind
one PCIe switch share its uplink to the host (`devices_per_link`).

The host CPU's Adam step is a roofline with two constants: parameters per second per core,
measured for torch.optim.Adam (foreach, fp32) on one thread of this project's CPU
(traces/offload/cpu-adam.json, benchmarks/cpu_adam.py), and host memory bandwidth times the share
of it Adam reaches (the same record: Adam's bytes per second over `copy_`'s). That a server core
updates as fast as the measured one, and that Adam reaches the same share of a server's memory
bandwidth as of this machine's, are assumptions; a node's devices step at once and share its
cores and memory bandwidth evenly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from simplan.costmodel import ADAM_BYTES_PER_PARAM
from simplan.schema import Float, Int, Str, Table
from simplan.units import GB, GiB

HOST_LINKS = {"pcie-gen4": 31.0 * GB, "pcie-gen5": 63.0 * GB, "nvlink-c2c": 450.0 * GB}
HOST_LINK_SOURCE = "simplan/data/reference/device_specs.csv"
REFERENCE_ROWS = {  # the row (device, column) each host-link bandwidth is read from
    "pcie-gen4": ("NVIDIA A100 PCIe 80GB", "scaleup_bw_unidir_GBps_per_gpu"),
    "pcie-gen5": ("NVIDIA H100 PCIe", "scaleup_bw_unidir_GBps_per_gpu"),
    "nvlink-c2c": ("NVIDIA GB200 (per GPU)", "notes"),
}
# torch.optim.Adam (foreach, fp32) on one thread over 50M parameters in 50 tensors, and the
# copy_ rate beside it: the medians of 5 rounds of 7 steps in traces/offload/cpu-adam.json
ADAM_PARAMS_PER_CORE_S = 241.1e6
ADAM_COPY_BPS = 8.96e9
ADAM_SOURCE = "traces/offload/cpu-adam.json (benchmarks/cpu_adam.py, 1 thread, median of 5)"
ADAM_BANDWIDTH_SHARE = ADAM_PARAMS_PER_CORE_S * ADAM_BYTES_PER_PARAM["fp32"] / ADAM_COPY_BPS

HOST_TABLE = Table(
    {
        "memory_gib": Float(min=0.0, min_open=True, max=1e6),
        "cores": Int(min=1, max=1_000_000),
        "memory_bandwidth_GBps": Float(min=0.0, min_open=True, max=1e6),
        "link": Str(choices=tuple(HOST_LINKS)),
        "link_bandwidth_GBps": Float(min=0.0, min_open=True, max=1e6),
        "devices_per_link": Int(min=1, max=1_024),
        "source": Str(),
    },
    required=("memory_gib", "cores", "memory_bandwidth_GBps", "link"),
    fix="see docs/cluster-spec.md",
)


@dataclass(frozen=True, kw_only=True)
class HostSpec:
    """One node's host. link_bandwidth_Bps: one device<->host link, per direction;
    devices_per_link: devices sharing it (behind one PCIe switch); source: where the numbers
    come from."""

    memory_bytes: float
    cores: int
    memory_bandwidth_Bps: float
    link: str
    link_bandwidth_Bps: float
    devices_per_link: int = 1
    source: str = ""

    def __post_init__(self) -> None:
        if self.link not in HOST_LINKS:
            raise ValueError(f"host.link must be one of {', '.join(HOST_LINKS)}, not {self.link!r}")
        for name in ("memory_bytes", "memory_bandwidth_Bps", "link_bandwidth_Bps"):
            if not 0 < getattr(self, name) < math.inf:
                raise ValueError(f"host.{name} must be a finite number > 0")
        if self.cores < 1 or self.devices_per_link < 1:
            raise ValueError("host.cores and host.devices_per_link must be >= 1")

    def device_link_Bps(self) -> float:
        """One device's share of its host link when every device transfers at once."""
        return self.link_bandwidth_Bps / self.devices_per_link

    def adam_params_per_s(self, devices: int, dtype: str) -> float:
        """Parameters one of `devices` devices' Adam steps updates per second on this host
        while all of them step at once: the lesser of its cores' rate and its memory
        bandwidth's."""
        cores = self.cores / devices * ADAM_PARAMS_PER_CORE_S
        bandwidth = self.memory_bandwidth_Bps / devices * ADAM_BANDWIDTH_SHARE
        return min(cores, bandwidth / ADAM_BYTES_PER_PARAM.get(dtype, 28.0))


def parse_host(raw: dict[str, Any]) -> HostSpec:
    """A host table already checked by HOST_TABLE."""
    link = str(raw["link"])
    bandwidth = raw.get("link_bandwidth_GBps")
    return HostSpec(
        memory_bytes=float(raw["memory_gib"]) * GiB,
        cores=int(raw["cores"]),
        memory_bandwidth_Bps=float(raw["memory_bandwidth_GBps"]) * GB,
        link=link,
        link_bandwidth_Bps=HOST_LINKS[link] if bandwidth is None else float(bandwidth) * GB,
        devices_per_link=int(raw.get("devices_per_link", 1)),
        source=str(raw.get("source", "")),
    )
