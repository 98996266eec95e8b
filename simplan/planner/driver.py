"""search(): candidates -> analytic estimates -> ILP partitions for the best -> simulation of the
top K -> ranked plans, with the baselines always simulated beside them."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from simplan.errors import SimplanError
from simplan.model_graph import ModelGraph
from simplan.parallel import ParallelConfig
from simplan.planfile import ClusterRef
from simplan.planner.baselines import first_fitting, megatron_configs, pure_dp_configs
from simplan.planner.estimate import CostContext, Estimate, estimate
from simplan.planner.layouts import Layout, layouts, node_classes
from simplan.planner.partition import default_bounds, ilp_bounds
from simplan.planner.plan import Plan
from simplan.planner.search import SearchSpace, candidates, minimum_memory_bytes
from simplan.units import GiB

ProgressFn = Callable[[str, int, int], None]
Scored = tuple[Estimate, ParallelConfig, Layout, tuple[int, ...]]


@dataclass(frozen=True, kw_only=True)
class SearchOptions:
    """What a search is asked for and how long it may take.

    global_batch: samples per optimizer step.
    seq_len: tokens per sample (None: the model's own).
    top: plans to simulate and return, best first.
    time_limit_s: seconds for the search's ILP solves.
    nodes, gpus_per_node: the size of a cluster given by name (preset or TOML file).
    dtype: 'bf16', 'fp16' or 'fp32' (the search space's dtype).
    space: what the planner may choose.
    progress: called with (label, done, total) as the search advances.
    refine: the best pipelined candidates given an ILP partition (at least 2 x top).
    """

    global_batch: int
    seq_len: int | None = None
    top: int = 3
    time_limit_s: float = 10.0
    nodes: int | None = None
    gpus_per_node: int | None = None
    dtype: str = "bf16"
    space: SearchSpace = field(default_factory=SearchSpace)
    progress: ProgressFn | None = field(default=None, compare=False)
    refine: int = 8

    def __post_init__(self) -> None:
        gb = self.global_batch
        if not isinstance(gb, int) or isinstance(gb, bool) or gb <= 0:
            raise SimplanError(f"global batch must be a positive integer, got {gb!r}")
        if self.top <= 0:
            raise SimplanError(f"--top must be a positive integer, got {self.top}")
        if not self.time_limit_s > 0:
            raise SimplanError(f"--time-limit must be positive, got {self.time_limit_s}")


@dataclass(frozen=True, kw_only=True)
class SearchResult:
    plans: tuple[Plan, ...]
    baselines: tuple[Plan, ...]
    candidates: int
    evaluated: int
    infeasible: dict[str, int]
    search_time_s: float
    solves: tuple[dict[str, Any], ...]
    simulated: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "plans": [p.summary() for p in self.plans],
            "baselines": [p.summary() for p in self.baselines],
            "search_time_s": self.search_time_s,
            "candidates": self.candidates,
            "evaluated": self.evaluated,
            "simulated": self.simulated,
            "infeasible": dict(self.infeasible),
            "solves": list(self.solves),
        }


class Search:
    def __init__(
        self, graph: ModelGraph, cluster: Any, model: str, ref: ClusterRef, options: SearchOptions
    ) -> None:
        self.graph, self.cluster, self.model, self.ref = graph, cluster, model, ref
        self.global_batch, self.space = options.global_batch, options.space
        self.time_limit_s = options.time_limit_s
        self.ctx = CostContext(graph, cluster, options.space.dtype)
        self.progress = options.progress or (lambda label, done, total: None)
        self.reasons: Counter = Counter()
        self.solves: list[dict[str, Any]] = []
        self.simulated = 0
        self.records: dict[tuple[ParallelConfig, str], dict[str, Any]] = {}
        self._layouts: dict[tuple[int, int, int], list[Layout]] = {}
        self._subclusters: dict[int, tuple[Any, ClusterRef]] = {}

    def layouts(self, dp: int, tp: int, pp: int) -> list[Layout]:
        key = (dp, tp, pp)
        if key not in self._layouts:
            self._layouts[key] = layouts(self.cluster, dp, tp, pp)
        return self._layouts[key]

    def score(self, config: ParallelConfig, layout: Layout) -> Scored:
        bounds = default_bounds(self.ctx, config, layout)
        return estimate(self.ctx, config, layout, bounds), config, layout, bounds

    def evaluate(self, configs: list[ParallelConfig]) -> list[Scored]:
        out = []
        for i, config in enumerate(configs):
            if i % 500 == 0:
                self.progress("estimating", i, len(configs))
            for layout in self.layouts(config.dp, config.tp, config.pp):
                scored = self.score(config, layout)
                est = scored[0]
                if est.fits or _balanced_fits(est):
                    out.append(scored)
                else:
                    self.reasons["memory (activations, estimated)"] += 1
        out.sort(key=_rank_key)
        return out

    def refine(self, ranked: list[Scored], count: int, deadline: float) -> list[Scored]:
        """The ILP partition for the best `count` pipelined (GPipe/1F1B) candidates."""
        picks = [
            i for i, (_e, c, _l, _b) in enumerate(ranked)
            if c.pp > 1 and c.schedule != "interleaved"
        ][:count]  # fmt: skip
        for k, i in enumerate(picks):
            self.progress("partition ILP", k, len(picks))
            _est, config, layout, bounds = ranked[i]
            limit = max(min(self.time_limit_s, deadline - time.perf_counter()), 0.5)
            new, record = ilp_bounds(self.ctx, config, layout, limit)
            row = record.to_dict() | {"candidate": config.describe()}
            self.solves.append(row)
            self.records[(config, layout.label)] = row
            if new is not None and new != bounds:
                est2 = estimate(self.ctx, config, layout, new)
                if _rank_key((est2, config, layout, new)) < _rank_key(ranked[i]):
                    ranked[i] = (est2, config, layout, new)
        ranked.sort(key=_rank_key)
        return ranked

    def subcluster(self, world: int) -> tuple[Any, ClusterRef]:
        if world == self.cluster.num_devices:
            return self.cluster, self.ref
        if world not in self._subclusters:
            from simplan.topology import load_cluster

            per = self.cluster.gpus_per_node
            if world < per:
                sub = load_cluster(self.cluster.spec, nodes=1, gpus_per_node=world)
                ref = ClusterRef(spec=self.ref.spec, nodes=1, gpus_per_node=world)
            else:
                sub = load_cluster(self.cluster.spec, nodes=world // per)
                ref = ClusterRef(spec=self.ref.spec, nodes=world // per)
            self._subclusters[world] = (sub, ref)
        return self._subclusters[world]

    def to_plan(self, scored: Scored, role: str = "plan") -> Plan:
        est, config, layout, bounds = scored
        cluster, ref = self.subcluster(config.world_size)
        identity = layout.order == tuple(range(config.world_size))
        return Plan(
            model=self.model,
            cluster=ref,
            config=config.replace(stages=bounds),
            placement=() if identity else layout.order,
            layout=layout.label,
            estimate={
                "step_time_s": est.step_time_s,
                "peak_memory_bytes": est.peak_memory_bytes,
                "fits": est.fits,
                "stage_time_s": list(est.stage_time_s),
                "stage_memory_bytes": list(est.stage_memory_bytes),
                **est.parts,
            },
            role=role,
            solves=tuple(
                [*layout.solves, self.records[(config, layout.label)]]
                if (config, layout.label) in self.records
                else layout.solves
            ),
            graph=self.graph,
            cluster_obj=cluster,
        )

    def simulate(self, plan: Plan) -> Plan:
        from dataclasses import replace

        result = plan.simulate(record=False)
        self.simulated += 1
        predicted = {
            "step_time_s": result.step_time_s,
            "samples_per_s": result.samples_per_s,
            "tokens_per_s": result.tokens_per_s,
            "tflops_per_device": result.tflops_per_device,
            "mfu": result.mfu,
            "peak_memory_bytes": result.peak_memory_bytes,
            "fits_memory": result.fits_memory,
            "breakdown": result.breakdown,
            "critical_path": list(result.critical_path),
            "stages": [
                {
                    "stage": d.stage,
                    "device_name": d.device_name,
                    "busy_s": d.busy_s,
                    "exposed_comm_s": d.exposed_comm_s,
                    "bubble_s": d.bubble_s,
                    "peak_memory_bytes": d.peak_memory_bytes,
                    "capacity_bytes": d.capacity_bytes,
                }
                for d in result.devices
            ],
        }
        return replace(plan, predicted=predicted)


def _balanced_fits(est: Estimate) -> bool:
    """Could a better partition fit? (the memory averaged over stages fits the smallest)"""
    mean = sum(est.stage_memory_bytes) / len(est.stage_memory_bytes)
    return mean <= min(est.stage_capacity_bytes)


def _rank_key(scored: Scored) -> tuple[bool, float]:
    return (not scored[0].fits, scored[0].step_time_s)


def _plan_key(plan: Plan) -> tuple[bool, float]:
    return (not plan.fits, plan.step_time_s)


def check_fits_somewhere(graph: ModelGraph, cluster: Any, dtype: str) -> None:
    need = minimum_memory_bytes(graph, cluster.num_devices, dtype)
    have = max(cluster.device_model(d).memory_bytes for d in range(cluster.num_devices))
    if need > have:
        raise SimplanError(
            f"{graph.name} needs at least {need / GiB:.1f} GiB per device even fully sharded "
            f"(ZeRO-3) over all {cluster.num_devices} devices, which have {have / GiB:.0f} GiB; "
            f"use at least {int(-(-need * cluster.num_devices // have))} such devices (--nodes)"
        )


def run_search(
    graph: ModelGraph, cluster: Any, model: str, ref: ClusterRef, options: SearchOptions
) -> SearchResult:
    """The search on a loaded graph and cluster (options' nodes, gpus_per_node, seq_len and
    dtype are already applied to them; space.dtype is the one searched)."""
    started = time.perf_counter()
    global_batch, top, space = options.global_batch, options.top, options.space
    if len(node_classes(cluster)) > 1:
        from dataclasses import replace

        space = replace(space, fewer_nodes=0)
        options = replace(options, space=space)
    check_fits_somewhere(graph, cluster, space.dtype)
    s = Search(graph, cluster, model, ref, options)
    configs, reasons = candidates(graph, cluster, global_batch, space)
    s.reasons.update(reasons)
    ranked = s.evaluate(configs)
    ranked = s.refine(ranked, max(options.refine, 2 * top), started + options.time_limit_s)
    plans = _simulate_top(s, ranked, top)
    baselines = _baselines(s)
    plans = _merge(plans, baselines, top)
    if not plans or not plans[0].fits:
        raise SimplanError(
            f"no configuration of {graph.name} fits {cluster.name} with global batch "
            f"{global_batch} ({sum(s.reasons.values())} candidates fell: "
            f"{', '.join(f'{k} {v}' for k, v in s.reasons.most_common(3))}); add devices"
        )
    return SearchResult(
        plans=tuple(plans),
        baselines=tuple(baselines),
        candidates=len(configs) + sum(reasons.values()),
        evaluated=len(ranked),
        infeasible=dict(s.reasons),
        search_time_s=time.perf_counter() - started,
        solves=tuple(s.solves),
        simulated=s.simulated,
    )


def _simulate_top(s: Search, ranked: list[Scored], top: int) -> list[Plan]:
    out: list[Plan] = []
    budget = top + 3
    seen: set[tuple[ParallelConfig, float]] = set()
    unique = []
    for scored in ranked:
        key = (scored[1], round(scored[0].step_time_s, 9))
        if key not in seen:
            seen.add(key)
            unique.append(scored)
        if len(unique) >= budget:
            break
    for i, scored in enumerate(unique):
        s.progress("simulating", i, len(unique))
        plan = s.simulate(s.to_plan(scored))
        if plan.fits:
            out.append(plan)
        else:
            s.reasons["memory (simulated)"] += 1
        if len(out) >= top:
            break
    return out


def _baselines(s: Search) -> list[Plan]:
    n, dtype, gb = s.cluster.num_devices, s.space.dtype, s.global_batch
    per = s.cluster.gpus_per_node
    out = []
    for role, configs in (
        ("baseline:pure-dp", pure_dp_configs(s.graph, n, gb, dtype)),
        ("baseline:megatron", megatron_configs(s.graph, n, per, gb, dtype)),
    ):
        tried = 0
        while tried < 4:
            config = first_fitting(
                configs, lambda c: s.score(c, s.layouts(c.dp, c.tp, c.pp)[0])[0].fits
            )
            if config is None:
                break
            plan = s.simulate(
                s.to_plan(s.score(config, s.layouts(config.dp, config.tp, config.pp)[0]), role)
            )
            tried += 1
            if plan.fits:
                out.append(plan)
                break
    return out


def _merge(plans: list[Plan], baselines: list[Plan], top: int) -> list[Plan]:
    """The ranked plans; a baseline that beats them takes its place among them."""
    seen = {p.config for p in plans}
    pool = plans + [b for b in baselines if b.config not in seen]
    pool.sort(key=_plan_key)
    return pool[:top]
