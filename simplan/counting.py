"""Count each layer's FLOPs and bytes with torch, on the meta device (no memory needed).

For every distinct layer (same structure, same input shapes) the layer runs alone, forward then
backward, under torch.utils.flop_counter.FlopCounterMode (the FLOP count), a dispatch recorder
(the roofline inputs: matrix operations and bytes moved by the others) and saved-tensor hooks
(activation bytes kept for backward). Attention is counted by flop_counter's formula for
scaled_dot_product_attention: the full s x s score matrix, no discount for the causal mask (as
Megatron-LM's 24bsh^2 + 4bs^2h per layer does), so a causal model's FLOPs are those of its kernels
without masking-aware skipping.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from simplan.model_graph import OpCost
from simplan.module_layers import LayerCall, tensors_in
from simplan.op_policy import OpPolicy

FREE_OPS = {
    "detach",
    "empty",
    "empty_like",
    "zeros_like",
    "ones_like",
    "lift_fresh",
    "alias",
    "_unsafe_view",  # matmul's reshape of its own output: an alias, no kernel
    "full",
    "arange",
    "new_empty",
    "new_zeros",
    "new_ones",
    "zeros",
    "ones",
    "fill_",
    "zero_",
}


SHAPED = {"mm", "addmm", "bmm", "baddbmm"}
# Operations whose kernel moves other bytes than its operands' sizes (a fused kernel that reads
# part of an input, see simplan.nets.fused): the op's name -> bytes(args, outputs)
Traffic = Callable[[tuple[Any, ...], Any], float]
OP_TRAFFIC: dict[str, Traffic] = {}


def register_traffic(name: str, traffic: Traffic) -> None:
    """Count `name` (as str(op): 'namespace.op.overload') by `traffic` instead of the sizes of
    its operands and results."""
    OP_TRAFFIC[name] = traffic


MmKey = tuple[int, int, int, int, int]  # g, m, n, k, batch axis


def _is_param(t: torch.Tensor, params: set[int]) -> bool:
    return id(t) in params or (t._base is not None and id(t._base) in params)


def mm_shape(
    name: str,
    args: tuple[Any, ...],
    out: torch.Tensor,
    params: set[int],
    weight_shapes: set[tuple[int, ...]],
) -> MmKey:
    """(g, m, n, k, batch axis) of a matrix multiplication. The axis that grows with the batch
    (the tokens): g for batched products (heads x samples); for a plain product, m when an
    operand is a weight (forward, input gradient), k when the product is a weight's gradient
    (its shape is a parameter's: the tokens are reduced), else m. A grouped product over a
    stacked weight (an MoE block's experts: one bmm over g experts) is a weight's product: its
    groups are fixed and its tokens grow along m, or along k for the weight's gradient."""
    a, b = (args[1], args[2]) if name in ("addmm", "baddbmm") else (args[0], args[1])
    weight = _is_param(a, params) or _is_param(b, params)
    if name in ("bmm", "baddbmm"):
        g, m, n, k = a.shape[0], a.shape[1], b.shape[2], a.shape[2]
        if weight or tuple(b.shape) in weight_shapes:  # the backward's saved weight: by shape
            return (g, m, n, k, 1)
        return (g, m, n, k, 3 if tuple(out.shape) in weight_shapes else 0)
    m, k, n = a.shape[0], a.shape[1], b.shape[1]
    if weight:
        return (1, m, n, k, 1)
    return (1, m, n, k, 3 if tuple(out.shape) in weight_shapes else 1)


class OpRecorder(TorchDispatchMode):
    """Records matrix-operation FLOPs (with their shapes where known) and memory traffic of the
    other operations. `params` are the layer's parameters, which tell a weight's gradient from
    other products."""

    def __init__(self, params: Sequence[torch.Tensor] | None = None) -> None:
        super().__init__()
        self.gemms: Counter[tuple[float, float]] = Counter()
        self.shapes: Counter[MmKey] = Counter()
        self.mem_bytes = 0.0
        self.mem_ops = 0
        self.params = {id(p) for p in params or []}
        shapes = {tuple(p.shape) for p in params or [] if p.dim() in (2, 3)}
        # and transposed (a stacked weight's matrices: its last two dimensions)
        self.weight_shapes = shapes | {(*s[:-2], s[-1], s[-2]) for s in shapes}

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        if packet.__name__ in SHAPED and isinstance(out, torch.Tensor):
            self.shapes[mm_shape(packet.__name__, args, out, self.params, self.weight_shapes)] += 1
        elif packet in flop_registry:
            flops = flop_registry[packet](*args, **kwargs, out_val=out)
            moved = sum(t.nbytes for t in tensors_in((args, kwargs, out)))
            self.gemms[(float(flops), float(moved))] += 1
        elif (traffic := OP_TRAFFIC.get(str(func))) is not None:
            self.mem_bytes += traffic(args, out)
            self.mem_ops += 1
        elif not func.is_view and packet.__name__ not in FREE_OPS:
            moved = sum(t.nbytes for t in tensors_in((args, kwargs, out)))
            if moved:
                self.mem_bytes += moved
                self.mem_ops += 1
        return out

    def cost(self, per: int) -> OpCost:
        gemms = tuple(
            sorted(((f / per, b / per, n) for (f, b), n in self.gemms.items()), reverse=True)
        )
        return OpCost(
            gemms=gemms,
            mem_bytes=self.mem_bytes / per,
            mem_ops=self.mem_ops,
            mm_shapes=tuple(sorted((*_per_sample(key, per), n) for key, n in self.shapes.items())),
        )


def _per_sample(key: MmKey, per: int) -> tuple[float, float, float, float, int]:
    dims = [float(d) for d in key[:4]]
    dims[key[4]] /= per
    return (dims[0], dims[1], dims[2], dims[3], key[4])


class PolicyRecorder(OpRecorder):
    """Per-op selective checkpointing of one layer's forward (simplan.op_policy): the bytes of
    the outputs the policy saves, and the costs of the ops it leaves to run again."""

    def __init__(self) -> None:
        super().__init__()
        self.policy = OpPolicy()
        self.saved_bytes = 0.0

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        if not self.policy.saves(str(func)):
            return super().__torch_dispatch__(func, types, args, kwargs)
        out = func(*args, **(kwargs or {}))
        self.saved_bytes += sum(t.nbytes for t in tensors_in(out))
        return out


class SavedBytes:
    """Sums the bytes autograd saves for backward, excluding parameters and counting each
    storage once; `part_of` tells how many of them are given tensors (the layer's input or
    output, which a neighbouring layer may save too)."""

    def __init__(self, params: set[int]) -> None:
        self.params = params
        self.seen: dict[int, torch.Tensor] = {}

    def part_of(self, tensors: list[torch.Tensor]) -> int:
        ids = {id(t) for t in tensors} | {id(t._base) for t in tensors if t._base is not None}
        return sum(t.nbytes for key, t in self.seen.items() if key in ids)

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        base = t._base if t._base is not None else t
        if id(base) not in self.params and id(t) not in self.params:
            self.seen.setdefault(id(base), base)
        return t

    @property
    def total(self) -> int:
        return sum(t.nbytes for t in self.seen.values())


@dataclass(frozen=True)
class LayerCount:
    fwd_flops: float
    bwd_flops: float
    activation_bytes: float
    output_bytes: float
    input_bytes: float
    fwd_ops: OpCost
    bwd_ops: OpCost
    saved_input_bytes: float = 0.0  # of activation_bytes: the layer's input
    saved_output_bytes: float = 0.0  # of activation_bytes: the layer's output
    op_saved_bytes: float = 0.0  # per-op selective checkpointing: the saved ops' outputs
    op_recompute_ops: OpCost = field(default_factory=OpCost)  # and the ops it runs again


def identity_key(call: LayerCall) -> str:
    """Layers with the same structure, parameter shapes and input shapes share one key."""
    module = call.module
    parts = [type(module).__qualname__, repr(module)]
    parts += [f"{n}:{tuple(p.shape)}:{p.dtype}" for n, p in module.named_parameters()]
    parts += [f"{tuple(t.shape)}:{t.dtype}" for t in tensors_in((call.args, call.kwargs))]
    parts.append(f"input_grad:{bool(call.inputs_from)}")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def grad_inputs(value: Any, requires_grad: bool = True) -> Any:
    """A copy of captured inputs; floating-point tensors become leaves that require grad unless
    the layer reads the model's own input (whose gradient nobody computes)."""
    if isinstance(value, torch.Tensor):
        leaf = value.detach().clone()
        return leaf.requires_grad_(requires_grad and leaf.is_floating_point())
    if isinstance(value, tuple):
        return tuple(grad_inputs(v, requires_grad) for v in value)
    if isinstance(value, list):
        return [grad_inputs(v, requires_grad) for v in value]
    if isinstance(value, dict):
        return {k: grad_inputs(v, requires_grad) for k, v in value.items()}
    return value


def run_backward(outputs: list[torch.Tensor]) -> None:
    grads = [t for t in outputs if t.requires_grad]
    if grads:
        torch.autograd.backward(grads, [torch.ones_like(t) for t in grads])


def loss_of(outputs: list[torch.Tensor]) -> torch.Tensor | None:
    """The training loss on a model output, as Megatron-LM and mixed-precision autocast compute
    it: cross-entropy over the output's last dimension in fp32 (the logits are up-cast). None
    for an output that holds no class scores."""
    logits = next((t for t in outputs if t.is_floating_point() and t.requires_grad), None)
    if logits is None or logits.dim() < 2 or logits.shape[-1] < 2:
        return None
    flat = logits.float().reshape(-1, logits.shape[-1])
    targets = torch.zeros(flat.shape[0], dtype=torch.long, device=flat.device)
    return torch.nn.functional.cross_entropy(flat, targets)


def count_layer(call: LayerCall, batch: int, is_output: bool = False) -> LayerCount:
    """Count one layer alone (its module and captured inputs should be on the meta device).
    An output layer (one no other layer reads) also carries its loss: the loss's forward is
    counted with the layer's forward, its backward with the layer's backward, and what it saves
    with the layer's activations."""
    module = call.module
    params = {id(p) for p in module.parameters()}
    needs = bool(call.inputs_from)
    args, kwargs = grad_inputs(call.args, needs), grad_inputs(call.kwargs, needs)
    saved = SavedBytes(params)
    weights = list(module.parameters())
    fwd_rec, bwd_rec = OpRecorder(weights), OpRecorder(weights)
    # per-op checkpointing applies to transformer blocks only: other layers skip its recorder
    blocks = getattr(module, "simplan_kind", "") == "transformer_block"
    policy_rec = PolicyRecorder()
    with (
        torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t),
        FlopCounterMode(display=False) as fwd_counter,
        fwd_rec,
        policy_rec if blocks else contextlib.nullcontext(),
    ):
        outputs = tensors_in(module(*args, **kwargs))
        loss = loss_of(outputs) if is_output else None
    saved_in = saved.part_of(tensors_in((args, kwargs)))
    saved_out = saved.part_of(outputs)
    with FlopCounterMode(display=False) as bwd_counter, bwd_rec:
        run_backward([loss] if loss is not None else outputs)
    module.zero_grad(set_to_none=True)
    return LayerCount(
        fwd_flops=fwd_counter.get_total_flops() / batch,
        bwd_flops=bwd_counter.get_total_flops() / batch,
        activation_bytes=saved.total / batch,
        output_bytes=sum(t.nbytes for t in outputs) / batch,
        input_bytes=sum(t.nbytes for t in tensors_in((call.args, call.kwargs))) / batch,
        fwd_ops=fwd_rec.cost(batch),
        bwd_ops=bwd_rec.cost(batch),
        saved_input_bytes=saved_in / batch,
        saved_output_bytes=saved_out / batch,
        op_saved_bytes=policy_rec.saved_bytes / batch,
        op_recompute_ops=policy_rec.cost(batch),
    )


def own_parameters(calls: list[LayerCall]) -> dict[str, list[nn.Parameter]]:
    """Each layer's parameters; a parameter shared by two layers (tied embeddings) belongs to
    the first."""
    owned: dict[str, list[nn.Parameter]] = {}
    taken: set[int] = set()
    for call in calls:
        mine = [p for p in call.module.parameters() if id(p) not in taken]
        taken.update(id(p) for p in mine)
        owned[call.name] = mine
    return owned
