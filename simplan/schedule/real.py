"""`simplan schedule --run`: a trace executed for real on this machine's CPU slots, and the
simulation of the same trace under the same policy, compared.

The real run is the cluster simulation itself (simplan.schedule.cluster.ClusterSim) on a SimPy
RealtimeEnvironment: jobs arrive at their (scaled) trace times, the policy decides on the same
ClusterState and JobStates, and `place` places them; but starting a job launches its plan's
ranks (simplan.schedule.real_launch), a completion is the ranks' exit, and a preemption asks the
ranks to save a DCP checkpoint and waits for them (a restart loads it and continues from its
step). A poller process watches the launches and keeps the environment's clock on the wall
clock. The policy's estimates of progress use the modelled step time and start cost, exactly
as in the simulation; when a job is stopped, its real step count replaces the estimate.

The simulation (`ModelledClusterSim`) prices the same decisions with the modelled step time of
each job's plan (real_costs.RunSpeeds) and the measured start, save and load costs
(real_costs.LaunchCosts): a start holds the job's slots for launch_s before its first step, a
restart for launch_s + load_s; a preemption holds the stopped job's slots until its ranks next
look for the request (the end of their launch or of their current step) and have saved
(save_s), and the jobs placed at that instant start after that, as in the real run.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import simpy.rt

from simplan.errors import SimplanError
from simplan.schedule.cluster import ClusterSim, SimOptions
from simplan.schedule.core import Job
from simplan.schedule.real_costs import LaunchCosts, RunSpeeds, run_spec
from simplan.schedule.real_launch import Launch
from simplan.schedule.real_rank import RankTask
from simplan.schedule.results import ScheduleResult
from simplan.schedule.state import JobState, Node, Placement, Policy

POLL_S = 0.05
RUN_SCHEMA_VERSION = 1


def job_steps(job: Job) -> float:
    """The job's work in whole optimizer steps (a real run cannot take part of one)."""
    from simplan.schedule.trace import work_steps

    return float(math.ceil(work_steps(job) - 1e-9))


def scaled(jobs: Sequence[Job], time_scale: float) -> tuple[Job, ...]:
    """The jobs with their arrival times (and deadlines) multiplied by time_scale."""
    return tuple(
        dataclasses.replace(
            j,
            arrival_s=j.arrival_s * time_scale,
            deadline_s=None if j.deadline_s is None else j.deadline_s * time_scale,
        )
        for j in jobs
    )


