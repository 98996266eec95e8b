"""Split an nn.Module into layers and find the DAG between them by running it once.

Layers are the root's children, with nn.Sequential / nn.ModuleList / nn.ModuleDict containers
expanded recursively (so a ModuleList of transformer blocks gives one layer per block). A forward
pass with hooks records each layer's inputs and outputs; a layer consumes the output of every
earlier layer whose output tensor it receives. An input made by a plain function between two
layers (a flatten in the parent's forward) is attributed to the layer that ran last.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from simplan.errors import SimplanError

CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


@dataclass
class LayerCall:
    name: str
    module: nn.Module
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    outputs: list[torch.Tensor] = field(default_factory=list)
    inputs_from: list[str] = field(default_factory=list)


def layer_modules(root: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers of root in registration order, containers expanded."""
    if isinstance(root, CONTAINERS):
        return list(_expand("", root))
    layers = list(_expand("", root))
    return layers or [("model", root)]


def _expand(prefix: str, module: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    for name, child in module.named_children():
        full = f"{prefix}.{name}" if prefix else name
        if isinstance(child, CONTAINERS):
            yield from _expand(full, child)
        else:
            yield full, child


def tensors_in(value: Any) -> list[torch.Tensor]:
    """Every tensor inside nested tuples, lists and dicts."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in tensors_in(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in tensors_in(v)]
    return []


def trace(root: nn.Module, inputs: tuple[Any, ...]) -> list[LayerCall]:
    """Run root(*inputs) once, recording every layer call in execution order."""
    layers = layer_modules(root)
    calls: list[LayerCall] = []
    producer: dict[int, str] = {}
    keep: list[torch.Tensor] = []  # keep outputs alive so ids stay unique
    handles = []
    seen: dict[str, int] = {}

    def pre_hook(name: str):
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            seen[name] = seen.get(name, 0) + 1
            label = name if seen[name] == 1 else f"{name}#{seen[name]}"
            sources = [producer[id(t)] for t in tensors_in((args, kwargs)) if id(t) in producer]
            if not sources and calls:
                sources = [calls[-1].name]
            calls.append(
                LayerCall(label, module, args, kwargs, inputs_from=list(dict.fromkeys(sources)))
            )

        return hook

    def post_hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        call = calls[-1]
        call.outputs = tensors_in(output)
        for t in call.outputs:
            producer[id(t)] = call.name
            keep.append(t)

    for name, module in layers:
        handles.append(module.register_forward_pre_hook(pre_hook(name), with_kwargs=True))
        handles.append(module.register_forward_hook(post_hook))
    try:
        with torch.no_grad():
            root(*inputs)
    except SimplanError:
        raise
    except Exception as exc:  # a user's model failing is bad input, not a crash
        raise SimplanError(
            f"the model's forward pass failed: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}; check the example "
            f"input the factory returns"
        ) from None
    finally:
        for h in handles:
            h.remove()
    if not calls:
        raise SimplanError(
            "the model's forward pass called none of its child modules; "
            "build it from nn.Module children (layers)"
        )
    return calls
