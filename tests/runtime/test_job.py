"""The runtime's plain values and the launcher's messages (no processes started)."""

from __future__ import annotations

import dataclasses
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest

from simplan.errors import SimplanError
from simplan.parallel import ParallelConfig
from simplan.ranks import failure_message, hang_message
from simplan.runtime import JobSpec, Measurement, RankResult, config_for, strategy_of
from simplan.runtime.job import runtime_refusal
from simplan.runtime.launch import job_from_dict, job_to_dict, read_progress, run_watch
from simplan.runtime.worker import Heartbeat
from simplan.sources import load_model
from simplan.validate import read_record, write_record
from tests.helpers import mlp_profile_with
from tests.plan_files import TINY_MODEL


def test_config_for_each_strategy() -> None:
    assert config_for("ddp", 2, micro_batch=8).dp == 2
    fsdp = config_for("fsdp", 2, micro_batch=8)
    assert (fsdp.dp, fsdp.zero) == (2, 3)
    assert config_for("tp", 2, micro_batch=8).tp == 2
    pp = config_for("pp", 2, micro_batch=8, schedule="interleaved", virtual_stages=2)
    assert (pp.pp, pp.num_microbatches, pp.chunks) == (2, 4, 4)
    assert [strategy_of(c) for c in (fsdp, pp)] == ["fsdp", "pp"]


@pytest.mark.parametrize(
    ("strategy", "nprocs", "needle"),
    [("zero2", 2, "unknown strategy 'zero2'"), ("ddp", 0, "--nprocs must be >= 1")],
)
def test_config_for_rejects_bad_input(strategy: str, nprocs: int, needle: str) -> None:
    with pytest.raises(SimplanError, match=needle):
        config_for(strategy, nprocs, micro_batch=1)


def test_strategy_names_the_composition() -> None:
    def cfg(**kw: object) -> ParallelConfig:
        return ParallelConfig(global_batch=8, dtype="fp32", **kw)  # type: ignore[arg-type]

    assert strategy_of(cfg(dp=2, tp=2)) == "ddp x tp"
    assert strategy_of(cfg(dp=2, pp=2, zero=3)) == "pp x fsdp"
    assert strategy_of(cfg(tp=2, pp=2, sequence_parallel=True)) == "pp x tp+sp"
    assert strategy_of(cfg(dp=2, zero=2, recompute="full")) == "zero2+recompute-full"


def test_runtime_rejects_what_it_cannot_run(tmp_path: Path) -> None:
    with pytest.raises(SimplanError, match="ZeRO-1 with tp has no exact torch equivalent"):
        strategy_of(ParallelConfig(dp=2, tp=2, zero=1, global_batch=2, dtype="fp32"))
    with pytest.raises(SimplanError, match="needs DDP only"):
        JobSpec(model="mlp", config=config_for("tp", 2, micro_batch=1, compress="fp16"))
    mlp = load_model("mlp")
    base = ParallelConfig(global_batch=8, dtype="fp32")
    cases = {
        "selective recomputation recomputes attention": base.replace(recompute="selective"),
        "sequence parallelism needs transformer blocks": base.replace(tp=2, sequence_parallel=True),
        "tp x pp needs transformer blocks": base.replace(tp=2, pp=2),
        "per-op checkpointing (recompute op) wraps transformer blocks": base.replace(
            recompute="op"
        ),
    }
    for needle, config in cases.items():
        assert needle in runtime_refusal(config, mlp)
    (tmp_path / "tied.toml").write_text(TINY_MODEL)  # ties its embeddings (the default)
    tied = load_model(str(tmp_path / "tied.toml"))
    for split in (base.replace(pp=2), base.replace(tp=2)):
        assert "tie_embeddings = false" in runtime_refusal(split, tied)
    assert runtime_refusal(base.replace(dp=2, zero=1, recompute="selective"), tied) == ""
    assert runtime_refusal(base.replace(dp=2, zero=1, recompute="op"), tied) == ""
    assert "runs without tensor parallelism (tp 2)" in runtime_refusal(
        base.replace(tp=2, recompute="op"), tied
    )


def test_job_round_trips_through_json() -> None:
    job = JobSpec(model="mlp", config=config_for("pp", 2, micro_batch=4), steps=7)
    assert job_from_dict(job_to_dict(job)) == job


def test_measurement_takes_the_slowest_rank_per_step() -> None:
    job = JobSpec(model="mlp", config=config_for("ddp", 2, micro_batch=4))
    ranks = tuple(
        RankResult(
            rank=r,
            step_s=s,
            optimizer_s=(0.1,) * 3,
            device="cpu",
        )
        for r, s in enumerate([(1.0, 5.0, 2.0), (3.0, 1.0, 2.5)])
    )
    m = Measurement(job=job, ranks=ranks, wall_s=1.0)
    assert m.per_step_s == (3.0, 5.0, 2.5)
    assert m.step_time_s == 3.0
    assert m.to_dict()["ranks"][1]["median_step_s"] == 2.5


def _procs(*codes: int | None) -> list[SimpleNamespace]:
    return [SimpleNamespace(exitcode=c) for c in codes]


def test_failure_message_prefers_the_root_cause(tmp_path: Path) -> None:
    (tmp_path / "rank0.error").write_text("RuntimeError: Connection closed by peer")
    (tmp_path / "rank1.error").write_text("RuntimeError: injected crash at step 3")
    errors = run_watch(tmp_path, 2).errors()
    msg = failure_message(_procs(1, 1), errors)  # type: ignore[arg-type]
    assert msg == "rank 1 failed: RuntimeError: injected crash at step 3; stopped all 2 ranks"
    killed = failure_message(_procs(1, -signal.SIGKILL), errors)  # type: ignore[arg-type]
    assert killed.startswith("rank 1 was killed by SIGKILL")


