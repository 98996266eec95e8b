"""A graph counted at another dtype than the configuration's is recounted, or refused."""

from __future__ import annotations

import dataclasses

import pytest

from simplan.errors import SimplanError
from simplan.parallel import ParallelConfig
from simplan.sim.run import simulate
from simplan.sources import load_model

CONFIG = ParallelConfig(micro_batch=2, global_batch=2, dtype="fp16")


def test_a_graph_counted_at_fp32_simulates_as_the_fp16_count() -> None:
    """simulate(fp32 graph, fp16 config) gives exactly what the fp16 count gives: the fp32
    graph's weights and activations are twice as large, which made such a step slower."""
    g32, g16 = load_model("gpt3-125m"), load_model("gpt3-125m", dtype="fp16")
    assert g32.layers[1].param_bytes == 2 * g16.layers[1].param_bytes
    a = simulate(g32, "h200-1gpu", CONFIG, record=False)
    b = simulate(g16, "h200-1gpu", CONFIG, record=False)
    assert a.step_time_s == b.step_time_s
    assert a.devices[0].peak_memory_bytes == b.devices[0].peak_memory_bytes


def test_a_changed_or_hand_built_graph_at_another_dtype_is_refused() -> None:
    g32 = load_model("gpt3-125m")
    last = dataclasses.replace(g32.layers[-1], fwd_flops=1.0)
    changed = dataclasses.replace(g32, layers=(*g32.layers[:-1], last))
    with pytest.raises(SimplanError, match=r"counted at fp32 and changed since.*trains in fp16"):
        simulate(changed, "h200-1gpu", CONFIG, record=False)
    hand = dataclasses.replace(g32, meta={})
    with pytest.raises(SimplanError, match="counted at fp32, the configuration trains in fp16"):
        simulate(hand, "h200-1gpu", CONFIG, record=False)
