"""Candidate allocations of a job on a cluster, and the sub-cluster each one stands for.

A shape is a GPU count of one GPU type over some nodes: *packed* in as few nodes as hold them,
or *spread* one GPU per node. GPU counts are the powers of two within the job's min/max GPUs
(and the cluster's size); GPU types are the cluster's node kinds the job allows.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from simplan.errors import SimplanError
from simplan.schedule.core import Job, Shape
from simplan.topology.cluster_spec import ClusterSpec, NodeGroupSpec, scale_spec


@dataclass(frozen=True, kw_only=True)
class NodeKind:
    """The nodes of one GPU type in a cluster: how many, and how many GPUs each has (the
    first node group of that type decides the fabric and per-node count)."""

    gpu_type: str
    nodes: int
    gpus_per_node: int
    group: NodeGroupSpec

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node


def node_kinds(spec: ClusterSpec) -> dict[str, NodeKind]:
    """The cluster's nodes by GPU type (device name), in the order of its node groups."""
    kinds: dict[str, NodeKind] = {}
    for group in spec.groups:
        name = group.device.name
        if name in kinds:
            old = kinds[name]
            kinds[name] = dataclasses.replace(old, nodes=old.nodes + group.count)
        else:
            kinds[name] = NodeKind(
                gpu_type=name, nodes=group.count, gpus_per_node=group.devices_per_node,
                group=group,
            )  # fmt: skip
    return kinds


def allows(job: Job, shape: Shape) -> bool:
    """Whether the job accepts an allocation of this shape (type and count)."""
    if job.gpu_types and shape.gpu_type not in job.gpu_types:
        return False
    return shape.gpus >= job.min_gpus and (not job.max_gpus or shape.gpus <= job.max_gpus)


def _powers_of_two(low: int, high: int) -> list[int]:
    out, n = [], 1
    while n <= high:
        if n >= low:
            out.append(n)
        n *= 2
    return out


def kind_shapes(kind: NodeKind, low: int, high: int) -> list[Shape]:
    """Packed and spread shapes of `low..high` GPUs (powers of two) on one node kind."""
    shapes: list[Shape] = []
    for gpus in _powers_of_two(low, min(high, kind.gpus)):
        nodes = -(-gpus // kind.gpus_per_node)
        if gpus % nodes == 0 and nodes <= kind.nodes:
            shapes.append(Shape(gpu_type=kind.gpu_type, gpus=gpus, nodes=nodes))
        if nodes < gpus <= kind.nodes:
            shapes.append(Shape(gpu_type=kind.gpu_type, gpus=gpus, nodes=gpus))
    return shapes


def candidate_shapes(spec: ClusterSpec | str, job: Job) -> list[Shape]:
    """Every shape the job may get on the cluster (a spec, or a preset or TOML file at its own
    size), sorted (GPU type, count, nodes)."""
    if isinstance(spec, str):
        from simplan.topology.cluster_spec import load_spec

        spec = load_spec(spec)
    kinds = node_kinds(spec)
    shapes: list[Shape] = []
    for name, kind in kinds.items():
        if job.gpu_types and name not in job.gpu_types:
            continue
        shapes += kind_shapes(kind, job.min_gpus, job.max_gpus or kind.gpus)
    return sorted(shapes)


def check_fits_cluster(spec: ClusterSpec, jobs: list[Job]) -> None:
    """A one-line SimplanError for the first job that has no shape on the cluster at all."""
    kinds = node_kinds(spec)
    for job in jobs:
        if candidate_shapes(spec, job):
            continue
        usable = [k for k in kinds.values() if not job.gpu_types or k.gpu_type in job.gpu_types]
        if not usable:
            raise SimplanError(
                f"job {job.id}, field gpu_types: allows {', '.join(job.gpu_types)} and "
                f"{spec.name} has only {', '.join(kinds)}; widen gpu_types or use another cluster"
            )
        most = max(k.gpus for k in usable)
        raise SimplanError(
            f"job {job.id}, field min_gpus: needs {job.min_gpus}..{job.max_gpus or 'any'} GPUs "
            f"(a power of two "
            f"in that range) and {spec.name} has at most {most} of the types it allows; "
            f"lower min_gpus or add nodes"
        )


def shape_spec(spec: ClusterSpec, shape: Shape) -> ClusterSpec:
    """The sub-cluster a shape stands for: `shape.nodes` nodes of the shape's GPU type with
    `gpus / nodes` GPUs each (the node group's fabric and NICs; the cluster's network)."""
    kind = node_kinds(spec).get(shape.gpu_type)
    if kind is None:
        raise SimplanError(
            f"{spec.name} has no {shape.gpu_type} nodes; use one of {', '.join(node_kinds(spec))}"
        )
    per_node, rest = divmod(shape.gpus, shape.nodes)
    if rest or shape.nodes > kind.nodes or per_node > kind.gpus_per_node:
        raise SimplanError(
            f"{shape.gpus} {shape.gpu_type} GPUs over {shape.nodes} nodes does not fit "
            f"{spec.name} ({kind.nodes} such nodes of {kind.gpus_per_node} GPUs)"
        )
    group = dataclasses.replace(kind.group, count=shape.nodes)
    sub = dataclasses.replace(
        spec, name=f"{spec.name}[{shape_label(shape)}]", groups=(group,), links=()
    )
    return scale_spec(sub, gpus_per_node=per_node)


def shape_label(shape: Shape) -> str:
    """'8xh100-sxm/1n': GPUs x type / nodes."""
    return f"{shape.gpus}x{shape.gpu_type}/{shape.nodes}n"
