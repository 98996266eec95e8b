"""Plan files: a configuration with its model, cluster and placement, as versioned JSON.

Schema (kind "plan", version 1; `simplan plan` writes every field, `simplan simulate --plan`
needs only the first five):
  model            model spec (preset, TOML path or file.py:factory)
  cluster          {"spec", "nodes", "gpus_per_node"}: how to load the cluster
  config           ParallelConfig: dp, tp, pp, micro_batch, global_batch, schedule,
                   virtual_stages, zero, recompute, dtype, sequence_parallel, stages (layer
                   boundaries per pipeline chunk)
  placement        placement[rank] = device (empty: rank i on device i)
  predicted        the simulated step: step_time_s, tokens_per_s, mfu, peak_memory_bytes, ...
  role, layout     "plan" / "baseline:pure-dp" / "baseline:megatron"; the nodes used
  degrees          {"dp", "tp", "pp"}
  stage_layers     per chunk: stage, [first, last) layer indices, first and last layer names
  estimate         the planner's analytic estimate
  solver           one record per ILP solve: solver, status, sol_status, objective, gap, time
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simplan.errors import SimplanError
from simplan.io import read_versioned_json, schema_header, write_json_atomic
from simplan.parallel import ParallelConfig

PLAN_SCHEMA_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class ClusterRef:
    spec: str
    nodes: int | None = None
    gpus_per_node: int | None = None

    def load(self) -> Any:
        from simplan.topology import load_cluster

        return load_cluster(self.spec, nodes=self.nodes, gpus_per_node=self.gpus_per_node)


@dataclass(frozen=True, kw_only=True)
class PlanFile:
    model: str
    cluster: ClusterRef
    config: ParallelConfig
    placement: tuple[int, ...] = ()
    predicted: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": schema_header("plan", PLAN_SCHEMA_VERSION),
            "model": self.model,
            "cluster": {
                "spec": self.cluster.spec,
                "nodes": self.cluster.nodes,
                "gpus_per_node": self.cluster.gpus_per_node,
            },
            "config": self.config.to_dict(),
            "placement": list(self.placement),
            "predicted": self.predicted,
            **self.extra,
        }


def write_plan(plan: PlanFile, path: str | Path) -> Path:
    return write_json_atomic(plan.to_dict(), path)


def read_plan(path: str | Path) -> PlanFile:
    data = read_versioned_json(path, "plan", PLAN_SCHEMA_VERSION)
    return plan_from_dict(data, path, "plan file")


def plan_from_dict(data: Any, path: str | Path, what: str = "plan file") -> PlanFile:
    """A plan document (a plan file's, or one embedded in a plans file: `what`), checked;
    a damaged one is a one-line SimplanError naming `path`."""
    try:
        cluster = data["cluster"]
        known = {"schema", "model", "cluster", "config", "placement", "predicted"}
        plan = PlanFile(
            model=str(data["model"]),
            cluster=ClusterRef(
                spec=str(cluster["spec"]),
                nodes=cluster.get("nodes"),
                gpus_per_node=cluster.get("gpus_per_node"),
            ),
            config=ParallelConfig.from_dict(data["config"]),
            placement=tuple(int(x) for x in data.get("placement", [])),
            predicted=dict(data.get("predicted", {})),
            extra={k: v for k, v in data.items() if k not in known},
        )
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise SimplanError(
            f"{path}: damaged {what} (missing {exc}); regenerate it with simplan plan"
        ) from None
    _check_placement(path, plan)
    return plan


def _check_placement(path: str | Path, plan: PlanFile) -> None:
    world = plan.config.world_size
    if plan.placement and len(plan.placement) != world:
        raise SimplanError(
            f"{path}: placement lists {len(plan.placement)} devices for {world} ranks; "
            f"regenerate it with simplan plan"
        )
