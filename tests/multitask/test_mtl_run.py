"""Real multi-task training: both tasks learn on the shapes data; the task-parallel run on two
gloo ranks computes what one process computes; a failing rank stops the run cleanly."""

from __future__ import annotations

import multiprocessing
import statistics

import pytest
import torch

from simplan.ranks import RankFailure
from simplan.runtime.mtl_run import MtlJob, build_parts, flush_denormals, run_mtl
from simplan.runtime.mtl_steps import local_step, step_rows
from simplan.runtime.task_weights import make_weighting

MODEL = "mtl-vision#image=32"


def _local_losses(job: MtlJob, steps: int) -> list[tuple[float, ...]]:
    """The job's tasks trained in this process (one thread, as the ranks run)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        split, data = build_parts(job)
        weighting = make_weighting(job.weighting, len(split.taskset.tasks))
        opt = torch.optim.Adam(split.module.parameters(), lr=1e-3, fused=True)
        return [
            local_step(
                split, weighting, opt, step_rows(data, i, job.global_batch, 0, job.global_batch)
            ).losses
            for i in range(steps)
        ]
    finally:
        torch.set_num_threads(old)


def test_both_tasks_losses_decrease_on_the_shapes_data():
    job = MtlJob(model=MODEL, placement="replicated", nprocs=1, global_batch=8)
    losses = _local_losses(job, 12)
    for k in range(2):
        first = statistics.fmean(x[k] for x in losses[:3])
        last = statistics.fmean(x[k] for x in losses[-3:])
        assert last < 0.5 * first, (k, first, last)


def _can_flush() -> bool:
    """Whether this CPU flushes subnormal floats (this process keeps them)."""
    try:
        return flush_denormals(True)
    finally:
        flush_denormals(False)


def test_flushing_denormals_turns_a_subnormal_product_into_zero():
    """2**-140 is subnormal in fp32 (the smallest normal is 2**-126): kept, x * 1 is x;
    flushed, it is 0."""
    x = torch.tensor([2.0**-140])
    try:
        if not flush_denormals(True):
            pytest.skip("this CPU cannot flush subnormal floats")
        assert float(x * 1.0) == 0.0
    finally:
        assert not flush_denormals(False)
    assert float(x * 1.0) == 2.0**-140


@pytest.mark.distributed
def test_task_parallel_trains_as_one_process():
    """Rank 0 (trunk + classification) and rank 1 (detection) exchange features and their
    gradient: the losses of every step are those of the same training in one process."""
    job = MtlJob(
        model=MODEL,
        placement="task-parallel",
        nprocs=2,
        global_batch=4,
        weighting="uncertainty",
        steps=3,
        warmup=1,
        realtime=False,
    )
    measured = run_mtl(job)
    curves = measured.task_curves()
    local = _local_losses(job, 4)
    for k, name in enumerate(("classify", "detect")):
        assert curves[name]["losses"] == pytest.approx([x[k] for x in local], rel=1e-3)
    assert len(measured.per_step_s) == 3 and measured.step_time_s > 0
    assert curves["detect"]["weights"][0] == 1.0 and curves["detect"]["weights"][-1] != 1.0
    assert not multiprocessing.active_children()


@pytest.mark.distributed
def test_replicated_run_records_every_step_of_every_task():
    job = MtlJob(
        model=MODEL,
        placement="replicated",
        nprocs=2,
        global_batch=4,
        steps=2,
        warmup=1,
        realtime=False,
    )
    measured = run_mtl(job)
    doc = measured.to_dict()
    assert set(doc["tasks"]) == {"classify", "detect"}
    for curve in doc["tasks"].values():
        assert len(curve["losses"]) == 3 and all(g > 0 for g in curve["grad_norms"])
    assert len(doc["per_rank_step_s"]) == 2
    assert doc["flush_denormal"] == [_can_flush()] * 2
    assert not multiprocessing.active_children()


@pytest.mark.distributed
def test_a_model_without_tasks_stops_every_rank_with_one_line():
    job = MtlJob(model="mlp", placement="replicated", nprocs=2, global_batch=4, realtime=False)
    with pytest.raises(RankFailure, match="declares no tasks"):
        run_mtl(job)
    assert not multiprocessing.active_children()
