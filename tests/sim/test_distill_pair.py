"""The separate teacher and its students on SimPy: the steady step is the slower pipeline, by
hand, and the first step pays the pipeline's fill."""

from __future__ import annotations

import dataclasses

import pytest

from simplan.sim.distill_pair import PairTimes, run_pair

BASE = PairTimes(
    microbatches=2,
    students=1,
    teacher_forward_s=1.0,
    transfer_s=0.1,
    student_microbatch_s=0.5,
    student_tail_s=0.3,
)


def _times(**changes: float) -> PairTimes:
    return dataclasses.replace(BASE, **changes)


def test_teacher_bound_step_is_its_forwards_and_sends():
    run = run_pair(_times())
    assert run.steady_step_s == pytest.approx(2 * (1.0 + 0.1))  # > 2 x (0.1 + 0.5) + 0.3
    # the first step waits for the first forward, then runs the student's part after the
    # second transfer: 1.0 + 0.1 (fwd, send) ... second send ends at 2.2, then 0.5 + 0.3
    assert run.step_ends_s[0] == pytest.approx(2 * 1.1 + 0.5 + 0.3)


def test_student_bound_step_is_its_receives_and_training():
    run = run_pair(_times(teacher_forward_s=0.2, student_microbatch_s=1.0))
    assert run.steady_step_s == pytest.approx(2 * (0.1 + 1.0) + 0.3)


def test_a_teacher_serving_two_students_does_twice_the_forwards():
    run = run_pair(_times(students=2))
    assert run.steady_step_s == pytest.approx(2 * 2 * (1.0 + 0.1))
