"""The cluster simulation (SimPy): jobs arrive, a policy allocates GPUs, placement follows the
topology (a job spread over more nodes gets that shape's speed), jobs progress at 1/step_time
steps per second, and preemption, node failures and stragglers interrupt them.

Costs and failures (SimOptions):
- checkpoint_s: the time a job loses each time it restarts after a preemption, a migration or a
  failure (saving and loading its checkpoint; its GPUs are held and it makes no progress).
  DEFAULT_CHECKPOINT_S = 30 s is an assumption, not a measurement: measure your jobs and pass
  --checkpoint-s.
- checkpoint_interval_s: a failure loses the progress since the job's last checkpoint; jobs
  checkpoint every interval of running (and on preemption).
- mtbf_s: each node fails after an exponential time with this mean (seeded: the same seed gives
  the same failures), and is repaired after repair_s; failures: scripted (time_s, node) pairs.
- stragglers: a node runs slower by a factor over a time window; a job's step time is its
  shape's step time times the largest factor among its nodes (synchronous training).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import simpy

from simplan.errors import SimplanError
from simplan.schedule.core import Job, Shape, SpeedTable
from simplan.schedule.metrics import schedule_metrics
from simplan.schedule.results import JobRecord, ScheduleResult, Segment
from simplan.schedule.state import (
    Allocation,
    ClusterState,
    JobState,
    Node,
    Placement,
    Policy,
    allowed_types,
    place,
)

DEFAULT_CHECKPOINT_S = 30.0
DEFAULT_CHECKPOINT_INTERVAL_S = 1800.0
DEFAULT_REPAIR_S = 3600.0


@dataclass(frozen=True, kw_only=True)
class Straggler:
    """Node `node` runs `factor` times slower (>= 1) from start_s until end_s."""

    node: int
    factor: float
    start_s: float
    end_s: float = math.inf

    def __post_init__(self) -> None:
        if not self.factor >= 1 or not 0 <= self.start_s < self.end_s:
            raise ValueError("Straggler: factor must be >= 1 and 0 <= start_s < end_s")


@dataclass(frozen=True, kw_only=True)
class SimOptions:
    checkpoint_s: float = DEFAULT_CHECKPOINT_S
    checkpoint_interval_s: float = DEFAULT_CHECKPOINT_INTERVAL_S
    mtbf_s: float | None = None
    repair_s: float = DEFAULT_REPAIR_S
    seed: int = 0
    failures: tuple[tuple[float, int], ...] = ()
    stragglers: tuple[Straggler, ...] = ()

    def __post_init__(self) -> None:
        if self.checkpoint_s < 0 or self.checkpoint_interval_s <= 0 or self.repair_s <= 0:
            raise ValueError(
                "SimOptions: checkpoint_s >= 0, checkpoint_interval_s > 0, repair_s > 0"
            )
        if self.mtbf_s is not None and not self.mtbf_s > 0:
            raise ValueError("SimOptions: mtbf_s must be > 0 (or None: no random failures)")


def steps_of(job: Job) -> float:
    """The job's work in optimizer steps (samples and tokens through the trace module)."""
    if job.work_unit == "steps":
        return job.work
    from simplan.schedule.trace import work_steps

    return work_steps(job)


