"""Goodput-aware choice of a synchronisation knob for a plan (Pollux, OSDI'21).

goodput = samples/s x statistical efficiency (simplan.efficiency). For a plan with data
parallelism, the variants are the same configuration with gradient compression (fp16, bf16,
PowerSGD of a few ranks) or local SGD (a few periods H); each is simulated through the plan's
public simulate() (so whatever the simulator charges for compressed bytes or sync every H
steps is picked up), its efficiency looked up, and the variant with the highest goodput wins.
Plain DDP wins ties: a knob must be strictly better to be chosen. A variant whose efficiency is
unknown (not declared, outside the measured table) is skipped, and the reason kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from simplan.deadline import TimeLimitReached
from simplan.efficiency import Efficiency, EfficiencySources, efficiency, knob_label, knob_of
from simplan.errors import SimplanError
from simplan.parallel import ParallelConfig

POWERSGD_RANKS = (1, 2, 4)
LOCAL_SGD_PERIODS = (2, 4, 8, 16)


@dataclass(frozen=True, kw_only=True)
class Variant:
    """One configuration with its simulated throughput and statistical efficiency."""

    config: ParallelConfig
    samples_per_s: float
    efficiency: Efficiency

    @property
    def goodput(self) -> float:
        return self.samples_per_s * self.efficiency.value

    @property
    def label(self) -> str:
        knob = knob_of(self.config)
        return "plain DDP" if knob is None else knob_label(knob)

    def to_dict(self) -> dict[str, Any]:
        return {
            "knob": self.label,
            "describe": self.config.describe(),
            "samples_per_s": self.samples_per_s,
            "efficiency": self.efficiency.value,
            "efficiency_source": self.efficiency.source,
            "goodput_samples_per_s": self.goodput,
        }


@dataclass(frozen=True, kw_only=True)
class GoodputChoice:
    """The chosen variant, plain DDP's, the others ranked, and the variants skipped (why)."""

    chosen: Variant
    plain: Variant
    others: tuple[Variant, ...]
    skipped: tuple[str, ...] = ()

    @property
    def runner_up(self) -> Variant | None:
        """The best knob variant that was not chosen."""
        rest = [v for v in self.others if v is not self.chosen]
        return max(rest, key=lambda v: v.goodput, default=None)

    def lines(self) -> list[str]:
        """--explain: the chosen variant, plain DDP (when a knob won) and the best rejected
        knob, each with samples/s, efficiency and its source, and goodput."""
        out = [
            f"goodput of [{self.plain.config.describe()}] (samples/s x statistical efficiency): "
            f"chosen {_describe(self.chosen)}"
        ]
        rejected = [self.plain] if self.chosen is not self.plain else []
        rejected += [v for v in (self.runner_up,) if v is not None]
        for other in rejected:
            verdict = "ties with" if other.goodput == self.chosen.goodput else "loses to"
            knob = other if other is not self.plain else self.chosen
            note = (
                " (the simulator gives it plain DDP's step time)"
                if knob is not self.plain and knob.samples_per_s == self.plain.samples_per_s
                else ""
            )
            out.append(f"  rejected {_describe(other)}: {verdict} the chosen{note}")
        out += [f"  skipped {why}" for why in self.skipped]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen.to_dict(),
            "plain": self.plain.to_dict(),
            "variants": [v.to_dict() for v in self.others],
            "skipped": list(self.skipped),
        }


def _describe(v: Variant) -> str:
    return (
        f"{v.label}: {v.samples_per_s:.4g} samples/s x efficiency {v.efficiency.value:.3f} "
        f"({v.efficiency.source}) = goodput {v.goodput:.4g} samples/s"
    )


def knob_variants(
    config: ParallelConfig,
    ranks: Sequence[int] = POWERSGD_RANKS,
    periods: Sequence[int] = LOCAL_SGD_PERIODS,
) -> list[ParallelConfig]:
    """The knob variants of a plain configuration: none without data parallelism, or with ZeRO
    beyond stage 1 (the knobs change how DDP replicas synchronise)."""
    if config.dp < 2 or config.zero > 1 or knob_of(config) is not None:
        return []
    out = [config.replace(compress=c) for c in ("fp16", "bf16")]
    out += [config.replace(compress="powersgd", powersgd_rank=r) for r in ranks]
    out += [config.replace(local_sgd=h) for h in periods]
    return out


