"""How a training job is split: the parallel degrees and the knobs of one training step."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from simplan.errors import SimplanError
from simplan.limits import (  # devices of a cluster, samples per step, tokens per sample
    MAX_DEVICES,
    MAX_GLOBAL_BATCH,
    MAX_SEQ_LEN,
    check_global_batch,
)
from simplan.units import DTYPE_BYTES, MiB, check_dtype

if TYPE_CHECKING:
    from simplan.model_graph import ModelGraph

SCHEDULES = ("gpipe", "1f1b", "interleaved")
RECOMPUTE = ("none", "selective", "full")
ZERO_STAGES = (0, 1, 2, 3)
COMPRESSION = ("none", "fp16", "bf16", "powersgd")
OFFLOAD = ("none", "optimizer")
MAX_SYNC_PERIOD = 1 << 20  # steps between model averages (local SGD) or of staleness
MAX_POWERSGD_RANK = 1024

# the largest values any real job has, with room to spare (beyond them a value is a typo)
MAX_DEGREE = MAX_DEVICES  # devices in one parallel dimension
MAX_SAMPLES = MAX_GLOBAL_BATCH  # samples in a micro-batch: at most a global batch
MAX_VIRTUAL_STAGES = 1024


@dataclass(frozen=True, kw_only=True)
class Knob:
    """How a configuration field is set from the command line (`--field-name`): its help text
    and valid values (lo..hi for a whole number, or one of `choices`). The flags of every verb
    are made from these (simplan/commands/config_flags.py)."""

    help: str
    lo: int = 0
    hi: int = 0
    choices: tuple[Any, ...] = ()


def _knob(default: Any, help: str, **limits: Any) -> Any:
    return field(default=default, metadata={"knob": Knob(help=help, **limits)})


@dataclass(frozen=True, kw_only=True)
class ParallelConfig:
    """One training configuration.

    dp, tp, pp: data-, tensor- and pipeline-parallel degrees (world size = dp * tp * pp).
    micro_batch: samples per micro-batch per data-parallel replica.
    global_batch: samples per optimizer step over all replicas.
    seq_len: tokens per sample (0: the model's own).
    schedule: pipeline schedule, 'gpipe', '1f1b' or 'interleaved' (needs virtual_stages > 1).
    virtual_stages: model chunks per pipeline rank for the interleaved schedule.
    zero: 0 (DDP), 1 (optimizer states sharded), 2 (+ gradients), 3 (+ parameters, FSDP).
    recompute: activation recomputation, 'none', 'selective' (attention core) or 'full'.
    dtype: 'bf16', 'fp16' (mixed precision with fp32 master weights) or 'fp32'.
    sequence_parallel: Megatron sequence parallelism inside TP groups.
    bucket_bytes: DDP gradient bucket size (torch's default is 25 MiB).
    overlap_grad_reduce: start each bucket's gradient sync as soon as its gradients exist, during
        the last backward pass (torch DDP); False syncs after the whole backward (Megatron-LM's
        2021 local DDP).
    reduce_dtype: dtype of gradient reductions ('' = dtype; Megatron-LM and FSDP's default mixed
        precision reduce in 'fp32').
    stages: optional layer-index boundaries: stage i holds layers [stages[i], stages[i+1]).
    compress: data-parallel gradient compression (DDP communication hooks): 'none', 'fp16',
        'bf16' or 'powersgd' (low-rank, rank `powersgd_rank`, with error feedback).
    powersgd_rank: the rank of PowerSGD's gradient approximation.
    local_sgd: local SGD period H: replicas step on their own gradients and average their
        parameters every H steps (1: every step's gradients are all-reduced, plain DP).
    staleness: asynchronous data parallelism with bounded staleness s: a replica's gradients
        may be applied up to s updates after the parameters they were computed on (0: sync).
    offload: 'optimizer' keeps optimizer states (and the step) in host memory, ZeRO-Offload /
        FSDP2 CPUOffloadPolicy style; 'none' keeps everything on the device.
    """

    dp: int = _knob(1, "data-parallel degree (default: the rest)", lo=1, hi=MAX_DEGREE)
    tp: int = _knob(1, "tensor-parallel degree", lo=1, hi=MAX_DEGREE)
    pp: int = _knob(1, "pipeline-parallel degree", lo=1, hi=MAX_DEGREE)
    micro_batch: int = _knob(1, "samples per micro-batch", lo=1, hi=MAX_SAMPLES)
    global_batch: int = _knob(1, "samples per optimizer step", lo=1, hi=MAX_GLOBAL_BATCH)
    seq_len: int = _knob(0, "tokens per sample (model's own)", lo=0, hi=MAX_SEQ_LEN)
    schedule: str = _knob("1f1b", "pipeline schedule", choices=SCHEDULES)
    virtual_stages: int = _knob(1, "chunks per rank (interleaved)", lo=1, hi=MAX_VIRTUAL_STAGES)
    zero: int = _knob(0, "ZeRO stage", choices=ZERO_STAGES)
    recompute: str = _knob("none", "activation recomputation", choices=RECOMPUTE)
    dtype: str = _knob("bf16", "bf16, fp16 or fp32", choices=tuple(DTYPE_BYTES))
    sequence_parallel: bool = _knob(False, "Megatron sequence parallelism inside TP groups")
    compress: str = _knob("none", "DP gradient compression", choices=COMPRESSION)
    powersgd_rank: int = _knob(1, "PowerSGD rank (with --compress powersgd)", lo=1,
                               hi=MAX_POWERSGD_RANK)  # fmt: skip
    local_sgd: int = _knob(1, "local SGD: average parameters every H steps (1: off)", lo=1,
                           hi=MAX_SYNC_PERIOD)  # fmt: skip
    staleness: int = _knob(0, "async DP: bounded gradient staleness (0: sync)", lo=0,
                           hi=MAX_SYNC_PERIOD)  # fmt: skip
    offload: str = _knob("none", "keep optimizer states in host memory", choices=OFFLOAD)
    bucket_bytes: int = 25 * MiB
    overlap_grad_reduce: bool = True
    reduce_dtype: str = ""
    stages: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in (
            "dp",
            "tp",
            "pp",
            "micro_batch",
            "global_batch",
            "virtual_stages",
            "bucket_bytes",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise SimplanError(f"{name} must be a positive integer, got {value!r}")
        check_global_batch(self.global_batch)
        if self.seq_len < 0:
            raise SimplanError(f"seq_len must be >= 0, got {self.seq_len}")
        if self.schedule not in SCHEDULES:
            raise SimplanError(
                f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"
            )
        if self.recompute not in RECOMPUTE:
            raise SimplanError(
                f"recompute must be one of {', '.join(RECOMPUTE)}, got {self.recompute!r}"
            )
        if self.zero not in (0, 1, 2, 3):
            raise SimplanError(f"zero must be 0, 1, 2 or 3, got {self.zero!r}")
        check_dtype(self.dtype)
        if self.reduce_dtype:
            check_dtype(self.reduce_dtype)
        self._check_update_knobs()
        if self.schedule == "interleaved" and self.virtual_stages < 2:
            raise SimplanError("the interleaved schedule needs --virtual-stages >= 2")
        if self.schedule != "interleaved" and self.virtual_stages != 1:
            raise SimplanError("--virtual-stages > 1 needs --schedule interleaved")
        per_replica, rest = divmod(self.global_batch, self.dp)
        if rest:
            raise SimplanError(
                f"global batch {self.global_batch} is not divisible by "
                f"dp {self.dp}; choose a multiple of {self.dp}"
            )
        if per_replica % self.micro_batch:
            raise SimplanError(
                f"micro-batch {self.micro_batch} does not divide the per-replica "
                f"batch {per_replica} (global batch {self.global_batch} / dp "
                f"{self.dp})"
            )
        if self.schedule == "interleaved" and self.num_microbatches % self.pp:
            raise SimplanError(
                f"the interleaved schedule needs the number of micro-batches "
                f"({self.num_microbatches}) to be a multiple of pp {self.pp}"
            )

    def _check_update_knobs(self) -> None:
        """Gradient compression, local SGD, staleness and offload: valid values, and at most
        one way of changing how replicas synchronise."""
        if self.compress not in COMPRESSION:
            raise SimplanError(
                f"compress must be one of {', '.join(COMPRESSION)}, got {self.compress!r}"
            )
        if self.offload not in OFFLOAD:
            raise SimplanError(f"offload must be one of {', '.join(OFFLOAD)}, got {self.offload!r}")
        for name in ("powersgd_rank", "local_sgd"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise SimplanError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.staleness, int) or self.staleness < 0:
            raise SimplanError(f"staleness must be >= 0, got {self.staleness!r}")
        chosen = [
            flag
            for flag, on in (
                ("--compress", self.compress != "none"),
                ("--local-sgd", self.local_sgd > 1),
                ("--staleness", self.staleness > 0),
            )
            if on
        ]
        if len(chosen) > 1:
            raise SimplanError(
                f"{' and '.join(chosen)} are different ways to synchronise replicas; choose one"
            )
        if self.powersgd_rank != 1 and self.compress != "powersgd":
            raise SimplanError("--powersgd-rank needs --compress powersgd")
        if chosen and self.zero > 1:
            raise SimplanError(
                f"{chosen[0]} changes how DDP replicas synchronise; it needs --zero 0 or 1, "
                f"not {self.zero}"
            )

    @property
    def grad_reduce_dtype(self) -> str:
        return self.reduce_dtype or self.dtype

    @property
    def world_size(self) -> int:
        return self.dp * self.tp * self.pp

    @property
    def num_microbatches(self) -> int:
        return self.global_batch // (self.dp * self.micro_batch)

    @property
    def chunks(self) -> int:
        """Model chunks in the pipeline: pp * virtual_stages."""
        return self.pp * self.virtual_stages

    def describe(self) -> str:
        parts = [
            f"dp{self.dp} tp{self.tp} pp{self.pp}",
            f"mb{self.micro_batch}",
            f"gb{self.global_batch}",
            self.schedule,
        ]
        if self.virtual_stages > 1:
            parts.append(f"v{self.virtual_stages}")
        if self.zero:
            parts.append(f"zero{self.zero}")
        if self.recompute != "none":
            parts.append(f"recompute-{self.recompute}")
        if self.sequence_parallel:
            parts.append("sp")
        if self.compress != "none":
            rank = f"-r{self.powersgd_rank}" if self.compress == "powersgd" else ""
            parts.append(f"compress-{self.compress}{rank}")
        if self.local_sgd > 1:
            parts.append(f"local-sgd-{self.local_sgd}")
        if self.staleness:
            parts.append(f"staleness-{self.staleness}")
        if self.offload != "none":
            parts.append(f"offload-{self.offload}")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["stages"] = list(self.stages)
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> ParallelConfig:
        known = {f.name for f in dataclasses.fields(ParallelConfig)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SimplanError(f"unknown configuration field(s) {', '.join(unknown)}")
        d = dict(d)
        d["stages"] = tuple(d.get("stages", ()))
        try:
            return ParallelConfig(**d)
        except TypeError as exc:
            raise SimplanError(f"bad configuration: {exc}") from None

    def replace(self, **changes: Any) -> ParallelConfig:
        return dataclasses.replace(self, **changes)


def check_world(config: ParallelConfig, devices: int) -> None:
    """The degrees must use exactly the cluster's devices."""
    if config.world_size != devices:
        raise SimplanError(
            f"dp {config.dp} x tp {config.tp} x pp {config.pp} = {config.world_size} ranks, but "
            f"the cluster has {devices} devices; change the degrees or use --nodes / "
            f"--gpus-per-node to size the cluster"
        )


def tp_mismatch(graph: ModelGraph, tp: int) -> str:
    """Why tensor parallelism of degree tp cannot split the model's layers ("" if it can): tp
    must divide every layer's attention heads, KV heads and hidden size where it records them."""
    if tp <= 1:
        return ""
    for what in ("heads", "KV heads", "hidden size"):  # the most telling reason first
        for layer in graph.layers:
            n = _tp_dims(layer.attrs).get(what, 0)
            if isinstance(n, int) and n and n % tp:
                return f"tp {tp} does not divide the {n} {what} of layer {layer.name}"
    return ""


def _tp_dims(attrs: dict[str, Any]) -> dict[str, Any]:
    heads = attrs.get("num_heads") or 0
    return {
        "heads": heads,
        "KV heads": attrs.get("num_kv_heads") or heads,
        "hidden size": attrs.get("hidden_size") or 0,
    }


def check_config_for_model(config: ParallelConfig, graph: ModelGraph) -> None:
    """The configuration must be able to split this model: a one-line SimplanError if not."""
    check_trainable_weights(graph)
    why = tp_mismatch(graph, config.tp)
    if why:
        raise SimplanError(f"{why}; choose a tp that divides it")


def balanced_stages(weights: list[float], chunks: int) -> tuple[int, ...]:
    """Contiguous split of layers into `chunks` parts minimizing the largest part's weight
    (exact dynamic program; ties go to the earliest boundary). Returns boundaries of length
    chunks + 1, starting with 0 and ending with len(weights)."""
    n = len(weights)
    if chunks > n:
        raise SimplanError(
            f"{chunks} pipeline chunks (pp x virtual stages) but the model has "
            f"only {n} layers; lower pp or the virtual stages"
        )
    prefix = [0.0]
    for w in weights:
        prefix.append(prefix[-1] + w)
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(chunks + 1)]
    cut = [[0] * (n + 1) for _ in range(chunks + 1)]
    best[0][0] = 0.0
    for k in range(1, chunks + 1):
        for j in range(k, n - (chunks - k) + 1):
            for i in range(k - 1, j):
                cost = max(best[k - 1][i], prefix[j] - prefix[i])
                if cost < best[k][j] - 1e-12:
                    best[k][j], cut[k][j] = cost, i
    bounds = [n]
    for k in range(chunks, 0, -1):
        bounds.append(cut[k][bounds[-1]])
    return tuple(reversed(bounds))


def check_trainable_weights(graph: ModelGraph) -> None:
    """A training step of a model whose weights are quantized is not modelled (their gradients,
    optimizer states and update): refuse it in one line."""
    quantize = graph.meta.get("quantize")
    if quantize:
        raise SimplanError(
            f"model {graph.name} has {quantize} linear weights: training steps of quantized "
            "weights are not modelled; plan and simulate without --quantize (its weight bytes "
            "and forward time: benchmarks/quantized_forward.py)"
        )
