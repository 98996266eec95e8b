"""`simplan trace generate|check|speeds`: synthetic job traces, checking a trace, and the speed
table of a trace on a cluster (each job kind's best-plan step time on each allocation)."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from typing import Any

from simplan.commands import add_verb
from simplan.commands.argtypes import NODES, SECONDS, non_negative_int, positive_float, positive_int
from simplan.errors import SimplanError

MAX_SEED = 2**63 - 1
MAX_JOBS_PER_HOUR = 1e6

HELP = """\
Job traces for `simplan schedule`: the jobs a cluster is asked to run (CSV or JSON, schema
version 1 in docs/job-trace.md).

  simplan trace generate   draw a synthetic trace from published cluster statistics
  simplan trace check      read a trace, print a summary (and whether each job fits a cluster)
  simplan trace speeds     each job's step time on each allocation of a cluster

examples:
  simplan trace check examples/traces/small.csv --cluster dgx-a100 --nodes 4
  simplan trace generate --jobs 500 --cluster dgx-a100 --nodes 16 --out philly-500.csv
  simplan trace speeds examples/traces/tiny.csv --cluster localhost-cpu --json
"""

GENERATE_HELP = """\
Draw a synthetic trace whose arrivals, GPU counts and durations follow a published workload
(simplan/data/cluster_workloads.json, with sources): `philly`, Microsoft's Philly cluster (Jeon
et al., ATC 2019) as distilled by Gavel (OSDI 2020): 70% of jobs ask for 1 GPU, 10% for 2, 15%
for 4, 5% for 8; durations 10^x minutes, x ~ U[1.5, 3] (80%) or U[3, 4] (20%); Poisson arrivals
at --jobs-per-hour. Jobs train GPT-3 125M / 350M / 1.3B at their published batch sizes (uniformly
chosen). A job's work in steps is its drawn duration over the step time of its best plan on the
GPUs it asked for (--gpu-type, packed), from the planner and simulator (cached; see
`simplan trace speeds`), so a job run alone on what it asked for lasts the drawn duration.

examples:
  simplan trace generate --jobs 40 --cluster dgx-a100 --nodes 2 --seed 1 --out small.csv
  simplan trace generate --jobs 500 --jobs-per-hour 20 --cluster mixed-a100-h100 --nodes 32 \\
      --gpu-type a100 --out heavy.json --json
"""

CHECK_HELP = """\
Read a trace and print a summary: jobs, arrivals, models, GPU requests and work. With --cluster,
also check that every job has an allocation there (its GPU types and a power-of-two GPU count
within min/max GPUs) and count its candidate shapes. Exit 2 with one line naming the row and
field for anything wrong (unknown model, negative work, duplicate ids, a job that fits nowhere).

examples:
  simplan trace check examples/traces/tiny.csv
  simplan trace check examples/traces/small.csv --cluster dgx-a100 --nodes 4 --json
"""

SPEEDS_HELP = """\
Prepare and print the speed table of a trace on a cluster: for every job kind (model, global
batch, sequence length) and every candidate shape (GPU type x power-of-two count, packed in few
nodes or spread one per node), the step time of the best plan the planner finds there, under the
simulator. Searches run on --executor and are cached under $SIMPLAN_CACHE_DIR/speeds by content
(model file, batch, sequence, shape, cluster, simplan version): a second run reads the cache.
--measured FILE.csv (columns job, gpu_type, gpus, steps_per_s[, nodes]) replaces the simulator
for the jobs it names.

examples:
  simplan trace speeds examples/traces/tiny.csv --cluster localhost-cpu
  simplan trace speeds examples/traces/small.csv --cluster dgx-a100 --nodes 2 --executor local:2
  simplan trace speeds trace.csv --cluster mixed-a100-h100 --nodes 4 --executor dask://sched:8786
  simplan trace speeds trace.csv --cluster dgx-h100 --measured ours.csv --json
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from simplan.schedule.executors import EXECUTOR_HELP
    from simplan.schedule.speeds import DEFAULT_SEARCH_LIMIT_S

    p = add_verb(subparsers, "trace", "job traces: generate, check, speeds", HELP)
    p.set_defaults(func=lambda _args: _no_command(p))
    sub = p.add_subparsers(
        dest="trace_command", metavar="generate|check|speeds", parser_class=type(p)
    )
    g = add_verb(sub, "generate", "draw a synthetic trace from cluster statistics", GENERATE_HELP)
    g.add_argument("--jobs", type=positive_int(1_000_000), default=100, help="jobs (default 100)")
    g.add_argument("--seed", type=non_negative_int(MAX_SEED), default=0, help="(default 0)")
    g.add_argument(
        "--jobs-per-hour",
        type=positive_float(MAX_JOBS_PER_HOUR),
        default=10.0,
        help="mean arrival rate, a setting of the experiment (default 10)",
    )
    g.add_argument("--workload", choices=("philly",), default="philly", help="(default philly)")
    g.add_argument("--gpu-type", help="GPU type the durations refer to (default: the first)")
    g.add_argument("--out", required=True, metavar="FILE", help="the trace, .csv or .json")
    check = add_verb(sub, "check", "read a trace and print a summary", CHECK_HELP)
    check.add_argument("trace", metavar="FILE", help="a .csv or .json trace")
    speeds = add_verb(sub, "speeds", "each job's step time on each allocation", SPEEDS_HELP)
    speeds.add_argument("trace", metavar="FILE", help="a .csv or .json trace")
    speeds.add_argument("--measured", metavar="FILE.csv", help="measured steps/s per job and shape")
    for q, required in ((g, True), (check, False), (speeds, True)):
        q.add_argument("--cluster", required=required, help="cluster preset or TOML file")
        q.add_argument("--nodes", type=NODES, help="scale the cluster to N nodes")
    for q in (g, speeds):
        q.add_argument("--executor", default="local", help=EXECUTOR_HELP)
        q.add_argument(
            "--time-limit",
            type=SECONDS,
            default=DEFAULT_SEARCH_LIMIT_S,
            help=f"seconds for each plan search (default {DEFAULT_SEARCH_LIMIT_S:g})",
        )
    for q in (g, check, speeds):
        q.add_argument("--json", action="store_true", help="print one JSON document")
    g.set_defaults(func=run_generate)
    check.set_defaults(func=run_check)
    speeds.set_defaults(func=run_speeds)


