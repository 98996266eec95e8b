"""Task declarations of a multi-task model: which layers are each task's outputs, its loss, its
weight in the total loss and the share of the batch that carries its labels.

Where declarations live:
- a Python model module declares `TASKS`, a list of plain dicts with keys `name`, `outputs`
  (layer names of the model graph), `loss`, and optionally `weight` (default 1) and
  `batch_share` (default 1), and `OUTPUTS`, the layer names in the order `forward` returns them;
- a TOML model file declares `[[task]]` tables with the same keys.

The model loader (simplan/sources.py) carries them into the graph: `graph.meta["tasks"]` is the
list of task dicts as declared and `graph.meta["outputs"]` the list of output layer names (the
union of the tasks' outputs, in declaration order, when the model does not list them).

From the graph's edges a TaskSet splits the layers: a layer is used by a task when it is one of
the task's outputs or feeds one of them; the trunk is every layer used by two or more tasks, and a
task's head is the layers only it uses. The trunk runs wherever any head runs; a head can run
anywhere that has the trunk's output.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from simplan.errors import SimplanError
from simplan.model_graph import ModelGraph

LOSSES: dict[str, str] = {
    "cross_entropy": "softmax cross-entropy over classes (or tokens)",
    "smooth_l1": "smooth L1 (Huber) regression",
    "mse": "mean squared error regression",
    "detection": "smooth L1 on boxes + cross-entropy on classes",
}
TASK_KEYS = ("name", "outputs", "loss", "weight", "batch_share")


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """One task of a multi-task model.

    name: unique task name; outputs: layer names of the graph that are this task's outputs;
    loss: a key of LOSSES; weight: the task's weight in the total loss (>= 0);
    batch_share: fraction of the global batch that carries this task's labels, in (0, 1].
    """

    name: str
    outputs: tuple[str, ...]
    loss: str
    weight: float = 1.0
    batch_share: float = 1.0

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name must be a non-empty string")
        if not self.outputs:
            raise ValueError(f"task {self.name}: outputs must name at least one layer")
        if self.loss not in LOSSES:
            raise ValueError(
                f"task {self.name}: loss {self.loss!r} is unknown; use one of {', '.join(LOSSES)}"
            )
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise ValueError(f"task {self.name}: weight must be a number >= 0, got {self.weight}")
        if not (math.isfinite(self.batch_share) and 0 < self.batch_share <= 1):
            raise ValueError(
                f"task {self.name}: batch_share must be in (0, 1], got {self.batch_share}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "outputs": list(self.outputs),
            "loss": self.loss,
            "weight": self.weight,
            "batch_share": self.batch_share,
        }


@dataclass(frozen=True, kw_only=True)
class TaskSet:
    """The tasks of a model and the split of its layers: trunk (shared, graph order) and, per
    task, the layers only that task uses (its head, graph order)."""

    tasks: tuple[TaskSpec, ...]
    trunk: tuple[str, ...]
    heads: Mapping[str, tuple[str, ...]]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)

    def task(self, name: str) -> TaskSpec:
        for t in self.tasks:
            if t.name == name:
                return t
        raise SimplanError(f"no task {name!r}; the tasks are {', '.join(self.names)}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "tasks": [t.to_dict() for t in self.tasks],
            "trunk": list(self.trunk),
            "heads": {k: list(v) for k, v in self.heads.items()},
        }


def load_tasks(graph: ModelGraph) -> TaskSet | None:
    """The graph's declared tasks (graph.meta["tasks"]), or None for a single-task model."""
    raw = graph.meta.get("tasks")
    if raw is None:
        return None
    return parse_tasks(raw, graph)


def parse_tasks(raw: Any, graph: ModelGraph) -> TaskSet:
    """Validate task declarations against the graph; bad input raises a one-line SimplanError."""
    where = f"model {graph.name}"
    if not isinstance(raw, (list, tuple)) or len(raw) < 2:
        raise SimplanError(
            f"{where}: a multi-task model declares a list of at least two tasks (TASKS or "
            "[[task]] tables)"
        )
    tasks = tuple(_task(item, i, where) for i, item in enumerate(raw))
    _check_names_and_outputs(tasks, graph, where)
    users = _users(tasks, graph, where)
    trunk = tuple(layer.name for layer in graph.layers if len(users[layer.name]) > 1)
    if not trunk:
        raise SimplanError(
            f"{where}: the tasks share no layer (no trunk); a multi-task model's heads "
            "share a trunk"
        )
    heads = {
        t.name: tuple(
            layer.name for layer in graph.layers if users[layer.name] == frozenset({t.name})
        )
        for t in tasks
    }
    _check_heads_reach_trunk(heads, trunk, graph, where)
    return TaskSet(tasks=tasks, trunk=trunk, heads=heads)


