"""FLOP and byte counting against closed forms a person can check by hand."""

from __future__ import annotations

import pytest
import torch

from simplan.build import graph_from_spec
from simplan.sources import load_model
from simplan.transformer_shape import TransformerSpec
from tests.sim.test_experts import moe_graph


def test_mlp_forward_flops_are_exact() -> None:
    graph = load_model("mlp")
    assert graph.fwd_flops == 2 * (784 * 128 + 128 * 10)
    # backward: weight gradients of both linears, input gradient of fc2 only (fc1 reads the
    # model's input, whose gradient nobody computes)
    assert graph.bwd_flops == 2 * 784 * 128 + 2 * (2 * 128 * 10)
    assert [layer.name for layer in graph.layers] == ["fc1", "relu", "fc2"]
    assert graph.params == 784 * 128 + 128 + 128 * 10 + 10


@pytest.mark.parametrize("name,h", [("gpt3-125m", 768), ("gpt3-1.3b", 2048)])
def test_gpt_block_forward_flops_match_closed_form(name: str, h: int) -> None:
    graph = load_model(name, seq_len=1024)
    s = 1024
    block = graph.layer("blocks.0")
    closed = 24 * s * h * h + 4 * s * s * h  # per sample (b = 1); full s^2 attention
    assert abs(block.fwd_flops - closed) / closed < 0.01
    # backward of the matmuls is twice the forward; flash attention's backward recomputes
    # the score matrix, adding one more s^2 product (5 instead of 4 attention matmuls)
    assert block.bwd_flops == pytest.approx(2 * 24 * s * h * h + 10 * s * s * h, rel=0.01)


def test_gpt_parameter_count_closed_form() -> None:
    g = load_model("gpt3-125m")
    h, v, s, n = 768, 51200, 2048, 12
    expected = v * h + s * h + n * (12 * h * h + 13 * h) + 2 * h  # tied output embedding
    assert g.params == expected


def test_llama_gqa_swiglu_parameters() -> None:
    g = load_model("llama3-8b", seq_len=128)
    h, kv_dim, ffn = 4096, 8 * 128, 14336
    block = g.layer("blocks.0")
    assert block.params == h * (h + 2 * kv_dim) + h * h + 3 * h * ffn + 2 * h
    assert g.params == pytest.approx(8.03e9, rel=0.002)


def test_identical_layers_share_identity() -> None:
    g = load_model("gpt3-350m", seq_len=256)
    keys = {layer.identity for layer in g.layers if layer.kind == "transformer_block"}
    assert len(keys) == 1
    assert len({layer.identity for layer in g.layers}) == 3


def test_multitask_model_is_a_dag_with_two_heads() -> None:
    g = load_model("mtl-vision")
    assert not g.is_chain
    trunk_end = "trunk.12"
    assert sorted(g.successors(trunk_end)) == ["cls_head", "det_neck"]
    assert sorted(g.successors("det_neck")) == ["det_box", "det_cls"]
    assert g.cut_bytes(g.layers.index(g.layer(trunk_end))) == g.layer(trunk_end).output_bytes


def test_resnet50_shape() -> None:
    g = load_model("resnet50")
    assert g.params == 25_557_032  # the ResNet-50 parameter count
    assert len(g.layers) == 18
    # about 4.1 GMACs per 224x224 image, i.e. 8.2 GFLOP
    assert g.fwd_flops == pytest.approx(8.2e9, rel=0.02)


def test_activation_bytes_scale_with_dtype() -> None:
    a = load_model("gpt3-125m", seq_len=256, dtype="fp32").layer("blocks.0")
    b = load_model("gpt3-125m", seq_len=256, dtype="bf16").layer("blocks.0")
    assert b.activation_bytes == pytest.approx(a.activation_bytes / 2, rel=0.01)
    assert b.param_bytes * 2 == a.param_bytes


def _tiny_spec(**kw: object) -> TransformerSpec:
    base = dict(name="t", hidden_size=64, num_layers=2, num_heads=4, seq_len=128, vocab_size=1000)
    return TransformerSpec(**{**base, **kw})  # type: ignore[arg-type]


