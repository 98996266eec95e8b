"""`simplan demo`: the main job on bundled inputs (what `make demo` runs)."""

from __future__ import annotations

import argparse

from simplan.cli import main as cli_main

HELP = """\
Run simplan's main job on bundled inputs and print the result: count GPT-3 1.3B and estimate its
layer times on an A100 80GB device model, then measure the MNIST MLP on this CPU.
"""

STEPS = (
    ["profile", "gpt3-1.3b", "--device", "a100-80gb", "--micro-batch", "4"],
    ["profile", "mlp", "--device", "cpu", "--micro-batch", "64", "--no-save"],
)


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
