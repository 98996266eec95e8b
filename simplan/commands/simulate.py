"""`simplan simulate`: one training step of a parallel configuration, event by event."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from simplan.errors import SimplanError
from simplan.parallel import RECOMPUTE, SCHEDULES, ParallelConfig
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
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="simulate one training step",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", help="preset, model.toml or file.py:factory")
    p.add_argument("--cluster", help="cluster preset or TOML file (see `simplan clusters`)")
    p.add_argument("--nodes", type=int, help="scale the cluster to N nodes")
    p.add_argument("--gpus-per-node", type=int, help="use G devices of each node")
    p.add_argument("--plan", help="simulate a plan file instead (written by `simplan plan`)")
    add_config_arguments(p)
    p.add_argument("--profile", help="a measured profile (JSON) to use where it matches")
    p.add_argument("--trace", metavar="FILE", help="write a Chrome trace (Perfetto) of the step")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--report", metavar="DIR", help="write figures and DIR/index.md of the step")
    p.set_defaults(func=run)


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--global-batch", type=int, help="samples per optimizer step")
    p.add_argument("--micro-batch", type=int, default=1, help="samples per micro-batch")
    p.add_argument("--seq-len", type=int, default=0, help="tokens per sample (model's own)")
    p.add_argument("--dp", type=int, help="data-parallel degree (default: the rest)")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel degree")
    p.add_argument("--pp", type=int, default=1, help="pipeline-parallel degree")
    p.add_argument("--schedule", default="1f1b", choices=SCHEDULES)
    p.add_argument("--virtual-stages", type=int, default=1, help="chunks per rank (interleaved)")
    p.add_argument("--zero", type=int, default=0, choices=(0, 1, 2, 3), help="ZeRO stage")
    p.add_argument("--recompute", default="none", choices=RECOMPUTE)
    p.add_argument("--sequence-parallel", action="store_true")
    p.add_argument("--dtype", default="bf16", help="bf16, fp16 or fp32")


def config_from_args(args: argparse.Namespace, devices: int) -> ParallelConfig:
    if not args.global_batch:
        raise SimplanError("--global-batch is required (samples per optimizer step)")
    for name in ("tp", "pp", "micro_batch", "virtual_stages"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            raise SimplanError(f"--{name.replace('_', '-')} must be a positive integer")
    dp = args.dp
    if dp is None:
        dp, rest = divmod(devices, args.tp * args.pp)
        if rest or dp == 0:
            raise SimplanError(
                f"tp {args.tp} x pp {args.pp} does not divide the cluster's "
                f"{devices} devices; pick degrees that do or give --dp"
            )
    return ParallelConfig(
        dp=dp,
        tp=args.tp,
        pp=args.pp,
        micro_batch=args.micro_batch,
        global_batch=args.global_batch,
        seq_len=args.seq_len,
        schedule=args.schedule,
        virtual_stages=args.virtual_stages,
        zero=args.zero,
        recompute=args.recompute,
        dtype=args.dtype,
        sequence_parallel=args.sequence_parallel,
    )


def run(args: argparse.Namespace) -> int:
    from simplan.sim.result import write_trace
    from simplan.sim.run import simulate

    check_outputs(args)
    model, cluster, config, placement = _inputs(args)
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
    )
    if args.trace:
        write_trace(result, args.trace)
    if args.report:
        from simplan.report import write_simulation_report

        index = write_simulation_report(result, args.report, flag="--report")
        print(f"report written to {index}", file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
    else:
        print_result(result)
        if args.trace:
            print(f"trace written to {args.trace} (open it in https://ui.perfetto.dev)")
    return 0


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


def _inputs(args: argparse.Namespace) -> tuple[str, Any, ParallelConfig, list[int]]:
    if args.plan:
        from simplan.planfile import read_plan

        plan = read_plan(args.plan)
        return plan.model, plan.cluster.load(), plan.config, list(plan.placement)
    if not args.model or not args.cluster:
        raise SimplanError("give --model and --cluster (or --plan PLAN.json)")
    from simplan.topology import load_cluster

    cluster = load_cluster(args.cluster, nodes=args.nodes, gpus_per_node=args.gpus_per_node)
    return args.model, cluster, config_from_args(args, cluster.num_devices), []


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
                "fits",
            ],
            rows,
        )
    )
    for line in result.critical_path:
        print(f"- {line}")
    sources = ", ".join(f"{k}: {v}" for k, v in result.cost_sources.items())
    print(f"layer costs from {sources}; {result.event_count} events simulated")
