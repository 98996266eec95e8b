"""One rank of a scheduled job's real run (imports torch): train the job's plan from its last
checkpoint (if any) until its total steps, or until the scheduler asks it to stop; then save a
checkpoint (DCP) and exit.

The scheduler asks by creating the task's stop file; every step starts with a MAX all-reduce of
"this rank sees the stop file", so all ranks stop after the same step. Rank 0 writes
RUN_DIR/rank0.json: the steps it ran, each step's loss (over the whole global batch) and the
times of its phases (process entry, model built, checkpoint loaded, steps done, checkpoint
saved).
Progress is the runtime's heartbeat (RUN_DIR/hb{rank}, simplan.runtime.worker.Heartbeat).
"""

from __future__ import annotations

import datetime as dt
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simplan.outputs import write_json_atomic, write_text_atomic
from simplan.ranks import enter_rank_process
from simplan.runtime.job import JobSpec


@dataclass(frozen=True, kw_only=True)
class RankTask:
    """What every rank of one launch of a job runs.

    job: the plan to execute (model, ParallelConfig, optimizer, threads, timeout_s).
    total_steps: the job's optimizer steps in all; a launch continues from its checkpoint.
    ckpt_dir: the job's checkpoints (simplan.schedule.checkpointing), kept across launches.
    stop_file: its existence asks the ranks to checkpoint and exit.
    fault: 'crash@RANK:STEP' or 'hang@RANK:STEP' makes a rank fail or stall on purpose before
        that step (tests of failure handling).
    """

    job: JobSpec
    total_steps: int
    ckpt_dir: str
    stop_file: str
    fault: str = ""


def rank_main(rank: int, world: int, init_method: str, task: RankTask, run_dir: str) -> None:
    """The process target: its own process group, one line of error on failure."""
    entered_s = time.time()
    enter_rank_process()
    out = Path(run_dir)
    try:
        result = train_task(rank, world, init_method, task, out, entered_s)
        write_json_atomic(result, out / f"rank{rank}.json")
    except BaseException as exc:  # the scheduler reports it; nothing else will
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
        text = " ".join(f"{type(exc).__name__}: {exc}".split())
        write_text_atomic(text[:400] + where, out / f"rank{rank}.error")
        sys.exit(1)


def train_task(
    rank: int, world: int, init_method: str, task: RankTask, out: Path, entered_s: float
) -> dict[str, Any]:
    import torch
    import torch.distributed as dist

    from simplan.realtime import enter_realtime
    from simplan.runtime.worker import Heartbeat, build_trainer, maybe_fail
    from simplan.schedule.checkpointing import latest_checkpoint, load_checkpoint, save_checkpoint

    torch.set_num_threads(task.job.threads)
    enter_realtime(task.job.realtime)
    beat = Heartbeat(out, rank)
    dist.init_process_group(
        "gloo",
        init_method=init_method,
        rank=rank,
        world_size=world,
        timeout=dt.timedelta(seconds=2 * task.job.timeout_s + 30),
    )
    times = {"entered": entered_s}
    try:
        trainer = build_trainer(task.job, torch.device("cpu"), rank)
        times["built"] = time.time()
        folder = latest_checkpoint(task.ckpt_dir)
        # one module, or the pipeline stages' parts held as one (their parameters unchanged)
        parts = trainer.modules
        model = parts[0] if len(parts) == 1 else torch.nn.ModuleList(parts)
        start = load_checkpoint(folder, model, trainer.optimizer) if folder else 0
        times["loaded"] = time.time()
        step, losses, stopped = start, [], False
        while step < task.total_steps:
            beat.beat(2 * step)
            if stop_requested(task.stop_file):
                stopped = True
                break
            maybe_fail(task.fault, rank, step)
            losses.append(train_step(trainer))
            step += 1
            beat.beat(2 * step - 1)
        times["stepped"] = time.time()
        if stopped:
            save_checkpoint(task.ckpt_dir, model, trainer.optimizer, step)
        times["saved"] = time.time()
    finally:
        dist.destroy_process_group()
        beat.close()
    return {"rank": rank, "start_step": start, "end_step": step, "stopped": stopped,
            "losses": losses, "times": times}  # fmt: skip


def stop_requested(stop_file: str) -> bool:
    """Whether any rank sees the stop file (a MAX all-reduce: every rank gets the same answer)."""
    import torch
    import torch.distributed as dist

    flag = torch.tensor([1.0 if Path(stop_file).exists() else 0.0])
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item() > 0)


def train_step(trainer: Any) -> float:
    """One optimizer step of the runtime's trainer (simplan.runtime.compose.Trainer); returns
    the step's loss over the whole global batch (the same on every rank)."""
    trainer.forward_backward()
    trainer.optimizer_step()
    return float(trainer.step_loss())
