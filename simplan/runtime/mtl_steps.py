"""The pieces of a multi-task training step: the model cut into trunk and task heads (by the
model's task declarations, simplan.tasks), the tasks' losses on the rendered-shapes data
(simplan.shapes_data), and one step on one process with a weighting strategy
(simplan.runtime.task_weights).

Each task's gradient reaches the trunk's features z separately: every head reads its own view
of z, whose hook records g_t = d(w_t L_t)/dz, and z's own hook replaces the summed gradient by
the strategy's `trunk_grad` where the strategy aggregates (PCGrad, MGDA). So one backward pass
serves every strategy, as in a DDP step, and the per-task gradient norms cost nothing extra:
they are norms of the gradient on the shared features (the trunk's output).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simplan.errors import SimplanError
from simplan.model_graph import ModelGraph
from simplan.shapes_data import ShapesData
from simplan.tasks import TaskSet, TaskSpec


@dataclass(frozen=True, kw_only=True)
class StepStats:
    """One step's per-task losses, weights and gradient norms on the shared features."""

    losses: tuple[float, ...]
    weights: tuple[float, ...]
    grad_norms: tuple[float, ...]


class Split:
    """`module` run layer by layer along `graph`'s edges: the trunk up to its one output (the
    features the heads read), each task's head from the features to its outputs."""

    def __init__(self, module: Any, graph: ModelGraph, taskset: TaskSet) -> None:
        self.module, self.graph, self.taskset = module, graph, taskset
        trunk = set(taskset.trunk)
        fed = {s for s, d in graph.edges if s in trunk and d not in trunk}
        if len(fed) != 1:
            raise SimplanError(
                f"model {graph.name}: the multi-task runtime needs the heads to read one trunk "
                f"layer, they read {len(fed)}"
            )
        self.feature = fed.pop()
        for name in (*taskset.trunk, *(x for h in taskset.heads.values() for x in h)):
            if len(graph.predecessors(name)) > 1:
                raise SimplanError(
                    f"model {graph.name}: layer {name} has several inputs; the multi-task "
                    "runtime runs layers of one input each"
                )

    def _run(self, layers: tuple[str, ...], x: Any) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name in layers:
            preds = self.graph.predecessors(name)
            inp = values[preds[0]] if preds and preds[0] in values else x
            values[name] = self.module.get_submodule(name)(inp)
        return values

    def trunk(self, x: Any) -> Any:
        return self._run(self.taskset.trunk, x)[self.feature]

    def head(self, task: TaskSpec, z: Any) -> tuple[Any, ...]:
        values = self._run(self.taskset.heads[task.name], z)
        return tuple(values[name] for name in task.outputs)

    def parameters(self, layers: tuple[str, ...]) -> list[Any]:
        return [p for name in layers for p in self.module.get_submodule(name).parameters()]

    def heaviest_task(self) -> TaskSpec:
        """The task whose head costs the most FLOPs (task-parallel puts it alone), chosen as
        the simulator chooses it (simplan.sim.task_placement)."""
        from simplan.sim.task_placement import head_flops

        flops = head_flops(self.graph, self.taskset)
        return self.taskset.task(max(self.taskset.names, key=lambda t: (flops[t], t)))


def task_loss(task: TaskSpec, outputs: tuple[Any, ...], data: ShapesData) -> Any:
    """The task's loss on the shapes data: cross_entropy on the class label; detection =
    smooth L1 on the positive anchors' boxes + cross-entropy of every anchor's class (0
    background)."""
    import torch.nn.functional as F

    if task.loss == "cross_entropy" and len(outputs) == 1:
        return F.cross_entropy(outputs[0], data.labels)
    if task.loss == "detection" and len(outputs) == 2:
        box, cls = outputs
        n, anchors, grid = box.shape[0], data.box_mask.shape[1], box.shape[-1]
        box = box.reshape(n, anchors, 4, grid, grid).movedim(2, -1)
        target = data.box_target.reshape(n, anchors, 4, grid, grid).movedim(2, -1)
        regression = F.smooth_l1_loss(box[data.box_mask], target[data.box_mask])
        logits = cls.reshape(n, anchors, -1, grid, grid).movedim(2, 1)
        return regression + F.cross_entropy(logits, data.anchor_class)
    raise SimplanError(
        f"task {task.name}: the shapes data has no {task.loss} target for {len(outputs)} "
        "output(s); it labels cross_entropy (one output) and detection (box, class)"
    )


def step_rows(data: ShapesData, step: int, batch: int, lo: int, hi: int) -> ShapesData:
    """Rows lo..hi of step `step`'s global batch of `batch` samples (the data read cyclically)."""
    start = (step * batch) % (len(data) - batch + 1)
    return data.rows(start + lo, start + hi)


def split_views(z: Any, count: int, weighting: Any) -> tuple[list[Any], list[Any]]:
    """`count` views of z, one per task, and the list their hooks fill with g_t; z's hook hands
    the trunk the strategy's gradient (the sum unless it aggregates)."""
    captured: list[Any] = [None] * count
    views = []
    for i in range(count):
        view = z.view_as(z)
        view.register_hook(_capture(captured, i))
        views.append(view)
    z.register_hook(lambda g: weighting.trunk_grad(captured))
    return views, captured


def _capture(captured: list[Any], i: int) -> Any:
    def hook(g: Any) -> None:
        captured[i] = g

    return hook


def weighted_total(tasks: tuple[TaskSpec, ...], losses: list[Any], weights: list[float]) -> Any:
    """sum_t w_t L_t, each task also scaled by its declared weight."""
    total = 0.0
    for task, loss, w in zip(tasks, losses, weights, strict=True):
        total = total + task.weight * w * loss
    return total


def local_step(split: Split, weighting: Any, optimizer: Any, data: ShapesData) -> StepStats:
    """One step of every task on this process (no communication): forward, one backward,
    optimizer step, then the strategy's update."""
    tasks = split.taskset.tasks
    weights = weighting.weights()
    z = split.trunk(data.images)
    views, captured = split_views(z, len(tasks), weighting)
    losses = [task_loss(t, split.head(t, v), data) for t, v in zip(tasks, views, strict=True)]
    weighted_total(tasks, losses, weights).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    stats = StepStats(
        losses=tuple(float(x.detach()) for x in losses),
        weights=tuple(weights),
        grad_norms=tuple(float(g.norm()) for g in captured),
    )
    weighting.update(declared(tasks, stats.losses), list(stats.grad_norms))
    return stats


def declared(tasks: tuple[TaskSpec, ...], losses: tuple[float, ...]) -> list[float]:
    """The losses scaled by the tasks' declared weights (what the strategy balances)."""
    return [t.weight * x for t, x in zip(tasks, losses, strict=True)]
