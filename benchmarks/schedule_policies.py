"""Do the policies do what their papers say, on a heavy-tailed synthetic trace?

1. LAS (Tiresias 2D-LAS) against FIFO on 128 A100 GPUs (16 DGX A100 nodes), 1,000 jobs, at an
   offered load of 0.9 and of 1.2 (arrivals outpace the cluster for a while: queues form).
   Tiresias (Gu et al., NSDI 2019, abstract) reports average JCT improved "by up to 5.5x" over
   a YARN-based production scheduler (FIFO-like) and 2x over Gandiva.
2. Gavel's heterogeneity-aware max-min fairness against its heterogeneity-agnostic
   counterpart on a mixed cluster (8 DGX A100 + 8 DGX H100 nodes, 128 GPUs), 600 jobs.
   Gavel (Narayanan et al., OSDI 2020, abstract) reports average JCT and makespan improved "by
   up to 3.5x" over heterogeneity-agnostic policies.

The workload is benchmarks/schedule_workload.py's (the Philly generator of
simplan.schedule.synthetic with analytic speeds: each model's speedup from A100 to H100 follows
from its compute and communication terms, so it differs between jobs).
Prints a table and writes benchmarks/results/schedule_policies.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from schedule_workload import synthetic_workload, table

from simplan.io import write_json_atomic
from simplan.schedule.run import run_policy
from simplan.topology.cluster_spec import load_spec

EXPERIMENTS = (
    # name, cluster, nodes, jobs, offered load, baseline, policy, paper's reported ratio
    ("LAS vs FIFO, load 0.9", "dgx-a100", 16, 1000, 0.9, "fifo", "las",
     "up to 5.5x (Tiresias, NSDI 2019)"),
    ("LAS vs FIFO, load 1.2", "dgx-a100", 16, 1000, 1.2, "fifo", "las",
     "up to 5.5x (Tiresias, NSDI 2019)"),
    ("Gavel aware vs agnostic", "mixed-a100-h100", 16, 600, 0.9, "gavel-agnostic", "gavel",
     "up to 3.5x (Gavel, OSDI 2020)"),
)  # fmt: skip
HEADERS = ["experiment", "policy", "avg JCT h", "p99 JCT h", "makespan h", "utilization", "wall s"]


def main() -> int:
    rows, records = [], []
    for name, cluster, nodes, jobs, load, baseline, policy, paper in EXPERIMENTS:
        spec = load_spec(cluster, nodes=nodes)
        workload = synthetic_workload(spec, jobs, seed=1, load=load)
        found = {}
        for which in (baseline, policy):
            started = time.perf_counter()
            result = run_policy(which, workload)
            wall_s = time.perf_counter() - started
            m = found[which] = result.metrics
            hours = [f"{v / 3600:.2f}" for v in (m.avg_jct_s, m.p99_jct_s, m.makespan_s)]
            rows.append([name, which, *hours, f"{m.utilization:.1%}", f"{wall_s:.1f}"])
            print(table(HEADERS, rows[-1:]), flush=True)
        ratio = found[baseline].avg_jct_s / found[policy].avg_jct_s
        records.append({"experiment": name, "cluster": cluster, "nodes": nodes, "jobs": jobs,
                        "offered_load": load,
                        "baseline": baseline, "policy": policy,
                        "baseline_avg_jct_s": found[baseline].avg_jct_s,
                        "policy_avg_jct_s": found[policy].avg_jct_s,
                        "avg_jct_ratio": ratio, "paper": paper})  # fmt: skip
    print(table(HEADERS, rows))
    for r in records:
        print(f"{r['experiment']}: {r['baseline']} / {r['policy']} average JCT = "
              f"{r['avg_jct_ratio']:.2f}x; the paper reports {r['paper']}")  # fmt: skip
    out = Path(__file__).parent / "results" / "schedule_policies.json"
    write_json_atomic({"benchmark": "schedule_policies", "results": records}, out)
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()  # --help: what it measures; it takes no options
    sys.exit(main())
