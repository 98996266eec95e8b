"""The search space: degrees, micro-batch, schedule, virtual stages, ZeRO, recomputation, CPU
offload of the optimizer (where every node's host is described: simplan.topology.host).

Candidates are pruned by divisibility and by a cheap memory lower bound before anything is
costed; each pruned candidate is counted under the reason it fell (a Counter), never raised.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from simplan.headroom import DEFAULT_HEADROOM, Headroom
from simplan.model_graph import ModelGraph
from simplan.op_policy import op_checkpoint_counted
from simplan.parallel import ParallelConfig, tp_mismatch
from simplan.sim.assemble import FP32, MIXED

# micro-batches tried by default: powers of two up to 256 (a CNN's best is often well above 16);
# those that do not fit are pruned by the estimate, so the search time grows with the log of this
MAX_DEFAULT_MICRO_BATCH = 256
DEFAULT_MICRO_BATCHES = tuple(2**k for k in range(MAX_DEFAULT_MICRO_BATCH.bit_length()))
Span = tuple[int, int]  # inclusive (lo, hi)


def micro_batches_in(lo: int, hi: int) -> tuple[int, ...]:
    """The micro-batches tried in lo..hi: both ends and the powers of two between them."""
    powers = {2**k for k in range(hi.bit_length()) if lo <= 2**k <= hi}
    return tuple(sorted(powers | {lo, hi}))


@dataclass(frozen=True, kw_only=True)
class SearchSpace:
    """What the planner may choose. tp_range, pp_range, dp_range: inclusive bounds on the
    degrees (None: any)."""

    micro_batches: tuple[int, ...] = DEFAULT_MICRO_BATCHES
    schedules: tuple[str, ...] = ("1f1b", "interleaved", "gpipe")
    virtual_stages: tuple[int, ...] = (2, 4)
    zero: tuple[int, ...] = (0, 1, 2, 3)
    recompute: tuple[str, ...] = ("none", "selective", "op", "full")
    sequence_parallel: tuple[bool, ...] = (False, True)
    offload: tuple[str, ...] = ("none", "optimizer")  # a plan with offload wins only if faster
    fewer_nodes: int = 2  # also try 1/2, 1/4 ... of the nodes, this many halvings
    dtype: str = "bf16"
    tp_range: Span | None = None
    pp_range: Span | None = None
    dp_range: Span | None = None

    def degree_reason(self, dp: int, tp: int, pp: int) -> str:
        """'' when the degrees are within the bounds, else which bound they break."""
        for name, value, span in (
            ("tp", tp, self.tp_range), ("pp", pp, self.pp_range), ("dp", dp, self.dp_range)
        ):  # fmt: skip
            if span is not None and not span[0] <= value <= span[1]:
                return f"{name} outside --{name} {_span(span)}"
        return ""


def _span(span: Span) -> str:
    return str(span[0]) if span[0] == span[1] else f"{span[0]}-{span[1]}"


def divisors(n: int) -> list[int]:
    """The divisors of n, ascending (O(sqrt n))."""
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return small + [n // d for d in reversed(small) if d * d != n]


def world_sizes(cluster: Any, space: SearchSpace) -> list[int]:
    """All devices first, then whole-node fractions (or divisors of a single node)."""
    per, nodes = cluster.gpus_per_node, cluster.nodes
    if nodes == 1:
        return sorted(divisors(cluster.num_devices), reverse=True)
    sizes = [cluster.num_devices]
    k = nodes
    for _ in range(space.fewer_nodes):
        if k % 2:
            break
        k //= 2
        sizes.append(k * per)
    return sizes


def tp_options(graph: ModelGraph, per_node: int) -> tuple[list[int], dict[int, str]]:
    """TP degrees inside a node that divide heads, KV heads and hidden (and why others fail)."""
    ok, why = [], {}
    for tp in divisors(per_node):
        if tp_mismatch(graph, tp):
            why[tp] = "tp does not divide heads/hidden"
            continue
        ok.append(tp)
    return ok, why


def degrees(
    graph: ModelGraph, cluster: Any, global_batch: int, space: SearchSpace, reasons: Counter
) -> Iterator[tuple[int, int, int]]:
    """(dp, tp, pp) over the world sizes; TP within a node; pp at most the layer count."""
    tps, why = tp_options(graph, cluster.gpus_per_node)
    reasons.update(why.values())
    n = len(graph.layers)
    for world in world_sizes(cluster, space):
        for tp in tps:
            if world % tp:
                continue
            for pp in divisors(world // tp):
                dp = world // (tp * pp)
                outside = space.degree_reason(dp, tp, pp)
                if outside:
                    reasons[outside] += 1
                elif pp > n:
                    reasons["pp exceeds the layer count"] += 1
                elif global_batch % dp:
                    reasons["dp does not divide the global batch"] += 1
                elif world < cluster.num_devices and dp * tp * pp != world:
                    continue
                else:
                    yield dp, tp, pp


def knob_configs(
    graph: ModelGraph, dp: int, tp: int, pp: int, global_batch: int, space: SearchSpace,
    reasons: Counter, offload: tuple[str, ...] = ("none",),
) -> Iterator[ParallelConfig]:  # fmt: skip
    """Micro-batch, schedule, virtual stages, ZeRO, recompute, SP and offload for fixed
    degrees."""
    per_replica = global_batch // dp
    transformer = any(layer.kind == "transformer_block" for layer in graph.layers)
    per_op = transformer and op_checkpoint_counted(graph)
    for mb in space.micro_batches:
        if per_replica % mb:
            reasons["micro-batch does not divide the per-replica batch"] += 1
            continue
        m = per_replica // mb
        for schedule, v in _schedules(pp, m, len(graph.layers), space, reasons):
            for zero in space.zero if dp > 1 else (0,):
                for recompute in space.recompute:
                    if recompute == "selective" and not transformer:
                        continue
                    if recompute == "op" and (tp > 1 or not per_op):
                        continue  # modelled without TP, on blocks counted with it
                    for sp in space.sequence_parallel if tp > 1 and transformer else (False,):
                        for off in offload:
                            yield ParallelConfig(
                                dp=dp, tp=tp, pp=pp, micro_batch=mb, global_batch=global_batch,
                                seq_len=graph.seq_len, schedule=schedule, virtual_stages=v,
                                zero=zero, recompute=recompute, dtype=space.dtype,
                                sequence_parallel=sp, offload=off,
                            )  # fmt: skip


def _schedules(
    pp: int, m: int, layers: int, space: SearchSpace, reasons: Counter
) -> Iterator[tuple[str, int]]:
    if pp == 1:
        yield "1f1b", 1
        return
    for schedule in space.schedules:
        if schedule != "interleaved":
            yield schedule, 1
            continue
        for v in space.virtual_stages:
            if m % pp:
                reasons["interleaved needs micro-batches divisible by pp"] += 1
            elif pp * v > layers:
                reasons["pp x virtual stages exceeds the layer count"] += 1
            else:
                yield "interleaved", v


def memory_floor_bytes(graph: ModelGraph, config: ParallelConfig) -> float:
    """A lower bound on the fullest device's memory: the weights, gradients and optimizer
    state of an equal share of the parameters (with ZeRO sharding); no activations."""
    per = MIXED if config.dtype in ("bf16", "fp16") else FP32
    dp, z = config.dp, config.zero
    share = graph.trainable_params / (config.tp * config.pp)
    frozen = graph.frozen_bytes / (config.tp * config.pp * (dp if z >= 3 else 1))
    optimizer = 0.0 if config.offload == "optimizer" else per["optimizer"]
    return frozen + share * (
        per["weights"] / (dp if z >= 3 else 1)
        + per["grads"] / (dp if z >= 2 else 1)
        + optimizer / (dp if z >= 1 else 1)
    )


def minimum_memory_bytes(
    graph: ModelGraph, devices: int, dtype: str, offload: bool = False
) -> float:
    """The least memory per device any plan needs: everything sharded over all devices (with
    `offload`, the optimizer's states in host memory)."""
    per = MIXED if dtype in ("bf16", "fp16") else FP32
    kept = sum(v for k, v in per.items() if not (offload and k == "optimizer"))
    return (graph.trainable_params * kept + graph.frozen_bytes) / devices


def offload_options(cluster: Any, space: SearchSpace, reasons: Counter) -> tuple[str, ...]:
    """The space's offload modes this cluster can run: offload needs GPUs whose hosts are
    described."""
    if "optimizer" not in space.offload:
        return space.offload
    if all(g.device.kind == "gpu" and g.host is not None for g in cluster.spec.groups):
        return space.offload
    reasons["offload: the cluster describes no host (or has CPU devices)"] += 1
    return tuple(x for x in space.offload if x != "optimizer")


def candidates(
    graph: ModelGraph, cluster: Any, global_batch: int, space: SearchSpace,
    headroom: Headroom = DEFAULT_HEADROOM,
) -> tuple[list[ParallelConfig], Counter]:  # fmt: skip
    """Every configuration that passes divisibility and the memory floor (within each device's
    capacity less the headroom); the others counted."""
    reasons: Counter = Counter()
    capacity = max(
        headroom.usable_bytes(cluster.device_model(d).memory_bytes)
        for d in range(cluster.num_devices)
    )
    out = []
    offload = offload_options(cluster, space, reasons)
    for dp, tp, pp in degrees(graph, cluster, global_batch, space, reasons):
        for config in knob_configs(graph, dp, tp, pp, global_batch, space, reasons, offload):
            if memory_floor_bytes(graph, config) > capacity:
                reasons["memory (parameters and optimizer state)"] += 1
            else:
                out.append(config)
    return out, reasons
