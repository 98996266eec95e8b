"""Multi-task placements, predicted against real runs: mtl-vision's classification and detection
tasks trained jointly on 2 gloo ranks on rendered shapes, replicated (DDP of the whole model) and
task-parallel (trunk + classification on rank 0, detection on rank 1, features and their gradient
point-to-point), each run --repeat times in turn through simplan.validate_mtl (one record per run
under traces/runs/).

    .venv/bin/python benchmarks/validate_multitask.py [--model 'mtl-vision#image=64']
        [--global-batch 8] [--weighting equal] [--steps 20] [--repeat 3] [--out FILE.json]

Prints a table of medians over the repeats (predicted and measured step, relative error, the
prediction from the standalone profile, each task's first and last loss) and writes
benchmarks/results/validate_multitask.json.
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

PLACEMENTS = ("replicated", "task-parallel")
KEYS = ("predicted_step_s", "measured_step_s", "rel_error", "predicted_standalone_step_s")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from simplan.runtime.mtl_run import MtlJob
    from simplan.validate_mtl import validate_mtl

    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in PLACEMENTS}
    for i in range(args.repeat):
        for placement in PLACEMENTS:  # in turn, so that both see the machine's drift alike
            job = MtlJob(
                model=args.model,
                placement=placement,
                nprocs=2,
                global_batch=args.global_batch,
                weighting=args.weighting,
                steps=args.steps,
            )
            record = validate_mtl(job, runs_dir=args.runs_dir)
            row = {k: record[k] for k in KEYS}
            row["losses"] = {
                name: (c["losses"][0], c["losses"][-1])
                for name, c in record["measured"]["tasks"].items()
            }
            row["record"] = record["path"]
            runs[placement].append(row)
            print(
                f"{i + 1}/{args.repeat} {placement}: predicted {row['predicted_step_s'] * 1e3:.2f}"
                f" ms, measured {row['measured_step_s'] * 1e3:.2f} ms ({row['rel_error']:+.1%})",
                file=sys.stderr,
            )
    medians = {
        p: {k: statistics.median(r[k] for r in rows) for k in KEYS} for p, rows in runs.items()
    }
    return {
        "model": args.model,
        "global_batch": args.global_batch,
        "weighting": args.weighting,
        "repeat": args.repeat,
        "steps": args.steps,
        "medians": medians,
        "runs": runs,
    }


def print_table(doc: dict[str, Any]) -> None:
    print(
        f"{doc['model']}, 2 gloo ranks, global batch {doc['global_batch']}, weighting "
        f"{doc['weighting']}; medians of {doc['repeat']} runs"
    )
    print("placement      predicted ms  measured ms   error  standalone-pred ms  losses (last run)")
    for p, m in doc["medians"].items():
        losses = ", ".join(
            f"{name} {a:.2f}->{b:.2f}" for name, (a, b) in doc["runs"][p][-1]["losses"].items()
        )
        print(
            f"{p:<13}  {m['predicted_step_s'] * 1e3:>12.2f}  {m['measured_step_s'] * 1e3:>11.2f}"
            f"  {m['rel_error']:>+6.1%}  {m['predicted_standalone_step_s'] * 1e3:>18.2f}  {losses}"
        )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mtl-vision#image=64")
    p.add_argument("--global-batch", type=int, default=8)
    p.add_argument("--weighting", default="equal")
    p.add_argument("--steps", type=int, default=20, help="timed steps per run (default 20)")
    p.add_argument("--repeat", type=int, default=3, help="runs per placement (default 3)")
    p.add_argument("--runs-dir", default="traces/runs")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/validate_multitask.json"))
    args = p.parse_args()
    doc = run(args)
    print_table(doc)
    print(f"wrote {write_json_atomic(doc, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
