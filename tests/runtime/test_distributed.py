"""Real runs on 2 gloo ranks: every strategy trains, failures end the run, nothing is left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simplan.runtime import JobSpec, RankFailure, config_for, run_job
from tests.helpers import ROOT

pytestmark = pytest.mark.distributed


def _children(pid: int) -> list[int]:
    """Live processes whose parent is `pid` (zombies excluded)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize(
    ("strategy", "extra"),
    [("ddp", {}), ("fsdp", {}), ("tp", {}), ("pp", {"schedule": "gpipe"})],
)
def test_each_strategy_trains_the_mlp(strategy: str, extra: dict) -> None:
    config = config_for(strategy, 2, micro_batch=16, **extra)
    m = run_job(JobSpec(model="mlp", config=config, steps=3, warmup=1, timeout_s=60))
    assert len(m.ranks) == 2 and all(len(r.step_s) == 3 for r in m.ranks)
    assert 0 < m.step_time_s < 5 and m.optimizer_s > 0
    for r in m.ranks:  # one more, untimed step measured its tensor memory
        assert r.memory_parts["parameters"] > 0 and r.memory_parts["optimizer"] > 0
        assert sum(r.memory_parts.values()) == r.tracked_peak_bytes
        assert r.peak_phase in ("forward_backward", "optimizer_step")
    assert not _ranks(os.getpid())


def test_a_crashing_rank_ends_the_run() -> None:
    job = JobSpec(
        model="mlp",
        config=config_for("ddp", 2, micro_batch=8),
        steps=5,
        warmup=1,
        timeout_s=60,
        fault="crash@1:3",
    )
    with pytest.raises(RankFailure, match=r"^rank 1 failed: RuntimeError: injected crash"):
        run_job(job)
    assert not _ranks(os.getpid())


def test_a_hanging_rank_ends_the_run_within_its_timeout() -> None:
    """Rank 1 hangs after step 2. The limit on a rank's silence also bounds its start-up
    (spawn, import torch, gloo's rendezvous): 2-3 s on an idle machine, over 20 s on one
    loaded five times over. So the limit is three times the wall time of a one-step run just
    before (at least 5 s). The run ends no sooner than the limit after the call (the last
    progress came after it), and no later than the limit after the start-up, which the
    message shows ended within one limit too ("at step 2", not "during start-up")."""
    config = config_for("ddp", 2, micro_batch=8)
    probe = run_job(JobSpec(model="mlp", config=config, steps=1, warmup=0, baseline_steps=0))
    timeout_s = float(max(5, round(3 * probe.wall_s)))
    job = JobSpec(
        model="mlp", config=config, steps=5, warmup=1, timeout_s=timeout_s, fault="hang@1:3"
    )
    started = time.monotonic()
    message = rf"^rank 1 made no progress for {timeout_s:g} s \(at step 2\)"
    with pytest.raises(RankFailure, match=message):
        run_job(job)
    elapsed = time.monotonic() - started
    assert timeout_s <= elapsed < 2 * timeout_s + 5  # 5 s: the steps, stopping the ranks
    assert not _ranks(os.getpid())


def _cli(*args: str, cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(
        [sys.executable, "-m", "simplan", *args],
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _ranks(pid: int) -> list[int]:
    """Rank processes started by `pid` (not multiprocessing's resource tracker)."""
    return [c for c in _children(pid) if b"spawn_main" in _cmdline(c)]


def _wait_for_ranks(pid: int, n: int, timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ranks = _ranks(pid)
        if len(ranks) == n:
            return ranks
        time.sleep(0.1)
    raise AssertionError(f"{n} ranks did not start within {timeout_s} s")


def test_killed_rank_ends_the_cli_run_and_leaves_no_process(tmp_path: Path) -> None:
    proc = _cli(
        "validate",
        "--model",
        "mlp",
        "--nprocs",
        "2",
        "--micro-batch",
        "8",
        "--steps",
        "1000000",
        cwd=tmp_path,
    )
    ranks: list[int] = []
    try:
        ranks = _wait_for_ranks(proc.pid, 2, timeout_s=90)
        time.sleep(3)  # let them train
        os.kill(ranks[1], signal.SIGKILL)
        killed_at = time.monotonic()
        _, err = proc.communicate(timeout=60)
        assert time.monotonic() - killed_at < 60
        assert proc.returncode == 2
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "rank 1 was killed by SIGKILL" in lines[0], err
        assert not any(_alive(pid) for pid in ranks)
        assert not list((tmp_path / "traces" / "runs").glob("*.json"))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in ranks:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_cli_validates_the_mlp_and_records_it(tmp_path: Path) -> None:
    proc = _cli(
        "validate", "--model", "mlp", "--nprocs", "2", "--steps", "20", "--json", cwd=tmp_path
    )
    try:
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err
    record = json.loads(out)
    assert record["predicted_step_s"] > 0 and record["measured_step_s"] > 0
    assert record["rel_error"] == pytest.approx(
        (record["predicted_step_s"] - record["measured_step_s"]) / record["measured_step_s"]
    )
    assert record["environment"]["threads_per_rank"] == 1
    assert len(record["per_rank_step_s"]) == 2
    memory = record["memory"]  # predicted against measured tensor memory, per rank
    assert [row["rank"] for row in memory["ranks"]] == [0, 1]
    for row in memory["ranks"]:
        assert row["measured_peak_bytes"] > 0 and row["predicted_peak_bytes"] > 0
        params = row["components"]["parameters"]  # one replica of the MLP in fp32
        assert params["measured_bytes"] == params["predicted_bytes"] == 101_770 * 4
    assert Path(tmp_path / record["path"]).is_file()
    assert record["calibration"]["path"].endswith("gloo-2ranks.json")
    assert record["calibration"]["date"]
    check = record["calibration_check"]  # the calibration's smallest all-reduce, timed in-run
    assert check["size_B"] == 64 * 1024 and check["measured_s"] > 0
    assert check["ratio"] == pytest.approx(check["measured_s"] / check["calibrated_s"])
    ranks = record["measured"]["ranks"]
    assert all(len(r["check_s"]) == len(ranks[0]["check_s"]) > 0 for r in ranks)
    assert len(ranks[0]["profile_passes_s"]) == 30  # the in-run profile, every pass kept
    policies = {r["scheduling"] for r in record["measured"]["ranks"]}
    assert len(policies) == 1 and policies <= {"SCHED_FIFO", "default"}
    if os.geteuid() == 0:  # root may raise its ranks to real-time
        assert policies == {"SCHED_FIFO"}
