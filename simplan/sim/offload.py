"""CPU offload of the optimizer (--offload optimizer), ZeRO-Offload style: what moves where.

With offload, a rank's optimizer states and fp32 master weights (its ZeRO shard of them) live in
host memory, so its device memory drops by exactly its `optimizer` part. Every step each rank
sends its gradient shard to the host (device-to-host, per DDP bucket or FSDP unit as soon as it
is reduced: overlapped with the backward, as ZeRO-Offload does), the host CPU runs the Adam step
(not overlapped: no delayed parameter update is modelled) and the updated 16-bit parameters come
back (host-to-device) before the ZeRO-1/2 all-gather. Host memory per rank: the optimizer part
plus an fp32 copy of the gradients (ZeRO-Offload's 16 bytes per parameter for mixed precision:
fp32 parameters, momentum, variance and gradients), plus the fp32 parameters themselves for fp32
training (whose device weights are the master weights). Every device of a node offloads at once,
so they share its host memory, cores and host links (simplan.topology.host).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simplan.errors import SimplanError
from simplan.parallel import ParallelConfig
from simplan.topology.host import HostSpec
from simplan.units import GiB, dtype_bytes

HOST_GRAD_BYTES = 4.0  # fp32 gradients on the host, what the CPU Adam step reads


def offloads(config: ParallelConfig) -> bool:
    return config.offload == "optimizer"


def host_of(cluster: Any, device: int) -> HostSpec:
    """The host of `device`, or a one-line error why the optimizer cannot be offloaded there."""
    group = cluster.node_group(device)
    if group.device.kind != "gpu":
        raise SimplanError(
            f"--offload optimizer needs GPU devices: {cluster.name}'s {group.name} runs on "
            f"{group.device.name}, whose memory is the host's already"
        )
    if group.host is None:
        raise SimplanError(
            f"--offload optimizer needs the host of node group {group.name!r} of {cluster.name}: "
            "add host = { memory_gib, cores, memory_bandwidth_GBps, link } (docs/cluster-spec.md)"
        )
    return group.host


def host_bytes_per_param(config: ParallelConfig, optimizer_bytes: float) -> float:
    """Host bytes per parameter of a rank's shard: optimizer states and master weights, fp32
    gradients, and for fp32 training the fp32 parameters."""
    master = dtype_bytes("fp32") if config.dtype == "fp32" else 0.0
    return optimizer_bytes + HOST_GRAD_BYTES + master


def grad_shard_bytes(config: ParallelConfig, reduced_bytes: float) -> float:
    """What a rank sends to the host of `reduced_bytes` of synchronised gradients: with ZeRO >= 1
    only its shard (its optimizer's share)."""
    return reduced_bytes / (config.replicas if config.zero >= 1 else 1)


@dataclass(frozen=True, kw_only=True)
class HostStep:
    """One rank's offload work per step: bytes each way and the host's Adam step."""

    d2h_bytes: float
    h2d_bytes: float
    d2h_s: float
    h2d_s: float
    optimizer_s: float


def host_step(
    config: ParallelConfig, host: HostSpec, devices_per_node: int, shard_params: float
) -> HostStep:
    """The offload work of a rank whose optimizer holds `shard_params` parameters."""
    d2h = shard_params * dtype_bytes(config.grad_reduce_dtype)
    h2d = shard_params * dtype_bytes(config.dtype)
    link = host.device_link_Bps()
    return HostStep(
        d2h_bytes=d2h,
        h2d_bytes=h2d,
        d2h_s=d2h / link,
        h2d_s=h2d / link,
        optimizer_s=shard_params / host.adam_params_per_s(devices_per_node, config.dtype),
    )


def check_host_memory(cluster: Any, per_device_bytes: dict[int, float]) -> dict[int, float]:
    """Host bytes per node from each device's; a one-line error where a node's host is too
    small. Returns the bytes per node."""
    per_node: dict[int, float] = {}
    for d, nbytes in per_device_bytes.items():
        node = cluster.device(d).node
        per_node[node] = per_node.get(node, 0.0) + nbytes
    for node, nbytes in sorted(per_node.items()):
        host = host_of(cluster, cluster.node_devices(node)[0])
        if nbytes > host.memory_bytes:
            raise SimplanError(
                f"--offload optimizer needs {nbytes / GiB:.1f} GiB of host memory on node {node} "
                f"of {cluster.name}, which has {host.memory_bytes / GiB:.1f} GiB; shard the "
                "optimizer over more devices (--zero, more nodes) or do without offload"
            )
    return per_node
