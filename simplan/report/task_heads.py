"""Where the heads of a multi-task model run (simplan.planner.tasks): a figure of the devices,
node by node, coloured by what each runs, and tables of the heads and of the placements
compared. Kept apart from the other report sections so that it merges on its own."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simplan.report.index import Figure, Section
from simplan.report.style import FONT_SIZE, new_figure, save_figure

TRUNK_COLOR = "#4C72B0"
IDLE_COLOR = "#E0E0E0"
HEAD_COLORS = ("#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3")


def device_roles(choice: Any) -> dict[int, str]:
    """Every device of the cluster: 'trunk' (with the replicated heads), 'head TASK' or
    'idle', under the chosen placement."""
    roles = {d: "idle" for d in range(len(choice.node_of))}
    for d in choice.best.devices:
        roles[d["device"]] = d["role"]
    return roles


def placement_figure(choice: Any) -> Any:
    """One row per node, one square per device, coloured by its role."""
    roles = device_roles(choice)
    nodes = sorted(set(choice.node_of))
    heads = sorted({r for r in roles.values() if r.startswith("head ")})
    colors = {"trunk": TRUNK_COLOR, "idle": IDLE_COLOR}
    colors.update({h: HEAD_COLORS[i % len(HEAD_COLORS)] for i, h in enumerate(heads)})
    width = max(len([d for d in roles if choice.node_of[d] == n]) for n in nodes)
    fig = new_figure(min(1.0 + 0.5 * width, 14.0), 0.9 + 0.45 * len(nodes))
    ax = fig.axes[0]
    for row, node in enumerate(nodes):
        mine = [d for d in sorted(roles) if choice.node_of[d] == node]
        for col, d in enumerate(mine):
            ax.add_patch(_square(col, row, colors[roles[d]]))
            ax.text(col + 0.5, row + 0.5, str(d), ha="center", va="center", fontsize=FONT_SIZE)
    ax.set_xlim(0, width)
    ax.set_ylim(len(nodes), 0)
    ax.set_yticks([r + 0.5 for r in range(len(nodes))], [f"node {n}" for n in nodes])
    ax.set_xticks([])
    ax.grid(False)
    replicated = [t["task"] for t in choice.best.tasks if t["placement"] == "replicated"]
    label = "trunk" + (f" + {', '.join(replicated)}" if replicated else "")
    labels = {"trunk": label, "idle": "idle"}
    from matplotlib.patches import Patch

    used = set(roles.values())
    ax.legend(
        handles=[
            Patch(facecolor=c, label=labels.get(k, k)) for k, c in colors.items() if k in used
        ],
        fontsize=FONT_SIZE,
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
    )
    ax.set_title(
        f"{choice.best.model}: heads placed ({choice.chosen}), step "
        f"{choice.best.step_s * 1e3:.4g} ms",
        fontsize=FONT_SIZE,
    )
    return fig


def _square(x: float, y: float, color: str) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((x + 0.05, y + 0.05), 0.9, 0.9, facecolor=color, edgecolor="white")


def heads_table(choice: Any) -> tuple[list[str], list[list[str]]]:
    rows = [
        [
            t["task"],
            "replicated" if t["placement"] == "replicated" else _devices(t["placement"]),
            str(t["samples_per_device"]),
            f"{t['fwd_s'] * 1e3:.4g}",
            f"{t['bwd_s'] * 1e3:.4g}",
            f"{t['params']:,}",
        ]
        for t in choice.best.tasks
    ]
    headers = ["task", "devices", "samples / device", "fwd ms", "bwd ms", "params"]
    return headers, rows


def candidates_table(choice: Any) -> tuple[list[str], list[list[str]]]:
    rows = [
        [
            name,
            f"{choice.results[name].step_s * 1e3:.4g}",
            choice.results[name].placement["assignment"],
        ]
        for name in choice.order
    ]
    rows += [[name, "-", f"not possible: {why}"] for name, why in choice.refused.items()]
    return ["placement", "step ms", "heads on their own devices"], rows


def _devices(devices: Sequence[int]) -> str:
    return ",".join(str(d) for d in devices)


def task_head_sections(choice: Any, out: Path, formats: Sequence[str]) -> list[Section]:
    """The report sections of a head placement; the figure saved under out."""
    save_figure(placement_figure(choice), out, "task_heads", formats)
    figure = Figure(
        name="task_heads",
        caption="the devices, node by node: what each runs under the chosen head placement",
        formats=tuple(formats),
    )
    s = choice.solve
    return [
        Section(
            title="Task heads: placement",
            text=f"the trunk on devices {_devices(choice.best.placement['trunk_devices'])}; "
            f"ILP {s.status} (sol_status {s.sol_status}) in {s.solve_s * 1e3:.0f} ms",
            figures=(figure,),
            table=heads_table(choice),
        ),
        Section(
            title="Task heads: placements compared",
            table=candidates_table(choice),
            bullets=tuple(choice.to_dict()["why"]),
        ),
    ]
