"""The tensor-memory probe against hand counts and against torch's own trackers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from simplan.runtime.memory import MemoryProbe, StepMemory


def _step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor):
    def forward_backward() -> None:
        nn.functional.cross_entropy(model(x), y).backward()

    def optimizer_step() -> None:
        opt.step()
        opt.zero_grad(set_to_none=True)

    return forward_backward, optimizer_step


def _trained(probe: MemoryProbe, build) -> tuple:
    """Build and warm up (two steps) under the probe's tracking."""
    with probe.tracking():
        model, x, y = build()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
        fb, st = _step(model, opt, x, y)
        for _ in range(2):
            fb()
            st()
    return model, opt, x, y, fb, st


def test_linear_parts_are_four_times_the_parameters() -> None:
    """One Linear(100, 50) with Adam: parameters P = (100*50 + 50) * 4 B, gradients P, Adam's two
    moments 2P plus one fp32 step counter per tensor; the data is the rest of the build."""
    torch.manual_seed(0)
    probe = MemoryProbe(torch.device("cpu"))

    def build():
        return nn.Linear(100, 50), torch.randn(8, 100), torch.randint(0, 50, (8,))

    _model, opt, x, y, fb, st = _trained(probe, build)
    mem = probe.measure(fb, st, opt)
    p = (100 * 50 + 50) * 4
    assert mem.parts_bytes["parameters"] == p
    assert mem.parts_bytes["gradients"] == p
    assert mem.parts_bytes["optimizer"] == 2 * p + 2 * 4
    assert mem.parts_bytes["other"] == x.nbytes + y.nbytes
    assert mem.parts_bytes["activations"] > 0
    assert sum(mem.parts_bytes.values()) == mem.tracked_peak_bytes
    assert mem.peak_phase == "forward_backward"
    assert mem.peak_reserved_bytes == 0


def test_the_step_after_frees_what_it_allocated() -> None:
    """After the measured step only the steady state is live: parameters, Adam state, data."""
    torch.manual_seed(0)
    probe = MemoryProbe(torch.device("cpu"))

    def build():
        return nn.Linear(64, 32), torch.randn(4, 64), torch.randint(0, 32, (4,))

    _model, opt, x, y, fb, st = _trained(probe, build)
    probe.measure(fb, st, opt)
    p = (64 * 32 + 32) * 4
    assert probe.tracker.current_bytes == p + 2 * p + 2 * 4 + x.nbytes + y.nbytes


@pytest.fixture
def one_rank_group(tmp_path: Path) -> Iterator[None]:
    dist.init_process_group(
        "gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1
    )
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.mark.usefixtures("one_rank_group")
def test_ddp_mlp_agrees_with_torch_memtracker_and_profiler_to_the_byte() -> None:
    """The MLP 784-128-10 under DDP at batch 64: the probe's peak equals MemTracker's peak
    (which is told about the model, optimizer and data), and its rise over the step equals the
    rise torch.profiler(profile_memory=True) sees from the allocator's events."""
    from torch.distributed._tools.mem_tracker import MemTracker
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    probe = MemoryProbe(torch.device("cpu"))

    def build():
        mlp = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
        ddp = nn.parallel.DistributedDataParallel(mlp)
        return ddp, torch.randn(64, 784), torch.randint(0, 10, (64,))

    model, opt, x, y, fb, st = _trained(probe, build)
    tracker = MemTracker()
    tracker.track_external(model, opt, x, y)
    with tracker:
        mem = probe.measure(fb, st, opt)
    theirs = tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]
    assert mem.tracked_peak_bytes == theirs
    params = (784 * 128 + 128 + 128 * 10 + 10) * 4
    assert mem.parts_bytes["parameters"] == params
    # DDP's gradient bucket (a flat copy of the gradients) is built with the model
    assert mem.parts_bytes["other"] == x.nbytes + y.nbytes + params

    before = probe.tracker.current_bytes
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        again = probe.measure(fb, st, opt)
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = rise = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        rise = max(rise, live)
    assert again.tracked_peak_bytes - before == rise
    assert again.tracked_peak_bytes == mem.tracked_peak_bytes


def test_step_memory_refuses_unknown_phase_and_part() -> None:
    with pytest.raises(ValueError, match="peak_phase"):
        StepMemory(tracked_peak_bytes=1, peak_phase="warmup")
    with pytest.raises(ValueError, match="parts_bytes"):
        StepMemory(parts_bytes={"weights": 1}, tracked_peak_bytes=1, peak_phase="build")
