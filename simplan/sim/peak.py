"""A rank's peak memory: the largest of the step's moments, not the sum of every part's largest.

What is live changes through a training step. Parameters, optimizer state, the data and the
framework's buffers are live throughout (`Static`). The rest depends on the moment:

- during the backward of the last micro-batch, at layer i (from the last layer down): the
  activations still saved (every layer up to i, plus the other micro-batches the schedule keeps
  in flight), layer i's recomputed activations (recomputation), the gradient arriving at its
  output and the one it produces for its input, its parameters' gradient, the gradients of the
  layers already done (all of them when the step accumulates over several micro-batches: the
  first micro-batch created them) and, under FSDP, layer i's gathered parameters, the next
  unit's prefetched ones and layer i's unsharded gradient before its reduce-scatter. The output
  layer's loss adds a second output-sized gradient (cross-entropy's backward holds the gradient
  of its log-probabilities while it makes the logits' one).
- at the optimizer step: every gradient.

The peak is the largest moment (`peak_moment`); its parts say what is live then. Checked
against the tensor memory measured on CPU ranks (simplan.runtime.memory, simplan.validate_memory).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

PARTS = ("weights", "grads", "optimizer", "activations", "buffers")


@dataclass(frozen=True, kw_only=True)
class Static:
    """Live for the whole step on one rank (bytes)."""

    weights: float
    optimizer: float
    buffers: float  # data, DDP buckets, pipeline receive buffers


@dataclass(frozen=True, kw_only=True)
class SweepLayer:
    """One layer of a rank's chunk as the backward reaches it, for one micro-batch (bytes)."""

    activation_bytes: float  # saved for backward
    rematerialized_bytes: float = 0.0  # recomputed for its backward (recomputation)
    grad_out_bytes: float = 0.0  # the gradient arriving at its output
    grad_in_bytes: float = 0.0  # the gradient of its input (0 for the model's first layer)
    loss_bytes: float = 0.0  # the loss's second output-sized gradient (output layer only)
    param_grad_bytes: float = 0.0  # its parameters' gradient as kept (sharded by ZeRO >= 2)
    gathered_bytes: float = 0.0  # FSDP: its parameters all-gathered
    unsharded_grad_bytes: float = 0.0  # FSDP: its gradient before the reduce-scatter


@dataclass(frozen=True, kw_only=True)
class Moment:
    name: str
    parts: dict[str, float]

    @property
    def total(self) -> float:
        return sum(self.parts.values())


def _moment(name: str, static: Static, grads: float, activations: float, extra: float) -> Moment:
    parts = {
        "weights": static.weights,
        "grads": grads,
        "optimizer": static.optimizer,
        "activations": activations,
        "buffers": static.buffers + extra,
    }
    return Moment(name=name, parts=parts)


def backward_moments(
    layers: Sequence[SweepLayer],
    static: Static,
    *,
    held_bytes: float,
    accumulated_grad_bytes: float,
    label: str = "backward",
) -> list[Moment]:
    """One moment per layer of the backward of one micro-batch over `layers` (in forward order),
    with `held_bytes` of other micro-batches' activations in flight. accumulated_grad_bytes: the
    gradients already live from earlier micro-batches of the step (0 for the first one; then
    each layer's gradient appears as the backward passes it)."""
    moments = []
    saved = held_bytes + sum(layer.activation_bytes for layer in layers)
    done = 0.0  # gradients of the layers the backward has passed
    for i in range(len(layers) - 1, -1, -1):
        layer = layers[i]
        own = layer.param_grad_bytes if not accumulated_grad_bytes else 0.0
        grads = accumulated_grad_bytes or done
        below = next((x.gathered_bytes for x in reversed(layers[:i]) if x.gathered_bytes), 0.0)
        fsdp = layer.gathered_bytes + below + layer.unsharded_grad_bytes
        if layer.loss_bytes > layer.grad_in_bytes + own + fsdp:  # the loss's gradients,
            produce, fsdp = layer.loss_bytes, 0.0  # before the layer's own backward starts
        else:
            grads, produce = grads + own, layer.grad_in_bytes
        transient = layer.rematerialized_bytes + layer.grad_out_bytes + produce
        moments.append(_moment(f"{label} layer {i}", static, grads, saved + transient, fsdp))
        saved -= layer.activation_bytes
        done += layer.param_grad_bytes
    return moments


def optimizer_moment(static: Static, grad_bytes: float) -> Moment:
    """The optimizer step: every gradient, no activations."""
    return _moment("optimizer step", static, grad_bytes, 0.0, 0.0)


def peak_moment(moments: Sequence[Moment]) -> Moment:
    """The largest moment (the first of equal ones)."""
    if not moments:
        raise ValueError("peak_moment needs at least one moment")
    return max(moments, key=lambda m: m.total)
