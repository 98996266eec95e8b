"""Build torch modules from model sources and count them into a ModelGraph (imports torch)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import torch
from torch import nn

from simplan.counting import count_layer, identity_key, own_parameters
from simplan.errors import SimplanError
from simplan.model_graph import Layer, ModelGraph
from simplan.model_knobs import ALL_LINEAR, QUANT_BITS, parse_quantize, prune_shape
from simplan.module_layers import LayerCall, tensors_in, trace
from simplan.op_policy import OP_CHECKPOINT
from simplan.quantize import check_kinds, frozen_layer
from simplan.sources import ModelSource, call_factory, run_user_code
from simplan.transformer_shape import TransformerSpec
from simplan.units import dtype_bytes

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def instantiate(
    source: ModelSource,
    tspec: TransformerSpec | None,
    *,
    batch: int,
    seq_len: int | None,
    device: str,
    dtype: str,
) -> tuple[nn.Module, tuple[Any, ...]]:
    """The module and an example input of `batch` samples on `device`, in `dtype`, pruned as
    the source's knobs say. Quantized weights are counted (graph_from_source), not run here:
    training steps and profiles of them are refused."""
    if source.knobs.quantize:
        raise SimplanError(
            f"--quantize {source.knobs.quantize}: quantized weights are planned from counts "
            "and measured rates (benchmarks/quantized_forward.py), not trained or profiled "
            "for real; drop --quantize here"
        )
    return _instantiate(source, tspec, batch=batch, seq_len=seq_len, device=device, dtype=dtype)


def _instantiate(
    source: ModelSource,
    tspec: TransformerSpec | None,
    *,
    batch: int,
    seq_len: int | None,
    device: str,
    dtype: str,
) -> tuple[nn.Module, tuple[Any, ...]]:
    if tspec is not None:
        from simplan.nets.transformer import build

        model, inputs = build(_knob_shape(source, tspec, seq_len), batch=batch, device=device)
    elif source.knobs.prune:
        model, inputs = _pruned(source, batch, device)
    else:
        model, inputs = _from_factory(source, batch, device)
    return _cast(model, inputs, dtype)


def _pruned(source: ModelSource, batch: int, device: str) -> tuple[nn.Module, tuple]:
    """The factory's module with channels pruned: Torch-Pruning needs real weights, so a module
    wanted on the meta device is built and pruned on the CPU first (batch 1) and moved there."""
    from simplan.pruning import prune_module

    build_on = "cpu" if device == "meta" else device
    model, inputs = _from_factory(source, 1 if device == "meta" else batch, build_on)
    model = run_user_code(
        f"{source.path}: pruning the model", lambda: prune_module(model, inputs, source.knobs)
    )
    if device == "meta":
        model = model.to("meta")
        inputs = tuple(_to(x, "meta") for x in inputs)
    return model, inputs


def _with_seq(tspec: TransformerSpec, seq_len: int | None) -> TransformerSpec:
    return dataclasses.replace(tspec, seq_len=seq_len) if seq_len else tspec


def _from_factory(source: ModelSource, batch: int, device: str) -> tuple[nn.Module, tuple]:
    _warm_up_counting()
    if source.kind == "preset-py":
        sized = {"image_size": source.knobs.image_size} if source.knobs.image_size else {}
        with torch.device(device):
            result = call_factory(source, batch=batch, **sized)
    elif source.knobs.image_size:
        raise SimplanError(f"{source.path}: image=N applies to the vision presets only")
    else:
        result = call_factory(source)
    model, inputs = _checked_result(source, result)
    if source.kind == "factory":
        model, inputs = model.to(device), tuple(_to(x, device) for x in inputs)
    return model, inputs


def _checked_result(source: ModelSource, result: Any) -> tuple[nn.Module, tuple[Any, ...]]:
    """(module, inputs) from a factory's result, or one line saying what it returned."""
    call = f"{source.path}:{source.factory}()"
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], nn.Module)):
        raise SimplanError(
            f"{call} must return (nn.Module, example_input), got {_kind(result)}; fix the factory"
        )
    model, example = result
    inputs = example if isinstance(example, tuple) else (example,)
    if not tensors_in(inputs):
        raise SimplanError(
            f"{call} returned {_kind(example)} as its example input; return a tensor (or a "
            "tuple of tensors) whose first dimension is the batch"
        )
    return model, inputs


