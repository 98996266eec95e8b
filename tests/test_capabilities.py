"""Device capabilities: the simulator follows the provider it is given, not the device kind."""

from __future__ import annotations

import dataclasses

import pytest

from simplan.capabilities import (
    CapabilityProvider,
    DeviceCapabilities,
    device_capabilities,
    match_profile,
    provider_for,
)
from simplan.devices import DeviceModel
from simplan.parallel import ParallelConfig
from simplan.sim.run import simulate
from simplan.topology import load_cluster
from simplan.topology.comm_calibration import FrameworkCosts

CPU_PP = ParallelConfig(pp=2, micro_batch=64, global_batch=256, dtype="fp32")  # 4 micro-batches
GPU_DP = ParallelConfig(dp=8, micro_batch=1, global_batch=8, dtype="bf16")


def _with(**changes: bool) -> CapabilityProvider:
    """A provider: the cluster's capabilities of each device, with `changes`."""

    def provide(device: DeviceModel) -> DeviceCapabilities:
        return dataclasses.replace(device_capabilities(device), **changes)  # type: ignore[arg-type]

    return provide


def test_a_cpu_overlaps_nothing_and_a_gpu_overlaps_its_communication() -> None:
    cpu = load_cluster("localhost-cpu").device_model(0)
    gpu = load_cluster("dgx-h100").device_model(0)
    on_cpu, on_gpu = device_capabilities(cpu), device_capabilities(gpu)
    assert (on_cpu.comm_overlaps_compute, on_cpu.p2p_on_compute_stream) == (False, True)
    assert (on_gpu.comm_overlaps_compute, on_gpu.p2p_on_compute_stream) == (True, False)
    assert on_cpu.describes_profile("cpu") and not on_cpu.describes_profile("cuda:0")
    assert on_gpu.describes_profile("cuda") and not on_gpu.describes_profile("cpu")
    assert match_profile(None, gpu) is None


def test_the_cluster_provider_carries_the_cluster_framework_costs() -> None:
    costs = FrameworkCosts(pp_action_s=1e-3)
    cluster = load_cluster("localhost-cpu").with_framework(costs)
    assert provider_for(cluster)(cluster.device_model(0)).framework == costs


def test_without_overlap_a_gpu_step_is_its_busy_time_plus_all_its_communication() -> None:
    """The same GPUs told that communication takes the compute stream: nothing is hidden, so
    the step is exactly compute + optimizer + communication, and longer than with overlap."""
    cluster = load_cluster("dgx-h100")
    overlapped = simulate("gpt3-125m", cluster, GPU_DP, record=False)
    serial = simulate(
        "gpt3-125m", cluster, GPU_DP, record=False, capabilities=_with(comm_overlaps_compute=False)
    )
    (d,) = serial.devices
    assert serial.step_time_s == pytest.approx(d.busy_s + d.exposed_comm_s, rel=1e-12)
    assert serial.step_time_s > overlapped.step_time_s
    assert overlapped.devices[0].busy_s == pytest.approx(d.busy_s, rel=1e-12)


def test_pipeline_actions_cost_only_where_they_hold_the_compute_stream() -> None:
    cluster = load_cluster("localhost-cpu").with_framework(FrameworkCosts(pp_action_s=1e-3))
    plain = simulate("mlp", cluster.with_framework(FrameworkCosts()), CPU_PP, record=False)
    charged = simulate("mlp", cluster, CPU_PP, record=False)
    issued = simulate(
        "mlp", cluster, CPU_PP, record=False, capabilities=_with(p2p_on_compute_stream=False)
    )
    assert charged.step_time_s > plain.step_time_s
    assert issued.step_time_s == plain.step_time_s
