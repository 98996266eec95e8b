"""Statistical efficiency of a synchronisation knob: how much of a step's progress it keeps.

efficiency(knob) = steps_to_target(plain synchronous DP) / steps_to_target(knob), so 1 means the
knob converges in as many steps as plain DDP and 0.5 that it needs twice as many. Goodput
(Pollux, OSDI'21) = samples/s x efficiency: a variant that is 20% faster per step but needs 30%
more steps loses.

Where a number comes from, it says so (`Efficiency.source`):
  - "plain synchronous DP": 1 by definition;
  - "declared": the user's own number, `KNOB[=VALUE]:EFFICIENCY` (e.g. `local_sgd=8:0.8`,
    `powersgd=2:0.9`, `staleness=4:0.7`, `fp16:1`), or a JSON file {"local_sgd=8": 0.8, ...};
  - "measured: FILE": a table of steps to a target loss recorded by
    benchmarks/stat_efficiency.py (traces/efficiency/*.json), interpolated linearly in steps
    between measured values of the same knob and never extrapolated beyond them.

Knobs: `local_sgd` (the period H), `staleness` (s), `powersgd` (the rank), `fp16`, `bf16`.
A measured ratio above 1 (noise: the knob needed fewer steps) is capped at 1, and says so.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from simplan.errors import SimplanError
from simplan.io import read_json_object, read_versioned_json
from simplan.parallel import ParallelConfig

KNOBS = ("local_sgd", "staleness", "powersgd", "fp16", "bf16")
VALUED = ("local_sgd", "staleness", "powersgd")  # knobs that take a value
VALUE_NAMES = {"local_sgd": "H", "staleness": "s", "powersgd": "rank"}
SCHEMA = ("efficiency", 1)
Knob = tuple[str, int]  # (knob, value); value 0 for fp16 and bf16


@dataclass(frozen=True, kw_only=True)
class Efficiency:
    """One statistical efficiency in (0, 1] and where it comes from."""

    value: float
    source: str

    def __post_init__(self) -> None:
        if not 0.0 < self.value <= 1.0:
            raise ValueError(f"efficiency must be in (0, 1], got {self.value}")


PLAIN = Efficiency(value=1.0, source="plain synchronous DP")


@dataclass(frozen=True, kw_only=True)
class MeasuredTable:
    """Steps to a target loss per knob value, and plain DDP's, from one recorded file."""

    path: str
    baseline_steps: float
    steps: Mapping[str, tuple[tuple[int, float], ...]]  # knob -> sorted (value, steps)


@dataclass(frozen=True, kw_only=True)
class EfficiencySources:
    """What efficiency() may use: the user's declared numbers, then a measured table."""

    declared: Mapping[Knob, float] = field(default_factory=dict)
    table: MeasuredTable | None = None


def knob_of(config: ParallelConfig) -> Knob | None:
    """The configuration's synchronisation knob, or None for plain synchronous DP."""
    if config.local_sgd > 1:
        return ("local_sgd", config.local_sgd)
    if config.staleness > 0:
        return ("staleness", config.staleness)
    if config.compress == "powersgd":
        return ("powersgd", config.powersgd_rank)
    if config.compress in ("fp16", "bf16"):
        return (config.compress, 0)
    return None


def knob_label(knob: Knob) -> str:
    name, value = knob
    return f"{name}={value}" if name in VALUED else name


def parse_knob(text: str) -> Knob:
    """'local_sgd=8' -> ('local_sgd', 8); 'fp16' -> ('fp16', 0)."""
    name, eq, raw = text.strip().partition("=")
    name = name.strip().replace("-", "_")
    if name not in KNOBS:
        raise SimplanError(f"unknown knob {name!r} in {text!r}: use one of {', '.join(KNOBS)}")
    if name not in VALUED:
        if eq:
            raise SimplanError(f"{name} takes no value: write {name}:EFFICIENCY, not {text!r}")
        return (name, 0)
    try:
        value = int(raw)
    except ValueError:
        raise SimplanError(
            f"{text!r}: {name} needs a whole {VALUE_NAMES[name]}, e.g. {name}=8"
        ) from None
    low = 2 if name == "local_sgd" else 1  # local SGD with H = 1 is plain DDP
    if value < low:
        raise SimplanError(f"{text!r}: {VALUE_NAMES[name]} must be >= {low}")
    return (name, value)


