"""The `simplan` command line: parse, call one function, print. Errors exit with status 2."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from simplan.errors import SimplanError

# One module per verb under simplan/commands/, each with `register(subparsers)`.
COMMANDS = (
    "models",
    "profile",
    "simulate",
    "plan",
    "demo",
    "clusters",
    "bench_comm",
    "validate",
    "report",
)

DESCRIPTION = """\
simplan plans and simulates distributed deep-learning training: it profiles a model's layers,
models the cluster as a topology graph, and predicts step time, memory and the best split.

examples:
  simplan models                               list the model presets
  simplan profile gpt3-125m --seq-len 512      count and time every layer on this CPU
  simplan profile gpt3-175b --device h200      count on the meta device, time with the H200 model
"""


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error on one line (and exits with status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="simplan",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=OneLineParser
    )
    for name in COMMANDS:
        module = importlib.import_module(f"simplan.commands.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except SimplanError as exc:
        print(f"simplan {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"simplan {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
