"""How a training job is split: the parallel degrees and the knobs of one training step."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from simplan.errors import SimplanError
from simplan.fp8 import FP8_RECIPES, check_recipe
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
RECOMPUTE = ("none", "selective", "op", "full")
ZERO_STAGES = (0, 1, 2, 3)
CP_COMM = ("ring", "all_gather")
COMPRESSION = ("none", "fp16", "bf16", "powersgd")
OFFLOAD = ("none", "optimizer")
DISPATCHERS = ("alltoall", "deepep")  # how MoE tokens travel (simplan.sim.experts)
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

    dp, tp, pp, cp: data-, tensor-, pipeline- and context-parallel degrees (world size =
        dp * tp * pp * cp). Context parallelism splits each sample's sequence over cp ranks.
    ep, etp: expert- and expert-tensor-parallel degrees of mixture-of-experts layers, folded
        into the dp * cp * tp ranks of a pipeline stage as Megatron-Core does: the experts are
        split over ep ranks and each expert's matrices over etp ranks; the remaining
        dp * cp * tp / (ep * etp) ranks (the expert-data-parallel group) hold copies of the
        same experts and all-reduce their gradients among themselves only.
    moe_dispatcher: 'alltoall' sends every (token, expert) copy straight to its rank; 'deepep'
        (DeepSeek's DeepEP) sends a token once to each other node it is routed to, over the
        network, and fans it out inside the node over NVLink.
    micro_batch: samples per micro-batch per data-parallel replica.
    global_batch: samples per optimizer step over all replicas.
    seq_len: tokens per sample (0: the model's own).
    schedule: pipeline schedule, 'gpipe', '1f1b' or 'interleaved' (needs virtual_stages > 1).
    virtual_stages: model chunks per pipeline rank for the interleaved schedule.
    zero: 0 (DDP), 1 (optimizer states sharded), 2 (+ gradients), 3 (+ parameters, FSDP).
    recompute: activation recomputation, 'none', 'selective' (Megatron-LM's: the attention
        core), 'op' (torchtitan's per-op selective checkpointing: each block keeps its input
        and the outputs of attention and of every other aten.mm, simplan.op_policy) or 'full'
        (each transformer block keeps only its input and runs its forward again before its
        backward; the embedding and the head keep their activations, as in Megatron-LM,
        torchtitan and llm-foundry; a model without blocks: every layer).
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
    fp8: FP8 GEMMs in the linear layers with this scaling recipe: 'delayed', 'current' or
        'block' ('none': the training dtype throughout); see simplan.fp8.
    cp_comm: how context-parallel ranks share keys and values: 'ring' (passed around the ring,
        each transfer overlapped with the attention of the chunk before; Megatron p2p) or
        'all_gather' (gathered before attention, exposed).
    tp_overlap: hide the TP all-gathers and reduce-scatters behind the GEMMs they feed
        (Megatron-LM --tp-comm-overlap, torchtitan async TP); needs sequence parallelism.
    moe_overlap: hide the MoE dispatch and combine all-to-alls of one micro-batch behind the
        compute of another (Megatron-Core --overlap-moe-expert-parallel-comm, which runs one
        micro-batch's forward beside another's backward); needs ep > 1; see
        simplan.sim.experts.overlapped_ep_s.
    """

    dp: int = _knob(1, "data-parallel degree (default: the rest)", lo=1, hi=MAX_DEGREE)
    tp: int = _knob(1, "tensor-parallel degree", lo=1, hi=MAX_DEGREE)
    pp: int = _knob(1, "pipeline-parallel degree", lo=1, hi=MAX_DEGREE)
    cp: int = _knob(1, "context-parallel degree (splits the sequence)", lo=1, hi=MAX_DEGREE)
    cp_comm: str = _knob("ring", "context parallelism's K/V exchange", choices=CP_COMM)
    ep: int = _knob(1, "expert-parallel degree (MoE; carved out of dp x cp x tp)", lo=1,
                    hi=MAX_DEGREE)  # fmt: skip
    etp: int = _knob(1, "expert-tensor-parallel degree (MoE)", lo=1, hi=MAX_DEGREE)
    moe_dispatcher: str = _knob("alltoall", "MoE token dispatch across nodes: alltoall, or "
                                "deepep (one copy per node)", choices=DISPATCHERS)  # fmt: skip
    moe_overlap: bool = _knob(False, "overlap the MoE all-to-alls of one micro-batch with "
                              "another's compute")  # fmt: skip
    micro_batch: int = _knob(1, "samples per micro-batch", lo=1, hi=MAX_SAMPLES)
    global_batch: int = _knob(1, "samples per optimizer step", lo=1, hi=MAX_GLOBAL_BATCH)
    seq_len: int = _knob(0, "tokens per sample (model's own)", lo=0, hi=MAX_SEQ_LEN)
    schedule: str = _knob("1f1b", "pipeline schedule", choices=SCHEDULES)
    virtual_stages: int = _knob(1, "chunks per rank (interleaved)", lo=1, hi=MAX_VIRTUAL_STAGES)
    zero: int = _knob(0, "ZeRO stage", choices=ZERO_STAGES)
    recompute: str = _knob(
        "none",
        "activation recomputation: selective (Megatron-LM's, the attention core), op "
        "(torchtitan's per-op selective checkpointing) or full",
        choices=RECOMPUTE,
    )
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
    fp8: str = _knob("none", "FP8 linear-layer GEMMs: scaling recipe", choices=FP8_RECIPES)
    tp_overlap: bool = _knob(False, "overlap TP all-gather/reduce-scatter with the GEMMs")
    bucket_bytes: int = 25 * MiB
    overlap_grad_reduce: bool = True
    reduce_dtype: str = ""
    stages: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in (
            "dp",
            "tp",
            "pp",
            "cp",
            "ep",
            "etp",
            "micro_batch",
            "global_batch",
            "virtual_stages",
            "bucket_bytes",
            "powersgd_rank",
            "local_sgd",
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
        self._check_fp8_and_overlap()
        self._check_expert_degrees()
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

    def _check_expert_degrees(self) -> None:
        """ep x etp ranks hold one copy of the experts: they must tile a stage's dp x cp x tp
        ranks (Megatron-Core's folding: context parallelism splits the attention's tokens, and
        the MoE layers see the stage's ranks as edp x ep x etp)."""
        folded = self.ep * self.etp
        if self.moe_dispatcher not in DISPATCHERS:
            raise SimplanError(
                f"moe_dispatcher must be one of {', '.join(DISPATCHERS)}, got "
                f"{self.moe_dispatcher!r}"
            )
        if self.moe_overlap and self.ep == 1:
            raise SimplanError(
                "--moe-overlap hides the all-to-alls between expert-parallel ranks; give "
                "--ep > 1 or drop it"
            )
        if self.moe_dispatcher != "alltoall" and self.ep == 1:
            raise SimplanError(
                f"--moe-dispatcher {self.moe_dispatcher} dispatches tokens between expert-"
                f"parallel ranks; give --ep > 1 or drop it"
            )
        if (self.dp * self.cp * self.tp) % folded:
            raise SimplanError(
                f"ep {self.ep} x etp {self.etp} = {folded} must divide dp {self.dp} x cp "
                f"{self.cp} x tp {self.tp} = {self.dp * self.cp * self.tp} (experts are split "
                f"over the data-, context- and tensor-parallel ranks of a stage); choose ep and "
                f"etp that divide it"
            )

    @property
    def edp(self) -> int:
        """The expert-data-parallel degree: ranks of a stage holding the same experts."""
        return self.dp * self.cp * self.tp // (self.ep * self.etp)

    def _check_update_knobs(self) -> None:
        """Gradient compression, local SGD, staleness and offload: valid values, and at most
        one way of changing how replicas synchronise."""
        if self.compress not in COMPRESSION:
            raise SimplanError(
                f"compress must be one of {', '.join(COMPRESSION)}, got {self.compress!r}"
            )
        if self.offload not in OFFLOAD:
            raise SimplanError(f"offload must be one of {', '.join(OFFLOAD)}, got {self.offload!r}")
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

    def _check_fp8_and_overlap(self) -> None:
        check_recipe(self.fp8)
        if self.cp_comm not in CP_COMM:
            raise SimplanError(f"cp_comm must be one of {', '.join(CP_COMM)}, got {self.cp_comm!r}")
        if self.fp8 != "none" and self.dtype == "fp32":
            raise SimplanError(
                f"--fp8 {self.fp8} runs the linear GEMMs in FP8 inside bf16 or fp16 mixed "
                f"precision; use --dtype bf16"
            )
        if self.tp_overlap and not (self.tp > 1 and self.sequence_parallel):
            raise SimplanError(
                "--tp-overlap hides the all-gathers and reduce-scatters of sequence-parallel "
                "TP; it needs --tp > 1 and --sequence-parallel"
            )

    @property
    def grad_reduce_dtype(self) -> str:
        return self.reduce_dtype or self.dtype

    @property
    def world_size(self) -> int:
        return self.dp * self.tp * self.pp * self.cp

    @property
    def replicas(self) -> int:
        """Ranks of a stage and TP rank that hold the same parameters: dp * cp (gradients are
        reduced, and ZeRO/FSDP shards, over data- and context-parallel ranks together)."""
        return self.dp * self.cp

    @property
    def num_microbatches(self) -> int:
        return self.global_batch // (self.dp * self.micro_batch)

    @property
    def chunks(self) -> int:
        """Model chunks in the pipeline: pp * virtual_stages."""
        return self.pp * self.virtual_stages

    def describe(self) -> str:
        parts = [
            f"dp{self.dp} tp{self.tp} pp{self.pp}" + (f" cp{self.cp}" if self.cp > 1 else ""),
            f"mb{self.micro_batch}",
            f"gb{self.global_batch}",
            self.schedule,
        ]
        if self.ep > 1 or self.etp > 1:
            parts.append(f"ep{self.ep}" + (f" etp{self.etp}" if self.etp > 1 else ""))
            if self.moe_dispatcher != "alltoall":
                parts.append(self.moe_dispatcher)
            if self.moe_overlap:
                parts.append("moe-overlap")
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
        if self.cp > 1 and self.cp_comm != "ring":
            parts.append(f"cp-{self.cp_comm}")
        if self.fp8 != "none":
            parts.append(f"fp8-{self.fp8}")
        if self.tp_overlap:
            parts.append("tp-overlap")
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
        cp = f" x cp {config.cp}" if config.cp > 1 else ""
        raise SimplanError(
            f"dp {config.dp} x tp {config.tp} x pp {config.pp}{cp} = {config.world_size} ranks, "
            f"but the cluster has {devices} devices; change the degrees or use --nodes / "
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
    seq = config.seq_len or graph.seq_len
    if config.cp > 1 and seq % (2 * config.cp):
        raise SimplanError(
            f"cp {config.cp} does not divide the sequence of {seq} tokens into 2 x cp "
            f"load-balanced chunks; choose a cp with 2 x cp dividing {seq}"
        )
    why = ep_mismatch(graph, config.ep, config.etp)
    if why:
        raise SimplanError(why)


def ep_mismatch(graph: ModelGraph, ep: int, etp: int) -> str:
    """Why expert degrees ep and etp cannot split the model's MoE layers ("" if they can)."""
    experts = [x for x in graph.layers if x.is_moe]
    if not experts:
        if ep > 1 or etp > 1:
            return (
                f"ep {ep} / etp {etp} split mixture-of-experts layers, and model "
                f"{graph.name} has none; leave --ep and --etp at 1"
            )
        return ""
    for layer in experts:
        n, ffn = layer.attrs["num_experts"], layer.attrs.get("moe_ffn_hidden_size", 0)
        if n % ep:
            return (
                f"ep {ep} does not divide the {n} experts of layer {layer.name}; choose an "
                f"ep that divides {n}"
            )
        if ffn and ffn % etp:
            return f"etp {etp} does not divide the expert hidden size {ffn} of layer {layer.name}"
    return ""


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
    """int8-dynamic quantizes activations at run time, for inference: a training step of such
    a model is refused in one line (weight-only formats train: simplan.quantize)."""
    if any(layer.attrs.get("quantize") == "int8-dynamic" for layer in graph.layers):
        raise SimplanError(
            f"model {graph.name} has int8-dynamic weights: dynamic quantization is for "
            "inference (a --teacher); a training job quantizes weight-only: --quantize int8"
        )
