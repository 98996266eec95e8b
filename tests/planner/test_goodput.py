"""Goodput-aware choice of a synchronisation knob: the variant with the higher samples/s x
efficiency wins, plain DDP keeps ties; the numbers are given explicitly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simplan.efficiency import Efficiency, EfficiencySources
from simplan.parallel import ParallelConfig
from simplan.planner.goodput import Variant, choose, knob_variants, score_variants
from tests.helpers import run_main

ROOT = Path(__file__).resolve().parents[2]
PLAIN = ParallelConfig(dp=8, global_batch=64)


def variant(config: ParallelConfig, rate: float, eff: float) -> Variant:
    return Variant(
        config=config, samples_per_s=rate, efficiency=Efficiency(value=eff, source="declared")
    )


def plain(rate: float = 100.0) -> Variant:
    return variant(PLAIN, rate, 1.0)


def test_a_faster_knob_that_loses_more_steps_is_rejected() -> None:
    local = variant(PLAIN.replace(local_sgd=8), 120.0, 0.8)  # goodput 96 < 100
    choice = choose(plain(), [local])
    assert choice.chosen is choice.plain and choice.runner_up is local


def test_a_faster_knob_with_enough_efficiency_wins() -> None:
    local = variant(PLAIN.replace(local_sgd=8), 120.0, 0.9)  # goodput 108 > 100
    fp16 = variant(PLAIN.replace(compress="fp16"), 104.0, 1.0)  # 104
    choice = choose(plain(), [fp16, local])
    assert choice.chosen is local and choice.runner_up is fp16


def test_ties_keep_plain_ddp() -> None:
    tie = variant(PLAIN.replace(local_sgd=4), 125.0, 0.8)  # exactly 100
    choice = choose(plain(), [tie])
    assert choice.chosen is choice.plain
    assert "ties with the chosen" in "\n".join(choice.lines())
    assert "plain DDP's step time" not in "\n".join(choice.lines())


def test_explain_shows_both_numbers() -> None:
    local = variant(PLAIN.replace(local_sgd=8), 150.0, 0.9)
    fp16 = variant(PLAIN.replace(compress="fp16"), 110.0, 1.0)
    text = "\n".join(choose(plain(), [fp16, local]).lines())
    assert "rejected fp16: 110 samples/s x efficiency 1.000 (declared) = goodput 110" in text
    assert "chosen local_sgd=8: 150 samples/s x efficiency 0.900 (declared) = goodput 135" in text
    assert "rejected plain DDP: 100 samples/s x efficiency 1.000" in text
    assert "goodput 100 samples/s: loses to the chosen" in text


def test_variants_of_a_plain_dp_configuration() -> None:
    names = [v.describe().split()[-1] for v in knob_variants(PLAIN)]
    assert names == ["compress-fp16", "compress-bf16", "compress-powersgd-r1",
                     "compress-powersgd-r2", "compress-powersgd-r4", "local-sgd-2",
                     "local-sgd-4", "local-sgd-8", "local-sgd-16"]  # fmt: skip
    assert knob_variants(ParallelConfig(dp=1, global_batch=8)) == []
    assert knob_variants(PLAIN.replace(zero=3)) == []


def test_scoring_takes_throughput_from_the_simulator_and_skips_unknown_efficiency() -> None:
    """Step times given explicitly: local SGD H=8 makes 1.25x the samples/s of plain DDP at a
    declared efficiency 0.9 (goodput 112.5), fp16 1.1x at 1.0 (110); nothing else is known."""
    rates = {PLAIN.replace(local_sgd=8): 125.0, PLAIN.replace(compress="fp16"): 110.0}
    sources = EfficiencySources(declared={("local_sgd", 8): 0.9, ("fp16", 0): 1.0})
    choice = score_variants(PLAIN, lambda c: rates[c], sources, 100.0)
    assert choice.chosen.config == PLAIN.replace(local_sgd=8)
    assert choice.chosen.goodput == pytest.approx(112.5)
    assert len(choice.others) == 2 and len(choice.skipped) == 7
    assert any(s.startswith("bf16: no statistical efficiency") for s in choice.skipped)


PLAN = ("plan", "--model", "gpt3-350m", "--cluster", "eth25-a100", "--nodes", "4",
        "--global-batch", "256", "--dp", "32", "--zero", "0,1", "--top", "1")  # fmt: skip


def test_plan_goodput_on_the_slow_network(capsys: pytest.CaptureFixture[str]) -> None:
    """25 Gb/s Ethernet: the DP all-reduce is about half of the step. Every variant's
    throughput comes from the simulator; the knob is chosen only if its goodput is higher."""
    table = str(ROOT / "traces" / "efficiency" / "mlp-teacher.json")
    code, out, _ = run_main(capsys, *PLAN, "--goodput", "--efficiency-table", table, "--json")
    assert code == 0
    doc = json.loads(out)
    (choice,) = doc["goodput"]
    every = [choice["plain"], *choice["variants"]]
    best = max(v["goodput_samples_per_s"] for v in every)
    assert choice["chosen"]["goodput_samples_per_s"] == best
    if choice["chosen"]["knob"] != "plain DDP":
        assert best > choice["plain"]["goodput_samples_per_s"]
    assert doc["plans"][0]["describe"] == choice["chosen"]["describe"]
    for v in choice["variants"]:
        assert v["efficiency_source"].startswith("measured: ")
        assert v["goodput_samples_per_s"] == pytest.approx(v["samples_per_s"] * v["efficiency"])
    code, out, _ = run_main(capsys, *PLAN, "--goodput", "--efficiency", "local_sgd=8:0.5",
                            "--efficiency-table", table, "--explain")  # fmt: skip
    assert code == 0 and "(samples/s x statistical efficiency): chosen" in out
    assert "rejected" in out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--goodput", "--efficiency", "local_sgd=8"), "write KNOB[=VALUE]:EFFICIENCY"),
        (("--goodput", "--efficiency", "local_sgd=8:1.2"), "must be in (0, 1]"),
        (("--goodput", "--efficiency", "nesterov:0.5"), "unknown knob 'nesterov'"),
        (("--efficiency", "fp16:1"), "need --goodput"),
    ],
)
def test_plan_refuses_bad_efficiency_in_one_line(
    capsys: pytest.CaptureFixture[str], flags: tuple[str, ...], message: str
) -> None:
    code, _, err = run_main(capsys, *PLAN, *flags)
    assert code == 2 and message in err and err.count("\n") == 1


def test_goodput_is_refused_with_an_export(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(capsys, *PLAN, "--goodput", "--export", "torchrun")
    assert code == 2 and "--export cannot check or write yet" in err and err.count("\n") == 1


def test_variants_the_time_limit_stops_are_skipped_and_said() -> None:
    from simplan.deadline import TimeLimitReached

    def out_of_time(config: ParallelConfig) -> float:
        raise TimeLimitReached("deadline")

    sources = EfficiencySources(declared={("fp16", 0): 1.0})
    choice = score_variants(PLAIN, out_of_time, sources, 100.0)
    assert choice.chosen is choice.plain and choice.others == ()
    assert "fp16: not simulated before the time limit (raise --time-limit)" in choice.skipped


def test_explain_says_when_a_knob_costs_what_plain_ddp_does() -> None:
    same = variant(PLAIN.replace(compress="fp16"), 100.0, 1.0)
    text = "\n".join(choose(plain(), [same]).lines())
    assert "ties with the chosen (the simulator gives it plain DDP's step time)" in text


def _chosen(capsys: pytest.CaptureFixture[str], *flags: str) -> dict:
    code, out, _ = run_main(capsys, *PLAN, "--goodput", *flags, "--json")
    assert code == 0
    (choice,) = json.loads(out)["goodput"]
    return choice


def test_the_slow_network_picks_a_knob_only_while_its_goodput_wins(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The simulator prices compression and local SGD (fewer bytes, or an average every H
    steps): with every knob declared as costless in steps, one of them beats plain DDP on 25
    Gb/s Ethernet; declared to need 3x the steps, none does and plain DDP is kept."""
    knobs = ("fp16", "bf16", "powersgd=1", "powersgd=2", "powersgd=4",
             "local_sgd=2", "local_sgd=4", "local_sgd=8", "local_sgd=16")  # fmt: skip
    free = [f for k in knobs for f in ("--efficiency", f"{k}:1")]
    choice = _chosen(capsys, *free)
    assert choice["chosen"]["knob"] != "plain DDP"
    fastest = max(v["samples_per_s"] for v in choice["variants"])
    assert fastest > 1.2 * choice["plain"]["samples_per_s"]  # the all-reduce really shrank
    costly = [f for k in knobs for f in ("--efficiency", f"{k}:{1 / 3:.4f}")]
    choice = _chosen(capsys, *costly)
    assert choice["chosen"]["knob"] == "plain DDP"
