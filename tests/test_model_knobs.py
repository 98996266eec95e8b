"""Pruning and quantization knobs: hand counts of pruned models, int8/int4 weight bytes, and
one-line errors for bad knobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from simplan.errors import SimplanError
from simplan.model_knobs import ModelKnobs, kept, parse_prune, split_spec, with_knobs
from simplan.sources import load_model
from tests.helpers import run_main

SMALL_CNN = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        )
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(self.body(x).mean(dim=(2, 3)))

def build():
    return Net(), torch.randn(2, 3, 8, 8)
"""


@pytest.fixture
def cnn_file(tmp_path: Path) -> str:
    path = tmp_path / "small_cnn.py"
    path.write_text(SMALL_CNN)
    return f"{path}:build"


def test_pruned_cnn_matches_a_hand_count(cnn_file: str) -> None:
    pytest.importorskip("torch_pruning")
    graph = load_model(cnn_file + "#prune=channels:0.5")
    # half of each convolution's channels go: 3->4->8 channels, the classifier keeps 10 classes
    hw = 8 * 8
    conv1, conv2, fc = 3 * 9 * 4, 4 * 9 * 8, 8 * 10
    assert graph.params == conv1 + 2 * 4 + conv2 + 2 * 8 + fc + 10
    # forward FLOPs per sample: 2 per multiply-add of the convolutions and the classifier
    assert graph.fwd_flops == 2 * (hw * conv1 + hw * conv2 + fc)
    whole = load_model(cnn_file)
    assert whole.params == 3 * 9 * 8 + 2 * 8 + 8 * 9 * 16 + 2 * 16 + 16 * 10 + 10


def test_pruned_gpt_heads_match_a_hand_count() -> None:
    whole = load_model("gpt-tiny")
    half = load_model("gpt-tiny#prune=heads:0.5")
    h, t, ffn = 256, 128, 1024
    width = 2 * 64  # 2 of 4 heads of size 64 stay
    block = next(layer for layer in half.layers if layer.kind == "transformer_block")
    assert block.attrs["num_heads"] == 2
    attention = h * 3 * width + 3 * width + width * h + h
    mlp = h * ffn + ffn + ffn * h + h
    assert block.params == attention + mlp + 4 * h
    # forward FLOPs per token: 2 per weight of the projections and MLP, and 4 T x width for
    # the scores and the weighted sum (no causal discount)
    linear = h * 3 * width + width * h + 2 * h * ffn
    assert block.fwd_flops == pytest.approx(t * (2 * linear + 4 * t * width), rel=1e-9)
    full = next(layer for layer in whole.layers if layer.kind == "transformer_block")
    assert full.fwd_flops - block.fwd_flops == pytest.approx(
        t * (2 * (h * 3 * 128 + 128 * h) + 4 * t * 128), rel=1e-9
    )
    assert half.params == whole.params - 4 * (h * 3 * 128 + 3 * 128 + 128 * h)


def test_shape_pruning_of_ffn_and_layers() -> None:
    graph = load_model("gpt-tiny#prune=ffn:0.25,layers:0.5")
    blocks = [layer for layer in graph.layers if layer.kind == "transformer_block"]
    assert len(blocks) == 2
    assert blocks[0].attrs["ffn_hidden_size"] == 768


