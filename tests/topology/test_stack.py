"""The training stack a cluster's GPU rates describe: fitted (the presets) or kernels."""

from __future__ import annotations

from pathlib import Path

import pytest

from simplan.devices import KERNEL_OVERHEAD_S, get_device
from simplan.errors import SimplanError
from simplan.topology import load_cluster
from tests.helpers import ROOT, assert_one_line_error, run_cli

SIMULATE = (
    "simulate", "--model", "gpt3-1.3b", "--cluster", "dgx-h100", "--global-batch", "64",
    "--micro-batch", "4", "--seq-len", "2048",
)  # fmt: skip


def test_kernels_stack_takes_the_measured_matrix_rate_and_the_launch_floor() -> None:
    fitted = load_cluster("dgx-h100").device_model(0)
    kernels = load_cluster("dgx-h100", stack="kernels").device_model(0)
    assert fitted == get_device("h100-sxm")
    assert fitted.stack_gemm_efficiency < 1.0
    assert kernels.stack_gemm_efficiency == 1.0
    assert kernels.gemm_efficiency == fitted.gemm_efficiency  # the device's own rate stays
    assert kernels.matrix_efficiency == kernels.gemm_efficiency
    assert kernels.kernel_overhead_s == KERNEL_OVERHEAD_S
    # a matrix product long enough to be rate-bound runs faster by exactly the stack's share
    flops = 1e13
    ratio = fitted.gemm_time_s(flops, "bf16") / kernels.gemm_time_s(flops, "bf16")
    assert ratio == pytest.approx(1.0 / fitted.stack_gemm_efficiency, rel=1e-9)


def test_cpu_devices_are_measured_and_stay_as_they_are() -> None:
    fitted = load_cluster("localhost-cpu").device_model(0)
    assert load_cluster("localhost-cpu", stack="kernels").device_model(0) == fitted


def test_a_cluster_file_sets_the_stack(tmp_path: Path) -> None:
    text = (ROOT / "simplan/topology/presets/dgx-h100.toml").read_text(encoding="utf-8")
    path = tmp_path / "kernels.toml"
    path.write_text('stack = "kernels"\n' + text, encoding="utf-8")
    cluster = load_cluster(path)
    assert cluster.spec.stack == "kernels"
    assert cluster.device_model(0).stack_gemm_efficiency == 1.0
    with pytest.raises(SimplanError, match="drop the stack line"):
        load_cluster(path, stack="fitted")
    path.write_text('stack = "fast"\n' + text, encoding="utf-8")
    with pytest.raises(SimplanError, match="stack"):
        load_cluster(path)


def _step_ms(stdout: str) -> float:
    line = next(x for x in stdout.splitlines() if x.startswith("step time"))
    return float(line.split()[2])


def test_simulate_stack_flag_changes_the_step_and_is_refused_beside_a_plan() -> None:
    fitted = run_cli(*SIMULATE)
    kernels = run_cli(*SIMULATE, "--stack", "kernels")
    assert fitted.returncode == 0, fitted.stderr
    assert kernels.returncode == 0, kernels.stderr
    assert _step_ms(kernels.stdout) < 0.8 * _step_ms(fitted.stdout)
    assert_one_line_error(run_cli(*SIMULATE, "--stack", "fast"), "--stack")
    refused = run_cli("simulate", "--plan", "no-such-plan.json", "--stack", "kernels")
    assert_one_line_error(refused, "--stack")


def test_plan_stack_is_written_to_the_plan_file_and_read_back(tmp_path: Path) -> None:
    import json

    plan = run_cli(
        "plan", "--model", "gpt3-1.3b", "--cluster", "dgx-h100", "--global-batch", "64",
        "--seq-len", "2048", "--stack", "kernels", "--out", str(tmp_path / "k"),
    )  # fmt: skip
    assert plan.returncode == 0, plan.stderr
    doc = json.loads((tmp_path / "k" / "plan.json").read_text(encoding="utf-8"))
    assert doc["cluster"]["stack"] == "kernels"
    planned_s = doc["predicted"]["step_time_s"]
    again = run_cli("simulate", "--plan", str(tmp_path / "k" / "plan.json"))
    assert again.returncode == 0, again.stderr
    assert _step_ms(again.stdout) == pytest.approx(1e3 * planned_s, rel=1e-3)
    # the same plan without its stack simulates under the presets' fitted stack: slower
    del doc["cluster"]["stack"]
    (tmp_path / "fitted.json").write_text(json.dumps(doc), encoding="utf-8")
    fitted = run_cli("simulate", "--plan", str(tmp_path / "fitted.json"))
    assert fitted.returncode == 0, fitted.stderr
    assert _step_ms(fitted.stdout) > 1.2 * _step_ms(again.stdout)
