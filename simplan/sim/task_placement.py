"""Where each head of a multi-task model runs: with the trunk on every data-parallel replica
('replicated'), or alone on a group of devices of its own (the trunk runs on the job's other
devices and sends them its features).

Named placements (`named_placement`):
- 'replicated': every head with the trunk on every device (plain data parallelism);
- 'task-parallel': the heaviest head (by its training FLOPs, weighted by its batch share) on the
  last n // 2 of the n devices, the trunk and the other heads replicated on the rest; on 2 ranks:
  rank 0 runs the trunk and the cheaper heads, rank 1 the heaviest head;
- 'head-per-device': each head on a device of its own (the k devices after the trunk's for k
  heads), the trunk replicated on the others.
Or the CLI's `TASK=RANKS[,TASK=RANKS...]` with RANKS `N` or `A-B` (`detect=1`, `lm=2-3,tag=1`);
tasks not named stay replicated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from simplan.errors import SimplanError
from simplan.model_graph import ModelGraph
from simplan.tasks import TaskSet

REPLICATED = "replicated"
NAMED = ("replicated", "task-parallel", "head-per-device")


@dataclass(frozen=True, kw_only=True)
class TaskPlacement:
    """devices: the job's devices; heads: per task, REPLICATED or the devices it runs on alone
    (groups of two heads are the same or disjoint); the trunk runs on the devices no head takes."""

    devices: tuple[int, ...]
    heads: Mapping[str, str | tuple[int, ...]]
    name: str = ""

    def __post_init__(self) -> None:
        if not self.devices or len(set(self.devices)) != len(self.devices):
            raise ValueError("devices: give distinct device indices, at least one")
        groups = [g for g in self.heads.values() if not isinstance(g, str)]
        for task, where in self.heads.items():
            if isinstance(where, str):
                if where != REPLICATED:
                    raise ValueError(f"heads[{task}]: {where!r}; use {REPLICATED!r} or devices")
                continue
            if not where or not set(where) <= set(self.devices):
                raise ValueError(
                    f"heads[{task}]: devices {list(where)} are not a non-empty subset of the "
                    f"job's devices {list(self.devices)}"
                )
            for other in groups:
                if set(other) & set(where) and set(other) != set(where):
                    raise ValueError(
                        f"heads[{task}]: devices {list(where)} partly overlap another head's "
                        f"{list(other)}; give heads the same group or disjoint ones"
                    )
        if not self.trunk_devices:
            raise ValueError("the heads take every device: leave at least one for the trunk")

    @property
    def trunk_devices(self) -> tuple[int, ...]:
        taken = {d for g in self.heads.values() if not isinstance(g, str) for d in g}
        return tuple(d for d in self.devices if d not in taken)

    def group(self, task: str) -> tuple[int, ...]:
        """The head's own devices, () when it is replicated."""
        where = self.heads.get(task, REPLICATED)
        return () if isinstance(where, str) else tuple(where)

    @property
    def assignment(self) -> str:
        """TASK=RANKS of the placed heads (in --task-placement's form), or 'replicated'."""
        placed = [f"{t}={_ranks_text(self.group(t))}" for t in self.heads if self.group(t)]
        return ",".join(placed) or REPLICATED

    @property
    def label(self) -> str:
        return self.name or self.assignment

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.label,
            "assignment": self.assignment,
            "devices": list(self.devices),
            "trunk_devices": list(self.trunk_devices),
            "heads": {t: (list(g) if (g := self.group(t)) else REPLICATED) for t in self.heads},
        }


def _ranks_text(ranks: tuple[int, ...]) -> str:
    if len(ranks) > 1 and list(ranks) == list(range(ranks[0], ranks[-1] + 1)):
        return f"{ranks[0]}-{ranks[-1]}"
    return "+".join(str(r) for r in ranks)


def placement_of(
    tasks: TaskSet, devices: tuple[int, ...], heads: Mapping[str, tuple[int, ...]], name: str = ""
) -> TaskPlacement:
    """A placement with the given heads on their groups and the others replicated; bad input
    is a one-line SimplanError."""
    full: dict[str, str | tuple[int, ...]] = {t: REPLICATED for t in tasks.names}
    for task, group in heads.items():
        if task not in full:
            raise SimplanError(f"no task {task!r}; the tasks are {', '.join(tasks.names)}")
        full[task] = tuple(group)
    try:
        return TaskPlacement(devices=devices, heads=full, name=name)
    except ValueError as exc:
        raise SimplanError(f"task placement: {exc}") from None


def head_flops(graph: ModelGraph, tasks: TaskSet) -> dict[str, float]:
    """Training FLOPs per sample of each head, weighted by the share of the batch it sees."""
    return {
        t.name: t.batch_share
        * sum(graph.layer(n).fwd_flops + graph.layer(n).bwd_flops for n in tasks.heads[t.name])
        for t in tasks.tasks
    }


def named_placement(
    name: str,
    graph: ModelGraph,
    tasks: TaskSet,
    devices: tuple[int, ...],
    batch: int | None = None,
) -> TaskPlacement:
    """One of NAMED (module docstring). With `batch`, head-per-device gives the trunk the most
    devices that split the batch evenly (the others stay idle)."""
    n = len(devices)
    if name == REPLICATED:
        return placement_of(tasks, devices, {}, name)
    if name == "task-parallel":
        if n < 2:
            raise SimplanError("task-parallel needs at least 2 ranks; add a rank or use replicated")
        flops = head_flops(graph, tasks)
        heaviest = max(tasks.names, key=lambda t: (flops[t], t))
        return placement_of(tasks, devices, {heaviest: devices[n - n // 2 :]}, name)
    if name == "head-per-device":
        k = len(tasks.names)
        if n < k + 1:
            raise SimplanError(
                f"head-per-device needs {k + 1} ranks ({k} heads + the trunk), got {n}"
            )
        trunk = n - k
        while batch and batch % trunk:
            trunk -= 1
        own = {t: (devices[trunk + i],) for i, t in enumerate(tasks.names)}
        return placement_of(tasks, devices[: trunk + k], own, name)
    raise SimplanError(f"unknown task placement {name!r}; use {', '.join(NAMED)} or TASK=RANKS")


def parse_placement(
    text: str, graph: ModelGraph, tasks: TaskSet, devices: tuple[int, ...]
) -> TaskPlacement:
    """A named placement or `TASK=RANKS[,TASK=RANKS...]` (module docstring)."""
    text = text.strip()
    if "=" not in text:
        return named_placement(text, graph, tasks, devices)
    heads: dict[str, tuple[int, ...]] = {}
    for entry in text.split(","):
        task, _, ranks = entry.partition("=")
        task = task.strip()
        if task in heads:
            raise SimplanError(f"--task-placement names task {task!r} twice")
        heads[task] = _parse_ranks(ranks.strip(), entry, len(devices))
    return placement_of(tasks, devices, {t: tuple(devices[r] for r in g) for t, g in heads.items()})


def _parse_ranks(text: str, entry: str, world: int) -> tuple[int, ...]:
    lo, sep, hi = text.partition("-")
    try:
        ranks = tuple(range(int(lo), int(hi) + 1)) if sep else (int(lo),)
    except ValueError:
        raise SimplanError(
            f"--task-placement {entry!r}: give ranks as N or A-B (e.g. detect=1 or lm=2-3)"
        ) from None
    if not ranks or min(ranks) < 0 or max(ranks) >= world:
        raise SimplanError(
            f"--task-placement {entry!r}: ranks must lie in 0..{world - 1} (the job's ranks)"
        )
    return ranks
