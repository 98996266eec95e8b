"""`simplan bench-comm`: measure collectives with torch.distributed, write a calibration."""

from __future__ import annotations

import argparse

from simplan.commands import add_rank_timeout, add_verb
from simplan.commands.argtypes import MAX_RANKS, MAX_STEPS, WARMUP, IntRange, positive_int

HELP = """\
Measure collective communication on this machine with torch.distributed and write a
calibration file: medians over repeats (after warm-up) of all_reduce, all_gather,
reduce_scatter and p2p send/recv (and optionally broadcast) for a range of message sizes, and an
alpha-beta fit t = alpha + beta * size of each. Then small probe models measure what DDP (per
step, per bucket, per byte), FSDP2 (per all-gather/reduce-scatter, per byte) and DTensor tensor
parallelism (per collective, per pass) add to their raw collectives (simplan/topology/probes.py);
clusters using the file charge these framework costs in the simulator. Ranks are spawned
processes on 127.0.0.1 with one thread each; on gloo they run real-time (SCHED_FIFO, where
permitted; --default-scheduling to leave them), as the ranks of `simplan validate` run, so that
the calibration and the runs it predicts are measured alike. A rank that
fails or hangs stops the run with an error naming it.

Without --out, gloo calibrations go to traces/collectives/localhost-cpu/gloo-<N>ranks.json:
the file `simplan validate` reads for N ranks (replaced atomically by each run; --calibration
FILE on both commands names another). A cluster spec uses a file with
`calibration = "traces/collectives/<host>/<file>.json"` (see docs/cluster-spec.md); the
localhost-cpu preset points at the 2-rank one.

examples:
  simplan bench-comm --backend gloo --nprocs 2 \
      --out traces/collectives/localhost-cpu/gloo-2ranks.json
  simplan bench-comm --backend gloo --nprocs 2 --sizes 64K,1M,16M,64M --repeats 30
  simplan bench-comm --backend gloo --nprocs 2 --ops all_reduce,all_gather,broadcast
  simplan bench-comm --backend nccl --nprocs 8 --sizes 1M,64M,1G \\
      --out traces/collectives/dgx-h100/nccl-8ranks.json
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_verb(subparsers, "bench-comm", "measure collectives, write a calibration", HELP)
    p.add_argument(
        "--backend",
        choices=("gloo", "nccl"),
        default="gloo",
        help="gloo (CPU processes) or nccl (one CUDA GPU per process)",
    )
    p.add_argument(
        "--nprocs", type=positive_int(MAX_RANKS), default=2, help="number of ranks (default 2)"
    )
    p.add_argument(
        "--sizes",
        default="64K,256K,1M,4M,16M,64M",
        help="comma-separated message sizes per rank, K/M/G = KiB/MiB/GiB (default 64K..64M)",
    )
    p.add_argument(
        "--ops",
        default="all_reduce,all_gather,reduce_scatter,p2p",
        help="comma-separated: all_reduce plus any of all_gather, reduce_scatter, broadcast, "
        "p2p (send/recv between ranks 0 and 1); each gets its own fit "
        "(default all_reduce,all_gather,reduce_scatter,p2p)",
    )
    p.add_argument(
        "--no-framework",
        dest="framework",
        action="store_false",
        help="skip the probes of DDP, FSDP2 and DTensor framework costs (run by default; "
        "FSDP2 and DTensor probes on gloo only)",
    )
    p.add_argument(
        "--default-scheduling",
        dest="realtime",
        action="store_false",
        help="run gloo ranks under the default scheduler (by default they run real-time, "
        "SCHED_FIFO where permitted, as the ranks of `simplan validate` do; simplan/realtime.py)",
    )
    p.add_argument(
        "--repeats", type=IntRange(3, MAX_STEPS), default=20,
        help="timed calls per size (default 20)",
    )  # fmt: skip
    p.add_argument("--warmup", type=WARMUP, default=3, help="untimed calls first (default 3)")
    add_rank_timeout(p, 60.0)
    p.add_argument(
        "--out",
        "--calibration",
        dest="out",
        metavar="FILE",
        default=None,
        help="the calibration to write (default for gloo: "
        "traces/collectives/localhost-cpu/gloo-<N>ranks.json, the file `simplan validate "
        "--nprocs N` reads; for nccl: traces/collectives/<host>/nccl-<N>ranks.json)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from simplan.outputs import check_output_file, write_json_atomic
    from simplan.topology.bench import default_output, parse_size, run_bench

    out_path = check_output_file(
        args.out or default_output(args.backend, args.nprocs),
        "--out/--calibration" if args.out else "output",
    )
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    doc = run_bench(
        backend=args.backend,
        nprocs=args.nprocs,
        sizes=sizes,
        ops=ops,
        warmup=args.warmup,
        repeats=args.repeats,
        timeout_s=args.timeout,
        framework=args.framework,
        realtime=args.realtime,
    )
    print(
        f"{'op':15s} {'size':>10s} {'median ms':>10s} {'min ms':>8s} {'max ms':>8s} "
        f"{'algbw GB/s':>10s}"
    )
    for m in doc["measurements"]:
        print(
            f"{m['op']:15s} {m['size_B']:10d} {m['median_s'] * 1e3:10.3f} "
            f"{m['min_s'] * 1e3:8.3f} {m['max_s'] * 1e3:8.3f} "
            f"{m['size_B'] / m['median_s'] / 1e9:10.3f}"
        )
    fit = doc["fit"]
    print(
        f"fit: alpha {fit['alpha_s'] * 1e6:.1f} us, beta {fit['beta_s_per_byte'] * 1e9:.4f} ns/B "
        f"({fit['bandwidth_Bps'] / 1e9:.3f} GB/s)"
    )
    for op, f in doc.get("fits", {}).items():
        print(f"fit {op}: alpha {f['alpha_s'] * 1e6:.1f} us, {f['bandwidth_Bps'] / 1e9:.3f} GB/s")
    for name, costs in doc.get("framework", {}).items():
        if not isinstance(costs, dict):
            continue
        parts = ", ".join(
            f"{k} {v * (1e9 if 'per_byte' in k else 1e6):.3f} {'ns/B' if 'per_byte' in k else 'us'}"
            for k, v in costs.items()
            if isinstance(v, float)
        )
        print(f"framework {name}: {parts}")
    out = write_json_atomic(doc, out_path)
    print(f"wrote {out}")
    return 0
