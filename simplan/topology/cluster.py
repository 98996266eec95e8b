"""Cluster: the public, cached query object over a topology graph."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import networkx as nx

from simplan.devices import DeviceModel
from simplan.errors import SimplanError
from simplan.topology import collectives as coll
from simplan.topology.cluster_spec import ClusterSpec, NodeGroupSpec, load_spec
from simplan.topology.comm_calibration import (
    NO_FRAMEWORK_COSTS,
    CollectiveConstants,
    FrameworkCosts,
    LinkCalibration,
    OpFit,
    default_constants,
    read_link_calibration,
)
from simplan.topology.fabric import Device, Link, Topology
from simplan.topology.host import HostSpec

REPO_ROOT = Path(__file__).resolve().parents[2]


class Cluster:
    """A cluster: devices (global index 0..N-1, node-major), the networkx graph, and cached
    cost queries. Treat it as immutable; build a new one to change the topology."""

    def __init__(
        self,
        spec: ClusterSpec,
        constants: CollectiveConstants | None = None,
        bandwidth_scale: dict[str, float] | None = None,
        framework: FrameworkCosts | None = None,
    ) -> None:
        self.spec = spec
        self._framework = framework
        self.constants = constants or default_constants()
        self.calibration: LinkCalibration | None = (
            read_link_calibration(resolve_calibration(spec.calibration))
            if spec.calibration
            else None
        )
        self.topology = Topology(spec, self.constants, self.calibration, bandwidth_scale)
        self._shapes: dict[tuple[str, str, tuple[int, ...]], coll.ShapeList] = {}

    # ------------------------------------------------------------ structure

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def framework(self) -> FrameworkCosts:
        """What DDP, FSDP2 and DTensor add to their raw collectives on this cluster: measured by
        `simplan bench-comm` where the calibration has them, else zero."""
        if self._framework is not None:
            return self._framework
        return self.calibration.framework if self.calibration else NO_FRAMEWORK_COSTS

    def with_framework(self, costs: FrameworkCosts) -> Cluster:
        """A new cluster whose DDP / FSDP2 / DTensor framework costs are `costs` (what-if
        studies: `cluster.with_framework(FrameworkCosts())` simulates without them)."""
        return Cluster(self.spec, self.constants, self.topology.bandwidth_scale, costs)

    @property
    def graph(self) -> nx.Graph:
        return self.topology.graph

    @property
    def devices(self) -> tuple[Device, ...]:
        return self.topology.devices

    @property
    def num_devices(self) -> int:
        return len(self.topology.devices)

    @property
    def nodes(self) -> int:
        return len(self.topology.node_group)

    @property
    def gpus_per_node(self) -> int:
        """Devices per node (the largest, for a heterogeneous cluster)."""
        return max(g.devices_per_node for g in self.spec.groups)

    @property
    def links(self) -> dict[str, Link]:
        return self.topology.links

    def device_model(self, i: int) -> DeviceModel:
        return self.topology.devices[self._index(i)].model

    def device(self, i: int | str) -> Device:
        if isinstance(i, str):
            return self._by_name.get(i) or self._missing(i)
        return self.topology.devices[self._index(i)]

    @cached_property
    def _by_name(self) -> dict[str, Device]:
        return {d.name: d for d in self.devices}

    def _missing(self, name: str) -> Device:
        raise SimplanError(
            f"no device {name!r} in {self.name}; devices are n0.g0 .. {self.devices[-1].name}"
        )

    def _index(self, i: int) -> int:
        if not isinstance(i, int) or not 0 <= i < self.num_devices:
            raise SimplanError(
                f"device {i!r} does not exist in {self.name}: use 0..{self.num_devices - 1}"
            )
        return i

    def node_devices(self, node: int) -> tuple[int, ...]:
        return self._by_node.get(node, ())

    @cached_property
    def _by_node(self) -> dict[int, tuple[int, ...]]:
        """Each node's devices, in device order (built once: node_devices is called per node)."""
        nodes: dict[int, list[int]] = {}
        for d in self.devices:
            nodes.setdefault(d.node, []).append(d.index)
        return {node: tuple(devices) for node, devices in nodes.items()}

    def node_group(self, i: int) -> NodeGroupSpec:
        """The node group of device i."""
        name = self.device(i).group
        return next(g for g in self.spec.groups if g.name == name)

    def rail_devices(self, local: int) -> tuple[int, ...]:
        """One device per node: the local-th device of every node that has one (a rail)."""
        return tuple(d.index for d in self.devices if d.local == local)

    def link(self, link_id: str) -> Link:
        """A link by id ("n0.g0--n0.nvswitch") or by a channel of it ("n0.g0>n0.nvswitch")."""
        return self.topology.link_by_id(link_id)

    # ------------------------------------------------------------ transfers

    def path(self, src: int, dst: int) -> tuple[str, ...]:
        """Vertices on the route from device src to device dst."""
        return self.topology.device_path(self._index(src), self._index(dst))

    def transfer_links(self, src: int, dst: int) -> tuple[str, ...]:
        """Directed channel ids ("u>v") a transfer src → dst crosses, in order."""
        return self.topology.path_channels(self.path(src, dst))

    def bottleneck_bandwidth(self, src: int, dst: int) -> float:
        """Smallest effective bandwidth (bytes/s) on the route src → dst."""
        links = self.topology.path_links(self.path(src, dst))
        return min((x.effective_bandwidth_Bps for x in links), default=float("inf"))

    def transfer_time(self, src: int, dst: int, nbytes: float) -> float:
        """Seconds to send nbytes from src to dst over an idle network."""
        if src == dst:
            return 0.0
        return self.collective_time("p2p", nbytes, (src, dst))

    # ------------------------------------------------------------ collectives

    def collective_time(self, op: str, nbytes: float, devices: Sequence[int]) -> float:
        """Seconds for collective `op` on `devices`, nbytes = per-rank buffer (nccl-tests size),
        with the algorithm the selection rule picks (see simplan.topology.collectives), or the
        calibration's own fit of the op where it measured this kind of group."""
        group = self._group(op, devices)
        fit = self._measured_fit(op, group)
        if fit is not None and nbytes > 0:
            return fit.time_s(float(nbytes) * self._bandwidth_ratio(group))
        return self._best(op, float(nbytes), group)[1]

    def algorithm(self, op: str, nbytes: float, devices: Sequence[int]) -> str:
        return self._best(op, float(nbytes), self._group(op, devices))[0]

    def collective_plan(
        self, op: str, nbytes: float, devices: Sequence[int], algorithm: str | None = None
    ) -> coll.CollectivePlan:
        """The phases of a collective and the bytes each crosses on each directed channel
        (`plan.phases[i].channel_bytes`); look channels up with `cluster.link(channel_id)`."""
        group = self._group(op, devices)
        algo = algorithm or self._best(op, float(nbytes), group)[0]
        if algo not in coll.eligible_algorithms(self.topology, op, group):
            raise SimplanError(
                f"algorithm {algo!r} does not apply to {op} on this group; use "
                f"{', '.join(coll.eligible_algorithms(self.topology, op, group))}"
            )
        return coll.make_plan(
            self.topology, op, algo, float(nbytes), group, self._shape(op, algo, group)
        )

    def algorithm_times(self, op: str, nbytes: float, devices: Sequence[int]) -> dict[str, float]:
        group = self._group(op, devices)
        over = coll.overhead_s(self.topology, op, float(nbytes), group)
        mem = coll.memory_seconds_per_byte(self.topology, op, group)
        return {
            a: over + coll.shapes_time(self._shape(op, a, group), float(nbytes), mem)
            for a in coll.eligible_algorithms(self.topology, op, group)
        }

    @lru_cache(maxsize=1 << 16)  # noqa: B019
    def _best(self, op: str, nbytes: float, group: tuple[int, ...]) -> tuple[str, float]:
        if len(group) < 2 or nbytes <= 0:
            return ("none", 0.0)
        times = self.algorithm_times(op, nbytes, group)
        algo = min(times, key=lambda a: (times[a], coll.ALGORITHMS.index(a)))
        return algo, times[algo]

    def _measured_fit(self, op: str, group: tuple[int, ...]) -> OpFit | None:
        """The calibration's own measurement of `op` when the group is what it measured: as
        many ranks, all in one node (where the calibrated links are). The all-reduce fit is the
        links' latency and bandwidth too (what the algorithms use for other groups); its
        measured medians, where the file has them, price the measured group itself."""
        cal = self.calibration
        if cal is None or op not in cal.op_fits or len(group) != cal.nprocs:
            return None
        if op == "all_reduce" and len(cal.op_fits[op].points) < 2:
            return None
        nodes = {self.topology.devices[d].node for d in group}
        return cal.op_fits[op] if len(nodes) == 1 else None

    def _bandwidth_ratio(self, group: tuple[int, ...]) -> float:
        """Calibrated over present link bandwidth on the group's route (1 unless scaled)."""
        assert self.calibration is not None
        present = self.bottleneck_bandwidth(group[0], group[1])
        return self.calibration.link_bandwidth_Bps / present

    def _shape(self, op: str, algo: str, group: tuple[int, ...]) -> coll.ShapeList:
        key = (op, algo, group)
        if key not in self._shapes:
            self._shapes[key] = coll.algorithm_shapes(self.topology, op, algo, group)
        return self._shapes[key]

    def _group(self, op: str, devices: Sequence[int]) -> tuple[int, ...]:
        coll.check_op(op)
        group = tuple(self._index(int(i)) for i in devices)
        if len(set(group)) != len(group):
            raise SimplanError(f"{op}: device list {list(devices)} repeats a device")
        if op == "p2p" and len(group) != 2:
            raise SimplanError(f"p2p takes two devices (src, dst), not {len(group)}")
        if op != "p2p":
            group = tuple(sorted(group))
        return group

    def with_bandwidth(
        self, factor: float, *, links: Sequence[str] = (), kinds: Sequence[str] = ()
    ) -> Cluster:
        """A new cluster whose named links (ids "u--v" or channels "u>v") and/or link classes
        ('nvlink', 'pcie', 'network', 'loopback') have factor times the bandwidth."""
        if factor <= 0:
            raise SimplanError(f"bandwidth factor must be > 0, not {factor}")
        scale = dict(self.topology.bandwidth_scale)
        for link_id in links:
            key = self.link(link_id).id
            scale[key] = scale.get(key, 1.0) * factor
        for kind in kinds:
            scale[kind] = scale.get(kind, 1.0) * factor
        return Cluster(self.spec, self.constants, scale, self._framework)

    # ------------------------------------------------------------ summary

    def summary(self) -> dict[str, Any]:
        kinds: dict[str, list[float]] = {}
        for link in self.links.values():
            kinds.setdefault(link.kind, []).append(link.bandwidth_Bps)
        return {
            "name": self.name,
            "nodes": self.nodes,
            "devices": self.num_devices,
            "groups": [
                {
                    "name": g.name,
                    "count": g.count,
                    "devices_per_node": g.devices_per_node,
                    "device": g.device.name,
                    "fabric": g.fabric.kind,
                    "nics": g.nics.count,
                    "host": _host_summary(g.host),
                }
                for g in self.spec.groups
            ],
            "network": self.spec.network.kind,
            "vertices": self.graph.number_of_nodes(),
            "links": len(self.links),
            "link_bandwidths_Bps": {k: sorted(set(v)) for k, v in kinds.items()},
            "calibration": self.spec.calibration,
        }


def _host_summary(host: HostSpec | None) -> dict[str, Any] | None:
    if host is None:
        return None
    return {k: v for k, v in dataclasses.asdict(host).items() if k != "source"}


def resolve_calibration(path: str) -> Path:
    """A calibration path as written (absolute, or relative to the working directory or to
    the simplan checkout, where presets' traces live)."""
    p = Path(os.path.expanduser(path))
    if p.is_absolute() or p.exists():
        return p
    return REPO_ROOT / p


def load_cluster(
    spec: str | Path | dict[str, Any] | ClusterSpec,
    nodes: int | None = None,
    gpus_per_node: int | None = None,
    constants: CollectiveConstants | None = None,
    stack: str | None = None,
) -> Cluster:
    """A Cluster from a preset name, a TOML path, a dict or a ClusterSpec.

    nodes=N scales the preset to N nodes; gpus_per_node=G keeps G devices per node; stack: the
    training stack its devices' rates describe (simplan.devices.STACKS; None: the spec's)."""
    spec = load_spec(spec, nodes=nodes, gpus_per_node=gpus_per_node, stack=stack)
    return Cluster(spec, constants)
