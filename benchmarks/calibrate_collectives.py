"""Derive the collective cost model's constants from the reference measurements.

    .venv/bin/python benchmarks/calibrate_collectives.py          # derive, print, write
    .venv/bin/python benchmarks/calibrate_collectives.py --check  # derive, compare, no write

Writes simplan/topology/collective_constants.json (the only place the constants live).

1. NVLink (vtrain_a100_allreduce_lut.csv, 8x A100 SXM on NVSwitch, 2..8 GPUs, out-of-place
   time): the single-node ring all-reduce model is linear in its unknowns,
       t = launch_s + 2(n-1)·latency_s + passes·S/HBM + (2(n-1)/n)·S/(eff·300 GB/s),
   so a least-squares fit of relative error (rows divided by t) on the power-of-two sizes
   (1 MiB .. 1 GiB, 77 rows) gives launch_s, the NVLink step latency, the memory passes and the
   NVLink efficiency. The other 7,091 rows are left for checking (collectives_accuracy.py).
2. Network (collective_bandwidth_measurements.csv, "4 nodes x 8 B200 (32 ranks)", 20 sizes
   32 KiB .. 16 GiB, busbw): with the NVLink constants fixed, a grid search over the network
   step latency and efficiency (coarse to fine) minimises the squared relative error of the
   full model (the selection rule included) on a 4-node, 8-GPU-per-node cluster with that
   machine's numbers (NVLink 5: 900 GB/s, HBM3e 8 TB/s, 8x 400 Gb/s EFA per node).
3. PCIe: no reference measurement; it takes the NVLink step latency and efficiency.
4. Loopback: placeholders; a bench-comm calibration file replaces them for a real machine.
5. tree_efficiency: not separable in the reference data; 0.8 from NCCL's tuning model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simplan.device_fit import read_reference_csv  # noqa: E402
from simplan.io import write_json_atomic  # noqa: E402
from simplan.topology import load_cluster  # noqa: E402
from simplan.topology.comm_calibration import (  # noqa: E402
    B200_4X8_SPEC,
    CONSTANTS_FILE,
    CollectiveConstants,
    LinkClass,
    constants_document,
)

LUT = "vtrain_a100_allreduce_lut.csv"
BW = "collective_bandwidth_measurements.csv"
A100_HBM_Bps = 2.039e12  # simplan.devices a100-80gb
NVLINK3_Bps = 300e9
B200_HARDWARE = "4 nodes x 8 B200 (32 ranks)"
TREE_EFFICIENCY = 0.8
TREE_SOURCE = (
    "NCCL src/graph/tuning.cc: tree bus bandwidth x0.92 (LL128) and a size-dependent "
    "treeCorrectionFactor of 0.5-1.0 for large sizes; 0.8 taken as a representative "
    "product (no reference row isolates the tree algorithm)"
)


def fit_nvlink() -> dict[str, float]:
    """Weighted linear least squares on the power-of-two rows of the vtrain LUT."""
    rows = [r for r in read_reference_csv(LUT) if (int(r["size_B"]) & (int(r["size_B"]) - 1)) == 0]
    a, b = [], []
    for r in rows:
        n, s, t = int(r["num_gpus"]), float(r["size_B"]), float(r["oop_time_ns"]) * 1e-9
        ring_bytes = 2 * (n - 1) / n * s
        a.append([1 / t, 2 * (n - 1) / t, s / A100_HBM_Bps / t, ring_bytes / NVLINK3_Bps / t])
        b.append(1.0)
    x, *_ = np.linalg.lstsq(np.array(a), np.array(b), rcond=None)
    return {
        "launch_s": float(x[0]),
        "latency_s": float(x[1]),
        "memory_passes": float(x[2]),
        "efficiency": float(1 / x[3]),
        "rows": len(rows),
    }


def b200_rows() -> list[tuple[float, float]]:
    """(size_B, time_s) of the 4-node B200 all-reduce run; time from busbw."""
    out = []
    for r in read_reference_csv(BW):
        if r["hardware"] == B200_HARDWARE and r["collective"] == "all_reduce":
            s, busbw = float(r["payload_bytes"]), float(r["busbw_GBps"]) * 1e9
            out.append((s, 2 * 31 / 32 * s / busbw))
    return out


def network_error(constants: CollectiveConstants, rows: list[tuple[float, float]]) -> float:
    cluster = load_cluster(B200_4X8_SPEC, constants=constants)
    devices = range(cluster.num_devices)
    return sum((cluster.collective_time("all_reduce", s, devices) / t - 1) ** 2 for s, t in rows)


def fit_network(base: CollectiveConstants, rounds: int = 4, points: int = 9) -> dict[str, float]:
    """Coarse-to-fine grid search: latency on a log scale, efficiency on a linear one; each
    round zooms to one grid step around the best point of the previous round."""
    rows = b200_rows()
    log_lat = (np.log(0.5e-6), np.log(50e-6))
    eff_range = (0.5, 1.0)
    best = (float("inf"), 0.0, 0.0)
    for _ in range(rounds):
        lats = np.exp(np.linspace(*log_lat, points))
        effs = np.linspace(*eff_range, points)
        for lat in lats:
            for eff in effs:
                c = base.with_link("network", latency_s=float(lat), efficiency=float(eff))
                best = min(best, (network_error(c, rows), float(lat), float(eff)))
        step_l = (log_lat[1] - log_lat[0]) / (points - 1)
        step_e = (eff_range[1] - eff_range[0]) / (points - 1)
        centre = np.log(best[1])
        log_lat = (centre - step_l, centre + step_l)
        eff_range = (max(0.05, best[2] - step_e), min(1.0, best[2] + step_e))
    err, lat, eff = best
    return {
        "latency_s": lat,
        "efficiency": eff,
        "rms_rel_error": (err / len(rows)) ** 0.5,
        "rows": len(rows),
    }


def derive() -> tuple[CollectiveConstants, dict[str, object]]:
    nv = fit_nvlink()
    lut_src = (
        f"simplan/data/reference/{LUT}: {nv['rows']} rows with power-of-two sizes "
        "(1 MiB..1 GiB, 2..8 GPUs, oop_time_ns), weighted least squares of "
        "t = launch + 2(n-1)·latency + passes·S/2.039 TB/s + 2(n-1)/n·S/(eff·300 GB/s)"
    )
    nvlink = LinkClass(latency_s=nv["latency_s"], efficiency=nv["efficiency"], source=lut_src)
    placeholder_net = LinkClass(latency_s=5e-6, efficiency=0.9, source="")
    base = CollectiveConstants(
        launch_s=nv["launch_s"],
        memory_passes=nv["memory_passes"],
        tree_efficiency=TREE_EFFICIENCY,
        links={
            "nvlink": nvlink,
            "pcie": LinkClass(
                latency_s=nvlink.latency_s,
                efficiency=nvlink.efficiency,
                source="no reference measurement; equal to the nvlink fit",
            ),
            "network": placeholder_net,
            "loopback": LinkClass(
                latency_s=50e-6,
                efficiency=1.0,
                source="placeholder; a bench-comm calibration file "
                "replaces loopback links' bandwidth and latency",
            ),
        },
        sources={"launch_s": lut_src, "memory_passes": lut_src, "tree_efficiency": TREE_SOURCE},
    )
    net = fit_network(base)
    net_src = (
        f"simplan/data/reference/{BW}: the {net['rows']} rows '{B200_HARDWARE}' (all_reduce, "
        "32 KiB..16 GiB, busbw), coarse-to-fine grid search (4 rounds of 9x9) of latency "
        "(0.5..50 us, log scale) and efficiency (0.50..1.00) minimising squared relative "
        "error of the full "
        "model on 4 nodes x 8 B200 (NVLink 900 GB/s, HBM 8 TB/s, 8x 400 Gb/s NICs)"
    )
    constants = base.with_link("network", latency_s=net["latency_s"], efficiency=net["efficiency"])
    links = dict(constants.links)
    links["network"] = LinkClass(
        latency_s=net["latency_s"], efficiency=net["efficiency"], source=net_src
    )
    constants = CollectiveConstants(
        launch_s=constants.launch_s,
        memory_passes=constants.memory_passes,
        tree_efficiency=constants.tree_efficiency,
        links=links,
        sources=constants.sources,
    )
    return constants, {"nvlink_fit": nv, "network_fit": net}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="compare with the stored constants instead of writing them",
    )
    args = parser.parse_args()
    constants, report = derive()
    print(json.dumps(report, indent=1))
    print(f"launch_s       {constants.launch_s * 1e6:9.3f} us")
    print(f"memory_passes  {constants.memory_passes:9.4f}")
    print(f"tree_efficiency{constants.tree_efficiency:9.3f}")
    for name, link in constants.links.items():
        print(f"{name:9s} latency {link.latency_s * 1e6:8.3f} us  efficiency {link.efficiency:.4f}")
    document = constants_document(constants, notes="written by benchmarks/calibrate_collectives.py")
    if args.check:
        stored = json.loads(CONSTANTS_FILE.read_text())
        same = stored["constants"] == json.loads(json.dumps(document["constants"]))
        print(
            "stored constants match" if same else "stored constants DIFFER: rerun without --check"
        )
        return 0 if same else 1
    write_json_atomic(document, CONSTANTS_FILE)
    print(f"wrote {CONSTANTS_FILE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
