"""The planner against the configurations of Megatron-LM's weak-scaling table, same simulator.

Reference: simplan/data/reference/megatron_a100_weak_scaling_2021.csv (Narayanan et al., SC'21,
Table 1). For each row: GPT with the row's hidden size, heads and layers, seq 2048, vocab 51200,
bf16, on `dgx-a100` with GPUs / 8 nodes and the row's global batch. The table's configuration is
its TP and PP, DP = GPUs / (TP * PP), 1F1B, full recomputation, micro-batch 1. The planner's plan
must reach at least that throughput under simplan's simulator.
Prints a table and writes benchmarks/results/planner_megatron.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from simplan.build import graph_from_spec
from simplan.device_fit import read_reference_csv
from simplan.io import write_json_atomic
from simplan.parallel import ParallelConfig
from simplan.planner import SearchOptions, search
from simplan.sim.run import simulate
from simplan.table import render
from simplan.topology import load_cluster
from simplan.transformer_shape import TransformerSpec

TABLE = "megatron_a100_weak_scaling_2021.csv"
OUT = Path(__file__).parent / "results" / "planner_megatron.json"


def run_row(row: dict[str, str]) -> dict[str, object]:
    h, layers = int(row["hidden_size[R]"]), int(row["num_layers[R]"])
    heads, gpus = int(row["attention_heads[P]"]), int(row["num_gpus[R]"])
    tp, pp = int(row["tensor_parallel[P]"]), int(row["pipeline_parallel[P]"])
    batch = int(row["global_batch_size_sequences[R]"])
    label = row["model_size_label[R]"]
    spec = TransformerSpec(name=f"gpt-{label}", hidden_size=h, num_layers=layers,
                           num_heads=heads, seq_len=2048, vocab_size=51200)  # fmt: skip
    graph = graph_from_spec(spec, dtype="bf16")
    cluster = load_cluster("dgx-a100", nodes=gpus // 8)
    table = ParallelConfig(
        dp=gpus // (tp * pp),
        tp=tp,
        pp=pp,
        micro_batch=1,
        global_batch=batch,
        seq_len=2048,
        schedule="1f1b",
        recompute="full",
        dtype="bf16",
    )
    ref = simulate(graph, cluster, table, record=False)
    t0 = time.perf_counter()
    # a limit no row reaches: the table compares the full search's plans
    result = search(graph, cluster, SearchOptions(global_batch=batch, top=3, time_limit_s=3600.0))
    wall = time.perf_counter() - t0
    best = result.plans[0]
    ours = best.predicted["tokens_per_s"]
    return {
        "model": label, "gpus": gpus, "global_batch": batch,
        "table_config": table.describe(), "table_tokens_per_s": ref.tokens_per_s,
        "table_fits": ref.fits_memory, "table_mfu": ref.mfu,
        "plan_config": best.config.describe(), "plan_role": best.role,
        "plan_tokens_per_s": ours, "plan_mfu": best.predicted["mfu"],
        "speedup": ours / ref.tokens_per_s, "at_least_table": ours >= ref.tokens_per_s * (1 - 1e-9),
        "search_time_s": wall, "candidates": result.candidates,
    }  # fmt: skip


def main() -> int:
    rows = []
    for row in read_reference_csv(TABLE):
        rows.append(run_row(row))
        r = rows[-1]
        print(f"{r['model']}: {r['speedup']:.3f}x in {r['search_time_s']:.1f} s", file=sys.stderr)
    print(
        render(
            ["model", "GPUs", "table config", "table tok/s", "plan", "plan tok/s", "x", "search s"],
            [
                [
                    r["model"],
                    r["gpus"],
                    r["table_config"],
                    f"{r['table_tokens_per_s']:,.0f}",
                    r["plan_config"],
                    f"{r['plan_tokens_per_s']:,.0f}",
                    f"{r['speedup']:.3f}",
                    f"{r['search_time_s']:.1f}",
                ]
                for r in rows
            ],
        )
    )
    write_json_atomic({"reference": TABLE, "rows": rows}, OUT)
    print(f"wrote {OUT}")
    return 0 if all(r["at_least_table"] for r in rows) else 1


if __name__ == "__main__":
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()  # --help: what it measures; it takes no options
    sys.exit(main())
