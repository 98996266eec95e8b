"""Synthetic multi-task graphs for tests: layers with given FLOPs, a trunk and named heads."""

from __future__ import annotations

import itertools

from simplan.model_graph import Layer, ModelGraph, OpCost


def layer(name: str, fwd_flops: float = 1e9, params: int = 1000, out_bytes: float = 1e6) -> Layer:
    """A layer of one matrix product per pass (forward fwd_flops, backward twice that, per
    sample) that reads its input and writes its output."""

    def ops(flops: float) -> OpCost:
        return OpCost(gemms=((flops, 2 * out_bytes, 1),))

    return Layer(
        name=name,
        kind="block",
        params=params,
        param_bytes=4 * params,
        fwd_flops=fwd_flops,
        bwd_flops=2 * fwd_flops,
        activation_bytes=out_bytes,
        output_bytes=out_bytes,
        input_bytes=out_bytes,
        identity=name,
        fwd_ops=ops(fwd_flops),
        bwd_ops=ops(2 * fwd_flops),
    )


def dag(
    trunk: list[str],
    heads: dict[str, list[str]],
    *,
    meta: dict | None = None,
    shapes: dict[str, Layer] | None = None,
    dtype: str = "fp32",
) -> ModelGraph:
    """A trunk chain whose last layer feeds each head (a chain of its own); `shapes` gives
    layers by name (default: layer(name))."""
    shapes = shapes or {}
    names = [*trunk, *(n for h in heads.values() for n in h)]
    layers = [shapes.get(n) or layer(n) for n in names]
    edges = list(itertools.pairwise(trunk))
    for chain in heads.values():
        edges.append((trunk[-1], chain[0]))
        edges += list(itertools.pairwise(chain))
    return ModelGraph(
        name="syn",
        layers=tuple(layers),
        edges=tuple(edges),
        seq_len=0,
        dtype=dtype,
        tokens_per_sample=1,
        source="test",
        meta=meta or {},
    )
