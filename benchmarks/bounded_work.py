"""Bounded work: three inputs that used to run for minutes, each timed as the median of a few runs.

1. simulate 65,536 micro-batches: gpt3-1.3b on one dgx-h100 node, dp 1, tp 2, pp 4, micro-batch
   1, global batch 65,536, 1F1B (the simulate() call, model and cluster loaded before; and the
   whole `simplan simulate` command). Target: under 2 s.
2. `simplan plan --model llama3-8b --cluster dgx-h100 --nodes 2 --global-batch 100000000`: a
   plan or a one-line refusal in seconds (the global batch is above simplan.limits'
   MAX_GLOBAL_BATCH).
3. `simplan plan --time-limit 10` for a 1T-parameter GPT (hidden 25600, 128 layers, 160 heads,
   seq 2048, written below) on dgx-h100 with 1,250 nodes (10,000 GPUs), global batch 5,000: it
   returns within about 10 s of its start, with a note of what the limit cut.

Commands run in fresh processes (python -m simplan), timed from start to exit. Prints a table
and writes benchmarks/results/bounded_work.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simplan.io import write_json_atomic  # noqa: E402
from simplan.parallel import ParallelConfig  # noqa: E402
from simplan.sim.run import simulate  # noqa: E402
from simplan.sources import load_model  # noqa: E402
from simplan.table import render  # noqa: E402
from simplan.topology import load_cluster  # noqa: E402

RUNS = 3
OUT = ROOT / "benchmarks" / "results" / "bounded_work.json"
MODEL_1T = """\
[model]
description = "A 1T-parameter GPT: 128 layers, hidden 25600, 160 heads (benchmarks/bounded_work.py)"

[transformer]
hidden_size = 25600
num_layers = 128
num_heads = 160
seq_len = 2048
vocab_size = 51200
activation = "gelu"
tie_embeddings = true
"""
SIMULATE = ["--model", "gpt3-1.3b", "--cluster", "dgx-h100", "--dp", "1", "--tp", "2"]
SIMULATE += ["--pp", "4", "--global-batch", "65536"]
PLAN_8B = ["--model", "llama3-8b", "--cluster", "dgx-h100", "--nodes", "2"]
PLAN_8B += ["--global-batch", "100000000"]


def cli(args: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "simplan", *args], capture_output=True, text=True, env=env
    )
    return time.monotonic() - started, done


def timed_cli(name: str, args: list[str]) -> dict[str, Any]:
    times, last = [], None
    for _ in range(RUNS):
        seconds, last = cli(args)
        times.append(seconds)
    assert last is not None
    row: dict[str, Any] = {
        "case": name,
        "command": "simplan " + " ".join(args),
        "median_s": statistics.median(times),
        "max_s": max(times),
        "exit_status": last.returncode,
    }
    if last.returncode == 0 and "--json" in args:
        doc = json.loads(last.stdout)
        row["answer"] = doc["plans"][0]["config"] if doc["plans"] else ""
        row["cut_short"] = doc.get("cut_short", [])
    else:
        lines = (last.stderr if last.returncode else last.stdout).strip().splitlines()
        row["answer"] = lines[-1] if lines else ""
    return row


def simulate_api() -> dict[str, Any]:
    graph = load_model("gpt3-1.3b", dtype="bf16")
    cluster = load_cluster("dgx-h100")
    config = ParallelConfig(dp=1, tp=2, pp=4, micro_batch=1, global_batch=65536, dtype="bf16")
    times, result = [], None
    for _ in range(RUNS):
        started = time.monotonic()
        result = simulate(graph, cluster, config, record=False)
        times.append(time.monotonic() - started)
    assert result is not None
    return {
        "case": "simulate 65,536 micro-batches (API)",
        "command": f"simulate(gpt3-1.3b, dgx-h100, {config.describe()})",
        "median_s": statistics.median(times),
        "max_s": max(times),
        "exit_status": 0,
        "answer": f"step {result.step_time_s:.6g} s; {result.extrapolation_note()}",
        "simulated_microbatches": result.simulated_microbatches,
        "events": result.event_count,
    }


def main() -> int:
    rows = [
        simulate_api(),
        timed_cli("simulate 65,536 micro-batches (CLI)", ["simulate", *SIMULATE]),
    ]
    rows.append(timed_cli("plan llama3-8b, global batch 1e8", ["plan", *PLAN_8B]))
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "gpt-1t.toml"
        model.write_text(MODEL_1T)
        args = ["plan", "--model", str(model), "--cluster", "dgx-h100", "--nodes", "1250"]
        args += ["--global-batch", "5000", "--time-limit", "10", "--json"]
        row = timed_cli("plan 1T on 10,000 GPUs, --time-limit 10", args)
        row["command"] = str(row["command"]).replace(str(model), "gpt-1t.toml")
        rows.append(row)
    print(
        render(
            ["case", "median s", "max s", "exit", "answer"],
            [
                [
                    r["case"],
                    f"{r['median_s']:.2f}",
                    f"{r['max_s']:.2f}",
                    r["exit_status"],
                    str(r["answer"])[:90],
                ]
                for r in rows
            ],
        )
    )
    for r in rows:
        if r.get("cut_short"):
            print(f"{r['case']}: the limit cut: {'; '.join(r['cut_short'])}")
    write_json_atomic(
        {"runs": RUNS, "cpus": os.cpu_count(), "load_average": os.getloadavg(), "rows": rows}, OUT
    )
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()  # --help: what it measures; it takes no options
    sys.exit(main())
