"""One training step of a multi-task model (simplan.tasks) for a placement of its heads
(simplan.sim.task_placement), simulated on SimPy (simplan.sim.task_engine).

The contract, which the runtime executes the same way:

- Data parallel only (tp = pp = cp = 1, no ZeRO, no compression). The global batch is split
  evenly over the trunk's devices (the devices no head takes); each trunk device runs the trunk's
  forward over its share and every replicated head over the samples that carry that head's
  labels (its batch_share of the share).
- A head on its own group of g devices receives, from every trunk device, 1/g of that device's
  trunk features for the head's samples (the outputs of the trunk layers that feed the head:
  point-to-point transfers costed on the topology, simplan.topology), trains on them, and sends
  the features' gradients back the same way. The trunk device sends its features to placed heads
  right after the trunk's forward, before running its own heads.
- The trunk's backward waits for every task's gradient. Then the trunk and the replicated heads
  all-reduce their gradients over the trunk devices (DDP: the collective model of the topology
  plus the framework's per-synchronisation and per-bucket costs of the cluster's calibration); a
  head on its own group all-reduces within that group only. Each device then runs the optimizer
  step over the parameters it holds.
- Layer times come from the cost model (simplan.sim.costs.layer_steps: a measured profile of the
  device where one matches, else the device model), at the samples each device runs, so the same
  function predicts a CPU run of the ranks from a profile measured on this machine.

`predict_task_step` is what `simplan validate` calls: 'replicated' is DDP of the whole model over
the ranks; 'task-parallel' on 2 ranks runs the trunk and the cheaper heads on rank 0 and the
heaviest head on rank 1, the features sent rank 0 -> rank 1 and their gradients back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from simplan.errors import SimplanError
from simplan.model_graph import ModelGraph
from simplan.parallel import ParallelConfig
from simplan.profiles import Profile
from simplan.sim.engine import Event
from simplan.sim.task_costs import TaskCosts, cut_bytes_per_sample
from simplan.sim.task_engine import EngineRun, HeadTimes, StepTimes, run_task_step
from simplan.sim.task_placement import TaskPlacement, named_placement
from simplan.tasks import TaskSet, load_tasks, parse_tasks


@dataclass(frozen=True, kw_only=True)
class TaskStepResult:
    """One simulated step of a multi-task model.

    step_s: the step; samples_per_s: global batch / step_s; trunk: its forward, backward,
    gradient all-reduce (whole and exposed) and optimizer seconds and its parameters; devices:
    per device its role, compute_s and comm_s (busy seconds), peak_memory_bytes and
    capacity_bytes; tasks: per task where it runs, its samples per device, its forward and
    backward seconds on one device and when they ran (start of the first, end of the last); cut:
    per placed head the bytes of features a sample (the trunk's outputs it reads) and of one
    slice, a slice's seconds one way, how many slices cross each way and the head's gradient
    all-reduce within its group; events: the timeline (simplan.sim.engine.Event).
    """

    model: str
    cluster: str
    placement: dict[str, Any]
    global_batch: int
    step_s: float
    samples_per_s: float
    trunk: dict[str, float]
    devices: tuple[dict[str, Any], ...]
    tasks: tuple[dict[str, Any], ...]
    cut: tuple[dict[str, Any], ...]
    cost_sources: dict[str, int]
    events: tuple[Event, ...] = field(default=(), repr=False, compare=False)

    @property
    def fits(self) -> bool:
        """Every device's peak memory within its capacity."""
        return all(d["peak_memory_bytes"] <= d["capacity_bytes"] for d in self.devices)

    def to_dict(self) -> dict[str, Any]:
        return {
            "fits_memory": self.fits,
            "model": self.model,
            "cluster": self.cluster,
            "placement": self.placement,
            "global_batch": self.global_batch,
            "step_time_s": self.step_s,
            "samples_per_s": self.samples_per_s,
            "trunk": self.trunk,
            "devices": list(self.devices),
            "tasks": list(self.tasks),
            "cut": list(self.cut),
            "cost_sources": self.cost_sources,
        }


def check_task_config(config: ParallelConfig, placement: TaskPlacement) -> None:
    """What the task simulation supports: data parallelism over the placement's devices (they
    replace the configuration's dp, which is not read)."""
    others = {
        "tp": config.tp,
        "pp": config.pp,
        "cp": config.cp,
        "zero": config.zero,
        "local_sgd": config.local_sgd,
        "staleness": config.staleness,
    }
    used = [f"{k}={v}" for k, v in others.items() if v not in (0, 1)]
    if used or config.compress != "none" or config.offload != "none":
        what = ", ".join(used) or "compression/offload"
        raise SimplanError(
            f"a task placement runs data parallel only; drop {what} (or drop the placement)"
        )
    trunk = len(placement.trunk_devices)
    if config.global_batch % trunk:
        raise SimplanError(
            f"global batch {config.global_batch} does not split over the {trunk} trunk "
            f"devices; choose a multiple of {trunk}"
        )


def simulate_tasks(
    graph: ModelGraph,
    tasks: TaskSet,
    placement: TaskPlacement,
    cluster: Any,
    config: ParallelConfig,
    *,
    profile: Profile | None = None,
    record: bool = True,
) -> TaskStepResult:
    """Simulate one step of the multi-task model for the placement (module docstring)."""
    check_task_config(config, placement)
    costs = TaskCosts(graph, cluster, config, profile)
    times, sources, samples = _step_times(graph, tasks, placement, costs, config)
    run = run_task_step(times)
    memory = _memory(tasks, placement, costs, samples)
    result = _result(graph, cluster, tasks, placement, config, times, run, sources, samples, record)
    return _with_memory(result, memory, cluster)


def _memory(
    tasks: TaskSet, placement: TaskPlacement, costs: TaskCosts, samples: dict[str, int]
) -> dict[int, float]:
    """Peak bytes per device: the trunk and the replicated heads on a trunk device, the heads
    of its group on a head device (TaskCosts.memory_bytes)."""
    trunk = placement.trunk_devices
    mine = [(tasks.trunk, samples["trunk"])]
    mine += [(tasks.heads[t], samples[t]) for t in tasks.names if not placement.group(t)]
    out = {d: costs.memory_bytes(tuple(mine), trunk) for d in trunk}
    for t in tasks.names:
        for d in placement.group(t):
            out[d] = out.get(d, 0.0) + costs.memory_bytes(((tasks.heads[t], samples[t]),), (d,))
    return out


def _with_memory(result: TaskStepResult, memory: dict[int, float], cluster: Any) -> TaskStepResult:
    devices = []
    for d in result.devices:
        capacity = cluster.device_model(d["device"]).memory_bytes
        peak = memory[d["device"]]
        devices.append({**d, "peak_memory_bytes": peak, "capacity_bytes": capacity})
    return dataclasses.replace(result, devices=tuple(devices))


def _samples(count: float) -> int:
    return max(1, round(count))


def _step_times(
    graph: ModelGraph,
    tasks: TaskSet,
    placement: TaskPlacement,
    costs: TaskCosts,
    config: ParallelConfig,
) -> tuple[StepTimes, list[str], dict[str, int]]:
    trunk_devs = placement.trunk_devices
    per_replica = config.global_batch // len(trunk_devs)
    t_fwd, t_bwd, sources = costs.part(tasks.trunk, trunk_devs, per_replica)
    heads, samples = [], {"trunk": per_replica}
    synced: list[tuple[tuple[str, ...], int]] = [(tasks.trunk, per_replica)]
    for t in tasks.tasks:
        layers, group = tasks.heads[t.name], placement.group(t.name)
        if not group:
            n = _samples(per_replica * t.batch_share)
            fwd, bwd, src = costs.part(layers, trunk_devs, n)
            heads.append(HeadTimes(task=t.name, devices=(), fwd_s=fwd, bwd_s=bwd))
            synced.append((layers, n))
        else:
            n = _samples(config.global_batch * t.batch_share / len(group))
            fwd, bwd, src = costs.part(layers, group, n)
            slice_bytes = (
                cut_bytes_per_sample(graph, tasks, t.name)
                * per_replica
                * t.batch_share
                / len(group)
            )
            heads.append(
                HeadTimes(
                    task=t.name,
                    devices=group,
                    fwd_s=fwd,
                    bwd_s=bwd,
                    send_s=costs.send_s(trunk_devs, group, slice_bytes),
                    send_bytes=slice_bytes,
                    sync_s=costs.grad_sync_s(layers, group),
                    optimizer_s=costs.optimizer_s(layers, group[:1]),
                )
            )
        samples[t.name] = n
        sources += src
    whole_sync, exposed = costs.ddp_sync(tuple(synced), trunk_devs)
    times = StepTimes(
        trunk_devices=trunk_devs,
        trunk_fwd_s=t_fwd,
        trunk_bwd_s=t_bwd,
        heads=tuple(heads),
        trunk_sync_s=exposed,
        trunk_sync_whole_s=whole_sync,
        trunk_optimizer_s=costs.optimizer_s(
            tuple(n for names, _ in synced for n in names), trunk_devs[:1]
        ),
        comm_blocks_compute=costs.comm_blocks_compute(placement.devices),
    )
    return times, sources, samples


def _result(
    graph: ModelGraph,
    cluster: Any,
    tasks: TaskSet,
    placement: TaskPlacement,
    config: ParallelConfig,
    times: StepTimes,
    run: EngineRun,
    sources: list[str],
    samples: dict[str, int],
    record: bool,
) -> TaskStepResult:
    head_of: dict[int, list[str]] = {}
    for h in times.heads:
        for d in h.devices:
            head_of.setdefault(d, []).append(h.task)
    devices = tuple(
        {
            "device": d,
            "role": f"head {'+'.join(head_of[d])}" if d in head_of else "trunk",
            "compute_s": run.compute_s.get(d, 0.0),
            "comm_s": run.comm_s.get(d, 0.0),
        }
        for d in placement.devices
    )
    timeline = {tl.task: tl for tl in run.timelines}
    task_rows = tuple(
        {
            "task": h.task,
            "placement": list(h.devices) if h.devices else "replicated",
            "samples_per_device": samples[h.task],
            "fwd_s": h.fwd_s,
            "bwd_s": h.bwd_s,
            "fwd_span_s": [timeline[h.task].fwd_start_s, timeline[h.task].fwd_end_s],
            "bwd_span_s": [timeline[h.task].bwd_start_s, timeline[h.task].bwd_end_s],
            "params": sum(graph.layer(n).params for n in tasks.heads[h.task]),
        }
        for h in times.heads
    )
    cut = tuple(
        {
            "task": h.task,
            "sample_bytes": cut_bytes_per_sample(graph, tasks, h.task),
            "slice_bytes": h.send_bytes,
            "slice_s": h.send_s,
            "slices_each_way": len(h.devices) * len(times.trunk_devices),
            "grad_sync_s": h.sync_s,
        }
        for h in times.heads
        if h.devices
    )
    return TaskStepResult(
        model=graph.name,
        cluster=str(getattr(cluster, "name", cluster)),
        placement=placement.to_dict(),
        global_batch=config.global_batch,
        step_s=run.step_s,
        samples_per_s=config.global_batch / run.step_s if run.step_s > 0 else 0.0,
        trunk={
            "fwd_s": times.trunk_fwd_s,
            "bwd_s": times.trunk_bwd_s,
            "grad_sync_s": times.trunk_sync_whole_s,
            "grad_sync_exposed_s": times.trunk_sync_s,
            "optimizer_s": times.trunk_optimizer_s,
            "params": float(sum(graph.layer(n).params for n in tasks.trunk)),
        },
        devices=devices,
        tasks=task_rows,
        cut=cut,
        cost_sources={s: sources.count(s) for s in sorted(set(sources))},
        events=run.events if record else (),
    )


def predict_task_step(
    model_spec: str,
    placement_name: str,
    nprocs: int,
    cluster: Any,
    batch: int,
    *,
    profile: Profile | None = None,
    dtype: str = "fp32",
) -> TaskStepResult:
    """The step of `nprocs` ranks training the model's tasks on `batch` samples per step with a
    named placement (simplan.sim.task_placement.NAMED; module docstring)."""
    from simplan.sources import load_model

    graph = profile.model if profile is not None else load_model(model_spec, dtype=dtype)
    tasks = load_tasks(graph)
    if tasks is None and profile is not None:  # a profile measured before tasks were kept
        declared = load_model(model_spec, dtype=dtype).meta.get("tasks")
        tasks = parse_tasks(declared, graph) if declared else None
    if tasks is None:
        raise SimplanError(f"model {model_spec} declares no tasks; give a multi-task model")
    devices = tuple(range(nprocs))
    placement = named_placement(placement_name, graph, tasks, devices)
    config = ParallelConfig(dp=nprocs, micro_batch=1, global_batch=batch, dtype=dtype)
    return simulate_tasks(graph, tasks, placement, cluster, config, profile=profile, record=False)
