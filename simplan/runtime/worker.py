"""One rank of a real run (imports torch): set up torch.distributed, build the model and its
strategy, train on synthetic data, time every step, write the result as JSON.

Started by the launcher (torch.multiprocessing, spawn), or by torchrun:
    torchrun --standalone --nproc_per_node=2 -m simplan.runtime.worker JOB.json OUT_DIR
reads RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT from the environment.
"""

from __future__ import annotations

import datetime as dt
import mmap
import os
import struct
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from simplan.outputs import write_bytes_atomic, write_json_atomic, write_text_atomic
from simplan.ranks import enter_rank_process
from simplan.realtime import enter_realtime
from simplan.runtime.job import PROGRESS_FORMAT, WRONG_SPLIT, JobSpec, RankResult


def rank_entry(rank: int, world: int, init_method: str, job: JobSpec, out_dir: str) -> None:
    """The spawned process's target: its own process group (so the launcher can kill it and
    anything it starts), one line of error on failure."""
    enter_rank_process()
    try:
        result = train(rank, world, init_method, job, Path(out_dir))
        write_json_atomic(result.to_dict(), Path(out_dir) / f"rank{rank}.json")
    except BaseException as exc:  # the launcher reports it; nothing else will
        _write_error(Path(out_dir), rank, exc)
        sys.exit(1)


def _write_error(out_dir: Path, rank: int, exc: BaseException) -> None:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    write_text_atomic(text[:400] + where, out_dir / f"rank{rank}.error")


class Heartbeat:
    """A rank's progress marker, read by the launcher to find a rank that stopped advancing:
    an int64 in OUT_DIR/hb{rank} (simplan.runtime.launch.read_progress), updated through a
    shared memory map, so that an update is a store, not a system call: rewriting the file
    twice a step slowed the 1.5 ms DDP step of the MLP by about 0.1 ms on ext4 (journal work
    competing with the ranks), though outside the timed part of the step."""

    def __init__(self, out_dir: Path, rank: int) -> None:
        self.rank = rank
        path = write_bytes_atomic(struct.pack(PROGRESS_FORMAT, -1), out_dir / f"hb{rank}")
        self._file = path.open("r+b")
        self._map = mmap.mmap(self._file.fileno(), struct.calcsize(PROGRESS_FORMAT))

    def beat(self, progress: int) -> None:
        struct.pack_into(PROGRESS_FORMAT, self._map, 0, progress)

    def close(self) -> None:
        self._map.close()
        self._file.close()


