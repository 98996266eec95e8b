"""A decoder-only transformer LM (GPT-3 or Llama 3 style) built from a TransformerSpec.

Layers for simplan are the top-level pieces: `embed`, each entry of `blocks`, and `head`.
Attention uses scaled_dot_product_attention (causal); GQA through `enable_gqa`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from simplan.nets import fused
from simplan.transformer_shape import TransformerSpec


def _norm(spec: TransformerSpec) -> nn.Module:
    if spec.norm_kind == "rmsnorm":
        return nn.RMSNorm(spec.hidden_size)
    return nn.LayerNorm(spec.hidden_size)


def _rotate(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding on (batch, heads, seq, head_dim)."""
    seq, dim = x.shape[-2], x.shape[-1]
    inv = 1.0 / (base ** (torch.arange(0, dim, 2, device=x.device, dtype=torch.float32) / dim))
    angles = torch.outer(torch.arange(seq, device=x.device, dtype=torch.float32), inv)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class Embedding(nn.Module):
    simplan_kind = "embedding"

    def __init__(self, spec: TransformerSpec) -> None:
        super().__init__()
        self.tokens = nn.Embedding(spec.vocab_size, spec.hidden_size)
        self.positions = (
            nn.Embedding(spec.seq_len, spec.hidden_size)
            if spec.position_kind == "learned"
            else None
        )
        self.simplan_attrs = {"vocab_size": spec.vocab_size, "hidden_size": spec.hidden_size}

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tokens(ids)
        if self.positions is not None:
            x = x + self.positions(torch.arange(ids.shape[-1], device=ids.device))
        return x


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Fused causal attention, as GPUs and torch's CPU kernel run it.

    On the meta device scaled_dot_product_attention would take the unfused math path (an s x s
    score matrix written to memory and saved for backward), which no real device runs; there the
    flash-attention op is called directly so that counting sees the fused kernel's FLOPs and the
    tensors it saves (q, k, v, output, log-sum-exp).
    """
    gqa = k.shape[1] != q.shape[1]
    if q.device.type != "meta":
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    if gqa:
        repeat = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
    return torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, True)[0]


def math_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float, training: bool
) -> torch.Tensor:
    """Unfused causal attention, as Megatron-LM ran before fused attention kernels: the s x s
    scores are written to memory by one matmul, scaled, masked and soft-maxed by one fused kernel,
    dropped out, and read back by a second matmul. On the meta device the fused kernel is
    counted as Megatron-LM's causal one (simplan.nets.fused: it reads each row only up to the
    diagonal) where that kernel applies (16-bit scores, rows up to 2048); elsewhere Megatron-LM
    falls back to PyTorch's scale, mask and softmax, three kernels, counted as such."""
    if k.shape[1] != q.shape[1]:
        repeat = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
    scores = torch.matmul(q, k.transpose(-2, -1))
    if q.device.type == "meta" and fused.fused_causal_softmax(scores):
        probs = fused.causal_softmax(scores)
    else:
        s = q.shape[-2]
        mask = fused.causal_mask(s, q.device)
        scores = (scores * q.shape[-1] ** -0.5).masked_fill(mask, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
    probs = dropout_(probs, dropout, training)
    return torch.matmul(probs, v)


def dropout_(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout as GPUs run it: one fused kernel that reads x and writes the output and a one-byte
    mask. On the meta device F.dropout would take the composite path (a full-size random tensor,
    a division and a multiplication: nearly three times the traffic), so the fused op is called
    directly, as for attention."""
    if not training or p == 0.0:
        return x
    if x.device.type != "meta":
        return F.dropout(x, p, training)
    return torch.native_dropout(x, p, True)[0]


class Dropout(nn.Module):
    """nn.Dropout counted as the fused kernel (see dropout_)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout_(x, self.p, self.training)


class Attention(nn.Module):
    def __init__(self, spec: TransformerSpec) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = spec.num_heads, spec.kv_heads, spec.head_dim
        qkv = (spec.num_heads + 2 * spec.kv_heads) * spec.head_dim
        self.qkv = nn.Linear(spec.hidden_size, qkv, bias=spec.use_bias)
        self.proj = nn.Linear(spec.attention_width, spec.hidden_size, bias=spec.use_bias)
        self.rope = spec.position_kind == "rope"
        self.math, self.dropout = spec.attention == "math", spec.dropout
        # selective activation recomputation: the attention core (scores, softmax, weighted
        # sum) keeps no activations for backward and runs again there (Megatron-LM's selective)
        self.recompute_core = False

    def core(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.math:
            return math_attention(q, k, v, self.dropout, self.training)
        return causal_attention(q, k, v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q, k, v = self.qkv(x).split(
            [
                self.heads * self.head_dim,
                self.kv_heads * self.head_dim,
                self.kv_heads * self.head_dim,
            ],
            dim=-1,
        )
        q = q.view(b, s, self.heads, self.head_dim).transpose(1, 2)
        k = k.view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        if self.rope:
            q, k = _rotate(q), _rotate(k)
        if self.recompute_core and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            # early_stop=False: recompute the whole core, as tensor-parallel DTensors need
            y = checkpoint(self.core, q, k, v, use_reentrant=False, early_stop=False)
        else:
            y = self.core(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, s, -1))


def _activate(h: torch.Tensor, swiglu: bool) -> torch.Tensor:
    if swiglu:
        gate, up = h.chunk(2, dim=-1)
        return F.silu(gate) * up
    return F.gelu(h)


class MLP(nn.Module):
    def __init__(self, spec: TransformerSpec, ffn: int = 0) -> None:
        super().__init__()
        self.swiglu = spec.activation == "swiglu"
        ffn = ffn or spec.ffn
        width = 2 * ffn if self.swiglu else ffn
        self.up = nn.Linear(spec.hidden_size, width, bias=spec.use_bias)
        self.down = nn.Linear(ffn, spec.hidden_size, bias=spec.use_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(_activate(self.up(x), self.swiglu))


class Experts(nn.Module):
    """The routed experts of an MoE block: one weight per projection for all experts, as a
    grouped GEMM holds them (no biases, as in Mixtral, DeepSeek-V3 and Llama 4)."""

    def __init__(self, spec: TransformerSpec) -> None:
        super().__init__()
        e, h, f = spec.num_experts, spec.hidden_size, spec.moe_ffn
        self.swiglu = spec.activation == "swiglu"
        self.up = nn.Parameter(torch.randn(e, h, 2 * f if self.swiglu else f) * 0.02)
        self.down = nn.Parameter(torch.randn(e, f, h) * 0.02)

    def forward(self, x: torch.Tensor, counts: list[int] | None) -> torch.Tensor:
        """x: the dispatched tokens, expert by expert. counts: tokens per expert; None means
        as many for each (a batched GEMM over experts)."""
        if counts is None:
            grouped = x.view(self.up.shape[0], -1, x.shape[-1])
            y = torch.bmm(_activate(torch.bmm(grouped, self.up), self.swiglu), self.down)
            return y.reshape(x.shape)
        parts = x.split(counts)
        outs = [
            _activate(part @ self.up[e], self.swiglu) @ self.down[e] for e, part in enumerate(parts)
        ]
        return torch.cat(outs)


class MoE(nn.Module):
    """A mixture-of-experts MLP: a linear router scores the experts, each token goes to its
    top-k (weights: the soft-maxed scores of the chosen, renormalised), and shared experts see
    every token. On a real device tokens are routed by their scores (dropless); on the meta
    device, where scores have no values, every expert takes ceil(tokens * k / experts) tokens,
    the balanced load that counting assumes (imbalance is applied by the cost model)."""

    def __init__(self, spec: TransformerSpec) -> None:
        super().__init__()
        self.k, self.num_experts = spec.moe_top_k, spec.num_experts
        self.router = nn.Linear(spec.hidden_size, spec.num_experts, bias=False)
        self.experts = Experts(spec)
        shared = spec.moe_shared_experts * spec.moe_ffn
        self.shared = MLP(spec, shared) if shared else None

    def _slots(self, chosen: torch.Tensor) -> tuple[torch.Tensor, list[int] | None]:
        """Which (token, choice) each expert slot holds, expert by expert, and the counts."""
        if chosen.device.type == "meta":
            per = -(-chosen.numel() // self.num_experts)
            slots = torch.zeros(per * self.num_experts, dtype=torch.long, device=chosen.device)
            return slots, None
        flat = chosen.flatten()
        counts = torch.bincount(flat, minlength=self.num_experts).tolist()
        return flat.argsort(stable=True), counts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        scores = self.router(flat).float().softmax(dim=-1)
        top, chosen = scores.topk(self.k, dim=-1)
        weights = (top / top.sum(dim=-1, keepdim=True)).to(x.dtype).flatten()
        slots, counts = self._slots(chosen)
        tokens = slots // self.k
        routed = self.experts(flat.index_select(0, tokens), counts)
        routed = routed * weights.index_select(0, slots).unsqueeze(-1)
        out = flat.new_zeros(flat.shape).index_add(0, tokens, routed)
        if self.shared is not None:
            out = out + self.shared(flat)
        return out.view(x.shape)


class Block(nn.Module):
    simplan_kind = "transformer_block"

    def __init__(self, spec: TransformerSpec, index: int = 0) -> None:
        super().__init__()
        moe = spec.is_moe_block(index)
        self.norm1, self.attn = _norm(spec), Attention(spec)
        self.norm2, self.mlp = _norm(spec), MoE(spec) if moe else MLP(spec)
        self.drop = Dropout(spec.dropout) if spec.dropout else nn.Identity()
        self.simplan_attrs = spec.block_attrs(index)
        if isinstance(self.mlp, MoE):
            self.simplan_attrs["expert_params"] = sum(
                p.numel() for p in self.mlp.experts.parameters()
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._residual(x, self.attn(self.norm1(x)))
        return self._residual(x, self.mlp(self.norm2(x)))

    def _residual(self, x: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        """x + dropout(branch). On the meta device, with dropout, the one fused kernel a
        training stack runs for it (simplan.nets.fused)."""
        p = self.drop.p if isinstance(self.drop, Dropout) else 0.0
        if p and self.training and x.device.type == "meta":
            return fused.dropout_add(branch, x, p)[0]
        return x + self.drop(branch)


class Head(nn.Module):
    simplan_kind = "lm_head"

    def __init__(self, spec: TransformerSpec) -> None:
        super().__init__()
        self.norm = _norm(spec)
        self.out = nn.Linear(spec.hidden_size, spec.vocab_size, bias=False)
        self.simplan_attrs = {
            "vocab_size": spec.vocab_size,
            "hidden_size": spec.hidden_size,
            "tied_to": "embed" if spec.tie_embeddings else "",
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(x))


class TransformerLM(nn.Module):
    def __init__(self, spec: TransformerSpec) -> None:
        super().__init__()
        self.spec = spec
        self.embed = Embedding(spec)
        self.blocks = nn.ModuleList(Block(spec, i) for i in range(spec.num_layers))
        self.head = Head(spec)
        if spec.tie_embeddings:
            self.head.out.weight = self.embed.tokens.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def build(
    spec: TransformerSpec,
    *,
    batch: int = 1,
    seq_len: int | None = None,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """The module and an example input (token ids) of shape (batch, seq_len)."""
    seq = seq_len or spec.seq_len
    with torch.device(device):
        model = TransformerLM(spec if seq <= spec.seq_len else _longer(spec, seq))
        ids = (
            torch.randint(0, spec.vocab_size, (batch, seq))
            if str(device) != "meta"
            else torch.empty((batch, seq), dtype=torch.long)
        )
    return model, (ids,)


def _longer(spec: TransformerSpec, seq: int) -> TransformerSpec:
    import dataclasses

    return dataclasses.replace(spec, seq_len=seq)
