"""From (model, cluster, configuration) to the engine's plan: chunk costs, buckets, memory."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from simplan.capabilities import CapabilityProvider, DeviceCapabilities, match_profile, provider_for
from simplan.compression import (
    averaging_compute_s,
    bucket_compute,
    layer_shapes,
    wire_bytes,
)
from simplan.context_parallel import ring_exposed_s
from simplan.costmodel import optimizer_step_s
from simplan.devices import DeviceModel
from simplan.errors import SimplanError
from simplan.model_graph import Layer, ModelGraph
from simplan.parallel import ParallelConfig, balanced_stages
from simplan.profiles import Profile
from simplan.sim.contention import sharing_factor
from simplan.sim.costs import TP_KINDS, LayerStep, layer_steps
from simplan.sim.engine import Bucket, ChunkPlan, EnginePlan, RankPlan
from simplan.sim.experts import (
    deepep_bytes,
    deepep_phases,
    edp_groups,
    ep_groups,
    etp_groups,
    overlapped_ep_s,
)
from simplan.sim.offload import (
    HostStep,
    grad_shard_bytes,
    host_bytes_per_param,
    host_of,
    host_step,
    offloads,
)
from simplan.sim.rank_devices import Grid, cp_group, dp_groups, tp_group
from simplan.sim.rank_memory import step_buffers_bytes
from simplan.topology.comm_calibration import FrameworkCosts
from simplan.tp_overlap import exposed_s
from simplan.units import dtype_bytes

# Bytes per parameter: weights, gradients, optimizer state (Adam). Mixed precision (bf16/fp16)
# as Megatron-LM runs it: bf16 weights (2), fp32 main gradients (4: Megatron accumulates and
# reduces gradients in fp32 main-grad buffers by default, --accumulate-allreduce-grads-in-fp32;
# FSDP2's fp32 sharded parameters also get fp32 gradients), fp32 master weights + two fp32 moments
# (12): 18 bytes per parameter, the count of Megatron-LM's distributed-optimizer documentation
# (NVIDIA/Megatron-LM docs/source/api-guide/dist_optimizer.md @ 50b073cc: 'float16 param, fp32
# grads' 18 bytes, 6 + 12/d with the distributed optimizer). The ZeRO paper's
# 16 counts fp16 gradients (DeepSpeed's default), 2 bytes fewer. Gradient communication stays at
# the training dtype's width.
MIXED = {"weights": 2.0, "grads": 4.0, "optimizer": 12.0}
FP32 = {"weights": 4.0, "grads": 4.0, "optimizer": 8.0}


@dataclass(frozen=True, kw_only=True)
class MemoryParts:
    weights: float
    grads: float
    optimizer: float
    buffers: float
    host: float = 0.0  # CPU offload: the optimizer states, master weights and gradients on the host

    @property
    def static(self) -> float:
        return self.weights + self.grads + self.optimizer + self.buffers


def chunk_bounds(
    graph: ModelGraph, config: ParallelConfig, weights: list[float]
) -> tuple[int, ...]:
    """Layer boundaries of the pipeline chunks: given, Megatron-style (blocks evenly, the
    embedding with the first and the head with the last) when the blocks divide evenly, else
    balanced by compute time."""
    chunks, n = config.chunks, len(graph.layers)
    if config.stages:
        bounds = tuple(config.stages)
        if (
            len(bounds) != chunks + 1
            or bounds[0] != 0
            or bounds[-1] != n
            or any(a >= b for a, b in itertools.pairwise(bounds))
        ):
            raise SimplanError(
                f"stages must be {chunks + 1} increasing layer indices from 0 to "
                f"{n}, got {list(bounds)}"
            )
        return bounds
    if chunks > n:
        raise SimplanError(
            f"pp x virtual stages = {chunks} exceeds the model's {n} layers; "
            f"lower pp or --virtual-stages"
        )
    blocks = [i for i, layer in enumerate(graph.layers) if layer.kind == "transformer_block"]
    if blocks and len(blocks) % chunks == 0 and blocks == list(range(1, n - 1)):
        per = len(blocks) // chunks
        return (0, *[1 + per * k for k in range(1, chunks)], n)
    return balanced_stages(weights, chunks)


def slowest_device(cluster: Any, devices: list[int]) -> DeviceModel:
    models = {cluster.device_model(d).name: cluster.device_model(d) for d in devices}
    return min(models.values(), key=lambda m: (m.peak("bf16"), m.memory_bandwidth_Bps))


def _no_sync(nbytes: float, stage: int) -> float:
    """No gradient exchange between replicas (a single replica)."""
    return 0.0


class Assembler:
    def __init__(
        self,
        graph: ModelGraph,
        cluster: Any,
        config: ParallelConfig,
        grid: Grid,
        profile: Profile | None,
        device: DeviceModel | None = None,
        capabilities: CapabilityProvider | None = None,
    ) -> None:
        """capabilities: what each stage's device can do (simplan.capabilities); by default the
        cluster's provider."""
        self.graph, self.cluster, self.config, self.grid = graph, cluster, config, grid
        self.profile = profile
        self.devices = [
            device or slowest_device(cluster, [d for rep in grid[s] for d in rep])
            for s in range(config.pp)
        ]
        provide = capabilities or provider_for(cluster)
        self.caps: list[DeviceCapabilities] = [provide(dev) for dev in self.devices]
        self.steps = [
            layer_steps(graph, dev, config, match_profile(profile, dev, caps))
            for dev, caps in zip(self.devices, self.caps, strict=True)
        ]
        self.dp_factor = [
            sharing_factor(cluster, "all_reduce", dp_groups(grid, s))
            if config.replicas > 1
            else 1.0
            for s in range(config.pp)
        ]
        self.edp_factor = [
            sharing_factor(cluster, "all_reduce", edp_groups(grid, s, config))
            if config.edp > 1
            else 1.0
            for s in range(config.pp)
        ]
        self._coll = lru_cache(maxsize=4096)(self._collective_uncached)
        # what data-parallel replicas exchange in the step being assembled: 'gradients' (every
        # step, or local SGD's warm-up), 'none' (a local SGD step), 'parameters' (a local SGD
        # step that ends with the model average)
        self.exchange = "gradients"

    def _collective_uncached(self, op: str, nbytes: float, group: tuple[int, ...]) -> float:
        return self.cluster.collective_time(op, nbytes, group)

    def collective(self, op: str, nbytes: float, group: tuple[int, ...]) -> float:
        if len(group) < 2 or nbytes <= 0:
            return 0.0
        return self._coll(op, float(nbytes), group)

    def bounds(self) -> tuple[int, ...]:
        weights = [s.fwd_s + s.bwd_s for s in self.steps[0]]
        return chunk_bounds(self.graph, self.config, weights)

    def tp_times(
        self, steps: tuple[LayerStep, ...], stage: int, forward: bool
    ) -> tuple[float, float]:
        """(exposed, hidden) seconds of the TP collectives of these layers (simplan.tp_overlap
        for the collectives that their layer pairs with a GEMM)."""
        group = tp_group(self.grid, stage)
        fw = self.caps[stage].framework
        per_op, per_byte = (fw.tp_collective_s, fw.tp_s_per_byte) if len(group) > 1 else (0, 0)
        exposed = hidden = 0.0
        for step in steps:
            ops = step.tp_fwd if forward else step.tp_bwd
            gemms = step.tp_fwd_gemm_s if forward else step.tp_bwd_gemm_s
            for i, (op, nbytes) in enumerate(ops):
                seconds = self.collective(op, nbytes, group) + per_op + per_byte * nbytes
                shown = exposed_s(seconds, gemms[i], len(group)) if gemms else seconds
                exposed += shown
                hidden += seconds - shown
        return exposed, hidden

    def comm_times(
        self, steps: tuple[LayerStep, ...], stage: int, forward: bool
    ) -> tuple[float, float]:
        """(exposed, hidden) seconds of the TP and CP transfers of these layers."""
        tp_exposed, tp_hidden = self.tp_times(steps, stage, forward)
        cp_exposed, cp_hidden = self.cp_times(steps, stage, forward)
        return tp_exposed + cp_exposed, tp_hidden + cp_hidden

    def cp_times(
        self, steps: tuple[LayerStep, ...], stage: int, forward: bool
    ) -> tuple[float, float]:
        """(exposed, hidden) seconds of the context-parallel K/V exchanges of these layers: a
        ring's transfers hide step by step behind the attention core and its merges
        (simplan.context_parallel)."""
        if self.config.cp == 1:
            return 0.0, 0.0
        group = cp_group(self.grid, stage, self.config.cp)
        exposed = hidden = 0.0
        for step in steps:
            ops = step.cp_fwd if forward else step.cp_bwd
            behind = step.cp_fwd_attention_s if forward else step.cp_bwd_attention_s
            seconds = sum(self.collective(op, nbytes, group) for op, nbytes in ops)
            shown = (
                ring_exposed_s(seconds, behind, len(group), not forward) if behind > 0 else seconds
            )
            exposed += shown
            hidden += seconds - shown
        return exposed, hidden

    def ep_time(self, steps: tuple[LayerStep, ...], stage: int, forward: bool) -> float:
        """The MoE dispatch and combine of these layers: all-to-alls over the ep group (every ep
        group of the stage at once, sharing links), gathers and scatters over the etp group."""
        cfg = self.config
        if not any(s.ep_fwd for s in steps):
            return 0.0
        eps, etps = ep_groups(self.grid, stage, cfg), etp_groups(self.grid, stage, cfg)
        shared = {
            "all_to_all": (eps[0], sharing_factor(self.cluster, "all_to_all", eps)),
            "etp_all_gather": (etps[0], sharing_factor(self.cluster, "all_gather", etps)),
            "etp_reduce_scatter": (etps[0], sharing_factor(self.cluster, "reduce_scatter", etps)),
        }
        phases = [deepep_phases(g, lambda d: self.cluster.device(d).node) for g in eps]
        rail, node, nodes = phases[0]
        deepep = cfg.moe_dispatcher == "deepep" and nodes > 1
        rail_factor = sharing_factor(self.cluster, "all_to_all", [p[0] for p in phases])
        node_factor = sharing_factor(self.cluster, "all_to_all", [p[1] for p in phases])
        total = 0.0
        for step in steps:
            for op, nbytes in step.ep_fwd if forward else step.ep_bwd:
                if deepep and op == "all_to_all":
                    layer = self.graph.layer(step.name)
                    network = deepep_bytes(nbytes, layer, nodes)
                    total += self.collective("all_to_all", network, rail) * rail_factor
                    total += self.collective("all_to_all", nbytes, node) * node_factor
                    continue
                group, factor = shared[op]
                total += self.collective(op.removeprefix("etp_"), nbytes, group) * factor
        return total

    def expert_sync(self, nbytes: float, stage: int) -> float:
        """Routed-expert gradients: reduced over the expert-data-parallel group only."""
        if nbytes <= 0:
            return 0.0
        op = "reduce_scatter" if self.config.zero == 2 else "all_reduce"
        group = edp_groups(self.grid, stage, self.config)[0]
        return self.collective(op, nbytes, group) * self.edp_factor[stage]

    def grad_sync(self, nbytes: float, stage: int) -> float:
        op = "reduce_scatter" if self.config.zero == 2 else "all_reduce"
        group = dp_groups(self.grid, stage)[0]
        return self.collective(op, nbytes, group) * self.dp_factor[stage]

    def bucket_sync(self, nbytes: float, stage: int) -> float:
        """One bucket's gradient sync; DDP (ZeRO 0) adds its per-bucket framework cost."""
        if nbytes <= 0:
            return 0.0
        fw = self.caps[stage].framework
        extra = fw.ddp_bucket_cost_s(nbytes) if self.config.zero == 0 else 0.0
        return self.grad_sync(nbytes, stage) + extra

    def buckets(
        self, steps: tuple[LayerStep, ...], stage: int, layers: tuple[Layer, ...] = ()
    ) -> tuple[Bucket, ...]:
        """DDP buckets in reverse layer order: a bucket syncs once its last gradient exists (and,
        with CPU offload, then goes to the host). Routed-expert gradients sync over the edp group
        with the bucket they complete in. Without data parallelism, offload's buckets only go to
        the host."""
        cfg = self.config
        dense = cfg.replicas > 1
        experts_synced = cfg.edp > 1 and any(s.expert_params for s in steps)
        if (cfg.zero == 3 and (dense or not offloads(cfg))) or not (
            dense or experts_synced or offloads(cfg)
        ):
            return ()
        grad_b = dtype_bytes(cfg.grad_reduce_dtype)
        if self.exchange != "gradients":
            out = self._local_buckets(steps, stage, grad_b)
        elif cfg.compress != "none":
            out = self._compressed_buckets(steps, layers, stage, grad_b)
        else:
            out = self._plain_buckets(steps, stage, grad_b)
        return self._finish_buckets(steps, stage, out, grad_b)

    def _plain_buckets(
        self,
        steps: tuple[LayerStep, ...],
        stage: int,
        grad_b: int,
        sync: Callable[[float, int], float] | None = None,
    ) -> list[Bucket]:
        """Buckets of `bucket_bytes`, each synced for sync(bytes, stage) seconds (default: an
        all-reduce of them, bucket_sync, when there are replicas)."""
        sync = sync or (self.bucket_sync if self.config.replicas > 1 else _no_sync)
        cap = self.config.bucket_bytes
        out: list[Bucket] = []
        compute, filled, experts = 0.0, 0.0, 0.0
        for step in reversed(steps):
            compute += step.bwd_s
            filled += (step.params - step.expert_params) * grad_b
            experts += step.expert_params * grad_b
            while filled >= cap:
                out.append(self._bucket(compute, cap, experts, stage, sync))
                compute, filled, experts = 0.0, filled - cap, 0.0
        if filled > 0 or compute > 0 or experts > 0:
            out.append(self._bucket(compute, filled, experts, stage, sync))
        return out

    def _bucket(
        self,
        compute_s: float,
        nbytes: float,
        experts_bytes: float,
        stage: int,
        sync: Callable[[float, int], float],
    ) -> Bucket:
        comm = sync(nbytes, stage)
        if self.exchange == "gradients":
            comm += self.expert_sync(experts_bytes, stage)
        return Bucket(compute_s=compute_s, comm_s=comm, host_s=self.to_host_s(nbytes, stage))

    def to_host_s(self, reduced_bytes: float, stage: int) -> float:
        """CPU offload: the device-to-host copy of a rank's share of these reduced gradients."""
        if not offloads(self.config) or reduced_bytes <= 0:
            return 0.0
        host = host_of(self.cluster, self.grid[stage][0][0])
        return grad_shard_bytes(self.config, reduced_bytes) / host.device_link_Bps()

    def _local_buckets(self, steps: tuple[LayerStep, ...], stage: int, grad_b: int) -> list[Bucket]:
        """A local SGD step: DDP's reducer still fills and empties its buckets, but the hook
        (post_localSGD_hook past its warm-up) all-reduces nothing. It returns an already
        completed future, with no callback on gloo's thread (what the measured Python hook
        cost, traces/compression, is mostly made of): no hook cost is added."""
        fw = self.caps[stage].framework

        def framework_only(nbytes: float, _stage: int) -> float:
            if nbytes <= 0 or self.config.zero != 0:
                return 0.0
            return fw.ddp_bucket_cost_s(nbytes)

        return self._plain_buckets(steps, stage, grad_b, framework_only)

    def _compressed_buckets(
        self, steps: tuple[LayerStep, ...], layers: tuple[Layer, ...], stage: int, grad_b: int
    ) -> list[Bucket]:
        """Buckets of whole gradient tensors (reverse layer order, closed once they reach the
        bucket size), each synced through the compression hook (simplan.compression)."""
        if self.config.compress == "powersgd" and self.config.tp > 1:
            raise SimplanError(
                "PowerSGD is simulated on whole parameter matrices, not tensor-parallel shards: "
                "use tp 1 or another --compress"
            )
        cap = self.config.bucket_bytes
        groups: list[tuple[float, list[tuple[int, ...]]]] = []
        compute, shapes, filled = 0.0, [], 0
        for step, layer in zip(reversed(steps), reversed(layers), strict=True):
            compute += step.bwd_s
            # casts see elements only: each layer's (TP shard of) parameters as one tensor
            flat = ((int(step.params),),) if step.params else ()
            tensors = layer_shapes(layer) if self.config.compress == "powersgd" else flat
            for shape in reversed(tensors):
                shapes.append(shape)
                filled += math.prod(shape) * grad_b
                if filled >= cap:
                    groups.append((compute, shapes))
                    compute, shapes, filled = 0.0, [], 0
        if shapes or compute > 0:
            groups.append((compute, shapes))
        return [self._compressed_bucket(c, tuple(s), stage, grad_b) for c, s in groups]

    def _compressed_bucket(
        self, compute_s: float, shapes: tuple[tuple[int, ...], ...], stage: int, grad_b: int
    ) -> Bucket:
        if not shapes:
            return Bucket(compute_s=compute_s, comm_s=0.0)
        cfg = self.config
        rank = cfg.powersgd_rank
        work = bucket_compute(cfg.compress, shapes, rank, self.devices[stage], grad_b)
        wires = wire_bytes(cfg.compress, shapes, rank, grad_b)
        comm = sum(self.grad_sync(w, stage) for w in wires) + sum(work.between_s)
        nbytes = sum(math.prod(s) for s in shapes) * grad_b
        extra = self.caps[stage].framework.ddp_bucket_cost_s(nbytes) if cfg.zero == 0 else 0.0
        return Bucket(compute_s=compute_s, comm_s=comm + extra, encode_s=work.encode_s)

    def _finish_buckets(
        self, steps: tuple[LayerStep, ...], stage: int, out: list[Bucket], grad_b: int
    ) -> tuple[Bucket, ...]:
        if self.config.zero == 0 and self.config.replicas > 1 and out:
            # DDP's reducer: once per synchronisation, at the end
            synced = sum(step.params for step in steps) * grad_b
            last = out[-1]
            out[-1] = dataclasses.replace(
                last, comm_s=last.comm_s + self.caps[stage].framework.ddp_sync_cost_s(synced)
            )
        if not self.config.overlap_grad_reduce:  # every bucket waits for the whole backward
            total = sum(b.compute_s for b in out)
            out = [Bucket(compute_s=total, comm_s=0.0)] + [
                Bucket(compute_s=0.0, comm_s=b.comm_s, encode_s=b.encode_s, host_s=b.host_s)
                for b in out
            ]
        return tuple(out)

    def average_time(self, params: float, stage: int) -> float:
        """Local SGD's model average after the optimizer step (torch's PeriodicModelAverager):
        the parameters flattened, all-reduced at their own width, divided and copied back."""
        width = dtype_bytes(self.config.dtype)
        group = dp_groups(self.grid, stage)[0]
        reduce = self.collective("all_reduce", params * width, group) * self.dp_factor[stage]
        return reduce + averaging_compute_s(params, self.devices[stage], width)

    def fsdp_layers(
        self, steps: tuple[LayerStep, ...], stage: int
    ) -> tuple[tuple[float, ...], tuple[float, ...]]:
        group = dp_groups(self.grid, stage)[0]
        factor = self.dp_factor[stage]
        weight_b = dtype_bytes(self.config.dtype)
        grad_b = dtype_bytes(self.config.grad_reduce_dtype)
        fw = self.caps[stage].framework
        edp = edp_groups(self.grid, stage, self.config)[0]
        edp_factor = self.edp_factor[stage]

        def both(op: str, s: LayerStep, nbytes: float) -> float:
            dense = (s.params - s.expert_params) * nbytes
            own = self._fsdp_collective(op, dense, group, factor, fw)
            return own + self._fsdp_collective(op, s.expert_params * nbytes, edp, edp_factor, fw)

        gather = tuple(
            both("all_gather", s, weight_b)
            + self._fsdp_collective("all_gather", s.frozen_bytes, group, factor, fw)
            for s in steps
        )  # frozen quantized weights are sharded and gathered too, never reduced
        scatter = [both("reduce_scatter", s, grad_b) for s in steps]
        units = [i for i, s in enumerate(steps) if s.params > 0]
        if units and fw.fsdp_step_s:  # the root's per-pass work, with the backward's last unit
            scatter[units[0]] += fw.fsdp_step_s
        return gather, tuple(scatter)

    def _fsdp_collective(
        self, op: str, nbytes: float, group: tuple[int, ...], factor: float, fw: FrameworkCosts
    ) -> float:
        """One FSDP unit's all-gather or reduce-scatter with FSDP2's copy-in/copy-out."""
        if nbytes <= 0 or len(group) < 2:
            return 0.0
        return self.collective(op, nbytes, group) * factor + fw.fsdp_collective_cost_s(nbytes)

    def chunk(self, index: int, lo: int, hi: int, bounds: tuple[int, ...]) -> ChunkPlan:
        cfg = self.config
        rank = index % cfg.pp
        steps = self.steps[rank][lo:hi]
        fsdp = cfg.zero == 3 and cfg.replicas > 1
        gathers, scatters = self.fsdp_layers(steps, rank) if fsdp else ((), ())
        # TP and CP transfers: exposed after the chunk's compute, hidden during it; MoE
        # dispatch and combine exposed, or with --moe-overlap hidden where compute allows
        fwd_tp, fwd_hidden = self.comm_times(steps, rank, True)
        bwd_tp, bwd_hidden = self.comm_times(steps, rank, False)
        ep_f, ep_b = self.ep_time(steps, rank, True), self.ep_time(steps, rank, False)
        shown_f, shown_b = ep_f, ep_b
        if cfg.moe_overlap:
            compute_f, compute_b = sum(s.fwd_s for s in steps), sum(s.bwd_s for s in steps)
            shown_f, shown_b = overlapped_ep_s(ep_f, ep_b, compute_f, compute_b)
        fwd_tp, fwd_hidden = fwd_tp + shown_f, fwd_hidden + ep_f - shown_f
        bwd_tp, bwd_hidden = bwd_tp + shown_b, bwd_hidden + ep_b - shown_b
        if index == 0 and cfg.tp > 1:  # DTensor's per-pass work (its inputs' redistribution)
            fwd_tp += self.caps[rank].framework.tp_step_s
        return ChunkPlan(
            index=index,
            rank=rank,
            fwd_s=sum(s.fwd_s for s in steps),
            fwd_tp_s=fwd_tp,
            bwd_s=sum(s.bwd_s for s in steps),
            bwd_tp_s=bwd_tp,
            fwd_tp_hidden_s=fwd_hidden,
            bwd_tp_hidden_s=bwd_hidden,
            recompute_s=sum(s.recompute_s for s in steps),
            recompute_tp_s=self.recompute_tp(steps, rank, fwd_tp),
            send_fwd_s=self.send_time(index, hi, forward=True),
            send_bwd_s=self.send_time(index, lo, forward=False),
            activation_bytes=sum(s.activation_bytes for s in steps),
            transient_bytes=0.0,  # recomputation's live activations: simplan.sim.peak
            buckets=self.buckets(steps, rank, tuple(self.graph.layers[lo:hi])),
            layer_fwd_s=tuple(s.fwd_s for s in steps) if fsdp else (),
            layer_bwd_s=tuple(s.bwd_s for s in steps) if fsdp else (),
            layer_gather_s=gathers,
            layer_scatter_s=scatters,
            layer_host_s=tuple(
                self.to_host_s(s.params * dtype_bytes(cfg.grad_reduce_dtype), rank) for s in steps
            )
            if fsdp and offloads(cfg)
            else (),
            fwd_p2p_framework_s=self.p2p_framework_time(index),
            bwd_p2p_framework_s=self.p2p_framework_time(index),
        )

    def recompute_tp(self, steps: tuple[LayerStep, ...], rank: int, fwd_tp: float) -> float:
        """The forward transfers full recomputation runs again: the chunk's (fwd_tp) less
        those of the layers it does not recompute (the embedding, the head)."""
        if self.config.recompute != "full":
            return 0.0
        kept = tuple(s for s in steps if not s.recomputed)
        return max(fwd_tp - self.comm_times(kept, rank, True)[0], 0.0) if kept else fwd_tp

    def p2p_framework_time(self, index: int) -> float:
        """The pipeline framework's work on the compute stream for one forward (or backward)
        of a chunk: per receive of its input (its output's gradient) and per send of its output
        (its input's gradient) to a chunk on another rank; none where the device issues them
        off its compute stream."""
        cfg = self.config
        rank = index % cfg.pp
        caps = self.caps[rank]
        per = caps.framework.pp_action_s
        if cfg.pp == 1 or per <= 0 or not caps.p2p_on_compute_stream:
            return 0.0
        before = index > 0 and (index - 1) % cfg.pp != rank
        after = index < cfg.chunks - 1 and (index + 1) % cfg.pp != rank
        return per * (before + after)

    def send_time(self, index: int, cut: int, forward: bool) -> float:
        """p2p of the activations (forward) or their gradients (backward) across a cut;
        with TP, each rank sends its 1/tp slice (Megatron's scatter/gather optimization)."""
        cfg = self.config
        other = index + 1 if forward else index - 1
        if other < 0 or other >= cfg.chunks or cut <= 0 or cut >= len(self.graph.layers):
            return 0.0
        src = self.grid[index % cfg.pp][0][0]
        dst = self.grid[other % cfg.pp][0][0]
        nbytes = self.graph.cut_bytes(cut - 1) * cfg.micro_batch / (cfg.tp * cfg.cp)
        return self.cluster.transfer_time(src, dst, nbytes) if src != dst else 0.0

    def memory(self, rank: int, chunks: list[ChunkPlan], bounds: tuple[int, ...]) -> MemoryParts:
        cfg = self.config
        held = [s for c in chunks for s in self.steps[rank][bounds[c.index] : bounds[c.index + 1]]]
        experts = sum(s.expert_params for s in held)
        params = sum(s.params for s in held) - experts + self._tied_copy(rank, chunks, bounds)
        per = MIXED if cfg.dtype in ("bf16", "fp16") else FP32
        dp = cfg.replicas

        def sharded(kind: str, level: int) -> float:
            """Dense parameters shard over dp x cp, routed experts over edp (ZeRO >= level)."""
            on = cfg.zero >= level
            return per[kind] * (params / (dp if on else 1) + experts / (cfg.edp if on else 1))

        weights, grads, optimizer = (
            sharded("weights", 3),
            sharded("grads", 2),
            sharded("optimizer", 1),
        )
        # FP8 copies of the weights (simplan.fp8) and frozen quantized weights
        # (simplan.quantize), sharded like the weights
        extra = sum(s.fp8_copy_bytes + s.frozen_bytes for s in held)
        weights += extra / (dp if cfg.zero >= 3 else 1)
        host = 0.0
        if offloads(cfg):  # the optimizer's shard lives in host memory
            host = optimizer / per["optimizer"] * host_bytes_per_param(cfg, per["optimizer"])
            optimizer = 0.0
        buffers = step_buffers_bytes(self.graph, cfg, [c.index for c in chunks], bounds)
        if cfg.zero == 0 and dp > 1 and per is FP32:
            # torch DDP's gradient buckets: a flat copy of the gradients (its default,
            # gradient_as_bucket_view=False); Megatron-LM's mixed-precision gradient buffer is
            # itself the bucket (counted with the gradients)
            buffers += grads
        return MemoryParts(
            weights=weights, grads=grads, optimizer=optimizer, buffers=buffers, host=host
        )

    def _tied_copy(self, rank: int, chunks: list[ChunkPlan], bounds: tuple[int, ...]) -> float:
        """A head tied to the embedding keeps its own copy of the weights on another stage."""
        extra = 0.0
        for c in chunks:
            for layer in self.graph.layers[bounds[c.index] : bounds[c.index + 1]]:
                tied = layer.attrs.get("tied_to")
                if tied and self._rank_of_layer(tied, bounds) != rank:
                    split = self.config.tp if self.config.tp > 1 else 1
                    extra += self.graph.layer(tied).params / split
        return extra

    def _rank_of_layer(self, name: str, bounds: tuple[int, ...]) -> int:
        index = self.graph.layers.index(self.graph.layer(name))
        for c in range(len(bounds) - 1):
            if bounds[c] <= index < bounds[c + 1]:
                return c % self.config.pp
        return 0

    def build(self) -> tuple[EnginePlan, list[MemoryParts], tuple[int, ...]]:
        cfg = self.config
        bounds = self.bounds()
        chunks = [self.chunk(i, bounds[i], bounds[i + 1], bounds) for i in range(cfg.chunks)]
        ranks, memory = [], []
        for r in range(cfg.pp):
            mine = [c for c in chunks if c.rank == r]
            parts = self.memory(r, mine, bounds)
            memory.append(parts)
            ranks.append(self.rank_plan(r, mine, bounds))
        plan = EnginePlan(
            pp=cfg.pp,
            microbatches=cfg.num_microbatches,
            schedule=cfg.schedule,
            virtual_stages=cfg.virtual_stages,
            chunks=tuple(chunks),
            ranks=tuple(ranks),
            fsdp=cfg.zero == 3 and cfg.replicas > 1,
        )
        return plan, memory, bounds

    def optimizer_time(self, params: float, stage: int, tensors: int | None = None) -> float:
        """The Adam step over `params` parameters in `tensors` tensors on the device of `stage`:
        measured in the profile when it matches the device, else the device model's
        memory-bound estimate."""
        device = self.devices[stage]
        profile = match_profile(self.profile, device, self.caps[stage])
        if profile is not None and profile.dtype == self.config.dtype and self.graph.params:
            measured = profile.optimizer_step_s(params / self.graph.params, tensors)
            if measured is not None:
                return measured
        return optimizer_step_s(params, device, self.config.dtype)

    def _layers(self, mine: list[ChunkPlan], bounds: tuple[int, ...]) -> list[Layer]:
        layers = self.graph.layers
        return [x for c in mine for x in layers[bounds[c.index] : bounds[c.index + 1]]]

    def dtensor_optimizer(self, layers: list[Layer], rank: int) -> float:
        """What DTensor parameters add to the optimizer step of a rank holding `layers`: per
        step, and per parameter tensor held as a DTensor: every tensor of its tensor-parallel
        layers, or, under FSDP2 (which shards every parameter as a DTensor), every tensor."""
        fw, cfg = self.caps[rank].framework, self.config
        fsdp = cfg.zero == 3 and cfg.replicas > 1
        if (cfg.tp == 1 and not fsdp) or not (fw.tp_optimizer_step_s or fw.tp_optimizer_tensor_s):
            return 0.0
        tensors = sum(x.param_tensors for x in layers if fsdp or x.kind in TP_KINDS)
        return fw.tp_optimizer_step_s + tensors * fw.tp_optimizer_tensor_s

    def rank_plan(self, r: int, mine: list[ChunkPlan], bounds: tuple[int, ...]) -> RankPlan:
        cfg = self.config
        held = [s for c in mine for s in self.steps[r][bounds[c.index] : bounds[c.index + 1]]]
        experts = sum(s.expert_params for s in held)
        params = sum(s.params for s in held) - experts
        on = cfg.zero >= 1
        after = 0.0
        if cfg.zero in (1, 2):
            wb = dtype_bytes(cfg.dtype)
            after = (
                self.collective("all_gather", params * wb, dp_groups(self.grid, r)[0])
                * self.dp_factor[r]
                + self.collective("all_gather", experts * wb, edp_groups(self.grid, r, cfg)[0])
                * self.edp_factor[r]
            )
        if self.exchange == "parameters" and cfg.dp > 1:
            after += self.average_time(params, r)
        layers = self._layers(mine, bounds)
        tensors = sum(x.param_tensors for x in layers) or None
        mine_params = params / (cfg.replicas if on else 1) + experts / (cfg.edp if on else 1)
        host_in = 0.0
        if offloads(cfg) and experts:
            raise SimplanError(
                "--offload optimizer is not modelled for mixture-of-experts layers (their "
                "expert-parallel shards and host traffic); drop --offload"
            )
        if offloads(cfg):
            step = self.host_step(mine_params, r)
            optimizer, host_in = step.optimizer_s, step.h2d_s
        else:
            optimizer = self.optimizer_time(mine_params, r, tensors)
        optimizer += self.dtensor_optimizer(layers, r)
        return RankPlan(
            rank=r,
            device=self.grid[r][0][0],
            optimizer_s=optimizer,
            after_optimizer_comm_s=after,
            overlap=self.caps[r].comm_overlaps_compute,
            framework_s=self.caps[r].framework.pp_step_s if cfg.pp > 1 else 0.0,
            host_in_s=host_in,
            optimizer_on_host=offloads(cfg),
        )

    def host_step(self, shard_params: float, stage: int) -> HostStep:
        """CPU offload: the host's Adam step over a rank's shard and its parameters' way back."""
        device = self.grid[stage][0][0]
        group = self.cluster.node_group(device)
        return host_step(self.config, host_of(self.cluster, device), group.devices_per_node,
                         shard_params)  # fmt: skip
