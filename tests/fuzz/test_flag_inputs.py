"""Every numeric flag of every verb at bad values, a mistyped form of every flag, and flags that
would do nothing beside the others: exit 2 with one line on stderr, no traceback, nothing on
stdout and nothing written. Valid extremes (1 layer, 1 GPU, batch 1, a 1T-parameter model on
10,000 GPUs, 1M-token sequences) work. The corpus is generated from the parsers themselves, so a
new verb or flag is covered (or fails `test_every_verb_has_a_base_command`)."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simplan.cli import build_parser, main, subcommands
from simplan.commands.argtypes import FloatRange, IntRange, Text

# a valid command for each verb, to which one bad flag is added
BASE: dict[tuple[str, ...], tuple[str, ...]] = {
    ("profile",): ("profile", "mlp"),
    ("simulate",): ("simulate", "--model", "mlp", "--cluster", "localhost-cpu",
                    "--global-batch", "8"),
    ("plan",): ("plan", "--model", "mlp", "--cluster", "localhost-cpu", "--global-batch", "8"),
    ("export",): ("export", "plan.json", "--to", "megatron"),
    ("clusters", "show"): ("clusters", "show", "dgx-a100"),
    ("bench-comm",): ("bench-comm",),
    ("validate",): ("validate", "--model", "mlp"),
    ("run",): ("run", "--plan", "plan.json"),
    ("report", "sweep"): ("report", "sweep", "--model", "mlp", "--cluster", "localhost-cpu",
                          "--global-batch", "8", "--vary", "micro-batch", "--values", "1"),
    ("report", "plan"): ("report", "plan", "plans.json"),
    ("report", "validation"): ("report", "validation"),
    ("trace", "generate"): ("trace", "generate", "--cluster", "dgx-a100", "--out", "t.csv"),
    ("trace", "check"): ("trace", "check", "t.csv"),
    ("trace", "speeds"): ("trace", "speeds", "t.csv", "--cluster", "dgx-a100"),
    ("report", "schedule"): ("report", "schedule", "schedule.json"),
    ("schedule",): ("schedule", "--trace", "jobs.csv", "--cluster", "dgx-a100"),
}  # fmt: skip
BAD_VALUES = ("0", "-1", "nan", "inf", "-inf", "1e30", "2.5", "many", "")


def leaves(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every (sub)command's parser with the words that name it."""
    sub = subcommands(parser)
    if path:
        yield path, parser
    if sub is not None:
        for name, child in sub.choices.items():
            yield from leaves(child, (*path, name))


