"""Cached per-layer costs and collective times of one (model, cluster, dtype), for the
planner's estimates and partition ILPs."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from simplan.capabilities import match_profile
from simplan.devices import DeviceModel
from simplan.headroom import DEFAULT_HEADROOM, Headroom
from simplan.model_graph import ModelGraph
from simplan.parallel import ParallelConfig
from simplan.planner.layouts import Layout, node_classes, slowest
from simplan.profiles import Profile
from simplan.sim.assemble import FP32, MIXED
from simplan.sim.contention import sharing_factor
from simplan.sim.costs import _activations, layer_steps
from simplan.units import dtype_bytes


@dataclass(frozen=True, kw_only=True)
class LayerTable:
    """Per-layer costs of one device model at (tp, micro-batch, recompute, sp), per micro-batch."""

    comp_s: tuple[float, ...]  # fwd + bwd + recompute
    bwd_s: tuple[float, ...]
    fwd_s: tuple[float, ...]
    params: tuple[float, ...]  # trainable
    frozen_bytes: tuple[float, ...]  # frozen quantized weights (simplan.quantize)
    act_bytes: tuple[float, ...]  # kept for backward
    raw_act_bytes: tuple[float, ...]  # before recomputation (live during a layer's backward)
    tp_ops: tuple[tuple[tuple[str, float], ...], ...]  # all TP collectives of a micro-batch

    def transient_bytes(self, recompute: str, spans: list[tuple[int, int]]) -> float:
        """What recomputation brings back for one layer's backward, the most over the layers
        of the spans: what the layer did not keep ('full': all but its input, in the layers it
        recomputes; 'op': what per-op checkpointing did not save); the attention core that
        'selective' brings back is not counted here."""
        if recompute not in ("full", "op"):
            return 0.0
        raw, kept = self.raw_act_bytes, self.act_bytes
        return max(max(raw[i] - kept[i] for i in range(lo, hi)) for lo, hi in spans)


class CostContext:
    """Caches of layer costs and collective times for one (model, cluster, dtype)."""

    def __init__(
        self, graph: ModelGraph, cluster: Any, dtype: str, profile: Profile | None = None,
        headroom: Headroom = DEFAULT_HEADROOM,
    ) -> None:  # fmt: skip
        self.graph, self.cluster, self.dtype, self.profile = graph, cluster, dtype, profile
        self.headroom = headroom  # kept free on every device: plans fit capacity less it
        self.cut_bytes = cut_bytes_all(graph)
        self.models: dict[str, DeviceModel] = {}
        self._table_c = lru_cache(maxsize=None)(self._table)
        self._tp_c = lru_cache(maxsize=None)(self._tp_time)
        self.coll = lru_cache(maxsize=None)(self._coll)
        self.factor = lru_cache(maxsize=None)(self._factor)
        self._stage_models: dict[tuple[int, int], DeviceModel] = {}
        self._keep: list[Layout] = []
        self._prefix: dict[tuple, Prefix] = {}
        self._groups: dict[tuple[int, int], tuple[int, ...]] = {}
        self._dp: dict[tuple[int, int], tuple[tuple[int, ...], ...]] = {}
        self._cuts: dict[tuple[int, int, float], list[float]] = {}
        self._zeros = [0.0] * len(graph.layers)
        classes = node_classes(cluster)
        self.homogeneous = len(classes) == 1
        self._class_first = {name: nodes[0] for name, nodes in classes}
        self.tied = [
            (i, graph.layers.index(graph.by_name[layer.attrs["tied_to"]]),
             graph.by_name[layer.attrs["tied_to"]].params)
            for i, layer in enumerate(graph.layers)
            if layer.attrs.get("tied_to") and layer.attrs["tied_to"] in graph.by_name
        ]  # fmt: skip
        self.per = MIXED if dtype in ("bf16", "fp16") else FP32
        self.grad_bytes = dtype_bytes(dtype)

    def table(self, model: DeviceModel, tp: int, mb: int, recompute: str, sp: bool) -> LayerTable:
        self.models.setdefault(model.name, model)
        return self._table_c(model.name, tp, mb, recompute, sp)

    def tp_time(
        self, model: DeviceModel, tp: int, mb: int, recompute: str, sp: bool, group: tuple[int, ...]
    ) -> tuple[float, ...]:
        self.models.setdefault(model.name, model)
        return self._tp_c(model.name, tp, mb, recompute, sp, group)

    def _table(self, name: str, tp: int, mb: int, recompute: str, sp: bool) -> LayerTable:
        model = self.models[name]
        cfg = ParallelConfig(
            tp=tp, micro_batch=mb, global_batch=mb, recompute=recompute,
            sequence_parallel=sp, dtype=self.dtype,
        )  # fmt: skip
        steps = layer_steps(self.graph, model, cfg, match_profile(self.profile, model))
        ops = []
        for s in steps:
            again = s.tp_fwd if s.recomputed else ()
            ops.append(tuple(s.tp_fwd) + tuple(s.tp_bwd) + tuple(again))
        raw = tuple(_activations(layer, cfg, mb) for layer in self.graph.layers)
        return LayerTable(
            comp_s=tuple(s.fwd_s + s.bwd_s + s.recompute_s for s in steps),
            bwd_s=tuple(s.bwd_s for s in steps),
            fwd_s=tuple(s.fwd_s for s in steps),
            params=tuple(s.params for s in steps),
            frozen_bytes=tuple(s.frozen_bytes for s in steps),
            act_bytes=tuple(s.activation_bytes for s in steps),
            raw_act_bytes=raw,
            tp_ops=tuple(ops),
        )

    def _coll(self, op: str, nbytes: float, group: tuple[int, ...]) -> float:
        if len(group) < 2 or nbytes <= 0:
            return 0.0
        return self.cluster.collective_time(op, nbytes, group)

    def _tp_time(
        self, name: str, tp: int, mb: int, recompute: str, sp: bool, group: tuple[int, ...]
    ) -> tuple[float, ...]:
        table = self._table_c(name, tp, mb, recompute, sp)
        if tp == 1:
            return (0.0,) * len(table.comp_s)
        return tuple(sum(self.coll(op, b, group) for op, b in ops) for ops in table.tp_ops)

    def _factor(self, op: str, groups: tuple[tuple[int, ...], ...]) -> float:
        return sharing_factor(self.cluster, op, groups)

    def stage_model(self, layout: Layout, stage: int) -> DeviceModel:
        key = (id(layout), stage)
        if key not in self._stage_models:
            self._keep.append(layout)
            self._stage_models[key] = slowest(self.cluster, layout.stage_devices(stage))
        return self._stage_models[key]

    def canonical(self, group: tuple[int, ...]) -> tuple[int, ...]:
        """A group inside one node, moved to the first node of its class (same links)."""
        if len(group) < 2:
            return group
        devices = self.cluster.devices
        node = devices[group[0]].node
        if any(devices[d].node != node for d in group):
            return group
        first = self._class_first.get(self.cluster.device_model(group[0]).name, node)
        base = self.cluster.node_devices(first)
        return tuple(base[devices[d].local] for d in group)

    def prefix(self, config: ParallelConfig, layout: Layout, stage: int) -> Prefix:
        model = self.stage_model(layout, stage)
        key = (model, config.tp, config.micro_batch, config.recompute, config.sequence_parallel)
        gkey = (id(layout), stage)
        if gkey not in self._groups:
            self._groups[gkey] = self.canonical(layout.tp_group(stage))
        group = self._groups[gkey]
        pkey = (model.name, *key[1:], group)
        if pkey not in self._prefix:
            table = self.table(*key)
            tp = self.tp_time(*key, group)
            times = tuple(a + b for a, b in zip(table.comp_s, tp, strict=True))
            self._prefix[pkey] = Prefix(
                layer_time=times,
                time=_cumsum(times),
                params=_cumsum(table.params),
                frozen=_cumsum(table.frozen_bytes),
                act=_cumsum(table.act_bytes),
                fwd=_cumsum(table.fwd_s),
                bwd=_cumsum(table.bwd_s),
                table=table,
            )
        return self._prefix[pkey]

    def layer_times(self, config: ParallelConfig, layout: Layout, stage: int) -> list[float]:
        """Per-layer time on `stage`'s devices (compute and TP collectives), per micro-batch."""
        return list(self.prefix(config, layout, stage).layer_time)

    def dp_groups(self, layout: Layout, stage: int) -> tuple[tuple[int, ...], ...]:
        """The stage's DP groups (stage 0's on a one-class cluster: the same links)."""
        key = (id(layout), 0 if self.homogeneous else stage)
        if key not in self._dp:
            self._dp[key] = tuple(layout.dp_groups(key[1]))
        return self._dp[key]

    def cut_seconds(self, config: ParallelConfig, layout: Layout) -> list[float]:
        """p2p time of a cut after each layer, over the first pipeline boundary's link."""
        if config.pp == 1:
            return self._zeros
        src, dst = layout.stage_devices(0)[0], layout.stage_devices(1)[0]
        key = (src, dst, config.micro_batch / config.tp)
        if key not in self._cuts:
            self._cuts[key] = [self._p2p(src, dst, b * key[2]) for b in self.cut_bytes]
        return self._cuts[key]

    def _p2p(self, src: int, dst: int, nbytes: float) -> float:
        return self.cluster.transfer_time(src, dst, nbytes) if nbytes > 0 else 0.0


