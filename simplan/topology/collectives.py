"""Collective algorithms over the topology graph, their alpha-beta costs, and the selection rule.

Every algorithm is a sequence of *phases*. A phase is `steps` identical steps; in it every rank
sends `bytes_per_rank` bytes in total, spread over flows (src → dst along a graph path, with a
weight: the share of those bytes that flow carries). The flows load the directed channels of the
graph, and the phase takes

    steps * hop_latency + bytes_per_rank * max over channels (load / (bandwidth * efficiency))

where hop_latency is the mean over the flows of the largest link latency on each flow's path
(so a ring pays 2(n-1)/n · Σ hop latencies per all-reduce, NCCL's ring latency model) and `load`
is the summed weight of the flows crossing that channel: a channel shared by two flows delivers
half its bandwidth to each. A GPU collective also pays `launch_s` once and a local memory term
`memory_passes · MEMORY_FACTOR[op] · nbytes / memory_bandwidth` in the phases that stay inside
nodes (behind network transfers, which are far slower than HBM, it is hidden).

Bytes moved per rank (nbytes = the per-rank buffer, nccl-tests' "size"; n ranks):
  ring all_reduce 2(n-1)/n·nbytes in 2(n-1) steps; reduce_scatter and all_gather (n-1)/n·nbytes
  in n-1 steps; broadcast nbytes in n-1 pipelined steps; all_to_all (n-1)/n·nbytes, one n-th to
  every peer; p2p nbytes in one step.

Algorithms:
  ring          NCCL-style rings. Across nodes there is one ring per rail (k = the number of
                distinct NICs the group's devices use on each node, at most the devices per
                node); ring c leaves every node through NIC c and the data is split over rings.
  tree          double binary tree between nodes (each tree carries half the data), a chain
                inside each node; all_reduce on multi-node groups only. Latency: 2·(depth·
                alpha_network + (g-1)·alpha_intra) with depth = floor(log2 nodes). Bandwidth as
                in NCCL's tuning model: 2·nbytes per rank at the rings' bottleneck bandwidth,
                derated by `tree_efficiency`.
  hierarchical  reduce-scatter inside each node, an all-reduce (or reduce-scatter/all-gather)
                of 1/g of the data between nodes on g rails at once, all-gather inside each node;
                groups with the same g >= 2 devices on every node.

Selection rule (what NCCL's tuner does: predict each eligible algorithm, take the fastest):
  - one device: nothing to do (0 s); p2p and all_to_all: direct transfers;
  - all devices in one node: ring;
  - across nodes: the fastest of ring, tree (all_reduce) and hierarchical (all_reduce,
    reduce_scatter, all_gather when eligible). Tree wins small messages because it needs
    O(log nodes) latency steps instead of O(n); rings/hierarchical win large ones because tree
    bandwidth is derated: ring beats tree above
        S* = (L_ring - L_tree) / (b · (2/tree_efficiency - 2(n-1)/n))
    where L are the latency terms and b the rings' seconds per byte; L_ring = 2(n-1)·alpha
    grows with the ranks, L_tree only with log2(nodes), so S* grows with the number of nodes.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from simplan.errors import SimplanError

if TYPE_CHECKING:
    from simplan.topology.fabric import Device, Topology

OPS = ("all_reduce", "reduce_scatter", "all_gather", "broadcast", "all_to_all", "p2p")
ALGORITHMS = ("ring", "tree", "hierarchical", "direct")
MEMORY_FACTOR = {
    "all_reduce": 1.0,
    "reduce_scatter": 0.5,
    "all_gather": 0.5,
    "broadcast": 0.5,
    "all_to_all": 0.5,
    "p2p": 0.0,
}

Flow = tuple[int, int, "int | None", float]  # src index, dst index, rail (None: src's), weight


@dataclass(frozen=True, kw_only=True)
class PhaseShape:
    """A phase independent of the message size: its latency, its channel loads per byte."""

    name: str
    steps: int
    latency_s: float
    loads: dict[str, float]  # channel id "u>v" → share of bytes_per_rank crossing it
    seconds_per_byte: float  # max over channels of load / effective bandwidth
    memory_share: float  # share of the op's local memory term paid in this phase


@dataclass(frozen=True, kw_only=True)
class Phase:
    name: str
    steps: int
    latency_s: float
    bytes_per_rank: float
    channel_bytes: dict[str, float]  # bytes crossing each directed channel during the phase
    time_s: float


@dataclass(frozen=True, kw_only=True)
class CollectivePlan:
    op: str
    algorithm: str
    nbytes: float
    devices: tuple[int, ...]
    overhead_s: float  # launch + local memory term
    phases: tuple[Phase, ...]

    @property
    def time_s(self) -> float:
        return self.overhead_s + sum(p.time_s for p in self.phases)


def bytes_factor(op: str, n: int) -> float:
    """Bytes each rank sends, as a multiple of nbytes, for a ring of n ranks."""
    return {
        "all_reduce": 2 * (n - 1) / n,
        "reduce_scatter": (n - 1) / n,
        "all_gather": (n - 1) / n,
        "broadcast": 1.0,
        "all_to_all": (n - 1) / n,
        "p2p": 1.0,
    }[op]


def ring_steps(op: str, n: int) -> int:
    return 2 * (n - 1) if op == "all_reduce" else n - 1


def check_op(op: str) -> str:
    if op not in OPS:
        raise SimplanError(f"unknown collective {op!r}: use one of {', '.join(OPS)}")
    return op


# ---------------------------------------------------------------- flows → phase shapes


def phase_shape(
    topo: Topology,
    name: str,
    steps: int,
    flows: list[Flow],
    latency_s: float | None = None,
    memory_share: float | None = None,
) -> PhaseShape:
    """Loads and costs of a set of concurrent flows. Latency (unless given): steps times the
    mean hop latency (a hop's latency: the largest on its path), so a ring pays
    2(n-1)/n · Σ hop latencies per all-reduce as in NCCL's tuning model. The local memory term
    is hidden behind network transfers, so a phase that crosses the network pays none of it."""
    loads: dict[str, float] = defaultdict(float)
    eff: dict[str, float] = {}
    hop_latency = 0.0
    network = False
    for src, dst, rail, weight in flows:
        path = topo.device_path(src, dst, rail)
        worst = 0.0
        for link, channel in zip(topo.path_links(path), topo.path_channels(path), strict=True):
            loads[channel] += weight
            eff[channel] = link.effective_bandwidth_Bps
            worst = max(worst, link.latency_s)
            network = network or link.kind == "network"
        hop_latency += worst
    spb = max((load / eff[c] for c, load in loads.items()), default=0.0)
    lat = steps * hop_latency / max(1, len(flows)) if latency_s is None else latency_s
    share = (0.0 if network else 1.0) if memory_share is None else memory_share
    return PhaseShape(
        name=name,
        steps=steps,
        latency_s=lat,
        loads=dict(loads),
        seconds_per_byte=spb,
        memory_share=share,
    )


def flows_latency(topo: Topology, flows: list[Flow]) -> float:
    worst = 0.0
    for src, dst, rail, _ in flows:
        for link in topo.path_links(topo.device_path(src, dst, rail)):
            worst = max(worst, link.latency_s)
    return worst


def by_node(topo: Topology, devices: tuple[int, ...]) -> list[list[Device]]:
    groups: dict[int, list[Device]] = defaultdict(list)
    for i in devices:
        groups[topo.devices[i].node].append(topo.devices[i])
    return [sorted(groups[n], key=lambda d: d.local) for n in sorted(groups)]


def node_leaders(members: list[Device], k: int) -> list[Device]:
    """k exit devices of a node, one per distinct rail (cycled if fewer rails)."""
    reps: dict[int, Device] = {}
    for d in members:
        reps.setdefault(d.rail, d)
    ordered = list(reps.values())
    return [ordered[c % len(ordered)] for c in range(k)]


def rail_channels(nodes: list[list[Device]]) -> int:
    """Rings across nodes: one per distinct rail, at most the devices per node."""
    return min(min(len(m) for m in nodes), min(len({d.rail for d in m}) for m in nodes))


def ring_flows(topo: Topology, devices: tuple[int, ...]) -> list[Flow]:
    nodes = by_node(topo, devices)
    if len(nodes) == 1:
        return _single_node_rings(topo, [d.index for d in nodes[0]])
    k = rail_channels(nodes)
    flows: list[Flow] = []
    for c in range(k):
        order: list[tuple[int, int | None]] = []
        for members in nodes:
            leader = node_leaders(members, k)[c]
            at = members.index(leader)
            rotated = members[at + 1 :] + members[: at + 1]  # ends at the leader
            order.extend((d.index, leader.rail) for d in rotated)
        for (a, rail), (b, _) in zip(order, order[1:] + order[:1], strict=True):
            flows.append((a, b, rail, 1.0 / k))
    return flows


def _single_node_rings(topo: Topology, members: list[int]) -> list[Flow]:
    """One ring over a switch; on an NVLink mesh one ring per stride coprime with n, so the
    rings together use every direct link (as NCCL's rings do)."""
    n = len(members)
    mesh = topo.node_group[topo.devices[members[0]].node].fabric.kind == "nvlink-mesh"
    strides = [s for s in range(1, n) if math.gcd(s, n) == 1] if mesh and n > 2 else [1]
    flows: list[Flow] = []
    for s in strides:
        for i in range(n):
            flows.append((members[i], members[(i + s) % n], None, 1.0 / len(strides)))
    return flows


def tree_flows(topo: Topology, devices: tuple[int, ...], up: bool) -> tuple[list[Flow], list[Flow]]:
    """(intra-node chain flows, inter-node double-binary-tree flows), both directions
    (reduce up, broadcast down) unless up=False (broadcast only)."""
    nodes = by_node(topo, devices)
    k = rail_channels(nodes)
    intra: list[Flow] = []
    inter: list[Flow] = []
    m = len(nodes)
    for c in range(k):
        leaders = [node_leaders(members, k)[c] for members in nodes]
        for members, leader in zip(nodes, leaders, strict=True):
            at = members.index(leader)
            chain = members[at + 1 :] + members[: at + 1]
            for a, b in itertools.pairwise(chain):
                intra.append((b.index, a.index, None, 1.0 / k))
                if up:
                    intra.append((a.index, b.index, None, 1.0 / k))
        for tree in range(2):
            pos = list(range(m)) if tree == 0 else list(range(m - 1, -1, -1))
            for i in range(1, m):
                child, parent = leaders[pos[i]], leaders[pos[(i - 1) // 2]]
                inter.append((parent.index, child.index, parent.rail, 0.5 / k))
                if up:
                    inter.append((child.index, parent.index, child.rail, 0.5 / k))
    return intra, inter


def direct_flows(devices: tuple[int, ...]) -> list[Flow]:
    n = len(devices)
    return [(a, b, None, 1.0 / n) for a in devices for b in devices if a != b]


def hierarchical_eligible(topo: Topology, devices: tuple[int, ...]) -> bool:
    nodes = by_node(topo, devices)
    return len(nodes) > 1 and len({len(m) for m in nodes}) == 1 and len(nodes[0]) > 1


def hierarchical_flows(topo: Topology, devices: tuple[int, ...]) -> tuple[list[Flow], list[Flow]]:
    """(rings inside every node at once, g rings between nodes at once — one per position)."""
    nodes = by_node(topo, devices)
    intra: list[Flow] = []
    for members in nodes:
        intra.extend(_single_node_rings(topo, [d.index for d in members]))
    inter: list[Flow] = []
    for j in range(len(nodes[0])):
        column = [members[j] for members in nodes]
        for a, b in zip(column, column[1:] + column[:1], strict=True):
            inter.append((a.index, b.index, a.rail, 1.0))
    return intra, inter


# ---------------------------------------------------------------- algorithms → plans

ShapeList = list[tuple[PhaseShape, float]]  # (phase, bytes per rank as a multiple of nbytes)


def algorithm_shapes(
    topo: Topology, op: str, algorithm: str, devices: tuple[int, ...]
) -> ShapeList:
    """The size-independent phases of `algorithm` for `op` over `devices`."""
    n = len(devices)
    if algorithm == "direct":
        pair: list[Flow] = [(devices[0], devices[1], None, 1.0)]
        flows = direct_flows(devices) if op == "all_to_all" else pair
        return [(phase_shape(topo, "direct", n - 1, flows), 1.0)]
    if algorithm == "ring":
        flows = ring_flows(topo, devices)
        return [(phase_shape(topo, "ring", ring_steps(op, n), flows), bytes_factor(op, n))]
    if algorithm == "tree":
        return [_tree_shape(topo, op, devices)]
    return _hierarchical_shapes(topo, op, devices)


def _tree_shape(topo: Topology, op: str, devices: tuple[int, ...]) -> tuple[PhaseShape, float]:
    """Latency from the tree's depth; bandwidth as NCCL's tuning model has it: 2·nbytes per rank
    at the rings' bottleneck, derated by tree_efficiency. Loads: the actual trees' channels."""
    nodes = by_node(topo, devices)
    intra, inter = tree_flows(topo, devices, up=True)
    depth = max(1, math.floor(math.log2(len(nodes))))
    g = max(len(m) for m in nodes)
    latency = 2 * (depth * flows_latency(topo, inter) + (g - 1) * flows_latency(topo, intra))
    tree = phase_shape(
        topo, "tree", 2 * (depth + g - 1), intra + inter, latency_s=latency, memory_share=0.0
    )
    ring = phase_shape(topo, "ring", 1, ring_flows(topo, devices))
    spb = 2 * ring.seconds_per_byte / topo.constants.tree_efficiency
    return dataclasses.replace(tree, seconds_per_byte=spb), 1.0


def _hierarchical_shapes(topo: Topology, op: str, devices: tuple[int, ...]) -> ShapeList:
    nodes = by_node(topo, devices)
    m, g = len(nodes), len(nodes[0])
    intra_flows, inter_flows = hierarchical_flows(topo, devices)
    intra = phase_shape(topo, "intra", g - 1, intra_flows)
    half = dataclasses.replace(intra, memory_share=0.5)
    inter_op = op if op in ("reduce_scatter", "all_gather") else "all_reduce"
    inter = phase_shape(topo, "inter", ring_steps(inter_op, m), inter_flows)
    inter_bytes = bytes_factor(inter_op, m) / g
    local = (g - 1) / g
    if op == "reduce_scatter":
        return [(intra, local), (inter, inter_bytes)]
    if op == "all_gather":
        return [(inter, inter_bytes), (intra, local)]
    return [(half, local), (inter, inter_bytes), (half, local)]


def eligible_algorithms(topo: Topology, op: str, devices: tuple[int, ...]) -> tuple[str, ...]:
    """The algorithms the selection rule compares for this op and group (see module doc)."""
    if op in ("p2p", "all_to_all"):
        return ("direct",)
    if len({topo.devices[i].node for i in devices}) == 1:
        return ("ring",)
    algos = ["ring"]
    if op == "all_reduce":
        algos.append("tree")
    if op in ("all_reduce", "reduce_scatter", "all_gather") and hierarchical_eligible(
        topo, devices
    ):
        algos.append("hierarchical")
    return tuple(algos)


def overhead_s(topo: Topology, op: str, nbytes: float, devices: tuple[int, ...]) -> float:
    """Launch cost, for groups of GPUs (a CPU calibration includes it in its latency)."""
    if any(topo.devices[i].model.kind != "gpu" for i in devices):
        return 0.0
    return topo.constants.launch_s


def memory_seconds_per_byte(topo: Topology, op: str, devices: tuple[int, ...]) -> float:
    """Local memory traffic per byte of nbytes: memory_passes · MEMORY_FACTOR[op] / HBM."""
    models = [topo.devices[i].model for i in devices]
    if any(m.kind != "gpu" for m in models):
        return 0.0
    mem_bw = min(m.memory_bandwidth_Bps for m in models)
    return topo.constants.memory_passes * MEMORY_FACTOR[op] / mem_bw


def phase_time(shape: PhaseShape, per_rank: float, nbytes: float, mem_spb: float) -> float:
    return (
        shape.latency_s + per_rank * shape.seconds_per_byte + shape.memory_share * nbytes * mem_spb
    )


def shapes_time(shapes: ShapeList, nbytes: float, mem_spb: float) -> float:
    return sum(phase_time(s, f * nbytes, nbytes, mem_spb) for s, f in shapes)


def make_plan(
    topo: Topology,
    op: str,
    algorithm: str,
    nbytes: float,
    devices: tuple[int, ...],
    shapes: ShapeList,
) -> CollectivePlan:
    mem_spb = memory_seconds_per_byte(topo, op, devices)
    phases = []
    for shape, factor in shapes:
        per_rank = factor * nbytes
        phases.append(
            Phase(
                name=shape.name,
                steps=shape.steps,
                latency_s=shape.latency_s,
                bytes_per_rank=per_rank,
                channel_bytes={c: w * per_rank for c, w in shape.loads.items()},
                time_s=phase_time(shape, per_rank, nbytes, mem_spb),
            )
        )
    return CollectivePlan(
        op=op,
        algorithm=algorithm,
        nbytes=nbytes,
        devices=devices,
        overhead_s=overhead_s(topo, op, nbytes, devices),
        phases=tuple(phases),
    )
