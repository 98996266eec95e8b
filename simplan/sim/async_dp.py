"""Asynchronous data parallelism with bounded staleness: a parameter server, event by event.

Every worker (a whole-model DP replica) loops: pull the parameters from the server (it reads
version v), compute a gradient (its own `compute_s`), push the gradient, and the server applies
it (version V -> V + 1). The update's *staleness* is V - v: the updates of other workers
applied between the read and the apply (0 when nobody else got in between).

The bound is the stale synchronous parallel one (Ho et al., NeurIPS 2013): a worker may start
its next gradient only while it is at most `bound` gradients ahead of the slowest worker
(clock_i - min_j clock_j <= bound); otherwise it blocks until the slowest pushes. bound 0 is
lockstep: every worker pushes once per round.

Transfers to and from the server go through the server's link one at a time (a SimPy Resource
of capacity 1), each taking its `push_s` / `pull_s`: concurrent transfers share the server's
bandwidth. Applying a gradient takes `apply_s` on the server, right after its push, still
holding the link (the server applies one gradient at a time). Simultaneous events run in the
order they were scheduled (first-come first-served), which a hand-worked example can follow.

Formulas: updates_per_s = updates / (time of the last update); staleness mean and max over
all updates; blocked_s per worker = time spent waiting on the bound.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import simpy

from simplan.errors import SimplanError
from simplan.units import DTYPE_BYTES

if TYPE_CHECKING:
    from simplan.model_graph import ModelGraph
    from simplan.parallel import ParallelConfig
    from simplan.sim.result import SimResult

MAX_UPDATES = 1_000_000
UPDATES_PER_WORKER = 100  # enough for the staleness distribution to settle
MAX_SIM_UPDATES = 20_000  # a few tenths of a second of SimPy events


@dataclass(frozen=True, kw_only=True)
class AsyncWorker:
    """One worker: seconds per gradient, and seconds to pull / push through the server link."""

    compute_s: float
    pull_s: float = 0.0
    push_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.compute_s > 0:
            raise ValueError(f"compute_s must be > 0, got {self.compute_s}")
        if self.pull_s < 0 or self.push_s < 0:
            raise ValueError("pull_s and push_s must be >= 0")


@dataclass(frozen=True, kw_only=True)
class AsyncResult:
    """What an asynchronous run did: update rate, staleness and waiting."""

    bound: int
    updates: int
    duration_s: float
    updates_per_s: float
    staleness: tuple[int, ...]  # of every update, in the order applied
    staleness_mean: float
    staleness_max: int
    staleness_histogram: dict[int, int]
    updates_per_worker: tuple[int, ...]
    blocked_s: tuple[float, ...]  # per worker, waiting on the bound

    def to_dict(self) -> dict[str, Any]:
        return {
            "bound": self.bound,
            "updates": self.updates,
            "duration_s": self.duration_s,
            "updates_per_s": self.updates_per_s,
            "staleness_mean": self.staleness_mean,
            "staleness_max": self.staleness_max,
            "staleness_histogram": {str(k): v for k, v in self.staleness_histogram.items()},
            "updates_per_worker": list(self.updates_per_worker),
            "blocked_s": list(self.blocked_s),
        }


class _Server:
    """The parameter server's state: version, clocks, the link, and who waits on the bound."""

    def __init__(self, env: simpy.Environment, workers: int, bound: int, updates: int) -> None:
        self.env = env
        self.link = simpy.Resource(env, capacity=1)
        self.version = 0
        self.clocks = [0] * workers
        self.bound = bound
        self.target = updates
        self.staleness: list[int] = []
        self.blocked_s = [0.0] * workers
        self.progress = env.event()
        self.done = env.event()

    def ahead(self, i: int) -> bool:
        return self.clocks[i] - min(self.clocks) > self.bound

    def applied(self, i: int, read: int) -> None:
        self.staleness.append(self.version - read)
        self.version += 1
        self.clocks[i] += 1
        self.progress.succeed()
        self.progress = self.env.event()
        if len(self.staleness) == self.target:
            self.done.succeed()


def _transfer(server: _Server, seconds: float) -> Generator[Any, Any, None]:
    if seconds <= 0:
        return
    with server.link.request() as req:
        yield req
        yield server.env.timeout(seconds)


