"""One rank's share of a plan, composed from what torch provides (imports torch).

One DeviceMesh over (pp, dp_replicate, dp_shard, tp), torchtitan's order, and torchtitan's
order of composition:

1. pipeline split: the model's layers cut at the plan's stage boundaries into pp x
   virtual_stages chunks; this rank keeps chunks pp_rank, pp_rank + pp, ... as PipelineStages
   (torch.distributed.pipelining: ScheduleGPipe, Schedule1F1B, ScheduleInterleaved1F1B);
2. tensor parallel (DTensor, simplan.runtime.tensor_parallel), with sequence parallelism;
3. activation recomputation: 'selective' recomputes each block's attention core
   (Attention.recompute_core), 'full' wraps each block in checkpoint_wrapper, 'op' wraps
   it with torch's selective-checkpoint contexts under simplan.op_policy;
4. data parallel by ZeRO stage (README, "How a plan runs"): ZeRO-0 is DDP, or with tp or pp
   FSDP2 HSDP with shard groups of 1 (DDP refuses DTensor parameters and breaks inside a
   PipelineStage); ZeRO-1 is DDP + ZeroRedundancyOptimizer (refused with tp or pp); ZeRO-2 is
   fully_shard(reshard_after_forward=False); ZeRO-3 is fully_shard(reshard_after_forward=True).

Every rank builds the same seeded model and global batch (`seeded_model_and_batch`) and takes
its data-parallel slice; gradients are accumulated over the replica's micro-batches.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from simplan.errors import SimplanError
from simplan.model_graph import ModelGraph
from simplan.op_policy import OpPolicy
from simplan.parallel import ParallelConfig
from simplan.runtime.job import WRONG_SPLIT, JobSpec, runtime_refusal
from simplan.units import MiB

MESH_DIMS = ("pp", "dp_replicate", "dp_shard", "tp")
SEED = 0  # the model's initial weights and the global batch's inputs
TARGET_SEED = 1  # the global batch's targets


def loss_of(output: Any, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits (..., classes) against class indices (...)."""
    return F.cross_entropy(output.flatten(0, -2), target.flatten())


