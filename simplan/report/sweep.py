"""Scaling and what-if: predicted throughput against GPU count, link bandwidth or micro-batch,
from simulations through the API (one simulated step per value)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from matplotlib.figure import Figure

from simplan.errors import SimplanError
from simplan.parallel import ParallelConfig
from simplan.report.style import CAPACITY_COLOR, FONT_SIZE, PLAN_COLOR, gib, new_figure

VARY = ("nodes", "bandwidth", "micro-batch")


@dataclass(frozen=True, kw_only=True)
class SweepPoint:
    """One simulated value of the swept knob; error says why it could not be simulated."""

    value: float
    devices: int
    config: str = ""
    step_time_s: float = 0.0
    tokens_per_s: float = 0.0
    mfu: float = 0.0
    peak_memory_bytes: float = 0.0
    fits: bool = True
    error: str = ""


def x_label(vary: str, link_kinds: Sequence[str] = ("network",)) -> str:
    if vary == "nodes":
        return "GPUs"
    if vary == "bandwidth":
        return f"{'/'.join(link_kinds)} bandwidth (x the cluster's)"
    return "micro-batch (samples)"


def run_sweep(
    model: Any,
    cluster: str,
    config: ParallelConfig,
    *,
    vary: str,
    values: Sequence[float],
    nodes: int | None = None,
    gpus_per_node: int | None = None,
    link_kinds: Sequence[str] = ("network",),
    progress: Callable[[int, int], None] | None = None,
) -> list[SweepPoint]:
    """Simulate `config` of `model` on the cluster preset/TOML `cluster` once per value.
    vary: 'nodes' (the cluster scaled to N nodes, dp = the devices left by tp and pp; the
    global batch stays), 'bandwidth' (links of `link_kinds` scaled by the factor) or
    'micro-batch'. A value that cannot run (degrees that do not divide) becomes an error row.
    progress(done, total) is called before each value and once at the end."""
    from simplan.sim.run import resolve_model
    from simplan.topology import load_cluster

    if vary not in VARY:
        raise SimplanError(f"--vary must be one of {', '.join(VARY)}, got {vary!r}")
    if not values:
        raise SimplanError("give at least one value to sweep (--values 1 2 4)")
    if vary != "bandwidth" and any(v != int(v) or v <= 0 for v in values):
        raise SimplanError(f"--vary {vary} takes positive whole numbers, got {list(values)}")
    graph = resolve_model(model, config)
    base = (
        None if vary == "nodes" else load_cluster(cluster, nodes=nodes, gpus_per_node=gpus_per_node)
    )
    points: list[SweepPoint] = []
    for value in values:
        if progress is not None:
            progress(len(points), len(values))
        try:
            if base is None:  # vary == "nodes": one cluster per value
                c = load_cluster(cluster, nodes=int(value), gpus_per_node=gpus_per_node)
                cfg = replace(
                    config, dp=max(1, c.num_devices // (config.tp * config.pp * config.cp))
                )
            elif vary == "bandwidth":
                c, cfg = base.with_bandwidth(float(value), kinds=list(link_kinds)), config
            else:
                c, cfg = base, replace(config, micro_batch=int(value))
            points.append(_simulate_point(graph, c, cfg, value))
        except SimplanError as exc:
            devices = base.num_devices if base is not None else 0
            points.append(SweepPoint(value=float(value), devices=devices, error=str(exc)))
    if progress is not None:
        progress(len(points), len(values))
    return points


def _simulate_point(graph: Any, cluster: Any, config: ParallelConfig, value: float) -> SweepPoint:
    from simplan.sim.run import simulate

    r = simulate(graph, cluster, config, record=False)
    return SweepPoint(
        value=float(value),
        devices=cluster.num_devices,
        config=config.describe(),
        step_time_s=r.step_time_s,
        tokens_per_s=r.tokens_per_s,
        mfu=r.mfu,
        peak_memory_bytes=r.peak_memory_bytes,
        fits=r.fits_memory,
    )


def sweep_figure(
    points: Sequence[SweepPoint], *, vary: str, title: str, link_kinds: Sequence[str] = ("network",)
) -> Figure:
    """Throughput (tokens/s) and MFU against the swept value; hollow red markers for points
    that do not fit in memory; for a node sweep, linear scaling from the first point, dashed."""
    ok = [p for p in points if not p.error]
    xs = [float(p.devices if vary == "nodes" else p.value) for p in ok]
    fig = new_figure(10.0, 3.8, cols=2)
    panels = [
        ("throughput (tokens/s)", [p.tokens_per_s for p in ok]),
        ("MFU (%)", [p.mfu * 100 for p in ok]),
    ]
    for ax, (ylabel, ys) in zip(fig.axes, panels, strict=True):
        ax.plot(xs, ys, color=PLAN_COLOR, marker="o", label="predicted")
        bad = [(x, y) for x, y, p in zip(xs, ys, ok, strict=True) if not p.fits]
        if bad:
            ax.plot(
                *zip(*bad, strict=True),
                linestyle="none",
                marker="o",
                markersize=10,
                markerfacecolor="none",
                markeredgecolor=CAPACITY_COLOR,
                label="does not fit in memory",
            )
        ax.set_xlabel(x_label(vary, link_kinds))
        ax.set_ylabel(ylabel)
        if vary in ("nodes", "bandwidth") and len(set(xs)) > 1:
            ax.set_xscale("log", base=2)
        if xs:
            ax.set_xticks(xs, [f"{x:g}" for x in xs])
            ax.minorticks_off()
        ax.set_ylim(bottom=0)
    if vary == "nodes" and ok:
        ideal = [ok[0].tokens_per_s * x / xs[0] for x in xs]
        fig.axes[0].plot(
            xs, ideal, color="black", linestyle="--", linewidth=0.8, label="linear scaling"
        )
    fig.axes[0].legend(fontsize=FONT_SIZE - 1, frameon=False)
    fig.suptitle(title, fontsize=FONT_SIZE + 1)
    return fig


def sweep_table(points: Sequence[SweepPoint], vary: str) -> tuple[list[str], list[list[str]]]:
    headers = [
        vary,
        "GPUs",
        "configuration",
        "step time (s)",
        "tokens/s",
        "MFU",
        "peak memory (GiB)",
        "fits",
    ]
    rows = []
    for p in points:
        if p.error:
            rows.append([f"{p.value:g}", str(p.devices or ""), p.error, "", "", "", "", ""])
            continue
        rows.append(
            [
                f"{p.value:g}",
                str(p.devices),
                p.config,
                f"{p.step_time_s:.4g}",
                f"{p.tokens_per_s:,.0f}",
                f"{p.mfu:.1%}",
                f"{gib(p.peak_memory_bytes):.1f}",
                "yes" if p.fits else "no",
            ]
        )
    return headers, rows