def test_output_layer_carries_the_fp32_loss() -> None:
    """The head's forward streams at least the fp32 up-cast of the logits (read 2 bytes, write 4
    per logit) beyond its matmul, and saves the fp32 log-probabilities for backward; no other
    layer gains anything."""
    s, v = 128, 1000
    head = graph_from_spec(_tiny_spec(), dtype="bf16").layer("head")
    logits = s * v
    assert head.fwd_ops.mem_bytes >= logits * (2 + 4) + logits * (4 + 4)  # up-cast, log-softmax
    assert head.activation_bytes >= logits * 4
    block = graph_from_spec(_tiny_spec(), dtype="bf16").layer("blocks.1")
    assert block.fwd_ops.mem_bytes < logits * 6


def test_dropout_counts_as_the_fused_kernel() -> None:
    """Attention dropout on the s x s probabilities reads them and writes the output (bf16) and
    a one-byte mask: 5 bytes per score, where torch's composite path on meta would count 14.
    The two hidden dropouts are fused with their residual adds (simplan.nets.fused): the add's
    kernel (read 2 x 2 bytes, write 2) also writes the one-byte mask, 1 byte more per element
    and no kernel more."""
    s, heads = 128, 4
    scores = heads * s * s
    plain = graph_from_spec(_tiny_spec(attention="math"), dtype="bf16").layer("blocks.0")
    dropped = graph_from_spec(_tiny_spec(attention="math", dropout=0.1), dtype="bf16")
    block = dropped.layer("blocks.0")
    hidden = s * 64
    extra = block.fwd_ops.mem_bytes - plain.fwd_ops.mem_bytes
    assert extra == pytest.approx(5 * scores + 2 * 1 * hidden)
    assert block.fwd_ops.mem_ops - plain.fwd_ops.mem_ops == 1
    # backward: each dropout reads the gradient (2) and the mask (1) and writes the gradient (2)
    extra_bwd = block.bwd_ops.mem_bytes - plain.bwd_ops.mem_bytes
    assert extra_bwd == pytest.approx(5 * scores + 2 * 5 * hidden)


def test_unfused_attention_counts_the_kernels_a_gpu_runs() -> None:
    """A math-attention block's forward (bf16, s 128, h 64, 4 heads) runs seven memory-bound
    kernels: two LayerNorms, the fused causal softmax, the copy that makes the heads' outputs
    contiguous, GELU and two residual adds. matmul's reshape of its own output
    (aten._unsafe_view) aliases it and runs no kernel."""
    block = graph_from_spec(_tiny_spec(attention="math"), dtype="bf16").layer("blocks.0")
    assert block.fwd_ops.mem_ops == 7


def test_causal_softmax_reads_the_triangle_it_uses() -> None:
    """Megatron-LM's fused causal softmax (16-bit scores, rows up to 2048) reads each row up to
    the diagonal and writes it whole: forward (s + 1) / 2s of the scores read plus the
    probabilities written; backward the gradient and the probabilities read on the triangle and
    the gradient written. Over a whole s x s matrix per head, bf16: s(s+1) + 2 s^2 bytes forward,
    2 s(s+1) + 2 s^2 backward. In fp32, or for rows over 2048, PyTorch's scale, mask and softmax
    run: three kernels reading and writing every score."""
    s, heads = 128, 4
    flash = graph_from_spec(_tiny_spec(), dtype="bf16").layer("blocks.0")
    math = graph_from_spec(_tiny_spec(attention="math"), dtype="bf16").layer("blocks.0")
    # the math block's kernels beyond the flash block's (whose attention kernel is a matrix op,
    # not a memory one): the softmax and the copy of the heads' outputs
    copy = 2 * 2 * s * 64  # read and write (s, h) in bf16
    softmax = heads * (s * (s + 1) + 2 * s * s)
    extra = math.fwd_ops.mem_bytes - flash.fwd_ops.mem_bytes
    assert extra == pytest.approx(softmax + copy)
    fp32 = graph_from_spec(_tiny_spec(attention="math"), dtype="fp32").layer("blocks.0")
    assert fp32.fwd_ops.mem_ops == math.fwd_ops.mem_ops + 2  # scale and mask on their own
    long = graph_from_spec(_tiny_spec(attention="math", seq_len=4096), dtype="bf16")
    assert long.layer("blocks.0").fwd_ops.mem_ops == math.fwd_ops.mem_ops + 2


