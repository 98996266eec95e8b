"""`simplan simulate`: one training step of a parallel configuration, event by event."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from simplan.commands import add_verb
from simplan.commands.argtypes import GPUS_PER_NODE, HEADROOM, HEADROOM_HELP, NODES
from simplan.commands.config_flags import add_config_flags, config_from_args
from simplan.commands.flag_rules import check_config, check_model
from simplan.commands.model_flags import add_model_knob_flags, model_spec
from simplan.errors import EXIT_DOES_NOT_FIT, SimplanError
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
  simplan simulate --model llama3-8b --cluster dgx-h100 --global-batch 256 --zero 3 \\
      --framework torchtitan      # refused in one line if torchtitan cannot run it

exit status: 0 when the step fits in every device's memory; 3 when it does not (the result is
still printed, and stderr says which stage needs how much); 2 for bad input.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_verb(subparsers, "simulate", "simulate one training step", HELP)
    p.add_argument("--model", help="preset, model.toml or file.py:factory")
    add_model_knob_flags(p, quantize=False)
    p.add_argument("--cluster", help="cluster preset or TOML file (see `simplan clusters`)")
    p.add_argument("--nodes", type=NODES, help="scale the cluster to N nodes")
    p.add_argument("--gpus-per-node", type=GPUS_PER_NODE, help="use G devices of each node")
    p.add_argument("--plan", help="simulate a plan file instead (written by `simplan plan`)")
    add_config_flags(p, defaults={"dp": None, "global_batch": None})
    p.add_argument(
        "--framework",
        choices=FRAMEWORK_NAMES,
        help="first check that this framework can run the configuration (one line saying "
        "why not, exit 2); the rules of simplan plan --framework and simplan export",
    )
    p.add_argument("--profile", help="a measured profile (JSON) to use where it matches")
    p.add_argument("--memory-headroom", type=HEADROOM, metavar="GIB|PCT%", help=HEADROOM_HELP)
    p.add_argument("--trace", metavar="FILE", help="write a Chrome trace (Perfetto) of the step")
    p.add_argument(
        "--explain",
        action="store_true",
        help="with --prune: what pruning changes (parameters, FLOPs, gradient bytes, and the "
        "simulated step's time, exposed communication and peak memory, before and after)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--report", metavar="DIR", help="write figures and DIR/index.md of the step")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    args.model = model_spec(args)
    from simplan.headroom import DEFAULT_HEADROOM
    from simplan.sim.result import write_trace
    from simplan.sim.run import simulate

    check_outputs(args)
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
    result = simulate(
        model,
        cluster,
        config,
        profile=profile,
        placement=placement or None,
        record=bool(args.trace or args.report),
        headroom=args.memory_headroom or DEFAULT_HEADROOM,
    )
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
        print(json.dumps(result.to_dict() | _public(effects), indent=1))
    else:
        print_result(result)
        for line in effects.get("explain", []):
            print(f"- {line}")
        if args.trace:
            print(f"trace written to {args.trace} (open it in https://ui.perfetto.dev)")
    shortfall = memory_shortfall(result)
    if shortfall:
        print(f"simplan simulate: does not fit: {shortfall}", file=sys.stderr)
        return EXIT_DOES_NOT_FIT
    return 0


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


def _inputs(args: argparse.Namespace) -> tuple[str | ModelGraph, Any, ParallelConfig, list[int]]:
    if args.plan:
        from simplan.planfile import read_plan

        plan = read_plan(args.plan)
        return plan.model, plan.cluster.load(), plan.config, list(plan.placement)
    if not args.model or not args.cluster:
        raise SimplanError("give --model and --cluster (or --plan PLAN.json)")
    from simplan.topology import load_cluster

    cluster = load_cluster(args.cluster, nodes=args.nodes, gpus_per_node=args.gpus_per_node)
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


def print_result(result: Any) -> None:
    cfg = result.config
    print(
        f"{result.model} on {result.cluster}: dp {cfg['dp']} tp {cfg['tp']} pp {cfg['pp']}, "
        f"micro-batch {cfg['micro_batch']} x {cfg['num_microbatches']}, {cfg['schedule']}, "
        f"zero {cfg['zero']}, recompute {cfg['recompute']}, {cfg['dtype']}"
    )
    print(
        f"step time {result.step_time_s * 1e3:.2f} ms   {result.samples_per_s:.2f} samples/s   "
        f"{result.tokens_per_s:,.0f} tokens/s   {result.tflops_per_device:.1f} TFLOP/s per "
        f"device   MFU {result.mfu:.1%}"
    )
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
    sources = ", ".join(f"{k}: {v}" for k, v in result.cost_sources.items())
    print(f"layer costs from {sources}; {result.event_count} events simulated")
    if result.extrapolated:
        print(result.extrapolation_note())
