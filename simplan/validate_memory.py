"""Predicted against measured peak memory, per rank and per component.

The prediction is the simulator's peak moment of the rank's pipeline stage (simplan.sim.peak:
what is live then, by part); the measurement is the tensor memory of one untimed step of the
real run (simplan.runtime.memory: the live storages at the step's peak, by part). Components
compared: parameters, gradients and optimizer state as they are at each one's peak, and the
rest together (activations and buffers: saved and transient activations, gathered parameters,
the data, communication buckets and receive buffers), whose split between the two is a matter
of naming (the run counts what its build allocated as buffers, what its forward and backward
allocated as activations).

    mem = compare_memory(record["predicted"], record["measured"]["ranks"], pp=2)
    mem["ranks"][0]["rel_error"], memory_lines(mem)
"""

from __future__ import annotations

import statistics
from typing import Any

# component: (the simulator's parts, the run's parts)
COMPONENTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "parameters": (("weights",), ("parameters",)),
    "gradients": (("grads",), ("gradients",)),
    "optimizer": (("optimizer",), ("optimizer",)),
    "activations+buffers": (("activations", "buffers"), ("activations", "other")),
}


def rel_error(predicted: float, measured: float) -> float | None:
    """(predicted - measured) / measured; None when nothing was measured."""
    return (predicted - measured) / measured if measured else None


def stage_of(rank: int, world: int, pp: int) -> int:
    """The pipeline stage of a rank: pp is the outermost dimension of the runtime's mesh."""
    return rank // max(world // pp, 1)


def compare_memory(predicted: dict[str, Any], ranks: list[dict[str, Any]], pp: int) -> dict:
    """Per rank: the predicted and measured peak and components, and their errors; the
    summary over ranks (median and largest |error| of the peaks). Ranks measured before tensor
    memory was (tracked_peak_bytes 0) are left out."""
    devices = {int(d["stage"]): d for d in predicted["devices"]}
    rows = []
    for r in ranks:
        if not r.get("tracked_peak_bytes"):
            continue
        device = devices[stage_of(int(r["rank"]), len(ranks), pp)]
        pred_peak, meas_peak = float(device["peak_memory_bytes"]), float(r["tracked_peak_bytes"])
        parts = r.get("memory_parts", {})
        components = {
            name: _component(device["memory"], parts, sim_keys, run_keys)
            for name, (sim_keys, run_keys) in COMPONENTS.items()
        }
        rows.append(
            {
                "rank": int(r["rank"]),
                "stage": int(device["stage"]),
                "predicted_peak_bytes": pred_peak,
                "measured_peak_bytes": meas_peak,
                "rel_error": rel_error(pred_peak, meas_peak),
                "predicted_moment": device.get("peak_moment", ""),
                "measured_phase": r.get("peak_phase", ""),
                "measured_reserved_bytes": int(r.get("peak_reserved_bytes", 0)),
                "components": components,
            }
        )
    errors = [abs(row["rel_error"]) for row in rows if row["rel_error"] is not None]
    return {
        "method": "simplan.sim.peak vs tensor storages of one untimed step",
        "ranks": rows,
        "median_abs_error": statistics.median(errors) if errors else None,
        "max_abs_error": max(errors) if errors else None,
    }


def _component(
    sim: dict[str, float], run: dict[str, int], sim_keys: tuple[str, ...], run_keys: tuple[str, ...]
) -> dict[str, float | None]:
    pred = float(sum(sim.get(k, 0.0) for k in sim_keys))
    meas = float(sum(run.get(k, 0) for k in run_keys))
    return {"predicted_bytes": pred, "measured_bytes": meas, "rel_error": rel_error(pred, meas)}


def _mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:.2f}"


def _pct(err: float | None) -> str:
    return "-" if err is None else f"{err:+.1%}"


def memory_lines(mem: dict[str, Any]) -> list[str]:
    """A plain-text table: per rank, predicted and measured peak (MiB), its error and when it
    happens, then each component's predicted / measured (MiB) at its peak."""
    if not mem["ranks"]:
        return ["memory: not measured (a record from before tensor memory was measured)"]
    names = list(COMPONENTS)
    head = f"{'rank':>4} {'stage':>5} {'pred MiB':>9} {'meas MiB':>9} {'error':>7}  " + "  ".join(
        f"{n + ' pred/meas':>26}" for n in names
    )
    lines = ["peak tensor memory per rank (predicted: simulated peak moment; measured: one step)"]
    lines.append(head)
    for row in mem["ranks"]:
        comps = "  ".join(
            f"{_mib(c['predicted_bytes']) + ' / ' + _mib(c['measured_bytes']):>26}"
            for c in (row["components"][n] for n in names)
        )
        lines.append(
            f"{row['rank']:>4} {row['stage']:>5} {_mib(row['predicted_peak_bytes']):>9} "
            f"{_mib(row['measured_peak_bytes']):>9} {_pct(row['rel_error']):>7}  {comps}"
        )
    lines.append(
        "peaks at: "
        + "; ".join(
            f"rank {row['rank']} predicted {row['predicted_moment'] or '?'}, measured in "
            f"{row['measured_phase'] or '?'}"
            for row in mem["ranks"]
        )
    )
    return lines
