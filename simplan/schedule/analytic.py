"""An analytic speed table: a job's step time on a shape from the device's peak FLOP/s and a
gradient all-reduce over the shape's links, with no fitted constant. It stands in for the planned
table (simplan.schedule.speeds) where planning every job on every shape is not wanted: tests,
benchmarks, and traces of models the planner cannot load.

The model (data parallel over the shape's GPUs, model states sharded as in ZeRO-3):

- compute_s = global_batch * flops_per_sample / (gpus * peak_bf16 * matrix_efficiency), with the
  FLOPs counted by simplan (forward + backward per sample) and the device's peak and matrix
  efficiency (its GEMM rate times the stack's share) from its preset (simplan.devices:
  datasheet and calibration file);
- comm_s = 2 (g - 1) / g * gradient_bytes / bandwidth (a ring all-reduce of the bf16 gradients;
  Patarasuk & Yuan 2009), where bandwidth is the fabric's per-GPU bandwidth inside one node and
  the lesser of it and the node's NIC bandwidth shared by its GPUs across nodes;
- step_time_s = compute_s + comm_s (no overlap of the two: a conservative bound);
- None where the job does not fit: fewer samples than GPUs, or model states of 16 bytes per
  parameter (bf16 weights and gradients, fp32 Adam moments and master weights; ZeRO paper,
  Rajbhandari et al. 2020, section 3.1) over the GPUs exceed one GPU's memory.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from simplan.errors import SimplanError
from simplan.schedule.core import Job, Shape
from simplan.topology.cluster_spec import ClusterSpec, NodeGroupSpec

BYTES_PER_PARAM_STATE = 16  # ZeRO paper: 2 (bf16 weights) + 2 (bf16 grads) + 12 (fp32 Adam)
GRADIENT_BYTES_PER_PARAM = 2  # bf16 gradients
DTYPE = "bf16"


@dataclass(frozen=True, kw_only=True)
class ModelCost:
    """What the analytic model needs of a model: FLOPs per sample (forward + backward) and
    parameters."""

    flops_per_sample: float
    params: float

    def __post_init__(self) -> None:
        if not self.flops_per_sample > 0 or not self.params > 0:
            raise ValueError("ModelCost: flops_per_sample and params must be > 0")


def counted_cost(model: str, seq_len: int) -> ModelCost:
    """FLOPs and parameters of a model spec as simplan counts them (cached on disk by
    simplan.sources)."""
    from simplan.sources import load_model

    graph = load_model(model, seq_len=seq_len or None, dtype=DTYPE)
    return ModelCost(flops_per_sample=graph.fwd_flops + graph.bwd_flops, params=graph.params)


def _groups_by_type(spec: ClusterSpec) -> dict[str, NodeGroupSpec]:
    groups: dict[str, NodeGroupSpec] = {}
    for group in spec.groups:
        groups.setdefault(group.device.name, group)
    return groups


class AnalyticSpeeds:
    """SpeedTable from the analytic model above (see the module doc). costs: a ModelCost per
    model spec (default: counted with simplan.sources.load_model on first use)."""

    def __init__(
        self,
        spec: ClusterSpec,
        costs: Mapping[str, ModelCost] | None = None,
        count: Callable[[str, int], ModelCost] = counted_cost,
    ) -> None:
        self.spec = spec
        self._groups = _groups_by_type(spec)
        self._costs = dict(costs or {})
        self._count = count
        self._cache: dict[tuple[str, Shape], float | None] = {}

    def model_cost(self, job: Job) -> ModelCost:
        key = job.model if job.model in self._costs else f"{job.model}|{job.seq_len}"
        if key not in self._costs:
            self._costs[key] = self._count(job.model, job.seq_len)
        return self._costs[key]

    def step_time_s(self, job: Job, shape: Shape) -> float | None:
        key = (job.kind, shape)
        if key not in self._cache:
            self._cache[key] = self._compute(job, shape)
        return self._cache[key]

    def _compute(self, job: Job, shape: Shape) -> float | None:
        group = self._groups.get(shape.gpu_type)
        if group is None:
            raise SimplanError(
                f"{self.spec.name} has no {shape.gpu_type} GPUs; use one of "
                f"{', '.join(self._groups)}"
            )
        cost = self.model_cost(job)
        if job.global_batch < shape.gpus:
            return None
        if BYTES_PER_PARAM_STATE * cost.params / shape.gpus > group.device.memory_bytes:
            return None
        device = group.device
        compute_s = (
            job.global_batch
            * cost.flops_per_sample
            / (shape.gpus * device.peak(DTYPE) * device.matrix_efficiency)
        )
        return compute_s + self._comm_s(group, shape, cost.params)

    @staticmethod
    def _comm_s(group: NodeGroupSpec, shape: Shape, params: float) -> float:
        if shape.gpus == 1:
            return 0.0
        bandwidth_Bps = group.fabric.bandwidth_Bps
        if shape.nodes > 1:
            per_node = shape.gpus // shape.nodes
            nic_Bps = group.nics.count * group.nics.bandwidth_Bps / per_node
            bandwidth_Bps = min(bandwidth_Bps, nic_Bps)
        moved = 2 * (shape.gpus - 1) / shape.gpus * GRADIENT_BYTES_PER_PARAM * params
        return moved / bandwidth_Bps
