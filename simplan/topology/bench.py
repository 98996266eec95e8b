"""bench-comm: measure collectives with torch.distributed and fit an alpha-beta model.

N worker processes (spawned, one thread each) meet on 127.0.0.1 at a free port. For every op
and size each rank runs `warmup` untimed calls, then `repeats` timed calls each preceded by a
barrier; a repeat's time is the slowest rank's, the reported time the median over repeats.
The all-reduce medians are fitted with t = alpha_s + beta_s_per_byte · size (least squares,
rows weighted by 1/sqrt(t)). The ranks run under simplan.ranks' supervisor: a rank that
crashes, or stops making progress for `timeout_s`, ends the run with a one-line error naming it,
and every rank's process group is killed in all cases. torch is imported only inside functions.
"""

from __future__ import annotations

import datetime
import json
import platform
import queue
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from simplan.environment import environment
from simplan.errors import SimplanError
from simplan.ranks import (
    RankFailure,
    Watch,
    enter_rank_process,
    free_port,
    rank_processes,
    supervise,
)
from simplan.realtime import enter_realtime
from simplan.topology import probes
from simplan.topology.comm_calibration import bench_document, local_calibration_path, op_fits
from simplan.units import GiB, KiB, MiB

DEFAULT_SIZES = tuple(64 * KiB * 4**k for k in range(6))  # 64 KiB .. 64 MiB
OPS = ("all_reduce", "all_gather", "reduce_scatter", "broadcast", "p2p")
DEFAULT_OPS = ("all_reduce", "all_gather", "reduce_scatter", "p2p")
STAGES = ("alive", "init", "ready")


