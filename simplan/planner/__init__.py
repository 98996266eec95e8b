"""The planner: search space, PuLP ILPs (partition, placement), baselines, ranked plans.

from simplan.planner import plan
plans = plan("gpt3-1.3b", "dgx-a100", global_batch=64, nodes=2)
best = plans[0]
best.predicted["step_time_s"], best.config.describe(), best.placement
best.write("plan.json"); best.export("megatron"); best.simulate()
"""

from __future__ import annotations

from typing import Any

from simplan.errors import SimplanError
from simplan.model_graph import ModelGraph
from simplan.parallel import check_trainable_weights
from simplan.planfile import ClusterRef
from simplan.planner.driver import SearchOptions, SearchResult, run_search
from simplan.planner.plan import Plan
from simplan.planner.search import SearchSpace

__all__ = ["Plan", "SearchOptions", "SearchResult", "SearchSpace", "plan", "search"]


def search(model: ModelGraph | str, cluster: Any, options: SearchOptions) -> SearchResult:
    """Search every split of `model` (a ModelGraph, or a preset, TOML or factory loaded at
    options.seq_len and options.dtype) over `cluster` (a Cluster, or a preset or TOML path sized
    by options.nodes and options.gpus_per_node) and return the top plans, the baselines and the
    search's record."""
    from dataclasses import replace

    if options.framework is not None and isinstance(model, str):
        from simplan.planner.export import model_reason

        why = model_reason(options.framework, model)
        if why is not None:  # a model the framework cannot train: no search
            raise SimplanError(f"--framework {options.framework}: {why}")
    if isinstance(cluster, str):
        ref = ClusterRef(
            spec=cluster,
            nodes=options.nodes,
            gpus_per_node=options.gpus_per_node,
            stack=options.stack,
        )
        cluster_obj = ref.load()
    else:
        cluster_obj = cluster
        stack = cluster.spec.stack if cluster.spec.stack != "fitted" else None
        ref = ClusterRef(spec=cluster.name, nodes=cluster.nodes, stack=stack)
    if isinstance(model, ModelGraph):
        graph, name = model, model.meta.get("spec", model.name)
    else:
        from simplan.sources import load_model

        graph = load_model(model, seq_len=options.seq_len, dtype=options.dtype)
        name = model
    check_trainable_weights(graph)
    options = replace(options, space=replace(options.space, dtype=options.dtype))
    return run_search(graph, cluster_obj, str(name), ref, options)


def plan(model: ModelGraph | str, cluster: Any, **options: Any) -> list[Plan]:
    """The best plans, best first (never worse than the pure-DP and Megatron baselines that keep
    the constraints, under the simulator: a baseline that wins is returned as the plan).
    `options` are the fields of SearchOptions (global_batch=..., top=..., time_limit_s=...,
    tp=(4, 4), micro_batch=(1, 64), zero=(0, 1), memory_headroom=Headroom(...))."""
    return list(search(model, cluster, SearchOptions(**options)).plans)
