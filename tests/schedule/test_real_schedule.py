"""Small traces executed for real on two CPU slots: FIFO runs the jobs in arrival order; SRTF
preempts a long job for a short one, which restarts from its checkpoint and finishes its steps;
the record compares both schedules; `--run`'s flags are checked before anything runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from simplan.schedule.core import Job, Shape
from simplan.schedule.real import RealClusterRun
from simplan.schedule.real_compare import comparison_document, execute, write_record
from simplan.schedule.real_costs import LaunchCost, LaunchCosts
from simplan.topology.cluster_spec import load_spec
from tests.helpers import assert_one_line_error, process_gone, run_cli

# The order and preemption tests do not need the launch costs (they only shift the simulated
# schedule); measuring them is the run's own business, tested by the CLI run below.
NO_COSTS = LaunchCosts(
    costs=tuple(
        (model, ranks, LaunchCost(launch_s=0.0, save_s=0.0, load_s=0.0))
        for model in ("gpt-tiny", "mlp")
        for ranks in (1, 2)
    )
)


def _job(id: str, model: str, steps: int, arrival_s: float, gb: int = 4, seq: int = 0) -> Job:
    return Job(id=id, model=model, global_batch=gb, seq_len=seq,
               work=steps, arrival_s=arrival_s, min_gpus=2, max_gpus=2)  # fmt: skip


@pytest.mark.distributed
def test_fifo_runs_the_jobs_in_arrival_order(tmp_path: Path) -> None:
    jobs = [_job("a", "mlp", 40, 0.0), _job("b", "mlp", 40, 0.2), _job("c", "mlp", 20, 0.4)]
    result = execute(jobs, load_spec("localhost-cpu"), "fifo", profiled=False,
                     costs=NO_COSTS, work_dir=tmp_path)  # fmt: skip
    got = {j.id: j for j in result.measured.jobs}
    assert got["a"].finish_s <= got["b"].first_start_s
    assert got["b"].finish_s <= got["c"].first_start_s
    assert result.measured.metrics.preemptions == 0
    assert [(r.job_id, r.start_step, r.end_step) for r in result.launches] == [
        ("a", 0, 40), ("b", 0, 40), ("c", 0, 20)
    ]  # fmt: skip
    document = comparison_document(result, "three.csv")
    path = write_record(document, tmp_path / "records")
    assert path.parent == tmp_path / "records" and path.suffix == ".json"
    assert document["comparison"]["makespan_s"]["measured"] == result.measured.metrics.makespan_s
    assert document["meta"]["torch_version"]


@pytest.mark.distributed
def test_srtf_preempts_and_the_job_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    jobs = [_job("long", "gpt-tiny", 40, 0.0, gb=8, seq=128), _job("short", "mlp", 30, 4.0)]
    result = execute(jobs, load_spec("localhost-cpu"), "srtf", profiled=False,
                     costs=NO_COSTS, work_dir=tmp_path)  # fmt: skip
    got = {j.id: j for j in result.measured.jobs}
    assert got["long"].preemptions == 1 and got["long"].restarts == 1
    assert got["short"].finish_s < got["long"].finish_s
    long_runs = [r for r in result.launches if r.job_id == "long"]
    assert [r.stopped for r in long_runs] == [True, False]
    first, second = long_runs
    assert 0 < first.end_step < 40
    assert second.start_step == first.end_step and second.end_step == 40
    assert result.simulated.metrics.preemptions == 1  # the simulation decides the same


@pytest.mark.parametrize(
    ("extra", "needle"),
    [(["--record", "x"], "--record applies to --run only"),
     (["--run", "--compare", "fifo,las"], "drop --compare"),
     (["--run"], "--run executes on this machine's CPUs")],
)  # fmt: skip
def test_run_flags_are_checked_first(extra: list[str], needle: str) -> None:
    cluster = "localhost-cpu" if "--compare" in extra or "--record" in extra else "dgx-a100"
    result = run_cli("schedule", "--trace", "examples/traces/tiny.csv", "--cluster", cluster,
                     *extra)  # fmt: skip
    assert_one_line_error(result, needle)


def _run_of_two(tmp_path: Path, **kwargs: Any) -> RealClusterRun:
    """A real run of two one-slot mlp jobs side by side: 'ok' (endless) and 'bad'."""
    from simplan.schedule.real import job_steps
    from simplan.schedule.real_costs import RunSpeeds
    from simplan.schedule.real_launch import rank_context
    from simplan.schedule.run import Workload, make_policy
    from simplan.schedule.state import cluster_nodes

    spec = load_spec("localhost-cpu")
    jobs = tuple(
        Job(id=id, model="mlp", global_batch=4, work=work, arrival_s=at, min_gpus=1, max_gpus=1)
        for id, work, at in (("ok", 10**7, 0.0), ("bad", 100, 0.5))
    )
    speeds = RunSpeeds(profiled=False)
    policy, _ = make_policy("fifo", Workload(jobs=jobs, spec=spec, speeds=speeds, work=job_steps))
    return RealClusterRun(jobs, cluster_nodes(spec), speeds, policy, costs=NO_COSTS,
                          run_dir=tmp_path, context=rank_context(), **kwargs)  # fmt: skip


def _all_gone(run: RealClusterRun) -> bool:
    pids = [p.pid for launch in run.started for p in launch.procs]
    return bool(pids) and all(pid is not None and process_gone(pid) for pid in pids)


@pytest.mark.distributed
def test_a_failing_job_stops_the_run_and_every_rank(tmp_path: Path) -> None:
    from simplan.ranks import RankFailure

    run = _run_of_two(tmp_path, faults={"bad": "crash@0:3"})
    with pytest.raises(RankFailure, match="injected crash at step 3"):
        run.run()
    assert [launch.task.fault for launch in run.started] == ["", "crash@0:3"]
    assert _all_gone(run) and not run.launches


@pytest.mark.distributed
def test_ctrl_c_stops_every_rank(tmp_path: Path) -> None:
    def interrupt(line: str) -> None:
        if "start bad" in line:
            raise KeyboardInterrupt

    run = _run_of_two(tmp_path, echo=interrupt)
    with pytest.raises(KeyboardInterrupt):
        run.run()
    assert len(run.started) == 2 and _all_gone(run)


def test_the_simulation_holds_a_preempted_jobs_slots_until_its_ranks_have_saved() -> None:
    """SRTF on two slots: a long job starts at 0 (launch 1 s), a short one arrives at 3.25 s.
    The long job's ranks see the stop request at the end of their step under way, then save
    for 0.5 s: the short job's launch (1 s) and two steps (0.5 s each) start then, not at its
    arrival."""
    from simplan.schedule.real import ModelledClusterSim, job_steps
    from simplan.schedule.run import Workload, make_policy
    from simplan.schedule.state import cluster_nodes
    from tests.schedule.fakes import LinearSpeeds

    spec = load_spec("localhost-cpu", gpus_per_node=2)
    jobs = tuple(
        Job(id=id, model="mlp", global_batch=4, work=work, arrival_s=at, min_gpus=2, max_gpus=2)
        for id, work, at in (("long", 100, 0.0), ("short", 2, 3.25))
    )
    speeds = LinearSpeeds({"mlp": 1.0})  # 1 GPU-second a step: 0.5 s a step on two slots
    costs = LaunchCosts(costs=(("mlp", 2, LaunchCost(launch_s=1.0, save_s=0.5, load_s=0.2)),))
    workload = Workload(jobs=jobs, spec=spec, speeds=speeds, work=job_steps)
    policy, notes = make_policy("srtf", workload)
    result = ModelledClusterSim(jobs, cluster_nodes(spec), speeds, policy, costs=costs).run(notes)
    by_id = {r.id: r for r in result.jobs}
    step_s = speeds.step_time_s(jobs[0], Shape(gpu_type="cpu", gpus=2, nodes=1))
    assert step_s == pytest.approx(0.5)
    # at 3.25 s the long job is 0.25 s into its 5th step (it began stepping at 1 s)
    assert by_id["short"].finish_s == pytest.approx(3.25 + (0.25 + 0.5) + 1.0 + 2 * 0.5)
    assert by_id["long"].preemptions == 1
