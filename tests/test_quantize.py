"""Weight-only quantization of a training job: exact weight bytes of quantized models, frozen
weights leave the gradients, the optimizer state and the gradient sync, and bad --quantize
values are one-line errors."""

from __future__ import annotations

import pytest

from simplan.errors import SimplanError
from simplan.model_knobs import parse_quantize
from simplan.parallel import ParallelConfig
from simplan.quantize import quantized_bytes
from simplan.sim.assemble import Assembler
from simplan.sim.rank_devices import grid
from simplan.sources import load_model
from simplan.validate import local_cluster
from tests.helpers import run_main

H, LAYERS = 1024, 24  # gpt3-350m
# a block's linear weights as nn.Linear stores them (out, in): QKV, output projection, MLP
BLOCK_WEIGHTS = ((3 * H, H), (H, H), (4 * H, H), (H, 4 * H))


def test_int8_gpt3_350m_weights_are_one_byte_each_plus_a_scale_per_row() -> None:
    whole = load_model("gpt3-350m", dtype="bf16")
    graph = load_model("gpt3-350m#quantize=int8", dtype="bf16")
    numel = sum(o * i for o, i in BLOCK_WEIGHTS)
    assert numel == 12 * H * H
    rows = sum(o for o, _ in BLOCK_WEIGHTS)  # one fp32 scale per output channel
    frozen = LAYERS * (numel + 4 * rows)
    assert graph.frozen_params == LAYERS * numel
    assert graph.frozen_bytes == frozen
    # everything else (embeddings, tied head, biases, norms) stays bf16
    assert graph.param_bytes == (whole.params - LAYERS * numel) * 2 + frozen
    assert graph.trainable_params == whole.params - LAYERS * numel


def test_per_kind_int4_blocks_and_int8_embedding() -> None:
    graph = load_model("gpt-tiny#quantize=transformer_block=int4,embedding=int8", dtype="fp32")
    h, ffn = 256, 1024
    block = next(x for x in graph.layers if x.kind == "transformer_block")
    shapes = ((3 * h, h), (h, h), (ffn, h), (h, ffn))
    numel = sum(o * i for o, i in shapes)
    # int4: two weights a byte and an fp32 absmax per block of 64 weights
    stored = sum(o * i // 2 + (o * i // 64) * 4 for o, i in shapes)
    assert block.param_bytes == (block.params - numel) * 4 + stored
    # the token and position tables: a byte per weight and an fp32 scale per row
    embed = graph.layers[0]
    tables = embed.attrs["param_shapes"]
    assert [list(t) for t in tables] == [[8192, h], [128, h]]
    assert embed.attrs["frozen_bytes"] == sum(r * c + 4 * r for r, c in tables)
    assert embed.bwd_flops == 0.0  # a frozen lookup table needs no backward


def test_quantized_bytes_by_hand() -> None:
    assert quantized_bytes((10, 100), "int8") == 1000 + 10 * 4
    assert quantized_bytes((10, 100), "int4") == 500 + 16 * 4  # 1000 weights: 16 blocks of 64
    assert quantized_bytes((10, 100), "fp8") == 1000 + 4


def test_frozen_backward_keeps_the_input_gradient_only() -> None:
    """An MLP linear layer's backward is dX = dY W and dW = X^T dY, 2*in*out FLOPs per sample
    each: the frozen layer keeps dX."""
    whole = load_model("mlp")
    graph = load_model("mlp#quantize=int8")
    for a, b in zip(whole.layers, graph.layers, strict=True):
        if a.kind == "linear" and a.bwd_flops:
            shape = a.attrs["param_shapes"][0]
            weight_grad = 2.0 * shape[0] * shape[1]
            assert b.bwd_flops == pytest.approx(a.bwd_flops - weight_grad)


def _assembler(spec: str, **knobs: object) -> Assembler:
    config = ParallelConfig(dp=2, micro_batch=8, global_batch=16, dtype="fp32", **knobs)  # type: ignore[arg-type]
    return Assembler(load_model(spec), local_cluster(2), config, grid(config, None), None)


def test_gradient_sync_and_optimizer_drop_by_exactly_the_frozen_weights() -> None:
    before, after = _assembler("gpt-tiny"), _assembler("gpt-tiny#quantize=int8")
    frozen = after.graph.frozen_params
    assert frozen > 0

    def synced(asm: Assembler) -> float:
        buckets = asm._plain_buckets(asm.steps[0], 0, 4, sync=lambda nbytes, _stage: nbytes)
        return sum(b.comm_s for b in buckets)

    assert synced(before) == pytest.approx(before.graph.params * 4)
    assert synced(before) - synced(after) == pytest.approx(frozen * 4)
    mem_b, mem_a = before.build()[1][0], after.build()[1][0]
    # fp32 Adam: two fp32 moments; fp32 gradients; weights: fp32 less the frozen, plus stored
    assert mem_b.optimizer - mem_a.optimizer == pytest.approx(frozen * 8)
    assert mem_b.grads - mem_a.grads == pytest.approx(frozen * 4)
    assert mem_a.weights == pytest.approx(
        (after.graph.params - frozen) * 4 + after.graph.frozen_bytes
    )


def test_zero3_shards_and_gathers_the_frozen_weights() -> None:
    asm = _assembler("gpt-tiny#quantize=int8", zero=3)
    weights = asm.build()[1][0].weights
    graph = asm.graph
    assert weights == pytest.approx(
        ((graph.params - graph.frozen_params) * 4 + graph.frozen_bytes) / 2
    )


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("int3", "unknown quantization dtype 'int3'"),
        ("linear=int3", "unknown quantization dtype 'int3'"),
        ("bf16", "applies to a layer kind"),
        ("int8,embedding=int4", "name each layer kind once"),
        ("=int8", "KIND=DTYPE"),
    ],
)
def test_bad_quantize_text_is_one_line(text: str, needle: str) -> None:
    with pytest.raises(SimplanError, match=needle) as info:
        parse_quantize(text)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("quantize", "needle"),
    [
        ("attention=int8", "its layer kinds are embedding, lm_head, transformer_block"),
        ("embedding=bf16", "use --dtype bf16"),
        ("int8-dynamic", "dynamic quantization is for inference"),
    ],
)
def test_cli_refuses_bad_quantize_in_one_line(
    capsys: pytest.CaptureFixture[str], quantize: str, needle: str
) -> None:
    code, _out, err = run_main(
        capsys, "simulate", "--model", "gpt-tiny", "--quantize", quantize, "--cluster",
        "localhost-cpu", "--global-batch", "2", "--dtype", "fp32",
    )  # fmt: skip
    assert code == 2
    assert needle in err and len(err.strip().splitlines()) == 1


