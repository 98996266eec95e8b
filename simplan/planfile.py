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
  framework        optional: the framework the plan was made for (simplan plan --framework:
                   megatron, torchtitan or deepspeed); `simplan export` defaults to it
  task_heads       optional, for a model that declares tasks: where each head runs
                   (simplan.planner.tasks): global_batch, devices (the job's), heads (per task
                   "replicated" or its devices; the trunk takes the others), chosen, step_time_s
                   and candidates (the simulated step of each placement compared);
                   `simplan simulate --plan` simulates this placement
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simplan.devices import STACKS
from simplan.errors import SimplanError
from simplan.io import read_versioned_json, schema_header, write_json_atomic
from simplan.limits import (
    MAX_BUCKET_BYTES,
    MAX_DEVICES,
    MAX_DEVICES_PER_NODE,
    MAX_GLOBAL_BATCH,
    MAX_GRAPH_LAYERS,
    MAX_NODES,
)
from simplan.parallel import ParallelConfig
from simplan.schema import (
    Anything,
    Bool,
    Either,
    Float,
    Int,
    ListOf,
    MapOf,
    Nullable,
    Spec,
    Str,
    Table,
    validate,
)
from simplan.sim.task_placement import REPLICATED
from simplan.units import DTYPE_BYTES

PLAN_SCHEMA_VERSION = 1
FRAMEWORK_NAMES = ("megatron", "torchtitan", "deepspeed")  # simplan.planner.export.TARGETS


def _knob_spec(f: dataclasses.Field) -> Spec:
    """The schema of one ParallelConfig field, from its Knob (the same limits as its flag)."""
    knob = f.metadata.get("knob")
    if f.type == "bool":
        return Bool()
    if knob is None:
        return (
            Str(choices=("", *DTYPE_BYTES)) if f.type == "str" else Int(min=1, max=MAX_BUCKET_BYTES)
        )
    if f.type == "str":
        return Str(choices=tuple(knob.choices))
    if knob.choices:
        return Int(min=min(knob.choices), max=max(knob.choices))
    return Int(min=knob.lo, max=knob.hi)


CONFIG_TABLE = Table(
    {
        **{f.name: _knob_spec(f) for f in dataclasses.fields(ParallelConfig) if f.name != "stages"},
        "stages": ListOf(Int(min=0, max=MAX_GRAPH_LAYERS), max_len=MAX_GRAPH_LAYERS + 1),
    },
    required=("dp", "tp", "pp", "micro_batch", "global_batch"),
    fix="regenerate the file with simplan plan",
)
DEVICE_LIST = ListOf(Int(min=0, max=MAX_DEVICES - 1), min_len=1, max_len=MAX_DEVICES)
TASK_HEADS_TABLE = Table(
    {
        "chosen": Str(),
        "global_batch": Int(min=1, max=MAX_GLOBAL_BATCH),
        "devices": DEVICE_LIST,
        "heads": MapOf(Either((Str(choices=(REPLICATED,)), DEVICE_LIST))),
        "step_time_s": Float(min=0.0),
        "candidates": MapOf(Float(min=0.0)),
    },
    required=("global_batch", "devices", "heads"),
    fix="regenerate the file with simplan plan",
)
PLAN_DOCUMENT = Table(
    {
        "schema": Table({"kind": Str(), "version": Int()}, required=("kind", "version")),
        "model": Str(nonempty=True),
        "cluster": Table(
            {
                "spec": Str(nonempty=True),
                "nodes": Nullable(Int(min=1, max=MAX_NODES)),
                "gpus_per_node": Nullable(Int(min=1, max=MAX_DEVICES_PER_NODE)),
                "stack": Nullable(Str(choices=STACKS)),
            },
            required=("spec",),
            fix="regenerate the file with simplan plan",
        ),
        "config": CONFIG_TABLE,
        "placement": ListOf(Int(min=0, max=MAX_DEVICES - 1), max_len=MAX_DEVICES),
        "predicted": MapOf(Anything()),
        "role": Str(),
        "layout": Anything(),
        "degrees": MapOf(Int(min=1, max=MAX_DEVICES)),
        "stage_layers": ListOf(Anything()),
        "estimate": MapOf(Anything()),
        "solver": ListOf(Anything()),
        "framework": Str(choices=FRAMEWORK_NAMES),
        "task_heads": TASK_HEADS_TABLE,
    },
    required=("schema", "model", "cluster", "config"),
    fix="regenerate the file with simplan plan",
)


@dataclass(frozen=True, kw_only=True)
class ClusterRef:
    spec: str
    nodes: int | None = None
    gpus_per_node: int | None = None
    stack: str | None = None  # the training stack (devices.STACKS); None: the spec's own

    def load(self) -> Any:
        from simplan.topology import load_cluster

        return load_cluster(
            self.spec, nodes=self.nodes, gpus_per_node=self.gpus_per_node, stack=self.stack
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "spec": self.spec,
            "nodes": self.nodes,
            "gpus_per_node": self.gpus_per_node,
        }
        return out | ({"stack": self.stack} if self.stack else {})


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
            "cluster": self.cluster.to_dict(),
            "config": self.config.to_dict(),
            "placement": list(self.placement),
            "predicted": self.predicted,
            **self.extra,
        }


def write_plan(plan: PlanFile, path: str | Path) -> Path:
    return write_json_atomic(plan.to_dict(), path)


def read_plan(path: str | Path) -> PlanFile:
    data = read_versioned_json(path, "plan", PLAN_SCHEMA_VERSION)
    return plan_from_dict(data, str(path))


def plan_from_dict(data: Any, origin: str) -> PlanFile:
    """A PlanFile from a parsed plan document (a plan file, or one plan of a plans file),
    checked field by field against PLAN_DOCUMENT; one SimplanError line naming `origin`."""
    data = validate(data, PLAN_DOCUMENT, origin=origin)
    cluster = data["cluster"]
    known = {"schema", "model", "cluster", "config", "placement", "predicted"}
    config = dict(data["config"])
    config["stages"] = tuple(config.get("stages", ()))
    try:
        parallel = ParallelConfig(**config)
    except SimplanError as exc:
        raise SimplanError(f"{origin}: config: {exc}") from None
    plan = PlanFile(
        model=data["model"],
        cluster=ClusterRef(
            spec=cluster["spec"],
            nodes=cluster.get("nodes"),
            gpus_per_node=cluster.get("gpus_per_node"),
            stack=cluster.get("stack"),
        ),
        config=parallel,
        placement=tuple(data.get("placement", [])),
        predicted=dict(data.get("predicted", {})),
        extra={k: v for k, v in data.items() if k not in known},
    )
    _check_placement(origin, plan)
    return plan


def _check_placement(path: str | Path, plan: PlanFile) -> None:
    if len(set(plan.placement)) != len(plan.placement):
        raise SimplanError(
            f"{path}: placement puts two ranks on one device; regenerate it with simplan plan"
        )
    world = plan.config.world_size
    if plan.placement and len(plan.placement) != world:
        raise SimplanError(
            f"{path}: placement lists {len(plan.placement)} devices for {world} ranks; "
            f"regenerate it with simplan plan"
        )