def _call(dist: Any, op: str, buf: Any, out: Any, world: int) -> None:
    if op == "all_reduce":
        dist.all_reduce(buf)
    elif op == "broadcast":
        dist.broadcast(buf, src=0)
    elif op == "p2p":  # rank 0 sends to rank 1; the other ranks wait at the next barrier
        if dist.get_rank() == 0:
            dist.send(buf, dst=1)
        elif dist.get_rank() == 1:
            dist.recv(buf, src=0)
    elif op == "all_gather":
        gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
        gather(out, buf[: buf.numel() // world])
    else:
        scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
        scatter(out[: buf.numel() // world], buf)


def time_collective(
    torch: Any, dist: Any, op: str, size_B: int, device: Any, warmup: int, repeats: int
) -> tuple[int, list[float]]:
    """`repeats` calls of `op` on fp32 buffers of about size_B bytes (a multiple of the world
    size), each after a barrier, after `warmup` untimed ones: (the bytes, this rank's times)."""
    world = dist.get_world_size()
    n = max(world, size_B // 4 // world * world)
    buf = torch.ones(n, dtype=torch.float32, device=device)
    out = torch.empty(n, dtype=torch.float32, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    for k in range(warmup + repeats):
        dist.barrier()
        sync()
        t0 = time.perf_counter()
        _call(dist, op, buf, out, world)
        sync()
        if k >= warmup:
            times.append(time.perf_counter() - t0)
    return n * 4, times


def _worker(
    rank: int,
    world: int,
    backend: str,
    port: int,
    ops: Sequence[str],
    sizes: Sequence[int],
    warmup: int,
    repeats: int,
    timeout_s: float,
    events: Any,
    hang_rank: int | None,
    framework: bool = False,
    realtime: bool = True,
) -> None:
    """One rank. Reports (kind, rank, payload) on `events`: stage, step, result, error, done.
    Its own collective timeout is longer than the parent's, so that the parent, which sees
    every rank's progress, is the one to name a hung rank."""
    enter_rank_process()
    events.put(("stage", rank, 0))
    if hang_rank == rank:  # test hook: a rank that never joins
        time.sleep(10**6)
    try:
        import torch
        import torch.distributed as dist

        torch.set_num_threads(1)
        scheduling = enter_realtime(realtime and backend == "gloo")  # before any thread starts
        events.put(("stage", rank, 1))
        dist.init_process_group(
            backend,
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(seconds=2 * timeout_s + 30),
        )
        device = torch.device(f"cuda:{rank}") if backend == "nccl" else torch.device("cpu")
        if backend == "nccl":
            torch.cuda.set_device(device)
        events.put(("stage", rank, 2))
        step = 0
        for op in ops:
            for size in sizes:
                nbytes, times = time_collective(torch, dist, op, size, device, warmup, repeats)
                step += 1
                events.put(("step", rank, step))
                events.put(("result", rank, (op, nbytes, times, {})))
        if framework:
            for result in probes.run_probes(torch, dist, world, warmup, repeats, backend == "gloo"):
                step += 1
                events.put(("step", rank, step))
                events.put(("result", rank, result))
        dist.destroy_process_group()
        events.put(("done", rank, scheduling))
    except Exception as exc:  # reported to the parent, which names the rank
        events.put(("error", rank, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"))


def run_bench(
    *,
    backend: str = "gloo",
    nprocs: int = 2,
    sizes: Sequence[int] = DEFAULT_SIZES,
    ops: Sequence[str] = ("all_reduce",),
    warmup: int = 3,
    repeats: int = 20,
    timeout_s: float = 60.0,
    hang_rank: int | None = None,
    framework: bool = False,
    realtime: bool = True,
) -> dict[str, Any]:
    """Measure; return the calibration document (see `bench_document`). framework: also run
    the probes of simplan.topology.probes (DDP, FSDP2, DTensor costs) and fit them.
    realtime: gloo ranks run under SCHED_FIFO where permitted (simplan.realtime), as the
    runtime's ranks do by default."""
    _check_args(backend, nprocs, sizes, ops)
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    events = ctx.Queue()
    port = free_port()
    steps = len(ops) * len(sizes) + (probes.probe_steps(backend == "gloo") if framework else 0)
    seen = _Events(events, nprocs)

    def args(rank: int) -> tuple[Any, ...]:
        return (
            rank,
            nprocs,
            backend,
            port,
            tuple(ops),
            tuple(sizes),
            warmup,
            repeats,
            timeout_s,
            events,
            hang_rank,
            framework,
            realtime,
        )

    with rank_processes(_worker, args, nprocs, ctx) as procs:
        watch = Watch(
            progress=seen.progress, errors=lambda: seen.errors, where=lambda m: _where(m, steps)
        )
        supervise(procs, watch, timeout_s)
        seen.drain()
    missing = [r for r, done in enumerate(seen.done) if not done]
    if missing:  # cannot happen: a rank reports done before it exits cleanly
        raise RankFailure(f"rank {missing[0]} ended without its results; measure again")
    results, scheduling = seen.results, "/".join(sorted(seen.scheduling))
    measurements = _summarise(results, nprocs)
    fits = {op: fit_alpha_beta(measurements, nprocs, op) for op in ops if op != "broadcast"}
    costs = probes.fit_framework(measurements, _op_time(fits, measurements))
    meta = environment(
        backend=backend,
        nprocs=nprocs,
        threads_per_rank=1,
        warmup=warmup,
        repeats=repeats,
        timing="barrier, then one call; slowest rank per repeat; median over repeats",
    )
    return bench_document(
        meta | {"scheduling": scheduling},
        fits["all_reduce"],
        measurements,
        fits=fits,
        framework=costs,
    )


def _op_time(
    fits: dict[str, dict[str, Any]], measurements: list[dict[str, Any]]
) -> Callable[[str, float], float]:
    """op, nbytes -> seconds, as the simulator prices a calibrated group: the measured medians
    where they reach (interpolated), else the op's fit (the all-reduce's for an op not
    measured)."""
    ops = op_fits(fits, measurements)

    def time_s(op: str, nbytes: float) -> float:
        return ops.get(op, ops["all_reduce"]).time_s(nbytes)

    return time_s


MAX_MESSAGE_BYTES = 16 * GiB  # the largest message bench-comm allocates on each rank


def _check_args(backend: str, nprocs: int, sizes: Sequence[int], ops: Sequence[str]) -> None:
    if backend not in ("gloo", "nccl"):
        raise SimplanError(f"--backend {backend!r}: use gloo (CPU) or nccl (CUDA GPUs)")
    if nprocs < 2:
        raise SimplanError(f"--nprocs {nprocs}: a collective needs at least 2 processes")
    if not sizes or min(sizes) < 4 * nprocs:
        raise SimplanError(f"--sizes: every size must be >= {4 * nprocs} bytes")
    if max(sizes) > MAX_MESSAGE_BYTES:
        raise SimplanError(
            f"--sizes: every size must be <= {MAX_MESSAGE_BYTES // GiB} GiB (a message per rank)"
        )
    bad = [op for op in ops if op not in OPS]
    if bad or "all_reduce" not in ops:
        raise SimplanError(f"--ops: use all_reduce plus any of {', '.join(OPS[1:])}")
    if backend == "nccl":
        import torch

        if torch.cuda.device_count() < nprocs:
            raise SimplanError(
                f"--backend nccl needs {nprocs} CUDA GPUs; this machine has "
                f"{torch.cuda.device_count()} (use --backend gloo)"
            )


class _Events:
    """What the ranks reported on their queue: progress (the stage index, then 2 + steps
    done), results, errors, and the scheduling policy each ran under once done."""

    def __init__(self, events: Any, world: int) -> None:
        self.events = events
        self.marks = [-1] * world
        self.done = [False] * world
        self.results: list[tuple[int, probes.Result]] = []
        self.errors: dict[int, str] = {}
        self.scheduling: set[str] = set()

    def progress(self) -> list[int]:
        self.drain()
        return self.marks

    def drain(self) -> None:
        """Read every report waiting on the queue (a rank cannot exit before its reports are
        read: its queue's feeder waits for the pipe)."""
        while True:
            try:
                kind, rank, payload = self.events.get(timeout=0.01)
            except queue.Empty:
                return
            if kind == "stage":
                self.marks[rank] = max(self.marks[rank], payload)
            elif kind == "step":
                self.marks[rank] = 2 + payload
            elif kind == "result":
                self.results.append((rank, payload))
            elif kind == "error":
                self.errors.setdefault(rank, str(payload))
            elif kind == "done":
                self.done[rank] = True
                self.scheduling.add(str(payload))


def _where(progress: int, steps: int) -> str:
    if progress < 1:
        return "during start-up"
    if progress == 1:
        return "in init_process_group"
    if progress == 2:
        return "before the first measurement"
    return f"after measurement {progress - 2} of {steps}"


def _summarise(results: list[tuple[int, probes.Result]], world: int) -> list[dict[str, Any]]:
    per: dict[tuple[str, int, str], list[list[float]]] = {}
    extras: dict[str, dict[str, Any]] = {}
    for _, (op, size, times, extra) in sorted(results, key=lambda r: r[0]):
        key = json.dumps(extra, sort_keys=True)
        extras.setdefault(key, extra)  # rank 0's (DDP bucket sizes are the same on every rank)
        per.setdefault((op, size, key), []).append(times)
    out = []
    for (op, size, key), ranks in per.items():
        slowest = [max(ts) for ts in zip(*ranks, strict=True)]
        row = {
            "op": op,
            "size_B": size,
            "median_s": statistics.median(slowest),
            "min_s": min(slowest),
            "max_s": max(slowest),
            "repeats": len(slowest),
            "ranks": len(ranks),
        }
        out.append(row | ({"extra": extras[key]} if extras[key] else {}))
    return sorted(out, key=lambda m: (m["op"] not in OPS, m["op"], m["size_B"]))


def fit_alpha_beta(
    measurements: list[dict[str, Any]], nprocs: int, op: str = "all_reduce"
) -> dict[str, Any]:
    """Weighted least squares for t = alpha + beta·size over the medians of `op`, each row
    weighted by 1/sqrt(t): a median's scatter grows about like sqrt(t) (many independent chunk
    transfers), so this is the maximum-likelihood weighting; plain relative weighting lets the
    smallest, cache-resident sizes pull the bandwidth away from the large ones."""
    import numpy as np

    rows = [(m["size_B"], m["median_s"]) for m in measurements if m["op"] == op]
    a = np.array([[t**-0.5, s * t**-0.5] for s, t in rows])
    b = np.array([t**0.5 for _, t in rows])
    (alpha, beta), *_ = np.linalg.lstsq(a, b, rcond=None)
    alpha, beta = max(0.0, float(alpha)), float(beta)
    if beta <= 0:
        raise SimplanError(f"{op} times do not grow with size; measure larger --sizes")
    fit = {
        "op": op,
        "model": "t = alpha_s + beta_s_per_byte * size_B",
        "method": "least squares, rows weighted by 1/sqrt(median_s)",
        "alpha_s": alpha,
        "beta_s_per_byte": beta,
        "bandwidth_Bps": 1 / beta,
        "rows": len(rows),
    }
    if op == "all_reduce":  # read as a ring: 2(n-1) steps over links of this bandwidth
        fit["step_latency_s"] = alpha / (2 * (nprocs - 1))
        fit["link_bandwidth_Bps"] = 2 * (nprocs - 1) / nprocs / beta
    return fit


def default_output(backend: str, nprocs: int, device: str | None = None) -> Path:
    """Where bench-comm writes without --out: gloo ranks on this machine go to the file
    `simplan validate` reads (local_calibration_path); NCCL to traces/collectives/<host>/."""
    if backend == "gloo" and device is None:
        return local_calibration_path(nprocs, backend)
    where = device or platform.node() or "localhost"
    return Path("traces/collectives") / where / f"{backend}-{nprocs}ranks.json"


def parse_size(text: str) -> int:
    """'64K', '4M', '1G', '65536', '64KiB' → bytes (binary units)."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    scale = {"K": KiB, "M": MiB, "G": 1024 * MiB}
    try:
        if t and t[-1] in scale:
            return int(float(t[:-1]) * scale[t[-1]])
        return int(t)
    except (ValueError, OverflowError):
        raise SimplanError(f"--sizes: cannot read {text!r}; write sizes like 64K,4M,1G") from None