class ModelledClusterSim(ClusterSim):
    """The cluster simulation with each start priced by measured launch costs, and each
    preemption by the time the ranks take to stop: a rank looks for the stop request before
    each step, so a preempted job first ends its launch (if it is still starting) or its
    current step, then saves its checkpoint; the jobs placed at that instant start after it."""

    MODELS_STOPS = True  # the real run measures its stops instead

    def __init__(self, *args: Any, costs: LaunchCosts, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.costs = costs
        self._stopped_at_s = 0.0  # when the last preempted job's ranks have exited

    def _start(
        self, js: JobState, placement: Placement, *, restart: bool, delay_s: float = -1
    ) -> None:
        if delay_s < 0:
            js.restarts += int(restart)
            delay_s = self.costs.delay_s(js.job.model, placement.gpus, restart)
        delay_s += max(0.0, self._stopped_at_s - self.env.now)
        super()._start(js, placement, restart=restart, delay_s=delay_s)

    def _stop(self, js: JobState, reason: str) -> None:
        if self.MODELS_STOPS and reason == "preempt" and js.placement is not None:
            stop_s = (
                stop_latency_s(js, self.env.now)
                + self.costs.of(js.job.model, js.placement.gpus).save_s
            )
            self._stopped_at_s = max(self._stopped_at_s, self.env.now + stop_s)
        super()._stop(js, reason)


def stop_latency_s(js: JobState, now_s: float) -> float:
    """Seconds until a running job's ranks next look for a stop request: the rest of its
    launch (start and checkpoint load) while it is starting, else the rest of its step."""
    working_s = now_s - js.seg_start_s - js.seg_delay_s
    if working_s < 0:
        return -working_s
    into_step_s = working_s % js.seg_step_s
    return 0.0 if into_step_s < 1e-9 else js.seg_step_s - into_step_s


@dataclass(frozen=True, kw_only=True)
class LaunchRecord:
    """One launch of a job: when (seconds from the run's start), on how many ranks, the steps
    it ran, whether it was stopped (preempted), rank 0's losses and phase times."""

    job_id: str
    ranks: int
    start_s: float
    end_s: float
    start_step: int
    end_step: int
    stopped: bool
    losses: tuple[float, ...]
    phases_s: dict[str, float]


class RealClusterRun(ModelledClusterSim):
    """The cluster simulation driving real launches in real time (see the module docstring)."""

    MODELS_STOPS = False

    def __init__(
        self,
        jobs: Sequence[Job],
        nodes: tuple[Node, ...],
        speeds: RunSpeeds,
        policy: Policy,
        *,
        costs: LaunchCosts,
        run_dir: Path,
        context: Any,
        cluster_name: str = "",
        timeout_s: float = 120.0,
        echo: Callable[[str], None] = lambda _: None,
        faults: Mapping[str, str] | None = None,
    ) -> None:
        options = SimOptions(checkpoint_s=0.0)
        super().__init__(
            jobs, nodes, speeds, policy, options, cluster_name=cluster_name, work=job_steps,
            costs=costs,
        )  # fmt: skip
        self.run_dir, self.context = run_dir, context
        self.timeout_s, self.echo = timeout_s, echo
        self.launches: dict[str, Launch] = {}
        self.started: list[Launch] = []  # every launch, in order
        self.faults = dict(faults or {})  # job id -> RankTask.fault (tests of failures)
        self.records: list[LaunchRecord] = []
        self._real_start = time.monotonic()

    def _start(
        self, js: JobState, placement: Placement, *, restart: bool, delay_s: float = -1
    ) -> None:
        super()._start(js, placement, restart=restart, delay_s=delay_s)
        js.version += 1  # the completion is the ranks' exit, not the simulated one
        if js.steps_done >= js.total_steps:  # it finished while being preempted: nothing to run
            version = js.version
            self.env.timeout(0).callbacks.append(lambda _e: self._complete(js, version))
            return
        self.launches[js.id] = self._launch(js, placement.gpus)
        what = "restart" if restart else "start"
        self.echo(f"[{self.env.now:7.1f} s] {what} {js.id} on {placement.gpus} slot(s)")

    def _launch(self, js: JobState, ranks: int) -> Launch:
        folder = self.run_dir / js.id
        task = RankTask(
            job=run_spec(js.job, ranks, self.timeout_s),
            total_steps=int(js.total_steps),
            ckpt_dir=str(folder / "ckpt"),
            stop_file=str(folder / "stop"),
            fault=self.faults.get(js.id, ""),
        )
        Path(task.stop_file).unlink(missing_ok=True)
        launch_dir = folder / f"launch{sum(r.job_id == js.id for r in self.records)}"
        launch = Launch(task, ranks, launch_dir, self.context)
        self.started.append(launch)
        return launch

    def _stop(self, js: JobState, reason: str) -> None:
        launch = self.launches.pop(js.id, None)
        real_steps = None
        if launch is not None:  # a preemption (a completion's launch is gone already)
            launch.request_stop()
            result = launch.wait()
            self._record(js.id, launch, result)
            real_steps = float(result["end_step"])
            self.echo(f"[{self._wall_s():7.1f} s] preempted {js.id} at step {int(real_steps)}")
        placement = js.placement
        super()._stop(js, reason)
        if real_steps is not None:
            js.steps_done = real_steps
            if real_steps >= js.total_steps and placement is not None:
                # it finished as it was asked to stop: done now, unless placed again at once
                self.env.timeout(0).callbacks.append(lambda _e: self._done(js, placement))

    def _done(self, js: JobState, placement: Placement) -> None:
        if js.placement is None and js.id in self.active:
            self._start(js, placement, restart=False, delay_s=0.0)  # completes at once

    def _record(self, job_id: str, launch: Launch, result: dict[str, Any]) -> None:
        t0 = self._real_start
        times = result["times"]
        self.records.append(
            LaunchRecord(
                job_id=job_id,
                ranks=launch.world,
                start_s=launch.started_s - t0,
                end_s=(launch.ended_s or time.monotonic()) - t0,
                start_step=int(result["start_step"]),
                end_step=int(result["end_step"]),
                stopped=bool(result["stopped"]),
                losses=tuple(float(x) for x in result["losses"]),
                phases_s={k: float(v) - float(times["entered"]) for k, v in times.items()},
            )
        )

    def _wall_s(self) -> float:
        return time.monotonic() - self._real_start

    def _poll(self) -> Generator[Any, Any, None]:
        """Watch the launches; keep env.now at the wall clock (a preemption blocks the
        environment while the ranks save)."""
        while not self.all_done.triggered:
            yield self.env.timeout(max(POLL_S, self._wall_s() - self.env.now))
            self._collect()

    def _collect(self) -> None:
        """Complete the jobs whose ranks are done (RankFailure where one failed or hung)."""
        for job_id, launch in list(self.launches.items()):
            result = launch.poll()
            if result is None:
                continue
            del self.launches[job_id]
            self._record(job_id, launch, result)
            js = self.states[job_id]
            js.steps_done = float(result["end_step"])
            self.echo(f"[{self.env.now:7.1f} s] done {job_id}")
            self._complete(js, js.version)

    def _decide(self, event: Any) -> None:
        self._collect()  # a job that has just finished is not to be preempted
        if not self.all_done.triggered:
            super()._decide(event)

    def run(self, notes: Callable[[], tuple[str, ...]] = tuple) -> ScheduleResult:
        """Run the trace; the clock (time 0: the trace's start) starts now."""
        env = simpy.rt.RealtimeEnvironment(factor=1.0, strict=False)
        self.env, self._real_start = env, env.real_start
        self.all_done = self.env.event()
        self.env.process(self._poll())
        try:
            return super().run(notes)
        finally:
            for launch in self.launches.values():
                launch.close()
            self.launches.clear()


def check_slots(spec: Any) -> int:
    """The CPU slots of a cluster spec for --run: one node of CPU devices, at most this
    machine's cores."""
    import os

    if len(spec.groups) != 1 or spec.groups[0].count != 1 or spec.groups[0].device.kind != "cpu":
        raise SimplanError(
            f"--run executes on this machine's CPUs; {spec.name} is not one node of CPUs: use "
            "--cluster localhost-cpu"
        )
    slots = int(spec.groups[0].devices_per_node)
    cores = os.cpu_count() or 1
    if slots > cores:
        raise SimplanError(
            f"--run: {slots} CPU slots on a machine of {cores} cores; use --gpus-per-node {cores}"
            " or fewer"
        )
    return slots
