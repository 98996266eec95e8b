"""--prune and --quantize: knobs that change the model, written into the model spec's suffix
(simplan/model_knobs.py) so that every later step loads the same smaller model."""

from __future__ import annotations

import argparse

from simplan.commands.argtypes import Text
from simplan.errors import SimplanError
from simplan.model_knobs import PRUNE_HELP, QUANTIZE_HELP, with_knobs


def add_model_knob_flags(parser: argparse.ArgumentParser, *, quantize: bool = True) -> None:
    parser.add_argument("--prune", type=Text(), metavar="WHAT:FRACTION[,...]", help=PRUNE_HELP)
    if quantize:
        parser.add_argument("--quantize", type=Text(), metavar="DTYPE", help=QUANTIZE_HELP)


def model_spec(args: argparse.Namespace) -> str:
    """args.model with the knobs of --prune and --quantize (validated: one-line errors)."""
    prune, quantize = getattr(args, "prune", None), getattr(args, "quantize", None)
    if not (prune or quantize):
        return args.model
    if not args.model:
        flag = "--prune" if prune else "--quantize"
        raise SimplanError(
            f"{flag} changes the model given with --model; a plan file's model already "
            "carries its knobs (plan with the knob instead)"
        )
    return with_knobs(args.model, prune=prune, quantize=quantize)
