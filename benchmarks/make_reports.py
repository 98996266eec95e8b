"""Regenerate every committed report under reports/ (run from the repository root).

  reports/gpt3-1.3b-dgx-a100-2n/   the README demo (`simplan demo`): the planner's ranked plans
                                   and baselines for GPT-3 1.3B, global batch 512, on two DGX A100
                                   nodes; the best plan's timeline, breakdown and memory
  reports/gpt3-175b-dgx-a100-128n/ one simulated step of GPT-3 175B on 1,024 A100s (tp 8 pp 16
                                   dp 8, global batch 1,536): folding in a large cluster
  reports/sweep-gpt3-1.3b-dgx-a100-nodes/      throughput against GPU count (1-8 nodes)
  reports/sweep-gpt3-1.3b-dgx-a100-bandwidth/  what-if: InfiniBand bandwidth x1/8 ... x4
  reports/validation/              predicted vs measured, from traces/runs/ (when records exist)

Figures are PNG, and SVG where small (a timeline with more than a few thousand events is PNG
only). Usage: python benchmarks/make_reports.py [--only NAME ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from simplan.parallel import ParallelConfig
from simplan.report import (
    run_sweep,
    write_plan_report,
    write_simulation_report,
    write_sweep_report,
    write_validation_report,
)

REPORTS = Path("reports")
RUNS = Path("traces/runs")
DEMO: dict[str, Any] = {
    "model": "gpt3-1.3b",
    "cluster": "dgx-a100",
    "nodes": 2,
    "global_batch": 512,
}


def demo_plan() -> Path:
    from simplan.planner import SearchOptions, search

    options = SearchOptions(global_batch=DEMO["global_batch"], nodes=DEMO["nodes"], top=3)
    result = search(DEMO["model"], DEMO["cluster"], options)
    command = (
        "simplan plan --model gpt3-1.3b --cluster dgx-a100 --nodes 2 --global-batch 512 "
        "--out plans/ && simplan report plan plans/plans.json --out reports/gpt3-1.3b-dgx-a100-2n"
    )
    out = REPORTS / "gpt3-1.3b-dgx-a100-2n"
    return write_plan_report(result.plans, result.baselines, out, command=command)


def large_step() -> Path:
    from simplan.sim.run import simulate
    from simplan.topology import load_cluster

    config = ParallelConfig(dp=8, tp=8, pp=16, micro_batch=1, global_batch=1536)
    result = simulate("gpt3-175b", load_cluster("dgx-a100", nodes=128), config, record=True)
    command = (
        "simplan simulate --model gpt3-175b --cluster dgx-a100 --nodes 128 "
        "--global-batch 1536 --tp 8 --pp 16 --report reports/gpt3-175b-dgx-a100-128n"
    )
    out = REPORTS / "gpt3-175b-dgx-a100-128n"
    return write_simulation_report(result, out, command=command)


def sweep(
    vary: str, values: list[float], nodes: int | None, config: ParallelConfig, flags: str
) -> Path:
    points = run_sweep("gpt3-1.3b", "dgx-a100", config, vary=vary, values=values, nodes=nodes)
    title = f"gpt3-1.3b on dgx-a100: {config.describe()}, sweep over {vary}"
    command = (
        f"simplan report sweep --model gpt3-1.3b --cluster dgx-a100 {flags} --vary {vary} "
        f"--values {' '.join(f'{v:g}' for v in values)} "
        f"--out reports/sweep-gpt3-1.3b-dgx-a100-{vary}"
    )
    out = REPORTS / f"sweep-gpt3-1.3b-dgx-a100-{vary}"
    return write_sweep_report(points, out, vary=vary, title=title, command=command)


def node_sweep() -> Path:
    config = ParallelConfig(dp=8, tp=1, pp=1, micro_batch=4, global_batch=512, zero=1)
    flags = "--global-batch 512 --micro-batch 4 --zero 1"
    return sweep("nodes", [1, 2, 4, 8, 16], None, config, flags)


def bandwidth_sweep() -> Path:
    config = ParallelConfig(dp=16, tp=2, pp=1, micro_batch=1, global_batch=64)
    flags = "--nodes 4 --global-batch 64 --tp 2"
    return sweep("bandwidth", [0.125, 0.25, 0.5, 1, 2, 4], 4, config, flags)


def validation() -> Path | None:
    if not any(RUNS.glob("*.json")):
        print(f"no records in {RUNS}: validation report skipped")
        return None
    return write_validation_report(
        RUNS, REPORTS / "validation", command="simplan report validation --out reports/validation"
    )


JOBS: dict[str, Callable[[], Path | None]] = {
    "demo": demo_plan,
    "large": large_step,
    "nodes": node_sweep,
    "bandwidth": bandwidth_sweep,
    "validation": validation,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(JOBS), help="some reports only")
    args = parser.parse_args(argv)
    for name in args.only or list(JOBS):
        t0 = time.perf_counter()
        index = JOBS[name]()
        if index is not None:
            print(f"{name:>10}: {index} ({time.perf_counter() - t0:.1f} s)")
    total = sum(p.stat().st_size for p in REPORTS.rglob("*") if p.is_file())
    print(f"reports/ holds {total / 2**20:.2f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
