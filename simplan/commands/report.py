"""`simplan report`: figures and a markdown index from plans, sweeps and validation records."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from simplan.commands import add_verb
from simplan.errors import SimplanError

HELP = """\
Write a report directory (PNG and SVG figures plus index.md) to --out DIR, or else to a new
folder reports/<name>-<UTC date-time>/ (printed). A report replaces DIR as a whole, never in part;
a DIR holding files simplan did not write is refused.

  plan PLAN.json     the ranked plans and baselines of `simplan plan --out` (plans.json), or one
                     plan (plan.json): comparison, breakdown per plan, the best plan's timeline,
                     per-stage breakdown and memory
  sweep              predicted throughput against nodes, link bandwidth or micro-batch
  validation         predicted vs measured step time of the records in traces/runs/
  schedule FILE      a schedule.json of `simplan schedule --out` or `--json`: JCT CDFs,
                     utilization over time and the metrics of every policy in it

examples:
  simplan report plan plans/plans.json
  simplan report sweep --model gpt3-1.3b --cluster dgx-a100 --global-batch 512 --tp 8 \\
      --vary nodes --values 1 2 4 8
  simplan report sweep --model gpt3-1.3b --cluster dgx-a100 --nodes 4 --global-batch 256 \\
      --tp 8 --pp 2 --vary bandwidth --values 0.25 0.5 1 2 4
  simplan report validation --runs traces/runs
  simplan simulate --model gpt3-1.3b --cluster dgx-a100 --nodes 2 --global-batch 64 --tp 8 \\
      --report reports/demo                        # a simulated step's report in one go
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_verb(
        subparsers,
        "report",
        "figures and a markdown report (timeline, breakdown, memory, sweeps, validation)",
        HELP,
    )
    sub = p.add_subparsers(dest="report_kind", metavar="KIND", parser_class=type(p))
    plan = sub.add_parser("plan", help="report a plan.json or plans.json")
    plan.add_argument("file", metavar="PLAN.json", help="written by `simplan plan --out DIR`")
    sweep = sub.add_parser("sweep", help="throughput against nodes, bandwidth or micro-batch")
    _sweep_arguments(sweep)
    val = sub.add_parser("validation", help="predicted vs measured from traces/runs/")
    val.add_argument("--runs", default="traces/runs", help="directory of validation records")
    sched = sub.add_parser("schedule", help="JCT CDFs and utilization of a schedule.json")
    sched.add_argument("file", metavar="SCHEDULE.json", help="written by `simplan schedule`")
    for q in (plan, sweep, val, sched):
        q.add_argument(
            "--out",
            metavar="DIR",
            help="report directory, replaced whole (default: a new reports/<name>-<date-time>)",
        )
        q.add_argument("--format", default="png,svg", help="figure formats (default png,svg)")
    plan.set_defaults(func=run_plan)
    sweep.set_defaults(func=run_sweep)
    val.set_defaults(func=run_validation)
    sched.set_defaults(func=run_schedule)
    p.set_defaults(func=lambda args: _no_kind(p))


def _sweep_arguments(p: argparse.ArgumentParser) -> None:
    from simplan.commands.argtypes import GPUS_PER_NODE, MAX_FACTOR, NODES, positive_float
    from simplan.commands.config_flags import add_config_flags
    from simplan.report.sweep import VARY

    p.add_argument("--model", required=True, help="preset, model.toml or file.py:factory")
    p.add_argument("--cluster", required=True, help="cluster preset or TOML file")
    p.add_argument("--nodes", type=NODES, help="nodes of the cluster (when not swept)")
    p.add_argument("--gpus-per-node", type=GPUS_PER_NODE, help="use G devices of each node")
    p.add_argument("--vary", required=True, choices=VARY, help="the knob to sweep")
    p.add_argument(
        "--values", required=True, nargs="+", type=positive_float(MAX_FACTOR), help="its values"
    )
    p.add_argument(
        "--link-kind",
        action="append",
        choices=("network", "nvlink", "pcie", "loopback"),
        help="links scaled by --vary bandwidth (repeatable; default network)",
    )
    add_config_flags(p, defaults={"dp": None, "global_batch": None})


def _no_kind(p: argparse.ArgumentParser) -> int:
    p.error("give a kind of report: plan, sweep, validation or schedule")
    return 2


def _formats(args: argparse.Namespace) -> tuple[str, ...]:
    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    bad = [f for f in formats if f not in ("png", "svg", "pdf")]
    if bad or not formats:
        raise SimplanError(f"--format takes png, svg and/or pdf (comma separated), not {bad}")
    return formats


def _command() -> str:
    """The command line as typed (for the report's 'regenerate with' note)."""
    import shlex
    import sys

    return "simplan " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["report"] else ""


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "report"


REPORTS_DIR = Path("reports")


def check_out(args: argparse.Namespace) -> None:
    """Refuse an --out that cannot take a report, before any work."""
    from simplan.outputs import REPORT_FILES, check_output_dir

    if args.out:
        check_output_dir(args.out, "--out", owns=REPORT_FILES)


def out_dir(args: argparse.Namespace, name: str) -> tuple[Path, bool]:
    """(the report's directory, whether it must be new): --out, else a new folder under
    reports/ (generated output never replaces what is there unless --out names it)."""
    from simplan.outputs import REPORT_FILES, check_output_dir, new_directory

    if args.out:
        return Path(args.out), False
    out = new_directory(REPORTS_DIR, name)
    check_output_dir(out, "report directory", owns=REPORT_FILES)
    return out, True


