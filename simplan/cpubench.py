"""The local CPU as a device model, from a short micro-benchmark (about two seconds).

Peak FLOP/s: the best of fp32 matrix multiplications of a few sizes; memory bandwidth: a large
tensor copy (bytes read + written per second); kernel overhead: the median time of a tiny
element-wise operation. The result is stored with its metadata under traces/devices/ (committed
for the machines we develop on) or the user cache, keyed by CPU model and thread count.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

from simplan.devices import DeviceModel
from simplan.environment import cpu_name, environment
from simplan.io import read_json, write_json_atomic
from simplan.profiles import slug
from simplan.schema import Float, Str, Table, validate
from simplan.sources import cache_dir

SCHEMA = {"kind": "device-bench", "version": 1}
REPO_DEVICES = Path(__file__).resolve().parent.parent / "traces" / "devices"


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def bench_file_name(threads: int) -> str:
    return f"{slug(cpu_name())}-t{threads}.json"


def _best_time(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def run_cpu_bench() -> dict[str, Any]:
    """Measure the local CPU; returns the JSON document (with metadata)."""
    import torch

    results: dict[str, Any] = {"matmul": []}
    best = 0.0
    for n in (256, 512, 1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        t = _best_time(lambda a=a, b=b: torch.mm(a, b), 5 if n < 2048 else 3)
        flops = 2 * n**3 / t
        results["matmul"].append({"n": n, "seconds": t, "flops_per_s": flops})
        best = max(best, flops)
    big = torch.empty(32 * 1024 * 1024)  # 128 MiB
    out = torch.empty_like(big)
    out.copy_(big)
    t_copy = _best_time(lambda: out.copy_(big), 5)
    bandwidth = 2 * big.nbytes / t_copy
    tiny = torch.ones(16)
    samples = []
    for _ in range(200):
        t0 = time.perf_counter()
        torch.add(tiny, tiny)
        samples.append(time.perf_counter() - t0)
    return {
        "schema": SCHEMA,
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "peak_flops_fp32": best,
        "memory_bandwidth_Bps": bandwidth,
        "kernel_overhead_s": statistics.median(samples),
        "details": results,
        "meta": environment(method=__doc__.split("\n\n")[1]),
    }


def _memory_bytes() -> float:
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError):
        return 8.0 * 1024**3


BENCH_FIELDS = Table(
    {
        "peak_flops_fp32": Float(min=0.0, min_open=True, max=1e18),
        "memory_bandwidth_Bps": Float(min=0.0, min_open=True, max=1e15),
        "kernel_overhead_s": Float(min=0.0, max=1.0),
        "cpu": Str(),
    },
    required=("peak_flops_fp32", "memory_bandwidth_Bps", "kernel_overhead_s", "cpu"),
    open=True,
    fix="delete the file to measure again",
)


def device_from_bench(doc: dict[str, Any], source: str) -> DeviceModel:
    doc = validate(doc, BENCH_FIELDS, origin=source)
    peak = float(doc["peak_flops_fp32"])
    return DeviceModel(
        name="cpu",
        kind="cpu",
        # bf16/fp16 matmuls on CPUs without AMX run no faster than fp32
        peak_flops={"fp32": peak, "bf16": peak, "fp16": peak},
        memory_bytes=_memory_bytes(),
        memory_bandwidth_Bps=float(doc["memory_bandwidth_Bps"]),
        gemm_efficiency=1.0,
        mem_efficiency=1.0,
        kernel_overhead_s=float(doc["kernel_overhead_s"]),
        sources={
            "peak_flops": f"{source}: best fp32 torch.mm of n=256..2048 on {doc['cpu']}",
            "memory_bandwidth_Bps": f"{source}: 128 MiB tensor copy, (read+write)/time",
            "kernel_overhead_s": f"{source}: median time of a 16-element torch.add",
            "gemm_efficiency": "1.0: the peak is itself a measured matmul rate",
            "mem_efficiency": "1.0: the bandwidth is itself a measured copy rate",
        },
    )


def local_cpu_device(*, remeasure: bool = False) -> DeviceModel:
    """The local CPU's device model: a stored measurement if one matches, else measured now."""
    threads = _threads()
    name = bench_file_name(threads)
    for root in (REPO_DEVICES, cache_dir() / "devices"):
        path = root / name
        if path.is_file() and not remeasure:
            return device_from_bench(read_json(path), str(path))
    doc = run_cpu_bench()
    path = write_json_atomic(doc, cache_dir() / "devices" / name)
    return device_from_bench(doc, str(path))
