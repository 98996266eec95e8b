"""How fast the topology answers at scale: 1,024 GPUs (128 dgx-a100 nodes).

    .venv/bin/python benchmarks/topology_speed.py [--nodes 128] [--out FILE.json]

A 3D-parallel placement, Megatron rank order (tp fastest, then dp, then pp): tp 8 inside each
node, dp 8, pp 16. Timed: building the cluster (graph, templates), then the costs of every TP
group's all-reduce, every DP group's all-reduce and every pipeline neighbour's p2p transfer,
then the same again with the per-channel link loads (collective_plan) the simulator uses.
Gate: build + all costs < 2 s.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simplan.io import write_json_atomic  # noqa: E402
from simplan.topology import load_cluster  # noqa: E402
from simplan.units import MiB  # noqa: E402

TP, DP = 8, 8
TP_BYTES, DP_BYTES, PP_BYTES = 64 * MiB, 512 * MiB, 16 * MiB


def rank(pp_i: int, dp_i: int, tp_i: int) -> int:
    return (pp_i * DP + dp_i) * TP + tp_i


def groups(pp: int) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]], list[tuple[int, int]]]:
    tp_groups = [tuple(rank(p, d, t) for t in range(TP)) for p in range(pp) for d in range(DP)]
    dp_groups = [tuple(rank(p, d, t) for d in range(DP)) for p in range(pp) for t in range(TP)]
    pp_pairs = [
        (rank(p, d, t), rank(p + 1, d, t))
        for p in range(pp - 1)
        for d in range(DP)
        for t in range(TP)
    ]
    return tp_groups, dp_groups, pp_pairs


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=128)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/topology_speed.json"))
    args = parser.parse_args()
    pp = args.nodes * 8 // (TP * DP)
    t0 = time.perf_counter()
    cluster = load_cluster("dgx-a100", nodes=args.nodes)
    t_build = time.perf_counter() - t0
    tp_groups, dp_groups, pp_pairs = groups(pp)
    t1 = time.perf_counter()
    tp_t = [cluster.collective_time("all_reduce", TP_BYTES, g) for g in tp_groups]
    dp_t = [cluster.collective_time("all_reduce", DP_BYTES, g) for g in dp_groups]
    pp_t = [cluster.transfer_time(a, b, PP_BYTES) for a, b in pp_pairs]
    t_costs = time.perf_counter() - t1
    t2 = time.perf_counter()
    channels: set[str] = set()
    for g in tp_groups:
        channels.update(
            *(p.channel_bytes for p in cluster.collective_plan("all_reduce", TP_BYTES, g).phases)
        )
    for g in dp_groups:
        channels.update(
            *(p.channel_bytes for p in cluster.collective_plan("all_reduce", DP_BYTES, g).phases)
        )
    for a, b in pp_pairs:
        channels.update(cluster.transfer_links(a, b))
    t_links = time.perf_counter() - t2
    total = t_build + t_costs
    rows = [
        (
            "build cluster",
            f"{cluster.num_devices} devices, {cluster.graph.number_of_nodes()} "
            f"vertices, {len(cluster.links)} links",
            t_build,
        ),
        (
            "TP all-reduce costs",
            f"{len(tp_groups)} groups x 8, 64 MiB: {tp_t[0] * 1e3:.3f} ms "
            f"({cluster.algorithm('all_reduce', TP_BYTES, tp_groups[0])})",
            None,
        ),
        (
            "DP all-reduce costs",
            f"{len(dp_groups)} groups x 8, 512 MiB: {dp_t[0] * 1e3:.3f} ms "
            f"({cluster.algorithm('all_reduce', DP_BYTES, dp_groups[0])})",
            None,
        ),
        ("PP p2p costs", f"{len(pp_pairs)} transfers, 16 MiB: {pp_t[0] * 1e3:.3f} ms", None),
        ("all costs", f"{len(tp_groups) + len(dp_groups) + len(pp_pairs)} queries", t_costs),
        ("build + costs", "gate < 2 s", total),
        ("link loads (plans)", f"{len(channels)} distinct channels crossed", t_links),
    ]
    for name, what, seconds in rows:
        print(f"{name:20s} {'' if seconds is None else f'{seconds:8.3f} s':>10s}  {what}")
    passed = total < 2.0
    write_json_atomic(
        {
            "nodes": args.nodes,
            "devices": cluster.num_devices,
            "tp": TP,
            "dp": DP,
            "pp": pp,
            "build_s": t_build,
            "costs_s": t_costs,
            "total_s": total,
            "plans_s": t_links,
            "queries": len(tp_groups) + len(dp_groups) + len(pp_pairs),
            "tp_allreduce_s": tp_t[0],
            "dp_allreduce_s": dp_t[0],
            "pp_p2p_s": pp_t[0],
            "passed": passed,
        },
        args.out,
    )
    print(f"{'PASS' if passed else 'FAIL'}: build + costs {total:.3f} s; wrote {args.out}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
