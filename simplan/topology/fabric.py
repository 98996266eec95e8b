"""The cluster as a networkx graph: devices, NICs and switches as vertices, links as edges.

Vertex names: devices "n3.g5" (node 3, local device 5), NICs "n3.nic5", node switches
"n3.nvswitch", "n3.pcie0", the node's host root "n3.host"; network switches "switch",
"leaf0", "spine1", "rail5". A link's id is "u--v" (u < v); a transfer crosses *channels*, one
per direction, with ids "u>v". Links are full duplex: each channel has the link's bandwidth.

Paths are not searched per query: the paths inside a node are computed once per node group on a
representative node and relabelled (every node of a group is identical), and network paths are
NIC → its switch → (cached switch-to-switch path) → switch → NIC.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import networkx as nx

from simplan.devices import DeviceModel
from simplan.errors import SimplanError
from simplan.topology.cluster_spec import ClusterSpec, NodeGroupSpec
from simplan.topology.comm_calibration import CollectiveConstants, LinkCalibration

FABRIC_LINK_CLASS = {
    "nvswitch": "nvlink",
    "nvlink-mesh": "nvlink",
    "pcie-switch": "pcie",
    "loopback": "loopback",
}


@dataclass(frozen=True, kw_only=True)
class Link:
    id: str
    u: str
    v: str
    kind: str  # link class: nvlink, pcie, network, loopback
    bandwidth_Bps: float  # per direction
    latency_s: float
    efficiency: float

    @property
    def effective_bandwidth_Bps(self) -> float:
        return self.bandwidth_Bps * self.efficiency


@dataclass(frozen=True, kw_only=True)
class Device:
    index: int  # global rank order, node-major
    name: str  # "n0.g3"
    node: int
    local: int
    group: str  # node-group name
    model: DeviceModel
    rail: int  # index of the NIC that serves this device (-1: none)


class Topology:
    """The graph and cached path queries. Build with `build_topology(spec, constants)`."""

    def __init__(
        self,
        spec: ClusterSpec,
        constants: CollectiveConstants,
        calibration: LinkCalibration | None = None,
        bandwidth_scale: dict[str, float] | None = None,
    ) -> None:
        self.spec = spec
        self.constants = constants
        self.calibration = calibration
        self.bandwidth_scale = dict(bandwidth_scale or {})  # link id or link class → factor
        self.graph = nx.Graph()
        self.links: dict[str, Link] = {}
        self._channel: dict[tuple[str, str], Link] = {}
        self.devices: tuple[Device, ...] = ()
        self.node_group: list[NodeGroupSpec] = []
        self._nic_switch: dict[str, str] = {}
        self._switches: nx.Graph | None = None
        self._build()

    # ------------------------------------------------------------ building

    def _build(self) -> None:
        devices: list[Device] = []
        node = 0
        for group in self.spec.groups:
            for _ in range(group.count):
                devices.extend(self._add_node(node, group, len(devices)))
                self.node_group.append(group)
                node += 1
        self.devices = tuple(devices)
        self._add_network()
        touched = self._add_extra_links()
        self._templates = {
            g.name: _node_paths(self._node_subgraph(self._template_node(g, touched)))
            for g in self.spec.groups
        }
        self._node_templates = {n: _node_paths(self._node_subgraph(n)) for n in touched}
        if not nx.is_connected(self.graph):
            parts = nx.number_connected_components(self.graph)
            raise SimplanError(
                f"{self.spec.name}: the topology graph is disconnected "
                f"({parts} parts); give every node NICs and a network"
            )

    def _add_extra_links(self) -> set[int]:
        """The spec's [[link]] entries; returns the nodes whose internal paths they change."""
        touched: set[int] = set()
        for i, extra in enumerate(self.spec.links):
            ends = []
            for field, name in (("a", extra.a), ("b", extra.b)):
                if name not in self.graph:
                    raise SimplanError(
                        f"{self.spec.name}: link[{i}].{field} = {name!r} does not "
                        "exist; use a vertex name such as 'n0.g1' or 'leaf0'"
                    )
                ends.append(self.graph.nodes[name].get("node"))
            if ends[0] != ends[1]:
                raise SimplanError(
                    f"{self.spec.name}: link[{i}] joins {extra.a} and {extra.b}; "
                    "a link must stay inside one node or join two switches"
                )
            if ends[0] is not None:
                touched.add(ends[0])
            self._add_link(extra.a, extra.b, extra.kind, extra.bandwidth_Bps, extra.latency_s)
        return touched

    def _template_node(self, group: NodeGroupSpec, touched: set[int]) -> int:
        """A node of the group without extra links (all of them are then identical)."""
        nodes = [i for i, g in enumerate(self.node_group) if g is group]
        return next((i for i in nodes if i not in touched), nodes[0])

    def _add_link(
        self, u: str, v: str, kind: str, bandwidth_Bps: float, latency_s: float | None
    ) -> None:
        cls = self.constants.link(kind)
        if self.calibration is not None and kind in ("loopback", "pcie", "nvlink"):
            bandwidth_Bps = self.calibration.link_bandwidth_Bps
            latency_s = self.calibration.step_latency_s
            efficiency = 1.0
        else:
            efficiency = cls.efficiency
        a, b = sorted((u, v))
        scale = self.bandwidth_scale
        factor = scale.get(f"{a}--{b}", 1.0) * scale.get(kind, 1.0)
        link = Link(
            id=f"{a}--{b}",
            u=a,
            v=b,
            kind=kind,
            bandwidth_Bps=bandwidth_Bps * factor,
            latency_s=cls.latency_s if latency_s is None else latency_s,
            efficiency=efficiency,
        )
        self.links[link.id] = link
        self._channel[(a, b)] = self._channel[(b, a)] = link
        self.graph.add_edge(
            a, b, id=link.id, kind=kind, bandwidth_Bps=link.bandwidth_Bps, latency_s=link.latency_s
        )

    def _add_node(self, node: int, group: NodeGroupSpec, first: int) -> list[Device]:
        fab, nics, n = group.fabric, group.nics, group.devices_per_node
        kind = FABRIC_LINK_CLASS[fab.kind]
        names = [f"n{node}.g{k}" for k in range(n)]
        for name in names:
            self.graph.add_node(name, kind="device", node=node)
        host = f"n{node}.host"
        if fab.kind in ("pcie-switch", "loopback"):
            self.graph.add_node(host, kind="host", node=node)
        if fab.kind == "nvswitch":
            self.graph.add_node(f"n{node}.nvswitch", kind="node-switch", node=node)
            for name in names:
                self._add_link(name, f"n{node}.nvswitch", kind, fab.bandwidth_Bps, fab.latency_s)
        elif fab.kind == "nvlink-mesh":
            for a, b in itertools.combinations(names, 2):
                self._add_link(a, b, kind, fab.bandwidth_Bps, fab.latency_s)
        elif fab.kind == "pcie-switch":
            up = fab.uplink_bandwidth_Bps or fab.bandwidth_Bps
            for k, name in enumerate(names):
                sw = f"n{node}.pcie{k // fab.devices_per_switch}"
                self.graph.add_node(sw, kind="node-switch", node=node)
                self._add_link(name, sw, kind, fab.bandwidth_Bps, fab.latency_s)
                self._add_link(sw, host, kind, up, fab.latency_s)
        else:
            for name in names:
                self._add_link(name, host, kind, fab.bandwidth_Bps, fab.latency_s)
        for k in range(nics.count):
            nic = f"n{node}.nic{k}"
            self.graph.add_node(nic, kind="nic", node=node)
            served = [x for x in range(n) if _rail(x, n, nics.count) == k]
            mesh = fab.kind in ("nvswitch", "nvlink-mesh")
            for x in (served or [0]) if mesh else (served or [0])[:1]:
                attach = (
                    names[x]
                    if fab.kind in ("nvswitch", "nvlink-mesh")
                    else _pcie_attach(fab.kind, node, x, fab.devices_per_switch)
                )
                self._add_link(attach, nic, "network", nics.bandwidth_Bps, nics.latency_s)
        return [
            Device(
                index=first + k,
                name=names[k],
                node=node,
                local=k,
                group=group.name,
                model=group.device,
                rail=_rail(k, n, nics.count),
            )
            for k in range(n)
        ]

    def _add_network(self) -> None:
        net = self.spec.network
        nodes = len(self.node_group)
        if nodes <= 1 or net.kind == "none":
            return
        lat = net.latency_s
        for node, group in enumerate(self.node_group):
            for k in range(group.nics.count):
                nic, bw = f"n{node}.nic{k}", group.nics.bandwidth_Bps
                if net.kind == "single-switch":
                    sw = "switch"
                elif net.kind == "leaf-spine":
                    sw = f"leaf{node // net.nodes_per_leaf}"
                else:
                    sw = f"rail{k}"
                self.graph.add_node(sw, kind="switch")
                self._add_link(nic, sw, "network", bw, lat)
                self._nic_switch[nic] = sw
        self._add_spines()

    def _add_spines(self) -> None:
        net = self.spec.network
        if net.kind not in ("leaf-spine", "rail-optimized"):
            return
        down: dict[str, float] = {}
        for nic, sw in self._nic_switch.items():
            down[sw] = down.get(sw, 0.0) + self._channel[(nic, sw)].bandwidth_Bps
        if len(down) < 2:
            return
        for sw, total in sorted(down.items()):
            for s in range(net.spines):
                spine = f"spine{s}"
                self.graph.add_node(spine, kind="switch")
                self._add_link(
                    sw, spine, "network", total / net.oversubscription / net.spines, net.latency_s
                )

    def _node_subgraph(self, node: int) -> nx.Graph:
        prefix = f"n{node}."
        return self.graph.subgraph([v for v in self.graph if v.startswith(prefix)])

    # ------------------------------------------------------------ queries

    def channel(self, u: str, v: str) -> Link:
        return self._channel[(u, v)]

    def node_path(self, node: int, a: str, b: str) -> list[str]:
        """Path between two vertices of one node, given by their suffixes ("g3", "nic1")."""
        table = self._node_templates.get(node) or self._templates[self.node_group[node].name]
        suffixes = table[(a, b)]
        return [f"n{node}.{s}" for s in suffixes]

    def device_path(self, src: int, dst: int, rail: int | None = None) -> tuple[str, ...]:
        """Vertices from device src to device dst. Across nodes the transfer leaves through NIC
        `rail` (default: src's own NIC) and enters through the same rail on dst's node."""
        return self._device_path(src, dst, rail)

    @lru_cache(maxsize=1 << 16)  # noqa: B019  (the topology lives as long as its cache)
    def _device_path(self, src: int, dst: int, rail: int | None) -> tuple[str, ...]:
        a, b = self.devices[src], self.devices[dst]
        if a.node == b.node:
            return tuple(self.node_path(a.node, f"g{a.local}", f"g{b.local}"))
        r = a.rail if rail is None else rail
        ra = r % max(1, self.node_group[a.node].nics.count)
        rb = r % max(1, self.node_group[b.node].nics.count)
        out = self.node_path(a.node, f"g{a.local}", f"nic{ra}")
        net = self._network_path(f"n{a.node}.nic{ra}", f"n{b.node}.nic{rb}", a.node + b.node + ra)
        inn = self.node_path(b.node, f"nic{rb}", f"g{b.local}")
        return tuple(out[:-1] + net + inn[1:])

    def _network_path(self, nic_a: str, nic_b: str, salt: int) -> list[str]:
        sa, sb = self._nic_switch[nic_a], self._nic_switch[nic_b]
        options = self._switch_paths(sa, sb)
        return [nic_a, *options[salt % len(options)], nic_b]

    @lru_cache(maxsize=1 << 14)  # noqa: B019
    def _switch_paths(self, sa: str, sb: str) -> tuple[tuple[str, ...], ...]:
        """All shortest switch-to-switch paths (ECMP); a transfer picks one by a stable hash."""
        if sa == sb:
            return ((sa,),)
        if self._switches is None:
            self._switches = self.graph.subgraph(
                v for v, d in self.graph.nodes(data=True) if d.get("kind") == "switch"
            ).copy()
        switches = self._switches
        return tuple(tuple(p) for p in sorted(nx.all_shortest_paths(switches, sa, sb)))

    def path_channels(self, path: Iterable[str]) -> tuple[str, ...]:
        p = list(path)
        return tuple(f"{u}>{v}" for u, v in itertools.pairwise(p))

    def path_links(self, path: Iterable[str]) -> tuple[Link, ...]:
        p = list(path)
        return tuple(self._channel[(u, v)] for u, v in itertools.pairwise(p))

    def link_by_id(self, link_id: str) -> Link:
        """A link by its id "u--v" or by one of its channels "u>v"."""
        if link_id in self.links:
            return self.links[link_id]
        u, sep, v = link_id.partition(">")
        if sep and (u, v) in self._channel:
            return self._channel[(u, v)]
        raise SimplanError(
            f"no link {link_id!r} in {self.spec.name}; links look like "
            "'n0.g0--n0.nvswitch' and channels like 'n0.g0>n0.nvswitch'"
        )


def _rail(local: int, devices: int, nics: int) -> int:
    if nics == 0:
        return -1
    return local * nics // devices


def _pcie_attach(kind: str, node: int, local: int, per_switch: int) -> str:
    if kind == "pcie-switch":
        return f"n{node}.pcie{local // per_switch}"
    return f"n{node}.host"


def _node_paths(sub: nx.Graph) -> dict[tuple[str, str], tuple[str, ...]]:
    """All shortest paths between the vertices of one node, as name suffixes."""
    out: dict[tuple[str, str], tuple[str, ...]] = {}
    for src, paths in nx.all_pairs_shortest_path(sub):
        for dst, path in paths.items():
            out[(_suffix(src), _suffix(dst))] = tuple(_suffix(v) for v in path)
    return out


def _suffix(vertex: str) -> str:
    return vertex.split(".", 1)[1]
