"""Profiles: per-layer forward and backward times measured on a device, with their metadata.

A Profile belongs to one model, device, dtype, micro-batch and sequence length. It is keyed by the
layers' identity keys, so identical layers (every block of a GPT) are measured once. Profiles are
JSON files under traces/profiles/<device-name>/ and never need torch to be read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from simplan.errors import SimplanError
from simplan.io import read_versioned_json, schema_header, write_json_atomic
from simplan.limits import MAX_SEQ_LEN
from simplan.model_graph import GRAPH_TABLE, ModelGraph
from simplan.parallel import MAX_SAMPLES
from simplan.schema import Anything, Float, Int, MapOf, Nullable, Str, Table, validate
from simplan.units import DTYPE_BYTES

PROFILE_SCHEMA_VERSION = 1

_TIMING = Table(
    {
        "fwd_s": Float(min=0.0, max=1e6),
        "bwd_s": Float(min=0.0, max=1e6),
        "repeats": Int(min=1, max=10**9),
    },
    required=("fwd_s", "bwd_s", "repeats"),
    fix="profile the model again",
)
_SECONDS = Nullable(Float(min=0.0, max=1e6))
PROFILE_DOCUMENT = Table(
    {
        "schema": Anything(),
        "device": Str(nonempty=True),
        "device_name": Str(nonempty=True),
        "dtype": Str(choices=tuple(DTYPE_BYTES)),
        "micro_batch": Int(min=1, max=MAX_SAMPLES),
        "seq_len": Int(min=0, max=MAX_SEQ_LEN),
        "meta": MapOf(Anything()),
        "whole_model": Nullable(_TIMING),
        "optimizer_s": _SECONDS,
        "optimizer_fixed_s": _SECONDS,
        "optimizer_tensor_s": _SECONDS,
        "timings": MapOf(_TIMING),
        "model": GRAPH_TABLE,
    },
    required=("device", "device_name", "dtype", "micro_batch", "seq_len", "timings", "model"),
    fix="profile the model again",
)


@dataclass(frozen=True, kw_only=True)
class LayerTiming:
    """Median forward and backward time of one layer at the profile's micro-batch."""

    fwd_s: float
    bwd_s: float
    repeats: int

    def __post_init__(self) -> None:
        if self.fwd_s < 0 or self.bwd_s < 0:
            raise ValueError("layer times must be >= 0")


def _at_most_one(whole_s: float, layers_s: float) -> float:
    return whole_s / layers_s if layers_s > whole_s > 0 else 1.0