def _task(item: Any, index: int, where: str) -> TaskSpec:
    if not isinstance(item, Mapping):
        raise SimplanError(f"{where}: task #{index + 1} must be a table/dict, got {item!r}")
    label = f"{where}: task {item.get('name', '#' + str(index + 1))!r}"
    unknown = sorted(set(item) - set(TASK_KEYS))
    if unknown:
        raise SimplanError(f"{label}: unknown key {unknown[0]!r}; use {', '.join(TASK_KEYS)}")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise SimplanError(f"{label}: give each task a non-empty string `name`")
    if not item.get("loss"):
        raise SimplanError(f"{label}: has no loss; give `loss`, one of {', '.join(LOSSES)}")
    outputs = item.get("outputs")
    if isinstance(outputs, str):
        outputs = [outputs]
    if not isinstance(outputs, (list, tuple)) or not all(isinstance(o, str) for o in outputs):
        raise SimplanError(f"{label}: `outputs` must be a list of layer names")
    try:
        return TaskSpec(
            name=name,
            outputs=tuple(outputs),
            loss=str(item["loss"]),
            weight=_number(item.get("weight", 1.0), "weight", label),
            batch_share=_number(item.get("batch_share", 1.0), "batch_share", label),
        )
    except ValueError as exc:
        raise SimplanError(f"{where}: {exc}") from None


def _number(value: Any, key: str, label: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SimplanError(f"{label}: `{key}` must be a number, got {value!r}")
    return float(value)


def _check_names_and_outputs(tasks: tuple[TaskSpec, ...], graph: ModelGraph, where: str) -> None:
    seen: dict[str, str] = {}
    names = [t.name for t in tasks]
    for t in tasks:
        if names.count(t.name) > 1:
            raise SimplanError(f"{where}: task name {t.name!r} is declared twice; rename one")
        for out in t.outputs:
            if out not in graph.by_name:
                raise SimplanError(
                    f"{where}: task {t.name!r} names output layer {out!r}, which the model "
                    f"does not have; its last layers are {', '.join(_sinks(graph))}"
                )
            if out in seen:
                raise SimplanError(
                    f"{where}: layer {out!r} is claimed by two tasks ({seen[out]!r} and "
                    f"{t.name!r}); give each output to one task"
                )
            seen[out] = t.name


def _sinks(graph: ModelGraph) -> list[str]:
    fed = {s for s, _ in graph.edges}
    return [layer.name for layer in graph.layers if layer.name not in fed]


def _users(tasks: tuple[TaskSpec, ...], graph: ModelGraph, where: str) -> dict[str, frozenset[str]]:
    """For every layer, the tasks whose outputs it is or feeds."""
    preds: dict[str, list[str]] = {layer.name: [] for layer in graph.layers}
    for src, dst in graph.edges:
        preds[dst].append(src)
    users: dict[str, set[str]] = {layer.name: set() for layer in graph.layers}
    for t in tasks:
        stack = list(t.outputs)
        while stack:
            name = stack.pop()
            if t.name not in users[name]:
                users[name].add(t.name)
                stack.extend(preds[name])
    for t in tasks:
        for out in t.outputs:
            others = users[out] - {t.name}
            if others:
                raise SimplanError(
                    f"{where}: output layer {out!r} of task {t.name!r} also feeds task "
                    f"{sorted(others)[0]!r}; a task's output must not be another task's input"
                )
    idle = [name for name, who in users.items() if not who]
    if idle:
        raise SimplanError(
            f"{where}: layer {idle[0]!r} feeds no task's output; add it to a task's outputs"
        )
    return {name: frozenset(who) for name, who in users.items()}


def _check_heads_reach_trunk(
    heads: Mapping[str, tuple[str, ...]], trunk: tuple[str, ...], graph: ModelGraph, where: str
) -> None:
    shared = set(trunk)
    for task, layers in heads.items():
        if not layers:
            raise SimplanError(
                f"{where}: task {task!r} has no layer of its own (its outputs are trunk "
                "layers); give it a head"
            )
        mine = set(layers)
        if not any(s in shared and d in mine for s, d in graph.edges):
            raise SimplanError(
                f"{where}: the head of task {task!r} ({layers[0]}...) is not reachable from "
                "the trunk; connect it to the shared layers"
            )


def declared_outputs(graph: ModelGraph, tasks: TaskSet) -> tuple[str, ...]:
    """graph.meta["outputs"] (the order forward returns them), else the tasks' outputs."""
    listed = graph.meta.get("outputs")
    if listed:
        return tuple(str(x) for x in listed)
    return tuple(o for t in tasks.tasks for o in t.outputs)


def check_outputs(raw: Any, tasks: TaskSet, graph: ModelGraph) -> tuple[str, ...]:
    """Validate a model's OUTPUTS list: known layers, each task output listed exactly once."""
    where = f"model {graph.name}"
    if not isinstance(raw, (list, tuple)) or not all(isinstance(x, str) for x in raw):
        raise SimplanError(f"{where}: OUTPUTS must be a list of layer names")
    for name in raw:
        if name not in graph.by_name:
            raise SimplanError(f"{where}: OUTPUTS names layer {name!r}, which the model lacks")
    if len(set(raw)) != len(raw):
        raise SimplanError(f"{where}: OUTPUTS lists a layer twice")
    for t in tasks.tasks:
        for out in t.outputs:
            if out not in raw:
                raise SimplanError(
                    f"{where}: output {out!r} of task {t.name!r} is missing from OUTPUTS"
                )
    return tuple(raw)
