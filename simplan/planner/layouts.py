"""Where ranks go: node-level layouts first, then devices within a node.

Node level. Nodes are grouped into classes by device model (a mixed cluster has an A100 class
and an H100 class). Inside a class the nodes are interchangeable on the presets' non-blocking
fabrics, so a layout is a sequence of classes: how many nodes of each class the job uses, and in
which order the pipeline walks through the classes. Every such layout is enumerated (a handful);
for each, the partition ILP sizes the stages to the speed and memory of their class, with the
cut between two classes costed on the link that joins them. Stages never straddle two classes
when the stage size allows it (a stage runs at its slowest device's speed).

The order of the nodes inside a class comes from the node-order ILP (simplan.planner.nodes),
which chains them by the p2p times of the real links (skipped when every pair costs the same).

Within a node. A TP group is consecutive local devices (NVSwitch is symmetric; on PCIe boxes
neighbours share a switch) and the replicas of a stage take the same local index on successive
nodes (one rail), Megatron-LM's order: rank = (stage * dp + replica) * tp + tp_rank.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from simplan.devices import DeviceModel
from simplan.planner.nodes import order_nodes

MAX_LAYOUTS = 12


@dataclass(frozen=True, kw_only=True)
class Layout:
    """Devices of one (dp, tp, pp) job: order[rank] is the rank's device."""

    order: tuple[int, ...]
    dp: int
    tp: int
    pp: int
    label: str
    solves: tuple[dict[str, Any], ...] = ()

    def stage_devices(self, stage: int) -> tuple[int, ...]:
        block = self.dp * self.tp
        return self.order[stage * block : (stage + 1) * block]

    def tp_group(self, stage: int) -> tuple[int, ...]:
        return self.stage_devices(stage)[: self.tp]

    def dp_group(self, stage: int) -> tuple[int, ...]:
        return self.stage_devices(stage)[:: self.tp]

    def dp_groups(self, stage: int) -> list[tuple[int, ...]]:
        devices = self.stage_devices(stage)
        return [devices[t :: self.tp] for t in range(self.tp)]


def node_classes(cluster: Any) -> list[tuple[str, tuple[int, ...]]]:
    """(device model name, nodes) for each class, in the cluster's order."""
    classes: dict[str, list[int]] = {}
    for node in range(cluster.nodes):
        first = cluster.node_devices(node)[0]
        classes.setdefault(cluster.device_model(first).name, []).append(node)
    return [(name, tuple(nodes)) for name, nodes in classes.items()]


def slowest(cluster: Any, devices: tuple[int, ...]) -> DeviceModel:
    models = {cluster.device_model(d).name: cluster.device_model(d) for d in devices}
    return min(models.values(), key=lambda m: (m.peak("bf16"), m.memory_bandwidth_Bps))


def layouts(cluster: Any, dp: int, tp: int, pp: int) -> list[Layout]:
    """Every class-level layout of a dp x tp x pp job (whole nodes, or part of one node)."""
    world = dp * tp * pp
    per_node = cluster.gpus_per_node
    classes = node_classes(cluster)
    if world <= per_node:
        return [
            Layout(
                order=cluster.node_devices(nodes[0])[:world],
                dp=dp,
                tp=tp,
                pp=pp,
                label=f"1 {name} node",
            )
            for name, nodes in classes
            if len(cluster.node_devices(nodes[0])) >= world
        ]
    if world % per_node:
        return []
    need = world // per_node
    out: dict[tuple[int, ...], Layout] = {}
    for perm in itertools.permutations(range(len(classes))):
        for counts in _compositions(need, [len(classes[i][1]) for i in perm]):
            nodes: list[int] = []
            solves: list[dict[str, Any]] = []
            for i, k in zip(perm, counts, strict=True):
                ordered, record = order_nodes(cluster, classes[i][1][:k])
                nodes += ordered
                solves += [record.to_dict()] if record else []
            order = tuple(d for n in nodes for d in cluster.node_devices(n))
            if len(order) != world or order in out:
                continue
            label = " + ".join(
                f"{k} {classes[i][0]}" for i, k in zip(perm, counts, strict=True) if k
            )
            out[order] = Layout(
                order=order, dp=dp, tp=tp, pp=pp, label=f"{label} nodes", solves=tuple(solves)
            )
            if len(out) >= MAX_LAYOUTS:
                return list(out.values())
    return list(out.values())


def _compositions(total: int, limits: list[int]) -> list[tuple[int, ...]]:
    """Ways to take `total` nodes from classes with these sizes, filling earlier ones first
    when a class is skipped entirely (so [2, 0] and [0, 2] both appear, but not every split)."""
    if not limits:
        return [()] if total == 0 else []
    out = []
    for k in range(min(total, limits[0]), -1, -1):
        out += [(k, *rest) for rest in _compositions(total - k, limits[1:])]
    return out


def boundary_scale(cluster: Any, layout: Layout, nbytes: float) -> tuple[tuple[float, ...], float]:
    """Per pipeline boundary, the p2p time of nbytes relative to a reference (the first
    boundary), and the reference time: (scales, reference seconds)."""
    if layout.pp == 1 or nbytes <= 0:
        return (), 0.0
    times = []
    for s in range(layout.pp - 1):
        src, dst = layout.stage_devices(s)[0], layout.stage_devices(s + 1)[0]
        times.append(cluster.transfer_time(src, dst, nbytes))
    ref = max(times[0], 1e-12)
    return (*tuple(t / ref for t in times), 1.0), times[0]