def run_plan(args: argparse.Namespace) -> int:
    from simplan.report import write_plan_report

    check_out(args)
    formats = _formats(args)
    plans, baselines = read_plans(args.file)
    best = plans[0]
    nodes = f"-{best.cluster.nodes}n" if best.cluster.nodes else ""
    out, new = out_dir(args, slug(f"{Path(best.model).stem}-{Path(best.cluster.spec).stem}{nodes}"))
    index = write_plan_report(
        plans, baselines, out, formats=formats, command=_command(), flag="--out", new=new
    )
    print(f"report written to {index}")
    return 0


def read_plans(path: str | Path) -> tuple[list[Any], list[Any]]:
    """(plans, baselines) from a plan file (kind 'plan') or a plans file (kind 'plans')."""
    from simplan.io import read_json_object
    from simplan.planfile import PLAN_SCHEMA_VERSION, read_plan
    from simplan.schema import show

    data = read_json_object(path)
    raw = data.get("schema")
    schema = raw if isinstance(raw, dict) else {}
    kind = schema.get("kind")
    if kind == "plan":
        return [read_plan(path)], []
    if kind != "plans":
        raise SimplanError(
            f"{path}: not a simplan plan or plans file (schema.kind is {show(kind)}); "
            f"write one with simplan plan --out DIR"
        )
    if schema.get("version") != 1:
        raise SimplanError(
            f"{path}: plans schema version {show(schema.get('version'))} is not supported; "
            "rerun simplan plan --out DIR"
        )
    listed, baselines = data.get("plans"), data.get("baselines") or []
    if not isinstance(listed, list) or not listed or not isinstance(baselines, list):
        raise SimplanError(f"{path}: lists no plans; rerun simplan plan --out DIR")
    plans = [_planfile(d, f"{path}: plans[{i}]", PLAN_SCHEMA_VERSION) for i, d in enumerate(listed)]
    return plans, [
        _planfile(d, f"{path}: baselines[{i}]", PLAN_SCHEMA_VERSION)
        for i, d in enumerate(baselines)
    ]


def _planfile(doc: Any, path: str | Path, version: int) -> Any:
    """One plan document embedded in a plans file, with the checks of read_plan."""
    from simplan.planfile import plan_from_dict

    schema = doc.get("schema") if isinstance(doc, dict) else None
    if (
        not isinstance(schema, dict)
        or schema.get("kind") != "plan"
        or (schema.get("version") != version)
    ):
        raise SimplanError(f"{path}: an embedded plan is not a version {version} plan document")
    return plan_from_dict(doc, str(path))


def run_sweep(args: argparse.Namespace) -> int:
    from simplan.commands.config_flags import config_from_args
    from simplan.commands.flag_rules import check_model
    from simplan.progress import Progress
    from simplan.report import run_sweep as sweep
    from simplan.report import write_sweep_report
    from simplan.sim.run import resolve_model
    from simplan.topology import load_cluster

    check_out(args)
    formats = _formats(args)
    kinds = tuple(args.link_kind or ("network",))
    first_nodes = int(args.values[0]) if args.vary == "nodes" else args.nodes
    cluster = load_cluster(args.cluster, nodes=first_nodes, gpus_per_node=args.gpus_per_node)
    config = config_from_args(args, cluster.num_devices)
    check_model(
        resolve_model(args.model, config),
        seq_len=config.seq_len,
        recompute=config.recompute,
        sequence_parallel=config.sequence_parallel,
    )
    with Progress(len(args.values), f"sweep over {args.vary}") as bar:
        points = sweep(
            args.model, args.cluster, config, vary=args.vary, values=args.values,
            nodes=args.nodes, gpus_per_node=args.gpus_per_node, link_kinds=kinds,
            progress=lambda done, _total: bar.advance(done - bar.done),
        )  # fmt: skip
    name = slug(f"sweep-{Path(args.model).stem}-{Path(args.cluster).stem}-{args.vary}")
    out, new = out_dir(args, name)
    title = f"{args.model} on {args.cluster}: {config.describe()}, sweep over {args.vary}"
    index = write_sweep_report(
        points,
        out,
        vary=args.vary,
        title=title,
        link_kinds=kinds,
        formats=formats,
        command=_command(),
        flag="--out",
        new=new,
    )
    for p in points:
        state = p.error or f"{p.tokens_per_s:,.0f} tokens/s, MFU {p.mfu:.1%}"
        print(f"{args.vary} {p.value:g}: {state}")
    print(f"report written to {index}")
    return 0


def run_validation(args: argparse.Namespace) -> int:
    from simplan.report import write_validation_report

    check_out(args)
    out, new = out_dir(args, "validation")
    index = write_validation_report(
        args.runs, out, formats=_formats(args), command=_command(), flag="--out", new=new
    )
    print(f"report written to {index}")
    return 0


def run_schedule(args: argparse.Namespace) -> int:
    from simplan.outputs import check_output_dir, new_directory
    from simplan.report.schedule import SCHEDULE_FILES, write_schedule_report
    from simplan.schedule.results import read_results

    if args.out:
        check_output_dir(args.out, "--out", owns=SCHEDULE_FILES)
    trace, results = read_results(args.file)
    if not results:
        raise SimplanError(f"{args.file}: holds no schedule results; rerun simplan schedule")
    out, new = Path(args.out or ""), False
    if not args.out:
        out, new = new_directory(REPORTS_DIR, slug(f"schedule-{Path(trace).stem}")), True
    index = write_schedule_report(
        results, out, trace=trace, formats=_formats(args), command=_command(), new=new
    )
    print(f"report written to {index}")
    return 0
