"""What a policy sees and returns: the cluster's nodes and their condition, each active job's
progress, and the allocation a policy asks for (placed on nodes by `place`).

Policies read `ClusterState` and `JobState` (the simulator's running records) and never write
them; they return an `Allocation`: requests in priority order that `place` turns into node
placements, keeping a running job where it is when its request is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from simplan.schedule.core import Job, Shape, SpeedTable
from simplan.topology.cluster_spec import ClusterSpec


@dataclass(frozen=True, kw_only=True)
class Node:
    index: int
    gpu_type: str
    gpus: int


def cluster_nodes(spec: ClusterSpec) -> tuple[Node, ...]:
    """One Node per node of the spec, in node-group order."""
    nodes: list[Node] = []
    for group in spec.groups:
        for _ in range(group.count):
            nodes.append(
                Node(index=len(nodes), gpu_type=group.device.name, gpus=group.devices_per_node)
            )
    return tuple(nodes)


@dataclass(frozen=True, kw_only=True)
class Request:
    """Run job_id on `gpus` GPUs of gpu_type ('' : whichever type has room, in cluster order)."""

    job_id: str
    gpus: int
    gpu_type: str = ""
    move_off_slow: bool = False  # a running job on a slowed node may be moved (restarted)


@dataclass(frozen=True, kw_only=True)
class Allocation:
    """Requests in priority order (several for one job: alternatives, the first that fits
    counts). backfill: place later requests when an earlier one does not
    fit (False: stop at the first that does not, as strict FIFO does)."""

    requests: tuple[Request, ...]
    backfill: bool = True
    wake_s: float | None = None  # ask to decide again at this time (a planned start)


@dataclass(frozen=True, kw_only=True)
class Placement:
    """GPUs of one type on some nodes: (node index, GPUs) pairs, the same count on each."""

    gpu_type: str
    per_node: tuple[tuple[int, int], ...]

    @cached_property
    def gpus(self) -> int:
        return sum(g for _, g in self.per_node)

    @property
    def shape(self) -> Shape:
        return Shape(gpu_type=self.gpu_type, gpus=self.gpus, nodes=len(self.per_node))


@dataclass(kw_only=True, eq=False)
class JobState:
    """The simulator's record of one arrived job. Progress of the running segment is counted
    at `seg_start_s`; `steps_at(now)` and `attained_at(now)` include it."""

    job: Job
    total_steps: float
    rigid_gpus: int
    nominal_step_s: float  # best step time on rigid_gpus packed (what SRTF and fairness use)
    steps_done: float = 0.0
    attained_gpu_s: float = 0.0
    placement: Placement | None = None
    seg_start_s: float = 0.0
    seg_delay_s: float = 0.0
    seg_step_s: float = 0.0
    first_start_s: float | None = None
    finish_s: float | None = None
    preemptions: int = 0
    restarts: int = 0
    lost_steps: float = 0.0
    gpu_s_by_type: dict[str, float] = field(default_factory=dict)
    version: int = 0

    @property
    def id(self) -> str:
        return self.job.id

    @cached_property
    def rigid_request(self) -> Request:
        """Its rigid GPU count on any type (what rigid policies ask for)."""
        return Request(job_id=self.job.id, gpus=self.rigid_gpus)

    @property
    def running(self) -> bool:
        return self.placement is not None

    def steps_at(self, now_s: float) -> float:
        if self.placement is None:
            return self.steps_done
        working_s = max(0.0, now_s - self.seg_start_s - self.seg_delay_s)
        return min(self.total_steps, self.steps_done + working_s / self.seg_step_s)

    def steps_left(self, now_s: float) -> float:
        return max(0.0, self.total_steps - self.steps_at(now_s))

    def gpu_s_on(self, gpu_type: str, now_s: float) -> float:
        """GPU-seconds the job has held on gpu_type, the running segment included."""
        held = self.gpu_s_by_type.get(gpu_type, 0.0)
        if self.placement is not None and self.placement.gpu_type == gpu_type:
            held += (now_s - self.seg_start_s) * self.placement.gpus
        return held

    def attained_at(self, now_s: float) -> float:
        if self.placement is None:
            return self.attained_gpu_s
        return self.attained_gpu_s + (now_s - self.seg_start_s) * self.placement.gpus


@dataclass(kw_only=True, eq=False)
class ClusterState:
    """The cluster now: nodes, which are up, each node's slowdown factor (1: healthy; a
    straggler runs slower), the speed table, and the time a job loses when it restarts."""

    nodes: tuple[Node, ...]
    speeds: SpeedTable
    now_s: float = 0.0
    restart_s: float = 0.0
    up: list[bool] = field(default_factory=list)
    slowdown: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.up = self.up or [True] * len(self.nodes)
        self.slowdown = self.slowdown or [1.0] * len(self.nodes)
        types: dict[str, list[int]] = {}
        for node in self.nodes:
            types.setdefault(node.gpu_type, []).append(node.index)
        self.nodes_by_type = {t: tuple(ix) for t, ix in types.items()}
        self.gpu_types: tuple[str, ...] = tuple(self.nodes_by_type)
        self.allowed_cache: dict[tuple[str, ...], tuple[str, ...]] = {}

    def gpus_of_type(self, gpu_type: str, *, up_only: bool = True) -> int:
        return sum(
            self.nodes[i].gpus
            for i in self.nodes_by_type.get(gpu_type, ())
            if self.up[i] or not up_only
        )

    @property
    def total_gpus(self) -> int:
        return sum(n.gpus for n in self.nodes)

    def step_time_s(self, job: Job, placement: Placement) -> float | None:
        """The job's step time on placement, slowed by its slowest node (synchronous steps)."""
        base = self.speeds.step_time_s(job, placement.shape)
        if base is None:
            return None
        return base * max(self.slowdown[i] for i, _ in placement.per_node)


