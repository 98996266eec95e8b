"""`simplan schedule`: many training jobs on one cluster, simulated under a policy."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from simplan.commands import add_verb
from simplan.commands.argtypes import (
    GPUS_PER_NODE,
    MAX_SECONDS,
    NODES,
    non_negative_float,
    non_negative_int,
    positive_float,
)
from simplan.errors import SimplanError
from simplan.schedule.run import POLICY_NAMES as POLICIES

if TYPE_CHECKING:
    from simplan.schedule.run import Workload
    from simplan.topology.cluster_spec import ClusterSpec


MAX_MTBF_H = 1e6  # about a century

HELP = """\
Simulate the jobs of a trace on a cluster under a scheduling policy (SimPy: arrivals, placement
on the topology, preemption with a checkpoint cost, node failures, stragglers) and print average,
median and p99 job completion time, makespan, utilization, queueing delay, finish-time fairness
and preemptions. Each job's speed on each allocation (GPU type, count, packed or spread) comes
from the planner and simulator (--speeds planned, cached on disk) or from the analytic model of
simplan.schedule.analytic (--speeds analytic: peak FLOP/s and a gradient all-reduce).

policies:
  fifo            arrival order, no preemption, no backfilling
  srtf            shortest remaining time first, preemptive
  las             Tiresias two-dimensional least attained service (GPU-seconds), preemptive
  gavel           Gavel max-min fairness over throughput ratios, heterogeneity-aware, rounds
  gavel-agnostic  the same LP with every GPU type alike
  elastic         resizes jobs between min and max GPUs along their speed curve (Pollux / Sia)
  static          an ILP plan of the whole trace (arrivals known), followed as written
  hybrid          a plan of the known jobs, re-planned on arrivals, completions, failures

examples:
  simplan schedule --trace examples/traces/small.csv --cluster dgx-a100 --nodes 16 --policy las
  simplan schedule --trace jobs.csv --cluster mixed-a100-h100 --nodes 16 \\
      --compare fifo,las,gavel,gavel-agnostic --speeds analytic --out reports/sched
  simplan schedule --trace jobs.csv --cluster dgx-h100 --nodes 32 --policy hybrid \\
      --mtbf-h 500 --checkpoint-s 60 --seed 3 --json

defaults: --checkpoint-s 30 (an assumption, not a measurement: measure your jobs' save + load
time); node failures off unless --mtbf-h is given (exponential, per node, seeded by --seed);
repairs take --repair-h (default 1).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_verb(subparsers, "schedule", "simulate many training jobs on one cluster", HELP)
    p.add_argument("--trace", required=True, metavar="FILE", help="job trace (CSV or JSON)")
    p.add_argument("--cluster", required=True, help="cluster preset or TOML file")
    p.add_argument("--nodes", type=NODES, help="scale the cluster to N nodes")
    p.add_argument("--gpus-per-node", type=GPUS_PER_NODE, help="use G devices of each node")
    p.add_argument("--policy", choices=POLICIES, help="the policy (default fifo)")
    p.add_argument("--compare", metavar="P1,P2,...", help="several policies side by side")
    p.add_argument("--speeds", choices=("planned", "analytic"), default="planned",
                   help="where job speeds come from (default planned)")  # fmt: skip
    p.add_argument("--executor", default="local",
                   help="where planned speeds are computed: local or a Dask address")  # fmt: skip
    p.add_argument("--cache-dir", metavar="DIR", help="speed cache (default simplan's cache)")
    p.add_argument("--measured", metavar="FILE.csv",
                   help="measured steps/s per job and shape, in front of --speeds "
                   "(docs/job-trace.md)")  # fmt: skip
    p.add_argument("--seed", type=non_negative_int(2**31 - 1), default=0, help="failure seed")
    p.add_argument("--mtbf-h", type=positive_float(MAX_MTBF_H), help="node MTBF in hours")
    p.add_argument("--repair-h", type=positive_float(MAX_SECONDS / 3600), default=1.0,
                   help="hours a failed node takes to repair (default 1)")  # fmt: skip
    p.add_argument("--checkpoint-s", type=non_negative_float(MAX_SECONDS), default=30.0,
                   help="seconds a job loses at each restart (default 30)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--out", metavar="DIR", help="write schedule.json, figures and index.md")
    from simplan.commands.schedule_run import add_run_flags

    add_run_flags(p)
    p.set_defaults(func=run)


