"""The training recipes the frameworks publish (simplan/data/framework_recipes.json), as
configurations to simulate beside the plans: `simplan plan --framework F` shows F's recipe for
the model as the baseline row `baseline:F-recipe`, never proposed in the plans' place.

A recipe fixes tp, pp, the micro-batch, the ZeRO stage (FSDP's full sharding is ZeRO-3, Megatron's
distributed optimizer ZeRO-1), recomputation and sequence parallelism; data parallelism takes the
devices left (torchtitan's data_parallel_shard_degree = -1). It is simulated at the global batch,
sequence length and dtype planned for, so that its row compares like with like.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from simplan.errors import SimplanError
from simplan.parallel import ParallelConfig

RECIPES_FILE = Path(__file__).resolve().parent.parent / "data" / "framework_recipes.json"


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """One published recipe: the framework, the file it was read from (`source`,
    repository@commit path), the model preset it trains and its parallel settings."""

    framework: str
    name: str
    model: str
    tp: int
    pp: int
    zero: int
    micro_batch: int
    recompute: str
    sequence_parallel: bool
    schedule: str
    virtual_stages: int
    published_global_batch: int | None
    published_devices: int | None
    published_dtype: str
    source: str
    settings: str
    approximation: str

    @property
    def role(self) -> str:
        return f"baseline:{self.framework}-recipe"

    def config(
        self, devices: int, global_batch: int, dtype: str, seq_len: int
    ) -> ParallelConfig | str:
        """The recipe on `devices` at `global_batch`, or why it does not apply there."""
        if devices % (self.tp * self.pp):
            return f"{devices} devices do not divide by its tp {self.tp} x pp {self.pp}"
        dp = devices // (self.tp * self.pp)
        if global_batch % (self.micro_batch * dp):
            return (
                f"global batch {global_batch} does not divide by its micro-batch "
                f"{self.micro_batch} x dp {dp}"
            )
        try:
            return ParallelConfig(
                dp=dp, tp=self.tp, pp=self.pp, micro_batch=self.micro_batch,
                global_batch=global_batch, zero=self.zero if dp > 1 else 0,
                recompute=self.recompute, sequence_parallel=self.sequence_parallel and self.tp > 1,
                schedule=self.schedule, virtual_stages=self.virtual_stages, dtype=dtype,
                seq_len=seq_len,
            )  # fmt: skip
        except SimplanError as exc:
            return str(exc)

    def describe(self) -> str:
        """The recipe and where it comes from, in one line."""
        text = f"{self.name} ({self.source})"
        return f"{text}; {self.approximation}" if self.approximation else text


@cache
def load_recipes(path: Path = RECIPES_FILE) -> tuple[Recipe, ...]:
    """Every recipe of the data file."""
    doc = json.loads(path.read_text())
    return tuple(Recipe(**row) for row in doc["recipes"])


def recipes_for(framework: str, model: str) -> list[Recipe]:
    """The recipes `framework` publishes for the model preset `model`."""
    return [r for r in load_recipes() if r.framework == framework and r.model == model]
