"""`simplan simulate`: one training step of a parallel configuration, event by event."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from simplan.commands import add_verb
from simplan.commands.argtypes import GPUS_PER_NODE, HEADROOM, HEADROOM_HELP, NODES, Text
from simplan.commands.config_flags import add_config_flags, config_from_args
from simplan.commands.distill_flags import add_teacher_flags, check_teacher_flags, distillations
from simplan.commands.flag_rules import check_config, check_model
from simplan.commands.model_flags import add_model_knob_flags, model_spec
from simplan.commands.task_flags import (
    add_task_placement_flag,
    simulate_placement,
    simulate_plan_heads,
)
from simplan.devices import STACKS
from simplan.errors import EXIT_DOES_NOT_FIT, SimplanError
from simplan.headroom import describe_overheads
from simplan.model_graph import ModelGraph
from simplan.parallel import ParallelConfig
from simplan.planfile import FRAMEWORK_NAMES
from simplan.table import render
from simplan.units import GiB

HELP = """\
Simulate one training step of MODEL on CLUSTER under a parallel configuration and print the step
time, throughput, MFU, per-stage breakdown (compute, exposed communication, pipeline bubble,
recomputation) and memory. dp defaults to the devices left over by tp and pp.

examples:
  simplan simulate --model gpt3-1.3b --cluster dgx-a100 --global-batch 64 --tp 2 --pp 2
  simplan simulate --model gpt3-175b --cluster dgx-a100 --nodes 128 --global-batch 1536 \\
      --tp 8 --pp 16 --recompute full --trace step.json          # open step.json in Perfetto
  simplan simulate --model mlp --cluster localhost-cpu --global-batch 128 --micro-batch 64 \\
      --dtype fp32 --profile traces/profiles/<cpu>/mlp-fp32-mb64-s0.json
  simplan simulate --plan plan.json --json
  simplan simulate --model mlp --cluster mixed-a100-h100 --global-batch 1024 --staleness 4
      # also asynchronous DP with bounded staleness 4: updates/s and the staleness seen
  simplan simulate --model gpt3-6.7b --cluster dgx-a100 --gpus-per-node 1 --global-batch 8 \\
      --recompute full --offload optimizer     # Adam on the host CPU, traffic on PCIe
  simplan simulate --model llama3-8b --cluster dgx-h100 --global-batch 256 --zero 3 \\
      --framework torchtitan      # refused in one line if torchtitan cannot run it
  simplan simulate --model llama3-8b --cluster dgx-h100 --global-batch 16 --zero 3 \\
      --recompute op      # torchtitan's per-op selective checkpointing of every block
  simplan simulate --model mtl-vision --cluster localhost-cpu --global-batch 8 --dtype fp32 \\
      --task-placement detect=1   # the detection head alone on rank 1, the trunk and the
                                  # classification head on rank 0 (see docs/multitask.md)