@dataclass(frozen=True, kw_only=True)
class Prefix:
    """Prefix sums over layers (index i: the sum of layers [0, i)); layer_time per layer."""

    layer_time: tuple[float, ...]
    time: tuple[float, ...]
    params: tuple[float, ...]
    frozen: tuple[float, ...]
    act: tuple[float, ...]
    fwd: tuple[float, ...]
    bwd: tuple[float, ...]
    table: LayerTable

    @staticmethod
    def span(values: tuple[float, ...], ranges: list[tuple[int, int]]) -> float:
        return sum(values[hi] - values[lo] for lo, hi in ranges)


def _cumsum(values: Any) -> tuple[float, ...]:
    out = [0.0]
    for v in values:
        out.append(out[-1] + v)
    return tuple(out)


def cut_bytes_all(graph: ModelGraph) -> tuple[float, ...]:
    """Bytes per sample crossing a cut after each layer (one pass over the edges)."""
    index = {layer.name: i for i, layer in enumerate(graph.layers)}
    out_of = {layer.name: layer.output_bytes for layer in graph.layers}
    last_use: dict[str, int] = {}
    for src, dst in graph.edges:
        last_use[src] = max(last_use.get(src, -1), index[dst])
    delta = [0.0] * (len(graph.layers) + 1)
    for name, last in last_use.items():
        delta[index[name]] += out_of[name]
        delta[last] -= out_of[name]
    out, running = [], 0.0
    for i in range(len(graph.layers)):
        running += delta[i]
        out.append(running)
    return tuple(out)
