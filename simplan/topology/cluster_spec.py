"""Cluster specs: TOML (or a dict, or a preset name) → validated, frozen spec values.

The schema is documented in docs/cluster-spec.md. Units at the file boundary are the ones people
read on datasheets (GB/s for device fabrics, Gb/s for NICs, µs for latencies); inside simplan
everything is SI (bytes/s, seconds).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simplan.devices import STACKS, DeviceModel, get_device, with_stack
from simplan.errors import SimplanError
from simplan.io import read_toml
from simplan.limits import (
    MAX_BANDWIDTH_GBPS,
    MAX_DEVICES,
    MAX_DEVICES_PER_NODE,
    MAX_LATENCY_US,
    MAX_NODES,
)
from simplan.schema import Either, Float, Int, ListOf, Str, Table, validate
from simplan.topology.host import HOST_TABLE, HostSpec, parse_host
from simplan.units import GB, GBIT_PER_S_IN_BPS, GiB

PRESET_DIR = Path(__file__).parent / "presets"
FABRIC_KINDS = ("nvswitch", "nvlink-mesh", "pcie-switch", "loopback")
NETWORK_KINDS = ("none", "single-switch", "leaf-spine", "rail-optimized")


@dataclass(frozen=True, kw_only=True)
class FabricSpec:
    """Intra-node fabric. bandwidth_Bps: per device per direction (nvswitch: device↔switch;
    nvlink-mesh: each device↔device link; pcie-switch: device↔switch; loopback: per process)."""

    kind: str
    bandwidth_Bps: float
    latency_s: float | None = None  # None: the calibrated step latency of this link kind
    devices_per_switch: int = 2  # pcie-switch only
    uplink_bandwidth_Bps: float | None = None  # pcie-switch only: switch↔host root

    def __post_init__(self) -> None:
        if self.kind not in FABRIC_KINDS:
            raise ValueError(
                f"fabric.kind must be one of {', '.join(FABRIC_KINDS)}, not {self.kind!r}"
            )
        _positive("fabric.bandwidth", self.bandwidth_Bps)
        _latency_ok("fabric.latency_us", self.latency_s)
        if self.devices_per_switch < 1:
            raise ValueError("fabric.devices_per_switch must be >= 1")
        if self.uplink_bandwidth_Bps is not None:
            _positive("fabric.uplink_bandwidth", self.uplink_bandwidth_Bps)


@dataclass(frozen=True, kw_only=True)
class NicSpec:
    """NICs per node; NIC k serves devices k*D/count .. (k+1)*D/count-1 (its rail)."""

    count: int
    bandwidth_Bps: float
    latency_s: float | None = None

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError("nics.count must be >= 0")
        _positive("nics.bandwidth", self.bandwidth_Bps)
        _latency_ok("nics.latency_us", self.latency_s)


@dataclass(frozen=True, kw_only=True)
class NodeGroupSpec:
    name: str
    count: int
    devices_per_node: int
    device: DeviceModel
    fabric: FabricSpec
    nics: NicSpec
    host: HostSpec | None = None  # None: not described (CPU offload is refused)

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"node_group {self.name!r}: count must be >= 1")
        if self.devices_per_node < 1:
            raise ValueError(f"node_group {self.name!r}: devices_per_node must be >= 1")


@dataclass(frozen=True, kw_only=True)
class NetworkSpec:
    """Inter-node network. leaf-spine: nodes_per_leaf nodes under a leaf, `spines` spines,
    uplinks sized (downlink bandwidth / oversubscription). rail-optimized: NIC k of every node on
    rail switch k, rail switches joined by `spines` spines (same oversubscription rule)."""

    kind: str = "single-switch"
    oversubscription: float = 1.0
    nodes_per_leaf: int = 16
    spines: int = 1
    latency_s: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in NETWORK_KINDS:
            raise ValueError(
                f"network.kind must be one of {', '.join(NETWORK_KINDS)}, not {self.kind!r}"
            )
        if not 1 <= self.oversubscription < math.inf:
            raise ValueError(
                "network.oversubscription must be a finite number >= 1 (1 = non-blocking)"
            )
        _latency_ok("network.latency_us", self.latency_s)
        if self.nodes_per_leaf < 1 or self.spines < 1:
            raise ValueError("network.nodes_per_leaf and network.spines must be >= 1")


@dataclass(frozen=True, kw_only=True)
class LinkSpec:
    """An extra link between two vertices of one node (e.g. an NVLink bridge between two PCIe
    GPUs: a = "n0.g0", b = "n0.g1") or between two network switches."""

    a: str
    b: str
    kind: str
    bandwidth_Bps: float
    latency_s: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("nvlink", "pcie", "network", "loopback"):
            raise ValueError(
                f"link {self.a}--{self.b}: kind must be nvlink, pcie, network or "
                f"loopback, not {self.kind!r}"
            )
        _positive(f"link {self.a}--{self.b}: bandwidth", self.bandwidth_Bps)
        _latency_ok(f"link {self.a}--{self.b}: latency_us", self.latency_s)
        if self.a == self.b:
            raise ValueError(f"link {self.a}--{self.b}: a link needs two different ends")


@dataclass(frozen=True, kw_only=True)
class ClusterSpec:
    name: str
    description: str
    groups: tuple[NodeGroupSpec, ...]
    network: NetworkSpec
    links: tuple[LinkSpec, ...] = ()
    calibration: str | None = None  # path of a bench-comm calibration JSON
    stack: str = "fitted"  # the training stack the devices' rates describe (devices.STACKS)

    def __post_init__(self) -> None:
        if not self.groups:
            raise ValueError("a cluster needs at least one [[node_group]]")
        nodes = sum(g.count for g in self.groups)
        devices = sum(g.count * g.devices_per_node for g in self.groups)
        if nodes > MAX_NODES or devices > MAX_DEVICES:
            raise ValueError(
                f"{nodes:,} nodes with {devices:,} devices is beyond any real cluster (limit "
                f"{MAX_NODES:,} nodes and {MAX_DEVICES:,} devices); use fewer nodes"
            )
        if nodes > 1 and self.network.kind == "none":
            raise ValueError(
                f"network.kind = 'none' leaves the {nodes} nodes disconnected: "
                "choose single-switch, leaf-spine or rail-optimized"
            )
        if nodes > 1 and any(g.nics.count == 0 for g in self.groups):
            raise ValueError(
                "nics.count = 0 on a multi-node cluster leaves the graph "
                "disconnected: give every node group at least one NIC"
            )

    @property
    def num_nodes(self) -> int:
        return sum(g.count for g in self.groups)


def _positive(field_name: str, value: float) -> None:
    if not 0 < value < math.inf:
        raise ValueError(f"{field_name} must be a finite number > 0, not {value}")


def _latency_ok(field_name: str, value: float | None) -> None:
    if value is not None and not 0 <= value < math.inf:
        raise ValueError(f"{field_name} must be a finite number >= 0")


# ---------------------------------------------------------------- parsing


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_spec(
    spec: str | Path | dict[str, Any] | ClusterSpec,
    nodes: int | None = None,
    gpus_per_node: int | None = None,
    stack: str | None = None,
) -> ClusterSpec:
    """A ClusterSpec from a preset name, a TOML path, a dict or a spec; then scale it and, where
    `stack` is given, put its devices under that training stack (devices.STACKS)."""
    if isinstance(spec, ClusterSpec):
        base = spec
    else:
        data, origin = _raw(spec)
        base = parse_spec(data, origin=origin)
    scaled = scale_spec(base, nodes=nodes, gpus_per_node=gpus_per_node)
    return restack(scaled, stack) if stack else scaled


def _raw(spec: str | Path | dict[str, Any]) -> tuple[dict[str, Any], str]:
    if isinstance(spec, dict):
        return spec, "cluster spec"
    text = str(spec)
    if text in preset_names():
        return read_toml(PRESET_DIR / f"{text}.toml"), f"preset {text}"
    path = Path(text)
    if path.suffix == ".toml" or path.exists():
        return read_toml(path), str(path)
    raise SimplanError(
        f"unknown cluster {text!r}: use a preset ({', '.join(preset_names())}) "
        "or the path of a .toml file"
    )


_BANDWIDTH = Float(min=0.0, min_open=True, max=MAX_BANDWIDTH_GBPS)
_BANDWIDTH_BITS = Float(min=0.0, min_open=True, max=8 * MAX_BANDWIDTH_GBPS)
_LATENCY = Float(min=0.0, max=MAX_LATENCY_US)
_LINK_FIELDS = {
    "bandwidth_GBps": _BANDWIDTH,
    "bandwidth_Gbps": _BANDWIDTH_BITS,
    "latency_us": _LATENCY,
}
DEVICE_TABLE = Table(
    {
        "name": Str(nonempty=True),
        "kind": Str(choices=("gpu", "cpu")),
        "peak_tflops": Float(min=0.0, min_open=True, max=1e6),
        "peak_fp8_tflops": Float(min=0.0, max=1e6),
        "memory_gib": Float(min=0.0, min_open=True, max=1e6),
        "memory_bandwidth_gbps": Float(min=0.0, min_open=True, max=1e7),
    },
    required=("peak_tflops", "memory_gib", "memory_bandwidth_gbps"),
    fix="see docs/cluster-spec.md",
)
CLUSTER_FILE = Table(
    {
        "name": Str(nonempty=True),
        "description": Str(),
        "calibration": Str(nonempty=True),
        "stack": Str(choices=STACKS),
        "node_group": ListOf(
            Table(
                {
                    "name": Str(nonempty=True),
                    "count": Int(min=1, max=MAX_NODES),
                    "devices_per_node": Int(min=1, max=MAX_DEVICES_PER_NODE),
                    "device": Either((Str(nonempty=True), DEVICE_TABLE)),
                    "fabric": Table(
                        {
                            "kind": Str(choices=FABRIC_KINDS),
                            **_LINK_FIELDS,
                            "devices_per_switch": Int(min=1, max=MAX_DEVICES_PER_NODE),
                            "uplink_bandwidth_GBps": _BANDWIDTH,
                        }
                    ),
                    "nics": Table({"count": Int(min=0, max=MAX_DEVICES_PER_NODE), **_LINK_FIELDS}),
                    "host": HOST_TABLE,
                },
                required=("device",),
                fix="see docs/cluster-spec.md",
            ),
            min_len=1,
            max_len=1_024,
        ),
        "network": Table(
            {
                "kind": Str(choices=NETWORK_KINDS),
                "oversubscription": Float(min=1.0, max=1e3),
                "nodes_per_leaf": Int(min=1, max=MAX_NODES),
                "spines": Int(min=1, max=MAX_NODES),
                "latency_us": _LATENCY,
            }
        ),
        "link": ListOf(
            Table(
                {"a": Str(nonempty=True), "b": Str(nonempty=True), "kind": Str(), **_LINK_FIELDS},
                required=("a", "b"),
                fix="see docs/cluster-spec.md",
            ),
            max_len=MAX_DEVICES,
        ),
    },
    required=("node_group",),
    fix="add at least one [[node_group]] (see docs/cluster-spec.md)",
)


def parse_spec(data: dict[str, Any], origin: str = "cluster spec") -> ClusterSpec:
    """Validate a raw dict; any problem becomes a one-line SimplanError naming the field."""
    data = validate(data, CLUSTER_FILE, origin=origin)
    try:
        spec = ClusterSpec(
            name=str(data.get("name", origin)),
            description=str(data.get("description", "")),
            groups=tuple(_group(g, i) for i, g in enumerate(data["node_group"])),
            network=_network(data.get("network", {})),
            links=tuple(_link(x, i) for i, x in enumerate(data.get("link", []))),
            calibration=data.get("calibration"),
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise SimplanError(f"{origin}: {exc}") from None
    return restack(spec, data.get("stack", "fitted"))


def restack(spec: ClusterSpec, stack: str) -> ClusterSpec:
    """The spec with its devices under `stack` (devices.STACKS): "kernels" takes each GPU's
    matrix kernels at its measured rate and no operation under its launch time."""
    if stack == spec.stack:
        return spec
    if spec.stack != "fitted":
        raise SimplanError(
            f"cluster {spec.name} sets stack = {spec.stack!r}; its fitted rates are not kept: "
            f"drop the stack line from the cluster file to use {stack!r}"
        )
    groups = tuple(dataclasses.replace(g, device=with_stack(g.device, stack)) for g in spec.groups)
    return dataclasses.replace(spec, groups=groups, stack=stack)


def _number(table: dict[str, Any], key: str, default: float) -> float:
    """A field already checked by CLUSTER_FILE, or its default."""
    return float(table.get(key, default))


def _bandwidth(table: dict[str, Any], where: str) -> float:
    """bandwidth_GBps (bytes) or bandwidth_Gbps (bits) → bytes/s (one of them is required)."""
    if "bandwidth_GBps" in table and "bandwidth_Gbps" in table:
        raise ValueError(f"{where} gives bandwidth_GBps and bandwidth_Gbps: keep one")
    if "bandwidth_GBps" in table:
        return float(table["bandwidth_GBps"]) * GB
    if "bandwidth_Gbps" in table:
        return float(table["bandwidth_Gbps"]) * GBIT_PER_S_IN_BPS
    raise ValueError(f"{where}.bandwidth_GBps (or bandwidth_Gbps) is missing: add it")


def _latency(table: dict[str, Any]) -> float | None:
    return None if "latency_us" not in table else float(table["latency_us"]) * 1e-6


def _device(value: Any, where: str) -> DeviceModel:
    if isinstance(value, str):
        try:
            return preset_device(value)
        except SimplanError as exc:
            raise ValueError(f"{where}: {exc}") from None
    tflops = float(value["peak_tflops"])
    return DeviceModel(
        name=str(value.get("name", "custom")),
        kind=str(value.get("kind", "gpu")),
        peak_flops={"bf16": tflops * 1e12, "fp16": tflops * 1e12, "fp32": tflops * 1e12},
        memory_bytes=float(value["memory_gib"]) * GiB,
        memory_bandwidth_Bps=float(value["memory_bandwidth_gbps"]) * GB,
        fp8_flops=float(value.get("peak_fp8_tflops", 0.0)) * 1e12,
        sources={"peak_flops": "cluster spec (inline device)"},
    )


def preset_device(name: str) -> DeviceModel:
    try:
        return get_device(name)
    except ImportError:  # the measured local-CPU model is optional
        return DeviceModel(
            name="cpu",
            kind="cpu",
            peak_flops={"fp32": 1e11},
            memory_bytes=8 * GiB,
            memory_bandwidth_Bps=1e10,
            sources={"all": "placeholder: no local CPU measurement available"},
        )


def _group(raw: dict[str, Any], index: int) -> NodeGroupSpec:
    where = f"node_group[{index}]"
    fabric = raw.get("fabric", {"kind": "loopback", "bandwidth_GBps": 10})
    up = fabric.get("uplink_bandwidth_GBps")
    nics = raw.get("nics", {"count": 0, "bandwidth_Gbps": 1})
    return NodeGroupSpec(
        name=str(raw.get("name", f"group{index}")),
        count=int(raw.get("count", 1)),
        devices_per_node=int(raw.get("devices_per_node", 1)),
        device=_device(raw["device"], f"{where}.device"),
        fabric=FabricSpec(
            kind=str(fabric.get("kind", "nvswitch")),
            bandwidth_Bps=_bandwidth(fabric, f"{where}.fabric"),
            latency_s=_latency(fabric),
            devices_per_switch=int(fabric.get("devices_per_switch", 2)),
            uplink_bandwidth_Bps=None if up is None else float(up) * GB,
        ),
        nics=NicSpec(
            count=int(nics.get("count", 0)),
            bandwidth_Bps=_bandwidth(nics, f"{where}.nics"),
            latency_s=_latency(nics),
        ),
        host=parse_host(raw["host"]) if "host" in raw else None,
    )


def _link(raw: dict[str, Any], index: int) -> LinkSpec:
    return LinkSpec(
        a=raw["a"],
        b=raw["b"],
        kind=str(raw.get("kind", "nvlink")),
        bandwidth_Bps=_bandwidth(raw, f"link[{index}]"),
        latency_s=_latency(raw),
    )


def _network(raw: dict[str, Any]) -> NetworkSpec:
    return NetworkSpec(
        kind=str(raw.get("kind", "single-switch")),
        oversubscription=_number(raw, "oversubscription", 1.0),
        nodes_per_leaf=int(raw.get("nodes_per_leaf", 16)),
        spines=int(raw.get("spines", 1)),
        latency_s=_latency(raw),
    )


# ---------------------------------------------------------------- scaling


def scale_spec(
    spec: ClusterSpec, nodes: int | None = None, gpus_per_node: int | None = None
) -> ClusterSpec:
    """`nodes=N` spreads N nodes over the groups in proportion to their counts;
    `gpus_per_node=G` keeps the first G devices of every node (and the NICs that serve them)."""
    groups = list(spec.groups)
    if nodes is not None:
        if nodes < len(groups):
            raise SimplanError(
                f"--nodes {nodes}: {spec.name} has {len(groups)} node groups; "
                f"use at least {len(groups)} nodes"
            )
        groups = [
            dataclasses.replace(g, count=c)
            for g, c in zip(groups, _split(nodes, [g.count for g in groups]), strict=True)
        ]
    if gpus_per_node is not None:
        groups = [_narrow(g, gpus_per_node) for g in groups]
    network = spec.network
    if sum(g.count for g in groups) > 1 and network.kind == "none":
        network = dataclasses.replace(network, kind="single-switch")
    try:
        return dataclasses.replace(spec, groups=tuple(groups), network=network)
    except ValueError as exc:
        raise SimplanError(f"{spec.name}: {exc}") from None


def _split(total: int, weights: list[int]) -> list[int]:
    """Split total into len(weights) parts >= 1, proportional to weights (largest remainder)."""
    extra = total - len(weights)
    wsum = sum(weights)
    parts = [1 + extra * w // wsum for w in weights]
    order = sorted(range(len(weights)), key=lambda i: -(extra * weights[i] % wsum))
    for i in order[: total - sum(parts)]:
        parts[i] += 1
    return parts


def _narrow(group: NodeGroupSpec, gpus: int) -> NodeGroupSpec:
    if not 1 <= gpus <= group.devices_per_node:
        most = group.devices_per_node
        raise SimplanError(
            f"--gpus-per-node {gpus}: node group {group.name!r} has {most} "
            f"devices per node; use 1..{most}"
        )
    nics = group.nics
    if nics.count:
        per_nic = max(1, group.devices_per_node // nics.count)
        nics = dataclasses.replace(nics, count=max(1, -(-gpus // per_nic)))
    host = group.host
    if host is not None:  # the devices left behind a shared host link
        host = dataclasses.replace(host, devices_per_link=min(host.devices_per_link, gpus))
    return dataclasses.replace(group, devices_per_node=gpus, nics=nics, host=host)
