"""The synchronisation knobs validated: simplan validate on mlp x 2 ranks for each of plain DDP,
--compress fp16 / bf16 / powersgd (ranks 1 and 4) and --local-sgd 4 and 8, several runs each.

    PYTHONPATH=. python benchmarks/validate_knobs.py [--repeat 3] [--knobs none,fp16,...]
        [--runs-dir traces/runs] [--out benchmarks/results/validate_knobs.json]

Each run goes through simplan.validate (one record per run under --runs-dir, naming the knob in
its "sync" field); the table shows per knob the median predicted and measured step time over the
runs, the error of the medians and the range of the runs' errors. For local SGD the times are
the mean over a period of H steps (simplan.runtime.job.Measurement.local_sgd_steps); its
averaging and local steps are listed too. A run that fails is listed with its one-line error.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simplan.errors import SimplanError  # noqa: E402
from simplan.io import write_json_atomic  # noqa: E402
from simplan.ranks import RankFailure  # noqa: E402
from simplan.runtime import config_for  # noqa: E402
from simplan.table import render  # noqa: E402
from simplan.validate import ValidationOptions, validate  # noqa: E402

KNOBS: dict[str, dict[str, Any]] = {
    "none": {},
    "fp16": {"compress": "fp16"},
    "bf16": {"compress": "bf16"},
    "powersgd-r1": {"compress": "powersgd", "powersgd_rank": 1},
    "powersgd-r4": {"compress": "powersgd", "powersgd_rank": 4},
    "local-sgd-4": {"local_sgd": 4},
    "local-sgd-8": {"local_sgd": 8},
}
OUT = ROOT / "benchmarks" / "results" / "validate_knobs.json"


def one_run(knob: dict[str, Any], runs_dir: str) -> dict[str, Any]:
    config = config_for("ddp", 2, micro_batch=64, **knob)
    try:
        record = validate("mlp", config, ValidationOptions(runs_dir=runs_dir))
    except (SimplanError, RankFailure) as exc:
        return {"error": str(exc).splitlines()[0]}
    out = {
        "predicted_step_s": record["predicted_step_s"],
        "measured_step_s": record["measured_step_s"],
        "rel_error": record["rel_error"],
        "record": record["path"],
        "sync": record["sync"],
    }
    local = record["measured"].get("local_sgd")
    if local:
        sim = record["predicted"]["local_sgd"]
        out["local_sgd"] = {
            "measured": local,
            "predicted": {k: sim[k] for k in ("local_step_s", "sync_step_s", "period_mean_s")},
        }
    return out


def summary(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"knob": name, "runs": runs, "error": runs[0]["error"] if runs else "no run"}
    pred = statistics.median(r["predicted_step_s"] for r in ok)
    meas = statistics.median(r["measured_step_s"] for r in ok)
    errors = [r["rel_error"] for r in ok]
    return {
        "knob": name,
        "runs": runs,
        "ok_runs": len(ok),
        "predicted_step_s": pred,
        "measured_step_s": meas,
        "rel_error": (pred - meas) / meas,
        "error_range": [min(errors), max(errors)],
        "within_10pct": abs(pred - meas) / meas <= 0.10,
    }


def row(s: dict[str, Any]) -> list[str]:
    if "error" in s:
        return [s["knob"], "-", "-", "-", "-", s["error"][:60]]
    lo, hi = s["error_range"]
    note = ""
    local = [r["local_sgd"] for r in s["runs"] if "local_sgd" in r]
    if local:
        m = statistics.median(x["measured"]["sync_step_s"] for x in local)
        p = statistics.median(x["predicted"]["sync_step_s"] for x in local)
        ml = statistics.median(x["measured"]["local_step_s"] for x in local)
        pl = statistics.median(x["predicted"]["local_step_s"] for x in local)
        note = f"avg step {p * 1e3:.2f}/{m * 1e3:.2f}, local {pl * 1e3:.2f}/{ml * 1e3:.2f} ms"
    return [
        s["knob"],
        f"{s['predicted_step_s'] * 1e3:.2f}",
        f"{s['measured_step_s'] * 1e3:.2f}",
        f"{s['rel_error']:+.1%}",
        f"{lo:+.0%}..{hi:+.0%} ({s['ok_runs']})",
        note,
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per knob (3)")
    parser.add_argument(
        "--knobs", default=",".join(KNOBS), help="comma-separated, of: " + ", ".join(KNOBS)
    )
    parser.add_argument("--runs-dir", default="traces/runs", help="where records go")
    parser.add_argument("--out", default=str(OUT), help="the JSON results")
    args = parser.parse_args()
    names = [k for k in args.knobs.split(",") if k]
    unknown = [k for k in names if k not in KNOBS]
    if unknown:
        raise SystemExit(f"unknown knob(s) {', '.join(unknown)}; choose from {', '.join(KNOBS)}")
    results = []
    for name in names:
        runs = []
        for i in range(args.repeat):
            runs.append(one_run(KNOBS[name], args.runs_dir))
            print(
                f"{name} run {i + 1}: {runs[-1].get('rel_error', runs[-1].get('error'))}",
                flush=True,
            )
        results.append(summary(name, runs))
    header = ["knob", "pred ms", "meas ms", "error", "run errors (runs)", "local SGD pred/meas"]
    print(render(header, [row(s) for s in results]))
    write_json_atomic(
        {"model": "mlp", "nprocs": 2, "repeat": args.repeat, "knobs": results}, args.out
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