def parse_value(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SimplanError(f"{where}: efficiency {text!r} is not a number") from None
    if not 0.0 < value <= 1.0:
        raise SimplanError(f"{where}: efficiency {value:g} must be in (0, 1]")
    return value


def parse_declared(spec: str) -> tuple[Knob, float]:
    """One `KNOB[=VALUE]:EFFICIENCY` declaration."""
    knob, colon, value = spec.rpartition(":")
    if not colon or not knob:
        raise SimplanError(
            f"--efficiency {spec!r}: write KNOB[=VALUE]:EFFICIENCY, e.g. local_sgd=8:0.8"
        )
    return parse_knob(knob), parse_value(value, f"--efficiency {spec}")


def read_declared(path: str | Path) -> dict[Knob, float]:
    """A JSON file {"local_sgd=8": 0.8, "fp16": 1.0}."""
    data = read_json_object(path)
    out = {}
    for key, value in data.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SimplanError(f"{path}: efficiency of {key!r} must be a number")
        out[parse_knob(key)] = parse_value(str(value), f"{path} {key}")
    return out


def declared_from_specs(specs: Iterable[str]) -> dict[Knob, float]:
    """--efficiency values: each a declaration, or a JSON file of them (a path ending in
    .json)."""
    out: dict[Knob, float] = {}
    for spec in specs:
        if spec.endswith(".json"):
            out.update(read_declared(spec))
        else:
            knob, value = parse_declared(spec)
            out[knob] = value
    return out


def read_table(path: str | Path) -> MeasuredTable:
    """A table written by benchmarks/stat_efficiency.py: rows of knob, value and median
    steps_to_target; the knob 'none' is plain DDP."""
    data = read_versioned_json(path, *SCHEMA)
    baseline = None
    steps: dict[str, list[tuple[int, float]]] = {}
    for row in data.get("rows", []):
        if not row.get("reached", True):
            continue  # never reached the target: no ratio to take
        name, value, n = row["knob"], int(row["value"]), float(row["steps_to_target"])
        if name == "none":
            baseline = n
        elif name == "staleness" and value == 0:
            continue  # the emulation's own check against plain DDP
        elif name in KNOBS:
            steps.setdefault(name, []).append((value, n))
    if baseline is None:
        raise SimplanError(f"{path}: no plain DDP row (knob 'none') to take ratios against")
    return MeasuredTable(
        path=str(path),
        baseline_steps=baseline,
        steps={k: tuple(sorted(v)) for k, v in steps.items()},
    )


def measured(table: MeasuredTable, knob: Knob) -> Efficiency:
    """The measured efficiency of a knob, interpolated between measured values; a value
    outside the measured range is refused, naming the range and how to declare it."""
    name, value = knob
    rows = table.steps.get(name, ())
    if not rows:
        raise SimplanError(
            f"{table.path} has no measurement of {name}; declare it with "
            f"--efficiency {knob_label(knob)}:E"
        )
    values = [v for v, _ in rows]
    if not values[0] <= value <= values[-1]:
        raise SimplanError(
            f"{knob_label(knob)} is outside the measured {VALUE_NAMES.get(name, name)} "
            f"{values[0]}..{values[-1]} of {table.path}; it would be an extrapolation: declare "
            f"it with --efficiency {knob_label(knob)}:E"
        )
    i = bisect.bisect_left(values, value)
    if values[i] == value:
        steps, how = rows[i][1], ""
    else:
        (v0, s0), (v1, s1) = rows[i - 1], rows[i]
        steps = s0 + (s1 - s0) * (value - v0) / (v1 - v0)
        how = f", interpolated between {v0} and {v1}"
    ratio = table.baseline_steps / steps
    capped = f", {ratio:.3f} capped at 1" if ratio > 1 else ""
    return Efficiency(value=min(ratio, 1.0), source=f"measured: {table.path}{how}{capped}")


def at_mean_staleness(table: MeasuredTable, mean: float) -> Efficiency:
    """The measured efficiency at a mean staleness seen by an asynchronous run: the table's
    fixed-delay rows, with plain DDP as staleness 0, interpolated at `mean` (a distribution of
    delays is taken to cost what a fixed delay of its mean costs: an assumption, and the source
    says so)."""
    rows = ((0, table.baseline_steps), *table.steps.get("staleness", ()))
    if len(rows) < 2 or mean > rows[-1][0]:
        raise SimplanError(
            f"a mean staleness of {mean:.2f} is beyond the staleness measured in {table.path} "
            f"(up to {rows[-1][0]}); declare it with --efficiency staleness=S:E"
        )
    values = [v for v, _ in rows]
    i = max(bisect.bisect_left(values, mean), 1)
    (v0, s0), (v1, s1) = rows[i - 1], rows[i]
    steps = s0 + (s1 - s0) * (mean - v0) / (v1 - v0)
    ratio = table.baseline_steps / steps
    return Efficiency(
        value=min(ratio, 1.0),
        source=f"measured: {table.path}, fixed delay {mean:.2f} interpolated between {v0} and "
        f"{v1} (assumed: a delay of mean {mean:.2f} costs what a fixed one does)",
    )


def efficiency(config: ParallelConfig, sources: EfficiencySources) -> Efficiency:
    """The statistical efficiency of the configuration's knob: 1 for plain DP, else the
    declared number, else the measured table's; neither is a one-line SimplanError."""
    knob = knob_of(config)
    if knob is None:
        return PLAIN
    if knob in sources.declared:
        return Efficiency(value=sources.declared[knob], source="declared")
    if sources.table is None:
        raise SimplanError(
            f"no statistical efficiency for {knob_label(knob)}: declare one with --efficiency "
            f"{knob_label(knob)}:E or give a measured --efficiency-table"
        )
    return measured(sources.table, knob)