def packed_shape(node: Node, gpu_type: str, gpus: int) -> Shape | None:
    nodes = -(-gpus // node.gpus)
    return Shape(gpu_type=gpu_type, gpus=gpus, nodes=nodes) if gpus % nodes == 0 else None


def rigid_size(job: Job, state: ClusterState) -> tuple[int, float]:
    """(GPUs, best packed step time) of the job's rigid request: max_gpus if set, else
    min_gpus; halved down to min_gpus while it has no speed on any allowed type."""
    gpus = job.max_gpus or job.min_gpus
    while gpus >= job.min_gpus:
        times = (_packed_time(job, state, t, gpus) for t in allowed_types(job, state))
        known = [t for t in times if t is not None]
        if known:
            return gpus, min(known)
        gpus //= 2
    raise SimplanError(
        f"job {job.id}: no allowed GPU type of the cluster runs it on {job.min_gpus}.."
        f"{job.max_gpus or job.min_gpus} GPUs (too few GPUs or too little memory); widen "
        "min_gpus/max_gpus or gpu_types, or use a larger cluster"
    )


def _packed_time(job: Job, state: ClusterState, gpu_type: str, gpus: int) -> float | None:
    first = state.nodes[state.nodes_by_type[gpu_type][0]]
    shape = packed_shape(first, gpu_type, gpus)
    if shape is None or shape.nodes > len(state.nodes_by_type[gpu_type]):
        return None
    return state.speeds.step_time_s(job, shape)


class ClusterSim:
    """One simulated run of a policy over jobs; `run()` returns the ScheduleResult."""

    def __init__(
        self,
        jobs: Sequence[Job],
        nodes: tuple[Node, ...],
        speeds: SpeedTable,
        policy: Policy,
        options: SimOptions | None = None,
        *,
        cluster_name: str = "",
        work: Callable[[Job], float] = steps_of,
    ) -> None:
        if not jobs:
            raise SimplanError("the trace has no jobs; give at least one")
        self.env = simpy.Environment()
        self.options = options or SimOptions()
        self.state = ClusterState(nodes=nodes, speeds=speeds, restart_s=self.options.checkpoint_s)
        self.policy, self.cluster_name = policy, cluster_name
        self.pending = sorted(jobs, key=lambda j: j.arrival_s)
        self.states = {j.id: self._job_state(j, work(j)) for j in self.pending}
        self.active: dict[str, JobState] = {}
        self.running: dict[str, JobState] = {}
        self.done: list[JobState] = []
        self.busy: list[tuple[float, int]] = [(0.0, 0)]
        self.segments: list[Segment] = []
        self.allocated = 0
        self.events = 0
        self.failures = 0
        self.repairs_due = 0
        self.arrived = 0
        self._decision_due = False
        self._wakes: set[float] = set()
        self.all_done = self.env.event()

    def _job_state(self, job: Job, steps: float) -> JobState:
        if not steps > 0:
            raise SimplanError(f"job {job.id}: work must be > 0 steps")
        gpus, step_s = rigid_size(job, self.state)
        return JobState(job=job, total_steps=steps, rigid_gpus=gpus, nominal_step_s=step_s)

    # ------------------------------------------------------------------ processes

    def _arrivals(self) -> Generator[Any, Any, None]:
        for job in self.pending:
            if job.arrival_s > self.env.now:
                yield self.env.timeout(job.arrival_s - self.env.now)
            self.active[job.id] = self.states[job.id]
            self.arrived += 1
            self.events += 1
            self.wake()

    def _node_failures(self, node: int) -> Generator[Any, Any, None]:
        assert self.options.mtbf_s is not None
        rng = random.Random(f"{self.options.seed}-{node}")
        while True:
            yield self.env.timeout(rng.expovariate(1.0 / self.options.mtbf_s))
            yield from self._outage(node)

    def _scripted_failure(self, at_s: float, node: int) -> Generator[Any, Any, None]:
        yield self.env.timeout(at_s)
        if self.state.up[node]:
            yield from self._outage(node)

    def _outage(self, node: int) -> Generator[Any, Any, None]:
        self.fail(node)
        self.repairs_due += 1
        yield self.env.timeout(self.options.repair_s)
        self.repairs_due -= 1
        self.state.up[node] = True
        self.events += 1
        self.wake()

    def _straggler(self, s: Straggler) -> Generator[Any, Any, None]:
        yield self.env.timeout(s.start_s)
        self._set_slowdown(s.node, s.factor)
        if math.isfinite(s.end_s):
            yield self.env.timeout(s.end_s - s.start_s)
            self._set_slowdown(s.node, 1.0)

    def _rounds(self, round_s: float) -> Generator[Any, Any, None]:
        while True:
            yield self.env.timeout(round_s)
            self.wake()

    # ------------------------------------------------------------------ state changes

    def wake(self) -> None:
        """Ask the policy to decide once all events of this instant are handled."""
        if not self._decision_due:
            self._decision_due = True
            self.env.timeout(0).callbacks.append(self._decide)

    def _wake_at(self, at_s: float) -> None:
        if at_s > self.env.now and at_s not in self._wakes:
            self._wakes.add(at_s)
            self.env.timeout(at_s - self.env.now).callbacks.append(self._woken)

    def _woken(self, _event: Any) -> None:
        self._wakes = {t for t in self._wakes if t > self.env.now + 1e-9}
        self.wake()

    def _decide(self, _event: Any) -> None:
        self._decision_due = False
        self.events += 1
        self.state.now_s = self.env.now
        queue = list(self.active.values())
        allocation = self.policy.decide(self.state, queue)
        self._apply(allocation)
        if allocation.wake_s is not None:
            self._wake_at(allocation.wake_s)
        self._check_progress(allocation)

    def _apply(self, allocation: Allocation) -> None:
        placed = place(self.state, self.active, allocation)
        candidates = {**self.running, **{i: self.active[i] for i in placed}}
        changed = [
            js
            for i, js in candidates.items()
            if placed.get(i) is not js.placement and placed.get(i) != js.placement
        ]
        for js in changed:
            if js.placement is not None:
                self._stop(js, "preempt")
        for js in changed:
            new = placed.get(js.id)
            if new is not None:
                self._start(js, new, restart=js.first_start_s is not None)
        self._record_busy()

    def _check_progress(self, allocation: Allocation) -> None:
        stuck = (
            self.active
            and self.allocated == 0
            and self.arrived == len(self.pending)
            and self.repairs_due == 0
            and allocation.wake_s is None
            and not self._wakes
        )
        if stuck:
            first = next(iter(self.active.values()))
            raise SimplanError(
                f"policy {self.policy.name}: {len(self.active)} jobs wait on an idle cluster "
                f"(first: {first.id}, {first.rigid_gpus} GPUs) and nothing will change; "
                "check the jobs' GPU counts against the cluster"
            )

    def _start(
        self, js: JobState, placement: Placement, *, restart: bool, delay_s: float = -1
    ) -> None:
        now = self.env.now
        step_s = self.state.step_time_s(js.job, placement)
        assert step_s is not None  # place() puts jobs only where they have a speed
        if delay_s < 0:
            delay_s = self.options.checkpoint_s if restart else 0.0
            js.restarts += int(restart)
        js.placement, js.seg_start_s, js.seg_delay_s, js.seg_step_s = (
            placement,
            now,
            delay_s,
            step_s,
        )
        if js.first_start_s is None:
            js.first_start_s = now
        js.version += 1
        version = js.version
        end = self.env.timeout(delay_s + js.steps_left(now) * step_s)
        end.callbacks.append(lambda _e: self._complete(js, version))
        self.allocated += placement.gpus
        self.running[js.id] = js

    def _stop(self, js: JobState, reason: str) -> None:
        """Account the running segment and take the job off its GPUs. reason: 'preempt',
        'failure' (progress since the last checkpoint is lost), 'rate' or 'done'."""
        now, placement = self.env.now, js.placement
        assert placement is not None
        steps = js.steps_at(now)
        if reason == "failure":
            working_s = max(0.0, now - js.seg_start_s - js.seg_delay_s)
            interval = self.options.checkpoint_interval_s
            kept = js.steps_done + (working_s // interval) * interval / js.seg_step_s
            js.lost_steps += steps - kept
            steps = kept
        held_s = now - js.seg_start_s
        self.segments.append(
            Segment(job=js.id, gpu_type=placement.gpu_type, per_node=placement.per_node,
                    start_s=js.seg_start_s, end_s=now, delay_s=min(js.seg_delay_s, held_s))
        )  # fmt: skip
        js.attained_gpu_s += held_s * placement.gpus
        by_type = js.gpu_s_by_type
        by_type[placement.gpu_type] = by_type.get(placement.gpu_type, 0.0) + held_s * placement.gpus
        js.steps_done = steps
        js.preemptions += int(reason == "preempt")
        js.placement = None
        js.version += 1
        self.allocated -= placement.gpus
        del self.running[js.id]

    def _complete(self, js: JobState, version: int) -> None:
        if version != js.version:
            return
        self._stop(js, "done")
        js.steps_done = js.total_steps
        js.finish_s = self.env.now
        del self.active[js.id]
        self.done.append(js)
        self.events += 1
        self._record_busy()
        if len(self.done) == len(self.pending):
            self.all_done.succeed()
        else:
            self.wake()

    def fail(self, node: int) -> None:
        self.state.up[node] = False
        self.failures += 1
        self.events += 1
        for js in list(self.active.values()):
            if js.placement is not None and any(i == node for i, _ in js.placement.per_node):
                self._stop(js, "failure")
        self._record_busy()
        self.wake()

    def _set_slowdown(self, node: int, factor: float) -> None:
        now = self.env.now
        self.state.slowdown[node] = factor
        self.events += 1
        for js in list(self.active.values()):
            placement = js.placement
            if placement is None or all(i != node for i, _ in placement.per_node):
                continue
            left_delay = max(0.0, js.seg_start_s + js.seg_delay_s - now)
            self._stop(js, "rate")
            self._start(js, placement, restart=False, delay_s=left_delay)
        self.wake()

    def _record_busy(self) -> None:
        now = self.env.now
        if self.busy[-1][0] == now:
            self.busy[-1] = (now, self.allocated)
        elif self.busy[-1][1] != self.allocated:
            self.busy.append((now, self.allocated))

    # ------------------------------------------------------------------ run

    def run(self, notes: Callable[[], tuple[str, ...]] = tuple) -> ScheduleResult:
        started = time.perf_counter()
        self.env.process(self._arrivals())
        if self.options.mtbf_s is not None:
            for node in self.state.nodes:
                self.env.process(self._node_failures(node.index))
        for at_s, index in self.options.failures:
            self.env.process(self._scripted_failure(at_s, index))
        for s in self.options.stragglers:
            self.env.process(self._straggler(s))
        if self.policy.round_s:
            self.env.process(self._rounds(self.policy.round_s))
        self.env.run(until=self.all_done)
        return self._result(time.perf_counter() - started, notes())

    def _result(self, wall_s: float, notes: tuple[str, ...]) -> ScheduleResult:
        records = tuple(_record(self.states[j.id]) for j in self.pending)
        total = self.state.total_gpus
        return ScheduleResult(
            policy=self.policy.name,
            cluster=self.cluster_name,
            total_gpus=total,
            metrics=schedule_metrics(records, self.busy, total, self.failures),
            jobs=records,
            busy=tuple(self.busy),
            events=self.events,
            wall_s=wall_s,
            notes=notes,
            segments=tuple(self.segments),
        )


def _record(js: JobState) -> JobRecord:
    assert js.finish_s is not None and js.first_start_s is not None
    return JobRecord(
        id=js.id,
        arrival_s=js.job.arrival_s,
        first_start_s=js.first_start_s,
        finish_s=js.finish_s,
        gpus=js.rigid_gpus,
        gpu_s=js.attained_gpu_s,
        preemptions=js.preemptions,
        restarts=js.restarts,
        lost_steps=js.lost_steps,
        isolated_s=js.total_steps * js.nominal_step_s,
    )
