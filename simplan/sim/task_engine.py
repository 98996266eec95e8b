"""The SimPy engine of one multi-task training step, on plain seconds (simplan.sim.multitask
computes them from the cost model and the topology).

Every device runs its work in this order (the runtime executes the same order):

- a trunk device (one data-parallel replica of the trunk): the trunk's forward; sends the
  trunk's features to every device of every head placed on its own group (one slice per head
  device); the forward of each replicated head, in task order; their backward, in reverse; waits
  for the feature gradients of every placed head (the trunk's backward needs every task's
  gradient); the trunk's backward; the gradient all-reduce of the trunk and the replicated heads
  over the trunk devices; the optimizer step;
- a head device (a device of a head's own group): waits for the features of every trunk device,
  runs the head's forward and backward, sends the feature gradients back to every trunk device,
  all-reduces the head's gradients within its group, and runs the head's optimizer step.

A device computes one thing at a time (its compute stream, a SimPy resource). A transfer holds
the sender's output channel and the receiver's input channel; where communication does not
overlap compute (`comm_blocks_compute`: a CPU, where gloo's thread competes with compute) it
holds the compute stream of both ends too, and the sender waits for it. Collectives start once
every member is there. Resources are always requested in one global order, so nothing deadlocks.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field

import simpy

from simplan.sim.engine import Event


@dataclass(frozen=True, kw_only=True)
class HeadTimes:
    """One task head's seconds on each device it runs on.

    devices: its own group, or () for a replicated head (it runs on every trunk device);
    fwd_s, bwd_s: its forward and backward over the samples one device gives it;
    send_s: one slice of features (and, back, of their gradients) between one trunk device and
        one head device; send_bytes: that slice's bytes;
    sync_s: the all-reduce of its gradients within its group (0 for a group of one, or
        replicated: synced with the trunk); optimizer_s: its optimizer step on one device.
    """

    task: str
    devices: tuple[int, ...]
    fwd_s: float
    bwd_s: float
    send_s: float = 0.0
    send_bytes: float = 0.0
    sync_s: float = 0.0
    optimizer_s: float = 0.0

    @property
    def replicated(self) -> bool:
        return not self.devices


@dataclass(frozen=True, kw_only=True)
class StepTimes:
    """Everything the engine needs: the trunk's devices and seconds, the heads', and whether
    communication takes the compute stream."""

    trunk_devices: tuple[int, ...]
    trunk_fwd_s: float
    trunk_bwd_s: float
    heads: tuple[HeadTimes, ...]
    trunk_sync_s: float = 0.0  # trunk + replicated heads, over the trunk devices: exposed
    trunk_sync_whole_s: float = 0.0  # the same, whole (reported, not simulated)
    trunk_optimizer_s: float = 0.0
    comm_blocks_compute: bool = False

    def __post_init__(self) -> None:
        if not self.trunk_devices:
            raise ValueError("trunk_devices: the trunk needs at least one device")
        taken = set(self.trunk_devices)
        for head in self.heads:
            if taken & set(head.devices):
                raise ValueError(f"head {head.task}: its devices also run the trunk")


@dataclass(frozen=True, kw_only=True)
class TaskTimeline:
    """One task's forward and backward on the devices that run it: start of the first,
    end of the last."""

    task: str
    fwd_start_s: float
    fwd_end_s: float
    bwd_start_s: float
    bwd_end_s: float


@dataclass(frozen=True, kw_only=True)
class EngineRun:
    step_s: float
    compute_s: dict[int, float]  # per device: seconds of compute
    comm_s: dict[int, float]  # per device: seconds of transfers and collectives
    timelines: tuple[TaskTimeline, ...]
    p2p_s: float  # the longest of the cut's transfers (one way)
    events: tuple[Event, ...] = field(default=(), repr=False)


class _Run:
    def __init__(self, times: StepTimes) -> None:
        self.t = times
        self.env = simpy.Environment()
        devices = sorted({*times.trunk_devices, *(d for h in times.heads for d in h.devices)})
        self.compute = {d: simpy.Resource(self.env) for d in devices}
        self.out = {d: simpy.Resource(self.env) for d in devices}
        self.inp = {d: simpy.Resource(self.env) for d in devices}
        self.busy = {d: 0.0 for d in devices}
        self.comm = {d: 0.0 for d in devices}
        self.events: list[Event] = []
        self.spans: dict[tuple[str, str], list[float]] = {}
        self.arrived: dict[tuple[str, int, int, str], simpy.Event] = {}
        self.barriers: dict[str, tuple[int, simpy.Event]] = {}
        self.ends: list[float] = []

    def _log(self, device: int, stream: str, name: str, cat: str, start: float) -> None:
        self.events.append((device, stream, name, cat, start, self.env.now))

    def _span(self, task: str, phase: str, start: float) -> None:
        lo_hi = self.spans.setdefault((task, phase), [start, self.env.now])
        lo_hi[0], lo_hi[1] = min(lo_hi[0], start), max(lo_hi[1], self.env.now)

    def hold(
        self, device: int, seconds: float, name: str, cat: str
    ) -> Generator[simpy.Event, None, float]:
        with self.compute[device].request() as req:
            yield req
            start: float = self.env.now
            yield self.env.timeout(seconds)
            self.busy[device] += seconds
            self._log(device, "compute", name, cat, start)
        return start

    def arrival(self, task: str, src: int, dst: int, way: str) -> simpy.Event:
        key = (task, src, dst, way)
        if key not in self.arrived:
            self.arrived[key] = self.env.event()
        return self.arrived[key]

    def transfer(self, task: str, src: int, dst: int, seconds: float, way: str) -> Generator:
        """A slice of features ('fwd') or of their gradients ('bwd') from src to dst."""
        held = [(0, d, self.compute[d]) for d in (src, dst)] if self.t.comm_blocks_compute else []
        held += [(1, src, self.out[src]), (2, dst, self.inp[dst])]
        reqs = []
        for _, _, resource in sorted(held, key=lambda x: (x[0], x[1])):
            req = resource.request()
            reqs.append((resource, req))
            yield req
        start = self.env.now
        yield self.env.timeout(seconds)
        for resource, req in reqs:
            resource.release(req)
        for d in (src, dst):
            self.comm[d] += seconds
            self._log(d, "p2p", f"{task} {way} {src}->{dst}", "p2p", start)
        self.arrival(task, src, dst, way).succeed()

    def collective(self, key: str, members: int, device: int, seconds: float) -> Generator:
        """Wait for every member, then all spend `seconds` in the collective."""
        count, done = self.barriers.get(key, (0, self.env.event()))
        self.barriers[key] = (count + 1, done)
        if count + 1 == members:
            self.env.process(self._finish_collective(done, seconds))
        start = self.env.now
        yield done
        wait_start = max(start, self.env.now - seconds)
        self.comm[device] += seconds
        self.events.append((device, "comm", key, "grad_sync", wait_start, self.env.now))

    def _finish_collective(self, done: simpy.Event, seconds: float) -> Generator:
        yield self.env.timeout(seconds)
        done.succeed()

    def sends(self, task: str, pairs: list[tuple[int, int]], seconds: float, way: str) -> Generator:
        """Transfers one after another where they take the compute stream, else all at once."""
        if self.t.comm_blocks_compute:
            for src, dst in pairs:
                yield self.env.process(self.transfer(task, src, dst, seconds, way))
            return
        for src, dst in pairs:
            self.env.process(self.transfer(task, src, dst, seconds, way))
        yield self.env.timeout(0)

    def trunk_device(self, r: int) -> Generator:
        t = self.t
        yield from self.hold(r, t.trunk_fwd_s, "trunk fwd", "forward")
        for head in t.heads:
            if not head.replicated:
                yield from self.sends(head.task, [(r, g) for g in head.devices], head.send_s, "fwd")
        mine = [h for h in t.heads if h.replicated]
        for head in mine:
            start = yield from self.hold(r, head.fwd_s, f"{head.task} fwd", "forward")
            self._span(head.task, "fwd", start)
        for head in reversed(mine):
            start = yield from self.hold(r, head.bwd_s, f"{head.task} bwd", "backward")
            self._span(head.task, "bwd", start)
        for head in t.heads:
            for g in head.devices:
                yield self.arrival(head.task, g, r, "bwd")
        yield from self.hold(r, t.trunk_bwd_s, "trunk bwd", "backward")
        if len(t.trunk_devices) > 1:
            yield from self.collective("trunk grad sync", len(t.trunk_devices), r, t.trunk_sync_s)
        yield from self.hold(r, t.trunk_optimizer_s, "trunk optimizer", "optimizer")
        self.ends.append(self.env.now)

    def head_device(self, head: HeadTimes, g: int) -> Generator:
        for r in self.t.trunk_devices:
            yield self.arrival(head.task, r, g, "fwd")
        start = yield from self.hold(g, head.fwd_s, f"{head.task} fwd", "forward")
        self._span(head.task, "fwd", start)
        start = yield from self.hold(g, head.bwd_s, f"{head.task} bwd", "backward")
        self._span(head.task, "bwd", start)
        pairs = [(g, r) for r in self.t.trunk_devices]
        yield from self.sends(head.task, pairs, head.send_s, "bwd")
        if len(head.devices) > 1:
            yield from self.collective(f"{head.task} grad sync", len(head.devices), g, head.sync_s)
        yield from self.hold(g, head.optimizer_s, f"{head.task} optimizer", "optimizer")
        self.ends.append(self.env.now)


def run_task_step(times: StepTimes) -> EngineRun:
    """Simulate one step (module docstring)."""
    run = _Run(times)
    for r in times.trunk_devices:
        run.env.process(run.trunk_device(r))
    for head in times.heads:
        for g in head.devices:
            run.env.process(run.head_device(head, g))
    run.env.run()
    timelines = tuple(
        TaskTimeline(
            task=h.task,
            fwd_start_s=run.spans[(h.task, "fwd")][0],
            fwd_end_s=run.spans[(h.task, "fwd")][1],
            bwd_start_s=run.spans[(h.task, "bwd")][0],
            bwd_end_s=run.spans[(h.task, "bwd")][1],
        )
        for h in times.heads
    )
    sends = [h.send_s for h in times.heads if not h.replicated]
    return EngineRun(
        step_s=max(run.ends),
        compute_s=run.busy,
        comm_s=run.comm,
        timelines=timelines,
        p2p_s=max(sends, default=0.0),
        events=tuple(sorted(run.events, key=lambda e: (e[4], e[0]))),
    )