def allowed_types(job: Job, state: ClusterState) -> tuple[str, ...]:
    """The cluster's GPU types the job allows, in cluster order (cached per allow-list)."""
    cached = state.allowed_cache.get(job.gpu_types)
    if cached is None:
        cached = tuple(t for t in state.gpu_types if not job.gpu_types or t in job.gpu_types)
        state.allowed_cache[job.gpu_types] = cached
    return cached


def _divisors_from(gpus: int, per_node: int) -> list[int]:
    """Node counts k (ascending, from the fewest that hold the GPUs) with gpus divisible by k."""
    least = -(-gpus // per_node)
    return [k for k in range(least, gpus + 1) if gpus % k == 0]


def find_nodes(
    state: ClusterState, free: Sequence[int], gpu_type: str, gpus: int
) -> Placement | None:
    """Where gpus GPUs of gpu_type fit now: on as few up nodes as hold them (each with the same
    count), preferring healthy nodes and then the fullest ones (best fit); None if nowhere."""
    indices = state.nodes_by_type.get(gpu_type, ())
    if not indices or sum(free[i] for i in indices if state.up[i]) < gpus:
        return None
    per_node_max = state.nodes[indices[0]].gpus
    for k in _divisors_from(gpus, per_node_max):
        each = gpus // k
        fits = [i for i in indices if state.up[i] and free[i] >= each]
        if len(fits) < k:
            continue
        fits.sort(key=lambda i: (state.slowdown[i], free[i], i))
        return Placement(gpu_type=gpu_type, per_node=tuple((i, each) for i in sorted(fits[:k])))
    return None


def _types_for(request: Request, job: Job, state: ClusterState) -> tuple[str, ...]:
    if request.gpu_type:
        return (request.gpu_type,) if request.gpu_type in allowed_types(job, state) else ()
    return allowed_types(job, state)


def _keeps(request: Request, current: Placement, state: ClusterState, healthy: bool) -> bool:
    """Whether a running job's placement satisfies its request (healthy: no node down or slow,
    so the nodes need no check)."""
    if current.gpus != request.gpus or request.gpu_type not in ("", current.gpu_type):
        return False
    if healthy:
        return True
    return all(state.up[i] for i, _ in current.per_node) and not (
        request.move_off_slow and any(state.slowdown[i] > 1 for i, _ in current.per_node)
    )


def _admit(
    state: ClusterState, jobs: dict[str, JobState], allocation: Allocation
) -> list[tuple[Request, str, bool]]:
    """The requests that fit the cluster's up GPUs counted per type, in priority order, each
    with the type it is counted on and whether the job keeps its current placement (a running
    job keeps its type when the request allows)."""
    room = {t: state.gpus_of_type(t) for t in state.gpu_types}
    left = sum(room.values())
    healthy = all(state.up) and max(state.slowdown, default=1.0) <= 1.0
    admitted: list[tuple[Request, str, bool]] = []
    seen: set[str] = set()
    for request in allocation.requests:
        if left <= 0:
            break  # every GPU is taken: the rest wait
        job_id = request.job_id
        if job_id in seen:
            continue  # an alternative of a job already admitted
        js = jobs[job_id]
        current = js.placement
        gpus = request.gpus
        if current is not None and _keeps(request, current, state, healthy):
            if room[current.gpu_type] >= gpus:
                room[current.gpu_type] -= gpus
                left -= gpus
                seen.add(job_id)
                admitted.append((request, current.gpu_type, True))
                continue
        else:
            types = _types_for(request, js.job, state)
            chosen = next((t for t in types if room[t] >= gpus), None)
            if chosen is not None:
                room[chosen] -= gpus
                left -= gpus
                seen.add(job_id)
                admitted.append((request, chosen, False))
                continue
        if not allocation.backfill:
            break
    return admitted


def place(
    state: ClusterState, jobs: dict[str, JobState], allocation: Allocation
) -> dict[str, Placement]:
    """Node placements for the allocation: requests are admitted in priority order while the
    up GPUs of a type they allow suffice; an admitted running job whose request its placement
    satisfies stays where it is; the other admitted jobs are placed in order (find_nodes) where
    their speed table has a step time. Jobs left out are not to run (preempted if running)."""
    admitted = _admit(state, jobs, allocation)
    placed: dict[str, Placement] = {}
    fresh = []
    for entry in admitted:
        if entry[2]:
            current = jobs[entry[0].job_id].placement
            assert current is not None
            placed[entry[0].job_id] = current
        else:
            fresh.append(entry)
    if not fresh:
        return placed
    free = [n.gpus if state.up[n.index] else 0 for n in state.nodes]
    for current in placed.values():
        for i, g in current.per_node:
            free[i] -= g
    for request, gpu_type, _ in fresh:
        job = jobs[request.job_id].job
        others = tuple(t for t in _types_for(request, job, state) if t != gpu_type)
        where = _first_fit(state, free, (gpu_type, *others), request.gpus, job)
        if where is not None:
            placed[request.job_id] = where
            for i, g in where.per_node:
                free[i] -= g
    return placed


def _first_fit(
    state: ClusterState, free: Sequence[int], types: Sequence[str], gpus: int, job: Job
) -> Placement | None:
    for gpu_type in types:
        where = find_nodes(state, free, gpu_type, gpus)
        if where is not None and state.speeds.step_time_s(job, where.shape) is not None:
            return where
    return None


@dataclass(frozen=True, kw_only=True)
class Policy:
    """A scheduling policy: decide(cluster, active jobs in arrival order) -> Allocation, called on
    every arrival, completion, failure, repair and straggler change, and every round_s seconds
    when round_s is set."""

    name: str
    decide: Callable[[ClusterState, Sequence[JobState]], Allocation]
    round_s: float | None = None
