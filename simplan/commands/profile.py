"""`simplan profile`: count a model's layers and time them on this machine (or a device model)."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

from simplan.commands import add_verb
from simplan.commands.argtypes import STEPS, WARMUP
from simplan.commands.config_flags import add_config_flags
from simplan.commands.flag_rules import check_seq_len
from simplan.commands.model_flags import add_model_knob_flags, model_spec
from simplan.costmodel import LayerCost, layer_costs
from simplan.devices import device_names, get_device, preset_for
from simplan.model_graph import Layer, ModelGraph
from simplan.progress import Progress
from simplan.table import render
from simplan.units import DTYPE_BYTES, MiB, check_dtype

HELP = """\
Count every layer of MODEL (FLOPs, parameters, activation and output bytes, with torch on the meta
device) and time its forward and backward passes.

--device cpu or cuda measures on this machine: the model trains for a few steps with per-layer
hooks, identical layers are stored once, and the profile is written as JSON under
traces/profiles/<device-name>/<model>-<dtype>-mb<N>-s<seq>.json, replacing the profile of the same
model, dtype, micro-batch and sequence (the store simulate and validate read), or to --out FILE
(checked before measuring). A device-model name (a100-80gb, h100-sxm, h200, ...)
estimates the times with that device's roofline instead, without measuring or writing anything.

MODEL is a preset (see `simplan models`), a TOML shape file, or path/to/file.py:factory.

examples:
  simplan profile mlp --micro-batch 64
  simplan profile gpt3-125m --device cpu --micro-batch 1 --seq-len 512
  simplan profile gpt3-175b --device h100-sxm --dtype bf16      # counted, not allocated
  simplan profile my_net.py:build --json
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_verb(subparsers, "profile", "count and time a model's layers", HELP)
    p.add_argument("model", metavar="MODEL", help="preset name, model.toml or file.py:factory")
    add_model_knob_flags(p, quantize=False)
    p.add_argument(
        "--device",
        default="cpu",
        help=f"cpu or cuda to measure; or a device model: {', '.join(device_names())}",
    )
    add_config_flags(
        p,
        ("micro_batch", "seq_len", "dtype"),
        defaults={"seq_len": None, "dtype": None},
        helps={
            "micro_batch": "samples per pass",
            "seq_len": "sequence length (default: the model's own)",
            "dtype": "fp32, bf16 or fp16 (default: fp32 on cpu, bf16 on GPUs)",
        },
        metavars={"micro_batch": "N", "seq_len": "N"},
    )
    p.add_argument("--warmup", type=WARMUP, default=2, metavar="N", help="untimed steps first")
    p.add_argument("--repeats", type=STEPS, default=10, metavar="N", help="timed steps (median)")
    p.add_argument("--out", default=None, metavar="FILE", help="where to write the profile")
    p.add_argument("--no-save", action="store_true", help="measure but write no profile")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


@dataclass(frozen=True)
class Row:
    name: str
    count: int
    layer: Layer
    cost: LayerCost


def group_rows(graph: ModelGraph, costs: tuple[LayerCost, ...]) -> list[Row]:
    """Consecutive identical layers fold into one row (blocks.0-95 x96)."""
    rows: list[Row] = []
    for layer, cost in zip(graph.layers, costs, strict=True):
        last = rows[-1] if rows else None
        if last and last.layer.identity == layer.identity and last.cost == cost:
            rows[-1] = Row(last.name, last.count + 1, last.layer, cost)
        else:
            rows.append(Row(layer.name, 1, layer, cost))
    return rows


def _label(row: Row, graph: ModelGraph) -> str:
    if row.count == 1:
        return row.name
    first = graph.layers.index(row.layer)
    last_name = graph.layers[first + row.count - 1].name
    tail = last_name.rsplit(".", 1)[-1]
    return f"{row.name}-{tail} (x{row.count})"


def run(args: argparse.Namespace) -> int:
    args.model = model_spec(args)
    measured = args.device == "cpu" or args.device.startswith("cuda")
    dtype = check_dtype(args.dtype or ("fp32" if args.device == "cpu" else "bf16"))
    if args.out and measured and not args.no_save:
        from simplan.outputs import check_output_file

        check_output_file(args.out, "--out")
    check_seq_len(args.model, args.seq_len, dtype)
    profile = None
    if measured:
        profile, graph, device = _measure(args, dtype)
    else:
        from simplan.sources import load_model

        device = get_device(args.device)
        graph = load_model(args.model, seq_len=args.seq_len or None, dtype=dtype)
    costs = layer_costs(graph, device, dtype, args.micro_batch, profile)
    path = None
    if profile is not None and not args.no_save:
        from simplan.profiles import write_profile

        path = write_profile(profile, args.out)
    doc = _document(graph, costs, args, dtype, profile, path)
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        _print_table(graph, costs, doc)
    return 0


