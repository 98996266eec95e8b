"""`simplan plan`: search the splits of a training job and print the ranked plans."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from simplan.commands import add_verb
from simplan.commands.argtypes import (
    GPUS_PER_NODE,
    HEADROOM,
    HEADROOM_HELP,
    NODES,
    SECONDS,
    ChoiceList,
    IntSpan,
    Text,
    positive_int,
)
from simplan.commands.config_flags import add_config_flags
from simplan.commands.distill_flags import add_teacher_flags, check_teacher_flags, distillations
from simplan.commands.flag_rules import check_seq_len
from simplan.commands.model_flags import add_model_knob_flags, model_spec
from simplan.commands.task_flags import plan_heads_for, print_heads_choice
from simplan.devices import STACKS
from simplan.errors import SimplanError
from simplan.headroom import describe_overheads
from simplan.limits import MAX_DEVICES, MAX_GLOBAL_BATCH
from simplan.planner.export import EXPORTS, TARGETS
from simplan.table import render
from simplan.units import GiB

GRACE = 0.2  # of --time-limit: how long past it a step that cannot be cut may run
MAX_TOP = 100  # plans simulated and shown
FROM_FRAMEWORK = "framework"  # --export with no name: the --framework's

HELP = """\
Search how to split MODEL's training over CLUSTER: data/tensor/pipeline degrees, micro-batch,
schedule, virtual stages, ZeRO stage, recomputation, which layers each pipeline stage holds (an
ILP sized to each device's speed and memory) and which device each rank runs on. Every candidate
gets a fast analytic estimate; the best are simulated, beside two baselines (pure data parallel,
and Megatron's rule: TP = GPUs per node, the smallest PP that fits). The winner is never worse
than the baselines under the simulator (a baseline outside the constraints below is shown, never
proposed).

constraints (each narrows the search; none given: everything is tried):
  --tp N / --tp LO-HI       fix tensor parallelism to N, or bound it to LO..HI (same for --pp, --dp)
  --micro-batch LO-HI       micro-batches tried: LO, HI and the powers of two between
                            (default 1-256: powers of two; those that do not fit are pruned)
  --zero 0,1                only these ZeRO stages (0-3; 1 is Megatron's distributed optimizer)
  --schedules 1f1b,interleaved   only these pipeline schedules (1f1b, interleaved, gpipe)
  --memory-headroom 4 / 10%      keep 4 GiB (or 10% of capacity) of every device free
  --framework torchtitan    only what torchtitan can run (megatron, torchtitan, deepspeed): the
                            configurations its export would refuse are pruned; --export with
                            no name then exports to it
No plan is proposed whose simulated peak memory exceeds a device's capacity less the headroom.

examples:
  simplan plan --model gpt3-1.3b --cluster dgx-a100 --nodes 2 --global-batch 64
  simplan plan --model gpt3-175b --cluster dgx-a100 --nodes 128 --global-batch 1536 --explain
  simplan plan --model gpt3-6.7b --cluster mixed-a100-h100 --global-batch 128 --out plans/
      # writes plans/plan.json (the best) and plans/plans.json (the top K and baselines)
  simplan plan --model llama3-8b --cluster dgx-h100 --global-batch 256 --export megatron
  simplan plan --model llama3-70b --cluster dgx-h100 --nodes 16 --global-batch 512 \\
      --export torchtitan --export-out job.toml    # or > job.toml: the export alone on stdout
  simplan plan --model gpt3-350m --cluster dgx-h100 --global-batch 64 --json | jq .plans[0]
  simplan plan --model llama3-8b --cluster dgx-h100 --nodes 2 --global-batch 256 --tp 4 \\
      --pp 1-2 --zero 0,1 --memory-headroom 8
  simplan plan --model llama3-8b --cluster dgx-h100 --global-batch 256 --framework torchtitan \\
      --export --export-out job.toml     # a plan torchtitan runs, as its job file
  simplan simulate --plan plans/plan.json --trace step.json    # replay the chosen plan
  simplan plan --model mtl-vision --cluster eth25-a100 --global-batch 64 --explain
      # a multi-task model (it declares tasks): also where each head runs (replicated with
      # the trunk, or on devices of its own; an ILP, simulated against everything replicated
      # and one head per device), and why
  simplan plan --model gpt3-350m --cluster eth25-a100 --nodes 4 --global-batch 256 --dp 32 \
      --zero 0,1 --goodput --efficiency-table traces/efficiency/mlp-teacher.json --explain
      # compression / local SGD only where samples/s x statistical efficiency beats plain DDP

exit status: 0 with the plans; 2 for bad input, and when no configuration fits the cluster (one
line saying why, e.g. how many devices the model needs at least).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_verb(subparsers, "plan", "search for the best parallel split and placement", HELP)
    p.add_argument("--model", required=True, help="preset, model.toml or file.py:factory")
    add_model_knob_flags(p)
    p.add_argument("--cluster", required=True, help="cluster preset or TOML file")
    p.add_argument(
        "--stack",
        choices=STACKS,
        help="the training stack the GPUs' rates describe: 'fitted' (the presets as fitted on "
        "llm-foundry's 2023 MPT runs; the default) or 'kernels' (matrix kernels at the GPU's "
        "measured maximum matmul rate, 5 us per operation: Megatron-Core with Transformer "
        "Engine); see simplan simulate --help",
    )
    p.add_argument("--nodes", type=NODES, help="scale the cluster to N nodes")
    p.add_argument("--gpus-per-node", type=GPUS_PER_NODE, help="use G devices of each node")
    add_config_flags(p, ("global_batch", "seq_len", "dtype"), required=("global_batch",))
    p.add_argument(
        "--top",
        type=positive_int(MAX_TOP),
        default=3,
        help="plans to simulate and show (default 3)",
    )
    p.add_argument(
        "--time-limit",
        type=SECONDS,
        default=60.0,
        help="seconds for the whole search, loading included: the best found by then is shown, "
        "with a note of what the limit cut (default 60)",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="write DIR/plan.json and DIR/plans.json, replaced as a pair (for a multi-task "
        "model the best plan carries the head placement, task_heads, that simulate --plan "
        "reads back)",
    )
    degree = IntSpan(1, MAX_DEVICES)
    for name, what in (("tp", "tensor"), ("pp", "pipeline"), ("dp", "data")):
        p.add_argument(
            f"--{name}",
            type=degree,
            metavar="N|LO-HI",
            help=f"{what}-parallel degree: N fixes it, LO-HI bounds it (default: any)",
        )
    p.add_argument(
        "--micro-batch",
        type=IntSpan(1, MAX_GLOBAL_BATCH),
        metavar="N|LO-HI",
        help="micro-batches to try: N only, or LO, HI and the powers of two between "
        "(default 1-256, powers of two)",
    )
    p.add_argument(
        "--zero",
        type=ChoiceList(("0", "1", "2", "3")),
        metavar="STAGES",
        help="ZeRO stages to try, comma-separated, e.g. 0,1 (default: all)",
    )
    p.add_argument(
        "--schedules",
        type=ChoiceList(("1f1b", "interleaved", "gpipe")),
        metavar="NAMES",
        help="pipeline schedules to try, comma-separated, e.g. 1f1b,interleaved (default: all)",
    )
    p.add_argument("--memory-headroom", type=HEADROOM, metavar="GIB|PCT%", help=HEADROOM_HELP)
    p.add_argument("--explain", action="store_true", help="why the winner beat the others")
    add_teacher_flags(p)
    p.add_argument(
        "--goodput",
        action="store_true",
        help="also try gradient compression (fp16, bf16, PowerSGD ranks 1, 2, 4) and local SGD "
        "(H 2, 4, 8, 16) on each plan with data parallelism, and rank by goodput = samples/s x "
        "statistical efficiency; plain DDP wins ties",
    )
    p.add_argument(
        "--efficiency",
        action="append",
        default=[],
        type=Text(),
        metavar="KNOB[=V]:E",
        help="with --goodput: declare a statistical efficiency in (0, 1], e.g. local_sgd=8:0.8, "
        'powersgd=2:0.9, fp16:1 (repeatable), or a JSON file {"local_sgd=8": 0.8}; it wins '
        "over the measured table",
    )
    p.add_argument(
        "--efficiency-table",
        type=Text(),
        metavar="FILE",
        help="with --goodput: steps to a target loss measured by benchmarks/stat_efficiency.py, "
        "e.g. traces/efficiency/mlp-teacher.json (interpolated, never extrapolated)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--report", metavar="DIR", help="write figures and DIR/index.md, replaced as a whole"
    )
    p.add_argument(
        "--framework",
        choices=TARGETS,
        help="propose only plans this framework can run (what its export would refuse is "
        "pruned); the plans' files record it and --export defaults to it",
    )
    p.add_argument(
        "--export",
        nargs="?",
        const=FROM_FRAMEWORK,
        choices=(*EXPORTS, FROM_FRAMEWORK),
        metavar="{" + ",".join(EXPORTS) + "}",
        help="the best plan the framework can run, as its job (see simplan export --help): on "
        "stdout alone (the table goes to stderr), in --export-out FILE, or in --json's "
        "document; with no name (or 'framework'), the --framework's",
    )
    p.add_argument("--export-out", metavar="FILE", help="write --export's job to FILE")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    args.model = model_spec(args)
    from simplan.deadline import Deadline, TimeLimitReached, call_before
    from simplan.headroom import DEFAULT_HEADROOM
    from simplan.planner import SearchOptions, search
    from simplan.progress import QUIET_S, Progress

    deadline = Deadline.after(args.time_limit)  # the whole verb, loading included

    check_outputs(args)
    check_seq_len(args.model, args.seq_len, args.dtype)
    if args.export == FROM_FRAMEWORK:
        if not args.framework:
            raise SimplanError(
                "--export without a name needs --framework; give --export megatron, "
                "torchtitan, deepspeed or torchrun"
            )
        args.export = args.framework
    if args.export:
        from simplan.planner.export import RULES, check_model

        check_model(args.model, args.export)  # a model the framework cannot train: no search
        # a plan exported to a framework is one it can run: search only those
        args.framework = args.framework or RULES.get(args.export, args.export)
    sources = _efficiency_sources(args)
    _check_teacher(args)  # a teacher whose logits do not match: no search
    bars: dict[str, Progress] = {}

    def progress(label: str, done: int, total: int) -> None:
        bar = bars.get(label)
        if bar is None:
            for old in bars.values():
                old.__exit__(None, None, None)
            bars.clear()
            # plain lines (stderr not a terminal) once the whole verb has run QUIET_S seconds
            elapsed = args.time_limit - deadline.left_s()
            bar = bars[label] = Progress(total, label, quiet_s=max(QUIET_S - elapsed, 0.0))
        bar.advance(done - bar.done)

    # the search cuts its own phases at the deadline and returns what it found; this guard,
    # a little later, ends the verb where one step could not look at the clock (loading a model)
    guard = Deadline(
        at_s=deadline.at_s + max(1.0, GRACE * args.time_limit), limit_s=args.time_limit
    )
    options = SearchOptions(
        global_batch=args.global_batch, seq_len=args.seq_len or None, top=args.top,
        time_limit_s=args.time_limit, nodes=args.nodes, gpus_per_node=args.gpus_per_node,
        stack=args.stack,
        dtype=args.dtype, progress=progress, deadline=deadline, tp=args.tp, pp=args.pp,
        dp=args.dp, micro_batch=args.micro_batch,
        zero=tuple(int(z) for z in args.zero) if args.zero else None, schedules=args.schedules,
        memory_headroom=args.memory_headroom or DEFAULT_HEADROOM, framework=args.framework,
    )  # fmt: skip
    try:
        result = call_before(guard, lambda: search(args.model, args.cluster, options))
    except TimeLimitReached:
        raise SimplanError(
            f"the time limit of {args.time_limit:g} s passed before the search found a plan "
            f"(loading the model and cluster took most of it); raise --time-limit"
        ) from None
    for bar in bars.values():
        bar.__exit__(None, None, None)
    choices: list[Any] = []
    if args.goodput:
        from simplan.planner.goodput import apply_goodput

        result, choices = apply_goodput(result, sources, options.memory_headroom, deadline)
    job = result.plans[0].export(args.export) if args.export else ""  # refused: nothing written
    heads = plan_heads_for(args, result.plans[0])  # None unless the model declares tasks
    if args.out:
        write_outputs(result, Path(args.out), heads)
    if args.export_out:
        from simplan.outputs import write_text_atomic

        write_text_atomic(job, args.export_out)
    distill = _distill(args, result.plans[0])
    # stdout holds one thing: the JSON document, the export alone, or the table
    export_alone = bool(args.export and not args.export_out and not args.json)
    with contextlib.redirect_stdout(sys.stderr if export_alone else sys.stdout):
        print_text(args, result, choices, heads)
        if distill is not None and not args.json:
            from simplan.commands.simulate import print_distill

            print()
            print_distill(distill, args.explain)
        if heads is not None and not args.json:
            print()
            print_heads_choice(heads, args.explain)
    if args.json:
        doc = result.to_dict()
        if distill is not None:
            doc["distillation"] = distill.to_dict()
        if heads is not None:
            doc["task_heads"] = heads.to_dict()
        if args.goodput:
            doc["goodput"] = [c.to_dict() for c in choices]
        if args.export:
            from simplan.commands.export import export_document

            doc["export"] = export_document(result.plans[0], args.export, job)
        print(json.dumps(doc, indent=1))
    elif export_alone:
        sys.stdout.write(job)
    return 0


def _check_teacher(args: argparse.Namespace) -> None:
    """--teacher's logits must match the model's, checked before the search."""
    check_teacher_flags(args)
    if not args.teacher:
        return
    from simplan.distill import check_pair
    from simplan.sources import load_model

    seq = args.seq_len or None
    check_pair(load_model(args.model, seq_len=seq), load_model(args.teacher, seq_len=seq))


def _distill(args: argparse.Namespace, plan: Any) -> Any:
    """--teacher: the distillation placements compared on the best plan's configuration
    (the search plans the student alone; the teacher is placed on its result)."""
    if not args.teacher:
        return None
    from simplan.planner.distill import compare_placements
    from simplan.sim.run import resolve_model

    return compare_placements(
        resolve_model(plan.model, plan.config),
        plan.load_cluster(),
        plan.config,
        distillations(args),
        student_alone_s=plan.step_time_s,
    )


def _efficiency_sources(args: argparse.Namespace) -> Any:
    if (args.efficiency or args.efficiency_table) and not args.goodput:
        raise SimplanError("--efficiency and --efficiency-table need --goodput")
    if not args.goodput:
        return None
    if args.export or args.framework:
        flag = "--export" if args.export else "--framework"
        raise SimplanError(
            f"--goodput may choose gradient compression or local SGD, which {flag} cannot check "
            f"or write yet; plan with --goodput alone, or without it for {flag}"
        )
    from simplan.planner.goodput import sources_from_flags

    return sources_from_flags(args.efficiency, args.efficiency_table)


def print_text(
    args: argparse.Namespace, result: Any, choices: list[Any], heads: Any = None
) -> None:
    """The table, the reasons and what was written (nothing of it with --json)."""
    if not args.json:
        print_result(result)
        if args.explain:
            from simplan.planner.explain import explain

            print("\nwhy:")
            for line in explain(list(result.plans), list(result.baselines)):
                print(f"- {line}")
            for choice in choices:
                for line in choice.lines():
                    print(f"- {line}" if not line.startswith("  ") else f"  {line}")
            for line in knob_lines(args.model, result.plans[0]):
                print(f"- {line}")
        if args.out:
            print(f"\nwrote {Path(args.out) / 'plan.json'} and {Path(args.out) / 'plans.json'}")
        if args.export_out:
            print(f"wrote {args.export_out}")
    if args.report:
        from simplan.report import write_plan_report

        extra = None
        if heads is not None:
            from simplan.report.task_heads import task_head_sections

            def extra(out: Path, formats: Any) -> Any:
                return task_head_sections(heads, out, formats)

        path = write_plan_report(
            result.plans, result.baselines, args.report, flag="--report", extra=extra
        )
        print(f"report written to {path}", file=sys.stderr if args.json else sys.stdout)


def knob_lines(spec: str, winner: Any) -> list[str]:
    """What --prune changes under the winning configuration: the unpruned model simulated with
    the same configuration and placement, before and after."""
    from simplan.knob_effects import base_spec, effect_lines, side
    from simplan.sim.run import resolve_model, simulate

    if base_spec(spec) == spec:
        return []
    cluster = winner.cluster_obj or winner.cluster.load()
    config, placement = winner.config, list(winner.placement) or None
    graphs = [resolve_model(s, config) for s in (base_spec(spec), spec)]
    before, after = (
        side(g, config, simulate(g, cluster, config, placement=placement, record=False))
        for g in graphs
    )
    return effect_lines(spec, before, after)


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse output paths that cannot be written before the search starts."""
    from simplan.outputs import (
        PLAN_FILES,
        REPORT_FILES,
        check_distinct_dirs,
        check_output_dir,
        check_output_file,
    )

    if args.out:
        check_output_dir(args.out, "--out", owns=PLAN_FILES)
    if args.report:
        check_output_dir(args.report, "--report", owns=REPORT_FILES)
    if args.export_out:
        check_output_file(args.export_out, "--export-out")
    check_distinct_dirs(("--out", args.out), ("--report", args.report))


def write_outputs(result: Any, out: Path, heads: Any = None) -> None:
    """DIR/plan.json (the best plan, with the head placement of a multi-task model) and
    DIR/plans.json (all), replacing a previous pair whole."""
    from simplan.io import schema_header
    from simplan.outputs import PLAN_FILES, output_set, write_json_atomic
    from simplan.planfile import write_plan

    best = result.plans[0].to_planfile()
    if heads is not None:
        best = dataclasses.replace(best, extra={**best.extra, "task_heads": heads.plan_record()})
    doc = {
        "schema": schema_header("plans", 1),
        **result.to_dict(),
        "plans": [best.to_dict()] + [p.to_planfile().to_dict() for p in result.plans[1:]],
        "baselines": [p.to_planfile().to_dict() for p in result.baselines],
    }
    with output_set(out, "--out", owns=PLAN_FILES) as stage:
        write_plan(best, stage / "plan.json")
        write_json_atomic(doc, stage / "plans.json")


def recipe_lines(result: Any) -> list[str]:
    """Where each published recipe of the framework comes from, and whether it applied."""
    lines = []
    for r in result.recipes:
        text = f"{r['role']}: {r['name']} ({r['source']})"
        if not r.get("applies"):
            text += f": does not apply here ({r['why_not']})"
        elif r.get("fits") is False:
            text += ": does not fit in memory under the simulator"
        if r.get("approximation"):
            text += f"; {r['approximation']}"
        lines.append(text)
    return lines


def print_result(result: Any) -> None:
    best = result.plans[0]
    print(
        f"{best.model} on {best.cluster.spec}: {result.candidates} candidates, "
        f"{result.evaluated} estimated, {result.simulated} simulated, "
        f"{len(result.solves)} ILP solves in {result.search_time_s:.1f} s"
    )
    rows = []
    for i, p in enumerate(list(result.plans) + list(result.baselines)):
        rank = str(i + 1) if i < len(result.plans) else "-"
        rows.append(
            [
                rank,
                p.role,
                p.config.describe(),
                f"{p.step_time_s:.4g}",
                f"{(p.predicted.get('tokens_per_s') or 0):,.0f}" if p.predicted else "-",
                f"{(p.predicted.get('mfu') or 0):.1%}" if p.predicted else "-",
                f"{(p.summary().get('peak_memory_bytes') or 0) / GiB:.1f}",
                p.layout,
            ]
        )
    print(
        render(
            ["#", "role", "configuration", "step s", "tokens/s", "MFU", "peak GiB", "nodes"],
            rows,
        )
    )
    overheads = (best.predicted.get("stages") or [{}])[0].get("overheads")
    if overheads:
        print(f"peak GiB is tensor memory; kept free besides it on every device (runtime "
              f"overheads): {describe_overheads(overheads)}")  # fmt: skip
    stages = best.config.stages
    print(f"best plan's stages (layer boundaries): {list(stages)}")
    for line in recipe_lines(result):
        print(line)
    if result.cut_short:
        print(
            f"the time limit of {result.time_limit_s:g} s cut the search: "
            f"{'; '.join(result.cut_short)} (raise --time-limit for a full search)"
        )
    if result.infeasible:
        fell = ", ".join(f"{k}: {v}" for k, v in sorted(result.infeasible.items()))
        print(f"pruned: {fell}")
    for s in result.solves[:3]:
        gap = f", gap {s['gap']:.2%}" if s.get("gap") is not None else ""
        print(
            f"ILP {s['problem']}: {s['solver']} {s['status']} (sol_status {s['sol_status']}"
            f"{gap}) in {s['solve_s'] * 1e3:.0f} ms"
        )
