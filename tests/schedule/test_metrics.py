"""Schedule metrics against values computed by hand."""

from __future__ import annotations

import json

import pytest

from simplan.schedule.metrics import busy_gpu_s, schedule_metrics
from simplan.schedule.results import JobRecord, ScheduleResult, result_from_dict


def record(id: str, arrival: float, start: float, finish: float, isolated: float) -> JobRecord:
    return JobRecord(id=id, arrival_s=arrival, first_start_s=start, finish_s=finish, gpus=1,
                     gpu_s=finish - start, preemptions=1, restarts=1, lost_steps=0.0,
                     isolated_s=isolated)  # fmt: skip


JOBS = [record("a", 0, 0, 10, 10), record("b", 0, 10, 30, 20), record("c", 10, 30, 50, 10)]
BUSY = [(0.0, 1), (50.0, 0)]


def test_jct_makespan_queueing_and_fairness_by_hand():
    m = schedule_metrics(JOBS, BUSY, total_gpus=2, failures=0)
    # JCTs 10, 30, 40
    assert m.avg_jct_s == pytest.approx(80 / 3)
    assert m.median_jct_s == pytest.approx(30)
    assert m.p99_jct_s == pytest.approx(30 + 0.98 * 10)  # linear between the 2nd and 3rd
    assert m.makespan_s == pytest.approx(50)
    assert m.utilization == pytest.approx(50 / (2 * 50))
    assert m.avg_queueing_s == pytest.approx((0 + 10 + 20) / 3)
    assert m.avg_finish_time_ratio == pytest.approx((1 + 1.5 + 4) / 3)
    assert m.max_finish_time_ratio == pytest.approx(4)
    assert m.preemptions == 3


def test_busy_integral_stops_at_the_end():
    assert busy_gpu_s([(0.0, 4), (10.0, 2), (20.0, 0)], 15.0) == pytest.approx(40 + 10)


def test_result_round_trips_through_json():
    m = schedule_metrics(JOBS, BUSY, total_gpus=2, failures=1)
    result = ScheduleResult(policy="fifo", cluster="c", total_gpus=2, metrics=m, jobs=tuple(JOBS),
                            busy=tuple(BUSY), events=7, wall_s=0.1, notes=("n",))  # fmt: skip
    again = result_from_dict(json.loads(json.dumps(result.to_dict())))
    assert again == result


def test_segments_account_for_every_gpu_second_and_no_gpu_holds_two_jobs():
    """The Gantt chart's data: each job's segments add up to its GPU-seconds, and the lanes
    handed out on each node never give one GPU to two segments at once."""
    from simplan.report.schedule import gpu_lanes
    from simplan.schedule.results import result_from_dict
    from simplan.schedule.run import Workload, run_policy
    from simplan.topology.cluster_spec import load_spec
    from tests.schedule.fakes import LinearSpeeds, job

    jobs = tuple(job(f"j{i}", 300 + 50 * i, gpus=2 ** (i % 3), arrival_s=15.0 * i)
                 for i in range(12))  # fmt: skip
    spec = load_spec("dgx-a100", nodes=2, gpus_per_node=4)
    result = run_policy("las", Workload(jobs=jobs, spec=spec, speeds=LinearSpeeds({"m": 1.0})))
    assert result.metrics.preemptions > 0  # segments of preempted jobs too
    for record in result.jobs:
        mine = [g for g in result.segments if g.job == record.id]
        held = sum((g.end_s - g.start_s) * sum(n for _, n in g.per_node) for g in mine)
        assert held == pytest.approx(record.gpu_s)
    lanes: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for node, lane, seg in gpu_lanes(result.segments):
        assert lane < 4  # four GPUs a node
        lanes.setdefault((node, lane), []).append((seg.start_s, seg.end_s))
    for spans in lanes.values():
        spans.sort()
        ends, starts = [e for _, e in spans[:-1]], [b for b, _ in spans[1:]]
        assert all(end <= start + 1e-9 for end, start in zip(ends, starts, strict=True))
    again: ScheduleResult = result_from_dict(result.to_dict())
    assert again.segments == result.segments
