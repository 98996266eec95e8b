"""The distillation flags (--teacher and its placement) shared by plan, simulate and validate."""

from __future__ import annotations

import argparse

from simplan.commands.argtypes import FloatRange, positive_float, positive_int
from simplan.distill import PLACEMENTS, TEACHER_DTYPES, Distillation
from simplan.errors import SimplanError

MAX_TEMPERATURE = 1e3
MAX_READ_GBPS = 1e6


def add_teacher_flags(
    p: argparse.ArgumentParser,
    placements: tuple[str, ...] = PLACEMENTS,
    task_placements: tuple[str, ...] = (),
) -> None:
    """--teacher, --placement, --temperature, --alpha, --teacher-dtype, and where
    'precomputed' is offered --logits-read-gbps and --teacher-devices; `task_placements` are
    more --placement choices, for a multi-task model's heads."""
    g = p.add_argument_group("distillation")
    g.add_argument(
        "--teacher",
        metavar="MODEL",
        help="distil the model from this frozen teacher (preset, model.toml or file.py:factory; "
        "its logits must be shaped like the model's): forward only, no gradients, no optimizer "
        "state",
    )
    g.add_argument(
        "--placement",
        choices=placements + task_placements,
        help="where the teacher runs: colocated (each student replica runs its own teacher "
        "forward first), separate (the teacher on devices of its own sends its logits "
        "point-to-point; the two overlap)"
        + (", precomputed (logits read from storage)" if "precomputed" in placements else "")
        + "; default: "
        + ("the faster one" if len(placements) > 2 else "colocated")
        + (
            f". For a multi-task model (no --teacher), where its heads run: "
            f"{', '.join(task_placements)} (default {task_placements[0]})"
            if task_placements
            else ""
        ),
    )
    g.add_argument(
        "--temperature",
        type=positive_float(MAX_TEMPERATURE),
        help="softmax temperature of the KL term (default 2)",
    )
    g.add_argument(
        "--alpha",
        type=FloatRange(0.0, 1.0),
        help="weight of the KL term; 1 - alpha weighs the hard-label loss (default 0.5)",
    )
    g.add_argument(
        "--teacher-dtype",
        choices=TEACHER_DTYPES,
        help="the teacher's inference dtype (default: the model's); int8-dynamic: torch's "
        "dynamic quantization on a CPU (int8 linear weights, activations quantized per call), "
        "timed from this CPU's measured int8 rates (benchmarks/int8_linear_rates.py)",
    )
    if "precomputed" in placements:
        g.add_argument(
            "--teacher-devices",
            type=positive_int(1 << 20),
            help="devices the teacher gets when separate (default 1)",
        )
        g.add_argument(
            "--logits-read-gbps",
            type=positive_float(MAX_READ_GBPS),
            help="storage read bandwidth for precomputed logits, GB/s (without it the "
            "precomputed placement is not compared)",
        )


FLAGS = (
    ("placement", "--placement"),
    ("temperature", "--temperature"),
    ("alpha", "--alpha"),
    ("teacher_dtype", "--teacher-dtype"),
    ("teacher_devices", "--teacher-devices"),
    ("logits_read_gbps", "--logits-read-gbps"),
    ("teacher_profile", "--teacher-profile"),
)


def check_teacher_flags(args: argparse.Namespace) -> None:
    """A distillation flag that would do nothing is refused (one line): any without
    --teacher, --teacher-devices without the separate placement among those compared, and
    --logits-read-gbps without the precomputed one."""
    given = [flag for name, flag in FLAGS if getattr(args, name, None) is not None]
    if not args.teacher and given:
        raise SimplanError(f"{', '.join(given)} need(s) --teacher")
    rules = (("teacher_devices", "separate"), ("logits_read_gbps", "precomputed"))
    for name, placement in rules:
        if getattr(args, name, None) is not None and args.placement not in (None, placement):
            flag = dict(FLAGS)[name]
            raise SimplanError(f"{flag} applies to --placement {placement} only")


def distillations(args: argparse.Namespace) -> list[Distillation]:
    """The placements the flags ask for: the one given, else every one that can be priced."""
    check_teacher_flags(args)
    if not args.teacher:
        return []
    read_Bps = (getattr(args, "logits_read_gbps", None) or 0.0) * 1e9
    if args.placement:
        chosen = [args.placement]
    elif not hasattr(args, "logits_read_gbps"):  # a verb that runs one placement: validate
        chosen = ["colocated"]
    else:
        chosen = [p for p in PLACEMENTS if p != "precomputed" or read_Bps]
    return [
        Distillation(
            teacher=args.teacher,
            placement=placement,
            teacher_devices=getattr(args, "teacher_devices", None) or 1,
            temperature=2.0 if args.temperature is None else args.temperature,
            alpha=0.5 if args.alpha is None else args.alpha,
            teacher_dtype=args.teacher_dtype or "",
            logits_read_Bps=read_Bps,
        )
        for placement in chosen
    ]
