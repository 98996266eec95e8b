"""benchmarks/gpu_recompute.py --smoke: every recomputation mode through the runtime on a tiny
model (on the CPU here, on the GPU where there is one), one record with its metadata."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_recompute.py"


def test_smoke_runs_every_mode_and_writes_one_record(tmp_path) -> None:
    runs = tmp_path / "runs"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--runs-dir", str(runs)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (path,) = runs.glob("*-gpu-recompute-gpt-tiny-*.json")
    doc = json.loads(path.read_text())
    assert doc["schema"]["kind"] == "gpu-recompute"
    meta = doc["meta"]
    assert meta["torch_version"] and meta["device"]
    assert len(meta["commit"].removesuffix("+dirty")) == 40
    rows = {r["mode"]: r for r in doc["rows"]}
    assert list(rows) == ["none", "selective", "op", "full"]
    none = rows["none"]
    assert none["step_time_s"] > 0 and len(none["step_s"]) == 2 and none["error"] == ""
    cuda = "cpu" not in meta["device"]
    assert doc["simulated_on"] == "localhost-cpu"
    for row in rows.values():
        assert row["predicted_step_time_s"] > 0 and row["predicted_peak_bytes"] > 0
    # the simulator's view, beside the measurement: full recomputation trades time for memory
    assert rows["full"]["predicted_peak_bytes"] < none["predicted_peak_bytes"]
    assert rows["full"]["predicted_step_time_s"] > none["predicted_step_time_s"]
    # per-op checkpointing replays less than full recomputation and keeps no more than none
    # (gpt-tiny's peak is the output head's, the same under op and full)
    op = rows["op"]
    assert none["predicted_step_time_s"] < op["predicted_step_time_s"]
    assert op["predicted_step_time_s"] < rows["full"]["predicted_step_time_s"]
    peaks = [rows[m]["predicted_peak_bytes"] for m in ("full", "op", "none")]
    assert peaks == sorted(peaks)
    for row in rows.values():  # the runtime runs every mode: each one measured
        assert row["error"] == "", row["error"]
        assert row["runtime_peak_bytes"] > 0 and row["runtime_peak_phase"]
        assert row["step_time_s"] > 0 and row["micro_batch"] == none["micro_batch"]
        if cuda:
            assert row["max_memory_reserved_bytes"] >= row["max_memory_allocated_bytes"] > 0
    if cuda and not rows["full"]["error"]:
        # full recomputation keeps one input per block instead of every activation
        assert rows["full"]["max_memory_allocated_bytes"] < none["max_memory_allocated_bytes"]
    for mode in rows:
        assert mode in done.stdout
    assert str(path) in done.stdout


def test_bad_modes_are_refused(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--modes", "none,partial",
         "--runs-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2 and "--modes takes some of" in done.stderr
    assert not list(tmp_path.iterdir())
