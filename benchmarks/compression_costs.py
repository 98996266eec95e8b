"""Measure what gradient compression computes and what it changes in gloo's reduction, on this
CPU, one torch thread (as every validation rank runs), and fit the rates the simulator prices
compression with (simplan.compression).

1. fp16/bf16 (torch's fp16_compress_hook, and the same with bfloat16): encode = the bucket cast
   to the half type and divided by the world size; decode = the reduced half buffer copied back
   into the fp32 bucket. Timed per bucket size; fitted as t = per_call_s + s_per_elem * n.
2. PowerSGD (torch's powerSGD_hook, warm start, error feedback), per gradient shape m x n and
   rank r: encode = error feedback added to the bucket, its copy kept, the warm-started Q
   orthogonalised (torch's own _orthogonalize), P = M Q; middle = P orthogonalised and
   Q = M^T P; decode = Q divided by the world size, M = P Q^T and the new error
   (copy - bucket). Fitted over all shapes as
   t = per_matrix_s * matrices + s_per_flop * matmul_flops + s_per_elem * elements.
3. gloo's all-reduce of a half-precision buffer against an fp32 buffer of the same bytes, on 2
   ranks: gloo sums fp16/bf16 element by element in software, so a half buffer of the same bytes
   costs more; fitted as extra s per half element.
4. Local SGD's parameter averaging (torch's average_parameters without its all-reduce: the
   parameters flattened into one buffer, divided, copied back): t = per_call_s + s_per_elem * n.

Writes traces/compression/cpu.json (measurements + fits + metadata) and prints the fits.
Usage: PYTHONPATH=. python benchmarks/compression_costs.py [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from simplan.environment import environment  # noqa: E402
from simplan.io import write_json_atomic  # noqa: E402

OUT = ROOT / "traces" / "compression" / "cpu.json"
CAST_SIZES = (1_000, 10_000, 100_000, 400_000, 1_000_000, 4_000_000)
# gradient matrices (m x n) of the models validated here and of small transformers
SHAPES = ((10, 128), (128, 784), (256, 256), (1024, 256), (256, 1024), (768, 256), (512, 2048))
RANKS = (1, 2, 4, 8)
REDUCE_ELEMS = (10_000, 100_000, 1_000_000)
WORLD = 2


def timed(fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds of fn() after 3 untimed calls."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fit(rows: list[list[float]], times: list[float]) -> list[float]:
    """Least squares, coefficients clipped at 0 (a cost is never negative)."""
    a, y = np.array(rows, dtype=float), np.array(times, dtype=float)
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    return [max(float(c), 0.0) for c in coef]


def casts(repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        rows = []
        for n in CAST_SIZES:
            bucket = torch.randn(n)
            half = bucket.to(dtype)

            def encode(b: torch.Tensor = bucket, d: torch.dtype = dtype) -> None:
                b.to(d).div_(WORLD)

            def decode(b: torch.Tensor = bucket, h: torch.Tensor = half) -> None:
                b.copy_(h)

            rows.append(
                {"elems": n, "encode_s": timed(encode, repeats), "decode_s": timed(decode, repeats)}
            )
        out[name] = {
            "points": rows,
            "encode": fit([[1, r["elems"]] for r in rows], [r["encode_s"] for r in rows]),
            "decode": fit([[1, r["elems"]] for r in rows], [r["decode_s"] for r in rows]),
        }
    return out


def _powersgd_point(m: int, n: int, r: int, repeats: int) -> dict[str, Any]:
    from torch.distributed.algorithms.ddp_comm_hooks.powerSGD_hook import _orthogonalize

    grad, error = torch.randn(1, m, n), torch.randn(1, m, n)
    p, q = torch.empty(1, m, r), torch.randn(1, n, r)
    kept: list[torch.Tensor] = [grad.clone()]

    def encode() -> None:
        grad.add_(error)
        kept[0] = grad.detach().clone()
        _orthogonalize(q, 0)
        torch.bmm(grad, q, out=p)

    def middle() -> None:
        _orthogonalize(p, 0)
        torch.bmm(grad.transpose(1, 2), p, out=q)

    def decode() -> None:
        q.div_(WORLD)
        torch.bmm(p, q.transpose(1, 2), out=grad)
        error.copy_(kept[0] - grad)

    return {
        "m": m,
        "n": n,
        "rank": r,
        "encode_s": timed(encode, repeats),
        "middle_s": timed(middle, repeats),
        "decode_s": timed(decode, repeats),
    }


def powersgd(repeats: int) -> dict[str, Any]:
    rows = [
        _powersgd_point(m, n, r, repeats)
        for m, n in SHAPES
        for r in RANKS
        if (m + n) * r * 2 < m * n  # else torch sends the matrix uncompressed
    ]
    out: dict[str, Any] = {"points": rows}
    for phase in ("encode", "middle", "decode"):
        x = [[1, 2 * w["m"] * w["n"] * w["rank"], w["m"] * w["n"]] for w in rows]
        out[phase] = fit(x, [w[f"{phase}_s"] for w in rows])
    return out


def averaging(repeats: int) -> dict[str, Any]:
    rows = []
    for n in CAST_SIZES:
        params = [torch.randn(n // 2), torch.randn(n - n // 2)]

        def average(ps: list[torch.Tensor] = params) -> None:
            flat = torch.cat([p.data.reshape(-1) for p in ps]).div_(WORLD)
            offset = 0
            for p in ps:
                p.data.copy_(flat[offset : offset + p.numel()].view_as(p))
                offset += p.numel()

        rows.append({"elems": n, "s": timed(average, repeats)})
    return {"points": rows, "fit": fit([[1, r["elems"]] for r in rows], [r["s"] for r in rows])}


def _reduce_rank(rank: int, init: str, repeats: int, out: str) -> None:
    import json

    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    rows = []
    for n in REDUCE_ELEMS:
        row: dict[str, Any] = {"half_elems": n}
        for name, dtype, elems in (
            ("fp32_s", torch.float32, n // 2),
            ("fp16_s", torch.float16, n),
            ("bf16_s", torch.bfloat16, n),
        ):
            t = torch.ones(elems, dtype=dtype)

            def reduce(x: torch.Tensor = t) -> None:
                dist.barrier()
                dist.all_reduce(x)

            barrier = timed(dist.barrier, repeats)
            row[name] = max(timed(reduce, repeats) - barrier, 0.0)
        rows.append(row)
    if rank == 0:
        Path(out).write_text(json.dumps(rows))
    dist.destroy_process_group()


def half_reduce(repeats: int) -> dict[str, Any]:
    import json

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rows.json")
        init = f"file://{os.path.join(tmp, 'rendezvous')}"
        mp.spawn(_reduce_rank, args=(init, repeats, out), nprocs=WORLD, join=True)
        rows = json.loads(Path(out).read_text())
    fits = {}
    for name in ("fp16", "bf16"):
        extra = [r[f"{name}_s"] - r["fp32_s"] for r in rows]
        fits[name] = fit([[r["half_elems"]] for r in rows], extra)[0]
    return {"points": rows, "extra_s_per_elem": fits}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per point (50)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    doc = {
        "schema": {"kind": "compression-costs", "version": 1},
        "metadata": environment(
            threads=1,
            repeats=args.repeats,
            world_size=WORLD,
            script="benchmarks/compression_costs.py",
        ),
        "casts": casts(args.repeats),
        "powersgd": powersgd(args.repeats),
        "averaging": averaging(args.repeats),
        "half_reduce": half_reduce(args.repeats),
    }
    write_json_atomic(doc, OUT)
    for name in ("fp16", "bf16"):
        c = doc["casts"][name]
        print(
            f"{name}: encode {c['encode'][0] * 1e6:.1f} us + {c['encode'][1] * 1e9:.3f} ns/elem,"
            f" decode {c['decode'][0] * 1e6:.1f} us + {c['decode'][1] * 1e9:.3f} ns/elem;"
            f" gloo half sum +{doc['half_reduce']['extra_s_per_elem'][name] * 1e9:.3f} ns/elem"
        )
    for phase in ("encode", "middle", "decode"):
        a, b, c = doc["powersgd"][phase]
        print(
            f"powersgd {phase}: {a * 1e6:.1f} us/matrix + {b * 1e12:.2f} ps/flop + "
            f"{c * 1e9:.3f} ns/elem"
        )
    a, b = doc["averaging"]["fit"]
    print(f"parameter averaging: {a * 1e6:.1f} us + {b * 1e9:.3f} ns/elem")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