def no_variants_reason(config: ParallelConfig) -> str:
    if config.dp < 2:
        return "no data parallelism to synchronise"
    if config.zero > 1:
        return f"ZeRO stage {config.zero} shards the gradients (the knobs need --zero 0 or 1)"
    return "the plan already has a synchronisation knob"


def choose(plain: Variant, others: Sequence[Variant], skipped: Sequence[str] = ()) -> GoodputChoice:
    """The variant of highest goodput; plain DDP unless a knob is strictly better, and the
    first listed among knobs that tie."""
    chosen = plain
    for v in others:
        if v.goodput > chosen.goodput:
            chosen = v
    return GoodputChoice(chosen=chosen, plain=plain, others=tuple(others), skipped=tuple(skipped))


def score_variants(
    config: ParallelConfig,
    samples_per_s: Callable[[ParallelConfig], float],
    sources: EfficiencySources,
    plain_samples_per_s: float,
) -> GoodputChoice:
    """Score every knob variant of `config` (throughput from `samples_per_s`, e.g. a plan's
    simulation) and choose."""
    plain = Variant(
        config=config,
        samples_per_s=plain_samples_per_s,
        efficiency=efficiency(config, sources),
    )
    others, skipped = [], []
    if not knob_variants(config):
        skipped.append(f"every knob: {no_variants_reason(config)}")
    for variant in knob_variants(config):
        label = knob_label(knob_of(variant) or ("none", 0))
        try:
            eff = efficiency(variant, sources)
            rate = samples_per_s(variant)
        except TimeLimitReached:
            skipped.append(f"{label}: not simulated before the time limit (raise --time-limit)")
            continue
        except SimplanError as exc:
            skipped.append(f"{label}: {exc}")
            continue
        others.append(Variant(config=variant, samples_per_s=rate, efficiency=eff))
    return choose(plain, others, skipped)


def choose_for_plan(
    plan: Any, sources: EfficiencySources, headroom: Any = None, deadline: Any = None
) -> tuple[Any, Any]:
    """(the plan with its chosen variant, the GoodputChoice). A knob variant is simulated with
    the plan's own simulate() (stopped at `deadline`, a simplan.deadline.Deadline: that variant
    is skipped); the chosen plan carries the variant's simulated prediction."""
    results: dict[ParallelConfig, Any] = {}

    def simulated(config: ParallelConfig) -> float:
        variant = replace(plan, config=config)
        result = variant.simulate(record=False, headroom=headroom, deadline=deadline)
        results[config] = result
        return float(result.samples_per_s)

    plain_rate = float(plan.predicted.get("samples_per_s") or simulated(plan.config))
    choice = score_variants(plan.config, simulated, sources, plain_rate)
    if choice.chosen is choice.plain:
        return plan, choice
    from simplan.planner.driver import prediction

    predicted = prediction(results[choice.chosen.config])
    return replace(plan, config=choice.chosen.config, predicted=predicted), choice


def apply_goodput(
    result: Any, sources: EfficiencySources, headroom: Any = None, deadline: Any = None
) -> tuple[Any, list[GoodputChoice]]:
    """The search result with each simulated plan replaced by its best-goodput variant, the
    plans re-ranked by goodput (those that fit first; plans only estimated, at the time limit,
    last), and each simulated plan's choice, in that order."""
    scored, unscored = [], []
    for plan in result.plans:
        if not plan.predicted:  # estimated only (the time limit): nothing to compare with
            unscored.append(plan)
            continue
        chosen, choice = choose_for_plan(plan, sources, headroom, deadline)
        scored.append((chosen, choice))
    if not scored:
        return result, []
    scored.sort(key=lambda pc: (not pc[0].fits, -pc[1].chosen.goodput))
    plans = tuple(p for p, _ in scored) + tuple(unscored)
    return replace(result, plans=plans), [c for _, c in scored]


def sources_from_flags(declared: Sequence[str], table: str | None) -> EfficiencySources:
    """--efficiency declarations (or JSON files of them) and --efficiency-table."""
    from simplan.efficiency import declared_from_specs, read_table

    return EfficiencySources(
        declared=declared_from_specs(declared), table=read_table(table) if table else None
    )
