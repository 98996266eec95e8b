"""search(): candidates -> analytic estimates -> ILP partitions for the best -> simulation of the
top K -> ranked plans, with the baselines always simulated beside them.

One deadline bounds the whole search: the estimates may take half of the time left when they
start, the ILPs half of what is left then (each at most ILP_SOLVE_LIMIT_S), the simulations of
the top candidates and baselines the rest (one is started only while the longest so far would
still end in time, and is left behind at the deadline). Estimates are made in a fixed
pseudo-random order of the candidates, so that a cut leaves an even sample of the space, and
ranked as if in enumeration order, so that an uncut search ranks exactly as an exhaustive one.
What the limit cut is said in `cut_short`.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from simplan.deadline import Deadline, TimeLimitReached, call_before
from simplan.errors import SimplanError
from simplan.headroom import DEFAULT_HEADROOM, Headroom
from simplan.limits import check_global_batch
from simplan.model_graph import ModelGraph
from simplan.parallel import ParallelConfig
from simplan.planfile import ClusterRef
from simplan.planner.baselines import first_fitting, megatron_configs, pure_dp_configs
from simplan.planner.estimate import CostContext, Estimate, estimate, megatron_bounds
from simplan.planner.export import FRAMEWORKS, TARGETS, config_reason
from simplan.planner.layouts import Layout, layouts, node_classes
from simplan.planner.partition import default_bounds, ilp_bounds
from simplan.planner.plan import Plan
from simplan.planner.search import (
    SearchSpace,
    Span,
    candidates,
    micro_batches_in,
    minimum_memory_bytes,
    offload_options,
)
from simplan.units import GiB

ProgressFn = Callable[[str, int, int], None]
Scored = tuple[Estimate, ParallelConfig, Layout, tuple[int, ...]]

DEFAULT_TIME_LIMIT_S = 60.0  # the whole search, loading included when a verb passes its deadline
ILP_SOLVE_LIMIT_S = 10.0  # the most one partition ILP may take
MIN_SOLVE_S = 0.2  # an ILP is not started with less time than this left
ESTIMATE_SHARE = 0.5  # of the time left as the estimates start
REFINE_SHARE = 0.5  # of the time left as the partition ILPs start


@dataclass(frozen=True, kw_only=True)
class SearchOptions:
    """What a search is asked for and how long it may take.

    global_batch: samples per optimizer step.
    seq_len: tokens per sample (None: the model's own).
    top: plans to simulate and return, best first.
    time_limit_s: seconds for the whole search (loading, estimates, ILP solves, simulations):
        what was found by then is returned, with `cut_short` saying what the limit cut.
    nodes, gpus_per_node: the size of a cluster given by name (preset or TOML file).
    dtype: 'bf16', 'fp16' or 'fp32' (the search space's dtype).
    space: what the planner may choose.
    progress: called with (label, done, total) as the search advances.
    refine: the best pipelined candidates given an ILP partition (at least 2 x top).
    deadline: when the time limit ends (a verb makes it as it starts, so that loading counts);
        None: time_limit_s from the start of the search.
    tp, pp, dp: (lo, hi) inclusive bounds on a degree, (n, n) to fix it; None: any.
    micro_batch: (lo, hi) the micro-batches tried (both ends and the powers of two between);
        None: the space's (powers of two up to 256).
    zero, schedules: the ZeRO stages and pipeline schedules allowed; None: the space's.
    memory_headroom: kept free on every device; no plan is proposed above capacity less it.
    framework: propose only what this framework (one of export.TARGETS) can run, by the rules
        its export refuses with; None: any.
    """

    global_batch: int
    seq_len: int | None = None
    top: int = 3
    time_limit_s: float = DEFAULT_TIME_LIMIT_S
    nodes: int | None = None
    gpus_per_node: int | None = None
    stack: str | None = None  # the training stack of a cluster given by name (devices.STACKS)
    dtype: str = "bf16"
    space: SearchSpace = field(default_factory=SearchSpace)
    progress: ProgressFn | None = field(default=None, compare=False)
    refine: int = 8
    deadline: Deadline | None = field(default=None, compare=False)
    tp: Span | None = None
    pp: Span | None = None
    dp: Span | None = None
    micro_batch: Span | None = None
    zero: tuple[int, ...] | None = None
    schedules: tuple[str, ...] | None = None
    memory_headroom: Headroom = DEFAULT_HEADROOM
    framework: str | None = None

    def __post_init__(self) -> None:
        gb = self.global_batch
        if not isinstance(gb, int) or isinstance(gb, bool) or gb <= 0:
            raise SimplanError(f"global batch must be a positive integer, got {gb!r}")
        check_global_batch(gb, "--global-batch")
        if self.top <= 0:
            raise SimplanError(f"--top must be a positive integer, got {self.top}")
        if not self.time_limit_s > 0:
            raise SimplanError(
                f"--time-limit must be a positive number of seconds, got {self.time_limit_s}"
            )
        for name in ("tp", "pp", "dp", "micro_batch"):
            span = getattr(self, name)
            if span is not None and not 1 <= span[0] <= span[1]:
                flag = "--" + name.replace("_", "-")
                raise SimplanError(f"{flag} must be N or LO-HI with 1 <= LO <= HI, got {span}")
        if self.zero is not None and (not self.zero or not set(self.zero) <= {0, 1, 2, 3}):
            raise SimplanError(f"--zero takes stages from 0, 1, 2, 3, got {self.zero}")
        known = SearchSpace().schedules
        if self.schedules is not None and (
            not self.schedules or not set(self.schedules) <= set(known)
        ):
            raise SimplanError(
                f"--schedules takes some of {', '.join(known)}, got {', '.join(self.schedules)}"
            )
        if self.framework is not None and self.framework not in TARGETS:
            raise SimplanError(
                f"--framework takes one of {', '.join(TARGETS)}, got {self.framework!r}"
            )

    def allows(self, config: ParallelConfig) -> bool:
        """Whether `config` keeps the constraints asked (a baseline that breaks one is shown
        beside the plans, never proposed among them)."""
        for span, value in (
            (self.tp, config.tp), (self.pp, config.pp), (self.dp, config.dp),
            (self.micro_batch, config.micro_batch),
        ):  # fmt: skip
            if span is not None and not span[0] <= value <= span[1]:
                return False
        if self.zero is not None and config.dp > 1 and config.zero not in self.zero:
            return False
        if self.schedules is not None and config.pp > 1 and config.schedule not in self.schedules:
            return False
        return self.runnable(config)

    def runnable(self, config: ParallelConfig) -> bool:
        """Whether the framework asked for (if any) can run `config`."""
        return self.framework is None or config_reason(self.framework, config) is None

    def given_constraints(self) -> list[str]:
        """The flags of the constraints that narrow the search (the headroom when not the
        default)."""
        named = [
            "--" + name.replace("_", "-")
            for name in ("tp", "pp", "dp", "micro_batch", "zero", "schedules", "framework")
            if getattr(self, name) is not None
        ]
        if self.memory_headroom != DEFAULT_HEADROOM:
            named.append("--memory-headroom")
        return named

    def constraints(self) -> dict[str, Any]:
        """What the search was held to, for the record (None: unconstrained)."""
        h = self.memory_headroom
        return {
            "tp": self.tp, "pp": self.pp, "dp": self.dp, "micro_batch": self.micro_batch,
            "zero": self.zero, "schedules": self.schedules, "framework": self.framework,
            "memory_headroom": {"reserved_bytes": h.reserved_bytes, "fraction": h.fraction},
        }  # fmt: skip

    def constrained_space(self) -> SearchSpace:
        """The space with the degree bounds, micro-batches, ZeRO stages and schedules asked."""
        space = replace(self.space, tp_range=self.tp, pp_range=self.pp, dp_range=self.dp)
        if self.micro_batch is not None:
            space = replace(space, micro_batches=micro_batches_in(*self.micro_batch))
        if self.zero is not None:
            space = replace(space, zero=tuple(sorted(self.zero)))
        if self.schedules is not None:
            space = replace(space, schedules=self.schedules)
        return space


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
    time_limit_s: float = DEFAULT_TIME_LIMIT_S
    cut_short: tuple[str, ...] = ()  # what the time limit cut, one sentence each
    constraints: dict[str, Any] = field(default_factory=dict)  # SearchOptions.constraints()
    recipes: tuple[dict[str, Any], ...] = ()  # the framework's published recipes considered

    def to_dict(self) -> dict[str, Any]:
        return {
            "constraints": dict(self.constraints),
            "plans": [p.summary() for p in self.plans],
            "baselines": [p.summary() for p in self.baselines],
            "search_time_s": self.search_time_s,
            "time_limit_s": self.time_limit_s,
            "cut_short": list(self.cut_short),
            "candidates": self.candidates,
            "evaluated": self.evaluated,
            "simulated": self.simulated,
            "infeasible": dict(self.infeasible),
            "solves": list(self.solves),
            "framework": self.constraints.get("framework"),
            "recipes": list(self.recipes),
        }


class Search:
    def __init__(
        self, graph: ModelGraph, cluster: Any, model: str, ref: ClusterRef, options: SearchOptions
    ) -> None:
        self.graph, self.cluster, self.model, self.ref = graph, cluster, model, ref
        self.global_batch, self.space = options.global_batch, options.space
        self.deadline = options.deadline or Deadline.after(options.time_limit_s)
        self.cut: list[str] = []
        self.longest_simulation_s = 0.0
        self.out_of_time = False
        self.headroom = options.memory_headroom
        self.framework = options.framework
        self.recipes: list[dict[str, Any]] = []  # the framework's recipes: which applied
        self.ctx = CostContext(graph, cluster, options.space.dtype, headroom=self.headroom)
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

    def evaluate(self, configs: list[ParallelConfig], deadline: Deadline) -> list[Scored]:
        """Estimates of the candidates made before `deadline`, best first (ties in
        enumeration order).

        Candidates that differ only in the micro-batch form a group; groups are estimated in a
        pseudo-random order (a cut leaves an even sample of the space), each group's
        micro-batches ascending. Where the stage split does not depend on the micro-batch (no
        pipeline, or Megatron's even split of the blocks) and the schedule is GPipe or 1F1B, a
        rank's memory never shrinks as the micro-batch grows (weights, gradients and optimizer
        state stay; activations x micro-batches in flight and receive buffers grow or stay), so
        once one does not fit the group's larger ones are not estimated. (A split by layer
        times, and interleaving's in-flight count, change with the micro-batch: no such order.)
        A candidate with CPU offload is estimated only where its twin without offload does not
        fit: with the same knobs, offload only adds the host's step and transfers."""
        order = list(range(len(configs)))
        random.Random(0).shuffle(order)
        first: dict[tuple, int] = {}
        for pos, i in enumerate(order):
            first.setdefault(_group(configs[i]), pos)
        order.sort(key=lambda i: (first[_group(configs[i])], configs[i].micro_batch))
        too_big: dict[tuple, int] = {}  # (group, layout) -> the smallest micro-batch not fitting
        fitted: dict[tuple[ParallelConfig, int], bool] = {}  # (config, layout) -> fits
        out: list[tuple[Scored, int, int]] = []
        for done, i in enumerate(order):
            if done % 50 == 0:
                self.progress("estimating", done, len(configs))
            if deadline.expired():
                self.cut.append(
                    f"estimated {done} of {len(configs)} candidates (an even sample) "
                    f"before the time limit"
                )
                break
            config = configs[i]
            group = _group(config)
            monotone = config.pp == 1 or (
                config.schedule != "interleaved"
                and megatron_bounds(self.graph, config.chunks) is not None
            )
            for j, layout in enumerate(self.layouts(config.dp, config.tp, config.pp)):
                if (
                    monotone
                    and too_big.get((group, j), config.micro_batch + 1) <= config.micro_batch
                ):
                    self.reasons["memory (a smaller micro-batch did not fit)"] += 1
                    continue
                if config.offload != "none" and self._fits_plain(config, layout, j, fitted):
                    self.reasons["offload: the plan fits without it (offload only adds time)"] += 1
                    continue
                scored = self.score(config, layout)
                est = scored[0]
                fitted[(config, j)] = est.fits
                if est.fits or _balanced_fits(est):
                    out.append((scored, i, j))
                else:
                    self.reasons["memory (activations, estimated)"] += 1
                    too_big.setdefault((group, j), config.micro_batch)
        out.sort(key=lambda x: (_rank_key(x[0]), x[1], x[2]))
        return [scored for scored, _i, _j in out]

    def _fits_plain(
        self, config: ParallelConfig, layout: Layout, j: int,
        fitted: dict[tuple[ParallelConfig, int], bool],
    ) -> bool:  # fmt: skip
        """Whether `config` without offload fits on layout j (estimated once): then its offload
        twin, the same step plus the host's Adam step and transfers, cannot win."""
        twin = config.replace(offload="none")
        if (twin, j) not in fitted:
            fitted[(twin, j)] = self.score(twin, layout)[0].fits
        return fitted[(twin, j)]

    def refine(self, ranked: list[Scored], count: int, deadline: Deadline) -> list[Scored]:
        """The ILP partition for the best `count` pipelined (GPipe/1F1B) candidates."""
        picks = [
            i for i, (_e, c, _l, _b) in enumerate(ranked)
            if c.pp > 1 and c.schedule != "interleaved"
        ][:count]  # fmt: skip
        for k, i in enumerate(picks):
            self.progress("partition ILP", k, len(picks))
            left = deadline.left_s()
            if left < MIN_SOLVE_S:
                self.cut.append(f"solved {k} of {len(picks)} partition ILPs before the time limit")
                break
            _est, config, layout, bounds = ranked[i]
            new, record = ilp_bounds(self.ctx, config, layout, min(ILP_SOLVE_LIMIT_S, left))
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
                ref = replace(self.ref, nodes=1, gpus_per_node=world)
            else:
                sub = load_cluster(self.cluster.spec, nodes=world // per)
                ref = replace(self.ref, nodes=world // per, gpus_per_node=None)
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
            framework=self.framework,
            solves=tuple(
                [*layout.solves, self.records[(config, layout.label)]]
                if (config, layout.label) in self.records
                else layout.solves
            ),
            graph=self.graph,
            cluster_obj=cluster,
        )

    def can_simulate(self) -> bool:
        """Whether another simulation, as long as the longest so far, ends before the deadline."""
        return not self.out_of_time and self.deadline.left_s() > self.longest_simulation_s

    def simulate(self, plan: Plan) -> Plan:
        """The plan with the simulator's prediction; at the deadline, the plan as estimated."""
        started = time.monotonic()
        try:
            result = call_before(
                self.deadline,
                lambda: plan.simulate(record=False, deadline=self.deadline, headroom=self.headroom),
            )
        except TimeLimitReached:
            self.out_of_time = True
            self.cut.append(
                f"{plan.config.describe()} ({plan.role}) estimated only: the time limit "
                f"stopped its simulation"
            )
            return plan
        self.longest_simulation_s = max(self.longest_simulation_s, time.monotonic() - started)
        self.simulated += 1
        return replace(plan, predicted=prediction(result))


def prediction(result: Any) -> dict[str, Any]:
    """What a plan keeps of its SimResult (Plan.predicted)."""
    return {
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
                "overheads": dict(d.overheads),  # kept free besides the peak's tensors
            }
            for d in result.devices
        ],
    } | ({"offload": result.offload} if result.offload else {})


def _group(c: ParallelConfig) -> tuple:
    """Everything of a configuration but its micro-batch."""
    return (c.dp, c.tp, c.pp, c.schedule, c.virtual_stages, c.zero, c.recompute,
            c.sequence_parallel, c.dtype, c.global_batch, c.seq_len, c.offload)  # fmt: skip


def _balanced_fits(est: Estimate) -> bool:
    """Could a better partition fit? (the memory averaged over stages fits the smallest)"""
    mean = sum(est.stage_memory_bytes) / len(est.stage_memory_bytes)
    return est.host_fits and mean <= min(est.stage_capacity_bytes)


def _rank_key(scored: Scored) -> tuple[bool, float]:
    return (not scored[0].fits, scored[0].step_time_s)


def _plan_key(plan: Plan) -> tuple[bool, float]:
    return (not plan.fits, plan.step_time_s)


def check_fits_somewhere(
    graph: ModelGraph, cluster: Any, dtype: str, headroom: Headroom = DEFAULT_HEADROOM,
    offload: bool = False,
) -> None:  # fmt: skip
    """A one-line error when no plan can fit: everything sharded over all devices (with
    `offload`, the optimizer's states in host memory) is too much."""
    need = minimum_memory_bytes(graph, cluster.num_devices, dtype, offload)
    have = max(
        headroom.usable_bytes(cluster.device_model(d).memory_bytes)
        for d in range(cluster.num_devices)
    )
    if have <= 0:
        raise SimplanError(
            f"a memory headroom of {headroom.describe()} leaves nothing of the devices' memory; "
            f"lower --memory-headroom"
        )
    if need > have:
        raise SimplanError(
            f"{graph.name} needs at least {need / GiB:.1f} GiB per device even fully sharded "
            f"(ZeRO-3{', optimizer offloaded' if offload else ''}) over all "
            f"{cluster.num_devices} devices, which have {have / GiB:.1f} GiB "
            f"each once the memory headroom ({headroom.describe()}) is kept free; "
            f"use at least {int(-(-need * cluster.num_devices // have))} such devices (--nodes)"
        )


def run_search(
    graph: ModelGraph, cluster: Any, model: str, ref: ClusterRef, options: SearchOptions
) -> SearchResult:
    """The search on a loaded graph and cluster (options' nodes, gpus_per_node, seq_len and
    dtype are already applied to them; space.dtype is the one searched)."""
    started = time.perf_counter()
    refuse_experts(graph)
    global_batch, top, space = options.global_batch, options.top, options.space
    deadline = options.deadline or Deadline.after(options.time_limit_s)
    time_limit_s = deadline.limit_s if math.isfinite(deadline.limit_s) else options.time_limit_s
    space = options.constrained_space()
    options = replace(options, deadline=deadline, space=space)
    if len(node_classes(cluster)) > 1:
        space = replace(space, fewer_nodes=0)
        options = replace(options, space=space)
    offload = "optimizer" in offload_options(cluster, space, Counter())
    check_fits_somewhere(graph, cluster, space.dtype, options.memory_headroom, offload)
    s = Search(graph, cluster, model, ref, options)
    configs, reasons = candidates(graph, cluster, global_batch, space, options.memory_headroom)
    configs = runnable_configs(configs, options, reasons, graph.name)
    s.reasons.update(reasons)
    ranked = s.evaluate(configs, deadline.share(ESTIMATE_SHARE))
    ranked = s.refine(ranked, max(options.refine, 2 * top), deadline.share(REFINE_SHARE))
    plans = _simulate_top(s, ranked, top)
    baselines = _baselines(s)
    mergeable = [b for b in baselines if options.allows(b.config) and not _is_recipe(b)]
    plans = _merge(plans, mergeable, top)
    if not plans and s.cut:
        raise SimplanError(
            f"the time limit of {time_limit_s:g} s ended the search before any plan of "
            f"{graph.name} was simulated ({'; '.join(s.cut)}); raise --time-limit"
        )
    if not plans or not plans[0].fits:
        held = options.given_constraints()
        fix = f"loosen {', '.join(held)} or add devices" if held else "add devices"
        runs = f" that {FRAMEWORKS[options.framework].name} can run" if options.framework else ""
        raise SimplanError(
            f"no configuration of {graph.name}{runs} fits {cluster.name} with global batch "
            f"{global_batch} ({sum(s.reasons.values())} candidates fell: "
            f"{', '.join(f'{k} {v}' for k, v in s.reasons.most_common(3))}); {fix}"
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
        time_limit_s=time_limit_s,
        cut_short=tuple(s.cut),
        constraints=options.constraints(),
        recipes=tuple(s.recipes),
    )


def refuse_experts(graph: ModelGraph) -> None:
    """The search does not choose expert-parallel degrees: refuse MoE models in one line."""
    experts = next((x.attrs["num_experts"] for x in graph.layers if x.is_moe), 0)
    if experts:
        raise SimplanError(
            f"simplan plan does not search expert parallelism: {graph.name} has "
            f"mixture-of-experts layers ({experts} experts); simulate a configuration with "
            f"simplan simulate --model {graph.name} --ep N (N dividing {experts})"
        )


def runnable_configs(
    configs: list[ParallelConfig], options: SearchOptions, reasons: Counter, model: str
) -> list[ParallelConfig]:
    """The candidates options.framework can run (all without one); the others are counted in
    `reasons` under why the framework cannot run them. None left: a one-line SimplanError."""
    framework = options.framework
    if framework is None:
        return configs
    kept = []
    refused: Counter = Counter()
    for config in configs:
        why = config_reason(framework, config)
        if why is None:
            kept.append(config)
        else:
            refused[why.split(";")[0].split(" (")[0]] += 1  # its first clause
    name = FRAMEWORKS[framework].name
    reasons.update({f"not runnable by {name} ({why})": n for why, n in refused.items()})
    if configs and not kept:
        held = [f for f in options.given_constraints() if f != "--framework"]
        what = f"within {', '.join(held)} " if held else ""
        fell = "; ".join(f"{n} because {why}" for why, n in refused.most_common(2))
        raise SimplanError(
            f"{name} can run none of the {len(configs)} configurations of {model} {what}that "
            f"fit ({fell or 'none fit'}); plan without --framework {framework}, for another "
            f"framework, or with other constraints"
        )
    return kept


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
        if not s.can_simulate():
            s.cut.append(
                f"simulated {s.simulated} of the {len(unique)} best candidates before the "
                f"time limit"
            )
            fitting = [x for x in unique[i:] if x[0].fits]
            if not out and fitting:  # the best estimate stands in for a simulated plan
                out.append(s.to_plan(fitting[0]))
                s.cut.append(f"{fitting[0][1].describe()} (plan) estimated only")
            break
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
            if not s.can_simulate():
                s.cut.append(f"{role} not simulated before the time limit")
                break
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
    return out + _recipe_baselines(s)


def _recipe_baselines(s: Search) -> list[Plan]:
    """The published recipes of the framework planned for that apply to this model, cluster
    and global batch, simulated as they are (shown even when they do not fit, never merged into
    the plans); what each was and why one did not apply go to s.recipes."""
    if s.framework is None:
        return []
    from simplan.planner.recipes import recipes_for

    out = []
    for recipe in recipes_for(s.framework, s.model):
        row: dict[str, Any] = {
            "role": recipe.role, "name": recipe.name, "source": recipe.source,
            "settings": recipe.settings, "approximation": recipe.approximation,
        }  # fmt: skip
        s.recipes.append(row)
        config = recipe.config(
            s.cluster.num_devices, s.global_batch, s.space.dtype, getattr(s.graph, "seq_len", 0)
        )
        if isinstance(config, str):
            row["applies"], row["why_not"] = False, config
            continue
        row["applies"] = True
        if not s.can_simulate():
            s.cut.append(f"{recipe.role} not simulated before the time limit")
            continue
        layout = s.layouts(config.dp, config.tp, config.pp)[0]
        plan = s.simulate(s.to_plan(s.score(config, layout), recipe.role))
        row["fits"] = plan.fits
        out.append(plan)
    return out


def _is_recipe(plan: Plan) -> bool:
    return plan.role.endswith("-recipe")


def _merge(plans: list[Plan], baselines: list[Plan], top: int) -> list[Plan]:
    """The ranked plans; a baseline that beats them takes its place among them."""
    seen = {p.config for p in plans}
    pool = plans + [b for b in baselines if b.config not in seen]
    pool.sort(key=_plan_key)
    return pool[:top]
