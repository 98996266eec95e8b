"""What a real run executes (JobSpec) and what it measured (RankResult, Measurement).

Plain values, no torch: the launcher pickles a JobSpec to every rank, and every rank writes its
RankResult as JSON for the launcher to gather.
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from simplan.errors import SimplanError
from simplan.model_graph import ModelGraph
from simplan.parallel import ParallelConfig
from simplan.profiles import LayerTiming, Profile
from simplan.units import MiB

STRATEGIES = ("ddp", "fsdp", "tp", "pp")
OPTIMIZERS = ("adam", "sgd")
# a rank's progress marker (OUT_DIR/hb{rank}): one little-endian int64, 2 * step (+1 once the
# step is done), -1 during start-up
PROGRESS_FORMAT = "<q"
WRONG_SPLIT = "wrong-split"  # JobSpec.fault: a deliberately wrong data split


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """One real training run.

    model: a model spec (preset, TOML file or file.py:factory).
    config: the parallel configuration; its degrees decide the strategy (see `strategy_of`).
    steps: timed optimizer steps, after `warmup` untimed ones.
    optimizer: 'adam' (what the simulator models) or 'sgd'.
    threads: torch intra-op threads per rank (the profile must be measured with as many).
    timeout_s: the longest any rank may go without progress (start-up or one step).
    baseline_steps: after the run, time this many forward+backward passes of the unsplit model
        on every rank at once, without communication (0: skip); see RankResult.baseline_s.
    profile_repeats: every rank profiles the model with this many repeats (0: skip), at the
        same time, in rounds between blocks of the timed steps (simplan.timing.ProfileSession),
        so that the profile sees the conditions of the run: the other ranks on the same cores,
        the machine's load and its drift during the run.
    check_bytes: when > 0, every round of the timed steps also times a few all-reduces of this
        many bytes (each after a barrier), to compare with the calibration that priced them
        (RankResult.check_s); 0: none.
    realtime: CPU ranks run under SCHED_FIFO where permitted, so that a thread woken by a
        collective runs at once (simplan.realtime; bench-comm calibrates the same way). False:
        the default scheduler.
    fault: 'crash@RANK:STEP' or 'hang@RANK:STEP' makes a rank fail on purpose (tests failure
        handling); 'wrong-split' makes every data-parallel replica train on the first replica's
        slice of the global batch (tests that the loss oracle catches a wrong split).
    """

    model: str
    config: ParallelConfig
    steps: int = 30
    warmup: int = 5
    optimizer: str = "adam"
    threads: int = 1
    timeout_s: float = 120.0
    fault: str = ""
    baseline_steps: int = 10
    profile_repeats: int = 0
    check_bytes: int = 0
    realtime: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1 or self.warmup < 0:
            raise SimplanError(
                f"steps must be >= 1 and warm-up >= 0, got {self.steps}, {self.warmup}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise SimplanError(f"optimizer must be one of {', '.join(OPTIMIZERS)}")
        if self.threads < 1 or self.timeout_s <= 0:
            raise SimplanError("threads and the timeout must be positive")
        strategy_of(self.config)  # refuses what no torch setting runs

    @property
    def strategy(self) -> str:
        return strategy_of(self.config)


def strategy_of(config: ParallelConfig) -> str:
    """How the runtime executes a configuration, in words: 'ddp', 'fsdp', 'tp', 'pp' for one
    parallel axis (ZeRO-1/2 as 'zero1'/'zero2'), else the axes joined by 'x' ('pp x fsdp x tp'),
    with '+sp' and '+recompute-MODE' where set. Raises for what the runtime cannot run
    whatever the model (see `runtime_refusal` for the model-dependent rest)."""
    refusal = config_refusal(config)
    if refusal:
        raise SimplanError(refusal)
    data = {0: "ddp", 1: "zero1", 2: "zero2", 3: "fsdp"}[config.zero]
    axes = [name for name, on in (("pp", config.pp > 1), (data, config.dp > 1)) if on]
    axes += ["tp"] if config.tp > 1 else []
    label = " x ".join(axes) or data
    if config.sequence_parallel and config.tp > 1:
        label += "+sp"
    if config.recompute != "none":
        label += f"+recompute-{config.recompute}"
    return label + sync_label(config)


def sync_label(config: ParallelConfig) -> str:
    """How replicas synchronise, when not by a plain all-reduce of gradients: '+fp16',
    '+powersgd-r4', '+local-sgd-8' ('' otherwise)."""
    if config.compress == "powersgd":
        return f"+powersgd-r{config.powersgd_rank}"
    if config.compress != "none":
        return f"+{config.compress}"
    return f"+local-sgd-{config.local_sgd}" if config.local_sgd > 1 else ""


def config_refusal(config: ParallelConfig) -> str:
    """Why no torch setting runs `config` exactly ('' when one does)."""
    if config.ep > 1 or config.etp > 1:
        return (
            f"the runtime does not run expert parallelism (ep {config.ep}, etp {config.etp}); "
            "simulate it, or use ep 1 and etp 1"
        )
    if config.offload == "optimizer" and (config.tp > 1 or config.pp > 1):
        return (
            "the runtime offloads the optimizer of data-parallel plans only (FSDP2 with "
            "CPUOffloadPolicy): use tp 1 and pp 1"
        )
    if config.offload == "optimizer" and config.dp > 1 and config.zero < 2:
        return (
            "the runtime offloads with FSDP2's CPUOffloadPolicy, which shards the optimizer "
            f"with the parameters (ZeRO-2/3), not ZeRO-{config.zero}'s way: use zero 2 or 3"
        )
    sync = _sync_refusal(config)
    if sync:
        return sync
    if config.zero == 1 and config.dp > 1 and (config.tp > 1 or config.pp > 1):
        return (
            f"ZeRO-1 with {'tp' if config.tp > 1 else 'pp'} has no exact torch equivalent "
            "(ZeroRedundancyOptimizer needs DDP, which refuses DTensor parameters and breaks "
            "inside a pipeline stage): use zero 0, 2 or 3"
        )
    return ""


def offload_refusal(config: ParallelConfig, cuda: bool | None = None) -> str:
    """CPU offload needs CUDA devices (cuda None: whether this machine has one)."""
    if config.offload == "none":
        return ""
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if cuda:
        return ""
    return (
        "--offload optimizer needs CUDA devices: on CPU ranks the optimizer's state is in host "
        "memory already"
    )


# torch 2.13's powerSGD_hook on gloo works with one DDP bucket only (two or more crash gloo with
# a size mismatch; /work STACK.md); DDP's first bucket holds at most 1 MiB
# (torch.distributed._DEFAULT_FIRST_BUCKET_BYTES)
POWERSGD_GLOO_BYTES = MiB


def _sync_refusal(config: ParallelConfig) -> str:
    """Why the runtime cannot synchronise replicas as `config` asks ('' when it can)."""
    knob = (
        "--compress" if config.compress != "none" else "--local-sgd" if config.local_sgd > 1 else ""
    )
    if config.staleness:
        return "the runtime runs synchronous data parallelism only: drop --staleness"
    if knob and not (config.dp > 1 and config.zero == 0 and config.tp == 1 and config.pp == 1):
        return f"{knob} runs as a DDP communication hook: it needs DDP only (dp > 1, zero 0)"
    return ""


def runtime_refusal(config: ParallelConfig, graph: ModelGraph, cuda: bool | None = None) -> str:
    """Why the runtime cannot run `config` on the model of `graph` ('' when it can); cuda:
    whether its ranks run on CUDA devices (None: whether this machine has one)."""
    block_attrs = [layer.attrs for layer in graph.layers if layer.kind == "transformer_block"]
    blocks = bool(block_attrs)
    heads = {(a.get("num_heads", 1), a.get("num_kv_heads", 1)) for a in block_attrs}
    names = [layer.name for layer in graph.layers]
    moe = any(layer.is_moe for layer in graph.layers)
    checks = (
        (config_refusal(config) or offload_refusal(config, cuda), ""),
        (
            config.fp8 != "none",
            f"the runtime has no FP8 GEMMs (Transformer Engine / torchao float8 need FP8 "
            f"tensor cores): drop --fp8 {config.fp8}",
        ),
        (
            config.cp > 1,
            f"the runtime splits no sequence over ranks (context parallelism): drop "
            f"--cp {config.cp}",
        ),
        (
            config.tp_overlap,
            "the runtime's DTensor tensor parallelism issues its collectives in turn with the "
            "GEMMs: drop --tp-overlap",
        ),
        (
            moe,
            f"the runtime does not run mixture-of-experts layers ({graph.name} has them); "
            "simulate it with simplan simulate",
        ),
        (
            any(h % config.tp or kv % config.tp for h, kv in heads),
            f"tp {config.tp} must divide the attention heads and key/value heads "
            f"({', '.join(f'{h}/{kv}' for h, kv in sorted(heads))}): choose another tp",
        ),
        (
            config.sequence_parallel and config.tp > 1 and graph.seq_len % config.tp != 0,
            f"sequence parallelism needs tp {config.tp} to divide the sequence length "
            f"{graph.seq_len}",
        ),
        (
            config.recompute == "selective" and not blocks,
            f"selective recomputation recomputes attention; {graph.name} has no attention: "
            "use recompute none or full",
        ),
        (
            config.recompute == "op" and not blocks,
            f"per-op checkpointing (recompute op) wraps transformer blocks; {graph.name} has "
            "none: use recompute none or full",
        ),
        (
            config.recompute == "op" and config.tp > 1,
            f"per-op checkpointing (recompute op) runs without tensor parallelism (tp "
            f"{config.tp}): use recompute selective or full",
        ),
        (
            config.sequence_parallel and config.tp > 1 and not blocks,
            f"sequence parallelism needs transformer blocks; {graph.name} has none: "
            "set sequence_parallel to false",
        ),
        (
            config.tp > 1 and config.pp > 1 and not blocks,
            f"tp x pp needs transformer blocks ({graph.name} is a plain layer stack, whose "
            "column/row pairs a pipeline cut would separate): use tp or pp alone",
        ),
        (
            (config.pp > 1 or config.tp > 1)
            and any(layer.attrs.get("tied_to") in names for layer in graph.layers),
            f"{graph.name} ties its head to its embedding, which pipeline stages and "
            "tensor-parallel shards cannot share: set tie_embeddings = false",
        ),
        (
            config.pp > 1 and bool(graph.edges) and not graph.is_chain,
            f"{graph.name} is not a chain of layers; pipelining here needs a sequential model: "
            "use pp 1",
        ),
        (
            config.compress == "powersgd" and graph.params * 4 > POWERSGD_GLOO_BYTES,
            f"PowerSGD on gloo runs with one DDP bucket (1 MiB) only; {graph.name}'s fp32 "
            f"gradients take {graph.params * 4 / MiB:.1f} MiB: use another --compress",
        ),
    )
    for refused, why in checks:
        if refused:
            return refused if isinstance(refused, str) else why
    return ""


def config_for(
    strategy: str,
    nprocs: int,
    *,
    micro_batch: int,
    global_batch: int | None = None,
    schedule: str = "1f1b",
    virtual_stages: int = 1,
    seq_len: int = 0,
    compress: str = "none",
    powersgd_rank: int = 1,
    local_sgd: int = 1,
) -> ParallelConfig:
    """The ParallelConfig of `strategy` over `nprocs` ranks, in fp32 (what CPUs train in), with
    the replicas' synchronisation knobs (simplan.parallel.ParallelConfig)."""
    if strategy not in STRATEGIES:
        raise SimplanError(f"unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
    if nprocs < 1:
        raise SimplanError(f"--nprocs must be >= 1, got {nprocs}")
    dp = nprocs if strategy in ("ddp", "fsdp") else 1
    tp = nprocs if strategy == "tp" else 1
    pp = nprocs if strategy == "pp" else 1
    microbatches = 2 * pp if pp > 1 else 1
    return ParallelConfig(
        dp=dp,
        tp=tp,
        pp=pp,
        micro_batch=micro_batch,
        global_batch=global_batch or dp * micro_batch * microbatches,
        seq_len=seq_len,
        schedule=schedule if pp > 1 else "1f1b",
        virtual_stages=virtual_stages if pp > 1 else 1,
        zero=3 if strategy == "fsdp" else 0,
        dtype="fp32",
        compress=compress,
        powersgd_rank=powersgd_rank,
        local_sgd=local_sgd,
    )


@dataclass(frozen=True, kw_only=True)
class RankResult:
    """What one rank measured: per timed step, the whole step and its optimizer part; the
    tensor memory of one more, untimed step after the warm-up (simplan.runtime.memory.StepMemory):
    the live bytes at its peak by part, the peak, the phase it happened in, and on a GPU the
    caching allocator's peaks (0 on a CPU; all empty in a run without warm-up, and in records
    written before memory was measured)."""

    rank: int
    step_s: tuple[float, ...]
    optimizer_s: tuple[float, ...]
    device: str
    memory_parts: dict[str, int] = field(default_factory=dict)
    tracked_peak_bytes: int = 0
    peak_phase: str = ""
    peak_allocated_bytes: int = 0
    peak_reserved_bytes: int = 0
    baseline_s: tuple[float, ...] = ()  # the unsplit model's forward+backward, side by side
    scheduling: str = ""  # the policy the rank ran under (simplan.realtime)
    # the in-run profile's whole-model passes on this rank: (forward, backward, optimizer) s
    profile_passes_s: tuple[tuple[float, float, float], ...] = ()
    check_s: tuple[float, ...] = ()  # the all-reduces of job.check_bytes, in order
    # the loss of every step (warm-up, the memory step after it, timed; in order) over the
    # whole global batch
    losses: tuple[float, ...] = ()
    # local SGD: per timed step, whether it ended with a model average, and the sum of the
    # rank's parameters after it (equal across ranks right after an average)
    averaged: tuple[bool, ...] = ()
    param_checksums: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {
            "step_s": list(self.step_s),
            "optimizer_s": list(self.optimizer_s),
            "baseline_s": list(self.baseline_s),
            "profile_passes_s": [list(p) for p in self.profile_passes_s],
            "check_s": list(self.check_s),
            "losses": list(self.losses),
            "averaged": list(self.averaged),
            "param_checksums": list(self.param_checksums),
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> RankResult:
        return RankResult(
            rank=int(d["rank"]),
            step_s=tuple(d["step_s"]),
            optimizer_s=tuple(d["optimizer_s"]),
            device=str(d["device"]),
            memory_parts={str(k): int(v) for k, v in d.get("memory_parts", {}).items()},
            tracked_peak_bytes=int(d.get("tracked_peak_bytes", 0)),
            peak_phase=str(d.get("peak_phase", "")),
            peak_allocated_bytes=int(d.get("peak_allocated_bytes", 0)),
            peak_reserved_bytes=int(d.get("peak_reserved_bytes", 0)),
            baseline_s=tuple(d.get("baseline_s", ())),
            scheduling=str(d.get("scheduling", "")),
            profile_passes_s=tuple(
                (float(f), float(b), float(o)) for f, b, o in d.get("profile_passes_s", ())
            ),
            check_s=tuple(float(t) for t in d.get("check_s", ())),
            losses=tuple(float(x) for x in d.get("losses", ())),
            averaged=tuple(bool(x) for x in d.get("averaged", ())),
            param_checksums=tuple(float(x) for x in d.get("param_checksums", ())),
        )


def slowest_rank_profile(profile: Profile, ranks: tuple[RankResult, ...]) -> Profile:
    """The in-run profile with its whole-model time and optimizer step as the steps are timed:
    each pass (all ranks at once, after a barrier) counted at its slowest rank, then the
    median over passes. A step that synchronises its ranks waits for the slowest one; a
    rank's own median is up to a few percent faster on a busy machine. The layer times stay
    rank 0's (the whole-model time decides their total: Profile.layer_scale and glue_s)."""
    passes = [r.profile_passes_s for r in ranks]
    if profile.whole_model is None or not passes or not all(passes):
        return profile
    slowest = [max(group, key=sum) for group in zip(*passes, strict=False)]
    fwd = statistics.median(p[0] for p in slowest)
    bwd = statistics.median(p[1] for p in slowest)
    whole = LayerTiming(fwd_s=fwd, bwd_s=bwd, repeats=len(slowest))
    meta = profile.meta | {"whole_model": "each pass at its slowest rank, median over passes"}
    optimizer_s = statistics.median(p[2] for p in slowest)
    fixed = profile.optimizer_fixed_s
    return dataclasses.replace(
        profile,
        whole_model=whole,
        optimizer_s=optimizer_s,
        optimizer_fixed_s=None if fixed is None else min(fixed, optimizer_s),
        meta=meta,
    )


@dataclass(frozen=True, kw_only=True)
class Measurement:
    """A real run's result. step_time_s: median over the timed steps of the slowest rank's
    step (each step starts after a barrier)."""

    job: JobSpec
    ranks: tuple[RankResult, ...]
    wall_s: float
    meta: dict[str, Any] = field(default_factory=dict)
    profile: Profile | None = None  # rank 0's in-run profile (job.profile_repeats > 0)

    @property
    def per_step_s(self) -> tuple[float, ...]:
        return tuple(max(times) for times in zip(*(r.step_s for r in self.ranks), strict=True))

    @property
    def step_time_s(self) -> float:
        """The median step; with local SGD, the mean over a period of its medians
        (local_sgd_steps)."""
        periodic = self.local_sgd_steps
        if periodic is not None:
            return periodic["period_mean_s"]
        return statistics.median(self.per_step_s)

    @property
    def local_sgd_steps(self) -> dict[str, float] | None:
        """Local SGD's timed steps by kind: the median of the steps that ended with a model
        average and of the others, and the mean over a period of H steps,
        (sync + (H - 1) local) / H. None without local SGD or without both kinds of step."""
        period = self.job.config.local_sgd
        flags = self.ranks[0].averaged
        steps = self.per_step_s
        if period <= 1 or len(flags) != len(steps):
            return None
        sync = [t for t, a in zip(steps, flags, strict=True) if a]
        local = [t for t, a in zip(steps, flags, strict=True) if not a]
        if not sync or not local:
            return None
        sync_s, local_s = statistics.median(sync), statistics.median(local)
        return {
            "period": period,
            "sync_steps": len(sync),
            "local_steps": len(local),
            "sync_step_s": sync_s,
            "local_step_s": local_s,
            "period_mean_s": (sync_s + (period - 1) * local_s) / period,
        }

    @property
    def losses(self) -> tuple[float, ...]:
        """The loss of every step (warm-up first) over the global batch (rank 0's record;
        every rank holds the same all-reduced values)."""
        return self.ranks[0].losses

    @property
    def optimizer_s(self) -> float:
        return statistics.median(statistics.median(r.optimizer_s) for r in self.ranks)

    @property
    def baseline_s(self) -> float:
        """The unsplit model's forward+backward: median per rank, the slowest rank's."""
        return max((statistics.median(r.baseline_s) for r in self.ranks if r.baseline_s), default=0)

    @property
    def baseline_straggler_s(self) -> float:
        """How much later the slower rank finishes the same compute: median over steps of
        (max over ranks) minus baseline_s; what a synchronizing collective waits for."""
        if not all(r.baseline_s for r in self.ranks):
            return 0.0
        per_step = [max(t) for t in zip(*(r.baseline_s for r in self.ranks), strict=True)]
        return statistics.median(per_step) - self.baseline_s

    @property
    def check_s(self) -> float | None:
        """The checked all-reduce: median over calls of the slowest rank's (None: not run)."""
        calls = [max(t) for t in zip(*(r.check_s for r in self.ranks), strict=False)]
        return statistics.median(calls) if calls else None

    @property
    def spread(self) -> dict[str, float]:
        """Relative spread of the step times: (p90 - p10) / median and the IQR / median."""
        q = statistics.quantiles(self.per_step_s, n=20) if len(self.per_step_s) > 1 else [0.0] * 19
        med = self.step_time_s
        return {"p10_p90": (q[17] - q[1]) / med, "iqr": (q[14] - q[4]) / med}

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.job.strategy,
            "step_time_s": self.step_time_s,
            "optimizer_s": self.optimizer_s,
            "baseline_fwd_bwd_s": self.baseline_s,
            "baseline_straggler_s": self.baseline_straggler_s,
            "spread": self.spread,
            "check_s": self.check_s,
            "per_step_s": list(self.per_step_s),
            "local_sgd": self.local_sgd_steps,
            "losses": list(self.losses),
            "ranks": [
                r.to_dict() | {"median_step_s": statistics.median(r.step_s)} for r in self.ranks
            ],
            "tracked_peak_bytes": max(r.tracked_peak_bytes for r in self.ranks),
            "wall_s": self.wall_s,
            "meta": self.meta,
        }
