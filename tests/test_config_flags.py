"""The configuration flags are made from ParallelConfig's fields: one name, type, default, help
and range for every verb."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from simplan.cli import build_parser, verb_parser
from simplan.commands.argtypes import IntRange
from simplan.commands.config_flags import CONFIG_FIELDS, config_from_args, flag_name
from simplan.errors import SimplanError
from simplan.parallel import ParallelConfig


def _verb(*words: str) -> argparse.ArgumentParser:
    return verb_parser(build_parser(), words)[0]


def _action(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    return parser._option_string_actions[flag]


def test_every_knob_of_the_configuration_is_a_flag_of_simulate_and_sweep() -> None:
    knobs = [f for f in dataclasses.fields(ParallelConfig) if "knob" in f.metadata]
    assert [f.name for f in knobs] == list(CONFIG_FIELDS)
    assert {"dp", "tp", "pp", "micro_batch", "schedule", "zero", "recompute"} <= set(CONFIG_FIELDS)
    for parser in (_verb("simulate"), _verb("report", "sweep")):
        for f in knobs:
            knob = f.metadata["knob"]
            action = _action(parser, flag_name(f.name))
            assert action.help == knob.help
            if knob.choices:
                assert tuple(action.choices or ()) == knob.choices
            elif isinstance(f.default, int) and not isinstance(f.default, bool):
                assert action.type == IntRange(knob.lo, knob.hi)
            if f.name not in ("dp", "global_batch"):  # set from the cluster / required
                assert action.default == f.default


def test_verbs_share_the_flag_and_override_only_what_they_say() -> None:
    simulate, plan, validate = _verb("simulate"), _verb("plan"), _verb("validate")
    for flag in ("--global-batch", "--seq-len"):
        assert _action(plan, flag).type == _action(simulate, flag).type
    assert _action(plan, "--global-batch").required
    assert _action(validate, "--micro-batch").default == 64
    assert _action(validate, "--micro-batch").help == "samples per micro-batch (64)"
    assert _action(validate, "--schedule").choices == _action(simulate, "--schedule").choices


def test_the_flags_build_the_configuration_they_name() -> None:
    argv = ["simulate", "--model", "m", "--cluster", "c", "--global-batch", "32", "--tp", "2",
            "--pp", "2", "--micro-batch", "2", "--schedule", "interleaved", "--virtual-stages",
            "2", "--zero", "1", "--recompute", "full", "--dtype", "fp16"]  # fmt: skip
    args = build_parser().parse_args(argv)
    expected = ParallelConfig(
        dp=4, tp=2, pp=2, micro_batch=2, global_batch=32, schedule="interleaved",
        virtual_stages=2, zero=1, recompute="full", dtype="fp16",
    )  # fmt: skip
    assert config_from_args(args, 16) == expected  # dp: the 16 devices left by tp 2 x pp 2


def test_degrees_that_do_not_divide_the_cluster_name_the_fix() -> None:
    args = build_parser().parse_args(["simulate", "--global-batch", "8", "--tp", "3"])
    with pytest.raises(SimplanError, match="tp 3 x pp 1 does not divide the cluster's 8"):
        config_from_args(args, 8)
