"""CPU validation suite: the simulator's predicted step time and peak memory against real
torch.distributed runs.

    .venv/bin/python benchmarks/validate_cpu.py [--nprocs 2] [--steps 30] [--min-time 3]
        [--repeat 1] [--default-scheduling] [--models mlp,gpt-tiny,cnn-small]
        [--strategies ddp,fsdp,tp,pp] [--out FILE.json]

Models: `mlp` (784-128-10), `gpt-tiny` (models/gpt-tiny.toml: 4 layers, hidden 256, seq 128, vocab
8192) and `cnn-small` (models/cnn_small.py: a small ResNet-style CNN on 32x32 images; ResNet-50 at
224x224 is too slow for 2 CPU cores). Each model x strategy (DDP, FSDP2, DTensor TP, pipelining
1F1B) x two micro-batch sizes runs on `--nprocs` gloo ranks with one thread each through
simplan.validate (one record per run under traces/runs/): at least --steps timed steps, more for
short steps so that they last --min-time seconds; ranks under SCHED_FIFO where permitted
(--default-scheduling: the default scheduler; calibrate bench-comm the same way). Combinations
torch cannot run are listed as skipped with the reason. Writes reports/validation.md and
benchmarks/results/validate_cpu.json. With --repeat N each configuration runs N times and the table
shows the median measurement and the run-to-run range. A hand-written section of the report from
its "## Analysis" heading on is kept when the table is regenerated."""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simplan.errors import SimplanError  # noqa: E402
from simplan.outputs import write_json_atomic, write_text_atomic  # noqa: E402

MICRO_BATCHES = {"mlp": (64, 512), "gpt-tiny": (1, 4), "cnn-small": (8, 32)}
SKIP = {
    ("cnn-small", "tp"): "no tensor-parallel style for convolutions in DTensor's "
    "parallelize_module (ColwiseParallel/RowwiseParallel shard nn.Linear and nn.Embedding)",
}


def run_row(model: str, strategy: str, mb: int, args: argparse.Namespace) -> dict[str, Any]:
    from simplan.runtime import config_for
    from simplan.validate import ValidationOptions, validate

    row: dict[str, Any] = {"model": model, "strategy": strategy, "micro_batch": mb}
    if (model, strategy) in SKIP:
        return row | {"status": "skipped", "reason": SKIP[(model, strategy)]}
    config = config_for(strategy, args.nprocs, micro_batch=mb)
    records = []
    for _ in range(args.repeat):
        try:
            records.append(
                validate(
                    model,
                    config,
                    ValidationOptions(
                        steps=args.steps,
                        min_timed_s=args.min_time,
                        warmup=args.warmup,
                        realtime=args.realtime,
                    ),
                )
            )
        except SimplanError as exc:
            return row | {"status": "failed", "reason": str(exc), "records": records}
    measured = [r["measured_step_s"] for r in records]
    predicted = [r["predicted_step_s"] for r in records]
    errors = [r["rel_error"] for r in records]
    last = records[-1]
    return row | {
        "status": "ok",
        "configuration": last["configuration"],
        "predicted_step_s": statistics.median(predicted),
        "measured_step_s": statistics.median(measured),
        "measured_runs_s": measured,
        "predicted_runs_s": predicted,
        "run_errors": errors,
        "rel_error": statistics.median(errors),
        "spread_p10_p90": statistics.median(r["measured"]["spread"]["p10_p90"] for r in records),
        "optimizer_s": last["measured"]["optimizer_s"],
        "baseline_fwd_bwd_s": last["measured"]["baseline_fwd_bwd_s"],
        "baseline_straggler_s": last["measured"]["baseline_straggler_s"],
        "predicted_standalone_step_s": last["predicted_standalone_step_s"],
        "load_average": last["environment"]["load_average"],
        "breakdown": last["predicted"]["breakdown"],
        "last_measured_step_s": last["measured_step_s"],
        "memory": last.get("memory"),
        "records": [r["path"] for r in records],
    }


