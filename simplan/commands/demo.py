"""`simplan demo`: the main job on bundled inputs (what `make demo` runs)."""

from __future__ import annotations

import argparse

from simplan.cli import main as cli_main

HELP = """\
Run simplan's main job on bundled inputs and print the result: plan GPT-3 1.3B (global batch 512,
seq 2048) on two DGX A100 nodes (16 GPUs) and explain why the winner beats the runners-up and the
baselines (with figures under .cache/demo/report/), then simulate the winning plan step by step.
"""

PLAN_DIR = ".cache/demo/plan"  # beside the report: each directory is replaced whole
REPORT_DIR = ".cache/demo/report"
STEPS = (
    ["plan", "--model", "gpt3-1.3b", "--cluster", "dgx-a100", "--nodes", "2", "--global-batch",
     "512", "--explain", "--out", PLAN_DIR, "--report", REPORT_DIR],
    ["simulate", "--plan", f"{PLAN_DIR}/plan.json"],
)  # fmt: skip


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="run the main job on bundled inputs", description=HELP)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for step in STEPS:
        print(f"\n$ simplan {' '.join(step)}")
        status = cli_main(step)
        if status:
            return status
    return 0