def policy_names(args: argparse.Namespace) -> list[str]:
    if args.compare and args.policy:
        raise SimplanError("give --policy or --compare, not both")
    if not args.compare:
        return [args.policy or "fifo"]
    names = [n.strip() for n in args.compare.split(",") if n.strip()]
    bad = [n for n in names if n not in POLICIES]
    if bad or not names:
        raise SimplanError(f"--compare takes policies from {', '.join(POLICIES)}, not {bad}")
    if len(set(names)) != len(names):
        raise SimplanError("--compare names a policy twice; list each once")
    return names


def load_workload(args: argparse.Namespace, spec: ClusterSpec) -> Workload:
    """The trace's jobs and their speed table (a measured table in front of the planned or
    analytic speeds): the one place the trace and speed modules are imported."""
    from simplan.schedule.executors import check_executor
    from simplan.schedule.measured import MeasuredSpeeds
    from simplan.schedule.run import Workload
    from simplan.schedule.shapes import check_fits_cluster
    from simplan.schedule.trace import read_trace, work_steps

    check_executor(args.executor)
    jobs = read_trace(args.trace)
    measured = MeasuredSpeeds.from_csv(args.measured) if args.measured else None
    check_fits_cluster(spec, jobs)  # a job no allocation of this cluster can hold: exit 2
    table: Any
    if args.speeds == "analytic":
        from simplan.schedule.analytic import AnalyticSpeeds

        table = AnalyticSpeeds(spec)
    else:
        from simplan.commands.trace import progress_bars
        from simplan.schedule.speeds import PlannedSpeeds

        table = PlannedSpeeds(spec, cache_dir=args.cache_dir, executor=args.executor)
        simulated = [j for j in jobs if measured is None or not measured.covers(j)]
        table.prepare(simulated, progress=None if args.json else progress_bars())
    if measured is not None:
        table = MeasuredSpeeds(measured.rows, table)
    return Workload(jobs=tuple(jobs), spec=spec, speeds=table, work=work_steps)


def run(args: argparse.Namespace) -> int:
    from simplan.commands.schedule_run import check_run_flags, run_real
    from simplan.schedule.cluster import SimOptions
    from simplan.schedule.run import run_policies
    from simplan.topology.cluster_spec import load_spec

    check_run_flags(args)
    if args.run:
        return run_real(args)
    names = policy_names(args)
    if args.out:
        from simplan.outputs import check_output_dir
        from simplan.report.schedule import SCHEDULE_FILES

        check_output_dir(args.out, "--out", owns=SCHEDULE_FILES)
    spec = load_spec(args.cluster, nodes=args.nodes, gpus_per_node=args.gpus_per_node)
    workload = load_workload(args, spec)
    options = SimOptions(
        checkpoint_s=args.checkpoint_s,
        mtbf_s=args.mtbf_h * 3600 if args.mtbf_h else None,
        repair_s=args.repair_h * 3600,
        seed=args.seed,
    )
    results = run_policies(names, workload, options)
    if args.out:
        from simplan.report.schedule import write_schedule_report

        index = write_schedule_report(results, args.out, trace=args.trace, command=_command())
        print(f"report written to {index}", file=sys.stderr if args.json else sys.stdout)
    if args.json:
        from simplan.schedule.results import results_document

        print(json.dumps(results_document(results, args.trace), indent=1))
        return 0
    from simplan.report.schedule import HEADERS, metrics_rows
    from simplan.table import render

    gpus = results[0].total_gpus
    print(f"{len(workload.jobs)} jobs of {args.trace} on {spec.name} ({gpus} GPUs)")
    print(render(list(HEADERS), metrics_rows(results)))
    for r in results:
        for note in r.notes:
            print(f"- {r.policy}: {note}")
    return 0


def _command() -> str:
    import shlex

    return "simplan " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["schedule"] else ""
