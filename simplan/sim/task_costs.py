"""Seconds of the parts of a multi-task step (simplan.sim.multitask): layer times from the cost
model at the samples each device runs, DDP gradient synchronisation on the topology (bucketed,
overlapped with the backward where the device overlaps communication), the optimizer step, and
point-to-point transfers of the trunk's features."""

from __future__ import annotations

from typing import Any

from simplan.capabilities import match_profile, provider_for
from simplan.costmodel import optimizer_step_s
from simplan.devices import DeviceModel
from simplan.model_graph import ModelGraph
from simplan.parallel import ParallelConfig
from simplan.profiles import Profile
from simplan.sim.assemble import FP32, MIXED, slowest_device
from simplan.sim.costs import layer_steps
from simplan.tasks import TaskSet
from simplan.units import dtype_bytes


class TaskCosts:
    """Layer seconds from the cost model, per device model and sample count (cached)."""

    def __init__(
        self, graph: ModelGraph, cluster: Any, config: ParallelConfig, profile: Profile | None
    ) -> None:
        self.graph, self.cluster, self.config, self.profile = graph, cluster, config, profile
        self.provide = provider_for(cluster)
        self.cache: dict[tuple[str, int], dict[str, tuple[float, float, str, float]]] = {}

    def device(self, devices: tuple[int, ...]) -> DeviceModel:
        return slowest_device(self.cluster, list(devices))

    def layers(
        self, device: DeviceModel, samples: int
    ) -> dict[str, tuple[float, float, str, float]]:
        """Per layer: forward s, backward s (with recomputation), cost source, activation
        bytes kept for the backward, for `samples` samples on the device."""
        key = (device.name, samples)
        if key not in self.cache:
            cfg = self.config.replace(dp=1, micro_batch=samples, global_batch=samples)
            prof = match_profile(self.profile, device, self.provide(device))
            self.cache[key] = {
                s.name: (s.fwd_s, s.bwd_s + s.recompute_s, s.source, s.activation_bytes)
                for s in layer_steps(self.graph, device, cfg, prof)
            }
        return self.cache[key]

    def part(
        self, names: tuple[str, ...], devices: tuple[int, ...], samples: int
    ) -> tuple[float, float, list[str]]:
        """(forward s, backward s, sources) of these layers on the slowest of the devices."""
        times = self.layers(self.device(devices), samples)
        fwd = sum(times[n][0] for n in names)
        bwd = sum(times[n][1] for n in names)
        return fwd, bwd, [times[n][2] for n in names]

    def params(self, names: tuple[str, ...]) -> float:
        return float(sum(self.graph.layer(n).params for n in names))

    def memory_bytes(
        self, parts: tuple[tuple[tuple[str, ...], int], ...], devices: tuple[int, ...]
    ) -> float:
        """Peak bytes on a device holding the layers of `parts` ((layers, samples)): weights,
        gradients and Adam states per parameter (simplan.sim.assemble's MIXED or FP32) and
        every activation kept for the backward (the peak is at the end of the forward)."""
        per_param = FP32 if self.config.dtype == "fp32" else MIXED
        device = self.device(devices)
        params = sum(self.params(names) for names, _ in parts)
        acts = sum(self.layers(device, b)[n][3] for names, b in parts for n in names)
        return params * sum(per_param.values()) + acts

    def optimizer_s(self, names: tuple[str, ...], devices: tuple[int, ...]) -> float:
        params = self.params(names)
        device = self.device(devices)
        prof = match_profile(self.profile, device, self.provide(device))
        if prof is not None and prof.dtype == self.config.dtype and self.graph.params:
            measured = prof.optimizer_step_s(params / self.graph.params, None)
            if measured is not None:
                return float(measured)
        return optimizer_step_s(params, device, self.config.dtype)

    def grad_sync_s(self, names: tuple[str, ...], group: tuple[int, ...]) -> float:
        """DDP's all-reduce of these layers' gradients over the group, whole (not overlapped)."""
        return self.ddp_sync(((names, 1),), group)[0]

    def ddp_sync(
        self, parts: tuple[tuple[tuple[str, ...], int], ...], group: tuple[int, ...]
    ) -> tuple[float, float]:
        """(whole, exposed) seconds of DDP's gradient sync over the group of the layers of
        `parts` ((layers, samples) in the order their forward runs): buckets of bucket_bytes
        in backward order, each an all-reduce on the topology plus the framework's per-bucket
        cost, and its per-synchronisation cost once. Where communication overlaps compute
        (and overlap_grad_reduce), a bucket's all-reduce starts once its layers' backward is
        done and the one before it is over, beside the rest of the backward (run back to back:
        a wait inside the backward only hides more); exposed is what outlasts the backward."""
        if len(group) < 2:
            return 0.0, 0.0
        order = [(n, b) for names, b in reversed(parts) for n in reversed(names)]
        width = dtype_bytes(self.config.grad_reduce_dtype)
        device = self.device(group)
        framework = self.provide(device).framework
        buckets: list[tuple[float, float]] = []  # (backward done at, bytes)
        done_s = pending = 0.0
        for name, samples in order:
            done_s += self.layers(device, samples)[name][1]
            pending += self.graph.layer(name).params * width
            if pending >= self.config.bucket_bytes:
                buckets.append((done_s, pending))
                pending = 0.0
        if pending > 0:
            buckets.append((done_s, pending))
        comm_end = whole = 0.0
        for ready_s, nbytes in buckets:
            each = self.cluster.collective_time("all_reduce", nbytes, group)
            each += framework.ddp_bucket_cost_s(nbytes)
            whole += each
            comm_end = max(comm_end, ready_s) + each
        total = sum(b for _, b in buckets)
        tail = framework.ddp_sync_cost_s(total) if total > 0 else 0.0
        whole += tail
        if not self.config.overlap_grad_reduce or self.comm_blocks_compute(group):
            return whole, whole
        return whole, max(comm_end - done_s, 0.0) + tail

    def comm_blocks_compute(self, devices: tuple[int, ...]) -> bool:
        """Whether communication takes the compute stream on any of the devices (a CPU)."""
        return any(not self.provide(self.device((d,))).comm_overlaps_compute for d in devices)

    def send_s(self, src: tuple[int, ...], dst: tuple[int, ...], nbytes: float) -> float:
        """The slowest point-to-point transfer of `nbytes` between the first and last devices
        of src and of dst (groups are contiguous in device order, so their ends are the
        farthest apart), with the framework's cost of a send where it holds the compute
        stream."""
        caps = self.provide(self.device(src))
        extra = caps.framework.pp_action_s if caps.p2p_on_compute_stream else 0.0
        ends = [(s, d) for s in {src[0], src[-1]} for d in {dst[0], dst[-1]}]
        return max(self.cluster.transfer_time(s, d, nbytes) for s, d in ends) + extra


def cut_bytes_per_sample(graph: ModelGraph, tasks: TaskSet, task: str) -> float:
    """Bytes per sample of the trunk's outputs that the task's head reads."""
    head = set(tasks.heads[task])
    trunk = set(tasks.trunk)
    feeding = {s for s, d in graph.edges if s in trunk and d in head}
    return float(sum(graph.layer(s).output_bytes for s in feeding))