def _measure(args: argparse.Namespace, dtype: str) -> tuple[Any, ModelGraph, Any]:
    from simplan.cpubench import local_cpu_device
    from simplan.timing import measure

    bar = Progress(1, f"profiling {args.model}")
    with bar:

        def start(total: int) -> None:
            bar.total = total

        profile = measure(
            args.model,
            device=args.device,
            micro_batch=args.micro_batch,
            seq_len=args.seq_len or None,
            dtype=dtype,
            warmup=args.warmup,
            repeats=args.repeats,
            advance=lambda note: bar.advance(1, note),
            on_start=start,
        )
    # the device model only scales layers the profile lacks; every layer is measured here
    device = (
        local_cpu_device()
        if args.device == "cpu"
        else (preset_for(profile.device_name) or get_device("h100-sxm"))
    )
    return profile, profile.model, device


def _document(
    graph: ModelGraph,
    costs: tuple[LayerCost, ...],
    args: argparse.Namespace,
    dtype: str,
    profile: Any,
    path: Any,
) -> dict[str, Any]:
    b = args.micro_batch
    layers = [
        {
            "name": layer.name,
            "kind": layer.kind,
            "params": layer.params,
            "fwd_flops": layer.fwd_flops * b,
            "bwd_flops": layer.bwd_flops * b,
            "activation_bytes": layer.activation_bytes * b,
            "output_bytes": layer.output_bytes * b,
            "fwd_s": cost.fwd_s,
            "bwd_s": cost.bwd_s,
            "source": cost.source,
            "identity": layer.identity,
        }
        for layer, cost in zip(graph.layers, costs, strict=True)
    ]
    total_s = sum(c.fwd_s + c.bwd_s for c in costs)
    whole = profile.whole_model if profile is not None else None
    return {
        "model": graph.name,
        "device": args.device,
        "dtype": dtype,
        "micro_batch": b,
        "seq_len": graph.seq_len,
        "params": graph.params,
        "layers": layers,
        "total": {
            "fwd_flops": graph.fwd_flops * b,
            "bwd_flops": graph.bwd_flops * b,
            "layer_sum_s": total_s,
            "activation_bytes": sum(x["activation_bytes"] for x in layers),
        },
        "whole_model_s": None if whole is None else whole.fwd_s + whole.bwd_s,
        "profile_path": None if path is None else str(path),
        "meta": {} if profile is None else profile.meta,
    }


def _print_table(graph: ModelGraph, costs: tuple[LayerCost, ...], doc: dict[str, Any]) -> None:
    b = doc["micro_batch"]
    rows = []
    for row in group_rows(graph, costs):
        layer, cost = row.layer, row.cost
        rows.append(
            [
                _label(row, graph),
                layer.kind,
                f"{layer.params:,}",
                f"{layer.fwd_flops * b / 1e9:.3f}",
                f"{layer.bwd_flops * b / 1e9:.3f}",
                f"{layer.activation_bytes * b / MiB:.2f}",
                f"{cost.fwd_s * 1e3:.3f}",
                f"{cost.bwd_s * 1e3:.3f}",
                cost.source,
            ]
        )
    total = doc["total"]
    rows.append(
        [
            "total",
            "",
            f"{graph.params:,}",
            f"{total['fwd_flops'] / 1e9:.3f}",
            f"{total['bwd_flops'] / 1e9:.3f}",
            f"{total['activation_bytes'] / MiB:.2f}",
            f"{sum(c.fwd_s for c in costs) * 1e3:.3f}",
            f"{sum(c.bwd_s for c in costs) * 1e3:.3f}",
            "",
        ]
    )
    print(
        f"{graph.name}: micro-batch {b}, seq {graph.seq_len or '-'}, {doc['dtype']} "
        f"({DTYPE_BYTES[doc['dtype']]} B), device {doc['device']}"
    )
    print(
        render(
            [
                "layer",
                "kind",
                "params",
                "fwd GFLOP",
                "bwd GFLOP",
                "act MiB",
                "fwd ms",
                "bwd ms",
                "source",
            ],
            rows,
            align="llrrrrrrl",
        )
    )
    if doc["whole_model_s"] is not None:
        s, w = total["layer_sum_s"], doc["whole_model_s"]
        print(
            f"sum of layer fwd+bwd {s * 1e3:.2f} ms; whole model fwd+bwd measured in the same "
            f"run {w * 1e3:.2f} ms ({(s - w) / w:+.1%})"
        )
    if doc["profile_path"]:
        print(f"profile written to {doc['profile_path']}")
