"""A speed table a person can compute by hand, for the schedule tests."""

from __future__ import annotations

from simplan.schedule.core import Job, Shape
from simplan.topology.cluster_spec import ClusterSpec, load_spec


class LinearSpeeds:
    """step_time = base_s[model] / gpus * (1 + spread_penalty * (nodes - 1)) * factor, factor
    being type_factor["model@type"], else type_factor["type"], else 1; None for a type listed
    in `no` for that model."""

    def __init__(
        self,
        base_s: dict[str, float],
        type_factor: dict[str, float] | None = None,
        spread_penalty: float = 0.5,
        no: dict[str, str] | None = None,
    ) -> None:
        self.base_s, self.type_factor = base_s, type_factor or {}
        self.spread_penalty, self.no = spread_penalty, no or {}

    def step_time_s(self, job: Job, shape: Shape) -> float | None:
        if self.no.get(job.model) == shape.gpu_type:
            return None
        factor = self.type_factor.get(
            f"{job.model}@{shape.gpu_type}", self.type_factor.get(shape.gpu_type, 1.0)
        )
        spread = 1 + self.spread_penalty * (shape.nodes - 1)
        return self.base_s[job.model] / shape.gpus * spread * factor


def job(id: str, work: float, *, model: str = "m", arrival_s: float = 0.0, gpus: int = 1,
        **kw: object) -> Job:  # fmt: skip
    return Job(id=id, model=model, global_batch=64, work=work, arrival_s=arrival_s,
               min_gpus=gpus, **kw)  # type: ignore[arg-type]  # fmt: skip


def one_node(gpus: int = 8) -> ClusterSpec:
    return load_spec("dgx-a100", nodes=1, gpus_per_node=gpus)


def mixed(nodes: int = 2) -> ClusterSpec:
    return load_spec("mixed-a100-h100", nodes=nodes)
