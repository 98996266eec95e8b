"""The configuration flags (--tp, --micro-batch, --schedule, ...), made from ParallelConfig's
fields: each field's Knob (simplan/parallel.py) holds its help text and valid values, so every
verb offers the same flag with the same type, range and help."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from simplan.commands.argtypes import IntRange
from simplan.errors import SimplanError
from simplan.parallel import Knob, ParallelConfig

CONFIG_FIELDS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(ParallelConfig) if "knob" in f.metadata
)


def flag_name(name: str) -> str:
    """The command-line flag of a field or argparse dest: micro_batch -> --micro-batch."""
    return "--" + name.replace("_", "-")


def _field(name: str) -> dataclasses.Field[Any]:
    for f in dataclasses.fields(ParallelConfig):
        if f.name == name and "knob" in f.metadata:
            return f
    raise KeyError(f"{name} is not a configuration flag (one of {', '.join(CONFIG_FIELDS)})")


def add_config_flags(
    parser: argparse.ArgumentParser,
    names: Iterable[str] = CONFIG_FIELDS,
    *,
    defaults: Mapping[str, Any] | None = None,
    helps: Mapping[str, str] | None = None,
    metavars: Mapping[str, str] | None = None,
    required: Iterable[str] = (),
) -> None:
    """Add the flags of the fields `names`, with the field's default, help and range unless a
    verb's `defaults`, `helps` or `metavars` say otherwise (None as a default: the verb decides
    later)."""
    defaults, helps, required = defaults or {}, helps or {}, set(required)
    for name in names:
        f = _field(name)
        knob: Knob = f.metadata["knob"]
        kwargs: dict[str, Any] = {
            "default": defaults.get(name, f.default),
            "help": helps.get(name, knob.help),
        }
        if name in required:
            kwargs.update(required=True, default=None)
        if metavars and name in metavars:
            kwargs["metavar"] = metavars[name]
        if isinstance(f.default, bool):
            parser.add_argument(flag_name(name), action="store_true", **kwargs)
            continue
        if knob.choices:
            kwargs["choices"] = knob.choices
            if all(isinstance(c, int) for c in knob.choices):
                kwargs["type"] = IntRange(min(knob.choices), max(knob.choices))
        elif isinstance(f.default, int):
            kwargs["type"] = IntRange(knob.lo, knob.hi)
        parser.add_argument(flag_name(name), **kwargs)


def config_from_args(args: argparse.Namespace, devices: int, **changes: Any) -> ParallelConfig:
    """The configuration the flags describe on `devices` devices: the fields not on the
    command line keep ParallelConfig's defaults; dp left unset is the devices left over by tp
    and pp (and cp)."""
    values = {n: getattr(args, n) for n in CONFIG_FIELDS if getattr(args, n, None) is not None}
    values.update(changes)
    if "global_batch" not in values:
        raise SimplanError("--global-batch is required (samples per optimizer step)")
    if "dp" not in values:
        tp, pp, cp = values.get("tp", 1), values.get("pp", 1), values.get("cp", 1)
        dp, rest = divmod(devices, tp * pp * cp)
        if rest or dp == 0:
            cps = f" x cp {cp}" if cp > 1 else ""
            raise SimplanError(
                f"tp {tp} x pp {pp}{cps} does not divide the cluster's {devices} devices; pick "
                f"degrees that do or give --dp"
            )
        values["dp"] = dp
    return ParallelConfig(**values)
