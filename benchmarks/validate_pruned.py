"""Pruned models on 2 CPU ranks: the simulator's predicted step time against real DDP runs.

    .venv/bin/python benchmarks/validate_pruned.py [--repeat 3] [--steps 20] [--min-time 3]
        [--rows 'resnet50#prune=channels:0.3:2;gpt-tiny#prune=heads:0.5:4'] [--out FILE.json]

Each row (model spec with its pruning knob, micro-batch) runs --repeat times through
simplan.validate (records under traces/runs/), as benchmarks/validate_cpu.py runs the unpruned
models: ResNet-50 with 30% of its channels pruned by Torch-Pruning (224x224 images, 2 per
micro-batch: a step lasts about half a second on one core per rank) and gpt-tiny with half its
attention heads. The table shows the medians of the runs, then the predicted and measured peak
tensor memory of each row's last run; JSON goes to benchmarks/results/validate_pruned.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from validate_cpu import memory_rows, run_row  # noqa: E402

from simplan.environment import environment  # noqa: E402
from simplan.outputs import write_json_atomic  # noqa: E402

ROWS = "resnet50#prune=channels:0.3:2;gpt-tiny#prune=heads:0.5:4"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rows", default=ROWS, help="MODEL:MICRO_BATCH;... (default %(default)s)")
    p.add_argument("--nprocs", type=int, default=2)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--min-time", type=float, default=3.0)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--default-scheduling", dest="realtime", action="store_false")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/validate_pruned.json"))
    args = p.parse_args()
    rows = []
    print(f"{'model':30} {'mb':>3} {'predicted ms':>13} {'measured ms':>12} {'error':>7}  runs")
    for item in args.rows.split(";"):
        spec, mb = item.rsplit(":", 1)
        row = run_row(spec, "ddp", int(mb), args)
        rows.append(row)
        if row["status"] != "ok":
            print(f"{spec:30} {mb:>3} {row['status']}: {row.get('reason', '')}")
            continue
        runs = ", ".join(f"{e:+.1%}" for e in row["run_errors"])
        print(f"{spec:30} {mb:>3} {row['predicted_step_s'] * 1e3:13.1f} "
              f"{row['measured_step_s'] * 1e3:12.1f} {row['rel_error']:+7.1%}  {runs}")  # fmt: skip
    print(f"\n{'peak tensor memory per rank (last run)':44} {'predicted MiB':>13} "
          f"{'measured MiB':>12} {'error':>7}")  # fmt: skip
    for m in memory_rows(rows):
        print(f"{m['row']:44} {m['predicted_peak_bytes'] / 2**20:13.1f} "
              f"{m['measured_peak_bytes'] / 2**20:12.1f} {m['rel_error']:+7.1%}")  # fmt: skip
    write_json_atomic({"environment": environment(), "rows": rows}, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