def train(
    rank: int,
    world: int,
    init_method: str,
    job: JobSpec,
    out_dir: Path,
    local_rank: int | None = None,
) -> RankResult:
    """One rank's run: build the model -> warm-up steps -> timed steps (and what is measured
    beside them). local_rank: the rank on its machine (torchrun's LOCAL_RANK; default: rank),
    which picks its GPU."""
    import torch
    import torch.distributed as dist

    from simplan.runtime.memory import MemoryProbe

    torch.set_num_threads(job.threads)
    cuda = torch.cuda.is_available()
    # before any thread starts; not under PowerSGD: its hook's callbacks run on gloo's threads,
    # and a rank busy-waiting at SCHED_FIFO priority starved them (5 of 57 runs of
    # tests/runtime/test_sync_knobs.py stalled for the full no-progress limit; none in 70
    # without the real-time policy)
    scheduling = enter_realtime(job.realtime and not cuda and job.config.compress != "powersgd")
    local = rank if local_rank is None else local_rank
    device = torch.device(f"cuda:{local % torch.cuda.device_count()}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    beat = Heartbeat(out_dir, rank)
    dist.init_process_group(
        "nccl" if cuda else "gloo",
        init_method=init_method,
        rank=rank,
        world_size=world,
        # longer than the launcher's no-progress limit, which names the rank that stalled
        timeout=dt.timedelta(seconds=2 * job.timeout_s + 30),
    )
    try:
        probe = MemoryProbe(device)
        with probe.tracking():  # what the build and warm-up leave: parameters, state, data
            trainer = build_trainer(job, device, rank)
            _steps(job, trainer, device, beat, -job.warmup, job.warmup)  # warm-up
        # one more, untimed step after the warm-up (the optimizer's state exists by then)
        # measures the training's memory, before the in-run profile builds its own copy of the
        # model; its loss is recorded like the others'. A run without warm-up (simplan run, the
        # correctness oracle) trains exactly its steps and measures no memory
        memory = None
        if job.warmup:
            memory = probe.measure(
                trainer.forward_backward, trainer.optimizer_step, trainer.optimizer
            )
            trainer.record_loss()
        session = _profile_session(job, device) if job.profile_repeats else None
        step_s, opt_s, check, marks = _timed_rounds(job, trainer, session, device, beat)
        passes: list[tuple[float, float, float]] = []
        if session is not None:
            from simplan.profiles import write_profile

            write_profile(session.profile(), out_dir / f"profile{rank}.json")
            passes = session.passes_s()
            session.close()
        baseline = baseline_steps(job, device) if job.baseline_steps else []
    finally:
        dist.destroy_process_group()
        beat.close()
    return RankResult(
        rank=rank,
        step_s=tuple(step_s),
        optimizer_s=tuple(opt_s),
        **_memory_fields(memory),
        device=str(device),
        baseline_s=tuple(baseline),
        scheduling=scheduling,
        profile_passes_s=tuple(passes),
        check_s=tuple(check),
        losses=tuple(trainer.losses),
        averaged=tuple(a for a, _ in marks),
        param_checksums=tuple(c for _, c in marks),
    )


def _memory_fields(memory: Any) -> dict[str, Any]:
    """RankResult's memory fields from a StepMemory (none measured: the defaults)."""
    if memory is None:
        return {}
    return {
        "memory_parts": memory.parts_bytes,
        "tracked_peak_bytes": memory.tracked_peak_bytes,
        "peak_phase": memory.peak_phase,
        "peak_allocated_bytes": memory.peak_allocated_bytes,
        "peak_reserved_bytes": memory.peak_reserved_bytes,
    }


PROFILE_ROUNDS = 8  # the in-run profile's repeats, spread over the run in this many rounds


def _profile_session(job: JobSpec, device: Any) -> Any:
    """Every rank sets up the whole model for profiling, one thread each (simplan.timing)."""
    from simplan.timing import ProfileSession

    cfg = job.config
    return ProfileSession(
        job.model,
        device=str(device),
        micro_batch=cfg.micro_batch,
        seq_len=cfg.seq_len or None,
        dtype=cfg.dtype,
        warmup=5,
    )


def _shares(total: int, parts: int) -> list[int]:
    """`total` split into `parts` near-equal non-negative integers, larger ones first."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _timed_rounds(
    job: JobSpec, trainer: Any, session: Any, device: Any, beat: Heartbeat
) -> tuple[list[float], list[float], list[float], list[tuple[bool, float]]]:
    """The timed steps; with an in-run profile, in rounds that alternate with the profile's
    repeats (every rank at once, each pass after a barrier as each step is), so that the
    profile and the steps see the same machine: a host whose speed drifts by tens of percent
    within seconds (other tenants, frequency) would otherwise price the steps with the profile
    of another moment. Each block of steps after a profile round starts with one untimed step
    (the caches held the profile's model)."""
    import torch.distributed as dist

    rounds = min(PROFILE_ROUNDS, job.steps, job.profile_repeats) if session is not None else 1
    step_s: list[float] = []
    opt_s: list[float] = []
    check: list[float] = []
    marks: list[tuple[bool, float]] = []
    for repeats, steps in zip(
        _shares(job.profile_repeats, rounds), _shares(job.steps, rounds), strict=True
    ):
        if session is not None:
            session.run(repeats, before_pass=dist.barrier)
        check += _check_all_reduce(job.check_bytes, device)
        if session is not None or job.check_bytes:
            _steps(job, trainer, device, beat, len(step_s), 1)
        block = _steps(job, trainer, device, beat, len(step_s), steps)
        step_s += block[0]
        opt_s += block[1]
        marks += block[2]
    return step_s, opt_s, check, marks


CHECK_CALLS = 10  # all-reduces of job.check_bytes per round


def _check_all_reduce(nbytes: int, device: Any) -> list[float]:
    """CHECK_CALLS all-reduces of nbytes (fp32), each after a barrier, as bench-comm times them."""
    if nbytes <= 0:
        return []
    import torch
    import torch.distributed as dist

    from simplan.topology.bench import time_collective

    return time_collective(torch, dist, "all_reduce", nbytes, device, 1, CHECK_CALLS)[1]


def _sync(device: Any) -> Any:
    """What waits for the device's queued work (nothing on a CPU)."""
    import torch

    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def _steps(
    job: JobSpec, trainer: Any, device: Any, beat: Heartbeat, first: int, count: int
) -> tuple[list[float], list[float], list[tuple[bool, float]]]:
    """`count` training steps numbered from `first` (negative: warm-up), each after a barrier;
    (step times, optimizer times, and with local SGD per step whether it ended with a model
    average and the parameters' sum after it, untimed)."""
    import torch.distributed as dist

    sync = _sync(device)
    step_s, opt_s = [], []
    marks: list[tuple[bool, float]] = []
    for i in range(first, first + count):
        progress = i + job.warmup
        maybe_fail(job.fault, beat.rank, progress)
        beat.beat(2 * progress)
        dist.barrier()
        sync()
        t0 = time.perf_counter()
        trainer.forward_backward()
        sync()
        t1 = time.perf_counter()
        trainer.optimizer_step()
        sync()
        t2 = time.perf_counter()
        trainer.record_loss()  # untimed: one small all-reduce
        if job.config.local_sgd > 1:
            marks.append((trainer.averaged, trainer.param_checksum()))
        beat.beat(2 * progress + 1)
        step_s.append(t2 - t0)
        opt_s.append(t2 - t1)
    return step_s, opt_s, marks


def maybe_fail(fault: str, rank: int, step: int) -> None:
    """The fault a test injects: 'crash@RANK:STEP' raises, 'hang@RANK:STEP' stalls for good,
    in that rank before that step."""
    if not fault or fault == WRONG_SPLIT:
        return
    kind, _, where = fault.partition("@")
    at_rank, _, at_step = where.partition(":")
    if int(at_rank) != rank or int(at_step) != step:
        return
    if kind == "crash":
        raise RuntimeError(f"injected crash at step {step}")
    while kind == "hang":
        time.sleep(1.0)


def build_trainer(job: JobSpec, device: Any, rank: int) -> Any:
    """The job's model on this rank, composed as its configuration says (runtime.compose)."""
    from simplan.runtime.compose import build_trainer as compose

    return compose(job, device)


def baseline_steps(job: JobSpec, device: Any) -> list[float]:
    """Median forward+backward (with the loss) of the whole unsplit model over one replica's
    micro-batches, on every rank at once (barrier-aligned), with no communication: the compute
    the ranks manage side by side on this machine, to compare with the profile's."""
    import torch.distributed as dist

    from simplan.runtime.compose import loss_of, micro_batches, seeded_model_and_batch

    cfg = job.config
    _, model, inputs, target = seeded_model_and_batch(job.model, cfg, device)
    per_replica = cfg.global_batch // cfg.dp
    n = cfg.num_microbatches
    batches = micro_batches(tuple(x[:per_replica] for x in inputs), target[:per_replica], n)
    sync = _sync(device)
    times = []
    for i in range(2 + job.baseline_steps):
        dist.barrier()
        sync()
        t0 = time.perf_counter()
        for x, t in batches:
            (loss_of(model(*x), t) / n).backward()
        sync()
        if i >= 2:
            times.append(time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
    return times


def main(argv: list[str] | None = None) -> int:
    """torchrun entry: JOB.json (a validation record's or `JobSpec` JSON) and an output folder."""
    from simplan.io import read_json
    from simplan.runtime.launch import job_from_dict

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m simplan.runtime.worker JOB.json OUT_DIR", file=sys.stderr)
        return 2
    job = job_from_dict(read_json(args[0]))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    Path(args[1]).mkdir(parents=True, exist_ok=True)
    result = train(rank, world, "env://", job, Path(args[1]), local_rank)
    write_json_atomic(result.to_dict(), Path(args[1]) / f"rank{rank}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
