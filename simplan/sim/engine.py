"""The SimPy engine: pipeline ranks run their schedules on compute and communication streams.

One representative device per pipeline rank is simulated (data-parallel replicas and the ranks of
a tensor-parallel group do the same work at the same time, so one stands for all; their
collectives are costed on the real groups of the topology). Each rank has a compute stream and a
communication stream (SimPy resources); pipeline sends hold the channel between two ranks, so
concurrent transfers on it queue. On ranks whose device does not overlap communication with
compute (`RankPlan.overlap`, from the device's capabilities: simplan.capabilities), collectives
take the compute stream: nothing overlaps. The engine knows no device kinds.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field

import simpy

from simplan.deadline import Deadline, TimeLimitReached
from simplan.sim.schedules import Op, schedule

Event = tuple[int, str, str, str, float, float]  # rank, stream, name, category, start, end


@dataclass(frozen=True, kw_only=True)
class Bucket:
    """A slice of the last micro-batch's backward: compute these seconds, then compress the
    bucket's gradients on the compute stream for `encode_s` (a DDP communication hook), then
    sync it for `comm_s` (collectives and the hook's work between them)."""

    compute_s: float
    comm_s: float
    host_s: float = 0.0  # CPU offload: its reduced gradients' copy to the host, after comm_s
    encode_s: float = 0.0


@dataclass(frozen=True, kw_only=True)
class ChunkPlan:
    index: int
    rank: int
    fwd_s: float
    fwd_tp_s: float
    bwd_s: float
    bwd_tp_s: float
    recompute_s: float
    recompute_tp_s: float
    send_fwd_s: float  # p2p of this chunk's output to the next chunk
    send_bwd_s: float  # p2p of the input gradient to the previous chunk
    activation_bytes: float
    transient_bytes: float  # live during this chunk's backward (full recomputation)
    buckets: tuple[Bucket, ...]  # gradient sync during the last backward (DDP / ZeRO-1/2)
    layer_fwd_s: tuple[float, ...] = ()  # FSDP: per-layer compute and collectives
    layer_bwd_s: tuple[float, ...] = ()
    layer_gather_s: tuple[float, ...] = ()
    layer_scatter_s: tuple[float, ...] = ()
    layer_host_s: tuple[float, ...] = ()  # FSDP + CPU offload: each unit's gradients to the host
    fwd_p2p_framework_s: float = 0.0  # the pipeline framework's sends and receives of one
    bwd_p2p_framework_s: float = 0.0  # forward (backward) of this chunk, on the compute stream
    fwd_tp_hidden_s: float = 0.0  # TP, CP and (--moe-overlap) MoE communication hidden
    bwd_tp_hidden_s: float = 0.0  # behind this chunk's compute: logged on the 'tp' stream


@dataclass(frozen=True, kw_only=True)
class RankPlan:
    rank: int
    device: int
    optimizer_s: float
    after_optimizer_comm_s: float  # ZeRO-1/2 all-gather of updated parameters
    overlap: bool  # a communication stream separate from compute
    framework_s: float = 0.0  # once per step: the pipeline schedule's own work
    host_in_s: float = 0.0  # CPU offload: the updated parameters' copy back to the device
    optimizer_on_host: bool = False  # CPU offload: optimizer_s is the host CPU's Adam step


@dataclass(frozen=True, kw_only=True)
class EnginePlan:
    pp: int
    microbatches: int
    schedule: str
    virtual_stages: int
    chunks: tuple[ChunkPlan, ...]
    ranks: tuple[RankPlan, ...]
    fsdp: bool


@dataclass
class RankStats:
    compute_s: float = 0.0
    recompute_s: float = 0.0
    optimizer_s: float = 0.0
    exposed_comm_s: float = 0.0
    finish_s: float = 0.0
    finished: bool = False
    act_bytes: float = 0.0
    peak_act_bytes: float = 0.0
    memory_series: list[tuple[float, float]] = field(default_factory=list)


class Engine:
    def __init__(
        self, plan: EnginePlan, record: bool = True, deadline: Deadline | None = None
    ) -> None:
        self.plan = plan
        self.deadline = deadline
        self.env = simpy.Environment()
        self.record = record
        self.events: list[Event] = []
        self.compute = [simpy.Resource(self.env, 1) for _ in plan.ranks]
        self.comm = [
            simpy.Resource(self.env, 1) if r.overlap else self.compute[r.rank] for r in plan.ranks
        ]
        self.host = [simpy.Resource(self.env, 1) for _ in plan.ranks]  # device<->host links
        self.channels: dict[tuple[int, int], simpy.Resource] = {}
        self.arrived: dict[tuple[str, int, int], simpy.Event] = {}
        self.pending: list[list[simpy.Event]] = [[] for _ in plan.ranks]
        self.stats = [RankStats() for _ in plan.ranks]
        self.ops = [
            schedule(plan.schedule, r, plan.pp, plan.microbatches, plan.virtual_stages)
            for r in range(plan.pp)
        ]
        self.last_b = [self._last_backward(ops) for ops in self.ops]
        self.event_count = 0

    @staticmethod
    def _last_backward(ops: list[Op]) -> dict[int, int]:
        last: dict[int, int] = {}
        for kind, mb, chunk in ops:
            if kind == "B":
                last[chunk] = mb
        return last

    def run(self) -> float:
        for r in range(self.plan.pp):
            self.env.process(self._rank(r))
        self.env.run()
        unfinished = [r for r, s in enumerate(self.stats) if not s.finished]
        if unfinished:  # a schedule whose dependencies cannot be met: a bug, not bad input
            raise RuntimeError(f"simulation stalled: pipeline ranks {unfinished} never finished")
        return max(s.finish_s for s in self.stats)

    # ---------------------------------------------------------------- helpers

    def _log(self, rank: int, stream: str, name: str, cat: str, start: float, end: float) -> None:
        self.event_count += 1
        if self.record and end > start:
            self.events.append((rank, stream, name, cat, start, end))

    def _arrival(self, key: tuple[str, int, int]) -> simpy.Event:
        if key not in self.arrived:
            self.arrived[key] = self.env.event()
        return self.arrived[key]

    def _hold(
        self,
        rank: int,
        segments: list[tuple[str, str, float]],
        hidden: tuple[str, float] = ("", 0.0),
    ) -> Generator:
        """Run (name, category, seconds) segments back to back on the compute stream; `hidden`
        (name, seconds): communication that runs during the first segment, overlapped."""
        with self.compute[rank].request() as req:
            yield req
            if hidden[1] > 0:
                now = self.env.now
                self._log(rank, "tp", hidden[0], "tp-comm-hidden", now, now + hidden[1])
            for name, cat, seconds in segments:
                if seconds <= 0:
                    continue
                start = self.env.now
                yield self.env.timeout(seconds)
                self._log(rank, "compute", name, cat, start, self.env.now)
                self._account(rank, cat, seconds)

    def _account(self, rank: int, cat: str, seconds: float) -> None:
        s = self.stats[rank]
        if cat in ("forward", "backward"):
            s.compute_s += seconds
        elif cat == "recompute":
            s.recompute_s += seconds
        elif cat == "optimizer":
            s.optimizer_s += seconds
        else:
            s.exposed_comm_s += seconds

    def _collective(self, rank: int, name: str, seconds: float) -> simpy.Event:
        """Queue a collective on the rank's communication stream; returns its completion."""
        done = self.env.event()
        self.env.process(self._run_collective(rank, name, seconds, done))
        return done

    def _run_collective(self, rank: int, name: str, seconds: float, done: simpy.Event) -> Generator:
        with self.comm[rank].request() as req:
            yield req
            start = self.env.now
            yield self.env.timeout(seconds)
            stream = "comm" if self.plan.ranks[rank].overlap else "compute"
            self._log(rank, stream, name, "comm", start, self.env.now)
            if not self.plan.ranks[rank].overlap:
                self.stats[rank].exposed_comm_s += seconds
        done.succeed()

    def _to_host(self, rank: int, name: str, seconds: float, after: simpy.Event | None) -> None:
        """Queue a device-to-host copy on the rank's host link once `after` is done; the step's
        end waits for it."""
        done = self.env.event()
        self.env.process(self._run_to_host(rank, name, seconds, after, done))
        self.pending[rank].append(done)

    def _run_to_host(
        self, rank: int, name: str, seconds: float, after: simpy.Event | None, done: simpy.Event
    ) -> Generator:
        if after is not None:
            yield after
        with self.host[rank].request() as req:
            yield req
            start = self.env.now
            yield self.env.timeout(seconds)
            self._log(rank, "host", name, "offload", start, self.env.now)
        done.succeed()

    def _from_host(self, rank: int, seconds: float) -> Generator:
        """The updated parameters' host-to-device copy: the device waits for it."""
        with self.compute[rank].request() as busy, self.host[rank].request() as link:
            yield busy
            yield link
            start = self.env.now
            yield self.env.timeout(seconds)
            self._log(rank, "host", "params H2D", "offload", start, self.env.now)
            self.stats[rank].exposed_comm_s += seconds

    def _send(
        self, src: int, dst: int, key: tuple[str, int, int], seconds: float, name: str
    ) -> Generator:
        channel = self.channels.setdefault((src, dst), simpy.Resource(self.env, 1))
        with channel.request() as req:
            yield req
            start = self.env.now
            yield self.env.timeout(seconds)
            self._log(src, "p2p", name, "p2p", start, self.env.now)
        self._arrival(key).succeed()

    def _memory(self, rank: int, delta: float) -> None:
        s = self.stats[rank]
        s.act_bytes += delta
        s.peak_act_bytes = max(s.peak_act_bytes, s.act_bytes)
        if self.record:
            s.memory_series.append((self.env.now, s.act_bytes))

    # ---------------------------------------------------------------- a rank

    def _rank(self, r: int) -> Generator:
        for kind, mb, c in self.ops[r]:
            if self.deadline is not None and self.deadline.expired():
                raise TimeLimitReached(f"the time limit stopped the simulation at {kind}{mb}")
            chunk = self.plan.chunks[c]
            if kind == "F":
                yield from self._forward(r, mb, chunk)
            else:
                yield from self._backward(r, mb, chunk)
        yield from self._finish(r)

    def _forward(self, r: int, mb: int, chunk: ChunkPlan) -> Generator:
        if chunk.index > 0:
            yield self._arrival(("F", mb, chunk.index))
        label = f"F{mb} c{chunk.index}"
        if self.plan.fsdp:
            yield from self._fsdp_pass(
                r, label, "forward", chunk.layer_fwd_s, chunk.layer_gather_s, ()
            )
            yield from self._hold(r, [(f"{label} tp", "tp-comm", chunk.fwd_tp_s)])
        else:
            yield from self._hold(
                r,
                [(label, "forward", chunk.fwd_s), (f"{label} tp", "tp-comm", chunk.fwd_tp_s)],
                hidden=(f"{label} tp overlapped", chunk.fwd_tp_hidden_s),
            )
        if chunk.fwd_p2p_framework_s > 0:  # no empty hold where there is none
            yield from self._hold(r, [(f"{label} p2p", "pp-comm", chunk.fwd_p2p_framework_s)])
        self._memory(r, chunk.activation_bytes)
        self._forward_send(r, mb, chunk)

    def _forward_send(self, r: int, mb: int, chunk: ChunkPlan) -> None:
        nxt = chunk.index + 1
        if nxt >= len(self.plan.chunks):
            return
        dst = self.plan.chunks[nxt].rank
        key = ("F", mb, nxt)
        if dst == r or chunk.send_fwd_s <= 0:
            self._arrival(key).succeed()
        else:
            self.env.process(self._send(r, dst, key, chunk.send_fwd_s, f"send F{mb}"))

    def _backward(self, r: int, mb: int, chunk: ChunkPlan) -> Generator:
        if chunk.index < len(self.plan.chunks) - 1:
            yield self._arrival(("B", mb, chunk.index))
        label = f"B{mb} c{chunk.index}"
        self._memory(r, chunk.transient_bytes)
        if chunk.recompute_s > 0:
            yield from self._hold(
                r,
                [
                    (f"R{mb} c{chunk.index}", "recompute", chunk.recompute_s),
                    (f"R{mb} tp", "tp-comm", chunk.recompute_tp_s),
                ],
            )
        last = self.last_b[r][chunk.index] == mb
        if self.plan.fsdp:
            yield from self._fsdp_pass(
                r,
                label,
                "backward",
                chunk.layer_bwd_s,
                chunk.layer_gather_s,
                chunk.layer_scatter_s,
                chunk.layer_host_s if last else (),
            )
            yield from self._hold(r, [(f"{label} tp", "tp-comm", chunk.bwd_tp_s)])
        elif last and chunk.buckets:
            yield from self._bucketed_backward(r, label, chunk)
        else:
            yield from self._hold(
                r,
                [(label, "backward", chunk.bwd_s), (f"{label} tp", "tp-comm", chunk.bwd_tp_s)],
                hidden=(f"{label} tp overlapped", chunk.bwd_tp_hidden_s),
            )
        if chunk.bwd_p2p_framework_s > 0:  # no empty hold where there is none
            yield from self._hold(r, [(f"{label} p2p", "pp-comm", chunk.bwd_p2p_framework_s)])
        self._memory(r, -chunk.activation_bytes - chunk.transient_bytes)
        if chunk.index > 0:
            dst = self.plan.chunks[chunk.index - 1].rank
            key = ("B", mb, chunk.index - 1)
            if dst == r or chunk.send_bwd_s <= 0:
                self._arrival(key).succeed()
            else:
                self.env.process(self._send(r, dst, key, chunk.send_bwd_s, f"send B{mb}"))

    def _bucketed_backward(self, r: int, label: str, chunk: ChunkPlan) -> Generator:
        """The last backward of a chunk: gradients become ready bucket by bucket (reverse
        layer order) and each bucket's sync starts at once on the communication stream."""
        tp_share = chunk.bwd_tp_s / max(len(chunk.buckets), 1)
        for i, bucket in enumerate(chunk.buckets):
            yield from self._hold(
                r,
                [
                    (f"{label} b{i}", "backward", bucket.compute_s),
                    (f"{label} tp", "tp-comm", tp_share),
                    (f"compress b{i}", "compress", bucket.encode_s),
                ],
            )
            sync = None
            if bucket.comm_s > 0:
                sync = self._collective(r, f"grad sync b{i}", bucket.comm_s)
                self.pending[r].append(sync)
            if bucket.host_s > 0:
                self._to_host(r, f"grad D2H b{i}", bucket.host_s, sync)

    def _fsdp_pass(
        self,
        r: int,
        label: str,
        cat: str,
        compute: tuple[float, ...],
        gathers: tuple[float, ...],
        scatters: tuple[float, ...],
        hosts: tuple[float, ...] = (),
    ) -> Generator:
        """ZeRO-3 / FSDP: gather each layer's parameters (queued ahead, so the next layer's
        gather overlaps this layer's compute), compute, then reduce-scatter its gradients."""
        ready = [self._collective(r, f"all-gather {label} l{i}", g) for i, g in enumerate(gathers)]
        for i, seconds in enumerate(compute):
            if not ready[i].triggered:
                start = self.env.now
                yield ready[i]
                self._log(r, "compute", f"wait gather l{i}", "wait", start, self.env.now)
                self.stats[r].exposed_comm_s += self.env.now - start
            yield from self._hold(r, [(f"{label} l{i}", cat, seconds)])
            if scatters:
                scatter = self._collective(r, f"reduce-scatter {label} l{i}", scatters[i])
                self.pending[r].append(scatter)
                if hosts and hosts[i] > 0:
                    self._to_host(r, f"grad D2H {label} l{i}", hosts[i], scatter)

    def _finish(self, r: int) -> Generator:
        plan = self.plan.ranks[r]
        if self.pending[r]:
            start = self.env.now
            yield simpy.AllOf(self.env, self.pending[r])
            if plan.overlap:
                self._log(r, "compute", "wait grad sync", "wait", start, self.env.now)
                self.stats[r].exposed_comm_s += self.env.now - start
        optimizer = "optimizer (host CPU)" if plan.optimizer_on_host else "optimizer"
        yield from self._hold(
            r,
            [
                ("pipeline schedule", "pp-comm", plan.framework_s),
                (optimizer, "optimizer", plan.optimizer_s),
            ],
        )
        if plan.host_in_s > 0:
            yield from self._from_host(r, plan.host_in_s)
        yield from self._hold(r, [("all-gather params", "zero-comm", plan.after_optimizer_comm_s)])
        self.stats[r].finish_s = self.env.now
        self.stats[r].finished = True


def run_engine(
    plan: EnginePlan, record: bool = True, deadline: Deadline | None = None
) -> tuple[float, list[RankStats], list[Event], int]:
    engine = Engine(plan, record, deadline)
    step = engine.run()
    return step, engine.stats, engine.events, engine.event_count
