"""The multi-task flags and output: `simulate --task-placement` and the head placement that
`plan` adds for a model that declares tasks (simplan.tasks)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from simplan.errors import SimplanError
from simplan.model_graph import ModelGraph
from simplan.parallel import ParallelConfig
from simplan.table import render
from simplan.units import GiB

PLACEMENT_HELP = (
    "simulate a multi-task model (one that declares tasks) with its heads placed: "
    "'replicated' (every head with the trunk on every device: plain data parallel), "
    "'task-parallel' (the heaviest head alone on the last half of the devices), "
    "'head-per-device', or TASK=RANKS[,TASK=RANKS...] with RANKS N or A-B "
    "(e.g. detect=1 or lm=6-7,tag=5): those heads run alone there, the trunk and the other "
    "heads on the remaining devices"
)


def add_task_placement_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task-placement", metavar="PLACEMENT", help=PLACEMENT_HELP)


def tasks_of(graph: ModelGraph, flag: str) -> Any:
    from simplan.tasks import load_tasks

    tasks = load_tasks(graph)
    if tasks is None:
        raise SimplanError(
            f"{flag}: model {graph.name} declares no tasks (TASKS in its module or [[task]] "
            "tables); give a multi-task model such as mtl-vision"
        )
    return tasks


def simulate_placement(
    args: argparse.Namespace,
    graph: ModelGraph,
    cluster: Any,
    config: ParallelConfig,
    profile: Any,
) -> int:
    """`simulate --task-placement`: one step of the tasks, printed (or --json), --trace."""
    from simplan.sim.task_placement import parse_placement

    tasks = tasks_of(graph, "--task-placement")
    devices = tuple(range(cluster.num_devices))
    placement = parse_placement(args.task_placement, graph, tasks, devices)
    return _simulate_and_print(args, graph, tasks, placement, cluster, config, profile)


def simulate_plan_heads(args: argparse.Namespace, plan: Any) -> int:
    """`simulate --plan FILE` of a plan with task_heads: the step of the tasks with the heads
    where the plan put them, at the plan's global batch, dtype and sequence length."""
    from simplan.planner.tasks import placement_from_record, task_config
    from simplan.sim.run import resolve_model

    record = plan.extra["task_heads"]
    config = task_config(plan.config, record["global_batch"])
    graph = resolve_model(plan.model, config)
    tasks = tasks_of(graph, f"{args.plan}: task_heads")
    cluster = plan.cluster.load()
    placement = placement_from_record(record, tasks, cluster)
    profile = None
    if args.profile:
        from simplan.profiles import read_profile

        profile = read_profile(args.profile)
    if not args.json and "step_time_s" in record:
        from simplan.planner.tasks import ms

        print(f"head placement of {args.plan} (planned step {ms(record['step_time_s'])})")
    return _simulate_and_print(args, graph, tasks, placement, cluster, config, profile)


def _simulate_and_print(
    args: argparse.Namespace,
    graph: ModelGraph,
    tasks: Any,
    placement: Any,
    cluster: Any,
    config: ParallelConfig,
    profile: Any,
) -> int:
    from simplan.sim.multitask import simulate_tasks
    from simplan.sim.task_trace import write_task_trace

    result = simulate_tasks(
        graph, tasks, placement, cluster, config, profile=profile, record=bool(args.trace)
    )
    if args.trace:
        write_task_trace(result, args.trace)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
        return 0
    print_task_step(result)
    if args.trace:
        print(f"trace written to {args.trace} (open it in https://ui.perfetto.dev)")
    return 0


def print_task_step(result: Any) -> None:
    from simplan.planner.tasks import head_lines, ms, span_text

    p = result.placement
    print(
        f"{result.model} on {result.cluster}, heads {p['name']}: step {ms(result.step_s)}, "
        f"{result.samples_per_s:,.1f} samples/s (global batch {result.global_batch})"
    )
    trunk = result.trunk
    print(
        f"trunk on devices {span_text(p['trunk_devices'])}: forward {ms(trunk['fwd_s'])}, backward "
        f"{ms(trunk['bwd_s'])}, gradient all-reduce {ms(trunk['grad_sync_s'])} "
        f"({ms(trunk['grad_sync_exposed_s'])} exposed), optimizer {ms(trunk['optimizer_s'])}"
    )
    for line in head_lines(result):
        print(f"- {line}")
    rows = [
        [
            d["device"],
            d["role"],
            ms(d["compute_s"]),
            ms(d["comm_s"]),
            f"{d['peak_memory_bytes'] / GiB:.2f} / {d['capacity_bytes'] / GiB:.0f}",
        ]
        for d in result.devices
    ]
    headers = ["device", "runs", "compute", "communication", "peak / capacity GiB"]
    print(render(headers, rows, align="llrrr"))
    if not result.fits:
        print("does not fit: a device's peak memory exceeds its capacity")


def plan_heads_for(args: argparse.Namespace, plan: Any) -> Any:
    """For a model that declares tasks: the heads placed on the whole cluster (--nodes,
    --gpus-per-node) for the global batch (simplan.planner.tasks), else None."""
    from simplan.planner.tasks import plan_heads, task_config
    from simplan.sim.run import resolve_model
    from simplan.tasks import load_tasks
    from simplan.topology import load_cluster

    graph = resolve_model(plan.model, plan.config)
    tasks = load_tasks(graph)
    if tasks is None:
        return None
    config = task_config(plan.config, args.global_batch)
    cluster = load_cluster(args.cluster, nodes=args.nodes, gpus_per_node=args.gpus_per_node)
    return plan_heads(graph, tasks, cluster, config, time_limit_s=min(10.0, args.time_limit))


def print_heads_choice(choice: Any, explain: bool) -> None:
    """The chosen head placement, each head's place, and the simulated steps compared."""
    from simplan.planner.tasks import explain_tasks, head_lines, ms, span_text

    best = choice.best
    used = len(best.placement["devices"])
    print(
        f"task heads: {choice.chosen} placement, step {ms(best.step_s)} on {used} of "
        f"{choice.devices} devices ({best.placement['assignment']})"
    )
    print(f"- trunk on devices {span_text(best.placement['trunk_devices'])}")
    for line in head_lines(best):
        print(f"- {line}")
    rows = [
        [
            name,
            ms(choice.results[name].step_s),
            _devices_text(choice.results[name])
            + ("" if choice.results[name].fits else " (does not fit in memory)"),
        ]
        for name in choice.order
    ]
    rows += [[name, "-", why] for name, why in choice.refused.items()]
    print(render(["placement", "step", "heads"], rows, align="lrl"))
    s = choice.solve
    gap = f", gap {s.gap:.2%}" if s.gap is not None else ""
    print(
        f"ILP {s.problem}: {s.solver} {s.status} (sol_status {s.sol_status}{gap}) in "
        f"{s.solve_s * 1e3:.0f} ms, predicted {ms(choice.predicted_s or 0.0)}"
    )
    if explain:
        print("why (heads):")
        for line in explain_tasks(choice):
            print(f"- {line}")


def _devices_text(result: Any) -> str:
    p = result.placement
    devices, trunk = p["devices"], p["trunk_devices"]
    return f"{p['assignment']}; trunk on {len(trunk)} of {len(devices)} device(s) used"
