"""`simplan schedule --run`: execute a trace for real on this machine's CPU slots and compare it
with its simulation (simplan.schedule.real_compare)."""

from __future__ import annotations

import argparse
import json
import sys

from simplan.commands.argtypes import MAX_SECONDS, positive_float
from simplan.errors import SimplanError

RUN_HELP = """
real execution (--run): every CPU slot of --cluster localhost-cpu stands for a GPU (one per
core of this machine, or --gpus-per-node N up to that). Jobs arrive at their trace
times times --time-scale; the policy decides as in the simulation; each job trains its
data-parallel plan on its slots (gloo ranks, one thread each) for its work in steps; a
preemption saves a checkpoint (torch.distributed.checkpoint) and a restart continues from it.
First the step time of each job's plan is modelled (this machine's layer profiles, measured
at the start as the ranks run and kept under traces/profiles/) and each model's launch, save
and load costs are measured; the same trace is simulated with them. Prints the simulated and
measured makespan, average JCT and each JCT with the error, progress on stderr, and writes a
record (JSON with metadata) to --record (default traces/schedule/). A run that makes no
progress for --timeout-s is stopped with an error; every rank is stopped on failure and on Ctrl-C.
  simplan schedule --trace examples/traces/tiny.csv --cluster localhost-cpu --run
"""


def add_run_flags(p: argparse.ArgumentParser) -> None:
    p.description = (p.description or "") + RUN_HELP
    p.add_argument("--run", action="store_true",
                   help="execute the trace for real on this machine's CPU slots")  # fmt: skip
    p.add_argument("--time-scale", type=positive_float(1e6), default=1.0,
                   help="--run: multiply arrival times by this (default 1)")  # fmt: skip
    p.add_argument("--timeout-s", type=positive_float(MAX_SECONDS), default=120.0,
                   help="--run: stop a job whose ranks make no progress this long")  # fmt: skip
    p.add_argument("--record", metavar="DIR", default=None,
                   help="--run: where the record goes (default traces/schedule)")  # fmt: skip


def check_run_flags(args: argparse.Namespace) -> None:
    """Refuse flags that only --run takes without it, and what --run does not do."""
    if not args.run:
        given = [f for f, v in (("--record", args.record), ("--time-scale", args.time_scale != 1.0),
                                ("--timeout-s", args.timeout_s != 120.0)) if v]  # fmt: skip
        if given:
            raise SimplanError(f"{given[0]} applies to --run only; add --run or drop it")
        return
    bad = [f for f, v in (("--compare", args.compare), ("--mtbf-h", args.mtbf_h),
                          ("--out", args.out), ("--speeds analytic", args.speeds == "analytic"))
           if v]  # fmt: skip
    if bad:
        raise SimplanError(f"--run executes one policy without failures; drop {bad[0]}")


def run_real(args: argparse.Namespace) -> int:
    from simplan.outputs import check_record_dir
    from simplan.schedule.real_compare import (
        RECORD_DIR,
        comparison_document,
        execute,
        write_record,
    )
    from simplan.schedule.trace import read_trace
    from simplan.topology.cluster_spec import load_spec

    record_dir = check_record_dir(args.record or RECORD_DIR, "--record")
    spec = load_spec(args.cluster, nodes=args.nodes, gpus_per_node=slots_wanted(args))
    jobs = read_trace(args.trace)
    result = execute(
        jobs, spec, args.policy or "fifo", time_scale=args.time_scale, timeout_s=args.timeout_s,
        echo=lambda line: print(line, file=sys.stderr, flush=True),
    )  # fmt: skip
    command = "simplan " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["schedule"] else ""
    document = comparison_document(result, args.trace, command)
    path = write_record(document, record_dir)
    if args.json:
        print(json.dumps(document | {"record": str(path)}, indent=1))
        return 0
    print_comparison(document)
    print(f"record written to {path}")
    return 0


def slots_wanted(args: argparse.Namespace) -> int | None:
    """--gpus-per-node, else one slot per core of this machine on a CPU preset."""
    import os

    if args.gpus_per_node or args.cluster != "localhost-cpu":
        return args.gpus_per_node
    return os.cpu_count() or 1


def print_comparison(document: dict) -> None:
    from simplan.table import render

    comp = document["comparison"]
    rows = [[j["id"], f"{j['measured']:.2f}", f"{j['simulated']:.2f}", f"{j['error']:+.1%}"]
            for j in comp["jobs"]]  # fmt: skip
    for name, key in (("avg JCT", "avg_jct_s"), ("makespan", "makespan_s")):
        c = comp[key]
        rows.append([name, f"{c['measured']:.2f}", f"{c['simulated']:.2f}", f"{c['error']:+.1%}"])
    print(f"policy {document['policy']} on {document['slots']} CPU slots "
          f"(step times: {document['step_times']})")  # fmt: skip
    print(render(["job", "measured s", "simulated s", "error"], rows))