@pytest.mark.parametrize(("dtype", "bits"), [("int8", 8), ("int4", 4)])
def test_quantized_weight_bytes_are_exact(dtype: str, bits: int) -> None:
    import torch
    from torch import nn

    from simplan.nets.transformer import Block
    from simplan.sources import resolve, transformer_spec

    graph = load_model(f"gpt-tiny#quantize={dtype}", dtype="fp32")
    block = next(layer for layer in graph.layers if layer.kind == "transformer_block")
    module = Block(transformer_spec(resolve("gpt-tiny")))
    qmodule = torch.ao.quantization.quantize_dynamic(module, {nn.Linear}, dtype=torch.qint8)
    packed = [
        m.weight() for m in qmodule.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)
    ]
    int8_bytes = sum(w.numel() * w.element_size() for w in packed)
    assert int8_bytes == sum(w.numel() for w in packed)  # one byte per weight in torch
    rest = sum(p.numel() for p in module.parameters()) - sum(w.numel() for w in packed)
    # plus the scales (simplan.model_knobs.QUANT_SCALES): int8 an fp32 per output channel,
    # int4 an fp32 per block of 64 weights
    scales = sum(w.shape[0] if bits == 8 else w.numel() // 64 for w in packed) * 4
    assert block.param_bytes == rest * 4 + int8_bytes * bits // 8 + scales
    # the embedding (and a head tied to it) stay in the model's dtype
    embed = graph.layers[0]
    assert embed.param_bytes == embed.params * 4


def test_knob_spec_round_trip() -> None:
    spec = with_knobs("gpt-tiny", prune="heads:0.5,ffn=25%", quantize="int8")
    assert spec == "gpt-tiny#prune=heads:0.5,ffn:0.25#quantize=int8"
    base, knobs = split_spec(spec)
    assert base == "gpt-tiny" and knobs.fraction("ffn") == 0.25
    assert kept(64, 0.3) == 44 and kept(4, 0.5) == 2 and kept(1, 0.9) == 1


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("channels:1.0", "below 1"),
        ("channels:1", "below 1"),
        ("heads:0", "above 0"),
        ("neurons:0.3", "cannot prune 'neurons'"),
        ("heads", "WHAT:FRACTION"),
        ("heads:half", "not a fraction"),
    ],
)
def test_bad_prune_is_one_line(text: str, needle: str) -> None:
    with pytest.raises(SimplanError, match=needle) as info:
        parse_prune(text)
    assert "\n" not in str(info.value)


def test_unknown_quantization_dtype_is_refused() -> None:
    with pytest.raises(SimplanError, match="unknown quantization dtype 'int3'"):
        ModelKnobs(quantize="int3")


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--model", "gpt-tiny", "--prune", "heads:1.0"], "below 1"),
        (["--model", "gpt-tiny", "--prune", "channels:0.3"], "not channels"),
        (["--model", "gpt-tiny#quantize=int3"], "unknown quantization dtype"),
        (["--model", "gpt-tiny#quantize=int8-dynamic"], "for inference"),
    ],
)
def test_cli_refuses_bad_knobs_in_one_line(
    capsys: pytest.CaptureFixture[str], flags: list[str], needle: str
) -> None:
    code, _out, err = run_main(
        capsys, "simulate", *flags, "--cluster", "localhost-cpu", "--global-batch", "2"
    )
    assert code == 2
    assert needle in err and len(err.strip().splitlines()) == 1


