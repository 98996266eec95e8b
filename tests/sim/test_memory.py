"""Memory through the step: in-flight micro-batches per schedule, recomputation, ZeRO."""

from __future__ import annotations

import pytest

from simplan.parallel import ParallelConfig
from simplan.sim.costs import layer_steps
from simplan.sim.run import simulate
from simplan.sources import load_model
from simplan.topology import load_cluster
from tests.sim.test_oracles import h100s, uniform_chain


@pytest.mark.parametrize("schedule,expected", [("1f1b", "p"), ("gpipe", "m")])
def test_first_stage_holds_p_or_m_microbatches(schedule: str, expected: str) -> None:
    p, m = 4, 12
    graph = uniform_chain(8)
    result = simulate(
        graph, h100s(p), ParallelConfig(pp=p, micro_batch=1, global_batch=m, schedule=schedule)
    )
    first, second = graph.layers[:2]  # stage 0: 2 layers; the first one's saved input is data
    per_mb = first.activation_bytes - min(first.activation_bytes, first.input_bytes)
    per_mb += second.activation_bytes
    held = result.devices[0].saved_activation_bytes / per_mb
    assert held == pytest.approx(p if expected == "p" else m)
    last = result.devices[-1].saved_activation_bytes / per_mb
    assert last == pytest.approx(1 if schedule == "1f1b" else m)


def test_full_recompute_keeps_only_block_inputs() -> None:
    graph = load_model("gpt3-125m", seq_len=512, dtype="bf16")
    cluster = h100s(1)
    base = ParallelConfig(micro_batch=4, global_batch=4, dtype="bf16")
    none = simulate(graph, cluster, base)
    full = simulate(graph, cluster, base.replace(recompute="full"))
    # the first layer's input is the data (a buffer of the step, not an activation)
    first = graph.layers[0]
    data = 4 * min(first.activation_bytes, first.input_bytes)
    assert none.devices[0].saved_activation_bytes == pytest.approx(
        4 * sum(layer.activation_bytes for layer in graph.layers) - data
    )
    # the blocks keep their inputs; the embedding and the head are not checkpointed
    blocks = [layer for layer in graph.layers if layer.kind == "transformer_block"]
    others = [layer for layer in graph.layers if layer.kind != "transformer_block"]
    assert [layer.kind for layer in others] == ["embedding", "lm_head"]
    kept = 4 * sum(layer.input_bytes for layer in blocks)
    kept += 4 * sum(layer.activation_bytes for layer in others) - data
    assert full.devices[0].saved_activation_bytes == pytest.approx(kept)
    # the peak holds those and, during a block's backward, its recomputed activations
    assert kept < full.devices[0].memory["activations"] < none.devices[0].memory["activations"]
    assert full.peak_memory_bytes < none.peak_memory_bytes
    # only the blocks run their forward again (one micro-batch)
    steps = layer_steps(graph, cluster.device_model(0), base)
    again = sum(s.fwd_s for s, layer in zip(steps, graph.layers, strict=True) if layer in blocks)
    assert full.devices[0].recompute_s == pytest.approx(again)
    assert 0 < again < sum(s.fwd_s for s in steps) and none.devices[0].recompute_s == 0


def test_zero3_divides_model_states_by_dp() -> None:
    graph = load_model("gpt3-350m", seq_len=512, dtype="bf16")
    cluster = load_cluster("dgx-a100", nodes=1)
    ddp = simulate(graph, cluster, ParallelConfig(dp=8, global_batch=8, dtype="bf16"))
    z3 = simulate(graph, cluster, ParallelConfig(dp=8, global_batch=8, zero=3, dtype="bf16"))
    z1 = simulate(graph, cluster, ParallelConfig(dp=8, global_batch=8, zero=1, dtype="bf16"))
    for part in ("weights", "optimizer"):  # the gradients live at the peak depend on when it is
        assert z3.devices[0].memory[part] == pytest.approx(ddp.devices[0].memory[part] / 8)
    assert z1.devices[0].memory["optimizer"] == pytest.approx(
        ddp.devices[0].memory["optimizer"] / 8
    )
    assert z1.devices[0].memory["weights"] == ddp.devices[0].memory["weights"]
    assert ddp.devices[0].memory["weights"] == pytest.approx(2 * graph.params)


def test_model_that_does_not_fit_is_flagged() -> None:
    graph = load_model("gpt3-13b", seq_len=2048, dtype="bf16")
    result = simulate(graph, h100s(1), ParallelConfig(global_batch=1, dtype="bf16"))
    assert not result.fits_memory
    assert result.peak_memory_bytes > 80 * 2**30
