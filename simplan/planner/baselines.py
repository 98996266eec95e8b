"""The obvious plans every answer is measured against.

pure-dp: every device a data-parallel replica (tp = pp = 1), with the smallest ZeRO stage (then
recomputation, then micro-batch) that fits. megatron: Megatron-LM's rule of thumb, TP = the GPUs
of a node, pipeline stages across nodes with the smallest pp that fits, 1F1B, micro-batch 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from simplan.errors import SimplanError
from simplan.model_graph import ModelGraph
from simplan.parallel import ParallelConfig
from simplan.planner.search import divisors, tp_options


def pure_dp_configs(
    graph: object, devices: int, global_batch: int, dtype: str
) -> Iterator[ParallelConfig]:
    """In the order to try: ZeRO 0..3, then recomputation, largest micro-batch first."""
    if global_batch % devices:
        return
    per = global_batch // devices
    for recompute in ("none", "full"):
        for zero in (0, 1, 2, 3):
            for mb in (d for d in range(16, 0, -1) if per % d == 0):
                yield ParallelConfig(
                    dp=devices, micro_batch=mb, global_batch=global_batch, zero=zero,
                    recompute=recompute, dtype=dtype, seq_len=getattr(graph, "seq_len", 0),
                )  # fmt: skip


def megatron_configs(
    graph: ModelGraph, devices: int, per_node: int, global_batch: int, dtype: str
) -> Iterator[ParallelConfig]:
    """TP = GPUs per node (or the largest TP that divides the heads), pp ascending."""
    tps, _ = tp_options(graph, per_node)
    tp = max(tps)
    layers = len(graph.layers)
    for recompute in ("none", "full"):
        for pp in divisors(devices // tp):
            dp = devices // (tp * pp)
            if pp > layers or global_batch % dp:
                continue
            try:
                yield ParallelConfig(
                    dp=dp, tp=tp, pp=pp, micro_batch=1, global_batch=global_batch,
                    recompute=recompute, dtype=dtype, schedule="1f1b",
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
