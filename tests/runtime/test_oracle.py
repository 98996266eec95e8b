"""The runtime's correctness oracle: a plan run on 4 gloo ranks gives, step by step, the losses
of the same model, seed and global batch trained in one process (fp32, relative 1e-5).

Every hybrid (dp x tp, ZeRO-2 x tp, FSDP x tp, dp x pp, ZeRO-2 x pp, pp x FSDP, tp x pp, DDP
+ ZeroRedundancyOptimizer), with and without sequence parallelism where it applies, each without
recomputation and with it (one process group launch each), and per-op checkpointing under
pipeline x FSDP; SIMPLAN_ORACLE_FULL=1 runs every recomputation mode of each (per-op
checkpointing where tp is 1).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simplan.parallel import ParallelConfig
from simplan.planfile import ClusterRef, PlanFile, read_plan, write_plan
from simplan.runtime.job import WRONG_SPLIT
from simplan.runtime.launch import run_job
from simplan.runtime.plan_run import run_plan, runnable_job
from simplan.runtime.reference import compare_losses, reference_losses
from tests.plan_files import TINY_MODEL

pytestmark = pytest.mark.distributed

STEPS = 5
# the tiny model (embed, 4 blocks, head) with untied embeddings, as TP and PP need
UNTIED_MODEL = TINY_MODEL + "tie_embeddings = false\n"

HYBRIDS: tuple[dict[str, Any], ...] = (
    *({"dp": 2, "tp": 2, "zero": z} for z in (0, 2, 3)),  # dp x tp, ZeRO-2 x tp, FSDP x tp
    *({"dp": 2, "pp": 2, "zero": z} for z in (0, 2, 3)),  # dp x pp, ..., pp x FSDP
    {"tp": 2, "pp": 2},
    {"dp": 4, "zero": 1},  # DDP + ZeroRedundancyOptimizer
)
SCHEDULES: tuple[dict[str, Any], ...] = (
    {"schedule": "1f1b"},
    {"schedule": "gpipe"},
    {"schedule": "interleaved", "virtual_stages": 2},
)


def cases(every_recompute: bool) -> dict[str, dict[str, Any]]:
    """Every hybrid, with and without sequence parallelism (where tp > 1), each without
    recomputation and with it: every mode when `every_recompute`, else selective and full by
    turns (the pipeline schedules by turns too); and an uneven ILP-style stage split."""
    schedules: Iterator[dict[str, Any]] = itertools.cycle(SCHEDULES)
    modes: Iterator[str] = itertools.cycle(("selective", "full"))
    out: dict[str, dict[str, Any]] = {}
    for hybrid in HYBRIDS:
        recomputes = ("none", "selective", "full") if every_recompute else ("none", next(modes))
        if every_recompute and hybrid.get("tp", 1) == 1:
            recomputes += ("op",)  # per-op checkpointing runs without tensor parallelism
        for recompute in recomputes:
            for sp in (False, True) if hybrid.get("tp", 1) > 1 else (False,):
                case = hybrid | {"recompute": recompute, "sequence_parallel": sp}
                case |= next(schedules) if hybrid.get("pp", 1) > 1 else {}
                out[" ".join(f"{k}={v}" for k, v in case.items())] = case
    out["dp=2 pp=2 stages=(0, 2, 6) recompute=full"] = {
        "dp": 2, "pp": 2, "stages": (0, 2, 6), "recompute": "full"
    }  # fmt: skip
    out["dp=2 pp=2 zero=3 recompute=op"] = {"dp": 2, "pp": 2, "zero": 3, "recompute": "op"}
    return out


# CI: 26 cases; SIMPLAN_ORACLE_FULL=1: every recomputation mode of each (42)
CASES = cases(every_recompute=os.environ.get("SIMPLAN_ORACLE_FULL") == "1")


def write_tiny_plan(directory: Path, **degrees: Any) -> Path:
    model = directory / "tiny-untied.toml"
    model.write_text(UNTIED_MODEL)
    config = ParallelConfig(micro_batch=1, global_batch=8, **degrees)
    ref = ClusterRef(spec="dgx-h100", nodes=1, gpus_per_node=config.world_size)
    return write_plan(
        PlanFile(model=str(model), cluster=ref, config=config), directory / "plan.json"
    )


@pytest.mark.parametrize("degrees", list(CASES.values()), ids=list(CASES))
def test_a_plan_trains_as_one_process_does(tmp_path: Path, degrees: dict[str, Any]) -> None:
    plan = read_plan(write_tiny_plan(tmp_path, **degrees))
    result = run_plan(plan, steps=STEPS, reference=True, timeout_s=120)
    assert result.comparison is not None and len(result.losses) == STEPS
    assert result.comparison.equal, result.comparison.to_dict()
    assert result.losses[-1] < result.losses[0]  # it trains: the loss falls


def test_the_oracle_catches_a_wrong_data_split(tmp_path: Path) -> None:
    """Every replica trains on the first replica's slice: the losses leave the reference by far
    more than the tolerance (4.3e-3 relative by step 5, measured), so the comparison can fail."""
    plan = read_plan(write_tiny_plan(tmp_path, dp=2, tp=2))
    job = dataclasses.replace(runnable_job(plan, steps=STEPS, timeout_s=120), fault=WRONG_SPLIT)
    measured = run_job(job)
    comparison = compare_losses(measured.losses, reference_losses(job.model, job.config, STEPS))
    assert not comparison.equal
    assert comparison.max_rel_diff > 100 * comparison.rtol
