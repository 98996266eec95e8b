"""`simplan export`: a plan file as the job of a training framework."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from simplan.commands import add_verb
from simplan.errors import SimplanError
from simplan.planner.export import EXPORTS

HELP = """\
Write PLAN (a plan file from `simplan plan --out`) as a job of a training framework, with
everything the simulation assumed: the model shape, the degrees, micro-batch and gradient
accumulation, the ZeRO stage's exact equivalent, recomputation, sequence parallelism, the
pipeline split (the ILP's uneven one included), schedule, virtual stages and overlap.

  megatron    pretrain_gpt.py arguments (Megatron-LM core_v0.15.3), on one line
  torchrun    a torchrun command that launches Megatron-LM on the plan's nodes
  torchtitan  a job TOML (torchtitan v0.2.2, its Llama 3 models)
  deepspeed   a ds_config.json (DeepSpeed v0.16.4; data-parallel plans)

Where a framework cannot express the plan exactly (torchtitan and ZeRO-1/2, DeepSpeed and tensor
or pipeline degrees, Megatron-LM and GPipe, ...) the export refuses with one line saying why.

examples:
  simplan plan --model gpt3-1.3b --cluster dgx-a100 --nodes 2 --global-batch 64 --out plans/
  simplan export plans/plan.json --to megatron
  simplan export plans/plan.json --to torchtitan --out job.toml
  simplan export plans/plan.json --to deepspeed --json | jq .config
  simplan export plans/plan.json     # a plan made with --framework F: exported to F

exit status: 0 with the export; 2 for bad input, and when the framework cannot express the plan.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_verb(subparsers, "export", "write a plan as a framework's job", HELP)
    p.add_argument("plan", metavar="PLAN", help="plan file (from simplan plan --out)")
    p.add_argument(
        "--to",
        choices=EXPORTS,
        help="the framework (default: the one the plan was made for, simplan plan --framework)",
    )
    p.add_argument("--out", metavar="FILE", help="write the export to FILE, not stdout")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from simplan.outputs import check_output_file, write_text_atomic
    from simplan.planner.plan import Plan

    if args.out:
        check_output_file(args.out, "--out")
    plan = Plan.read(args.plan)
    if args.to is None:
        if plan.framework is None:
            raise SimplanError(
                f"{args.plan} was not planned for a framework (simplan plan --framework); "
                f"give --to {'|'.join(EXPORTS)}"
            )
        args.to = plan.framework
    text = plan.export(args.to)
    if args.out:
        write_text_atomic(text, args.out)
    if args.json:
        doc = export_document(plan, args.to, text)
        if args.out:
            doc["out"] = str(args.out)
        print(json.dumps(doc, indent=1))
    elif args.out:
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def export_document(plan: Any, kind: str, text: str) -> dict[str, Any]:
    """The JSON of an export: the framework pinned, the text, and its parsed form."""
    from simplan.planner import export as ex

    doc: dict[str, Any] = {"to": kind, "model": plan.model, "text": text}
    pinned = ex.FRAMEWORKS.get("megatron" if kind == "torchrun" else kind)
    if pinned is not None:
        doc["framework"] = {"name": pinned.name, "version": pinned.version, "source": pinned.source}
    if kind in ("megatron", "torchrun"):
        doc["arguments"] = ex.megatron_args(plan)
    elif kind == "torchtitan":
        doc["config"] = ex.torchtitan_job(plan)
    elif kind == "deepspeed":
        doc["config"] = ex.deepspeed_config(plan)
    return doc