exit status: 0 when the step fits in every device's memory; 3 when it does not (the result is
still printed, and stderr says which stage needs how much); 2 for bad input.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_verb(subparsers, "simulate", "simulate one training step", HELP)
    p.add_argument("--model", help="preset, model.toml or file.py:factory")
    add_model_knob_flags(p)
    p.add_argument("--cluster", help="cluster preset or TOML file (see `simplan clusters`)")
    p.add_argument("--nodes", type=NODES, help="scale the cluster to N nodes")
    p.add_argument("--gpus-per-node", type=GPUS_PER_NODE, help="use G devices of each node")
    p.add_argument(
        "--stack",
        choices=STACKS,
        help="the training stack the GPUs' rates describe: 'fitted' (the presets as fitted, "
        "end to end, on llm-foundry's 2023 MPT runs: matrix kernels at 0.54 (H100) / 0.72 "
        "(A100) of peak, its fused attention at 0.70 / 0.90 of that; the default) or 'kernels' "
        "(matrix and attention kernels at the GPU's measured maximum achievable matmul rate: "
        "stacks of fused kernels and CUDA graphs such as Megatron-Core with Transformer "
        "Engine); both pay at least a 5 us launch per operation; a cluster "
        "file may set it with stack = ...",
    )
    p.add_argument(
        "--plan",
        help="simulate a plan file instead (written by `simplan plan`); one with a multi-task "
        "model's head placement (task_heads) simulates that placement",
    )
    add_config_flags(p, defaults={"dp": None, "global_batch": None})
    p.add_argument(
        "--framework",
        choices=FRAMEWORK_NAMES,
        help="first check that this framework can run the configuration (one line saying "
        "why not, exit 2); the rules of simplan plan --framework and simplan export",
    )
    p.add_argument("--profile", help="a measured profile (JSON) to use where it matches")
    p.add_argument(
        "--efficiency",
        action="append",
        default=[],
        type=Text(),
        metavar="KNOB[=V]:E",
        help="declare the statistical efficiency of the configuration's knob, e.g. "
        "local_sgd=8:0.8 or staleness=4:0.9 (or a JSON file of them); with it or "
        "--efficiency-table the goodput (samples/s x efficiency) is printed",
    )
    p.add_argument(
        "--efficiency-table",
        type=Text(),
        metavar="FILE",
        help="statistical efficiency measured by benchmarks/stat_efficiency.py, e.g. "
        "traces/efficiency/mlp-teacher.json",
    )
    p.add_argument("--memory-headroom", type=HEADROOM, metavar="GIB|PCT%", help=HEADROOM_HELP)
    p.add_argument("--trace", metavar="FILE", help="write a Chrome trace (Perfetto) of the step")
    p.add_argument(
        "--explain",
        action="store_true",
        help="with --prune: what pruning changes (parameters, FLOPs, gradient bytes, and the "
        "simulated step's time, exposed communication and peak memory, before and after); "
        "with --teacher: every placement's step, memory and logits traffic, and why the chosen "
        "one wins",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--report", metavar="DIR", help="write figures and DIR/index.md of the step")
    add_task_placement_flag(p)
    add_teacher_flags(p)
    p.add_argument(
        "--teacher-profile",
        metavar="FILE",
        help="a measured profile (JSON) of the teacher to use where it matches (e.g. one a "
        "distillation validation recorded)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    args.model = model_spec(args)
    from simplan.headroom import DEFAULT_HEADROOM
    from simplan.sim.result import write_trace
    from simplan.sim.run import simulate

    check_outputs(args)
    check_teacher_flags(args)
    _check_task_flags(args)
    if args.explain and not (
        args.teacher or getattr(args, "prune", None) or "#" in (args.model or "")
    ):
        raise SimplanError(
            "simulate --explain explains a --teacher's placement or what --prune changes: add one"
        )
    if args.plan and not args.task_placement:
        from simplan.planfile import read_plan

        plan = read_plan(args.plan)
        if "task_heads" in plan.extra:
            _check_task_flags(args, "a plan file with task_heads")
            return simulate_plan_heads(args, plan)
    model, cluster, config, placement = _inputs(args)
    if args.framework:
        from simplan.planner.export import unsupported

        why = unsupported(args.framework, config, args.model or str(model))
        if why is not None:
            raise SimplanError(f"{why} (--framework {args.framework})")
    profile = None
    if args.profile:
        from simplan.profiles import read_profile

        profile = read_profile(args.profile)
    if args.task_placement:
        assert isinstance(model, ModelGraph)
        return simulate_placement(args, model, cluster, config, profile)
    result = simulate(
        model,
        cluster,
        config,
        profile=profile,
        placement=placement or None,
        record=bool(args.trace or args.report),
        headroom=args.memory_headroom or DEFAULT_HEADROOM,
    )
    distill = _distill(args, model, cluster, config, profile, result)
    asynchronous = _async(model, cluster, config, result, placement)
    goodput = _goodput(args, config, result, asynchronous)
    if args.trace:
        write_trace(result, args.trace)
    effects = knob_effects(args, model, cluster, config, placement, result)
    if args.report:
        from simplan.report import write_simulation_report

        index = write_simulation_report(
            result, args.report, flag="--report", extra=knob_sections(effects)
        )
        print(f"report written to {index}", file=sys.stderr if args.json else sys.stdout)
    if args.json:
        out = result.to_dict() | _public(effects)
        if asynchronous is not None:
            out["async_dp"] = asynchronous.to_dict()
        if goodput is not None:
            out["goodput"] = goodput.to_dict()
        if distill is not None:
            out["distillation"] = distill.to_dict()
        print(json.dumps(out, indent=1))
    else:
        print_result(result)
        for line in effects.get("explain", []):
            print(f"- {line}")
        if asynchronous is not None:
            print_async(asynchronous, config)
        if goodput is not None:
            e = goodput.efficiency
            print(
                f"goodput {goodput.goodput:.4g} samples/s = {goodput.samples_per_s:.4g} samples/s "
                f"x statistical efficiency {e.value:.3f} ({e.source})"
            )
        if distill is not None:
            print_distill(distill, args.explain)
        if args.trace:
            print(f"trace written to {args.trace} (open it in https://ui.perfetto.dev)")
    shortfall = memory_shortfall(result) or (distill.shortfall() if distill else "")
    if shortfall:
        print(f"simplan simulate: does not fit: {shortfall}", file=sys.stderr)
        return EXIT_DOES_NOT_FIT
    return 0


def _check_task_flags(args: argparse.Namespace, what: str = "--task-placement") -> None:
    """--task-placement (or a plan file's head placement, `what`) simulates the tasks' step
    alone: the flags it cannot honour refused."""
    if what == "--task-placement" and not args.task_placement:
        return
    given = [
        flag
        for flag, value in (
            ("--plan", args.plan if what == "--task-placement" else None),
            ("--teacher", args.teacher),
            ("--report", args.report),
            ("--framework", args.framework),
            ("--explain", args.explain),
        )
        if value
    ]
    if given:
        raise SimplanError(f"{what} does not combine with {', '.join(given)}; drop it")


def _async(
    model: str | ModelGraph, cluster: Any, config: ParallelConfig, step: Any, placement: list[int]
) -> Any:
    """With --staleness s > 0: asynchronous DP of the configuration (simplan.sim.async_dp)."""
    if config.staleness == 0:
        return None
    from simplan.sim.async_dp import simulate_async_step
    from simplan.sim.run import resolve_model

    graph = resolve_model(model, config)
    return simulate_async_step(graph, cluster, config, step, placement or None)


def _goodput(args: argparse.Namespace, config: ParallelConfig, step: Any, asynchronous: Any) -> Any:
    """With --efficiency or --efficiency-table: the configuration's goodput (simplan.planner.
    goodput.Variant); asynchronous DP counts the samples/s of its updates, and its measured
    efficiency is read at the mean staleness its updates saw (a declared one is taken as is)."""
    if not args.efficiency and not args.efficiency_table:
        return None
    from simplan.efficiency import at_mean_staleness, efficiency
    from simplan.planner.goodput import Variant, sources_from_flags

    sources = sources_from_flags(args.efficiency, args.efficiency_table)
    if asynchronous is None:
        eff = efficiency(config, sources)
        return Variant(config=config, samples_per_s=step.samples_per_s, efficiency=eff)
    rate = asynchronous.updates_per_s * (config.global_batch // config.dp)
    if ("staleness", config.staleness) in sources.declared or sources.table is None:
        eff = efficiency(config, sources)
    else:  # the staleness the run saw, not its bound
        eff = at_mean_staleness(sources.table, asynchronous.staleness_mean)
    return Variant(config=config, samples_per_s=rate, efficiency=eff)


def print_async(res: Any, config: ParallelConfig) -> None:
    per_replica = config.global_batch // config.dp
    print(
        f"asynchronous DP (parameter server, at most {res.bound} gradients ahead of the "
        f"slowest worker): {res.updates_per_s:.2f} updates/s = "
        f"{res.updates_per_s * per_replica:.2f} samples/s at {per_replica} samples per update"
    )
    print(
        f"staleness (updates applied between a gradient's read and its apply): mean "
        f"{res.staleness_mean:.2f}, max {res.staleness_max}, over {res.updates} updates; "
        f"waiting on the bound: {max(res.blocked_s) / res.duration_s:.0%} of the time for "
        f"the most-blocked worker"
    )


def memory_shortfall(result: Any) -> str:
    """'' when every device's peak fits its memory less the headroom, else how far the fullest
    one overflows."""
    over = [d for d in result.devices if not d.fits]
    if not over:
        return ""
    worst = max(over, key=lambda d: d.peak_memory_bytes / d.usable_bytes)
    share = worst.peak_memory_bytes / worst.capacity_bytes
    return (
        f"stage {worst.stage} needs {worst.peak_memory_bytes / GiB:.1f} GiB of "
        f"{worst.capacity_bytes / GiB:.0f} GiB ({share:.0%}), which keeps "
        f"{worst.headroom_bytes / GiB:.2f} GiB free (--memory-headroom); {len(over)} of "
        f"{len(result.devices)} stages overflow: use more devices, ZeRO, recomputation or a "
        f"smaller micro-batch"
    )


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse output paths that cannot be written before the simulation starts."""
    from simplan.outputs import REPORT_FILES, check_output_dir, check_output_file

    if args.trace:
        check_output_file(args.trace, "--trace")
    if args.report:
        check_output_dir(args.report, "--report", owns=REPORT_FILES)
        if args.trace and Path(args.report).absolute() in Path(args.trace).absolute().parents:
            raise SimplanError(
                f"--trace {args.trace} is inside --report {args.report}, which is replaced as a "
                "whole; write the trace elsewhere"
            )


def knob_effects(
    args: argparse.Namespace,
    model: str | ModelGraph,
    cluster: Any,
    config: ParallelConfig,
    placement: list[int],
    result: Any,
) -> dict[str, Any]:
    """With --explain or --report and a pruned model: the model and the step before and after
    pruning."""
    if not ((args.explain or args.report) and isinstance(model, ModelGraph)):
        return {}
    from simplan.knob_effects import base_spec, effect_lines, effect_table, side, to_dict
    from simplan.sim.run import resolve_model, simulate

    spec = str(model.meta.get("spec", model.name))
    if base_spec(spec) == spec:
        return {}
    base = resolve_model(base_spec(spec), config)
    before_result = simulate(base, cluster, config, placement=placement or None, record=False)
    before, after = side(base, config, before_result), side(model, config, result)
    return {
        "knob_effects": to_dict(before, after),
        "explain": effect_lines(spec, before, after) if args.explain else [],
        "table": effect_table(before, after),
    }


def _public(effects: dict[str, Any]) -> dict[str, Any]:
    return {"knob_effects": effects["knob_effects"]} if effects else {}


def knob_sections(effects: dict[str, Any]) -> list[Any]:
    """The report's before/after section of a pruned model (none without one)."""
    if not effects:
        return []
    from simplan.report.index import Section

    return [Section(title="Model knobs: before and after", table=effects["table"])]


def _distill(
    args: argparse.Namespace,
    model: Any,
    cluster: Any,
    config: ParallelConfig,
    profile: Any,
    result: Any,
) -> Any:
    """--teacher: the placements asked for, simulated and compared (simplan.planner.distill)."""
    if not args.teacher:
        return None
    from simplan.planner.distill import compare_placements
    from simplan.profiles import read_profile
    from simplan.sim.run import resolve_model

    return compare_placements(
        resolve_model(model, config),
        cluster,
        config,
        distillations(args),
        profile=profile,
        teacher_profile=read_profile(args.teacher_profile) if args.teacher_profile else None,
        student_alone_s=result.step_time_s,
    )


def print_distill(choice: Any, explain: bool) -> None:
    """The chosen placement's step, and with --explain every placement and why."""
    best = choice.best
    if best is None:
        print("distillation: no placement possible: " + "; ".join(choice.refused.values()))
        return
    from simplan.planner.distill import ms_text, size_text

    print(
        f"distillation ({best.placement}): step {ms_text(best.step_time_s)} against "
        f"{ms_text(choice.student_alone_s)} for the student alone; teacher forward "
        f"{ms_text(best.teacher_forward_s)} a micro-batch; logits {size_text(best.logits_bytes)} "
        "a step"
    )
    if explain:
        print("why:")
        for line in choice.lines():
            print(f"- {line}")


def _inputs(args: argparse.Namespace) -> tuple[str | ModelGraph, Any, ParallelConfig, list[int]]:
    if args.plan:
        from simplan.planfile import read_plan

        plan = read_plan(args.plan)
        return plan.model, plan.cluster.load(), plan.config, list(plan.placement)
    if not args.model or not args.cluster:
        raise SimplanError("give --model and --cluster (or --plan PLAN.json)")
    from simplan.topology import load_cluster

    cluster = load_cluster(
        args.cluster, nodes=args.nodes, gpus_per_node=args.gpus_per_node, stack=args.stack
    )
    config = config_from_args(args, cluster.num_devices)
    check_config(config)
    from simplan.sim.run import resolve_model

    graph = resolve_model(args.model, config)
    check_model(
        graph,
        seq_len=config.seq_len,
        recompute=config.recompute,
        sequence_parallel=config.sequence_parallel,
    )
    return graph, cluster, config, []


def offload_lines(offload: dict[str, Any]) -> list[str]:
    """What CPU offload of the optimizer does to the step, one line per pipeline stage."""
    if not offload:
        return []
    lines = [
        f"offload {offload['mode']}: host link {offload['host_link']} "
        f"{offload['host_link_Bps'] / 1e9:.1f} GB/s per device; host memory "
        f"{offload['host_bytes_per_node'] / GiB:.1f} of {offload['host_memory_bytes'] / GiB:.0f} "
        "GiB per node"
    ]
    for s in offload["stages"]:
        lines.append(
            f"  stage {s['stage']}: {s['device_bytes_saved'] / GiB:.1f} GiB device memory saved; "
            f"gradients to host {s['d2h_bytes'] / GiB:.2f} GiB ({s['d2h_s'] * 1e3:.1f} ms, "
            f"overlapped with the backward), parameters back {s['h2d_bytes'] / GiB:.2f} GiB "
            f"({s['h2d_s'] * 1e3:.1f} ms), Adam on the host CPU "
            f"{s['host_optimizer_s'] * 1e3:.1f} ms"
        )
    return lines


def sync_line(result: Any) -> str:
    """How replicas synchronise, when not by a plain all-reduce of gradients ('' otherwise)."""
    cfg, local = result.config, result.local_sgd
    if local is not None:
        return (
            f"local SGD, period {local['period']}: step time is the mean over a period; a local "
            f"step {local['local_step_s'] * 1e3:.2f} ms, the step with the model average "
            f"{local['sync_step_s'] * 1e3:.2f} ms, each of the {local['warmup_steps']} warm-up "
            f"steps (gradient all-reduce) {local['warmup_step_s'] * 1e3:.2f} ms"
        )
    if cfg.get("compress", "none") != "none":
        rank = f" rank {cfg['powersgd_rank']}" if cfg["compress"] == "powersgd" else ""
        return f"gradients compressed: {cfg['compress']}{rank} (torch's DDP communication hook)"
    return ""


def print_result(result: Any) -> None:
    cfg = result.config
    cp = cfg.get("cp", 1)
    experts = (
        f" ep {cfg['ep']} etp {cfg['etp']}" if cfg.get("ep", 1) * cfg.get("etp", 1) > 1 else ""
    )
    extras = "".join(
        text
        for on, text in (
            (cfg.get("fp8", "none") != "none", f" + fp8 {cfg.get('fp8')}"),
            (cfg.get("tp_overlap", False), ", tp overlap"),
            (cfg.get("moe_overlap", False), ", moe overlap"),
            (cp > 1, f", cp {cfg.get('cp_comm', 'ring')}"),
            (cfg.get("offload", "none") != "none", f", offload {cfg.get('offload')}"),
        )
        if on
    )
    print(
        f"{result.model} on {result.cluster}: dp {cfg['dp']} tp {cfg['tp']} pp {cfg['pp']}"
        f"{f' cp {cp}' if cp > 1 else ''}{experts}, micro-batch {cfg['micro_batch']} x "
        f"{cfg['num_microbatches']}, {cfg['schedule']}, zero {cfg['zero']}, recompute "
        f"{cfg['recompute']}, {cfg['dtype']}{extras}"
    )
    print(
        f"step time {result.step_time_s * 1e3:.2f} ms   {result.samples_per_s:.2f} samples/s   "
        f"{result.tokens_per_s:,.0f} tokens/s   {result.tflops_per_device:.1f} TFLOP/s per "
        f"device   MFU {result.mfu:.1%}"
    )
    sync = sync_line(result)
    if sync:
        print(sync)
    rows = []
    for d in result.devices:
        rows.append(
            [
                d.stage,
                d.device,
                f"{d.compute_s * 1e3:.1f}",
                f"{d.recompute_s * 1e3:.1f}",
                f"{d.exposed_comm_s * 1e3:.1f}",
                f"{d.bubble_s * 1e3:.1f}",
                f"{d.optimizer_s * 1e3:.1f}",
                f"{d.peak_memory_bytes / GiB:.1f}",
                f"{d.capacity_bytes / GiB:.0f}",
                f"{d.headroom_bytes / GiB:.2f}",
                "yes" if d.fits else "NO",
            ]
        )
    print(
        render(
            [
                "stage",
                "device",
                "compute ms",
                "recompute ms",
                "exposed comm ms",
                "bubble ms",
                "optimizer ms",
                "peak GiB",
                "capacity GiB",
                "headroom GiB",
                "fits",
            ],
            rows,
        )
    )
    for line in result.critical_path:
        print(f"- {line}")
    for line in offload_lines(result.offload):
        print(line)
    overheads = result.devices[0].overheads if result.devices else {}
    if overheads:  # the same on every device: the headroom's causes, not tensor memory
        print(f"runtime overheads kept free on every device (not in peak): "
              f"{describe_overheads(overheads)}")  # fmt: skip
    sources = ", ".join(f"{k}: {v}" for k, v in result.cost_sources.items())
    print(f"layer costs from {sources}; {result.event_count} events simulated")
    if result.extrapolated:
        print(result.extrapolation_note())
