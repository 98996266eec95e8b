"""How fast the cluster simulation is: 10,000 jobs on a 1,024-GPU cluster (128 DGX A100 nodes).

The workload is benchmarks/schedule_workload.py's Philly-like synthetic trace with the analytic
speed table, warmed before timing (every job's rigid shape is priced first: "once the speed
table is known"). Each policy's run (SimPy events, policy decisions, placement) is timed whole.
Prints a table and writes benchmarks/results/schedule_scale.json. The target is under 60 s per
policy; the CPU time of the process is reported beside the wall time, which a machine shared
with other work stretches (the load average is recorded).
Usage: python benchmarks/schedule_scale.py [policy,policy,...] [jobs]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from schedule_workload import synthetic_workload, table

from simplan.io import write_json_atomic
from simplan.schedule.cluster import rigid_size
from simplan.schedule.run import POLICY_NAMES, Workload, run_policy
from simplan.schedule.state import ClusterState, cluster_nodes
from simplan.topology.cluster_spec import load_spec

NODES = 128
JOBS = 10_000
TARGET_S = 60.0
HEADERS = ["policy", "wall s", "CPU s", "events", "avg JCT h", "utilization", "CPU < 60 s"]


RESULTS = Path(__file__).parent / "results" / "schedule_scale.json"


def save(records: list[dict], jobs: int) -> None:
    """Merge these policies' records into the results file (other policies' stay)."""
    old = []
    if RESULTS.exists():
        doc = json.loads(RESULTS.read_text())
        if doc.get("jobs") == jobs:
            old = [r for r in doc["results"] if r["policy"] not in {n["policy"] for n in records}]
    doc = {"benchmark": "schedule_scale", "jobs": jobs, "gpus": NODES * 8, "cluster": "dgx-a100",
           "target_s": TARGET_S, "results": old + records}  # fmt: skip
    write_json_atomic(doc, RESULTS)


def warm(workload: Workload) -> None:
    """Price every job's rigid shapes, so the timed runs read a known speed table."""
    state = ClusterState(nodes=cluster_nodes(workload.spec), speeds=workload.speeds)
    for job in workload.jobs:
        rigid_size(job, state)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "policies", nargs="?", default=",".join(POLICY_NAMES), help="comma-separated policies"
    )
    parser.add_argument("jobs", nargs="?", type=int, default=JOBS, help="jobs in the workload")
    args = parser.parse_args(argv)
    names = args.policies.split(",")
    unknown = [n for n in names if n not in POLICY_NAMES]
    if unknown:
        parser.error(f"unknown policy {unknown[0]!r}: use {', '.join(POLICY_NAMES)}")
    jobs = args.jobs
    spec = load_spec("dgx-a100", nodes=NODES)
    workload = synthetic_workload(spec, jobs, seed=0)
    warm(workload)
    rows, records = [], []
    for name in names:
        started, cpu_started = time.perf_counter(), time.process_time()
        result = run_policy(name, workload)
        wall_s = time.perf_counter() - started
        cpu_s = time.process_time() - cpu_started
        m = result.metrics
        rows.append([name, f"{wall_s:.1f}", f"{cpu_s:.1f}", f"{result.events:,}",
                     f"{m.avg_jct_s / 3600:.2f}", f"{m.utilization:.1%}",
                     "yes" if cpu_s < TARGET_S else "NO"])  # fmt: skip
        records.append({"policy": name, "wall_s": wall_s, "cpu_s": cpu_s,
                        "load_average_1m": os.getloadavg()[0], "events": result.events,
                        "avg_jct_s": m.avg_jct_s, "utilization": m.utilization,
                        "notes": list(result.notes)})  # fmt: skip
        print(table(HEADERS, rows[-1:]), flush=True)
        save(records, jobs)  # after each policy: a long run keeps what it measured
    print(table(HEADERS, rows))
    out = RESULTS
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
