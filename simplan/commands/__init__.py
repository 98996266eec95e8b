"""One module per `simplan` verb; each defines `register(subparsers)`."""

from __future__ import annotations

import argparse


def add_verb(
    subparsers: argparse._SubParsersAction, name: str, summary: str, description: str
) -> argparse.ArgumentParser:
    """The parser of one verb (or sub-verb): `summary` in the list of verbs, `description`
    (usage and examples, laid out as written) in its --help."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=summary,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def add_rank_timeout(parser: argparse.ArgumentParser, default_s: float) -> None:
    """--timeout of a verb that runs ranks (simplan.ranks.supervise)."""
    from simplan.commands.argtypes import SECONDS

    parser.add_argument(
        "--timeout",
        type=SECONDS,
        default=default_s,
        help="seconds the ranks may all go without progress before every rank is stopped and "
        f"the slowest named (default {default_s:g})",
    )
