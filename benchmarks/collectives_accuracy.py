"""Predicted vs measured collective times against the reference CSVs.

    .venv/bin/python benchmarks/collectives_accuracy.py [--out FILE.json]

Main check: simplan/data/reference/vtrain_a100_allreduce_lut.csv, every row with size >= 8 MiB
(2..8 A100 GPUs in one DGX A100, out-of-place time), predicted with
load_cluster("dgx-a100", gpus_per_node=n).collective_time("all_reduce", size, range(n)).
The fit (benchmarks/calibrate_collectives.py) used only the 77 power-of-two rows.
Also shown, not gated: the H200 and A100 8-GPU rows and the 4-node B200 rows of
collective_bandwidth_measurements.csv.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simplan.device_fit import read_reference_csv  # noqa: E402
from simplan.io import write_json_atomic  # noqa: E402
from simplan.topology import load_cluster  # noqa: E402
from simplan.topology.comm_calibration import B200_4X8_SPEC  # noqa: E402
from simplan.units import MiB  # noqa: E402

MIN_SIZE = 8 * MiB
SHOW_SIZES = (8 * MiB, 64 * MiB, 256 * MiB, 1024 * MiB)


def vtrain_errors() -> dict[int, list[tuple[int, float, float]]]:
    """{n: [(size, measured_s, predicted_s)]} for rows with size >= 8 MiB."""
    out: dict[int, list[tuple[int, float, float]]] = {}
    clusters = {n: load_cluster("dgx-a100", gpus_per_node=n) for n in range(2, 9)}
    for r in read_reference_csv("vtrain_a100_allreduce_lut.csv"):
        n, size = int(r["num_gpus"]), int(r["size_B"])
        if size < MIN_SIZE:
            continue
        measured = float(r["oop_time_ns"]) * 1e-9
        predicted = clusters[n].collective_time("all_reduce", size, range(n))
        out.setdefault(n, []).append((size, measured, predicted))
    return out


def busbw_rows(hardware_prefix: str, tool: str | None = None) -> list[tuple[int, int, float]]:
    rows = []
    for r in read_reference_csv("collective_bandwidth_measurements.csv"):
        if (
            r["hardware"].startswith(hardware_prefix)
            and r["collective"] == "all_reduce"
            and r["busbw_GBps"]
            and r["payload_bytes"]
            and (tool is None or r["tool"].startswith(tool))
        ):
            rows.append((int(r["num_gpus"]), int(r["payload_bytes"]), float(r["busbw_GBps"])))
    return rows


def other_checks() -> list[dict[str, Any]]:
    cases: list[tuple[str, str | dict[str, Any], list[tuple[int, int, float]]]] = [
        ("8x A100 nccl-tests (stas00)", "dgx-a100", busbw_rows("single 8x A100 node")),
        (
            "8x H200 ring, NVLS off",
            {
                "name": "h200x8",
                "node_group": [
                    {
                        "count": 1,
                        "devices_per_node": 8,
                        "device": "h200",
                        "fabric": {"kind": "nvswitch", "bandwidth_GBps": 450},
                    }
                ],
                "network": {"kind": "none"},
            },
            [r for r in busbw_rows("8x H200 SXM node, NVLink 4 (450") if r[2] < 400],
        ),
        ("4 nodes x 8 B200 (fit data)", B200_4X8_SPEC, busbw_rows("4 nodes x 8 B200")),
    ]
    out = []
    for label, spec, rows in cases:
        cluster = load_cluster(spec)
        errs = []
        for n, size, busbw in rows:
            if size < MIN_SIZE:
                continue
            measured = 2 * (n - 1) / n * size / (busbw * 1e9)
            errs.append(cluster.collective_time("all_reduce", size, range(n)) / measured - 1)
        out.append(
            {
                "case": label,
                "rows": len(errs),
                "median_abs_error": statistics.median(abs(e) for e in errs),
                "max_abs_error": max(abs(e) for e in errs),
            }
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/collectives_accuracy.json"))
    args = parser.parse_args()
    data = vtrain_errors()
    table, all_errs = [], []
    print("vtrain A100 NVSwitch all-reduce, sizes >= 8 MiB (relative error of predicted time)")
    header = "".join(f"{s // MiB:>9d}M" for s in SHOW_SIZES)
    print(f"{'gpus':>4} {'rows':>5} {'median':>7} {'max':>7} {header}")
    for n in sorted(data):
        errs = [abs(p / m - 1) for _, m, p in data[n]]
        all_errs += errs
        shown = {s: p / m - 1 for s, m, p in data[n] if s in SHOW_SIZES}
        table.append(
            {
                "num_gpus": n,
                "rows": len(errs),
                "median_abs_error": statistics.median(errs),
                "max_abs_error": max(errs),
                "signed_error_at": {str(s): shown[s] for s in SHOW_SIZES if s in shown},
            }
        )
        cols = "".join(f"{shown.get(s, float('nan')):+10.3f}" for s in SHOW_SIZES)
        print(f"{n:>4} {len(errs):>5} {statistics.median(errs):7.3f} {max(errs):7.3f} {cols}")
    overall = {
        "median_abs_error": statistics.median(all_errs),
        "max_abs_error": max(all_errs),
        "rows": len(all_errs),
    }
    print(
        f"all  {overall['rows']:>5} {overall['median_abs_error']:7.3f} "
        f"{overall['max_abs_error']:7.3f}   (gate: median <= 0.10, max <= 0.25)"
    )
    others = other_checks()
    print("\nother reference rows (sizes >= 8 MiB, not gated)")
    for o in others:
        print(
            f"  {o['case']:32s} rows {o['rows']:3d}  median {o['median_abs_error']:.3f}  "
            f"max {o['max_abs_error']:.3f}"
        )
    passed = overall["median_abs_error"] <= 0.10 and overall["max_abs_error"] <= 0.25
    write_json_atomic(
        {
            "vtrain_a100_allreduce": {"per_gpu_count": table, "overall": overall, "passed": passed},
            "other": others,
        },
        args.out,
    )
    print(f"wrote {args.out}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
