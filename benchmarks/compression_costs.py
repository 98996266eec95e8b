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
   ranks under SCHED_FIFO where permitted (as validation runs them), the three dtypes
   interleaved call by call: gloo sums fp16/bf16 element by element in software, so a half
   buffer of the same bytes costs more; fitted as extra s per half element.
4. Local SGD's parameter averaging (torch's average_parameters without its all-reduce: the
   parameters flattened into one buffer, divided, copied back): t = per_call_s + s_per_elem * n.

5. A Python DDP communication hook against torch's C++ all-reduce, on a one-bucket model
   (784-128-10) on 2 ranks: the hook's call and its future's callback (hook_s, one callback, as
   fp16_compress_hook), each further chained callback (callback_s; PowerSGD chains three), and
   what an all-reduce issued and waited for inside a callback (PowerSGD's P and Q) takes beyond
   the same all-reduce from the main thread (nested_extra_s).
6. torch's powerSGD_hook whole (ranks 1 and 4) on two other one-bucket models (512-256-64,
   256-128-32) against its communication chain alone, less the tensor work 2 prices: the hook's
   bookkeeping per bucket, fitted as t = per_bucket_s + s_per_elem * elements; the same for
   the fp16 / bf16 hooks against a one-callback Python all-reduce of the fp32 bucket.

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
REDUCE_ELEMS = (10_000, 30_000, 100_000, 300_000, 1_000_000)
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
    """Least squares of the relative error (small sizes count as much as large ones),
    coefficients clipped at 0 (a cost is never negative)."""
    y = np.array(times, dtype=float)
    a = np.array(rows, dtype=float) / y[:, None]
    coef, *_ = np.linalg.lstsq(a, np.ones_like(y), rcond=None)
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

    from simplan.realtime import enter_realtime

    torch.set_num_threads(1)
    scheduling = enter_realtime()  # as the validated ranks run (and bench-comm calibrates)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    rows = []
    kinds = (
        ("fp32_s", torch.float32, 2),
        ("fp16_s", torch.float16, 1),
        ("bf16_s", torch.bfloat16, 1),
    )
    for n in REDUCE_ELEMS:
        buffers = {name: torch.ones(n // per, dtype=dtype) for name, dtype, per in kinds}
        times: dict[str, list[float]] = {name: [] for name in buffers}
        for i in range(repeats + 3):  # the three kinds interleaved: the same load for each
            for name, x in buffers.items():
                dist.barrier()
                t0 = time.perf_counter()
                dist.all_reduce(x)
                if i >= 3:
                    times[name].append(time.perf_counter() - t0)
        rows.append({"half_elems": n} | {k: statistics.median(v) for k, v in times.items()})
    if rank == 0:
        Path(out).write_text(json.dumps({"rows": rows, "scheduling": scheduling}))
    dist.destroy_process_group()


def _hooked_steps(ddp: Any, hook: Any, repeats: int, width: int = 784) -> float:
    """Median forward+backward of one DDP model (one bucket), each step after a barrier; hook:
    a hook, or (state, hook)."""
    import torch.distributed as dist

    if isinstance(hook, tuple):
        ddp.register_comm_hook(*hook)
    elif hook is not None:
        ddp.register_comm_hook(None, hook)
    x = torch.randn(64, width)

    def step() -> None:
        dist.barrier()
        ddp(x).sum().backward()

    barrier = timed(dist.barrier, repeats)
    return timed(step, repeats) - barrier


def _allreduce_fut(bucket: Any) -> Any:
    import torch.distributed as dist

    return dist.all_reduce(bucket.buffer(), async_op=True).get_future()


def _one_callback(state, bucket):  # unannotated: DDP refuses string annotations
    return _allreduce_fut(bucket).then(lambda f: f.value()[0])


def _three_callbacks(state, bucket):
    first = _allreduce_fut(bucket).then(lambda f: f.value()[0])
    return first.then(lambda f: f.value()).then(lambda f: f.value())


NESTED_ELEMS = 4  # the all-reduces issued from callbacks: tiny, so that latency is all they cost


def _nested_allreduces(state, bucket):
    """PowerSGD's chain without its compute: the bucket's all-reduce, then two more issued and
    waited for inside the future's callbacks (as powerSGD_hook does for P and Q)."""
    import torch.distributed as dist

    small = [torch.zeros(NESTED_ELEMS), torch.zeros(NESTED_ELEMS)]
    buffer = bucket.buffer()

    def again(i: int) -> Any:
        return lambda f: dist.all_reduce(small[i], async_op=True).get_future().wait()[0]

    return _allreduce_fut(bucket).then(again(0)).then(again(1)).then(lambda f: buffer)


# Linear(a, b), Linear(b, c): one bucket each, 147k and 37k parameters (not the validated MLP)
PSGD_MODELS = ((512, 256, 64), (256, 128, 32))


def _powersgd_chain(state, bucket):
    """PowerSGD's communication chain alone: a tiny all-reduce (its uncompressed part), then
    two more issued and waited for inside callbacks (P, Q); the bucket is returned as is."""
    import torch.distributed as dist

    small = [torch.zeros(NESTED_ELEMS) for _ in range(3)]
    buffer = bucket.buffer()

    def again(i: int) -> Any:
        return lambda f: dist.all_reduce(small[i], async_op=True).get_future().wait()[0]

    first = dist.all_reduce(small[0], async_op=True).get_future()
    return first.then(again(1)).then(again(2)).then(lambda f: buffer)


def _psgd_model_steps(model: tuple[int, int, int], repeats: int) -> dict[str, float]:
    """The model's forward+backward with PowerSGD's chain alone and with torch's hook, and with
    a one-callback all-reduce hook and the fp16 / bf16 hooks."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook
    from torch.nn.parallel import DistributedDataParallel as DDP

    from simplan.compression import SYNC_WARMUP_STEPS
    from simplan.runtime.compose import bf16_gloo_hook

    a, b, c = model
    out = {}
    plain = {
        "chain": _powersgd_chain,
        "one": _one_callback,
        "fp16": default_hooks.fp16_compress_hook,
        "bf16": bf16_gloo_hook,
    }
    for name in (*plain, *(f"r{r}" for r in RANKS[::2])):
        torch.manual_seed(0)
        ddp = DDP(torch.nn.Sequential(torch.nn.Linear(a, b), torch.nn.Linear(b, c)))
        if name in plain:
            hook: tuple[Any, Any] = (None, plain[name])
        else:
            state = powerSGD_hook.PowerSGDState(
                process_group=None,
                matrix_approximation_rank=int(name[1:]),
                start_powerSGD_iter=SYNC_WARMUP_STEPS,
                use_error_feedback=True,
                warm_start=True,
            )
            hook = (state, powerSGD_hook.powerSGD_hook)
        out[name] = _hooked_steps(ddp, hook, repeats, a)
    return out


def _hook_rank(rank: int, init: str, repeats: int, out: str) -> None:
    import json

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from simplan.realtime import enter_realtime

    torch.set_num_threads(1)
    scheduling = enter_realtime()
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    times = {}
    hooks = (
        ("none", None),
        ("one", _one_callback),
        ("three", _three_callbacks),
        ("nested", _nested_allreduces),
    )
    for name, hook in hooks:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(784, 128), torch.nn.Linear(128, 10))
        times[name] = _hooked_steps(DDP(model), hook, repeats)
    barrier = timed(dist.barrier, repeats)
    tiny = torch.zeros(NESTED_ELEMS)

    def tiny_all_reduce() -> None:
        dist.barrier()
        dist.all_reduce(tiny)

    times["tiny_all_reduce"] = timed(tiny_all_reduce, repeats) - barrier
    for widths in PSGD_MODELS:
        tag = "x".join(map(str, widths))
        times |= {f"psgd_{tag}_{k}": v for k, v in _psgd_model_steps(widths, repeats).items()}
    if rank == 0:
        Path(out).write_text(json.dumps({"steps_s": times, "scheduling": scheduling}))
    dist.destroy_process_group()


def python_hook(repeats: int) -> dict[str, Any]:
    """What a Python communication hook adds to a DDP step of one bucket (the 784-128-10
    model's): the same all-reduce with torch's C++ default, with a Python hook whose future has
    one callback (fp16_compress_hook's shape), with three chained callbacks (PowerSGD's), and
    with two more tiny all-reduces issued and waited for inside callbacks (PowerSGD's P and Q),
    against the same tiny all-reduce from the main thread."""
    done = _spawn(_hook_rank, repeats)
    t = done["steps_s"]
    return {
        "steps_s": t,
        "hook_s": max(t["one"] - t["none"], 0.0),
        "callback_s": max((t["three"] - t["one"]) / 2, 0.0),
        # an all-reduce issued and waited for inside a callback, beyond the same all-reduce
        # issued from the main thread
        "nested_extra_s": max((t["nested"] - t["one"]) / 2 - t["tiny_all_reduce"], 0.0),
        "scheduling": done["scheduling"],
    }


def _spawn(fn: Any, repeats: int) -> Any:
    import json

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rows.json")
        init = f"file://{os.path.join(tmp, 'rendezvous')}"
        mp.spawn(fn, args=(init, repeats, out), nprocs=WORLD, join=True)
        return json.loads(Path(out).read_text())


def half_reduce(repeats: int) -> dict[str, Any]:
    done = _spawn(_reduce_rank, repeats)
    rows = done["rows"]
    fits = {}
    for name in ("fp16", "bf16"):
        extra = [r[f"{name}_s"] - r["fp32_s"] for r in rows]
        fits[name] = fit([[r["half_elems"]] for r in rows], extra)[0]
    return {"points": rows, "extra_s_per_elem": fits, "scheduling": done["scheduling"]}


def powersgd_bookkeeping(doc: dict[str, Any]) -> dict[str, Any]:
    """What torch's powerSGD_hook takes on PSGD_MODELS beyond its communication chain (the same
    three all-reduces, alone) and the tensor work that 2 prices: its Python (per-tensor loops,
    views, concatenation, statistics) and the allocations of its per-step copies of the bucket
    (clone, error); median over the ranks measured, fitted per bucket as
    t = per_bucket_s + s_per_elem * elements over the models."""
    from simplan.compression import bucket_compute, rates_from_doc
    from simplan.validate import local_cluster

    rates = rates_from_doc(doc, "in memory")
    steps = doc["python_hook"]["steps_s"]
    device = local_cluster(WORLD).device_model(0)
    chain = rates.hook_s + 2 * (rates.callback_s + rates.nested_extra_s)  # measured apart
    points = []
    for a, b, c in PSGD_MODELS:
        tag = f"{a}x{b}x{c}"
        shapes = ((c,), (c, b), (b,), (b, a))
        rest = []
        for r in RANKS[::2]:
            work = bucket_compute("powersgd", shapes, r, device, 4, rates)
            modelled = work.encode_s + sum(work.between_s) - chain
            rest.append(steps[f"psgd_{tag}_r{r}"] - steps[f"psgd_{tag}_chain"] - modelled)
        elems = a * b + b + b * c + c
        points.append({"model": [a, b, c], "elems": elems, "s": statistics.median(rest)})
    coef = fit([[1, p["elems"]] for p in points], [max(p["s"], 1e-7) for p in points])
    return {"points": points, "fit": coef}


def cast_bookkeeping(doc: dict[str, Any]) -> dict[str, Any]:
    """What the fp16 / bf16 hooks take on PSGD_MODELS beyond a Python all-reduce hook of the
    fp32 bucket with one callback, the cast work 1 prices, gloo's half sums 3 prices and the
    bytes they save on the wire (the calibrated all-reduce, as the simulator prices it): the
    allocation of the half-width copy each step and the rest of the hook's own work; fitted
    per hook as t = per_bucket_s + s_per_elem * elements over the models."""
    from simplan.compression import bucket_compute, rates_from_doc
    from simplan.validate import local_cluster

    rates = rates_from_doc(doc, "in memory")
    steps = doc["python_hook"]["steps_s"]
    cluster = local_cluster(WORLD)
    device = cluster.device_model(0)
    out: dict[str, Any] = {}
    for kind in ("fp16", "bf16"):
        points = []
        for a, b, c in PSGD_MODELS:
            tag = f"{a}x{b}x{c}"
            elems = a * b + b + b * c + c
            work = bucket_compute(kind, ((elems,),), 1, device, 4, rates)
            wire = cluster.collective_time("all_reduce", 2 * elems, (0, 1))
            wire -= cluster.collective_time("all_reduce", 4 * elems, (0, 1))
            modelled = work.encode_s + sum(work.between_s) - rates.hook_s + wire
            rest = steps[f"psgd_{tag}_{kind}"] - steps[f"psgd_{tag}_one"] - modelled
            points.append({"model": [a, b, c], "elems": elems, "s": rest})
        fitted = fit([[1, p["elems"]] for p in points], [max(p["s"], 1e-7) for p in points])
        out[kind] = {"points": points, "fit": fitted}
    return out


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
        "python_hook": python_hook(4 * args.repeats),
    }
    doc["powersgd_bookkeeping"] = powersgd_bookkeeping(doc)
    doc["cast_bookkeeping"] = cast_bookkeeping(doc)
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
    hook = doc["python_hook"]
    print(
        f"python hook: {hook['hook_s'] * 1e6:.1f} us per bucket, "
        f"{hook['callback_s'] * 1e6:.1f} us per further callback, "
        f"{hook['nested_extra_s'] * 1e6:.1f} us more per all-reduce issued from a callback"
    )
    a, b = doc["powersgd_bookkeeping"]["fit"]
    print(f"powersgd hook bookkeeping: {a * 1e6:.1f} us + {b * 1e9:.3f} ns/elem per bucket")
    for name in ("fp16", "bf16"):
        a, b = doc["cast_bookkeeping"][name]["fit"]
        print(f"{name} hook bookkeeping: {a * 1e6:.1f} us + {b * 1e9:.3f} ns/elem per bucket")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
