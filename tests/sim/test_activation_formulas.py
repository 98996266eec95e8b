"""Activation memory per transformer layer against Korthikanti et al. 2022, "Reducing
Activation Recomputation in Large Transformer Models", Table 2, on the paper's 22B, 175B and
530B shapes (Table 3: seq 2048, TP 8, micro-batch 4, 1, 1), fp16, unfused attention, dropout.

Table 2 (bytes per layer; s seq, b micro-batch, h hidden, a heads, t TP degree):
  no parallelism             sbh (34 + 5as/h)
  TP                         sbh (10 + 24/t + 5as/(ht))
  TP + sequence parallel     sbh/t (34 + 5as/h)
  TP + selective recompute   sbh (10 + 24/t)
  TP + SP + selective        sbh/t * 34
  full recompute             2sbh (2sbh/t with SP)
simplan counts the saved tensors themselves, which hold one thing more than the paper lists: each
of the two LayerNorms saves its mean and rstd in fp32 per token (16 sb bytes; replicated over a
TP group, split by sequence parallelism). The oracle adds exactly that.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from simplan.devices import get_device
from simplan.parallel import ParallelConfig
from simplan.sim.costs import layer_steps
from simplan.sources import load_model

SEQ = 2048
TP = 8
# name: (heads, hidden, micro-batch) from the paper's Table 3
PAPER = {"22b": (64, 6144, 4), "175b": (96, 12288, 1), "530b": (128, 20480, 1)}


def paper_bytes(s: int, b: int, h: int, a: int, t: int, sp: bool, recompute: str) -> float:
    if recompute == "full":
        return 2 * s * b * h / (t if sp else 1)
    core = 0.0 if recompute == "selective" else 5 * a * s / h
    if sp or t == 1:
        return s * b * h / t * (34 + core)
    return s * b * h * (10 + 24 / t + core / t)


def _one_layer(tmp_path: Path, heads: int, hidden: int) -> Path:
    path = tmp_path / f"k{hidden}.toml"
    path.write_text(
        "[transformer]\n"
        f"hidden_size = {hidden}\nnum_layers = 1\nnum_heads = {heads}\nseq_len = {SEQ}\n"
        'vocab_size = 51200\nactivation = "gelu"\nattention = "math"\ndropout = 0.1\n'
    )
    return path


@pytest.mark.parametrize("name", sorted(PAPER))
def test_table2_rows_on_the_paper_shapes(name: str, tmp_path: Path) -> None:
    heads, hidden, b = PAPER[name]
    graph = load_model(str(_one_layer(tmp_path, heads, hidden)), dtype="fp16")
    block = next(i for i, layer in enumerate(graph.layers) if layer.kind == "transformer_block")
    device = get_device("a100-80gb")
    for tp, sp, recompute in [
        (1, False, "none"),
        (TP, False, "none"),
        (TP, True, "none"),
        (TP, False, "selective"),
        (TP, True, "selective"),
        (TP, False, "full"),
        (TP, True, "full"),
    ]:
        config = ParallelConfig(
            tp=tp, micro_batch=b, global_batch=b, sequence_parallel=sp, recompute=recompute,
            dtype="fp16",
        )  # fmt: skip
        got = layer_steps(graph, device, config)[block].activation_bytes
        norm_stats = 0.0 if recompute == "full" else 16 * SEQ * b / (tp if sp else 1)
        want = paper_bytes(SEQ, b, hidden, heads, tp, sp, recompute) + norm_stats
        assert got == pytest.approx(want, rel=1e-12), (name, tp, sp, recompute)
