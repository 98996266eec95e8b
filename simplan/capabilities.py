"""What a device can do while it trains, as the simulator needs it: the cost provider.

The simulator and its assembler know no device kinds. They ask a provider (a function from a
device model to its `DeviceCapabilities`) whether communication overlaps compute, where the
pipeline framework's sends and receives run, which profiles describe the device, and what the
training framework adds to each collective. The provider is built once per cluster from its
device models and its calibration (`provider_for`); what-if studies pass their own.

Where the capabilities come from:
- A GPU runs collectives (NCCL) and pipeline transfers on streams of their own, beside the
  compute stream, and issues the pipeline framework's P2P operations asynchronously from the host.
- A CPU rank of gloo has no separate engine: collectives and sends compete with compute for the
  same cores (../shared/STACK.md: "little overlap of compute and communication"), and the
  pipeline framework's work per send or receive is done on the rank's compute stream.
- Profiles measured on the host CPU (device "cpu") describe CPU device models; profiles measured
  on an accelerator describe the accelerators they name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from simplan.devices import DeviceModel, describes
from simplan.profiles import Profile
from simplan.topology.comm_calibration import NO_FRAMEWORK_COSTS, FrameworkCosts

HOST_DEVICE = "cpu"  # a profile's `device` when it was measured on the host CPU


@dataclass(frozen=True, kw_only=True)
class DeviceCapabilities:
    """How one device runs a training step, for the cost model and the engine.

    comm_overlaps_compute: collectives run on a stream of their own, beside compute; else they
        take the compute stream and nothing overlaps.
    p2p_on_compute_stream: the pipeline framework's work per send or receive (framework
        `pp_action_s`) holds the compute stream; else it is issued asynchronously and free.
    profiled_on_host: the profiles that describe this device were measured on the host CPU.
    framework: what the training framework (DDP, FSDP2, DTensor, pipelining) adds to the raw
        collectives, from the cluster's calibration.
    """

    comm_overlaps_compute: bool
    p2p_on_compute_stream: bool
    profiled_on_host: bool
    framework: FrameworkCosts = NO_FRAMEWORK_COSTS

    def describes_profile(self, profile_device: str) -> bool:
        """Whether a profile measured on `profile_device` ('cpu', 'cuda', 'cuda:1') was measured
        on the kind of device these capabilities describe."""
        return (profile_device == HOST_DEVICE) == self.profiled_on_host


CapabilityProvider = Callable[[DeviceModel], DeviceCapabilities]


def device_capabilities(
    device: DeviceModel, framework: FrameworkCosts = NO_FRAMEWORK_COSTS
) -> DeviceCapabilities:
    """The capabilities of `device` (module docstring), with the framework costs given."""
    host = device.kind == "cpu"
    return DeviceCapabilities(
        comm_overlaps_compute=not host,
        p2p_on_compute_stream=host,
        profiled_on_host=host,
        framework=framework,
    )


def provider_for(cluster: Any) -> CapabilityProvider:
    """The provider of a cluster: every device with the cluster's framework costs."""
    framework: FrameworkCosts = cluster.framework

    def provide(device: DeviceModel) -> DeviceCapabilities:
        return device_capabilities(device, framework)

    return provide


def match_profile(
    profile: Profile | None, device: DeviceModel, capabilities: DeviceCapabilities | None = None
) -> Profile | None:
    """The profile, if it was measured on the kind of device the model describes (its
    `capabilities`, by default `device_capabilities(device)`) and names that device."""
    caps = capabilities or device_capabilities(device)
    if profile is None or not caps.describes_profile(profile.device):
        return None
    return profile if describes(device, profile.device_name) else None