@dataclass(frozen=True, kw_only=True)
class Profile:
    model: ModelGraph
    device: str  # 'cpu' or 'cuda'
    device_name: str  # e.g. 'NVIDIA H200' or the CPU's model name
    dtype: str
    micro_batch: int
    seq_len: int
    timings: dict[str, LayerTiming]  # by layer identity key
    whole_model: LayerTiming | None = None  # the whole model's fwd/bwd in the same run
    optimizer_s: float | None = None  # one Adam step over all the model's parameters
    optimizer_fixed_s: float | None = None  # one Adam step over a single-element tensor
    optimizer_tensor_s: float | None = None  # what each further (one-element) tensor adds
    meta: dict[str, Any] = field(default_factory=dict)

    def timing(self, layer_name: str) -> LayerTiming | None:
        return self.timings.get(self.model.layer(layer_name).identity)

    def optimizer_step_s(self, fraction: float, tensors: int | None = None) -> float | None:
        """Measured Adam step for `fraction` of the model's parameters held in `tensors`
        parameter tensors: the fixed cost, each tensor's own cost (the fused kernel runs per
        tensor: a shard of every tensor costs as many launches as the whole), and the share
        of the per-parameter rest. Without a per-tensor measurement, or a tensor count, the
        fixed cost plus the share of the rest. None without an optimizer measurement."""
        if self.optimizer_s is None or self.optimizer_fixed_s is None:
            return None
        fixed, rest = self.optimizer_fixed_s, self.optimizer_s - self.optimizer_fixed_s
        total = self._param_tensors
        if self.optimizer_tensor_s is None or tensors is None or total < 1:
            return fixed + fraction * rest
        per_tensor = min(self.optimizer_tensor_s, rest / max(total - 1, 1))
        per_param = rest - (total - 1) * per_tensor
        return fixed + max(tensors - 1, 0) * per_tensor + fraction * per_param

    def layer_sums_s(self) -> tuple[float, float]:
        """(forward, backward) summed over all layers, identical layers counted as often as they
        occur."""
        return self._layer_sums

    @cached_property
    def _param_tensors(self) -> int:
        return sum(layer.param_tensors for layer in self.model.layers)

    @cached_property
    def _layer_sums(self) -> tuple[float, float]:
        timed = [self.timings[x.identity] for x in self.model.layers if x.identity in self.timings]
        return sum(t.fwd_s for t in timed), sum(t.bwd_s for t in timed)

    @property
    def layer_sum_s(self) -> float:
        return sum(self.layer_sums_s())

    def layer_scale(self) -> tuple[float, float]:
        """(forward, backward) factors <= 1 that bring the layers' times down to the whole
        model's when they sum to more: the per-layer hooks that time a layer add their own work
        to it (tens of microseconds a layer on a CPU), which the whole model's unhooked passes do
        not have; on layers that small the sum can exceed the whole by a quarter (the MLP at
        micro-batch 64). 1 without a whole-model time or when the layers sum to less."""
        if self.whole_model is None:
            return 1.0, 1.0
        fwd, bwd = self.layer_sums_s()
        return _at_most_one(self.whole_model.fwd_s, fwd), _at_most_one(self.whole_model.bwd_s, bwd)

    def glue_s(self) -> tuple[float, float]:
        """(forward, backward) seconds of the whole model outside its layers (the loss, work in
        the parent module between layers), per micro-batch of the profile; never negative."""
        if self.whole_model is None:
            return 0.0, 0.0
        fwd, bwd = self.layer_sums_s()
        return max(self.whole_model.fwd_s - fwd, 0.0), max(self.whole_model.bwd_s - bwd, 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": schema_header("profile", PROFILE_SCHEMA_VERSION),
            "device": self.device,
            "device_name": self.device_name,
            "dtype": self.dtype,
            "micro_batch": self.micro_batch,
            "seq_len": self.seq_len,
            "meta": self.meta,
            "whole_model": None if self.whole_model is None else vars(self.whole_model),
            "optimizer_s": self.optimizer_s,
            "optimizer_fixed_s": self.optimizer_fixed_s,
            "optimizer_tensor_s": self.optimizer_tensor_s,
            "timings": {k: vars(v) for k, v in self.timings.items()},
            "model": self.model.to_dict(),
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Profile:
        whole = d.get("whole_model")
        return Profile(
            model=ModelGraph.from_dict(d["model"]),
            device=d["device"],
            device_name=d["device_name"],
            dtype=d["dtype"],
            micro_batch=int(d["micro_batch"]),
            seq_len=int(d["seq_len"]),
            timings={k: LayerTiming(**v) for k, v in d["timings"].items()},
            whole_model=None if whole is None else LayerTiming(**whole),
            optimizer_s=d.get("optimizer_s"),
            optimizer_fixed_s=d.get("optimizer_fixed_s"),
            optimizer_tensor_s=d.get("optimizer_tensor_s"),
            meta=dict(d.get("meta", {})),
        )


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "device"


def default_profile_path(profile: Profile, root: str | Path = "traces/profiles") -> Path:
    name = f"{profile.model.name}-{profile.dtype}-mb{profile.micro_batch}-s{profile.seq_len}.json"
    return Path(root) / slug(profile.device_name) / name


def write_profile(profile: Profile, path: str | Path | None = None) -> Path:
    return write_json_atomic(profile.to_dict(), path or default_profile_path(profile))


def read_profile(path: str | Path) -> Profile:
    data = read_versioned_json(path, "profile", PROFILE_SCHEMA_VERSION)
    data = validate(data, PROFILE_DOCUMENT, origin=str(path))
    try:
        return Profile.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise SimplanError(f"{path}: damaged profile ({exc}); profile the model again") from None