def test_hang_message_names_the_rank_behind(tmp_path: Path) -> None:
    watch = run_watch(tmp_path, 2)
    assert hang_message({0: 6, 1: 5}, 5, watch).startswith(
        "rank 1 made no progress for 5 s (at step 2)"
    )
    assert "during start-up" in hang_message({0: -1, 1: -1}, 5, watch)


def test_a_heartbeat_is_read_by_the_launcher(tmp_path: Path) -> None:
    assert read_progress(tmp_path / "hb0") == -1  # not started
    beat = Heartbeat(tmp_path, 0)
    try:
        assert read_progress(tmp_path / "hb0") == -1
        beat.beat(7)
        assert read_progress(tmp_path / "hb0") == 7
        beat.beat(123456789012)
        assert read_progress(tmp_path / "hb0") == 123456789012
    finally:
        beat.close()


def test_records_are_never_overwritten(tmp_path: Path) -> None:
    record = {"schema": {"kind": "validation-record", "version": 1}, "configuration": "mlp ddp"}
    a, b = write_record(record, tmp_path), write_record(record, tmp_path)
    assert a != b and len(list(tmp_path.iterdir())) == 2
    assert read_record(a)["configuration"] == "mlp ddp"


def test_rank_results_of_records_before_memory_was_measured_still_load() -> None:
    old = {
        "rank": 1,
        "step_s": [1.0],
        "optimizer_s": [0.1],
        "peak_memory_bytes": 0.0,
        "memory_method": "ru_maxrss delta",
        "device": "cpu",
    }
    r = RankResult.from_dict(old)
    assert (r.tracked_peak_bytes, r.memory_parts, r.peak_phase) == (0, {}, "")
    new = RankResult(
        rank=0,
        step_s=(1.0,),
        optimizer_s=(0.1,),
        device="cpu",
        memory_parts={"parameters": 8, "activations": 4},
        tracked_peak_bytes=12,
        peak_phase="forward_backward",
    )
    assert RankResult.from_dict(new.to_dict()) == new


def _rank(rank: int, passes: list[tuple[float, float, float]]) -> RankResult:
    return RankResult(
        rank=rank,
        step_s=(1.0,),
        optimizer_s=(0.1,),
        device="cpu",
        profile_passes_s=tuple(passes),
    )


def test_the_in_run_profile_counts_each_pass_at_its_slowest_rank() -> None:
    from simplan.profiles import LayerTiming
    from simplan.runtime.job import slowest_rank_profile

    profile = mlp_profile_with(1.0, 1.0, optimizer_s=0.5, optimizer_fixed_s=0.01)
    a = [(1.0, 2.0, 0.3), (1.0, 1.0, 0.3), (3.0, 3.0, 0.3)]  # (fwd, bwd, optimizer) per pass
    b = [(1.5, 1.0, 0.2), (2.0, 2.0, 0.4), (1.0, 1.0, 0.2)]
    slow = slowest_rank_profile(profile, (_rank(0, a), _rank(1, b)))
    # slowest per pass: a[0] (3.3 > 2.7), b[1] (4.4 > 2.3), a[2] (6.3 > 2.2)
    assert slow.whole_model == LayerTiming(fwd_s=2.0, bwd_s=2.0, repeats=3)
    assert slow.optimizer_s == pytest.approx(0.3)
    assert slow.timings == profile.timings
    assert slowest_rank_profile(profile, (_rank(0, a), _rank(1, []))) == profile


def test_the_calibration_check_is_the_median_of_the_slowest_rank_per_call() -> None:
    a = dataclasses.replace(_rank(0, []), check_s=(1.0, 5.0, 2.0))
    b = dataclasses.replace(_rank(1, []), check_s=(3.0, 1.0, 1.0))
    job = JobSpec(model="mlp", config=config_for("ddp", 2, micro_batch=8))
    assert Measurement(job=job, ranks=(a, b), wall_s=1.0).check_s == 3.0  # max: 3, 5, 2
    assert Measurement(job=job, ranks=(_rank(0, []),), wall_s=1.0).check_s is None
    again = RankResult.from_dict(a.to_dict())
    assert again == a


def test_the_local_cluster_holds_every_rank_of_a_larger_plan() -> None:
    from simplan.validate import local_cluster

    for world in (1, 2, 4, 8):
        cluster = local_cluster(world)
        assert (cluster.num_devices, cluster.nodes) == (world, 1)


def test_a_record_from_before_the_compress_field_reads_back() -> None:
    from simplan.runtime import job_from_dict

    config = config_for("ddp", 2, micro_batch=4).to_dict()
    job = job_from_dict({"job": {"model": "mlp", "config": config, "comm_hook": "fp16"}})
    assert job.config.compress == "fp16" and job.strategy == "ddp+fp16"


def test_local_sgd_step_time_is_the_mean_over_a_period_of_its_medians() -> None:
    from simplan.runtime.job import Measurement, RankResult

    job = JobSpec(model="mlp", config=config_for("ddp", 2, micro_batch=4, local_sgd=4))
    flags = (True, False, False, False) * 2
    steps = (2.0, 1.0, 1.0, 1.0, 2.2, 1.1, 0.9, 1.0)
    ranks = tuple(
        RankResult(rank=r, step_s=steps, optimizer_s=steps, device="cpu", averaged=flags)
        for r in range(2)
    )
    measured = Measurement(job=job, ranks=ranks, wall_s=1.0)
    local = measured.local_sgd_steps
    assert local is not None and (local["sync_steps"], local["local_steps"]) == (2, 6)
    assert local["sync_step_s"] == pytest.approx(2.1) and local["local_step_s"] == 1.0
    assert measured.step_time_s == pytest.approx((2.1 + 3 * 1.0) / 4)
