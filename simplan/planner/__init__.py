"""The planner: search space, PuLP ILPs (partition, placement), baselines, ranked plans.

from simplan.planner import plan
plans = plan("gpt3-1.3b", "dgx-a100", global_batch=64, nodes=2)
best = plans[0]
best.predicted["step_time_s"], best.config.describe(), best.placement
best.write("plan.json"); best.export("megatron"); best.simulate()
"""

from __future__ import annotations

from typing import Any

from simplan.deadline import Deadline
from simplan.model_graph import ModelGraph
from simplan.planfile import ClusterRef
from simplan.planner.driver import DEFAULT_TIME_LIMIT_S, ProgressFn, SearchResult, run_search
from simplan.planner.plan import Plan
from simplan.planner.search import SearchSpace

__all__ = ["Plan", "SearchResult", "SearchSpace", "plan", "search"]


def search(
    model: ModelGraph | str,
    cluster: Any,
    *,
    global_batch: int,
    seq_len: int | None = None,
    top: int = 3,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    nodes: int | None = None,
    gpus_per_node: int | None = None,
    dtype: str = "bf16",
    space: SearchSpace | None = None,
    progress: ProgressFn | None = None,
    deadline: Deadline | None = None,
) -> SearchResult:
    """Search every split of `model` over `cluster` (a preset, TOML path or Cluster) and
    return the top plans, the baselines and the search's record.

    time_limit_s bounds the whole search (loading, estimates, ILP solves, simulations), counted
    from `deadline` when given (a verb makes it as it starts), else from this call: what was
    found by then is returned, with `cut_short` saying what the limit cut."""
    from dataclasses import replace

    from simplan.errors import SimplanError
    from simplan.limits import check_global_batch

    if not isinstance(global_batch, int) or global_batch <= 0:
        raise SimplanError(f"global batch must be a positive integer, got {global_batch!r}")
    check_global_batch(global_batch, "--global-batch")
    if top <= 0:
        raise SimplanError(f"--top must be a positive integer, got {top}")
    if not time_limit_s > 0:
        raise SimplanError(f"--time-limit must be a positive number of seconds, got {time_limit_s}")
    deadline = deadline or Deadline.after(time_limit_s)
    if isinstance(cluster, str):
        from simplan.topology import load_cluster

        ref = ClusterRef(spec=cluster, nodes=nodes, gpus_per_node=gpus_per_node)
        cluster_obj = load_cluster(cluster, nodes=nodes, gpus_per_node=gpus_per_node)
    else:
        cluster_obj = cluster
        ref = ClusterRef(spec=cluster.name, nodes=cluster.nodes)
    if isinstance(model, ModelGraph):
        graph, name = model, model.meta.get("spec", model.name)
    else:
        from simplan.sources import load_model

        graph, name = load_model(model, seq_len=seq_len, dtype=dtype), model
    space = replace(space or SearchSpace(), dtype=dtype)
    return run_search(
        graph, cluster_obj, str(name), ref, global_batch=global_batch, top=top,
        time_limit_s=time_limit_s, space=space, progress=progress, deadline=deadline,
    )  # fmt: skip


def plan(
    model: ModelGraph | str,
    cluster: Any,
    *,
    global_batch: int,
    seq_len: int | None = None,
    top: int = 3,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    **kwargs: Any,
) -> list[Plan]:
    """The best plans, best first (never worse than the pure-DP and Megatron baselines under
    the simulator: a baseline that wins is returned as the plan)."""
    result = search(
        model, cluster, global_batch=global_batch, seq_len=seq_len, top=top,
        time_limit_s=time_limit_s, **kwargs,
    )  # fmt: skip
    return list(result.plans)
