"""Where the heads of a multi-task model run: an ILP (simplan.planner.task_ilp) over the trunk's
data-parallel size and each head's option (replicated, or a group of its own), costed with the
cost model and the topology as the step simulation costs them (simplan.sim.multitask); its choice
is simulated beside the two baselines, "everything replicated" and "one head per device", and
the fastest of the three that fits in memory is chosen (a plan never loses to the obvious)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from simplan.errors import SimplanError
from simplan.model_graph import ModelGraph
from simplan.parallel import ParallelConfig
from simplan.planner.ilp import SolveRecord
from simplan.planner.task_ilp import HeadChoice, HeadProblem, solve_heads
from simplan.profiles import Profile
from simplan.sim.multitask import TaskStepResult, simulate_tasks
from simplan.sim.task_costs import TaskCosts, cut_bytes_per_sample
from simplan.sim.task_placement import REPLICATED, TaskPlacement, named_placement, placement_of
from simplan.tasks import TaskSet

ILP = "ilp"
BASELINES = ("replicated", "head-per-device")


@dataclass(frozen=True, kw_only=True)
class TaskPlanChoice:
    """The ILP's placement and the baselines, simulated (fastest first), those that could not
    be (name: why), and the solve."""

    results: dict[str, TaskStepResult]
    refused: dict[str, str]
    solve: SolveRecord
    predicted_s: float | None = None  # the ILP's own estimate of its choice
    order: tuple[str, ...] = field(default=())
    devices: int = 0  # the devices the heads could use
    node_of: tuple[int, ...] = ()  # the node of each device of the cluster

    @property
    def chosen(self) -> str:
        return self.order[0]

    @property
    def best(self) -> TaskStepResult:
        return self.results[self.chosen]

    def plan_record(self) -> dict[str, Any]:
        """The chosen placement as a plan file's task_heads (simplan.planfile)."""
        p = self.best.placement
        return {
            "chosen": self.chosen,
            "global_batch": self.best.global_batch,
            "devices": list(p["devices"]),
            "heads": dict(p["heads"]),
            "step_time_s": self.best.step_s,
            "candidates": {k: self.results[k].step_s for k in self.order},
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen,
            "devices": self.devices,
            "placement": self.best.placement,
            "step_time_s": self.best.step_s,
            "candidates": {k: self.results[k].to_dict() for k in self.order},
            "refused": dict(self.refused),
            "ilp": {**self.solve.to_dict(), "predicted_step_s": self.predicted_s},
            "why": explain_tasks(self),
        }


def plan_heads(
    graph: ModelGraph,
    tasks: TaskSet,
    cluster: Any,
    config: ParallelConfig,
    *,
    devices: tuple[int, ...] | None = None,
    profile: Profile | None = None,
    time_limit_s: float = 10.0,
) -> TaskPlanChoice:
    """Place the heads on `devices` (default: every device of the cluster, the fastest first,
    so the trunk, which takes the first ones, gets them) for the configuration's global batch;
    module docstring."""
    devices = devices or fastest_first(cluster)
    costs = TaskCosts(graph, cluster, config, profile)
    problem = head_problem(graph, tasks, costs, devices)
    choice, solve = solve_heads(problem, time_limit_s=time_limit_s)
    candidates: dict[str, TaskPlacement] = {}
    refused: dict[str, str] = {}
    if choice is not None:
        candidates[ILP] = placement_from(choice, tasks, devices)
    else:
        refused[ILP] = f"the ILP found no placement ({solve.status})"
    for name in BASELINES:
        try:
            candidates[name] = named_placement(name, graph, tasks, devices, config.global_batch)
        except SimplanError as exc:
            refused[name] = str(exc)
    results: dict[str, TaskStepResult] = {}
    for name, placement in candidates.items():
        try:
            results[name] = simulate_tasks(
                graph, tasks, placement, cluster, config, profile=profile
            )
        except SimplanError as exc:
            refused[name] = str(exc)
    if not results:
        raise SimplanError(f"no head placement could be simulated: {'; '.join(refused.values())}")
    order = tuple(sorted(results, key=lambda k: (not results[k].fits, results[k].step_s, k != ILP)))
    return TaskPlanChoice(
        results=results,
        refused=refused,
        solve=solve,
        predicted_s=choice.objective_s if choice else None,
        order=order,
        devices=len(devices),
        node_of=tuple(d.node for d in cluster.devices),
    )