def numeric_flags(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    for action in parser._actions:
        if action.option_strings and isinstance(action.type, IntRange | FloatRange):
            yield action


def text_flags(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    for action in parser._actions:
        if action.option_strings and isinstance(action.type, Text):
            yield action


def accepts(action: argparse.Action, text: str) -> bool:
    kind = action.type
    assert isinstance(kind, IntRange | FloatRange)
    try:
        value = kind(text)
    except argparse.ArgumentTypeError:
        return False
    return action.choices is None or value in action.choices


def _bad_value_cases() -> Iterator[object]:
    for path, parser in leaves(build_parser()):
        for action in numeric_flags(parser):
            flag = action.option_strings[-1]
            for value in BAD_VALUES:
                if not accepts(action, value):
                    argv = (*BASE[path], flag, value)
                    yield pytest.param(
                        argv, f"argument {flag}", id=f"{' '.join(path)} {flag}={value}"
                    )


def _empty_text_cases() -> Iterator[object]:
    for path, parser in leaves(build_parser()):
        for action in text_flags(parser):
            flag = action.option_strings[0]
            for value in ("", "  "):
                argv = (*BASE[path], flag, value)
                yield pytest.param(
                    argv, f"argument {flag}", id=f"{' '.join(path)} {flag}={value!r}"
                )
    for argv in (("profile", ""), ("clusters", "show", " "), ("report", "plan", "")):
        yield pytest.param(argv, "got an empty value", id=f"{argv}")


def _typo_cases() -> Iterator[object]:
    for path, parser in leaves(build_parser()):
        known = [o for o in parser._option_string_actions if o.startswith("--")]
        for option in known:
            if option == "--help":
                continue
            typo = option[:-1] + ("q" if option[-1] != "q" else "z")
            if any(o.startswith(typo) for o in known):
                continue
            yield pytest.param((*path, typo), f"unrecognized argument {typo}", id=f"{path} {typo}")


MEANINGLESS = [
    (("simulate", "--plan", "plan.json", "--tp", "2"), "--tp 2 does nothing with --plan"),
    (("simulate", "--plan", "plan.json", "--tp", "1"), "--tp 1 does nothing with --plan"),
    (("simulate", "--plan", "plan.json", "--micro=4"), "--micro-batch 4 does nothing"),
    ((*BASE[("simulate",)], "--schedule", "1f1b"), "--schedule 1f1b does nothing with pp 1"),
    (("validate", "--plan", "plan.json", "--strategy", "ddp"), "--strategy ddp does nothing"),
    (("simulate", "--plan", "plan.json", "--model", "mlp"), "--model mlp does nothing with --plan"),
    (("simulate", "--plan", "plan.json", "--nodes", "2"), "--nodes 2 does nothing with --plan"),
    (("simulate", "--plan", "p.json", "--sequence-parallel"), "--sequence-parallel does nothing"),
    ((*BASE[("simulate",)], "--sequence-parallel"), "with tp 1"),
    ((*BASE[("simulate",)], "--virtual-stages", "2", "--schedule", "interleaved"), "with pp 1"),
    ((*BASE[("simulate",)], "--pp", "2", "--virtual-stages", "2"), "with the 1f1b schedule"),
    ((*BASE[("simulate",)], "--schedule", "gpipe"), "--schedule gpipe does nothing with pp 1"),
    (("simulate", "--model", "mlp", "--cluster", "dgx-a100", "--global-batch", "8", "--tp", "8",
      "--zero", "1"), "--zero 1 does nothing with dp 1"),
    ((*BASE[("report", "sweep")], "--sequence-parallel"), "with tp 1"),
    ((*BASE[("report", "sweep")], "--micro-batch", "2"), "does nothing with --vary micro-batch"),
    ((*BASE[("report", "sweep")], "--link-kind", "nvlink"), "only applies to --vary bandwidth"),
    (("report", "sweep", "--model", "mlp", "--cluster", "dgx-a100", "--global-batch", "8",
      "--vary", "nodes", "--values", "1", "2", "--nodes", "2"), "--nodes 2 does nothing"),
    (("validate", "--plan", "plan.json", "--strategy", "pp"), "--strategy pp does nothing"),
    (("validate", "--plan", "plan.json", "--micro-batch", "2"), "does nothing with --plan"),
    (("validate", "--model", "mlp", "--schedule", "gpipe"), "does nothing with --strategy ddp"),
    (("validate", "--model", "mlp", "--virtual-stages", "2"), "does nothing with --strategy ddp"),
    (("profile", "mlp", "--device", "h100-sxm", "--repeats", "3"), "does nothing with --device"),
    (("profile", "mlp", "--device", "h100-sxm", "--out", "p.json"), "does nothing with --device"),
    (("profile", "mlp", "--out", "p.json", "--no-save"), "contradict"),
    ((*BASE[("plan",)], "--json", "--explain"), "--explain"),
    ((*BASE[("plan",)], "--export-out", "job.toml"), "--export-out needs --export"),
    (("bench-comm", "--backend", "nccl", "--default-scheduling"), "gloo ranks only"),
    ((*BASE[("simulate",)], "--seq-len", "512"), "mlp, which has no sequence dimension"),
    ((*BASE[("plan",)], "--seq-len", "512"), "mlp, which has no sequence dimension"),
    (("profile", "mlp", "--device", "h100-sxm", "--seq-len", "64"), "no sequence dimension"),
    (("validate", "--model", "mlp", "--seq-len", "64"), "no sequence dimension"),
    ((*BASE[("simulate",)], "--recompute", "selective"), "the attention core"),
    ((*BASE[("simulate",)], "--recompute", "op"), "op by op, which mlp does not have"),
    (("simulate", "--model", "gpt-tiny", "--cluster", "dgx-h100", "--global-batch", "8", "--tp",
      "2", "--recompute", "op"), "--recompute op is modelled without tensor or context"),
    (("simulate", "--model", "mlp", "--cluster", "dgx-a100", "--global-batch", "8", "--tp", "2",
      "--sequence-parallel"), "transformer blocks, which mlp does not have"),
    ((*BASE[("report", "sweep")], "--recompute", "selective"), "the attention core"),
    (("simulate", "--global-bach", "8"), "did you mean --global-batch?"),
    (("plan", "--model", "mlp", "--global-bach", "8"), "did you mean --global-batch?"),
    (("validate", "--micro-bacth", "2"), "did you mean --micro-batch?"),
    (("report", "sweep", "--valeus", "1"), "did you mean --values?"),
    ((), "give a command: models, profile, simulate"),
    (("report",), "give a kind of report"),
    (("--verbose",), "unrecognized argument --verbose"),
    (("simulat", "--tp", "2"), "unknown command 'simulat'; did you mean simulate?"),
    (("report", "swep"), "unknown command 'swep'; did you mean sweep?"),
    (("clusters", "list"), "unknown command 'list'; use one of show"),
]  # fmt: skip


def run(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's usage errors and --help
        code = exc.code if isinstance(exc.code, int) else 2
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(code: int, out: str, err: str, needle: str, cwd: Path) -> None:
    lines = err.splitlines()
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].strip(), err
    assert "Traceback" not in err
    assert needle in lines[0], lines[0]
    assert out == ""
    assert list(cwd.iterdir()) == [], "a refused command wrote files"


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


BAD_VALUE_CASES = list(_bad_value_cases()) + list(_empty_text_cases())
TYPO_CASES = list(_typo_cases())


def test_the_corpus_is_large() -> None:
    assert len(BAD_VALUE_CASES) + len(TYPO_CASES) + len(MEANINGLESS) >= 250


def test_every_verb_has_a_base_command() -> None:
    leaves_with_values = {
        path for path, p in leaves(build_parser()) if any(numeric_flags(p)) or any(text_flags(p))
    }
    assert leaves_with_values == set(BASE)


def test_no_flag_takes_a_bare_int_or_float() -> None:
    """int("2.5") is refused by argparse, but int and float take 'nan', 1e30, -1 and 0: every
    numeric flag must have a typed range instead."""
    for path, parser in leaves(build_parser()):
        for action in parser._actions:
            assert action.type not in (int, float), (path, action.option_strings)


@pytest.mark.parametrize(("argv", "needle"), BAD_VALUE_CASES)
def test_bad_flag_values(capsys, in_tmp: Path, argv: tuple[str, ...], needle: str) -> None:
    assert_refused(*run(capsys, argv), needle, in_tmp)


@pytest.mark.parametrize(("argv", "needle"), TYPO_CASES)
def test_mistyped_flags_are_named(capsys, in_tmp: Path, argv: tuple[str, ...], needle: str) -> None:
    """Named before argparse would complain about a missing required flag."""
    assert_refused(*run(capsys, argv), needle, in_tmp)


@pytest.mark.parametrize(("argv", "needle"), MEANINGLESS)
def test_flags_that_would_do_nothing(
    capsys, in_tmp: Path, argv: tuple[str, ...], needle: str
) -> None:
    assert_refused(*run(capsys, argv), needle, in_tmp)


@given(st.text(max_size=12), st.integers(-5, 5), st.integers(0, 10**6))
def test_an_integer_flag_takes_decimal_digits_in_range_only(text: str, lo: int, span: int) -> None:
    """The oracle is Python's int() of the stripped text, without its underscores and
    non-ASCII digits."""
    stripped = text.strip()
    try:
        expected = int(stripped) if stripped.isascii() and "_" not in stripped else None
    except ValueError:
        expected = None
    if expected is not None and not lo <= expected <= lo + span:
        expected = None
    try:
        value: int | None = IntRange(lo, lo + span)(text)
    except argparse.ArgumentTypeError:
        value = None
    assert value == expected


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_a_float_flag_takes_finite_numbers_in_range_only(x: float) -> None:
    kind = FloatRange(0.0, 100.0, open_lo=True)
    try:
        value = kind(repr(x))
    except argparse.ArgumentTypeError:
        assert not (math.isfinite(x) and 0.0 < x <= 100.0)
    else:
        assert value == x and 0.0 < value <= 100.0


def test_help_exits_0(capsys) -> None:
    code, out, err = run(capsys, ("--help",))
    assert code == 0 and "simulate" in out and err == ""


# valid extremes: each works, exits 0 and prints its result
ONE_LAYER = """\
[transformer]
hidden_size = 64
num_layers = 1
num_heads = 4
seq_len = 128
vocab_size = 1000
"""
# 12 * 51200^2 * 32 = 1.007e12 parameters in the blocks
ONE_TRILLION = """\
[transformer]
hidden_size = 51200
num_layers = 32
num_heads = 320
seq_len = 2048
vocab_size = 51200
"""


def test_one_layer_on_one_gpu_with_batch_one(capsys, tmp_path: Path) -> None:
    model = tmp_path / "one.toml"
    model.write_text(ONE_LAYER)
    code, out, err = run(capsys, ("simulate", "--model", str(model), "--cluster", "dgx-a100",
                                  "--gpus-per-node", "1", "--global-batch", "1"))  # fmt: skip
    assert code == 0, err
    assert "dp 1 tp 1 pp 1, micro-batch 1 x 1" in out and "step time" in out


def test_a_trillion_parameters_on_10000_gpus(capsys, tmp_path: Path) -> None:
    model = tmp_path / "t1.toml"
    model.write_text(ONE_TRILLION)
    code, out, err = run(capsys, ("simulate", "--model", str(model), "--cluster", "dgx-h100",
                                  "--nodes", "1250", "--global-batch", "1000", "--tp", "8",
                                  "--pp", "10", "--zero", "2", "--recompute", "full"))  # fmt: skip
    assert code == 0, err
    assert "dp 125 tp 8 pp 10" in out and "step time" in out


def test_a_million_token_sequence(capsys) -> None:
    # the last stage holds the logits of a million tokens (50,257 / tp columns, in fp32 for the
    # loss and its gradient): tp 4 without sequence parallelism does not fit an H100, tp 6 with
    # it does
    too_big = ("simulate", "--model", "gpt3-125m", "--seq-len", "1048576", "--cluster",
               "dgx-h100", "--global-batch", "1", "--pp", "2", "--recompute", "full")  # fmt: skip
    code, out, err = run(capsys, (*too_big, "--tp", "4"))
    assert code == 3 and "does not fit: stage 1 needs" in err and len(err.splitlines()) == 1
    code, out, err = run(capsys, (*too_big, "--tp", "6", "--sequence-parallel", "--nodes", "2",
                                  "--gpus-per-node", "6"))  # fmt: skip
    assert code == 0, err
    assert "micro-batch 1 x 1" in out and "step time" in out
    code, out, err = run(capsys, ("plan", "--model", "gpt3-125m", "--seq-len", "1048576",
                                  "--cluster", "dgx-h100", "--global-batch", "8",
                                  "--time-limit", "2", "--top", "1"))  # fmt: skip
    assert code == 0, err
    assert "best plan's stages" in out


def test_a_step_that_does_not_fit_exits_3_and_says_by_how_much(capsys) -> None:
    """GPT-3 175B's weights, gradients and Adam state alone are 16 B x 175e9 / 8 = 326 GiB per
    GPU at tp 8: far beyond a 80 GiB A100."""
    code, out, err = run(capsys, ("simulate", "--model", "gpt3-175b", "--cluster", "dgx-a100",
                                  "--global-batch", "8", "--tp", "8"))  # fmt: skip
    assert code == 3
    assert "step time" in out and "NO" in out  # the result is still printed
    lines = err.splitlines()
    assert len(lines) == 1 and "does not fit: stage 0 needs" in lines[0], err
    found = re.search(r"needs ([0-9.]+) GiB of ([0-9.]+) GiB \((\d+)%\)", lines[0])
    assert found, lines[0]
    need, capacity, percent = float(found[1]), float(found[2]), int(found[3])
    assert capacity == 80 and need >= 16 * 175e9 / 8 / 2**30
    assert abs(percent - 100 * need / capacity) <= 1
