"""benchmarks/gpu_offload.py: its argument parsing, the prediction beside each measurement and
the record's format, checked on CPU by --smoke (where offload is refused by the runtime: the
record says so); on a GPU the same run measures both modes."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_offload.py"


def _module():
    if "gpu_offload" not in sys.modules:
        spec = importlib.util.spec_from_file_location("gpu_offload", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules["gpu_offload"] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["gpu_offload"]


def test_arguments_default_to_a_model_that_shows_offload_on_one_h200():
    args = _module().parse_args([])
    assert (args.model, args.cluster, args.micro_batch, args.seq_len) == (
        "gpt3-1.3b", "h200-1gpu", 2, 2048,
    )  # fmt: skip
    smoke = _module().parse_args(["--smoke"])
    assert smoke.model == "gpt-tiny" and smoke.steps == 2


@pytest.mark.parametrize("bad", [["--steps", "0"], ["--warmup", "-1"], ["--seq-len", "-2"]])
def test_bad_arguments_are_refused(bad):
    with pytest.raises(SystemExit) as err:
        _module().parse_args(bad)
    assert err.value.code == 2


def test_the_prediction_for_the_default_model_shows_what_offload_saves():
    module = _module()
    args = module.parse_args([])
    rows = [module.predicted(args, module.Row(mode=m)) for m in module.MODES]
    none, off = rows
    params = off.predicted_d2h_bytes / 4  # fp32 gradients, one rank
    # fp32 Adam's two moments leave the device; the host holds them, the gradients and the
    # fp32 parameters: 16 bytes per parameter
    assert none.predicted_peak_bytes - off.predicted_peak_bytes == pytest.approx(8 * params)
    assert off.predicted_host_bytes == pytest.approx(16 * params)
    assert off.predicted_h2d_bytes == pytest.approx(4 * params)
    assert off.predicted_step_time_s > none.predicted_step_time_s
    assert none.predicted_host_bytes is None
    assert off.predicted_memory["optimizer"] == 0.0
    assert none.predicted_memory["optimizer"] == pytest.approx(8 * params)


def test_smoke_writes_one_record_with_both_modes(tmp_path):
    runs = tmp_path / "runs"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--runs-dir", str(runs)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (path,) = runs.glob("*-gpu-offload-gpt-tiny-*.json")
    doc = json.loads(path.read_text())
    assert doc["schema"] == {"kind": "gpu-offload", "version": 1}
    meta = doc["meta"]
    assert meta["torch_version"] and meta["device"] and "driver" in meta and "cuda" in meta
    assert len(meta["commit"].removesuffix("+dirty")) == 40
    assert "CPUOffloadPolicy" in doc["runtime_offloads"]
    assert "ZeRO-Offload" in doc["simulated_offloads"]
    assert doc["host_adam"]["params_per_s"] > 0
    rows = {r["mode"]: r for r in doc["rows"]}
    assert list(rows) == ["none", "optimizer"]
    for row in rows.values():
        assert row["predicted_step_time_s"] > 0 and row["predicted_peak_bytes"] > 0
    assert rows["none"]["step_time_s"] > 0 and rows["none"]["error"] == ""
    cuda = not meta["device"].startswith("cpu")
    if cuda:
        off = rows["optimizer"]
        assert off["error"] == "" and off["step_time_s"] > 0
        assert off["max_memory_allocated_bytes"] < rows["none"]["max_memory_allocated_bytes"]
    else:
        assert "needs CUDA devices" in rows["optimizer"]["error"]
    assert str(path) in done.stdout