def _kind(value: Any) -> str:
    if isinstance(value, tuple):
        return f"a tuple of {len(value)} ({', '.join(type(v).__name__ for v in value[:3])})"
    return type(value).__name__


def _to(value: Any, device: str) -> Any:
    return value.to(device) if isinstance(value, torch.Tensor) else value


def _cast(model: nn.Module, inputs: tuple[Any, ...], dtype: str) -> tuple[nn.Module, tuple]:
    target = TORCH_DTYPES[dtype]
    model = model.to(target)
    cast = tuple(
        x.to(target) if isinstance(x, torch.Tensor) and x.is_floating_point() else x for x in inputs
    )
    return model, cast


def batch_of(inputs: tuple[Any, ...]) -> int:
    tensors = tensors_in(inputs)
    if not tensors or tensors[0].dim() == 0:
        raise SimplanError("the example input must be a tensor whose first dimension is the batch")
    return int(tensors[0].shape[0])


def _knob_shape(
    source: ModelSource, tspec: TransformerSpec, seq_len: int | None
) -> TransformerSpec:
    """The source's transformer shape, pruned as its knobs say, at `seq_len`."""
    shape = prune_shape(tspec, source.knobs) if source.knobs.prune else tspec
    return _with_seq(shape, seq_len)


def graph_from_source(
    source: ModelSource, tspec: TransformerSpec | None, *, seq_len: int | None, dtype: str
) -> ModelGraph:
    if tspec is not None:
        graph = graph_from_spec(
            _knob_shape(source, tspec, seq_len),
            dtype=dtype,
            name=source.label,
            source=str(source.path),
            quantize=source.knobs.quantize,
        )
    else:
        model, inputs = _instantiate(
            source, None, batch=1, seq_len=seq_len, device="meta", dtype=dtype
        )
        graph = run_user_code(
            f"{source.path}: the model's forward pass",
            lambda: count_module(
                model,
                inputs,
                name=source.label,
                dtype=dtype,
                source=str(source.path),
                quantize=source.knobs.quantize,
            ),
        )
    return graph


@functools.cache
def _warm_up_counting() -> None:
    """Build and count a one-layer model on the meta device once: torch imports parts of itself
    on first use, and that must happen outside the time bound of a user's model file (an import
    cut short by the bound would leave torch half-imported)."""
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(2, 2))
        inputs = (torch.ones(1, 2),)
    count_module(model, inputs, name="warm-up", dtype="fp32", source="")


def graph_from_spec(
    tspec: TransformerSpec,
    *,
    dtype: str,
    name: str | None = None,
    source: str = "",
    quantize: str = "",
) -> ModelGraph:
    """Count a transformer shape on the meta device."""
    from simplan.nets.transformer import build

    model, inputs = build(tspec, batch=1, device="meta")
    model, inputs = _cast(model, inputs, dtype)
    return count_module(
        model,
        inputs,
        name=name or tspec.name,
        dtype=dtype,
        source=source or "transformer spec",
        seq_len=tspec.seq_len,
        tokens_per_sample=tspec.seq_len,
        meta={"transformer": dataclasses.asdict(tspec)},
        quantize=quantize,
    )


def count_module(
    model: nn.Module,
    inputs: tuple[Any, ...],
    *,
    name: str,
    dtype: str,
    source: str,
    seq_len: int = 0,
    tokens_per_sample: int = 1,
    meta: dict[str, Any] | None = None,
    quantize: str = "",
) -> ModelGraph:
    """Count a module (ideally on the meta device) into a ModelGraph, per sample; `quantize`
    (--quantize's text) stores the weights it names in their format, frozen."""
    batch = batch_of(inputs)
    pairs = parse_quantize(quantize) if quantize else ()
    model.train()
    calls = trace(model, inputs)
    owned = own_parameters(calls)
    read = {src for call in calls for src in call.inputs_from}
    counts: dict[tuple[str, bool], Any] = {}
    layers = []
    of: dict[str, Any] = {}
    for call in calls:
        key = identity_key(call)
        is_output = call.name not in read
        if (key, is_output) not in counts:
            counts[(key, is_output)] = _count(call, batch, is_output)
        of[call.name] = counts[(key, is_output)]
        shared = _saved_by_producer(call, of)
        layer = _layer(call, key, of[call.name], owned[call.name], dtype, shared)
        layers.append(quantized_layer(layer, owned[call.name], call.module, pairs, dtype))
    check_kinds(pairs, [x.kind for x in layers], dtype)
    edges = tuple((src, call.name) for call in calls for src in call.inputs_from)
    return ModelGraph(
        name=name,
        layers=tuple(layers),
        edges=edges,
        seq_len=seq_len,
        dtype=dtype,
        tokens_per_sample=tokens_per_sample,
        source=source,
        meta={
            **(meta or {}),
            **({"quantize": quantize} if quantize else {}),
            "counted_with": f"torch {torch.__version__}",
            "counted_on": str(next(iter(tensors_in(inputs))).device),
        },
    )


