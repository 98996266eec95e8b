"""The model graph: a DAG of layers with counted FLOPs, parameters and bytes.

All per-layer quantities are per sample (one sequence or one image) at the graph's sequence
length and dtype; costs for a micro-batch of b samples scale linearly with b (attention is
quadratic in the sequence length, which is why the graph records the seq_len it was counted at).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

from simplan.errors import SimplanError
from simplan.limits import MAX_GRAPH_LAYERS, MAX_PARAMS, MAX_SEQ_LEN
from simplan.schema import Anything, Float, Int, ListOf, MapOf, Str, Table
from simplan.units import DTYPE_BYTES

GRAPH_SCHEMA_VERSION = 1
MAX_COUNT = 1e30  # FLOPs or bytes per sample: far beyond a 10T-parameter model at 4M tokens

_AMOUNT = Float(min=0.0, max=MAX_COUNT)
_OPS = Table(
    {
        "gemms": ListOf(ListOf(Float(min=0.0, max=MAX_COUNT), min_len=3, max_len=3)),
        "mem_bytes": _AMOUNT,
        "mem_ops": Int(min=0, max=10**12),
        "mm_shapes": ListOf(ListOf(Float(min=0.0, max=MAX_COUNT), min_len=6, max_len=6)),
    }
)
LAYER_TABLE = Table(
    {
        "name": Str(nonempty=True),
        "kind": Str(),
        "params": Int(min=0, max=MAX_PARAMS),
        "param_bytes": Int(min=0, max=8 * MAX_PARAMS),
        "fwd_flops": _AMOUNT,
        "bwd_flops": _AMOUNT,
        "activation_bytes": _AMOUNT,
        "output_bytes": _AMOUNT,
        "input_bytes": _AMOUNT,
        "identity": Str(nonempty=True),
        "fwd_ops": _OPS,
        "bwd_ops": _OPS,
        "attrs": MapOf(Anything()),
        "param_tensors": Int(min=0, max=10**9),
        "saved_output_bytes": _AMOUNT,
    },
    required=(
        "name",
        "kind",
        "params",
        "param_bytes",
        "fwd_flops",
        "bwd_flops",
        "activation_bytes",
        "output_bytes",
        "input_bytes",
        "identity",
    ),
    fix="count the model again",
)
GRAPH_TABLE = Table(
    {
        "schema": Anything(),
        "name": Str(nonempty=True),
        "seq_len": Int(min=0, max=MAX_SEQ_LEN),
        "dtype": Str(choices=tuple(DTYPE_BYTES)),
        "tokens_per_sample": Int(min=0, max=MAX_SEQ_LEN),
        "source": Str(max_len=1 << 20),
        "meta": MapOf(Anything()),
        "layers": ListOf(LAYER_TABLE, min_len=1, max_len=MAX_GRAPH_LAYERS),
        "edges": ListOf(ListOf(Str(), min_len=2, max_len=2), max_len=10_000_000),
    },
    required=("name", "seq_len", "dtype", "tokens_per_sample", "source", "layers", "edges"),
    fix="count the model again",
)


@dataclass(frozen=True, kw_only=True)
class OpCost:
    """Roofline inputs of one pass of a layer, per sample.

    gemms: (flops per call, bytes per call, calls) for matrix operations (mm, bmm, conv,
        attention); bytes are the operands read and the result written;
    mem_bytes: bytes read and written by the other operations; mem_ops: how many there are;
    mm_shapes: matrix multiplications whose shape is known (mm, addmm, bmm, baddbmm), not in
        `gemms`: (g, m, n, k, batch_axis, calls) for g products (m x k) @ (k x n), where the
        dimension at index `batch_axis` (0 g, 1 m, 2 n, 3 k) is per sample (it grows with the
        micro-batch: the tokens) and the others are fixed.
    """

    gemms: tuple[tuple[float, float, int], ...] = ()
    mem_bytes: float = 0.0
    mem_ops: int = 0
    mm_shapes: tuple[tuple[float, float, float, float, int, int], ...] = ()

    def __post_init__(self) -> None:
        for shape in self.mm_shapes:
            if shape[4] not in (0, 1, 2, 3):
                raise ValueError(f"mm_shapes: batch axis {shape[4]} must be 0, 1, 2 or 3")

    @property
    def gemm_flops(self) -> float:
        shaped = sum(2.0 * g * m * n * k * c for g, m, n, k, _, c in self.mm_shapes)
        return sum(f * n for f, _, n in self.gemms) + shaped

    @property
    def gemm_calls(self) -> int:
        return sum(n for _, _, n in self.gemms) + sum(c for *_, c in self.mm_shapes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "gemms": [list(g) for g in self.gemms],
            "mem_bytes": self.mem_bytes,
            "mem_ops": self.mem_ops,
            "mm_shapes": [list(s) for s in self.mm_shapes],
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> OpCost:
        return OpCost(
            gemms=tuple((float(f), float(b), int(n)) for f, b, n in d.get("gemms", [])),
            mem_bytes=float(d.get("mem_bytes", 0.0)),
            mem_ops=int(d.get("mem_ops", 0)),
            mm_shapes=tuple(
                (float(g), float(m), float(n), float(k), int(a), int(c))
                for g, m, n, k, a, c in d.get("mm_shapes", [])
            ),
        )


@dataclass(frozen=True, kw_only=True)
class Layer:
    """One layer of a model (a unit that can be placed on a pipeline stage)."""

    name: str
    kind: str
    params: int
    param_bytes: int
    fwd_flops: float
    bwd_flops: float
    activation_bytes: float
    output_bytes: float
    input_bytes: float
    identity: str
    fwd_ops: OpCost = field(default_factory=OpCost)
    bwd_ops: OpCost = field(default_factory=OpCost)
    attrs: dict[str, Any] = field(default_factory=dict)
    param_tensors: int = 0  # how many parameter tensors hold the params (0: not counted)
    saved_output_bytes: float = 0.0  # of activation_bytes: its own output (0: none, or not counted)

    def __post_init__(self) -> None:
        for attr in (
            "params",
            "param_tensors",
            "param_bytes",
            "fwd_flops",
            "bwd_flops",
            "activation_bytes",
            "output_bytes",
            "input_bytes",
            "saved_output_bytes",
        ):
            if getattr(self, attr) < 0:
                raise ValueError(f"layer {self.name}: {attr} must be >= 0")

    @property
    def is_moe(self) -> bool:
        """A mixture-of-experts layer (its attrs name the experts)."""
        return bool(self.attrs.get("num_experts"))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fwd_ops"] = self.fwd_ops.to_dict()
        d["bwd_ops"] = self.bwd_ops.to_dict()
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Layer:
        d = dict(d)
        d["fwd_ops"] = OpCost.from_dict(d.get("fwd_ops", {}))
        d["bwd_ops"] = OpCost.from_dict(d.get("bwd_ops", {}))
        return Layer(**d)


@dataclass(frozen=True, kw_only=True)
class ModelGraph:
    """A DAG of layers. `edges` are (producer, consumer) layer names."""

    name: str
    layers: tuple[Layer, ...]
    edges: tuple[tuple[str, str], ...]
    seq_len: int
    dtype: str
    tokens_per_sample: int
    source: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names):
            raise ValueError(f"model {self.name}: layer names must be unique")
        if not names:
            raise ValueError(f"model {self.name}: a model needs at least one layer")
        known = set(names)
        for src, dst in self.edges:
            if src not in known or dst not in known:
                raise ValueError(f"model {self.name}: edge {src}->{dst} names an unknown layer")
        self._check_acyclic_in_order()

    def _check_acyclic_in_order(self) -> None:
        index = {layer.name: i for i, layer in enumerate(self.layers)}
        for src, dst in self.edges:
            if index[src] >= index[dst]:
                raise ValueError(
                    f"model {self.name}: layers must be listed in a topological order "
                    f"({src} feeds {dst} but comes after it)"
                )

    @cached_property
    def by_name(self) -> dict[str, Layer]:
        return {layer.name: layer for layer in self.layers}

    def layer(self, name: str) -> Layer:
        try:
            return self.by_name[name]
        except KeyError:
            raise SimplanError(f"model {self.name} has no layer {name!r}") from None

    @cached_property
    def has_blocks(self) -> bool:
        """Whether the model is built of transformer blocks."""
        return any(layer.kind == "transformer_block" for layer in self.layers)

    def checkpointed(self, layer: Layer) -> bool:
        """Whether full recomputation checkpoints this layer: each transformer block (the
        embedding and the head keep their activations, as Megatron-LM, torchtitan and
        llm-foundry checkpoint only the blocks), or every layer of a model without blocks."""
        return not self.has_blocks or layer.kind == "transformer_block"

    def predecessors(self, name: str) -> list[str]:
        return [s for s, d in self.edges if d == name]

    def successors(self, name: str) -> list[str]:
        return [d for s, d in self.edges if s == name]

    @property
    def is_chain(self) -> bool:
        names = [layer.name for layer in self.layers]
        return set(self.edges) == set(itertools.pairwise(names))

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def active_params(self) -> float:
        """Parameters one token passes through: all of them, less the routed experts a token
        is not sent to (an MoE layer with E experts and top-k routing uses k / E of them)."""
        idle = 0.0
        for layer in self.layers:
            experts = layer.attrs.get("num_experts")
            if experts:
                unused = 1.0 - layer.attrs.get("moe_top_k", experts) / experts
                idle += layer.attrs.get("expert_params", 0) * unused
        return self.params - idle

    @property
    def frozen_params(self) -> int:
        """Parameters stored quantized and frozen (simplan.quantize): no gradient, no optimizer
        state, no gradient sync."""
        return sum(int(layer.attrs.get("frozen_params", 0)) for layer in self.layers)

    @property
    def trainable_params(self) -> int:
        return self.params - self.frozen_params

    @property
    def frozen_bytes(self) -> int:
        """Bytes of the frozen quantized weights (with their scales)."""
        return sum(int(layer.attrs.get("frozen_bytes", 0)) for layer in self.layers)

    @property
    def param_bytes(self) -> int:
        return sum(layer.param_bytes for layer in self.layers)

    @property
    def fwd_flops(self) -> float:
        return sum(layer.fwd_flops for layer in self.layers)

    @property
    def bwd_flops(self) -> float:
        return sum(layer.bwd_flops for layer in self.layers)

    def cut_bytes(self, index: int) -> float:
        """Bytes per sample that cross a pipeline cut placed after layers[index]."""
        before = {layer.name for layer in self.layers[: index + 1]}
        crossing = {s for s, d in self.edges if s in before and d not in before}
        return sum(self.by_name[s].output_bytes for s in crossing)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": {"kind": "model-graph", "version": GRAPH_SCHEMA_VERSION},
            "name": self.name,
            "seq_len": self.seq_len,
            "dtype": self.dtype,
            "tokens_per_sample": self.tokens_per_sample,
            "source": self.source,
            "meta": self.meta,
            "layers": [layer.to_dict() for layer in self.layers],
            "edges": [list(e) for e in self.edges],
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> ModelGraph:
        return ModelGraph(
            name=d["name"],
            layers=tuple(Layer.from_dict(x) for x in d["layers"]),
            edges=tuple((s, t) for s, t in d["edges"]),
            seq_len=int(d["seq_len"]),
            dtype=d["dtype"],
            tokens_per_sample=int(d["tokens_per_sample"]),
            source=d["source"],
            meta=dict(d.get("meta", {})),
        )
