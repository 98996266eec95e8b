"""`simplan validate` of a multi-task model: its tasks trained jointly on NPROCS gloo ranks with a
head placement and a task-weighting strategy (simplan.validate_mtl)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from simplan.errors import SimplanError
from simplan.parallel import ParallelConfig
from simplan.runtime.mtl_run import MTL_PLACEMENTS
from simplan.runtime.task_weights import WEIGHTINGS

HELP = """\
A multi-task model (one that declares TASKS, e.g. mtl-vision) trains its tasks jointly on
rendered shapes (simplan/shapes_data.py): --placement replicated (DDP of the whole model, the
global batch split over the ranks) or task-parallel (2 ranks: the trunk and the cheaper heads on
rank 0, the heaviest head on rank 1, features and their gradient sent point-to-point), each step's
task losses combined by --weighting (equal, uncertainty, gradnorm, dwa, or the torchjd
aggregators pcgrad and mgda). The global batch is --global-batch, else --micro-batch x NPROCS in
both placements. The record holds every step's per-task loss, weight and gradient norm on the
shared features (`simplan report` plots them). Vision presets take a smaller image with the
image=N knob: --model 'mtl-vision#image=64'.
"""


def add_weighting_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--weighting",
        choices=WEIGHTINGS,
        help="a multi-task model's task weighting: equal (default), uncertainty (Kendall et "
        "al. 2018), gradnorm (Chen et al. 2018), dwa (Liu et al. 2019), or a gradient "
        "aggregator from torchjd (pcgrad, mgda; pip install 'simplan[mtl]')",
    )


def declares_tasks(model: str) -> bool:
    from simplan.sources import load_model

    return "tasks" in load_model(model).meta


def is_multitask(args: argparse.Namespace, model: str) -> bool:
    """Whether this validation trains a multi-task model (one line if the flags disagree)."""
    mtl = args.placement in MTL_PLACEMENTS or args.weighting is not None
    if args.teacher:
        if mtl:
            raise SimplanError(
                "--teacher distils with --placement colocated or separate; --placement "
                "replicated/task-parallel and --weighting are for multi-task models"
            )
        return False
    if not mtl and not (args.model and declares_tasks(model)):
        return False
    if not declares_tasks(model):
        raise SimplanError(
            f"model {model} declares no tasks: --placement replicated/task-parallel and "
            "--weighting are for multi-task models (e.g. mtl-vision)"
        )
    if args.placement not in (None, *MTL_PLACEMENTS):
        raise SimplanError(
            f"--placement {args.placement} places a distillation teacher; a multi-task "
            f"model's heads take {', '.join(MTL_PLACEMENTS)}"
        )
    return True


def run_multitask(args: argparse.Namespace, model: str, config: ParallelConfig) -> int:
    from simplan.runtime.mtl_run import MtlJob
    from simplan.validate_mtl import validate_mtl

    if args.plan or args.strategy != "ddp" or config.compress != "none" or config.local_sgd > 1:
        raise SimplanError(
            "a multi-task model runs without --plan, --strategy, --compress or --local-sgd: "
            "drop them"
        )
    nprocs = config.world_size
    job = MtlJob(
        model=model,
        placement=args.placement or MTL_PLACEMENTS[0],
        nprocs=nprocs,
        global_batch=args.global_batch or config.micro_batch * nprocs,
        weighting=args.weighting or "equal",
        steps=args.steps,
        warmup=args.warmup,
        timeout_s=args.timeout,
        realtime=args.realtime,
    )
    record = validate_mtl(
        job,
        min_timed_s=args.min_time,
        in_run_profile=args.profile_source == "in-run",
        runs_dir=args.runs_dir,
    )
    if args.json:
        print(json.dumps(record, indent=1))
    else:
        print_mtl_record(record)
    return 0


def print_mtl_record(record: dict[str, Any]) -> None:
    meas, pred = record["measured"], record["predicted"]
    print(
        f"{record['configuration']}: predicted {record['predicted_step_s'] * 1e3:.2f} ms   "
        f"measured {record['measured_step_s'] * 1e3:.2f} ms   error {record['rel_error']:+.1%}"
        f"   ({len(meas['per_step_s'])} timed steps, median of the slowest rank)"
    )
    for d in pred["devices"]:
        print(
            f"predicted rank {d['device']} ({d['role']}): compute {d['compute_s'] * 1e3:.2f} ms, "
            f"communication {d['comm_s'] * 1e3:.2f} ms"
        )
    for name, curve in meas["tasks"].items():
        losses, weights = curve["losses"], curve["weights"]
        print(
            f"task {name}: loss {losses[0]:.3f} -> {losses[-1]:.3f}, weight {weights[0]:.3f} "
            f"-> {weights[-1]:.3f} over {len(losses)} steps"
        )
    print(
        f"prediction from the {record['profile_source']} profile {record['profile']}; from the "
        f"standalone one: {record['predicted_standalone_step_s'] * 1e3:.2f} ms"
    )
    print(f"record {record['path']}")
