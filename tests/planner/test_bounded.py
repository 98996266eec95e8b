"""Bounded planning: a deadline stops every phase, sizes beyond any real job are refused."""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simplan.deadline import Deadline, TimeLimitReached
from simplan.errors import SimplanError
from simplan.limits import MAX_GLOBAL_BATCH
from simplan.parallel import ParallelConfig
from simplan.planner import SearchOptions, SearchSpace, search
from simplan.planner.search import divisors
from simplan.sim.run import simulate
from simplan.sources import load_model
from simplan.topology import load_cluster
from tests.helpers import assert_one_line_error, run_cli

SMALL = SearchSpace(
    micro_batches=(1, 2),
    schedules=("1f1b",),
    zero=(0, 1),
    recompute=("none", "full"),
    sequence_parallel=(False,),
    fewer_nodes=0,
)


class CountingDeadline(Deadline):
    """Expires after a fixed number of checks: a deterministic stand-in for the clock."""

    _left: list[int]

    def __init__(self, checks: int) -> None:
        super().__init__(at_s=math.inf, limit_s=1.0)
        object.__setattr__(self, "_left", [checks])

    def expired(self) -> bool:
        self._left[0] -= 1
        return self._left[0] < 0

    def left_s(self) -> float:
        return 0.0 if self._left[0] <= 0 else math.inf

    def share(self, fraction: float) -> Deadline:
        return self


def _options(global_batch: int = 64, deadline: Deadline | None = None) -> SearchOptions:
    return SearchOptions(global_batch=global_batch, space=SMALL, deadline=deadline)


@pytest.fixture(scope="module")
def gpt125m():
    return load_model("gpt3-125m", seq_len=512, dtype="bf16")


def test_an_expired_deadline_ends_the_search_with_one_line(gpt125m) -> None:
    gone = Deadline(at_s=time.monotonic() - 1.0, limit_s=0.5)
    with pytest.raises(SimplanError, match=r"time limit of 0\.5 s .* raise --time-limit"):
        search(gpt125m, load_cluster("dgx-a100"), _options(deadline=gone))


def test_a_deadline_during_the_estimates_returns_the_best_so_far(gpt125m) -> None:
    cluster = load_cluster("dgx-a100")
    full = search(gpt125m, cluster, _options(deadline=Deadline.never()))
    assert full.cut_short == ()
    cut = search(gpt125m, cluster, _options(deadline=CountingDeadline(5)))
    assert cut.plans, "a plan from the candidates estimated before the limit"
    assert any("estimated 5 of" in note for note in cut.cut_short), cut.cut_short
    assert cut.evaluated < full.evaluated
    assert cut.to_dict()["cut_short"] == list(cut.cut_short)
    # no time was left to simulate: the best estimate stands in, and says so
    assert cut.simulated == 0 and cut.plans[0].predicted == {}
    assert any("estimated only" in note for note in cut.cut_short), cut.cut_short
    assert cut.plans[0].fits


def test_a_simulation_stops_at_its_deadline(gpt125m) -> None:
    config = ParallelConfig(dp=1, tp=2, pp=4, global_batch=64, dtype="bf16")
    gone = Deadline(at_s=time.monotonic() - 1.0, limit_s=1.0)
    with pytest.raises(TimeLimitReached, match="time limit stopped the simulation"):
        simulate(gpt125m, load_cluster("dgx-a100"), config, deadline=gone)


def test_the_cli_time_limit_bounds_loading_and_search() -> None:
    """0.001 s: the model is still loading when the limit passes; one line, exit 2."""
    args = ["plan", "--model", "gpt3-125m", "--cluster", "dgx-a100", "--global-batch", "64"]
    assert_one_line_error(run_cli(*args, "--time-limit", "0.001"), "time limit", "--time-limit")


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
def test_a_time_limit_must_be_positive_and_finite(value: str) -> None:
    args = ["plan", "--model", "gpt3-125m", "--cluster", "dgx-a100", "--global-batch", "64"]
    assert_one_line_error(run_cli(*args, "--time-limit", value), "--time-limit")


@pytest.mark.parametrize("batch", [MAX_GLOBAL_BATCH + 1, 100_000_000, 10**18])
def test_a_global_batch_beyond_any_real_job_is_refused_with_the_limit(batch: int) -> None:
    with pytest.raises(SimplanError, match=f"{MAX_GLOBAL_BATCH:,}"):
        ParallelConfig(dp=1, global_batch=batch)
    args = ["plan", "--model", "llama3-8b", "--cluster", "dgx-h100", "--nodes", "2"]
    result = run_cli(*args, "--global-batch", str(batch), timeout=120)
    assert_one_line_error(result, "--global-batch", f"{MAX_GLOBAL_BATCH:,}")


def test_the_largest_global_batch_is_planned_with_bounded_simulations(gpt125m) -> None:
    """2^20 samples: up to 2^17 micro-batches per candidate, simulated as a few periods (the
    micro-batch bounded, so that the pure-DP baseline's largest is not proposed either)."""
    options = SearchOptions(global_batch=MAX_GLOBAL_BATCH, space=SMALL, micro_batch=(1, 2))
    result = search(gpt125m, load_cluster("dgx-a100"), options)
    assert result.plans and result.cut_short == ()
    best = result.plans[0]
    again = best.simulate(record=False)
    assert again.extrapolated
    assert math.isclose(again.step_time_s, best.step_time_s, rel_tol=1e-12)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=20_000))
def test_divisors_are_every_divisor_in_order(n: int) -> None:
    assert divisors(n) == [d for d in range(1, n + 1) if n % d == 0]
