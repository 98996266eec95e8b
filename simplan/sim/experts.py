"""Mixture-of-experts layers on the ranks of a configuration: expert parallelism (ep),
expert-tensor parallelism (etp), the token dispatch and combine, and the load imbalance.

Megatron-Core's parallel folding: the dp * cp * tp ranks of a pipeline stage run attention as
dp * cp replicas of tp ranks (cp of them splitting each sample's tokens), and the MoE layers as
edp copies of ep * etp ranks (dp * cp * tp = etp * ep * edp). Ranks are numbered tp fastest,
then cp, then dp, as in simplan.sim.rank_devices; the expert ranks are numbered etp fastest,
then ep, then edp, over the same order. With cp > 1 each rank dispatches its own s / cp
tokens of a sample (the MoE layers see tokens, not sequences). So the ep group of a rank is
etp-strided inside a block of ep * etp consecutive ranks, and its edp group takes every
(ep * etp)-th rank of the stage.

Costs per MoE block and micro-batch of b samples on one rank (s tokens per sample, k experts
per token, hidden size h, expert hidden size f, expert matrices `per` = 3 (SwiGLU) or 2):

- compute: the counted block divided by tp (every rank of the stage takes 1/(dp*tp) of the
  stage's dp*b*s*k routed token copies whatever ep and etp are), times the busiest rank's load
  on the routed-expert GEMMs (`rank_load`);
- dispatch: an all_to_all over the ep group of the rank's b*s/tp tokens, k copies each
  (b*s*k*h/tp elements; Megatron-Core splits the tokens of a TP group over its ranks); with
  etp > 1, then an all_gather of the dispatched tokens over the etp group. The combine is the
  mirror image (a reduce_scatter over etp, then an all_to_all). The backward pass moves the
  same bytes the other way: two all-to-alls forward, two backward, none overlapped with compute
  (Megatron-Core's default). With `moe_overlap` (Megatron-Core's
  --overlap-moe-expert-parallel-comm: the 1F1B steady state runs one micro-batch's forward
  beside another's backward, a communication stream beside the compute stream) the
  all-to-alls of a chunk's forward and backward hide behind the compute of both passes:
  exposed = max(a_f + a_b - (c_f + c_b), 0), shared between the passes in proportion to
  their all-to-alls (`overlapped_ep_s`). Every micro-batch is treated as paired (the few of
  the warm-up and cool-down that are not are an error of the order of pp / micro-batches),
  and the compute is taken at full speed (the SMs a dispatch kernel holds are not charged);
- DeepEP dispatch (`moe_dispatcher = 'deepep'`, DeepSeek-V3 report section 3.2.2: tokens go
  over InfiniBand to the GPU of the same in-node index on each target node, then over NVLink
  to the GPUs of their experts): where the ep group spans g > 1 nodes, each all-to-all becomes
  a network phase, an all_to_all over the rank's rail peers (one member of the ep group per
  node) carrying one copy per token and other node it is routed to: with E experts spread
  evenly, a token's k experts reach on average R = g (1 - C(E - E/g, k) / C(E, k)) nodes, of
  which R - (1 - C(E - E/g, k) / C(E, k)) are other nodes; then a node phase, an all_to_all
  over the ep members of the node carrying the k copies per token as the plain dispatch does
  (an upper bound: copies for experts on one GPU are not merged);
- parameters: routed experts are divided by ep * etp, the rest of the block by tp; expert
  gradients are all-reduced over the edp group only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from simplan.costmodel import MmShape
from simplan.model_graph import Layer, OpCost
from simplan.parallel import ParallelConfig
from simplan.sim.rank_devices import Grid

Collective = tuple[str, float]  # (op, nbytes per rank)


def is_moe(layer: Layer) -> bool:
    return layer.is_moe


def expert_matrices(layer: Layer) -> int:
    return 3 if layer.attrs.get("activation") == "swiglu" else 2


def routed_ops(layer: Layer, tp: int, elem_bytes: int) -> OpCost:
    """The routed experts' forward GEMMs per sample on one rank of a TP group, balanced, as
    the cost model times any layer's matrix operations (simplan.costmodel.pass_time_s): FC1
    (with the gate under SwiGLU) and FC2 over the rank's s * k / tp token copies; bytes are the
    activations read and written (each expert's weights are read once per micro-batch, not per
    token)."""
    a = layer.attrs
    copies = a.get("seq_len", 0) * a.get("moe_top_k", 0) / tp
    h, f = a.get("hidden_size", 0), a.get("moe_ffn_hidden_size", 0)
    up = (expert_matrices(layer) - 1) * f  # FC1's output width: f, or 2f with the gate
    return OpCost(
        gemms=(
            (2.0 * copies * h * up, copies * (h + up) * elem_bytes, 1),
            (2.0 * copies * f * h, copies * (f + h) * elem_bytes, 1),
        )
    )


def overlapped_ep_s(
    ep_fwd_s: float, ep_bwd_s: float, compute_fwd_s: float, compute_bwd_s: float
) -> tuple[float, float]:
    """(forward, backward) exposed seconds of a chunk's MoE all-to-alls when each pass's
    transfers overlap the compute of both passes (see the module doc): what the compute of
    c_f + c_b seconds cannot hide of a_f + a_b, split in proportion to a_f and a_b."""
    total = ep_fwd_s + ep_bwd_s
    if total <= 0:
        return 0.0, 0.0
    exposed = max(total - compute_fwd_s - compute_bwd_s, 0.0)
    return exposed * ep_fwd_s / total, exposed * ep_bwd_s / total


def expert_parallel_ops(layer: Layer, ops: OpCost, ep: int) -> OpCost:
    """A pass's counts as one rank of an ep group runs them: the grouped GEMMs over the block's
    E stacked experts (counted as E groups of one rank's token copies) become E / ep groups of
    the copies that ep ranks dispatch to them, the same FLOPs in fewer, taller GEMMs."""
    experts = int(layer.attrs.get("num_experts", 0))
    if ep == 1 or experts <= 1:
        return ops

    def per_rank(mm: MmShape) -> MmShape:
        if mm[0] != experts or mm[4] == 0:
            return mm
        dims = [mm[0] / ep, *mm[1:4]]
        dims[mm[4]] *= ep
        return (dims[0], dims[1], dims[2], dims[3], mm[4], mm[5])

    return dataclasses.replace(ops, mm_shapes=tuple(per_rank(mm) for mm in ops.mm_shapes))


def rank_load(load: float, experts: int, ep: int) -> float:
    """The busiest rank's routed tokens over the mean, when the busiest expert takes `load`
    times the mean and the other experts share the rest evenly: a rank holds n = experts / ep
    experts, the busiest one and n - 1 others at (experts - load) / (experts - 1) of the mean.
    One expert per rank: `load`; all experts on every rank (ep 1): 1."""
    n = experts // ep
    if experts <= 1 or load <= 1.0:
        return 1.0
    others = (n - 1) * (experts - load) / (experts - 1)
    return (load + others) / n


def dispatch_bytes(layer: Layer, config: ParallelConfig, b: int, dtype_bytes: int) -> float:
    """Bytes of one rank's all-to-all buffer in one dispatch (or combine) of b samples."""
    a = layer.attrs
    tokens = a.get("seq_len", 0) * b / config.tp
    return tokens * a.get("moe_top_k", 0) * a.get("hidden_size", 0) * dtype_bytes


def ep_collectives(
    layer: Layer, config: ParallelConfig, b: int, dtype_bytes: int
) -> tuple[tuple[Collective, ...], tuple[Collective, ...]]:
    """(forward, backward) collectives of an MoE block's dispatch and combine: ('all_to_all',
    nbytes) over the ep group, ('etp_all_gather' / 'etp_reduce_scatter', nbytes) over the etp
    group."""
    if not is_moe(layer) or (config.ep == 1 and config.etp == 1):
        return (), ()
    a2a = dispatch_bytes(layer, config, b, dtype_bytes)
    dispatch: tuple[Collective, ...] = (("all_to_all", a2a),) if config.ep > 1 else ()
    combine = dispatch
    if config.etp > 1:
        gathered = a2a * config.etp
        dispatch = (*dispatch, ("etp_all_gather", gathered))
        combine = (("etp_reduce_scatter", gathered), *combine)
    both = dispatch + combine
    return both, both


def split_params(layer: Layer, config: ParallelConfig, tp_split: bool) -> tuple[float, float]:
    """(all parameters, routed-expert parameters) of a layer held by one rank."""
    experts = float(layer.attrs.get("expert_params", 0)) if is_moe(layer) else 0.0
    rest = layer.params - experts
    mine = experts / (config.ep * config.etp)
    return (rest / config.tp if tp_split else rest) + mine, mine


def _stage_ranks(g: Grid, stage: int) -> list[int]:
    return [d for replica in g[stage] for d in replica]


def ep_groups(g: Grid, stage: int, config: ParallelConfig) -> list[tuple[int, ...]]:
    """All ep groups of a stage (the first is rank 0's)."""
    flat, block = _stage_ranks(g, stage), config.ep * config.etp
    return [
        tuple(flat[start + e : start + block : config.etp])
        for start in range(0, len(flat), block)
        for e in range(config.etp)
    ]


def etp_groups(g: Grid, stage: int, config: ParallelConfig) -> list[tuple[int, ...]]:
    flat = _stage_ranks(g, stage)
    return [tuple(flat[i : i + config.etp]) for i in range(0, len(flat), config.etp)]


def edp_groups(g: Grid, stage: int, config: ParallelConfig) -> list[tuple[int, ...]]:
    """All expert-data-parallel groups of a stage: ranks holding the same expert shard."""
    flat, block = _stage_ranks(g, stage), config.ep * config.etp
    return [tuple(flat[i::block]) for i in range(block)]


def remote_nodes(experts: int, k: int, nodes: int) -> float:
    """Expected number of other nodes one token is routed to (see the module doc)."""
    if nodes <= 1:
        return 0.0
    per = experts // nodes
    miss = math.comb(experts - per, k) / math.comb(experts, k)
    return (nodes - 1) * (1.0 - miss)


def deepep_phases(
    group: tuple[int, ...], node_of: Callable[[int], int]
) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """(rail peers, node members, nodes) of the first rank of an ep group: its peers at the
    same position on the group's other nodes, the group's members on its own node."""
    by_node: dict[int, list[int]] = {}
    for d in group:
        by_node.setdefault(node_of(d), []).append(d)
    mine = by_node[node_of(group[0])]
    rail = tuple(members[0] for members in by_node.values() if members)
    return rail, tuple(mine), len(by_node)


def deepep_bytes(nbytes: float, layer: Layer, nodes: int) -> float:
    """The network phase's all-to-all buffer for a plain all-to-all buffer of nbytes: one
    copy per token and other node instead of one per (token, expert), as a buffer of which
    (nodes - 1) / nodes leaves the rank."""
    k = int(layer.attrs.get("moe_top_k", 1))
    remote = remote_nodes(int(layer.attrs["num_experts"]), k, nodes)
    return nbytes / k * remote * nodes / (nodes - 1)
