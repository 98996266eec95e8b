"""The planner searches per-op checkpointing (--recompute op) where the cost model honours it:
transformer blocks without tensor parallelism."""

from __future__ import annotations

from collections import Counter

from simplan.planner.search import SearchSpace, knob_configs
from simplan.sources import load_model

SPACE = SearchSpace(micro_batches=(1,), zero=(0,), offload=("none",))


def modes(model: str, tp: int) -> set[str]:
    graph = load_model(model, dtype="bf16")
    configs = knob_configs(graph, 2, tp, 1, 2, SPACE, Counter())
    return {c.recompute for c in configs}


def test_op_is_searched_for_blocks_without_tp() -> None:
    assert modes("gpt-tiny", 1) == {"none", "selective", "op", "full"}
    assert modes("gpt-tiny", 2) == {"none", "selective", "full"}
    assert modes("mlp", 1) == {"none", "full"}
