"""How long the report figures take to render (2-core machine, matplotlib Agg).

Cases: the timeline of a 1,024-GPU step (GPT-3 175B on 128 DGX A100 nodes, tp 8 pp 16 dp 8,
global batch 1,536, micro-batch 1: ~20k events) and of a small 16-GPU step (GPT-3 1.3B on 2
nodes), plus the breakdown and memory figures of the large one. "render" is building the figure
and writing the PNG; the simulation is timed apart. Target: the 1,024-GPU timeline under 10 s.
Prints a table and writes benchmarks/results/report_speed.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from simplan.io import write_json_atomic
from simplan.parallel import ParallelConfig
from simplan.report.breakdown import stage_breakdown_figure
from simplan.report.memory import memory_figure, memory_time_figure
from simplan.report.style import save_figure
from simplan.report.timeline import timeline_figure
from simplan.sim.run import simulate
from simplan.sources import load_model
from simplan.table import render
from simplan.topology import load_cluster

if TYPE_CHECKING:
    from matplotlib.figure import Figure

OUT = Path(__file__).parent / "results" / "report_speed.json"
REPEATS = 3
HEADERS = [
    "model",
    "GPUs",
    "events",
    "sim s",
    "figure",
    "format",
    "build s",
    "save s",
    "render s",
    "KiB",
]
TARGET_S = 10.0
CASES = (
    ("gpt3-175b", "dgx-a100", 128, ParallelConfig(dp=8, tp=8, pp=16, global_batch=1536)),
    ("gpt3-1.3b", "dgx-a100", 2, ParallelConfig(dp=1, tp=8, pp=2, global_batch=64)),
)


def timed(make: Callable[[], Figure], out: Path, name: str, fmt: str) -> dict[str, float]:
    """Median over REPEATS of building the figure and of saving it."""
    build, save = [], []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fig = make()
        t1 = time.perf_counter()
        save_figure(fig, out, name, (fmt,))
        save.append(time.perf_counter() - t1)
        build.append(t1 - t0)
    size = (out / f"{name}.{fmt}").stat().st_size
    return {
        "build_s": statistics.median(build),
        "save_s": statistics.median(save),
        "render_s": statistics.median(b + s for b, s in zip(build, save, strict=True)),
        "file_bytes": size,
    }


def run_case(model: str, cluster: str, nodes: int, config: ParallelConfig) -> list[dict]:
    graph = load_model(model, dtype="bf16")
    c = load_cluster(cluster, nodes=nodes)
    t0 = time.perf_counter()
    result = simulate(graph, c, config, record=True)
    sim_s = time.perf_counter() - t0
    figures: list[tuple[str, Callable[[], Figure]]] = [
        ("timeline", lambda: timeline_figure(result))
    ]
    if nodes > 8:
        figures += [
            ("breakdown", lambda: stage_breakdown_figure(result)),
            ("memory", lambda: memory_figure(result)),
            ("memory_time", lambda: memory_time_figure(result)),
        ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in figures:
            for fmt in ("png", "svg") if name != "timeline" or nodes <= 8 else ("png",):
                row = {
                    "model": model,
                    "devices": c.num_devices,
                    "config": config.describe(),
                    "events": len(result.events),
                    "simulate_s": sim_s,
                    "figure": name,
                    "format": fmt,
                    **timed(make, Path(tmp), name, fmt),
                }
                rows.append(row)
    return rows


def main() -> int:
    rows = [row for case in CASES for row in run_case(*case)]
    print(
        render(
            HEADERS,
            [
                [
                    r["model"],
                    r["devices"],
                    r["events"],
                    f"{r['simulate_s']:.2f}",
                    r["figure"],
                    r["format"],
                    f"{r['build_s']:.2f}",
                    f"{r['save_s']:.2f}",
                    f"{r['render_s']:.2f}",
                    f"{r['file_bytes'] / 1024:.0f}",
                ]
                for r in rows
            ],
        )
    )
    big = next(r for r in rows if r["devices"] >= 1024 and r["figure"] == "timeline")
    ok = big["render_s"] < TARGET_S
    print(
        f"1,024-GPU timeline: {big['render_s']:.2f} s to render ({big['events']} events, "
        f"target < {TARGET_S:.0f} s): {'ok' if ok else 'TOO SLOW'}"
    )
    write_json_atomic({"target_s": TARGET_S, "repeats": REPEATS, "ok": ok, "cases": rows}, OUT)
    print(f"wrote {OUT}")
    return 0 if ok else 1


if __name__ == "__main__":
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()  # --help: what it measures; it takes no options
    sys.exit(main())
