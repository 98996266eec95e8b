"""Fit the GPU device models' efficiencies to published throughput and check held-out rows.

For each family (A100, H100), with the GEMM rate at the family's measured MAMF, fits what the
llm-foundry stack loses: stack_gemm_efficiency, mem_efficiency (the H100 shares the A100's: its
section has too few rows to identify it), the per-operation overhead and
stack_attention_efficiency, jointly over the 8-GPU MPT rows of
simplan/data/reference/llmfoundry_mpt_throughput.csv at seq 2048 and from 16384 tokens on, of the
family's sections (the A100: its 80GB and 40GB sections, the same chip with other memory; see
simplan/device_fit.py), then predicts the rows it did not see: the other sequence lengths (512 to
8192) and GPU counts of the same sections. Prints tables and writes
simplan/data/gpu_calibration.json (what simplan.devices reads) and
benchmarks/results/calibrate_devices.json.

    python benchmarks/calibrate_devices.py            # fit, check, write
    python benchmarks/calibrate_devices.py --check    # check the stored constants only
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from simplan.device_fit import (
    CALIBRATION_FILE,
    FITS,
    RowSimulator,
    ThroughputRow,
    fit_efficiencies,
    fit_sections,
    is_fit_row,
    mpt_rows,
)
from simplan.devices import get_device
from simplan.io import write_json_atomic

CONSTANTS = (
    "gemm_efficiency",
    "stack_gemm_efficiency",
    "mem_efficiency",
    "kernel_overhead_s",
    "stack_attention_efficiency",
)
HELD_OUT = {  # family: (section, cluster, device preset)
    "a100": [
        (FITS["a100"][0], "dgx-a100", "a100-80gb"),
        ("A100 40GB with 1600 Gbps node-node interconnect (RoCE)", "dgx-a100", "a100-40gb"),
    ],
    "h100": [(FITS["h100"][0], "dgx-h100", "h100-sxm")],
}


def evaluate(
    rows: list[ThroughputRow], cluster: str, device_name: str, fit: dict[str, Any]
) -> list[dict[str, Any]]:
    sim = RowSimulator(rows, cluster)
    device = get_device(device_name).with_(**{k: float(fit[k]) for k in CONSTANTS})
    return sim.table(device)


def print_rows(title: str, rows: list[dict[str, Any]], limit: int = 12) -> dict[str, float]:
    errors = [
        float(r["predicted_samples_per_s"]) / float(r["measured_samples_per_s"]) - 1 for r in rows
    ]
    print(title)
    print(
        f"{'model':>6} {'gpus':>5} {'seq':>6} {'mb':>3} {'ckpt':>5} {'measured':>9} "
        f"{'predicted':>9} {'error':>7}"
    )
    for r, e in list(zip(rows, errors, strict=True))[:limit]:
        print(
            f"{r['model']:>6} {r['gpus']:>5} {r['seq_len']:>6} {r['micro_batch']:>3} "
            f"{r['checkpointing']!s:>5} {float(r['measured_samples_per_s']):>9.2f} "
            f"{float(r['predicted_samples_per_s']):>9.2f} {e:>+7.1%}"
        )
    if len(rows) > limit:
        print(f"   ... {len(rows) - limit} more rows in the JSON")
    summary = {
        "rows": len(rows),
        "median_abs_error": statistics.median(abs(e) for e in errors),
        "max_abs_error": max(abs(e) for e in errors),
    }
    print(
        f"rows {summary['rows']}, median |error| {summary['median_abs_error']:.1%}, "
        f"max {summary['max_abs_error']:.1%}\n"
    )
    return summary


def held_out(family: str, fit: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for section, cluster, device in HELD_OUT[family]:
        fitted = section in {name for name, _, _ in fit_sections(family)}
        rows = [
            r for r in mpt_rows(section, gpus=None, seq_len=None) if not (fitted and is_fit_row(r))
        ]
        table = evaluate(rows, cluster, device, fit)
        summary = print_rows(f"held out, {family} fit on '{section}' ({device}):", table)
        out[section] = {"summary": summary, "rows": table}
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="predict with the stored constants (seconds) instead of fitting them (minutes)",
    )
    check = parser.parse_args(argv).check
    stored = json.loads(CALIBRATION_FILE.read_text()) if CALIBRATION_FILE.is_file() else {}
    calibration: dict[str, Any] = {}
    report: dict[str, Any] = {}
    for family in FITS:
        shared = None if family == "a100" else float(calibration["a100"]["mem_efficiency"])
        if not check:
            print(
                f"fitting {family}: the stack's constants and its attention share, jointly over "
                "the seq-2048 and the long-sequence rows (a few minutes)",
                file=sys.stderr,
                flush=True,
            )
        fit = stored[family] if check else fit_efficiencies(family, shared)
        print(f"{family}: " + ", ".join(f"{k} {fit[k]}" for k in CONSTANTS))
        print(f"  source: {fit['source']}")
        print_rows(f"fit rows ({family}):", fit["rows"])
        print(f"  attention: {fit['attention_source']}")
        print_rows(f"attention fit rows ({family}):", fit["attention_rows"])
        for name, table in fit.get("other_sections", {}).items():
            print_rows(f"fit rows of '{name}' ({family}):", table)
        calibration[family] = fit
        report[family] = {"fit": fit, "held_out": held_out(family, fit)}
    if not check:
        write_json_atomic(calibration, CALIBRATION_FILE)
    out = Path(__file__).resolve().parent / "results" / "calibrate_devices.json"
    write_json_atomic(report, out)
    print(f"wrote {out}" + ("" if check else f" and {CALIBRATION_FILE}"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
