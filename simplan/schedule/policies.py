"""Dynamic scheduling policies, each a small function (cluster state, active jobs in arrival
order) -> Allocation. Rigid policies ask for each job's rigid GPU count (JobState.rigid_gpus) on
any GPU type; placement is simplan.schedule.state.place.

- fifo: arrival order, no preemption, no backfilling (a job that does not fit blocks the ones
  behind it).
- srtf: shortest remaining time first (remaining steps times the job's best step time),
  preemptive, backfilling.
- las: Tiresias's two-dimensional least-attained-service (Gu et al., NSDI 2019): attained
  service is GPU-seconds (GPUs x time held); jobs sit in discretized priority queues by
  attained service (thresholds LAS_THRESHOLDS_GPU_S), FIFO within a queue; a running job that
  crosses a threshold is demoted and may be preempted.
- elastic: Pollux / Sia style resizing along each job's speed curve: every job first gets its
  min_gpus (arrival order), then spare GPUs go, a doubling at a time, to the job whose
  throughput gains most per added GPU (relative to its throughput on min_gpus).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from simplan.schedule.core import Shape
from simplan.schedule.state import (
    Allocation,
    ClusterState,
    JobState,
    Policy,
    Request,
    allowed_types,
)

# Tiresias picks the queue count and thresholds per cluster; these are settings (two
# thresholds, three queues), not measurements: one GPU-hour and ten GPU-hours.
LAS_THRESHOLDS_GPU_S = (3600.0, 36000.0)


def rigid(js: JobState) -> Request:
    return js.rigid_request


def fifo(state: ClusterState, queue: Sequence[JobState]) -> Allocation:
    return Allocation(requests=tuple(rigid(js) for js in queue), backfill=False)


def remaining_s(js: JobState, now_s: float) -> float:
    return js.steps_left(now_s) * js.nominal_step_s


def srtf(state: ClusterState, queue: Sequence[JobState]) -> Allocation:
    now = state.now_s
    keys = [
        ((js.total_steps - js.steps_done) * js.nominal_step_s, i)
        if js.placement is None
        else (remaining_s(js, now), i)
        for i, js in enumerate(queue)
    ]  # a waiting job's remaining time is its last one: no call per waiting job
    keys.sort()
    return Allocation(requests=tuple(queue[i].rigid_request for _, i in keys))


def las_queue(attained_gpu_s: float, thresholds: Sequence[float]) -> int:
    """The priority queue of a job (0: highest) by its attained GPU-seconds."""
    return sum(attained_gpu_s >= t for t in thresholds)


def _next_demotion_s(js: JobState, now_s: float, thresholds: Sequence[float]) -> float | None:
    """When the running job crosses its next threshold (None: not running or in the last)."""
    if js.placement is None:
        return None
    attained = js.attained_at(now_s)
    above = [t for t in thresholds if t > attained]
    if not above:
        return None
    return now_s + (above[0] - attained) / js.placement.gpus


def make_las(thresholds: Sequence[float] = LAS_THRESHOLDS_GPU_S) -> Policy:
    def las(state: ClusterState, queue: Sequence[JobState]) -> Allocation:
        now = state.now_s
        keys = [
            (las_queue(js.attained_gpu_s if js.placement is None else js.attained_at(now),
                       thresholds), i)
            for i, js in enumerate(queue)
        ]  # fmt: skip
        keys.sort()
        due = [
            t
            for js in queue
            if js.placement is not None and (t := _next_demotion_s(js, now, thresholds)) is not None
        ]
        return Allocation(
            requests=tuple(queue[i].rigid_request for _, i in keys),
            wake_s=min(due) if due else None,
        )

    return Policy(name="las", decide=las)


def _throughput(state: ClusterState, js: JobState, gpu_type: str, gpus: int) -> float:
    """Steps per second of the job on gpus GPUs of gpu_type packed (0 where it cannot run)."""
    first = state.nodes[state.nodes_by_type[gpu_type][0]]
    nodes = -(-gpus // first.gpus)
    if gpus % nodes or nodes > len(state.nodes_by_type[gpu_type]):
        return 0.0
    step = state.speeds.step_time_s(js.job, Shape(gpu_type=gpu_type, gpus=gpus, nodes=nodes))
    return 1.0 / step if step else 0.0


def _elastic_start(
    state: ClusterState, queue: Sequence[JobState], room: dict[str, int]
) -> dict[str, tuple[str, int, float]]:
    """Each job's (type, min GPUs, base throughput) in arrival order while room lasts; a running
    job keeps its type."""
    sizes: dict[str, tuple[str, int, float]] = {}
    for js in queue:
        types = allowed_types(js.job, state)
        if js.placement is not None:
            types = (js.placement.gpu_type,)
        options = [
            (t, _throughput(state, js, t, js.job.min_gpus))
            for t in types
            if room[t] >= js.job.min_gpus
        ]
        options = [o for o in options if o[1] > 0]
        if not options:
            continue
        gpu_type, base = max(options, key=lambda o: o[1])
        room[gpu_type] -= js.job.min_gpus
        sizes[js.id] = (gpu_type, js.job.min_gpus, base)
    return sizes


def elastic(state: ClusterState, queue: Sequence[JobState]) -> Allocation:
    room = {t: state.gpus_of_type(t) for t in state.gpu_types}
    sizes = _elastic_start(state, queue, room)
    by_id = {js.id: js for js in queue}
    heap: list[tuple[float, int, str]] = []

    def push(job_id: str, order: int) -> None:
        gpu_type, gpus, base = sizes[job_id]
        cap = by_id[job_id].job.max_gpus or state.gpus_of_type(gpu_type)
        if 2 * gpus > cap:
            return
        now_tp = _throughput(state, by_id[job_id], gpu_type, gpus)
        gain = (_throughput(state, by_id[job_id], gpu_type, 2 * gpus) - now_tp) / base / gpus
        if gain > 0:
            heapq.heappush(heap, (-gain, order, job_id))

    for order, job_id in enumerate(sizes):
        push(job_id, order)
    while heap:
        _, order, job_id = heapq.heappop(heap)
        gpu_type, gpus, base = sizes[job_id]
        if room[gpu_type] < gpus:
            continue
        room[gpu_type] -= gpus
        sizes[job_id] = (gpu_type, 2 * gpus, base)
        push(job_id, order)
    return Allocation(
        requests=tuple(Request(job_id=i, gpus=g, gpu_type=t) for i, (t, g, _) in sizes.items())
    )