def _worker(server: _Server, i: int, w: AsyncWorker, apply_s: float) -> Generator[Any, Any, None]:
    env = server.env
    while not server.done.triggered:
        while server.ahead(i):
            t0 = env.now
            yield server.progress
            server.blocked_s[i] += env.now - t0
        yield from _transfer(server, w.pull_s)
        read = server.version
        yield env.timeout(w.compute_s)
        yield from _transfer(server, w.push_s + apply_s)  # received and applied in turn
        if server.done.triggered:
            return
        server.applied(i, read)


def simulate_async(
    workers: Sequence[AsyncWorker], *, bound: int, updates: int, apply_s: float = 0.0
) -> AsyncResult:
    """Run until `updates` gradients have been applied."""
    if not workers:
        raise SimplanError("asynchronous data parallelism needs at least one worker")
    if bound < 0:
        raise SimplanError(f"the staleness bound must be >= 0, got {bound}")
    if not 0 < updates <= MAX_UPDATES:
        raise SimplanError(f"updates must be in 1..{MAX_UPDATES}, got {updates}")
    env = simpy.Environment()
    server = _Server(env, len(workers), bound, updates)
    for i, w in enumerate(workers):
        env.process(_worker(server, i, w, apply_s))
    env.run(until=server.done)
    duration = env.now
    stale = tuple(server.staleness)
    return AsyncResult(
        bound=bound,
        updates=updates,
        duration_s=duration,
        updates_per_s=updates / duration if duration > 0 else float("inf"),
        staleness=stale,
        staleness_mean=sum(stale) / len(stale),
        staleness_max=max(stale),
        staleness_histogram=dict(sorted(Counter(stale).items())),
        updates_per_worker=tuple(server.clocks),
        blocked_s=tuple(server.blocked_s),
    )


def workers_for_step(
    graph: ModelGraph,
    cluster: Any,
    config: ParallelConfig,
    step: SimResult,
    placement: Sequence[int] | None = None,
    slowdown: Mapping[int, float] | None = None,
) -> tuple[list[AsyncWorker], float]:
    """The workers of an asynchronous run of `config` (one per DP replica) and the server's
    seconds per update, from the synchronous step `step` simulated for the same configuration.

    A worker's gradient takes the step's compute and recomputation time, scaled by the peak
    FLOP/s of the device the step was costed on over that of the worker's own device (a mixed
    cluster has slower replicas). The server sits on replica 0's device and applies each
    gradient in the step's optimizer time; a push or pull moves the model's parameters in the
    gradient-reduction dtype over the topology's point-to-point path (0 for replica 0).
    slowdown: device -> factor (>= 1) on its gradient time, a straggler for what-if studies."""
    if config.tp > 1 or config.pp > 1:
        raise SimplanError(
            f"--staleness simulates asynchronous data parallelism of whole-model replicas; it "
            f"needs --tp 1 --pp 1, not tp {config.tp} pp {config.pp}"
        )
    devices = list(placement) if placement else list(range(config.dp))
    stage = step.devices[0]
    costed = cluster.device_model(stage.device).peak(config.dtype)
    nbytes = graph.trainable_params * DTYPE_BYTES[config.grad_reduce_dtype]
    server = devices[0]
    slow = dict(slowdown or {})
    if any(not f >= 1.0 for f in slow.values()):
        raise SimplanError(f"a straggler's slowdown must be >= 1, got {slow}")
    workers = [
        AsyncWorker(
            compute_s=(stage.compute_s + stage.recompute_s)
            * costed
            / cluster.device_model(d).peak(config.dtype)
            * slow.get(d, 1.0),
            pull_s=cluster.transfer_time(server, d, nbytes),
            push_s=cluster.transfer_time(d, server, nbytes),
        )
        for d in devices
    ]
    return workers, stage.optimizer_s


def simulate_async_step(
    graph: ModelGraph,
    cluster: Any,
    config: ParallelConfig,
    step: SimResult,
    placement: Sequence[int] | None = None,
    slowdown: Mapping[int, float] | None = None,
) -> AsyncResult:
    """Asynchronous DP of `config` with its staleness bound, UPDATES_PER_WORKER updates per
    worker (at most MAX_SIM_UPDATES in all)."""
    workers, apply_s = workers_for_step(graph, cluster, config, step, placement, slowdown)
    updates = min(UPDATES_PER_WORKER * len(workers), MAX_SIM_UPDATES)
    return simulate_async(workers, bound=config.staleness, updates=updates, apply_s=apply_s)
