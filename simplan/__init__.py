"""simplan: plan and simulate distributed deep-learning training.

The public API is loaded lazily so that importing simplan (and planning or simulating from
stored graphs and profiles) does not import torch:

    import simplan
    graph = simplan.load_model("gpt3-1.3b")              # ModelGraph (counted, cached)
    prof = simplan.profile("gpt3-125m", device="cpu", micro_batch=1, seq_len=512)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from simplan.devices import DeviceModel
    from simplan.model_graph import Layer, ModelGraph
    from simplan.parallel import ParallelConfig
    from simplan.planner import Plan
    from simplan.profiles import Profile
    from simplan.sim.result import SimResult
    from simplan.topology import Cluster

__all__ = [
    "Cluster",
    "DeviceModel",
    "Layer",
    "ModelGraph",
    "ParallelConfig",
    "Plan",
    "Profile",
    "SimResult",
    "SimplanError",
    "get_device",
    "load_cluster",
    "load_model",
    "plan",
    "profile",
    "read_profile",
    "simulate",
    "write_profile",
]

_LAZY = {
    "load_model": "simplan.sources",
    "ModelGraph": "simplan.model_graph",
    "Layer": "simplan.model_graph",
    "Profile": "simplan.profiles",
    "read_profile": "simplan.profiles",
    "write_profile": "simplan.profiles",
    "DeviceModel": "simplan.devices",
    "get_device": "simplan.devices",
    "SimplanError": "simplan.errors",
    "ParallelConfig": "simplan.parallel",
    "simulate": "simplan.sim.run",
    "SimResult": "simplan.sim.result",
    "load_cluster": "simplan.topology",
    "Cluster": "simplan.topology",
    "plan": "simplan.planner",
    "Plan": "simplan.planner",
}


def profile(
    model: str,
    *,
    device: str = "cpu",
    micro_batch: int = 1,
    seq_len: int | None = None,
    dtype: str = "fp32",
    warmup: int = 2,
    repeats: int = 10,
) -> Profile:
    """Count and time every layer of `model` (preset, TOML path or file.py:factory) on the local
    `device` ('cpu' or 'cuda'); returns a Profile (write it with simplan.write_profile)."""
    from simplan.timing import measure

    return measure(
        model,
        device=device,
        micro_batch=micro_batch,
        seq_len=seq_len,
        dtype=dtype,
        warmup=warmup,
        repeats=repeats,
    )


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'simplan' has no attribute {name!r}")
