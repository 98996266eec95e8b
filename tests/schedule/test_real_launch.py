"""Real launches of a scheduled job: a DCP checkpoint and restart continue the losses of an
uninterrupted run; a crashed or hung rank ends the launch with every rank stopped."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from simplan.ranks import RankFailure
from simplan.runtime import JobSpec, config_for
from simplan.runtime.launch import read_progress
from simplan.schedule.real_launch import Launch, rank_context
from simplan.schedule.real_rank import RankTask
from tests.helpers import process_gone

pytestmark = pytest.mark.distributed

STEPS = 40  # a stop asked for at step 2 has ~38 steps (seconds) to land before the last one


@pytest.fixture(scope="module")
def context() -> object:
    return rank_context()


def _task(tmp: Path, name: str, *, steps: int = STEPS, fault: str = "", timeout_s: float = 60):
    job = JobSpec(
        model="gpt-tiny",
        config=config_for("ddp", 2, micro_batch=2, global_batch=4, seq_len=32),
        warmup=0,
        baseline_steps=0,
        timeout_s=timeout_s,
    )
    folder = tmp / name
    folder.mkdir()
    return RankTask(job=job, total_steps=steps, ckpt_dir=str(folder / "ckpt"),
                    stop_file=str(folder / "stop"), fault=fault)  # fmt: skip


def test_restart_from_checkpoint_continues_the_losses(tmp_path: Path, context: object) -> None:
    whole = Launch(_task(tmp_path, "whole"), 2, tmp_path / "whole" / "run", context).wait()
    assert whole["start_step"] == 0 and whole["end_step"] == STEPS and not whole["stopped"]

    task = _task(tmp_path, "parts")
    first = Launch(task, 2, tmp_path / "parts" / "run0", context)
    deadline = time.monotonic() + 60
    while read_progress(tmp_path / "parts" / "run0" / "hb0") < 2 * 2:  # step 2 has begun
        assert time.monotonic() < deadline, "the first launch made no progress"
        first.poll()
        time.sleep(0.01)
    first.request_stop()
    part = first.wait()
    stopped_at = part["end_step"]
    assert part["stopped"] and 2 <= stopped_at < STEPS
    assert (Path(task.ckpt_dir) / "latest").is_file()

    Path(task.stop_file).unlink()
    rest = Launch(task, 2, tmp_path / "parts" / "run1", context).wait()
    assert rest["start_step"] == stopped_at and rest["end_step"] == STEPS
    assert len(part["losses"]) + len(rest["losses"]) == STEPS
    assert part["losses"] + rest["losses"] == pytest.approx(whole["losses"], rel=1e-6)
    # training moved: a restart from scratch would repeat the first losses instead
    assert rest["losses"][0] != pytest.approx(whole["losses"][0], rel=1e-6)


@pytest.mark.parametrize(
    ("fault", "timeout_s", "message"),
    [("crash@1:2", 60, "rank 1 failed: RuntimeError: injected crash at step 2"),
     ("hang@0:1", 3, "made no progress for 3 s")],
)  # fmt: skip
def test_a_failed_launch_stops_every_rank(
    tmp_path: Path, context: object, fault: str, timeout_s: float, message: str
) -> None:
    launch = Launch(_task(tmp_path, "f", fault=fault, timeout_s=timeout_s), 2,
                    tmp_path / "f" / "run", context)  # fmt: skip
    pids = [p.pid for p in launch.procs]
    with pytest.raises(RankFailure, match=message):
        launch.wait()
    assert all(p is not None and process_gone(p) for p in pids)
    launch.close()  # closing again is harmless
    assert os.getpid()  # the test process itself is untouched