def test_simulate_explain_shows_before_and_after(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(
        capsys, "simulate", "--model", "gpt-tiny", "--prune", "heads:0.5", "--cluster",
        "localhost-cpu", "--global-batch", "4", "--dtype", "fp32", "--explain",
    )  # fmt: skip
    assert code == 0
    assert "parameters 7.39M -> 6.86M" in out
    assert "simulated step: time" in out


def test_prune_with_a_plan_file_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _out, err = run_main(
        capsys, "simulate", "--plan", str(tmp_path / "plan.json"), "--prune", "heads:0.5"
    )
    assert code == 2
    assert "--prune changes the model given with --model" in err


def test_simulate_report_has_the_before_after_table(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _out, _err = run_main(
        capsys, "simulate", "--model", "gpt-tiny", "--prune", "layers:0.5", "--cluster",
        "localhost-cpu", "--global-batch", "4", "--dtype", "fp32", "--report", str(tmp_path / "r"),
    )  # fmt: skip
    assert code == 0
    index = (tmp_path / "r" / "index.md").read_text()
    assert "## Model knobs: before and after" in index
    assert "| parameters | 7.387M | " in index


def test_pruned_residual_cnn_matches_a_hand_count() -> None:
    """cnn-small with 30% of its channels pruned: both sides of every residual addition keep the
    same channels (Torch-Pruning couples them), 32 -> 22, 64 -> 44, 128 -> 89 channels."""
    pytest.importorskip("torch_pruning")
    graph = load_model("cnn-small#prune=channels:0.3")
    w = {c: kept(c, 0.3) for c in (32, 64, 128)}
    assert w == {32: 22, 64: 44, 128: 89}
    params = 3 * 9 * w[32] + 2 * w[32]
    flops = 2 * 32 * 32 * 3 * 9 * w[32]
    side = 32
    for cin, cout, stride in ((32, 64, 2), (64, 64, 1), (64, 128, 2), (128, 128, 1)):
        a, b = w[cin], w[cout]
        side //= stride
        params += a * 9 * b + b * 9 * b + 4 * b
        flops += 2 * side * side * (a * 9 * b + b * 9 * b)
        if stride != 1 or cin != cout:
            params += a * b + 2 * b
            flops += 2 * side * side * a * b
    params += w[128] * 10 + 10
    flops += 2 * w[128] * 10
    assert graph.params == params == 317_847
    assert graph.fwd_flops == flops


def test_pruning_leaves_only_the_pruned_model_alive() -> None:
    """Torch-Pruning's dependency graph holds the unpruned weights and its traced forward in
    reference cycles: after the build only the pruned parameters, buffers and the example input
    may be live (a real run's memory would carry the rest through its steps)."""
    pytest.importorskip("torch_pruning")
    import torch

    from simplan.build import instantiate
    from simplan.runtime.memory import TensorTracker
    from simplan.sources import resolve

    tracker = TensorTracker()
    with tracker:
        model, inputs = instantiate(
            resolve("cnn-small#prune=channels:0.3"), None, batch=2, seq_len=None,
            device="cpu", dtype="fp32",
        )  # fmt: skip
    tensors = [*model.parameters(), *model.buffers(), *(x for x in inputs if torch.is_tensor(x))]
    assert tracker.current_bytes == sum(t.numel() * t.element_size() for t in tensors)


def test_pruned_resnet50_matches_a_hand_count() -> None:
    """ResNet-50 with 30% of its channels pruned, counted by hand: every prunable channel group
    keeps kept(c, 0.3) channels (the stem's 64, each block's inner widths, each stage's residual
    stream, which the shortcut additions couple); the 1,000 classes stay. Parameters: the
    convolutions (no bias), two per BatchNorm channel, the classifier; forward FLOPs per sample:
    2 per multiply-add of the convolutions at their output size and of the classifier."""
    pytest.importorskip("torch_pruning")
    from models.resnet50 import EXPANSION, STAGES

    graph = load_model("resnet50#prune=channels:0.3")
    stem = kept(64, 0.3)
    params = 3 * 49 * stem + 2 * stem
    side = 112  # the 7x7 stride-2 stem on 224x224 images
    flops = 2 * side * side * 3 * 49 * stem
    side //= 2  # the max pool
    cin = stem
    for width, count, stride in STAGES:
        w, out = kept(width, 0.3), kept(width * EXPANSION, 0.3)
        for i in range(count):
            s = stride if i == 0 else 1
            inner = side // s
            params += cin * w + 2 * w + w * 9 * w + 2 * w + w * out + 2 * out
            flops += 2 * (side * side * cin * w + inner * inner * (w * 9 * w + w * out))
            if i == 0:  # the projection shortcut
                params += cin * out + 2 * out
                flops += 2 * inner * inner * cin * out
            side, cin = inner, out
    params += cin * 1000 + 1000
    flops += 2 * cin * 1000
    assert (stem, kept(512, 0.3), kept(2048, 0.3)) == (44, 358, 1433)
    assert graph.params == params
    assert graph.fwd_flops == flops
    whole = load_model("resnet50")
    assert whole.params == 25_557_032 and graph.params < 0.55 * whole.params
