from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simplan.parallel import balanced_stages
from simplan.planner.ilp import PartitionProblem, segments, solve_partition
from simplan.planner.partition_dp import brute_force_partition, minmax_partition


def _random_problem(rng: random.Random, hetero: bool, microbatches: int | None):
    n = rng.randint(3, 12)
    stages = rng.randint(1, min(n, 5))
    base = [rng.choice([1.0, 2.0, 3.5, rng.uniform(0.5, 4)]) for _ in range(n)]
    speeds = [rng.choice([1.0, 1.5, 2.0]) if hetero else 1.0 for _ in range(stages)]
    time = tuple(tuple(b / sp for b in base) for sp in speeds)
    cut = (*(rng.choice([0.0, 0.25, 0.5]) for _ in range(n - 1)), 0.0)
    mem = tuple(tuple(base) for _ in range(stages))
    cap = tuple(rng.choice([6.0, 9.0, 100.0]) for _ in range(stages))
    scale = tuple(rng.choice([1.0, 3.0]) for _ in range(stages)) if hetero else ()
    return PartitionProblem(
        time=time, cut=cut, mem=mem, cap=cap, microbatches=microbatches, cut_scale=scale
    )


@pytest.mark.parametrize("seed", range(40))
def test_ilp_equals_brute_force_on_random_tables(seed: int) -> None:
    rng = random.Random(seed)
    problem = _random_problem(rng, hetero=seed % 2 == 0, microbatches=rng.choice([None, 4, 16]))
    bounds, record = solve_partition(problem, time_limit_s=5)
    best = brute_force_partition(
        problem.time, problem.cut, problem.mem, problem.cap, problem.microbatches,
        problem.cut_scale,
    )  # fmt: skip
    if best is None:
        assert bounds is None
        return
    assert bounds is not None, record
    assert problem.objective(bounds) == pytest.approx(best[1], rel=1e-7, abs=1e-9)
    assert record.sol_status == 1 and record.status == "Optimal"


@settings(max_examples=25, deadline=None)
@given(
    weights=st.lists(st.integers(1, 9), min_size=2, max_size=24),
    stages=st.integers(1, 8),
)
def test_ilp_equals_dynamic_program_on_homogeneous_chains(weights: list[int], stages: int) -> None:
    stages = min(stages, len(weights))
    w = [float(x) for x in weights]
    problem = PartitionProblem(time=(tuple(w),) * stages, cut=(0.0,) * len(w))
    bounds, _ = solve_partition(problem, warm_start=False)
    dp = balanced_stages(w, stages)
    assert bounds is not None
    assert problem.objective(bounds) == pytest.approx(problem.objective(dp))
    ours = minmax_partition(problem.time, problem.cut)
    assert ours is not None and ours[1] == pytest.approx(problem.objective(dp))


def test_identical_layers_collapse_into_segments() -> None:
    t = (0.5, *([1.0] * 96), 0.7)
    problem = PartitionProblem(time=(t,) * 16, cut=(*([0.01] * 97), 0.0), microbatches=96)
    assert len(segments(problem)) == 3
    bounds, record = solve_partition(problem)
    assert bounds is not None and record.variables < 100
    assert record.solve_s < 2 and record.gap == pytest.approx(0.0, abs=1e-6)  # solver precision


def test_time_limit_keeps_a_feasible_partition_and_reports_the_gap() -> None:
    rng = random.Random(3)
    n, stages = 120, 16
    base = [rng.uniform(0.5, 2) for _ in range(n)]
    time = tuple(tuple(b * rng.choice([1, 1.3]) for b in base) for _ in range(stages))
    problem = PartitionProblem(time=time, cut=(*([0.01] * (n - 1)), 0.0), microbatches=8)
    bounds, record = solve_partition(problem, time_limit_s=2.0, warm_start=False)
    if bounds is None:  # HiGHS found nothing in time on a loaded machine: nothing to claim
        assert record.sol_status == 0
        return
    assert len(bounds) == stages + 1
    assert record.sol_status == 2 and record.status == "Optimal"  # LpStatus hides the limit
    assert record.gap is not None and record.gap > 0
    assert record.objective == pytest.approx(problem.objective(bounds))
    # with the dynamic program as warm start, the partition kept is at least as good
    warm, rec2 = solve_partition(problem, time_limit_s=1.0)
    assert warm is not None and problem.objective(warm) <= problem.objective(bounds) + 1e-9
    assert rec2.objective == pytest.approx(problem.objective(warm))


def test_cbc_fallback_agrees_with_highs() -> None:
    rng = random.Random(7)
    problem = _random_problem(rng, hetero=True, microbatches=8)
    a, _ = solve_partition(problem, solver="highs")
    b, rec = solve_partition(problem, solver="cbc")
    assert rec.solver == "PULP_CBC_CMD"
    assert (a is None) == (b is None)
    if a and b:
        assert problem.objective(a) == pytest.approx(problem.objective(b))


@pytest.mark.parametrize(
    "weights,stages,best",
    [
        # HiGHS 1.16's presolve called the first infeasible and gave 26 for the second
        ([1, 9, 4, 6, 4, 3, 5, 9, 9, 3, 7, 2, 5, 7, 4, 2, 6], 4, 24.0),
        ([7, 1, 4, 1, 3, 9, 9, 2, 7, 5, 3, 1, 8, 9, 6, 2, 9, 5], 7, 16.0),
    ],
)
def test_ilp_finds_the_optimum_where_presolve_failed(
    weights: list[int], stages: int, best: float
) -> None:
    w = [float(x) for x in weights]
    problem = PartitionProblem(time=(tuple(w),) * stages, cut=(0.0,) * len(w))
    bounds, record = solve_partition(problem, warm_start=False)
    assert bounds is not None, record
    assert problem.objective(bounds) == best == problem.objective(balanced_stages(w, stages))
