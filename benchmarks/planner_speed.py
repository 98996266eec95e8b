"""How long the planner's whole search takes on large clusters (2-core machine).

Cases: GPT-3 175B on 128 DGX A100 nodes (1,024 GPUs), global batch 1,536, seq 2,048; Llama 3 70B
on 32 DGX H100 nodes (256 GPUs), global batch 512, seq 8,192. The search time counts candidate
generation, analytic estimates, the partition ILPs, the simulation of the top K and the baselines;
loading the (cached) model graph is reported apart. Target: under 10 s each.
Prints a table and writes benchmarks/results/planner_speed.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from simplan.io import write_json_atomic
from simplan.planner import SearchOptions, search
from simplan.sources import load_model
from simplan.table import render
from simplan.topology import load_cluster

CASES = (
    ("gpt3-175b", "dgx-a100", 128, 1536, 2048),
    ("llama3-70b", "dgx-h100", 32, 512, 8192),
)
OUT = Path(__file__).parent / "results" / "planner_speed.json"


def run_case(model: str, cluster: str, nodes: int, batch: int, seq: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    graph = load_model(model, seq_len=seq, dtype="bf16")
    c = load_cluster(cluster, nodes=nodes)
    load_s = time.perf_counter() - t0
    # the whole search, uncut (--time-limit bounds all of it: bounded_work.py times that)
    result = search(graph, c, SearchOptions(global_batch=batch, top=3, time_limit_s=3600.0))
    best = result.plans[0]
    statuses = Counter(f"{s['status']}/sol_status {s['sol_status']}" for s in result.solves)
    solve_times = [s["solve_s"] for s in result.solves]
    return {
        "model": model, "cluster": cluster, "nodes": nodes, "devices": c.num_devices,
        "global_batch": batch, "seq_len": seq, "load_s": load_s,
        "search_time_s": result.search_time_s, "candidates": result.candidates,
        "estimated": result.evaluated, "simulated": result.simulated,
        "infeasible": result.infeasible, "ilp_solves": len(result.solves),
        "ilp_statuses": dict(statuses), "ilp_total_s": sum(solve_times),
        "ilp_max_s": max(solve_times, default=0.0),
        "ilp_max_gap": max((s["gap"] or 0.0 for s in result.solves), default=0.0),
        "best": best.config.describe(), "best_step_time_s": best.step_time_s,
        "best_mfu": best.predicted.get("mfu"),
        "baselines": {b.role: b.step_time_s for b in result.baselines},
        "under_10s": result.search_time_s < 10.0,
    }  # fmt: skip


def main() -> int:
    rows = [run_case(*case) for case in CASES]
    print(
        render(
            [
                "model",
                "GPUs",
                "candidates",
                "estimated",
                "simulated",
                "ILPs",
                "ILP s (max)",
                "statuses",
                "search s",
                "best plan",
                "step s",
                "MFU",
            ],
            [
                [
                    r["model"],
                    r["devices"],
                    r["candidates"],
                    r["estimated"],
                    r["simulated"],
                    r["ilp_solves"],
                    f"{r['ilp_total_s']:.2f} ({r['ilp_max_s']:.3f})",
                    ", ".join(f"{k} x{v}" for k, v in r["ilp_statuses"].items()),
                    f"{r['search_time_s']:.2f}",
                    r["best"],
                    f"{r['best_step_time_s']:.3f}",
                    f"{r['best_mfu']:.1%}",
                ]
                for r in rows
            ],
        )
    )
    write_json_atomic({"cases": rows}, OUT)
    print(f"wrote {OUT}")
    return 0 if all(r["under_10s"] for r in rows) else 1


if __name__ == "__main__":
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()  # --help: what it measures; it takes no options
    sys.exit(main())
