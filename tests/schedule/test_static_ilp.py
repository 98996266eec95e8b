"""The static ILP against brute force, and the list schedule's guarantees."""

from __future__ import annotations

import random

import pytest

from simplan.schedule.static_ilp import (
    StaticProblem,
    brute_force,
    feasible,
    list_schedule,
    objective_value,
    solve_ilp,
)


def random_problem(rng: random.Random, jobs: int, objective: str) -> StaticProblem:
    capacity = (4, 2)
    pools, gpus, durs = [], [], []
    for _ in range(jobs):
        options = rng.randint(1, 2)
        pool = tuple(rng.randrange(2) for _ in range(options))
        pools.append(pool)
        gpus.append(tuple(rng.randint(1, capacity[p]) for p in pool))
        durs.append(tuple(rng.randint(1, 3) for _ in pool))
    return StaticProblem(
        release=tuple(rng.randint(0, 2) for _ in range(jobs)),
        weight=tuple(float(rng.randint(1, 3)) for _ in range(jobs)),
        pool=tuple(pools), gpus=tuple(gpus), dur=tuple(durs), capacity=capacity,
        objective=objective,
    )  # fmt: skip


@pytest.mark.parametrize("objective", ["weighted", "makespan"])
@pytest.mark.parametrize("seed", range(6))
def test_ilp_equals_brute_force_on_small_instances(objective, seed):
    problem = random_problem(random.Random(seed), 3, objective)
    exact = brute_force(problem)
    ilp = solve_ilp(problem)
    assert ilp.status == "optimal"
    assert ilp.objective == pytest.approx(exact.objective)
    assert feasible(problem, ilp.option, ilp.start)
    assert objective_value(problem, ilp.option, ilp.start) == pytest.approx(ilp.objective)


def test_hand_instance_runs_the_short_job_first():
    # one pool of 2 GPUs; both jobs need 2: weighted completion puts the 1-slot job first
    problem = StaticProblem(release=(0, 0), weight=(1.0, 1.0), pool=((0,), (0,)),
                            gpus=((2,), (2,)), dur=((3,), (1,)), capacity=(2,))  # fmt: skip
    ilp = solve_ilp(problem)
    assert ilp.start == (1, 0) and ilp.objective == pytest.approx(1 + 4)


def test_list_schedule_is_feasible_and_no_better_than_the_optimum():
    for seed in range(6):
        problem = random_problem(random.Random(100 + seed), 4, "weighted")
        heuristic = list_schedule(problem)
        assert feasible(problem, heuristic.option, heuristic.start)
        assert heuristic.objective >= solve_ilp(problem).objective - 1e-9


def test_bad_problem_is_refused():
    with pytest.raises(ValueError, match="more GPUs than its pool"):
        StaticProblem(release=(0,), weight=(1.0,), pool=((0,),), gpus=((9,),), dur=((1,),),
                      capacity=(8,))  # fmt: skip


def test_list_schedule_grows_past_its_makespan_estimate():
    # a hundred 5-slot jobs that all want the single GPU of pool 0, beside an idle pool of 100:
    # the work over every GPU underestimates the makespan (500 slots, end to end) many times
    n = 100
    problem = StaticProblem(release=(0,) * n, weight=(1.0,) * n, pool=((0,),) * n,
                            gpus=((1,),) * n, dur=((5,),) * n, capacity=(1, 100))  # fmt: skip
    heuristic = list_schedule(problem)
    assert feasible(problem, heuristic.option, heuristic.start)
    assert sorted(heuristic.start) == list(range(0, 5 * n, 5))