def test_fused_ops_compute_what_the_unfused_ones_do() -> None:
    """The fused ops' values and gradients are PyTorch's: the causal softmax is the masked
    softmax, dropout_add at p = 0.5 keeps or zeroes each element of the branch (kept ones
    doubled) and passes the gradient to the residual unchanged."""
    from simplan.nets import fused

    torch.manual_seed(0)
    scores = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(5, 5, dtype=torch.bool).triu(1)
    expected = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)
    got = fused.causal_softmax(scores)
    assert torch.allclose(got, expected)
    weights = torch.randn_like(got)
    (g_fused,) = torch.autograd.grad((got * weights).sum(), scores)
    (g_plain,) = torch.autograd.grad((expected * weights).sum(), scores)
    assert torch.allclose(g_fused, g_plain)
    x = torch.randn(4, 6, requires_grad=True)
    residual = torch.randn(4, 6, requires_grad=True)
    out, keep = fused.dropout_add(x, residual, 0.5)
    assert keep.dtype == torch.bool
    assert torch.allclose(out, residual + torch.where(keep, 2 * x, torch.zeros_like(x)))
    gx, gr = torch.autograd.grad(out.sum(), (x, residual))
    assert torch.equal(gr, torch.ones_like(gr))
    assert torch.allclose(gx, keep.float() * 2)


def test_a_tensor_saved_by_two_neighbours_is_counted_once() -> None:
    """The MLP's ReLU saves its output (128 fp32 values per sample) for its backward and fc2
    saves the same tensor as its input: one tensor, counted with the ReLU. fc2 keeps besides it
    only what the loss saves (its 10 fp32 log-probabilities and 12 bytes of target and
    scalars); fc1 saves the model's input (784 fp32 values)."""
    graph = load_model("mlp")
    assert [layer.activation_bytes for layer in graph.layers] == [784 * 4, 128 * 4, 10 * 4 + 12]


def test_gpt_block_records_the_shapes_of_its_products() -> None:
    """The four weight products of a block, forward: tokens x (3h, h, 4h, h) x (h, h, h, 4h),
    their batch axis the tokens (m); the weight gradients reduce over the tokens (k); the
    attention products are batched over the heads (g). Their FLOPs are the block's."""
    s, h, heads = 256, 128, 4
    spec = TransformerSpec(
        name="t",
        hidden_size=h,
        num_layers=1,
        num_heads=heads,
        seq_len=s,
        vocab_size=512,
        attention="math",
    )
    block = graph_from_spec(spec, dtype="bf16").layer("blocks.0")
    fwd = set(block.fwd_ops.mm_shapes)
    for n, k in ((3 * h, h), (h, h), (4 * h, h), (h, 4 * h)):
        assert (1.0, float(s), float(n), float(k), 1, 1) in fwd
    assert (float(heads), float(s), float(s), float(h // heads), 0, 1) in fwd  # q @ k^T
    wgrads = {(m, n) for _, m, n, _, axis, _ in block.bwd_ops.mm_shapes if axis == 3}
    assert wgrads == {(3.0 * h, h), (h, h), (4.0 * h, h), (h, 4.0 * h)}
    assert block.fwd_ops.gemm_flops == pytest.approx(block.fwd_flops)
    assert block.bwd_ops.gemm_flops == pytest.approx(block.bwd_flops)


def test_expert_products_grow_along_the_tokens() -> None:
    # an MoE block's grouped GEMM over its 8 stacked experts (s 1024, top-2: 256 token copies
    # per expert and sample): the groups stay 8, the tokens are m (forward, input gradient)
    # or k (weight gradient), so FP8 and the GEMM model treat them as weight products
    block = next(layer for layer in moe_graph().layers if layer.attrs.get("num_experts"))
    grouped = [mm for mm in block.fwd_ops.mm_shapes + block.bwd_ops.mm_shapes if mm[0] == 8]
    assert sorted(grouped) == sorted(
        [
            (8.0, 256.0, 3584.0, 512.0, 1, 1),  # FC1 with the gate, forward
            (8.0, 256.0, 512.0, 1792.0, 1, 1),  # FC2, forward
            (8.0, 256.0, 512.0, 3584.0, 1, 1),  # FC1's input gradient
            (8.0, 256.0, 1792.0, 512.0, 1, 1),  # FC2's input gradient
            (8.0, 512.0, 3584.0, 256.0, 3, 1),  # FC1's weight gradient
            (8.0, 1792.0, 512.0, 256.0, 3, 1),  # FC2's weight gradient
        ]
    )