def _count(call: LayerCall, batch: int, is_output: bool) -> Any:
    try:
        return count_layer(call, batch, is_output)
    except SimplanError:
        raise
    except Exception as exc:
        raise SimplanError(
            f"counting layer {call.name} failed: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None


def _saved_by_producer(call: LayerCall, counts: dict[str, Any]) -> float:
    """Bytes per sample of the layer's saved input that the one layer feeding it already saves
    as its output (a ReLU's output that the next convolution or linear layer saves too): one
    tensor, kept once in a real step, counted with the producer."""
    if len(call.inputs_from) != 1:
        return 0.0
    producer = counts[call.inputs_from[0]]
    return min(producer.saved_output_bytes, counts[call.name].saved_input_bytes)


def _layer(
    call: LayerCall,
    key: str,
    count: Any,
    params: list[nn.Parameter],
    dtype: str,
    shared_bytes: float = 0.0,
) -> Layer:
    module = call.module
    n_params = sum(p.numel() for p in params)
    kind = str(getattr(module, "simplan_kind", type(module).__name__.lower()))
    attrs = dict(getattr(module, "simplan_attrs", {}))
    if kind == "transformer_block":
        attrs[OP_CHECKPOINT] = {
            "saved_bytes": count.op_saved_bytes,
            "recompute_ops": count.op_recompute_ops.to_dict(),
        }
    return Layer(
        name=call.name,
        kind=kind,
        params=n_params,
        param_tensors=len(params),
        param_bytes=n_params * dtype_bytes(dtype),
        fwd_flops=count.fwd_flops,
        bwd_flops=count.bwd_flops,
        activation_bytes=count.activation_bytes - shared_bytes,
        output_bytes=count.output_bytes,
        input_bytes=count.input_bytes,
        identity=key,
        fwd_ops=count.fwd_ops,
        bwd_ops=count.bwd_ops,
        attrs=attrs | {"param_shapes": [list(p.shape) for p in params]},
        saved_output_bytes=count.saved_output_bytes,
    )


def quantized_shapes(
    module: nn.Module, owned: list[nn.Parameter], kind: str, pairs: tuple[tuple[str, str], ...]
) -> tuple[str, list[list[int]], bool]:
    """(dtype, shapes, all embedding tables) of the weights `module` owns that --quantize
    stores in a weight-only format: every linear weight (ALL_LINEAR), or the linear and
    embedding weights of the layers of a named kind. A weight tied to an embedding stays with
    the embedding."""
    mine = {id(p) for p in owned}
    for want, qdtype in pairs:
        if qdtype not in QUANT_BITS or want not in (ALL_LINEAR, kind):
            continue
        types: tuple[type[nn.Module], ...] = (
            (nn.Linear,) if want == ALL_LINEAR else (nn.Linear, nn.Embedding)
        )
        found = [m for m in module.modules() if isinstance(m, types) and id(m.weight) in mine]
        if want != ALL_LINEAR and not found and owned:
            raise SimplanError(
                f"--quantize {kind}={qdtype}: {kind} layers have no linear or embedding weights "
                "to quantize"
            )
        shapes = [list(m.weight.shape) for m in found if isinstance(m.weight, torch.Tensor)]
        return qdtype, shapes, bool(found) and all(isinstance(m, nn.Embedding) for m in found)
    return "", [], False


def quantized_layer(
    layer: Layer,
    owned: list[nn.Parameter],
    module: nn.Module,
    pairs: tuple[tuple[str, str], ...],
    dtype: str,
) -> Layer:
    """The layer with the weights --quantize names stored in their format and frozen
    (simplan.quantize), the rest of its parameters trainable in the model's dtype."""
    qdtype, shapes, embedding = quantized_shapes(module, owned, layer.kind, pairs)
    if not shapes:
        return layer
    return frozen_layer(layer, shapes, qdtype, dtype, embedding=embedding)
