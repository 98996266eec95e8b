"""Structured pruning of torch modules with Torch-Pruning (imports torch).

Torch-Pruning traces the module once, groups the parameters whose channels depend on each other
(a convolution's output channels, the batch norm after it, the next convolution's input
channels, the two sides of a residual addition) and removes whole channels from every member of
a group, so the pruned module is physically smaller and is counted, profiled and trained like
any other. Channels are ranked by the L1 norm of their weights; the classifier's outputs (the
model's classes) are never pruned.
"""

from __future__ import annotations

import gc
from typing import Any

import torch
from torch import nn

from simplan.errors import SimplanError
from simplan.model_knobs import ModelKnobs


def prune_module(model: nn.Module, inputs: tuple[Any, ...], knobs: ModelKnobs) -> nn.Module:
    """Remove `knobs.fraction('channels')` of the channels of every prunable layer, in place;
    the example inputs (on a real device) let Torch-Pruning trace the dependencies."""
    unsupported = [w for w, _ in knobs.prune if w != "channels"]
    if unsupported:
        raise SimplanError(
            f"cannot prune {unsupported[0]} of a torch module; prune channels (heads, ffn and "
            f"layers are for transformer shapes, .toml)"
        )
    fraction = knobs.fraction("channels")
    if not fraction:
        return model
    try:
        import torch_pruning as tp
    except ImportError:
        raise SimplanError(
            "--prune channels needs Torch-Pruning: pip install 'simplan[prune]'"
        ) from None
    pruner = tp.pruner.MagnitudePruner(
        model,
        inputs[0] if len(inputs) == 1 else inputs,
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=fraction,
        ignored_layers=_outputs(model, inputs),
    )
    with torch.no_grad():
        pruner.step()
    # the pruner's dependency graph holds its traced forward (the unpruned weights and the
    # tensors the trace saved) in reference cycles that only the cyclic collector frees: for
    # ResNet-50 at 2 images, 260 MiB that a training step would otherwise carry
    del pruner
    gc.collect()
    return model


def _outputs(model: nn.Module, inputs: tuple[Any, ...]) -> list[nn.Module]:
    """The layers whose outputs are the model's outputs (classes, logits): found as the last
    linear or convolution layer to run."""
    ran: list[nn.Module] = []
    handles = [
        m.register_forward_hook(lambda mod, _a, _o: ran.append(mod))
        for m in model.modules()
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))
    ]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return ran[-1:]