def test_simulate_explain_shows_what_quantization_changes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run_main(
        capsys, "simulate", "--model", "gpt-tiny", "--quantize", "int8", "--cluster",
        "localhost-cpu", "--global-batch", "4", "--dtype", "fp32", "--explain",
    )  # fmt: skip
    assert code == 0
    assert "trainable parameters 7.39M -> 2.14M" in out
    assert "optimizer state" in out and "gradient bytes each replica reduces" in out
    assert "simulated step: time" in out


def test_export_of_a_quantized_plan_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run_main(
        capsys, "plan", "--model", "gpt-tiny", "--quantize", "int8", "--cluster",
        "localhost-cpu", "--global-batch", "4", "--dtype", "fp32", "--export", "megatron",
    )  # fmt: skip
    assert code == 2
    assert "frozen weight-only quantized" in err and len(err.strip().splitlines()) == 1


def test_planner_memory_floor_counts_frozen_weights_at_their_width() -> None:
    """fp32 training: 4 (weights) + 4 (gradients) + 8 (Adam moments) bytes a trainable
    parameter; a frozen weight only its stored bytes."""
    from simplan.planner.search import memory_floor_bytes

    graph = load_model("gpt-tiny#quantize=int8", dtype="fp32")
    config = ParallelConfig(micro_batch=1, global_batch=1, dtype="fp32")
    assert memory_floor_bytes(graph, config) == pytest.approx(
        graph.trainable_params * 16 + graph.frozen_bytes
    )


def test_a_frozen_layers_forward_adds_one_dequantization() -> None:
    """On an H100 in bf16: a gpt-tiny block's forward with int8 weights is the bf16 forward
    plus reading the int8 weights and scales and writing their bf16 copy at memory speed."""
    from simplan.devices import get_device
    from simplan.sim.costs import layer_steps

    device = get_device("h100-sxm")
    config = ParallelConfig(micro_batch=4, global_batch=4, dtype="bf16")
    whole = load_model("gpt-tiny", dtype="bf16")
    quant = load_model("gpt-tiny#quantize=int8", dtype="bf16")
    before, after = (
        layer_steps(whole, device, config, None),
        layer_steps(quant, device, config, None),
    )
    layer = quant.layers[1]
    stored, frozen = layer.attrs["frozen_bytes"], layer.attrs["frozen_params"]
    assert after[1].frozen_bytes == stored
    assert after[1].params == layer.params - frozen
    dequantize = device.memory_time_s(stored + frozen * 2)
    assert after[1].fwd_s == pytest.approx(before[1].fwd_s + dequantize)


def test_the_python_api_takes_quantize_as_a_keyword() -> None:
    graph = load_model("gpt-tiny", dtype="fp32", quantize="transformer_block=int8")
    assert graph.meta["spec"] == "gpt-tiny#quantize=transformer_block=int8"
    assert graph.frozen_params == 4 * 12 * 256 * 256  # 4 blocks, h 256, FFN 4h