def make_optimizer(job: JobSpec, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """SGD with momentum, or Adam with the fused kernel; DTensor and plain parameters (a
    tensor-parallel model's sharded and replicated ones) in separate groups, as fused Adam
    needs."""
    from torch.distributed.tensor import DTensor

    groups = [
        {"params": [p for p in params if isinstance(p, DTensor) == dt]} for dt in (True, False)
    ]
    nonempty = [g for g in groups if g["params"]]
    if job.optimizer == "sgd":
        return torch.optim.SGD(nonempty, lr=1e-3, momentum=0.9)
    return torch.optim.Adam(nonempty, lr=1e-4, fused=True)  # one kernel per tensor: what
    # the simulator's optimizer model (28 bytes of traffic per parameter) describes


def seeded_model_and_batch(
    model_spec: str, config: ParallelConfig, device: Any
) -> tuple[ModelGraph, nn.Module, tuple[Any, ...], torch.Tensor]:
    """(graph, module, the global batch's inputs, its targets): the same on every rank and in
    the single-process reference (seeded)."""
    from simplan.build import instantiate
    from simplan.sources import load_model, resolve, transformer_spec

    seq = config.seq_len or None
    graph = load_model(model_spec, seq_len=seq, dtype=config.dtype)
    source = resolve(model_spec)
    tspec = transformer_spec(source) if source.kind == "toml" else None
    torch.manual_seed(SEED)
    model, inputs = instantiate(
        source,
        tspec,
        batch=config.global_batch,
        seq_len=seq,
        device=str(device),
        dtype=config.dtype,
    )
    model.train()
    return graph, model, inputs, _targets(model, inputs, config.global_batch)


def _targets(model: nn.Module, inputs: tuple[Any, ...], batch: int) -> torch.Tensor:
    """Random class indices shaped like the model's output without its class dimension."""
    with torch.no_grad():
        out = model(*(x[:1] for x in inputs))
    gen = torch.Generator().manual_seed(TARGET_SEED)
    shape = (batch, *out.shape[1:-1])
    return torch.randint(0, out.shape[-1], shape, generator=gen).to(out.device)


def micro_batches(
    inputs: tuple[Any, ...], target: torch.Tensor, n: int
) -> list[tuple[tuple[Any, ...], torch.Tensor]]:
    split = [x.chunk(n) for x in inputs]
    return [(tuple(s[i] for s in split), t) for i, t in enumerate(target.chunk(n))]


@dataclass(frozen=True, kw_only=True)
class Coordinates:
    """This rank's place in the mesh."""

    pp: int
    dp: int  # data-parallel replica index, dp_replicate * dp_shard_size + dp_shard
    tp: int


@dataclass
class Trainer:
    """One optimizer step = forward_backward() then optimizer_step(); step_loss() is the
    step's loss over the whole global batch (the mean of its micro-batch losses), the same on
    every rank (one all-reduce)."""

    optimizer: Any
    global_microbatches: int
    holds_loss: bool  # this rank's losses count (the last pipeline stage, tensor rank 0)
    run: Callable[[], list[torch.Tensor]]  # forward+backward, the micro-batch losses it saw
    modules: tuple[nn.Module, ...]  # the model's parts on this rank (for checkpoints)
    losses: list[float] = field(default_factory=list)  # step_loss() of every step so far
    averaged: bool = False  # the last optimizer step ended with a model average (local SGD)
    _loss_sum: float = 0.0

    def forward_backward(self) -> None:
        self._loss_sum = float(sum(_plain(x).detach().item() for x in self.run()))

    def optimizer_step(self) -> None:
        self.averaged = averages_now(self.optimizer)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def param_checksum(self) -> float:
        """The sum of this rank's parameters (float64): equal across replicas that hold the
        same model."""
        return float(
            sum(p.detach().double().sum().item() for m in self.modules for p in m.parameters())
        )

    def step_loss(self) -> float:
        import torch.distributed as dist

        share = self._loss_sum / self.global_microbatches if self.holds_loss else 0.0
        total = torch.tensor([share], dtype=torch.float64)
        dist.all_reduce(total)
        return float(total.item())

    def record_loss(self) -> None:
        self.losses.append(self.step_loss())


def _plain(x: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return x.full_tensor() if isinstance(x, DTensor) else x


def mesh_shape(config: ParallelConfig) -> tuple[int, int, int, int]:
    """(pp, dp_replicate, dp_shard, tp): ZeRO-2/3 shard over dp, the others replicate."""
    shard = config.dp if config.zero >= 2 else 1
    return (config.pp, config.dp // shard, shard, config.tp)


def build_trainer(job: JobSpec, device: torch.device) -> Trainer:
    """This rank's part of `job.config`, composed in torchtitan's order (see the module doc)."""
    from torch.distributed.device_mesh import init_device_mesh

    cfg = job.config
    # a tensor-parallel layer's local output is a view; FSDP2 warns that an in-place op on it
    # would skip its hook. The models here add out of place (the loss oracle checks gradients).
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
    graph, model, inputs, target = seeded_model_and_batch(job.model, cfg, device)
    refusal = runtime_refusal(cfg, graph)
    if refusal:
        raise SimplanError(refusal)
    mesh = init_device_mesh(device.type, mesh_shape(cfg), mesh_dim_names=MESH_DIMS)
    coordinate = mesh.get_coordinate()
    assert coordinate is not None  # every rank is in the mesh that spans the world
    pp_i, rep_i, shard_i, tp_i = coordinate
    where = Coordinates(pp=pp_i, dp=rep_i * mesh.size(2) + shard_i, tp=tp_i)
    per_replica = cfg.global_batch // cfg.dp
    lo = 0 if job.fault == WRONG_SPLIT else where.dp * per_replica
    # copies, so that the rest of the global batch is freed: a rank holds its replica's share,
    # as a data loader gives it
    inputs = tuple(x[lo : lo + per_replica].clone() for x in inputs)
    target = target[lo : lo + per_replica].clone()
    vocab_parallel = cfg.tp > 1 and cfg.pp == 1 and graph.has_blocks
    if cfg.tp > 1:
        from simplan.runtime.tensor_parallel import parallelize

        parallelize(
            model,
            mesh["tp"],
            graph,
            sequence_parallel=cfg.sequence_parallel,
            vocab_parallel_loss=vocab_parallel,
        )
    apply_recompute(model, graph, cfg.recompute)
    trainer_args = (job, mesh, where, model, graph, inputs, target, device)
    if cfg.pp > 1:
        return _pipeline_trainer(*trainer_args)
    return _plain_trainer(*trainer_args, vocab_parallel)


def apply_recompute(model: nn.Module, graph: ModelGraph, mode: str) -> None:
    """'selective': each block's attention core; 'full': each transformer block (each layer
    of a model without blocks) wrapped by checkpoint_wrapper; 'op': each transformer block
    wrapped with the per-op policy of simplan.op_policy (op_checkpoint_contexts)."""
    from simplan.nets.transformer import Attention

    if mode == "selective":
        for module in model.modules():
            if isinstance(module, Attention):
                module.recompute_core = True
    if mode not in ("full", "op"):
        return
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    for layer in graph.layers:
        if not graph.checkpointed(layer):
            continue
        parent, _, name = layer.name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        module = getattr(owner, name)
        if mode == "op":
            wrapped = checkpoint_wrapper(module, context_fn=op_checkpoint_contexts)
        else:  # early_stop=False: recompute the whole block, as tensor-parallel DTensors need
            wrapped = checkpoint_wrapper(module, early_stop=False)
        setattr(owner, name, wrapped)


def op_checkpoint_contexts() -> tuple[Any, Any]:
    """torch's selective-checkpoint contexts for one checkpointed call under simplan.op_policy:
    the listed ops' outputs are saved (every other mm), the rest runs again in the backward."""
    from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

    policy = OpPolicy()

    def decide(ctx: Any, func: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
        if policy.saves(str(func), ctx.is_recompute):
            return CheckpointPolicy.MUST_SAVE
        return CheckpointPolicy.PREFER_RECOMPUTE

    return create_selective_checkpoint_contexts(decide)


def _data_parallel(job: JobSpec, mesh: Any, parts: list[tuple[nn.Module, list[nn.Module]]]) -> None:
    """FSDP2 on every layer of each part that holds parameters, then on the part: ZeRO-2/3
    shard over dp; ZeRO-0 with tp or pp is HSDP with shard groups of 1 (DDP's arithmetic).
    --offload optimizer (CUDA only, data parallel or one rank): CPUOffloadPolicy, which keeps
    the sharded fp32 parameters, their gradients and the optimizer's state in pinned host
    memory and steps the optimizer on the CPU; each unit's parameters are copied to the device
    for its forward and backward and its reduced gradients back to the host (parameters
    offloaded too: more than the simulator's ZeRO-Offload, simplan.sim.offload)."""
    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard

    cfg = job.config
    shard = cfg.zero >= 2 or cfg.offload != "none"
    dp_mesh = mesh["dp_shard"] if shard else mesh["dp_replicate", "dp_shard"]
    reshard = cfg.zero == 3
    # pinned host memory needs CUDA (the runtime refuses offload without it; a CPU test of this
    # wiring runs unpinned)
    pinned = torch.cuda.is_available()
    policy = CPUOffloadPolicy(pin_memory=pinned) if cfg.offload == "optimizer" else OffloadPolicy()
    for part, layers in parts:
        for sub in layers:
            if any(True for _ in sub.parameters()):
                fully_shard(sub, mesh=dp_mesh, reshard_after_forward=reshard, offload_policy=policy)
        fully_shard(part, mesh=dp_mesh, reshard_after_forward=reshard, offload_policy=policy)


def _plain_trainer(
    job: JobSpec,
    mesh: Any,
    where: Coordinates,
    model: nn.Module,
    graph: ModelGraph,
    inputs: tuple[Any, ...],
    target: torch.Tensor,
    device: torch.device,
    vocab_parallel: bool,
) -> Trainer:
    """No pipeline: the whole model, accumulating over the replica's micro-batches."""
    cfg = job.config
    n = cfg.num_microbatches
    batches = micro_batches(inputs, target, n)
    sync: Callable[[bool], AbstractContextManager[Any]] = _always_sync
    wrapped = model
    if cfg.dp > 1 and cfg.zero <= 1 and cfg.tp == 1:
        wrapped, sync = _ddp(job, model, device)
    elif cfg.dp > 1 or cfg.offload != "none":
        _data_parallel(job, mesh, [(model, [model.get_submodule(x.name) for x in graph.layers])])
        sync = _fsdp_sync(model)
    optimizer = _optimizer(job, list(model.parameters()))
    loss_context: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext
    if vocab_parallel:
        from torch.distributed.tensor.parallel import loss_parallel

        loss_context = loss_parallel

    def run() -> list[torch.Tensor]:
        losses = []
        for i, (x, t) in enumerate(batches):
            with sync(i == n - 1), loss_context():
                loss = loss_of(wrapped(*x), t)
                (loss / n).backward()
            losses.append(loss)
        return losses

    return Trainer(
        optimizer=optimizer,
        global_microbatches=cfg.dp * n,
        holds_loss=where.tp == 0,
        run=run,
        modules=(model,),
    )


def _always_sync(_last: bool) -> AbstractContextManager[Any]:
    return contextlib.nullcontext()


def _optimizer(job: JobSpec, params: list[nn.Parameter]) -> Any:
    if job.config.local_sgd > 1 and job.config.dp > 1:
        return _local_sgd_optimizer(job, params)
    if job.config.zero != 1 or job.config.dp == 1:
        return make_optimizer(job, params)
    from torch.distributed.optim import ZeroRedundancyOptimizer

    if job.optimizer == "sgd":
        return ZeroRedundancyOptimizer(params, torch.optim.SGD, lr=1e-3, momentum=0.9)
    return ZeroRedundancyOptimizer(params, torch.optim.Adam, lr=1e-4, fused=True)


def _local_sgd_optimizer(job: JobSpec, params: list[nn.Parameter]) -> Any:
    """Post-local SGD: the optimizer steps on local gradients and torch's PeriodicModelAverager
    averages the parameters every config.local_sgd steps, from step SYNC_WARMUP_STEPS on."""
    from torch.distributed.algorithms.model_averaging.averagers import PeriodicModelAverager
    from torch.distributed.optim import PostLocalSGDOptimizer

    from simplan.compression import SYNC_WARMUP_STEPS

    averager = PeriodicModelAverager(period=job.config.local_sgd, warmup_steps=SYNC_WARMUP_STEPS)
    return PostLocalSGDOptimizer(optim=make_optimizer(job, params), averager=averager)


def averages_now(optimizer: Any) -> bool:
    """Whether the optimizer's next step ends with a model average (PeriodicModelAverager's
    rule: from warmup_steps on, every period-th step); False for any other optimizer."""
    averager = getattr(optimizer, "averager", None)
    if averager is None:
        return False
    since = averager.step - averager.warmup_steps
    return since >= 0 and since % averager.period == 0


def _ddp(
    job: JobSpec, model: nn.Module, device: torch.device
) -> tuple[nn.Module, Callable[[bool], AbstractContextManager[Any]]]:
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    ddp = DDP(model, device_ids=ids, bucket_cap_mb=job.config.bucket_bytes / MiB)
    register_sync_hook(ddp, job.config)

    def sync(last: bool) -> AbstractContextManager[Any]:
        return contextlib.nullcontext() if last else ddp.no_sync()

    return ddp, sync


def register_sync_hook(ddp: Any, config: ParallelConfig) -> None:
    """The DDP communication hook of the configuration's synchronisation knob: fp16 / bf16
    compression, PowerSGD (rank config.powersgd_rank, error feedback, warm start, plain
    all-reduce for its first SYNC_WARMUP_STEPS steps), or post-local SGD's hook (plain
    all-reduce for SYNC_WARMUP_STEPS steps, then none: the optimizer averages the model,
    see _optimizer). None for a plain all-reduce."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook

    from simplan.compression import SYNC_WARMUP_STEPS

    if config.compress == "fp16":
        ddp.register_comm_hook(None, default_hooks.fp16_compress_hook)
    elif config.compress == "bf16":
        ddp.register_comm_hook(None, bf16_gloo_hook)
    elif config.compress == "powersgd":
        state = powerSGD_hook.PowerSGDState(
            process_group=None,
            matrix_approximation_rank=config.powersgd_rank,
            start_powerSGD_iter=SYNC_WARMUP_STEPS,
            use_error_feedback=True,
            warm_start=True,
        )
        ddp.register_comm_hook(state, powerSGD_hook.powerSGD_hook)
    elif config.local_sgd > 1:
        from torch.distributed.algorithms.ddp_comm_hooks import post_localSGD_hook as local

        # post_local_gradient_allreduce=False: past the warm-up the hook reduces nothing (with
        # True it would keep all-reducing within each node's subgroup, here every rank)
        local_state = local.PostLocalSGDState(
            process_group=None,
            subgroup=None,
            start_localSGD_iter=SYNC_WARMUP_STEPS,
            post_local_gradient_allreduce=False,
        )
        ddp.register_comm_hook(local_state, local.post_localSGD_hook)


def bf16_gloo_hook(process_group, bucket):
    """torch's fp16_compress_hook with bfloat16: torch's own bf16_compress_hook refuses
    gloo on CPU (torch 2.13). Cast the bucket to bfloat16 divided by the world size, all-reduce
    it, copy the result back into the fp32 bucket. Unannotated: DDP refuses a hook whose
    annotations are not its own classes (here they would be strings); not named
    bf16_compress_hook, a name DDP refuses without NCCL."""
    import torch.distributed as dist

    group = process_group if process_group is not None else dist.group.WORLD
    buffer = bucket.buffer()
    compressed = buffer.to(torch.bfloat16).div_(dist.get_world_size(group))
    fut = dist.all_reduce(compressed, group=group, async_op=True).get_future()

    def decompress(done: Any) -> torch.Tensor:
        buffer.copy_(done.value()[0])
        return buffer

    return fut.then(decompress)


def _fsdp_sync(model: nn.Module) -> Callable[[bool], AbstractContextManager[Any]]:
    """Reduce gradients only after the last micro-batch's backward."""

    @contextlib.contextmanager
    def sync(last: bool) -> Any:
        model.set_requires_gradient_sync(last)  # type: ignore[operator]
        yield

    return sync


def _pipeline_trainer(
    job: JobSpec,
    mesh: Any,
    where: Coordinates,
    model: nn.Module,
    graph: ModelGraph,
    inputs: tuple[Any, ...],
    target: torch.Tensor,
    device: torch.device,
) -> Trainer:
    from torch.distributed.pipelining import PipelineStage

    from simplan.runtime.pipeline import chunk_module, schedule_class, stage_bounds

    cfg = job.config
    bounds = stage_bounds(graph, cfg)
    mine = list(range(where.pp, cfg.chunks, cfg.pp))
    parts = [chunk_module(model, graph, bounds[c], bounds[c + 1]) for c in mine]
    if cfg.dp > 1:
        _data_parallel(job, mesh, [(part, list(part.children())) for part in parts])
    group = mesh["pp"].get_group()
    stages = [
        PipelineStage(part, c, cfg.chunks, device, group=group)
        for part, c in zip(parts, mine, strict=True)
    ]
    schedule = schedule_class(cfg)(stages, cfg.num_microbatches, loss_of)
    first, last = 0 in mine, cfg.chunks - 1 in mine
    optimizer = make_optimizer(job, [p for part in parts for p in part.parameters()])
    # only the first stage reads the inputs and only the last the targets: the others drop them
    inputs = inputs if first else ()
    target = target if last else torch.empty(0)

    def run() -> list[torch.Tensor]:
        losses: list[torch.Tensor] = []
        # return_outputs=False: the last stage does not keep every micro-batch's output (the
        # logits) for a caller who does not read them
        kwargs: dict[str, Any] = {"return_outputs": False}
        if last:
            kwargs |= {"target": target, "losses": losses}
        schedule.step(*(inputs if first else ()), **kwargs)
        return losses

    return Trainer(
        optimizer=optimizer,
        global_microbatches=cfg.dp * cfg.num_microbatches,
        holds_loss=last and where.tp == 0,
        run=run,
        modules=tuple(parts),
    )
