"""Forward time of int8 dynamically quantized linear layers on a CPU, from measured rates.

`torch.ao.quantization.quantize_dynamic` replaces each nn.Linear by one that stores int8
weights and quantizes its input per call; FlopCounterMode counts such layers as 0 FLOPs, so
their time cannot come from a FLOP rate of fp32 kernels. benchmarks/int8_linear_rates.py times
fp32 and int8 dynamic linear layers per shape (tokens M, in K, out N) on this CPU and stores them
under traces/quant/ with the machine's metadata; per (K, N) the time is interpolated linearly in
M between the measured token counts.
A quantized model's forward time is its measured fp32 forward time with each linear layer's fp32
time swapped for its int8 time: the other operations (attention, norms, activations) are
unchanged by quantization.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simplan.devices import DeviceModel
from simplan.errors import SimplanError
from simplan.io import read_json
from simplan.model_graph import ModelGraph

Shape = tuple[int, int, int]  # tokens M, in features K, out features N
RATES_DIR = Path(__file__).resolve().parents[1] / "traces" / "quant"
WEIGHT_AXIS = 1  # a forward product x @ W^T whose per-sample axis is m (the tokens)


@dataclass(frozen=True, kw_only=True)
class MeasuredTimes:
    """Measured (rows M, time_s) points of one (K, N) and kernel, by M; between two points the
    time is linear in M (a fixed cost per call, quantizing the input and packing, plus a cost
    per row), beyond the ends the nearest segment is extended."""

    points: tuple[tuple[int, float], ...]

    def __post_init__(self) -> None:
        if len(self.points) < 2:
            raise SimplanError("a per-shape linear time needs two or more token counts measured")

    def time_s(self, rows: int) -> float:
        pts = self.points
        i = next((j for j in range(1, len(pts) - 1) if rows <= pts[j][0]), len(pts) - 1)
        (m0, t0), (m1, t1) = pts[i - 1], pts[i]
        return max(t0 + (t1 - t0) * (rows - m0) / (m1 - m0), 0.0)


@dataclass(frozen=True, kw_only=True)
class LinearRates:
    """Fitted fp32 and int8-dynamic linear times per (K, N), and where they were measured."""

    fp32: dict[tuple[int, int], MeasuredTimes]
    int8: dict[tuple[int, int], MeasuredTimes]
    source: str

    def time_s(self, kind: str, shape: Shape) -> float:
        m, k, n = shape
        table = self.fp32 if kind == "fp32" else self.int8
        if (k, n) not in table:
            raise SimplanError(
                f"no {kind} linear time measured for {k} -> {n} features in {self.source}; run "
                f"benchmarks/int8_linear_rates.py --features {k}x{n}"
            )
        return table[(k, n)].time_s(m)


def rates_from(doc: dict[str, Any], source: str) -> LinearRates:
    """LinearRates from a stored measurement: rows of {m, k, n, fp32_s, int8_s}."""
    groups: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for row in doc["rows"]:
        groups.setdefault((int(row["k"]), int(row["n"])), []).append(row)
    fit = {
        kind: {
            kn: MeasuredTimes(
                points=tuple(sorted((int(r["m"]), float(r[f"{kind}_s"])) for r in rows))
            )
            for kn, rows in groups.items()
        }
        for kind in ("fp32", "int8")
    }
    return LinearRates(fp32=fit["fp32"], int8=fit["int8"], source=source)


def read_rates(path: str | Path) -> LinearRates:
    return rates_from(read_json(Path(path)), str(path))


def predict_int8_forward_s(fp32_forward_s: float, shapes: list[Shape], rates: LinearRates) -> float:
    """The forward time with every linear layer of `shapes` run int8-dynamic: the measured fp32
    forward, less those layers' fp32 times, plus their int8 times."""
    swap = sum(rates.time_s("int8", s) - rates.time_s("fp32", s) for s in shapes)
    return fp32_forward_s + swap


def rates_path(cpu: str) -> Path:
    """Where benchmarks/int8_linear_rates.py stores the rates of the CPU named `cpu`."""
    slug = "".join(c if c.isalnum() else "-" for c in cpu.lower()).strip("-")[:40]
    return RATES_DIR / f"int8-linear-{slug}.json"


def graph_linear_shapes(graph: ModelGraph, micro_batch: int) -> list[Shape]:
    """(M, K, N) of every quantized linear product of a forward of `micro_batch` samples, from
    the counted products of the layers --quantize stored in int8 (attrs 'quantize'): a weight's
    product has one group and the tokens on its m axis; attention's batched products have the
    heads on theirs."""
    shapes: list[Shape] = []
    for layer in graph.layers:
        if not layer.attrs.get("quantize"):
            continue
        for g, m, n, k, axis, calls in layer.fwd_ops.mm_shapes:
            if axis == WEIGHT_AXIS and g == 1:
                shapes += [(round(m * micro_batch), round(k), round(n))] * calls
    return shapes


def int8_dynamic_forward_s(
    graph: ModelGraph, fp32_forward_s: float, micro_batch: int, device: DeviceModel
) -> float:
    """A forward of `graph` (counted with --quantize int8-dynamic) on `device`: its fp32 forward
    with the quantized linear layers' times swapped by this CPU's measured rates. torch's dynamic
    quantization runs on CPUs only: a GPU, or a CPU without stored rates, is refused (one line)."""
    if device.kind != "cpu":
        raise SimplanError(
            f"an int8-dynamic teacher runs torch's CPU kernels; {device.name} is a "
            f"{device.kind}: use --teacher-dtype bf16 (or fp16) there"
        )
    from simplan.environment import cpu_name

    path = rates_path(cpu_name())
    if not path.exists():
        raise SimplanError(
            f"no int8 linear rates measured on this CPU ({path}): run "
            "benchmarks/int8_linear_rates.py --models <teacher>"
        )
    rates = read_rates(path)
    return predict_int8_forward_s(fp32_forward_s, graph_linear_shapes(graph, micro_batch), rates)


def linear_shapes(model: Any, inputs: tuple[Any, ...]) -> list[Shape]:
    """(M, K, N) of every nn.Linear call in one forward pass (imports torch)."""
    import torch
    from torch import nn

    shapes: list[Shape] = []

    def hook(module: nn.Linear, args: tuple[Any, ...], _out: Any) -> None:
        x = args[0]
        shapes.append((x.numel() // module.in_features, module.in_features, module.out_features))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return shapes
