"""Fused kernels of a transformer block as the meta device counts them.

A GPU training stack does not run a block's element-wise work as PyTorch's eager operators do.
Two kernels matter for what simplan counts (simplan.counting), and both were added to Megatron-LM
together ("Various speed optimizations", commit 51a2e6b0ff, 2020-09-11) and described in
Narayanan et al., SC'21, section 4.2:

- **Causal scale-mask-softmax** (Megatron-LM's `scaled_upper_triang_masked_softmax`, rows of up
  to 2048 scores, 16-bit inputs): the mask is implicit, so the forward reads each row only up to
  the diagonal and writes the whole row (zeros above it); the backward reads the gradient and the
  probabilities up to the diagonal and writes the whole gradient row.
- **Dropout and residual add** (Megatron-LM's jit-fused bias-dropout-add; torch.compile fuses
  the same): one kernel reads the branch's output and the residual and writes the sum and the
  one-byte dropout mask; its backward is dropout's (the residual's gradient is the output's).

On a real device the block runs PyTorch's operators (the values are the same); on the meta
device these ops are called so that counting sees the fused kernels' traffic.
"""

from __future__ import annotations

from typing import Any

import torch

from simplan.counting import register_traffic

CAUSAL_SOFTMAX_MAX_SCORES = 2048  # the fused causal kernel's longest row (Megatron-LM's limit)
FUSED_SOFTMAX_DTYPES = (torch.float16, torch.bfloat16)


def fused_causal_softmax(scores: torch.Tensor) -> bool:
    """Whether Megatron-LM's fused causal kernel takes these (square, 16-bit, short) scores."""
    s = scores.shape[-1]
    return (
        scores.dtype in FUSED_SOFTMAX_DTYPES
        and scores.shape[-2] == s
        and s <= CAUSAL_SOFTMAX_MAX_SCORES
    )


def causal_mask(s: int, device: torch.device) -> torch.Tensor:
    """True above the diagonal. Built once per model by a training stack, so on the meta device
    it is an empty tensor (no kernel counted)."""
    if device.type == "meta":
        return torch.empty(s, s, dtype=torch.bool, device=device)
    return torch.ones(s, s, dtype=torch.bool, device=device).triu(1)


@torch.library.custom_op("simplan::causal_softmax", mutates_args=())
def causal_softmax(scores: torch.Tensor) -> torch.Tensor:
    """Soft-max of each row up to its diagonal, zeros above it (scores already scaled)."""
    mask = causal_mask(scores.shape[-1], scores.device)
    return torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)


@causal_softmax.register_fake
def _causal_softmax_fake(scores: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(scores)


@torch.library.custom_op("simplan::causal_softmax_backward", mutates_args=())
def causal_softmax_backward(grad: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    return torch._softmax_backward_data(grad, probs, -1, grad.dtype)


@causal_softmax_backward.register_fake
def _causal_softmax_backward_fake(grad: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(grad)


def _softmax_setup(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    ctx.save_for_backward(output)


def _softmax_backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
    (probs,) = ctx.saved_tensors
    return causal_softmax_backward(grad, probs)


causal_softmax.register_autograd(_softmax_backward, setup_context=_softmax_setup)


def _triangle_share(t: torch.Tensor) -> float:
    """Share of a square score matrix on or below the diagonal: (s + 1) / 2s."""
    s = t.shape[-1]
    return (s + 1) / (2 * s)


def _softmax_traffic(args: tuple[Any, ...], out: Any) -> float:
    (scores,) = args
    return scores.nbytes * _triangle_share(scores) + out.nbytes


def _softmax_backward_traffic(args: tuple[Any, ...], out: Any) -> float:
    grad, probs = args
    return (grad.nbytes + probs.nbytes) * _triangle_share(grad) + out.nbytes


register_traffic("simplan.causal_softmax.default", _softmax_traffic)
register_traffic("simplan.causal_softmax_backward.default", _softmax_backward_traffic)


@torch.library.custom_op("simplan::dropout_add", mutates_args=())
def dropout_add(
    x: torch.Tensor, residual: torch.Tensor, p: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """residual + dropout(x, p), and the dropout's keep-mask."""
    out, mask = torch.native_dropout(x, p, True)
    return residual + out, mask


@dropout_add.register_fake
def _dropout_add_fake(
    x: torch.Tensor, residual: torch.Tensor, p: float
) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.empty_like(x), torch.empty_like(x, dtype=torch.bool)


def _dropout_add_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    ctx.p = inputs[2]
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(output[1])


def _dropout_add_backward(ctx: Any, grad: torch.Tensor, _mask_grad: Any) -> tuple[Any, ...]:
    (mask,) = ctx.saved_tensors
    scale = 1.0 / (1.0 - ctx.p)
    return torch.ops.aten.native_dropout_backward(grad, mask, scale), grad, None


dropout_add.register_autograd(_dropout_add_backward, setup_context=_dropout_add_setup)
