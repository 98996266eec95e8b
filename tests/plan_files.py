"""A small model and plan files of it, for tests that write reports from a plan."""

from __future__ import annotations

from pathlib import Path

from simplan.parallel import ParallelConfig
from simplan.planfile import ClusterRef, PlanFile, write_plan

TINY_MODEL = """\
[transformer]
hidden_size = 64
num_layers = 4
num_heads = 4
seq_len = 32
vocab_size = 128
"""


def write_tiny_plan(directory: Path, *, dp: int = 2, pp: int = 2, name: str = "plan.json") -> Path:
    """directory/name: a plan of the tiny model on 4 H100s (dp x pp = 4), global batch 8."""
    model = directory / "tiny.toml"
    model.write_text(TINY_MODEL)
    ref = ClusterRef(spec="dgx-h100", nodes=1, gpus_per_node=4)
    config = ParallelConfig(dp=dp, pp=pp, micro_batch=1, global_batch=8)
    return write_plan(PlanFile(model=str(model), cluster=ref, config=config), directory / name)