def task_config(base: ParallelConfig, global_batch: int) -> ParallelConfig:
    """The configuration a head placement is simulated with: data parallel over the
    placement's devices, at the base configuration's dtype and sequence length."""
    return ParallelConfig(global_batch=global_batch, dtype=base.dtype, seq_len=base.seq_len)


def placement_from_record(record: dict[str, Any], tasks: TaskSet, cluster: Any) -> TaskPlacement:
    """The placement of a plan file's task_heads (plan_record), checked against the tasks and
    the cluster (one SimplanError line)."""
    devices = tuple(record["devices"])
    if max(devices) >= cluster.num_devices:
        raise SimplanError(
            f"task_heads: device {max(devices)} is beyond the cluster's {cluster.num_devices} "
            "devices; regenerate the file with simplan plan"
        )
    heads = {t: tuple(g) for t, g in record["heads"].items() if g != REPLICATED}
    return placement_of(tasks, devices, heads, str(record.get("chosen", "")))


def fastest_first(cluster: Any) -> tuple[int, ...]:
    """The cluster's devices, the fastest (bf16 peak, then memory bandwidth) first; device
    order within a kind (nodes stay together)."""

    def speed(d: int) -> tuple[float, float]:
        model = cluster.device_model(d)
        return (-model.peak("bf16"), -model.memory_bandwidth_Bps)

    return tuple(sorted(range(cluster.num_devices), key=lambda d: (*speed(d), d)))


def placement_from(choice: HeadChoice, tasks: TaskSet, devices: tuple[int, ...]) -> TaskPlacement:
    """The trunk on the first devices, each placed head's group after it, in task order."""
    at = choice.trunk_size
    heads: dict[str, tuple[int, ...]] = {}
    for task, size in zip(tasks.names, choice.options, strict=True):
        if size:
            heads[task] = devices[at : at + size]
            at += size
    return placement_of(tasks, devices[:at], heads, ILP)


def _trunk_sizes(n: int, batch: int) -> tuple[int, ...]:
    return tuple(r for r in range(1, n + 1) if batch % r == 0)


def _group_sizes(n: int) -> tuple[int, ...]:
    sizes, s = [], 1
    while s < n:
        sizes.append(s)
        s *= 2
    return tuple(sizes)


