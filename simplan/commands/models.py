"""`simplan models`: list the model presets."""

from __future__ import annotations

import argparse
import json
from typing import Any

from simplan.commands import add_verb
from simplan.errors import SimplanError
from simplan.sources import describe, load_model, models_dir, preset_names, resolve
from simplan.table import render

HELP = """\
List the model presets in models/ with their parameter counts and layer counts.
Any command that takes a MODEL also accepts a TOML shape file (see README, 'Model files') or
path/to/file.py:factory, where factory() returns (nn.Module, example_input).

examples:
  simplan models
  simplan models --json
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_verb(subparsers, "models", "list the model presets", HELP)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []
    for name in preset_names():
        source = resolve(name)
        try:
            graph = load_model(name)
        except SimplanError as exc:
            raise SimplanError(f"preset {name} in {models_dir()} is broken: {exc}") from None
        rows.append(
            {
                "name": name,
                "params": graph.params,
                "active_params": int(graph.active_params),
                "layers": len(graph.layers),
                "seq_len": graph.seq_len or None,
                "kind": source.kind,
                "description": describe(source),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(
        render(
            ["model", "params", "active", "layers", "seq", "description"],
            [
                [
                    r["name"],
                    _params(r["params"]),
                    _params(r["active_params"]),
                    r["layers"],
                    r["seq_len"] or "-",
                    r["description"],
                ]
                for r in rows
            ],
            align="lrrrrl",
        )
    )
    return 0


def _params(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)