def _no_command(p: argparse.ArgumentParser) -> int:
    p.error("give a trace command: generate, check or speeds")
    return 2


def _spec(args: argparse.Namespace) -> Any:
    from simplan.topology.cluster_spec import load_spec

    return load_spec(args.cluster, nodes=args.nodes)


def progress_bars() -> Any:
    """A progress callback for PlannedSpeeds.prepare: one bar a label, on stderr."""
    from simplan.progress import Progress

    bars: dict[str, Progress] = {}

    def progress(label: str, done: int, total: int) -> None:
        bar = bars.setdefault(label, Progress(total, label))
        bar.advance(done - bar.done)
        if done >= total:
            bar.__exit__(None, None, None)

    return progress


def _print(args: argparse.Namespace, doc: dict[str, Any], lines: list[str]) -> None:
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        print("\n".join(lines))


# ------------------------------------------------------------------ generate


def run_generate(args: argparse.Namespace) -> int:
    from simplan.outputs import check_output_file
    from simplan.schedule.executors import check_executor
    from simplan.schedule.speeds import PlannedSpeeds
    from simplan.schedule.synthetic import default_kinds, draw_jobs, load_workload, packed_shape
    from simplan.schedule.trace import canonical_gpu_type, trace_format, write_trace

    trace_format(args.out, "--out")
    check_output_file(args.out, "--out")
    check_executor(args.executor)
    spec = _spec(args)
    from simplan.schedule.shapes import node_kinds

    gpu_type = canonical_gpu_type(args.gpu_type) if args.gpu_type else next(iter(node_kinds(spec)))
    workload = load_workload(args.workload)
    kinds = default_kinds()
    draws = draw_jobs(
        args.jobs, seed=args.seed, jobs_per_hour=args.jobs_per_hour, workload=workload,
        kinds=len(kinds),
    )  # fmt: skip
    shapes = sorted({packed_shape(spec, gpu_type, d.gpus) for d in draws})
    speeds = PlannedSpeeds(spec, executor=args.executor, time_limit_s=args.time_limit)
    from simplan.schedule.core import Job

    probes = [
        Job(id=k.model, model=k.model, global_batch=k.global_batch, seq_len=k.seq_len, work=1.0)
        for k in kinds
    ]
    speeds.prepare(probes, shapes, progress=None if args.json else progress_bars())
    from simplan.schedule.synthetic import synthetic_trace

    jobs = synthetic_trace(draws, kinds=kinds, speeds=speeds, spec=spec, gpu_type=gpu_type)
    write_trace(jobs, args.out)
    doc = {"out": str(args.out), "workload": args.workload, "source": workload.source,
           "gpu_type": gpu_type, **summary(jobs)}  # fmt: skip
    lines = [f"wrote {args.out}: {len(jobs)} jobs drawn from the {args.workload} workload "
             f"(seed {args.seed}), durations on {gpu_type}", *summary_lines(doc)]  # fmt: skip
    _print(args, doc, lines)
    return 0


# ------------------------------------------------------------------ check


def summary(jobs: list[Any]) -> dict[str, Any]:
    """What a trace holds, in numbers."""
    from simplan.schedule.trace import work_steps

    arrivals = [j.arrival_s for j in jobs]
    return {
        "jobs": len(jobs),
        "first_arrival_s": min(arrivals),
        "last_arrival_s": max(arrivals),
        "models": dict(Counter(j.model for j in jobs).most_common()),
        "min_gpus": {str(k): v for k, v in sorted(Counter(j.min_gpus for j in jobs).items())},
        "work_steps": sum(work_steps(j) for j in jobs),
        "with_deadline": sum(j.deadline_s is not None for j in jobs),
    }


