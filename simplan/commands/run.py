"""`simplan run`: run a plan for real on local ranks, optionally against the reference."""

from __future__ import annotations

import argparse
import json

from simplan.commands import add_rank_timeout, add_verb
from simplan.commands.argtypes import STEPS

EXIT_LOSSES_DIFFER = 4  # --reference: the run's losses are not the single-process ones

HELP = """\
Run a plan file's configuration for real: world = dp x tp x pp local torch.distributed ranks
(gloo on CPUs) on one DeviceMesh, composing the plan's pipeline split and schedule, tensor and
sequence parallelism, activation recomputation, ZeRO stage and micro-batches as README "How a
plan runs" describes, and print the loss of every step over the whole global batch. The ranks
train in fp32; a plan's bf16/fp16 mixed precision is reported, not run. What no torch setting
runs exactly (ZeRO-1 with tp or pp, selective recomputation without attention, ...) is refused.

With --reference the same model, seed and global batch also train in this one process, and
the losses must agree within a relative 1e-5 (fp32 rounding; a wrong data split differed by 4e-3).

exit status: 0 done (and, with --reference, the losses agree); 2 bad input or a failed rank
(one line on stderr); 4 --reference: the losses differ (the comparison is printed)

examples:
  simplan run --plan plan.json
  simplan run --plan plan.json --steps 5 --reference
  simplan run --plan plan.json --reference --json
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_verb(subparsers, "run", "run a plan for real on local ranks", HELP)
    p.add_argument("--plan", required=True, help="the plan file (from `simplan plan --out`)")
    p.add_argument("--steps", type=STEPS, default=5, help="optimizer steps (default 5)")
    p.add_argument(
        "--reference",
        action="store_true",
        help="also train in one process and compare the losses (exit 4 if they differ)",
    )
    add_rank_timeout(p, 120.0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from simplan.planfile import read_plan
    from simplan.runtime.plan_run import RUN_DTYPE, run_plan

    plan = read_plan(args.plan)
    result = run_plan(plan, steps=args.steps, reference=args.reference, timeout_s=args.timeout)
    differ = result.comparison is not None and not result.comparison.equal
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
        return EXIT_LOSSES_DIFFER if differ else 0
    note = "" if result.plan_dtype == RUN_DTYPE else f" (the plan's {result.plan_dtype} is not run)"
    print(
        f"{result.model}: {result.configuration} ({result.strategy}) on {result.world_size} "
        f"local ranks, {RUN_DTYPE}{note}; median step {result.step_time_s * 1e3:.1f} ms"
    )
    ref = result.comparison
    for i, loss in enumerate(result.losses):
        extra = "" if ref is None else f"   reference {ref.reference[i]:.7f}"
        print(f"step {i + 1}: loss {loss:.7f}{extra}")
    if ref is not None:
        verdict = "equal" if ref.equal else "DIFFER"
        print(
            f"losses {verdict} to the single-process reference: max relative difference "
            f"{ref.max_rel_diff:.2e} (tolerance {ref.rtol:.0e})"
        )
    return EXIT_LOSSES_DIFFER if differ else 0
