"""benchmarks/gpu_check.py --cpu-smoke: every part of the GPU check kit on tiny shapes on the CPU,
without the simulator's dependencies (the GPU image has torch but no simpy or pulp), and the
record it writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
WITHOUT_SIMULATOR = (
    "import runpy, sys\n"
    "for name in ('simpy', 'pulp', 'highspy'):\n"
    "    sys.modules[name] = None  # importing them fails, as on the GPU image\n"
    "sys.argv = [sys.argv[0], *sys.argv[1:]]\n"
    f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n"
)


def test_cpu_smoke_runs_every_part_and_writes_one_record(tmp_path: Path) -> None:
    from simplan.profiles import read_profile

    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_SIMULATOR, "--cpu-smoke", "--out-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=400, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (path,) = tmp_path.glob("*-gpu-check-*.json")
    doc = json.loads(path.read_text())
    assert doc["schema"] == {"kind": "gpu-check", "version": 1}
    meta = doc["meta"]
    for key in ("device", "driver", "cuda", "torch_version", "date", "commit"):
        assert meta[key], key
    assert set(doc["elapsed_s"]) == {"gemm", "profiles", "fp8_blocks", "training"}
    # the three projections of each hidden size (100 is off every tile multiple), per dtype
    gemms = doc["gemm"]
    assert {(g["n"], g["k"]) for g in gemms if g["k"] == 100 or g["n"] == 100} == {
        (300, 100), (400, 100), (100, 400)
    }  # fmt: skip
    assert {g["dtype"] for g in gemms} == {"fp32", "bf16", "fp8"}
    for g in gemms:
        assert g["error"] == "" and g["tflops"] == 2 * g["m"] * g["n"] * g["k"] / g["time_s"] / 1e12
    (profile,) = doc["profiles"]
    assert read_profile(profile["path"]).model.name == "gpt-tiny"
    assert doc["fp8_blocks"][0]["model"] == "gpt-tiny"
    rows = {r["mode"]: r for r in doc["training"]}
    assert list(rows) == ["none", "selective", "op", "full"]
    for row in rows.values():
        assert row["error"] == "" and row["step_time_s"] > 0 and row["runtime_peak_bytes"] > 0
    assert "max_memory_reserved_bytes" in rows["none"] and "context_bytes" in doc["memory"]
    assert str(path) in done.stdout
    # back where the simulator is: the record beside the device model and simulate()
    compared = subprocess.run(
        [sys.executable, str(SCRIPT), "--compare", str(path), "--cluster", "localhost-cpu"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert compared.returncode == 0, compared.stderr[-2000:]
    assert "cpu model TFLOP/s" in compared.stdout and "simulated peak GiB" in compared.stdout
    for mode in rows:
        assert f"\n{mode} " in compared.stdout
