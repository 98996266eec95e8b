"""`simplan validate`: run a configuration for real and compare it with the simulation."""

from __future__ import annotations

import argparse
import json
from typing import Any

from simplan.commands import add_rank_timeout, add_verb
from simplan.commands.argtypes import (
    MAX_RANKS,
    STEPS,
    WARMUP,
    non_negative_float,
    positive_int,
)
from simplan.commands.config_flags import add_config_flags
from simplan.commands.distill_flags import add_teacher_flags, check_teacher_flags, distillations
from simplan.commands.flag_rules import check_seq_len
from simplan.commands.model_flags import add_model_knob_flags, model_spec
from simplan.commands.mtl_validate import HELP as MTL_HELP
from simplan.commands.mtl_validate import add_weighting_flag, is_multitask, run_multitask
from simplan.errors import SimplanError
from simplan.parallel import ParallelConfig
from simplan.runtime.distill_run import RUNTIME_PLACEMENTS
from simplan.runtime.mtl_run import MTL_PLACEMENTS

MAX_MIN_TIME_S = 3600.0  # the timed steps' least duration: an hour is already absurd

HELP = """\
Profile MODEL on this machine (one torch thread per rank, cached under traces/profiles/),
simulate a configuration on the local cluster calibrated by `simplan bench-comm` (localhost-cpu
with NPROCS ranks), run the same configuration for real on NPROCS torch.distributed ranks (gloo;
DDP, FSDP2, DTensor tensor parallel or torch.distributed.pipelining), and print the predicted and
measured step time with the relative error. With --plan, any plan runs: its dp x tp x pp
ranks composed on one DeviceMesh (README, "How a plan runs"), on a local cluster of as many
ranks. Each run appends a record to traces/runs/ (or
--runs-dir; checked before the run starts). The calibration is --calibration FILE, else the file
`simplan bench-comm --nprocs N` writes by default.

examples:
  simplan validate --model mlp --nprocs 2
  simplan validate --model gpt-tiny --nprocs 2 --strategy pp --schedule gpipe --micro-batch 2
  simplan validate --model mlp --nprocs 2 --strategy ddp --compress fp16 --json
  simplan validate --model mlp --nprocs 2 --compress powersgd --powersgd-rank 4
  simplan validate --model mlp --nprocs 2 --local-sgd 4
  simplan validate --plan plan.json --steps 50
  simplan validate --model mlp --teacher mlp-wide --placement colocated --nprocs 2
  simplan validate --model mlp --teacher mlp-wide --placement separate --nprocs 2

With --teacher, a distillation run: colocated, the NPROCS ranks are DDP student replicas each
running its own frozen teacher forward; separate, rank 0 is the teacher sending its logits to
one student (send/recv), the other ranks' worth of global batch in micro-batches
(simplan.distill, simplan.runtime.distill_run). Both models are profiled in the run.

  simplan validate --model 'mtl-vision#image=64' --nprocs 2 --placement task-parallel \
      --micro-batch 4 --weighting gradnorm

"""
HELP += MTL_HELP


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_verb(
        subparsers,
        "validate",
        "run a configuration for real and compare it with the simulation",
        HELP,
    )
    p.add_argument("--model", help="preset, model.toml or file.py:factory")
    add_model_knob_flags(p, quantize=False)
    p.add_argument(
        "--nprocs",
        type=positive_int(MAX_RANKS),
        help="local ranks (default 2, or the plan's world size)",
    )
    p.add_argument("--strategy", default="ddp", help="ddp, fsdp, tp or pp (default ddp)")
    p.add_argument("--plan", help="validate a plan file's configuration instead")
    add_config_flags(
        p,
        (
            "micro_batch",
            "global_batch",
            "seq_len",
            "schedule",
            "virtual_stages",
            "compress",
            "powersgd_rank",
            "local_sgd",
        ),
        defaults={"micro_batch": 64, "global_batch": None},
        helps={
            "micro_batch": "samples per micro-batch (64)",
            "global_batch": "samples per step (default: one or, for pp, 2 x pp micro-batches "
            "per replica)",
        },
    )
    p.add_argument("--steps", type=STEPS, default=30, help="timed steps, at least (default 30)")
    p.add_argument(
        "--min-time",
        type=non_negative_float(MAX_MIN_TIME_S),
        default=3.0,
        help="seconds the timed steps should last at least: short steps are run more often, up "
        "to 5000, so that their median outlasts the host's slow spells of a second or two "
        "(default 3; 0: exactly --steps)",
    )
    p.add_argument("--warmup", type=WARMUP, default=5, help="untimed steps first (default 5)")
    add_rank_timeout(p, 120.0)
    p.add_argument(
        "--default-scheduling",
        dest="realtime",
        action="store_false",
        help="run the ranks under the default scheduler (by default they run SCHED_FIFO where "
        "permitted, as `simplan bench-comm` calibrates; see simplan/realtime.py)",
    )
    p.add_argument("--reprofile", action="store_true", help="measure the standalone profile again")
    p.add_argument(
        "--profile-source",
        default="in-run",
        choices=("in-run", "standalone"),
        help="predict from the profile the ranks measure side by side at the start of the run "
        "(default), or from one measured in this process alone (cached)",
    )
    p.add_argument("--runs-dir", default="traces/runs", help="where records go (traces/runs)")
    p.add_argument(
        "--calibration",
        metavar="FILE",
        help="the bench-comm calibration to predict with (default: the one `simplan bench-comm "
        "--nprocs N` writes, traces/collectives/localhost-cpu/gloo-<N>ranks.json, else the "
        "2-rank one of the localhost-cpu preset)",
    )
    add_teacher_flags(p, RUNTIME_PLACEMENTS, MTL_PLACEMENTS)
    add_weighting_flag(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def _inputs(args: argparse.Namespace) -> tuple[str, ParallelConfig]:
    from simplan.runtime import config_for

    if args.plan:
        from simplan.planfile import read_plan

        plan = read_plan(args.plan)
        world = plan.config.world_size
        if args.nprocs is not None and args.nprocs != world:
            raise SimplanError(
                f"the plan runs on {world} ranks ({plan.config.describe()}), not --nprocs "
                f"{args.nprocs}; drop --nprocs or use another plan"
            )
        return plan.model, plan.config
    if not args.model:
        raise SimplanError("give --model (or --plan PLAN.json)")
    check_seq_len(args.model, args.seq_len, "fp32")
    config = config_for(
        args.strategy,
        2 if args.nprocs is None else args.nprocs,
        micro_batch=args.micro_batch,
        global_batch=args.global_batch,
        schedule=args.schedule,
        virtual_stages=args.virtual_stages,
        seq_len=args.seq_len,
        compress=args.compress,
        powersgd_rank=args.powersgd_rank,
        local_sgd=args.local_sgd,
    )
    return args.model, config


def run(args: argparse.Namespace) -> int:
    args.model = model_spec(args)
    from simplan.outputs import check_record_dir
    from simplan.validate import ValidationOptions, validate

    check_record_dir(args.runs_dir, "--runs-dir")
    model, config = _inputs(args)
    if is_multitask(args, model):
        return run_multitask(args, model, config)
    check_teacher_flags(args)
    if args.teacher:
        return _distill(args, model, config)
    if args.calibration:
        from simplan.topology.cluster import resolve_calibration
        from simplan.topology.comm_calibration import read_link_calibration

        # a bad file is refused before any rank starts
        read_link_calibration(resolve_calibration(args.calibration))
    record = validate(
        model,
        config,
        ValidationOptions(
            steps=args.steps,
            min_timed_s=args.min_time,
            warmup=args.warmup,
            realtime=args.realtime,
            timeout_s=args.timeout,
            refresh_profile=args.reprofile,
            profile_source=args.profile_source,
            runs_dir=args.runs_dir,
            calibration=args.calibration,
        ),
    )
    if args.json:
        print(json.dumps(record, indent=1))
    else:
        print_record(record)
    return 0


def _distill(args: argparse.Namespace, model: str, config: ParallelConfig) -> int:
    """validate --teacher: one distillation placement, predicted and run."""
    from simplan.validate_distill import validate_distill

    if args.plan or args.strategy != "ddp" or config.compress != "none" or config.local_sgd > 1:
        raise SimplanError(
            "--teacher runs DDP students without --plan, --compress or --local-sgd: drop them"
        )
    distill = distillations(args)[0]  # --placement defaults to colocated here
    record = validate_distill(
        model,
        distill,
        config,
        steps=args.steps,
        min_timed_s=args.min_time,
        warmup=args.warmup,
        runs_dir=args.runs_dir,
    )
    if args.json:
        print(json.dumps(record, indent=1))
        return 0
    pred = record["predicted"]
    print(
        f"{record['configuration']}: predicted {record['predicted_step_s'] * 1e3:.2f} ms   "
        f"measured {record['measured_step_s'] * 1e3:.2f} ms   error {record['rel_error']:+.1%}"
        f"   ({len(record['measured']['per_step_s'])} timed steps, median)"
    )
    print(
        f"predicted: student {pred['student_step_s'] * 1e3:.2f} ms (distillation loss "
        f"+{pred['loss_extra_s'] * 1e3:.3f} ms a micro-batch), teacher forward "
        f"{pred['teacher_forward_s'] * 1e3:.2f} ms a micro-batch, busy "
        f"{pred['teacher_busy_s'] * 1e3:.2f} ms a step, logits {pred['logits_bytes']:.0f} B a "
        f"step ({pred['transfer_s'] * 1e3:.3f} ms moving them); bound: {pred['bound']}"
    )
    teacher = record["measured"]["teacher_s"]
    if teacher is not None:
        print(f"measured: teacher {teacher * 1e3:.2f} ms a step (median)")
    print(
        f"prediction from the {record['profile_source']} profiles; from the standalone ones: "
        f"{record['predicted_standalone_step_s'] * 1e3:.2f} ms"
    )
    print(f"record {record['path']}")
    return 0


# the ratio of the run's small all-reduce to its calibrated time that counts as normal here:
# within one run of `simplan validate` right after bench-comm the ratio ranged over 0.56-0.93
# (80 calls; a 64 KiB all-reduce is mostly wake-up latency, the noisiest thing on this host)
CHECK_BAND = (0.5, 2.0)


def print_record(record: dict[str, Any]) -> None:
    meas, pred = record["measured"], record["predicted"]
    env = record["environment"]
    ranks = ", ".join(f"{t * 1e3:.2f}" for t in record["per_rank_step_s"])
    print(
        f"{record['configuration']}: fp32, {env['threads_per_rank']} thread per rank, "
        f"{record['job']['steps']} timed steps after {record['job']['warmup']}"
    )
    print(
        f"predicted {record['predicted_step_s'] * 1e3:.2f} ms   measured "
        f"{record['measured_step_s'] * 1e3:.2f} ms   error {record['rel_error']:+.1%}"
    )
    print(
        f"measured: median of the slowest rank per step; per rank {ranks} ms; p10-p90 spread "
        f"{meas['spread']['p10_p90']:.0%}; optimizer {meas['optimizer_s'] * 1e3:.2f} ms; "
        f"unsplit fwd+bwd {meas['baseline_fwd_bwd_s'] * 1e3:.2f} ms (slower rank "
        f"+{meas['baseline_straggler_s'] * 1e3:.2f})"
    )
    local, sim = meas.get("local_sgd"), pred.get("local_sgd")
    if local and sim:
        print(
            f"local SGD, period {local['period']}: mean over a period; step with the model "
            f"average predicted {sim['sync_step_s'] * 1e3:.2f} ms, measured "
            f"{local['sync_step_s'] * 1e3:.2f}; local step predicted "
            f"{sim['local_step_s'] * 1e3:.2f}, measured {local['local_step_s'] * 1e3:.2f}"
        )
    parts = ", ".join(f"{k.removesuffix('_s')} {v * 1e3:.2f}" for k, v in pred["breakdown"].items())
    print(f"predicted breakdown (ms, mean over stages): {parts}")
    if "memory" in record:
        from simplan.validate_memory import memory_lines

        print("\n".join(memory_lines(record["memory"])))
    print(
        f"prediction from the {record['profile_source']} profile {record['profile']}; "
        f"from the standalone profile: {record['predicted_standalone_step_s'] * 1e3:.2f} ms"
    )
    cal = record.get("calibration")
    if cal:
        print(
            f"communication from {cal['path']} (bench-comm {cal['date']}, "
            f"{cal.get('scheduling') or 'default'} scheduling): re-run bench-comm when this "
            "machine's load has changed since"
        )
    check = record.get("calibration_check")
    if check:
        far = not CHECK_BAND[0] <= check["ratio"] <= CHECK_BAND[1]
        advice = "; the machine communicates unlike its calibration: re-run bench-comm"
        verdict = advice if far else ""
        print(
            f"calibration check: a {check['size_B'] / 1024:.0f} KiB all-reduce took "
            f"{check['measured_s'] * 1e3:.3f} ms during the run, {check['calibrated_s'] * 1e3:.3f}"
            f" ms calibrated ({check['ratio']:.2f}x{verdict})"
        )
    print(f"record {record['path']}")
