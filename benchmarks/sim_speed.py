"""How fast the simulator is: GPT-3 175B on 128 DGX A100 nodes (1024 GPUs).

tp 8, pp 16, dp 8, global batch 1536, micro-batch 1, 1F1B, full recomputation. The model graph is
counted (cached) and the cluster built before timing; each simulate() call is timed whole
(assembling costs, collectives on the topology, the SimPy run). Prints a table of the median of
five runs, with and without recording the timeline, and writes benchmarks/results/sim_speed.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from simplan.io import write_json_atomic
from simplan.parallel import ParallelConfig
from simplan.sim.run import simulate
from simplan.sources import load_model
from simplan.topology import load_cluster

RUNS = 5


def main() -> int:
    graph = load_model("gpt3-175b", dtype="bf16")
    config = ParallelConfig(
        dp=8, tp=8, pp=16, micro_batch=1, global_batch=1536, recompute="full", dtype="bf16"
    )
    rows = []
    for record in (False, True):
        times, result = [], None
        for _ in range(RUNS):
            cluster = load_cluster("dgx-a100", nodes=128)  # fresh: no cached collective costs
            t0 = time.perf_counter()
            result = simulate(graph, cluster, config, record=record)
            times.append(time.perf_counter() - t0)
        assert result is not None
        median = statistics.median(times)
        rows.append(
            {
                "record_timeline": record,
                "median_s": median,
                "min_s": min(times),
                "max_s": max(times),
                "events": result.event_count,
                "events_per_s": result.event_count / median,
                "step_time_s": result.step_time_s,
            }
        )
    print(f"gpt3-175b, 128 x dgx-a100, {config.describe()}")
    print(
        f"{'timeline':>9} {'median s':>9} {'min s':>7} {'max s':>7} {'events':>7} "
        f"{'events/s':>9} {'step s':>7}"
    )
    for r in rows:
        print(
            f"{r['record_timeline']!s:>9} {r['median_s']:>9.3f} {r['min_s']:>7.3f} "
            f"{r['max_s']:>7.3f} {r['events']:>7} {r['events_per_s']:>9.0f} "
            f"{r['step_time_s']:>7.2f}"
        )
    print("target: under 2 s")
    out = Path(__file__).resolve().parent / "results" / "sim_speed.json"
    write_json_atomic({"config": config.to_dict(), "runs": RUNS, "rows": rows}, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()  # --help: what it measures; it takes no options
    sys.exit(main())