def memory_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per configuration and pipeline stage (the ranks of a stage hold the same): the
    predicted and measured peak tensor memory of its first rank (last run)."""
    out = []
    for r in rows:
        if r["status"] != "ok" or not r.get("memory"):
            continue
        seen: set[int] = set()
        for rank in r["memory"]["ranks"]:
            if rank["stage"] in seen:
                continue
            seen.add(rank["stage"])
            stage = f" stage {rank['stage']}" if r["strategy"] == "pp" else ""
            out.append({"row": f"{r['configuration']}{stage}", **rank})
    return out


def memory_section(mem_rows: list[dict[str, Any]]) -> list[str]:
    """The memory table and its summary."""
    from simplan.validate_memory import COMPONENTS

    def mib(x: float) -> str:
        return f"{x / 2**20:.2f}"

    names = list(COMPONENTS)
    out = [
        "Peak tensor memory per rank (MiB). Predicted: the simulator's largest moment of the "
        "step (`simplan.sim.peak`). Measured: the live tensor storages at the peak of one "
        "extra untimed step (`simplan.runtime.memory`, equal to torch's MemTracker and the "
        "profiler's memory events). Components (predicted / measured, at each side's peak): "
        + ", ".join(names)
        + ". Peak when: the predicted moment, the measured phase.",
        "",
        "| row | predicted MiB | measured MiB | error | "
        + " | ".join(names)
        + " | predicted when | measured when |",
        "|---|---:|---:|---:|" + "---:|" * len(names) + "---|---|",
    ]
    for m in mem_rows:
        comps = " | ".join(
            f"{mib(c['predicted_bytes'])} / {mib(c['measured_bytes'])}"
            for c in (m["components"][n] for n in names)
        )
        out.append(
            f"| {m['row']} | {mib(m['predicted_peak_bytes'])} | {mib(m['measured_peak_bytes'])} "
            f"| {m['rel_error']:+.1%} | {comps} | {m['predicted_moment']} | "
            f"{m['measured_phase']} |"
        )
    errors = [abs(m["rel_error"]) for m in mem_rows]
    if errors:
        out += [
            "",
            f"{len(errors)} rows: median |error| {statistics.median(errors):.1%}, max "
            f"{max(errors):.1%}; {sum(e <= 0.10 for e in errors)} within 10%, "
            f"{sum(e <= 0.25 for e in errors)} within 25%.",
        ]
    return out


def decomposition(rows: list[dict[str, Any]]) -> list[str]:
    """Predicted parts of the step against what the runs measured of them (ms)."""
    out = [
        "Where the time goes (ms, last run of each configuration). Predicted: compute, "
        "exposed communication, pipeline bubble "
        "and optimizer of the busiest stage (mean over stages). Measured: the unsplit model's "
        "forward+backward with the loss on every rank at once, no communication (for DDP and "
        "FSDP, each rank's compute), how much later the slower rank finished it (median over "
        "steps), the optimizer step, and the rest of the step (communication, waiting and "
        "framework work). Standalone: the prediction from the profile measured in one process.",
        "",
        "| configuration | pred compute | pred comm | pred bubble | pred optimizer | "
        "meas fwd+bwd | slower rank | meas optimizer | meas rest | standalone pred | load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["status"] != "ok":
            continue
        b = r["breakdown"]
        rest = r["last_measured_step_s"] - r["baseline_fwd_bwd_s"] - r["optimizer_s"]
        cells = [
            b["compute_s"],
            b["exposed_comm_s"],
            b["bubble_s"],
            b["optimizer_s"],
            r["baseline_fwd_bwd_s"],
            r["baseline_straggler_s"],
            r["optimizer_s"],
            rest,
            r["predicted_standalone_step_s"],
        ]
        text = " | ".join(f"{c * 1e3:.2f}" for c in cells)
        out.append(f"| {r['configuration']} | {text} | {r['load_average'][0]:.1f} |")
    return out


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    errors = [abs(r["rel_error"]) for r in rows if r["status"] == "ok"]
    memory = [abs(m["rel_error"]) for m in memory_rows(rows)]
    return {
        "rows": len(rows),
        "ok": len(errors),
        "median_abs_error": statistics.median(errors) if errors else None,
        "max_abs_error": max(errors) if errors else None,
        "within_10pct": sum(e <= 0.10 for e in errors),
        "within_25pct": sum(e <= 0.25 for e in errors),
        "memory": {
            "rows": len(memory),
            "median_abs_error": statistics.median(memory) if memory else None,
            "max_abs_error": max(memory) if memory else None,
            "within_10pct": sum(e <= 0.10 for e in memory),
            "within_25pct": sum(e <= 0.25 for e in memory),
        },
    }


def markdown(rows: list[dict[str, Any]], summ: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        "# Simulator validation on this CPU",
        "",
        f"`benchmarks/validate_cpu.py --nprocs {args.nprocs} --steps {args.steps} --min-time "
        f"{args.min_time:g} --repeat {args.repeat}"
        f"{'' if args.realtime else ' --default-scheduling'}`: {args.nprocs} gloo ranks, one "
        "torch thread each, "
        f"{'SCHED_FIFO where permitted' if args.realtime else 'the default scheduler'}, "
        "fp32, Adam (fused); at least --steps timed steps, more for short steps so that they "
        "last --min-time seconds. "
        "Predicted: `simplan.sim.run.simulate` with the profile the ranks measured side by side "
        "(one thread each) at the start of each run, and the "
        "localhost-cpu cluster calibrated by `simplan bench-comm`. Measured: median over the "
        "timed steps of the slowest rank's step (barrier before each step). Error = "
        "(predicted - measured) / measured, per run; the table shows medians over runs. "
        "Decomposition of the last run below. Records: traces/runs/.",
        "",
        "| configuration | predicted ms | measured ms | measured runs (ms) | errors of runs | "
        "step spread p10-p90 | error |",
        "|---|---:|---:|---|---|---:|---:|",
    ]
    for r in rows:
        name = r.get("configuration") or f"{r['model']} {r['strategy']} mb{r['micro_batch']}"
        if r["status"] != "ok":
            lines.append(f"| {name} | {r['status']}: {r['reason']} | | | | | |")
            continue
        runs = ", ".join(f"{t * 1e3:.1f}" for t in r["measured_runs_s"])
        errs = ", ".join(f"{e:+.0%}" for e in r["run_errors"])
        lines.append(
            f"| {name} | {r['predicted_step_s'] * 1e3:.2f} | {r['measured_step_s'] * 1e3:.2f} | "
            f"{runs} | {errs} | {r['spread_p10_p90']:.0%} | {r['rel_error']:+.1%} |"
        )
    lines += ["", *decomposition(rows)]
    med, worst = summ["median_abs_error"], summ["max_abs_error"]
    lines += [
        "",
        f"{summ['ok']} configurations measured: median |error| "
        f"{med:.1%}, max {worst:.1%}; {summ['within_10pct']} within 10%, "
        f"{summ['within_25pct']} within 25%."
        if med is not None
        else "no configuration ran.",
        "",
        *memory_section(memory_rows(rows)),
        "",
    ]
    return "\n".join(lines)


def kept_analysis(report: Path) -> str:
    """The hand-written part of an existing report (from its '## Analysis' heading on)."""
    text = report.read_text() if report.is_file() else ""
    at = text.find("\n## Analysis")
    return text[at:] if at >= 0 else ""


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--min-time", type=float, default=3.0)
    parser.add_argument("--default-scheduling", dest="realtime", action="store_false")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--models", default=",".join(MICRO_BATCHES))
    parser.add_argument("--strategies", default="ddp,fsdp,tp,pp")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/validate_cpu.json"))
    parser.add_argument("--report", default=str(ROOT / "reports/validation.md"))
    args = parser.parse_args()
    rows = []
    for model in args.models.split(","):
        for strategy in args.strategies.split(","):
            for mb in MICRO_BATCHES[model]:
                row = run_row(model, strategy, mb, args)
                rows.append(row)
                err = f"{row['rel_error']:+.1%}" if row["status"] == "ok" else row["status"]
                mem = " ".join(f"{m['rel_error']:+.1%}" for m in memory_rows([row]))
                print(f"{model:10} {strategy:5} mb{mb:<4} {err}  memory {mem}", flush=True)
    summ = summary(rows)
    write_json_atomic({"summary": summ, "rows": rows}, args.out)
    report = Path(args.report)
    write_text_atomic(markdown(rows, summ, args) + kept_analysis(report), report)
    print(markdown(rows, summ, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
