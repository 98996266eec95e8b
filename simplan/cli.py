"""The `simplan` command line: parse, call one function, print. Errors exit with status 2."""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from simplan.commands.argtypes import Text
from simplan.commands.flag_rules import check_flags
from simplan.errors import EXIT_BAD_INPUT, SimplanError

# One module per verb under simplan/commands/, each with `register(subparsers)`.
COMMANDS = (
    "models",
    "profile",
    "simulate",
    "plan",
    "export",
    "demo",
    "clusters",
    "bench_comm",
    "validate",
    "run",
    "report",
    "trace",
    "schedule",
)

DESCRIPTION = """\
simplan plans and simulates distributed deep-learning training: it profiles a model's layers,
models the cluster as a topology graph, and predicts step time, memory and the best split.

examples:
  simplan models                               list the model presets
  simplan profile gpt3-125m --seq-len 512      count and time every layer on this CPU
  simplan profile gpt3-175b --device h200      count on the meta device, time with the H200 model
  simplan trace check examples/traces/tiny.csv check a job trace and summarise it

exit status: 0 done; 2 bad input (one line on stderr, nothing written); 3 `simulate`: the step
does not fit in device memory (the result is printed, stderr says by how much); 130 interrupted
"""


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error on one line (and exits with status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def verb_parser(
    parser: argparse.ArgumentParser, argv: Sequence[str]
) -> tuple[argparse.ArgumentParser, list[str]]:
    """The parser of the (sub)command `argv` names (simplan report sweep ...), and the
    arguments that follow its name."""
    rest = list(argv)
    sub = subcommands(parser)
    while sub is not None:
        index = next((i for i, a in enumerate(rest) if a in sub.choices or a == "--"), None)
        if index is None or rest[index] == "--":
            break
        parser, rest = sub.choices[rest[index]], rest[index + 1 :]
        sub = subcommands(parser)
    return parser, rest


def refuse_unknown_options(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """A mistyped flag (--global-bach) is named, with the closest known one, before argparse
    would complain about a required flag it then seems to lack."""
    verb, rest = verb_parser(parser, argv)
    sub = subcommands(verb)
    word = rest[0] if rest and not rest[0].startswith("-") else None
    if sub is not None and word is not None and word not in sub.choices:
        close = difflib.get_close_matches(word, list(sub.choices), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else f"use one of {', '.join(sub.choices)}"
        verb.error(f"unknown command {word!r}; {hint}")
    known = [o for o in verb._option_string_actions if o.startswith("--")]
    for arg in rest:
        if arg == "--":
            return
        name = arg.split("=", 1)[0]
        if not name.startswith("--") or any(o.startswith(name) for o in known):
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.7)
        hint = f"; did you mean {close[0]}?" if close else ""
        verb.error(f"unrecognized argument {name}{hint}")


def _all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    sub = subcommands(parser)
    children = [] if sub is None else list(sub.choices.values())
    return [parser, *(p for child in children for p in _all_parsers(child))]


def _refuse_empty_text(parser: argparse.ArgumentParser) -> None:
    """Every flag and argument that takes free text takes a non-empty one."""
    for p in _all_parsers(parser):
        for action in p._actions:
            if isinstance(action, argparse._StoreAction) and action.type is None:
                action.type = Text()


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
    _refuse_empty_text(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    refuse_unknown_options(parser, argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        verbs = ", ".join(name.replace("_", "-") for name in COMMANDS)
        parser.error(f"give a command: {verbs}")
    verb, rest = verb_parser(parser, argv)
    try:
        check_flags(verb, args, rest)
        return int(args.func(args) or 0)
    except SimplanError as exc:
        print(f"{verb.prog}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"simplan {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def entry() -> None:
    """The `simplan` command: main(), then exit with its status; when a time limit left work
    running, exit at once (flushed), since the interpreter's shutdown could abort mid-library."""
    from simplan.deadline import work_left_behind

    code = main()
    if work_left_behind():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
