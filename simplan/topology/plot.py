"""Draw a cluster's topology with matplotlib (Agg, headless): switches on top, then per node its
NICs, devices and node-local switches. Line colour = link class, width ~ log bandwidth.
Large clusters show their first `max_nodes` nodes (and say how many are left out)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from simplan.outputs import write_with

if TYPE_CHECKING:
    from simplan.topology.cluster import Cluster

COLOURS = {
    "nvlink": "tab:green",
    "pcie": "tab:orange",
    "network": "tab:blue",
    "loopback": "tab:gray",
}
ROW = {"nic": 2.0, "device": 1.0, "node-switch": 0.0, "host": -0.8}


def _positions(cluster: Cluster, shown: int) -> dict[str, tuple[float, float]]:
    pos: dict[str, tuple[float, float]] = {}
    width = max(1, cluster.gpus_per_node) + 1.5
    for node in range(shown):
        x0 = node * width
        members = [v for v in cluster.graph if v.startswith(f"n{node}.")]
        rows: dict[float, list[str]] = {}
        for v in sorted(members, key=_natural):
            level = ROW.get(cluster.graph.nodes[v].get("kind", "host"), -0.8)
            rows.setdefault(level, []).append(v)
        for level, names in rows.items():
            for i, v in enumerate(names):
                offset = (cluster.gpus_per_node - len(names)) / 2
                pos[v] = (x0 + offset + i, level)
    switches = sorted(
        (v for v, d in cluster.graph.nodes(data=True) if d.get("kind") == "switch"), key=_natural
    )
    span = shown * width
    spines = [s for s in switches if s.startswith("spine")]
    lower = [s for s in switches if s not in spines]
    for level, names in ((3.0, lower), (4.0, spines)):
        for i, v in enumerate(names):
            pos[v] = ((i + 0.5) * span / max(1, len(names)) - 0.75, level)
    return pos


def _natural(name: str) -> tuple[object, ...]:
    parts: list[object] = []
    digits = ""
    for ch in name:
        if ch.isdigit():
            digits += ch
            continue
        if digits:
            parts.append(int(digits))
            digits = ""
        parts.append(ch)
    if digits:
        parts.append(int(digits))
    return tuple((0, p) if isinstance(p, int) else (1, p) for p in parts)


def plot_cluster(cluster: Cluster, path: str | Path, max_nodes: int = 8) -> Path:
    """Write a PNG of the topology to path and return the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = min(cluster.nodes, max_nodes)
    pos = _positions(cluster, shown)
    fig_w = min(40.0, 2.0 + 0.9 * len({round(x) for x, _ in pos.values()}))
    fig, ax = plt.subplots(figsize=(max(6.0, fig_w), 5.5))
    for link in cluster.links.values():
        if link.u in pos and link.v in pos:
            (x1, y1), (x2, y2) = pos[link.u], pos[link.v]
            ax.plot(
                [x1, x2],
                [y1, y2],
                color=COLOURS.get(link.kind, "black"),
                alpha=0.6,
                linewidth=0.5 + 0.6 * max(0.0, math.log10(link.bandwidth_Bps / 1e9) + 1),
            )
    for v, (x, y) in pos.items():
        kind = cluster.graph.nodes[v].get("kind")
        marker = {"device": "s", "nic": "o", "switch": "D"}.get(kind or "", "^")
        ax.plot(x, y, marker=marker, color="black", markersize=5)
        if cluster.nodes <= 4 or kind == "switch":
            ax.annotate(v, (x, y), fontsize=6, xytext=(2, 3), textcoords="offset points")
    for kind, colour in COLOURS.items():
        ax.plot([], [], color=colour, label=kind)
    title = f"{cluster.name}: {cluster.nodes} nodes, {cluster.num_devices} devices"
    if shown < cluster.nodes:
        title += f" (first {shown} nodes shown)"
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=7)
    ax.set_axis_off()
    try:
        return write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120,
                                                       bbox_inches="tight"))  # fmt: skip
    finally:
        plt.close(fig)