def summary_lines(doc: dict[str, Any]) -> list[str]:
    models = ", ".join(f"{m} {n}" for m, n in doc["models"].items())
    gpus = ", ".join(f"{g}: {n}" for g, n in doc["min_gpus"].items())
    return [
        f"jobs: {doc['jobs']}, arriving {doc['first_arrival_s']:g} s .. "
        f"{doc['last_arrival_s']:g} s; {doc['with_deadline']} with a deadline",
        f"models: {models}",
        f"jobs by min GPUs: {gpus}",
        f"work: {doc['work_steps']:,.0f} optimizer steps in all",
    ]


def run_check(args: argparse.Namespace) -> int:
    from simplan.schedule.shapes import candidate_shapes, check_fits_cluster
    from simplan.schedule.trace import read_trace

    if args.nodes and not args.cluster:
        raise SimplanError("--nodes needs --cluster; give the cluster to check against")
    jobs = read_trace(args.trace)
    doc: dict[str, Any] = {"trace": str(args.trace), **summary(jobs)}
    lines = [f"{args.trace}: a valid v1 trace", *summary_lines(doc)]
    if args.cluster:
        spec = _spec(args)
        check_fits_cluster(spec, jobs)
        shapes = {j.id: len(candidate_shapes(spec, j)) for j in jobs}
        doc["cluster"] = spec.name
        doc["shapes_per_job"] = shapes
        lines.append(
            f"every job has an allocation on {spec.name} ({spec.num_nodes} nodes): "
            f"{min(shapes.values())}..{max(shapes.values())} candidate shapes per job"
        )
    _print(args, doc, lines)
    return 0


# ------------------------------------------------------------------ speeds


def run_speeds(args: argparse.Namespace) -> int:
    from simplan.schedule.executors import check_executor
    from simplan.schedule.measured import MeasuredSpeeds
    from simplan.schedule.shapes import check_fits_cluster
    from simplan.schedule.speeds import PlannedSpeeds
    from simplan.schedule.trace import read_trace

    check_executor(args.executor)
    jobs = read_trace(args.trace)
    measured = MeasuredSpeeds.from_csv(args.measured) if args.measured else None
    spec = _spec(args)
    check_fits_cluster(spec, jobs)
    planned = PlannedSpeeds(spec, executor=args.executor, time_limit_s=args.time_limit)
    simulated = [j for j in jobs if measured is None or not measured.covers(j)]
    searched = planned.prepare(simulated, progress=None if args.json else progress_bars())
    table: Any = planned if measured is None else MeasuredSpeeds(measured.rows, planned)
    rows = speed_rows(jobs, spec, table, planned)
    doc = {"trace": str(args.trace), "cluster": spec.name, "searched": searched,
           "cached": len({(r["job_kind"], r["shape"]) for r in rows if r["source"] == "simulated"})
           - searched, "speeds": rows}  # fmt: skip
    _print(args, doc, speed_lines(doc))
    return 0


def speed_rows(jobs: list[Any], spec: Any, table: Any, planned: Any) -> list[dict[str, Any]]:
    """One row per (job kind, shape); a kind with no speed anywhere is a one-line error."""
    from simplan.schedule.shapes import candidate_shapes, shape_label

    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for job in jobs:
        if job.kind in seen:
            continue
        seen.add(job.kind)
        shapes = candidate_shapes(spec, job)
        kind_rows = []
        for shape in shapes:
            speed = table.speed(job, shape)
            kind_rows.append({
                "job_kind": job.kind, "model": job.model, "shape": shape_label(shape),
                "gpu_type": shape.gpu_type, "gpus": shape.gpus, "nodes": shape.nodes,
                "step_time_s": None if speed is None else speed.step_time_s,
                "steps_per_s": None if speed is None else 1.0 / speed.step_time_s,
                "source": "-" if speed is None else speed.source,
                "plan": "" if speed is None else speed.plan,
            })  # fmt: skip
        if all(r["step_time_s"] is None for r in kind_rows):
            why = planned.reason(job, shapes[-1]) or "no measurement for its shapes"
            raise SimplanError(f"job {job.id}: fits no allocation of {spec.name}: {why}")
        rows += kind_rows
    return rows


def speed_lines(doc: dict[str, Any]) -> list[str]:
    from simplan.table import render

    cells = [
        [r["job_kind"], r["shape"],
         "-" if r["step_time_s"] is None else f"{r['step_time_s']:.4g}",
         "-" if r["steps_per_s"] is None else f"{r['steps_per_s']:.4g}", r["source"], r["plan"]]
        for r in doc["speeds"]
    ]  # fmt: skip
    return [
        render(["job kind", "shape", "step s", "steps/s", "source", "best plan"], cells),
        f"{doc['searched']} plan searches run, {doc['cached']} read from the cache "
        f"(- : no plan fits that shape)",
    ]