def head_problem(
    graph: ModelGraph, tasks: TaskSet, costs: TaskCosts, devices: tuple[int, ...]
) -> HeadProblem:
    """The ILP's tables: every trunk size R dividing the batch, every group size a power of two
    below the device count; a head's group is costed at the end of the device list."""
    n, batch = len(devices), costs.config.global_batch
    rs, sizes = _trunk_sizes(n, batch), _group_sizes(n)
    trunk, trunk_fwd = [], []
    for r in rs:
        group = devices[:r]
        fwd, bwd, _ = costs.part(tasks.trunk, group, batch // r)
        sync = costs.ddp_sync(((tasks.trunk, batch // r),), group)[1]
        rest = sync + costs.optimizer_s(tasks.trunk, group)
        trunk.append(fwd + bwd + rest)
        trunk_fwd.append(fwd)
    rows = [_replicated_rows(tasks, t.name, costs, devices, rs) for t in tasks.tasks]
    placed = [_placed_rows(graph, tasks, t.name, costs, devices, rs, sizes) for t in tasks.tasks]
    return HeadProblem(
        devices=n,
        trunk_sizes=rs,
        group_sizes=sizes,
        trunk=tuple(trunk),
        trunk_fwd=tuple(trunk_fwd),
        local=tuple(r[0] for r in rows),
        trunk_extra=tuple(r[1] for r in rows),
        path=tuple(p[0] for p in placed),
        trunk_comm=tuple(p[1] for p in placed),
        tail=tuple(p[2] for p in placed),
    )


def _replicated_rows(
    tasks: TaskSet, task: str, costs: TaskCosts, devices: tuple[int, ...], rs: tuple[int, ...]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per trunk size: the replicated head's forward + backward on a replica, and what it adds
    to the trunk's gradient sync and optimizer step."""
    head, share, batch = tasks.heads[task], tasks.task(task).batch_share, costs.config.global_batch
    both = (*tasks.trunk, *head)
    local, extra = [], []
    for r in rs:
        group = devices[:r]
        fwd, bwd, _ = costs.part(head, group, _samples(batch * share / r))
        local.append(fwd + bwd)
        n = _samples(batch * share / r)
        trunk_part = (tasks.trunk, batch // r)
        sync = (
            costs.ddp_sync((trunk_part, (head, n)), group)[1]
            - costs.ddp_sync((trunk_part,), group)[1]
        )
        opt = costs.optimizer_s(both, group) - costs.optimizer_s(tasks.trunk, group)
        extra.append(max(sync, 0.0) + max(opt, 0.0))
    return tuple(local), tuple(extra)


def _placed_rows(
    graph: ModelGraph,
    tasks: TaskSet,
    task: str,
    costs: TaskCosts,
    devices: tuple[int, ...],
    rs: tuple[int, ...],
    sizes: tuple[int, ...],
) -> tuple[tuple[tuple[float, ...], ...], tuple[tuple[float, ...], ...], tuple[float, ...]]:
    """Per group size and trunk size: the placed head's path (features in, forward, backward,
    gradients out: a head device receives a slice from each of the R trunk devices, which each
    send one to each of the s head devices, one at a time at either end) and the trunk devices'
    share of the transfers (where they hold compute); per group size its tail (sync within the
    group, optimizer)."""
    head, share, batch = tasks.heads[task], tasks.task(task).batch_share, costs.config.global_batch
    cut, n = cut_bytes_per_sample(graph, tasks, task), len(devices)
    blocking = costs.comm_blocks_compute(devices)
    path, comm, tail = [], [], []
    for s in sizes:
        own = devices[n - s :]
        fwd, bwd, _ = costs.part(head, own, _samples(batch * share / s))
        tail.append(costs.grad_sync_s(head, own) + costs.optimizer_s(head, own[:1]))
        row_p, row_c = [], []
        for r in rs:
            send = costs.send_s(devices[:r], own, cut * (batch // r) * share / s)
            row_p.append(fwd + bwd + 2 * send * max(r, s))  # slices queue at both ends
            row_c.append(2 * send * s if blocking else 0.0)
        path.append(tuple(row_p))
        comm.append(tuple(row_c))
    return tuple(path), tuple(comm), tuple(tail)


def _samples(count: float) -> int:
    return max(1, round(count))


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.4g} ms"


def _where(result: TaskStepResult) -> str:
    p = result.placement
    heads = ", ".join(
        f"{t} {'replicated' if g == 'replicated' else 'on devices ' + span_text(g)}"
        for t, g in p["heads"].items()
    )
    return f"trunk on devices {span_text(p['trunk_devices'])}; {heads}"


def span_text(devices: list[int]) -> str:
    """Devices as A-B when contiguous, else comma-separated."""
    if len(devices) > 1 and devices == list(range(devices[0], devices[-1] + 1)):
        return f"{devices[0]}-{devices[-1]}"
    return ",".join(str(d) for d in devices)


def head_lines(result: TaskStepResult) -> list[str]:
    """Per head: where it runs, its samples per device and its seconds there."""
    lines = []
    for t in result.tasks:
        where = (
            "replicated with the trunk"
            if t["placement"] == "replicated"
            else f"alone on devices {span_text(t['placement'])}"
        )
        lines.append(
            f"{t['task']}: {where}, {t['samples_per_device']} samples a device, forward "
            f"{ms(t['fwd_s'])} + backward {ms(t['bwd_s'])}"
        )
    for c in result.cut:
        lines.append(
            f"{c['task']}'s features: {c['slices_each_way']} slice(s) of "
            f"{c['slice_bytes'] / 1e6:.3g} MB each way, {ms(c['slice_s'])} each"
        )
    return lines


def explain_tasks(choice: TaskPlanChoice) -> list[str]:
    """Why the chosen placement: each candidate's step and placement, and the comparison with
    both numbers."""
    best = choice.best
    out = [f"{name}: step {ms(choice.results[name].step_s)}; {_where(choice.results[name])}"
           + ("" if choice.results[name].fits else " (does not fit in memory)")
           for name in choice.order]  # fmt: skip
    out += [f"{name}: not possible here: {why}" for name, why in choice.refused.items()]
    trunk = best.trunk
    for name in choice.order[1:]:
        other = choice.results[name]
        ratio = other.step_s / best.step_s if best.step_s > 0 else 1.0
        out.append(
            f"{choice.chosen} ({ms(best.step_s)}) over {name} ({ms(other.step_s)}, "
            f"{ratio:.2f}x the step): {_reason(best, other)}"
        )
    out.append(
        f"chosen trunk: forward {ms(trunk['fwd_s'])} + backward {ms(trunk['bwd_s'])} a replica, "
        f"gradient all-reduce {ms(trunk['grad_sync_s'])}"
    )
    return out


def _trunk_device(result: TaskStepResult) -> dict[str, Any]:
    return next(d for d in result.devices if d["role"] == "trunk")


def _reason(best: TaskStepResult, other: TaskStepResult) -> str:
    """What differs: which heads moved, what a trunk device then computes and communicates,
    and what crosses the cut."""
    mine = {t["task"]: t for t in best.tasks}
    parts = []
    for t in other.tasks:
        o, m = t, mine[t["task"]]
        if m["placement"] == o["placement"]:
            continue
        where = (
            "replicated" if m["placement"] == "replicated" else f"on {span_text(m['placement'])}"
        )
        parts.append(
            f"{o['task']} {where} ({ms(m['fwd_s'] + m['bwd_s'])} a device, against "
            f"{ms(o['fwd_s'] + o['bwd_s'])})"
        )
    a, b = _trunk_device(best), _trunk_device(other)
    parts.append(
        f"a trunk device ({len(best.placement['trunk_devices'])} of them against "
        f"{len(other.placement['trunk_devices'])}) computes {ms(a['compute_s'])} and "
        f"communicates {ms(a['comm_s'])} against {ms(b['compute_s'])} and {ms(b['comm_s'])}"
    )
    moved = sum(2 * c["slices_each_way"] * c["slice_bytes"] for c in best.cut)
    if moved:
        parts.append(f"{moved / 1e6:.3g} MB of features and their gradients cross the cut")
    parts += [_sync_for_features(best, other, c) for c in best.cut if _replicated_in(other, c)]
    return "; ".join(parts)


def _replicated_in(result: TaskStepResult, cut: dict[str, Any]) -> bool:
    return any(t["task"] == cut["task"] and t["placement"] == "replicated" for t in result.tasks)


def _synced_params(result: TaskStepResult) -> float:
    """Parameters in the trunk devices' all-reduce: the trunk's and the replicated heads'."""
    heads = sum(t["params"] for t in result.tasks if t["placement"] == "replicated")
    return float(result.trunk.get("params", 0.0)) + heads


def _sync_for_features(best: TaskStepResult, other: TaskStepResult, cut: dict[str, Any]) -> str:
    """What a head placed alone trades: its gradients leave the trunk devices' all-reduce (the
    other placement's, every step) for one within its group, against its features (and their
    gradients) sent every step."""
    task = next(t for t in best.tasks if t["task"] == cut["task"])
    group = task["placement"]
    samples = round(cut["slices_each_way"] * cut["slice_bytes"] / cut["sample_bytes"])
    each_way = cut["slices_each_way"] * cut["slice_bytes"]
    return (
        f"{task['task']} alone trades its gradient sync for its features: its "
        f"{task['params'] / 1e6:.3g} M parameters leave {other.placement['name']}'s all-reduce "
        f"over {len(other.placement['trunk_devices'])} devices ({ms(other.trunk['grad_sync_s'])} "
        f"for {_synced_params(other) / 1e6:.3g} M parameters, "
        f"{ms(other.trunk['grad_sync_exposed_s'])} of it exposed) and all-reduce within its "
        f"{len(group)} device(s) in {ms(cut['grad_sync_s'])} (the trunk's own: "
        f"{ms(best.trunk['grad_sync_s'])}); in exchange {cut['sample_bytes'] / 1e6:.3g} MB of "
        f"features a sample x {samples} samples = {each_way / 1e6:.3g} MB go each way, "
        f"{cut['slices_each_way']} slice(s) of {ms(cut['slice_s'])}"
    )
