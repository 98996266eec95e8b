"""The obvious plans every answer is measured against.

pure-dp: every device a data-parallel replica (tp = pp = 1), with the smallest ZeRO stage (then
recomputation, then micro-batch, the largest of the search's default micro-batches first) that
fits. megatron: Megatron-LM's recipe as users run it (Narayanan et al. 2021, Korthikanti et al.
2022): TP = the GPUs of a node with sequence parallelism, pipeline stages across nodes with the
smallest pp that fits, the distributed optimizer (ZeRO-1) when dp > 1, the interleaved schedule
(2 virtual stages) where the micro-batches and layers allow it, else 1F1B; micro-batch 1; no
recomputation, then selective, then full, whichever fits first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from simplan.errors import SimplanError
from simplan.model_graph import ModelGraph
from simplan.parallel import ParallelConfig
from simplan.planner.search import DEFAULT_MICRO_BATCHES, divisors, tp_options

MEGATRON_VIRTUAL_STAGES = 2  # interleaved chunks per pipeline rank in the Megatron baseline


def pure_dp_configs(
    graph: object, devices: int, global_batch: int, dtype: str
) -> Iterator[ParallelConfig]:
    """In the order to try: ZeRO 0..3, then recomputation, largest micro-batch first."""
    if global_batch % devices:
        return
    per = global_batch // devices
    for recompute in ("none", "full"):
        for zero in (0, 1, 2, 3):
            for mb in (d for d in sorted(DEFAULT_MICRO_BATCHES, reverse=True) if per % d == 0):
                yield ParallelConfig(
                    dp=devices, micro_batch=mb, global_batch=global_batch, zero=zero,
                    recompute=recompute, dtype=dtype, seq_len=getattr(graph, "seq_len", 0),
                )  # fmt: skip


def megatron_configs(
    graph: ModelGraph, devices: int, per_node: int, global_batch: int, dtype: str
) -> Iterator[ParallelConfig]:
    """TP = GPUs per node (or the largest TP that divides the heads) with sequence parallelism,
    pp ascending, the distributed optimizer, interleaving where it applies."""
    tps, _ = tp_options(graph, per_node)
    tp = max(tps)
    layers = len(graph.layers)
    transformer = any(layer.kind == "transformer_block" for layer in graph.layers)
    recomputes = ("none", "selective", "full") if transformer else ("none", "full")
    for recompute in recomputes:
        for pp in divisors(devices // tp):
            dp = devices // (tp * pp)
            if pp > layers or global_batch % dp:
                continue
            m, v = global_batch // dp, MEGATRON_VIRTUAL_STAGES
            interleave = pp > 1 and m % pp == 0 and pp * v <= layers
            try:
                yield ParallelConfig(
                    dp=dp, tp=tp, pp=pp, micro_batch=1, global_batch=global_batch,
                    recompute=recompute, dtype=dtype,
                    schedule="interleaved" if interleave else "1f1b",
                    virtual_stages=v if interleave else 1, zero=1 if dp > 1 else 0,
                    sequence_parallel=transformer and tp > 1,
                    seq_len=getattr(graph, "seq_len", 0),
                )  # fmt: skip
            except SimplanError:
                continue


def first_fitting(
    configs: Iterator[ParallelConfig], fits: Callable[[ParallelConfig], bool]
) -> ParallelConfig | None:
    for config in configs:
        if fits(config):
            return config
    return None
