"""Distillation placements, predicted against real runs: a student distilled from a frozen
teacher on 2 gloo ranks, colocated (2 DDP students each running the teacher) and separate
(rank 0 the teacher sending logits to rank 1, the student), each run --repeat times in turn
through simplan.validate_distill (one record per run under traces/runs/).

    .venv/bin/python benchmarks/distill_placements.py [--student mlp] [--teacher mlp-wide]
        [--micro-batch 64] [--steps 300] [--repeat 5] [--out FILE.json]

Prints a table of medians over the repeats (predicted and measured step, relative error, the
teacher's measured time a step and the planner's choice by prediction and by measurement) and
writes benchmarks/results/distill_placements.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simplan.outputs import write_json_atomic  # noqa: E402

PLACEMENTS = ("colocated", "separate")
KEYS = ("predicted_step_s", "measured_step_s", "rel_error", "predicted_standalone_step_s")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from simplan.distill import Distillation
    from simplan.runtime import config_for
    from simplan.validate_distill import validate_distill

    config = config_for("ddp", 2, micro_batch=args.micro_batch)
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in PLACEMENTS}
    for i in range(args.repeat):
        for placement in PLACEMENTS:  # in turn, so that both see the machine's drift alike
            record = validate_distill(
                args.student,
                Distillation(teacher=args.teacher, placement=placement),
                config,
                steps=args.steps,
                runs_dir=args.runs_dir,
            )
            row = {k: record[k] for k in KEYS}
            row["teacher_s"] = record["measured"]["teacher_s"]
            row["record"] = record["path"]
            runs[placement].append(row)
            print(
                f"{i + 1}/{args.repeat} {placement}: predicted {row['predicted_step_s'] * 1e3:.3f}"
                f" ms, measured {row['measured_step_s'] * 1e3:.3f} ms "
                f"({row['rel_error']:+.1%})",
                file=sys.stderr,
            )
    medians = {
        p: {k: statistics.median(r[k] for r in rows) for k in (*KEYS, "teacher_s")}
        for p, rows in runs.items()
    }
    by = {
        key: min(PLACEMENTS, key=lambda p: medians[p][key])
        for key in ("predicted_step_s", "measured_step_s")
    }
    return {
        "student": args.student,
        "teacher": args.teacher,
        "micro_batch": args.micro_batch,
        "global_batch": config.global_batch,
        "repeat": args.repeat,
        "steps": args.steps,
        "medians": medians,
        "chosen_by_prediction": by["predicted_step_s"],
        "fastest_measured": by["measured_step_s"],
        "runs": runs,
    }


def print_table(doc: dict[str, Any]) -> None:
    print(
        f"{doc['student']} <- {doc['teacher']}, 2 gloo ranks, micro-batch {doc['micro_batch']}, "
        f"global batch {doc['global_batch']}; medians of {doc['repeat']} runs"
    )
    print("placement   predicted ms  measured ms  error   teacher ms/step  standalone-pred ms")
    for p, m in doc["medians"].items():
        print(
            f"{p:<10}  {m['predicted_step_s'] * 1e3:>12.3f}  {m['measured_step_s'] * 1e3:>11.3f}"
            f"  {m['rel_error']:>+6.1%}  {m['teacher_s'] * 1e3:>15.3f}  "
            f"{m['predicted_standalone_step_s'] * 1e3:>18.3f}"
        )
    print(
        f"chosen by prediction: {doc['chosen_by_prediction']}; fastest measured: "
        f"{doc['fastest_measured']}"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--student", default="mlp")
    p.add_argument("--teacher", default="mlp-wide")
    p.add_argument("--micro-batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=300, help="timed steps per run (default 300)")
    p.add_argument("--repeat", type=int, default=5, help="runs per placement (default 5)")
    p.add_argument("--runs-dir", default="traces/runs")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/distill_placements.json"))
    args = p.parse_args()
    doc = run(args)
    print_table(doc)
    print(f"wrote {write_json_atomic(doc, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
