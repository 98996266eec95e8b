"""Device models: presets, the roofline, and the calibration against the reference table."""

from __future__ import annotations

import json

import pytest

from simplan.calibration import CALIBRATION_FILE, reference_dir
from simplan.costmodel import model_cost, optimizer_step_s
from simplan.devices import get_device
from simplan.errors import SimplanError
from simplan.sources import load_model


def test_presets_and_sources() -> None:
    for name in ("a100-40gb", "a100-80gb", "h100-sxm", "h200"):
        d = get_device(name)
        assert d.kind == "gpu" and d.peak("bf16") > 1e14
        for key in ("peak_flops", "memory", "gemm_efficiency"):
            assert d.sources[key]
    assert get_device("h200").peak("bf16") == get_device("h100-sxm").peak("bf16")
    assert get_device("h200").memory_bandwidth_Bps > get_device("h100-sxm").memory_bandwidth_Bps
    with pytest.raises(SimplanError, match="unknown device model"):
        get_device("v100")


def test_cpu_device_is_measured() -> None:
    cpu = get_device("cpu")
    assert cpu.kind == "cpu" and cpu.peak("fp32") > 1e9
    assert "torch.mm" in cpu.sources["peak_flops"]


def test_small_gemms_run_less_efficiently_than_large() -> None:
    a100 = get_device("a100-80gb")
    small, large = 2 * 256**3, 2 * 8192**3
    eff = [f / (a100.gemm_time_s(f, "bf16") * a100.peak("bf16")) for f in (small, large)]
    assert eff[0] < eff[1] <= a100.gemm_efficiency


def test_faster_device_is_faster_for_every_layer() -> None:
    g = load_model("gpt3-1.3b", dtype="bf16")
    a100, h100 = get_device("a100-80gb"), get_device("h100-sxm")
    for layer in g.layers:
        assert model_cost(layer, h100, "bf16", 4).fwd_s < model_cost(layer, a100, "bf16", 4).fwd_s
    assert optimizer_step_s(1e9, h100, "bf16") < optimizer_step_s(1e9, a100, "bf16")


@pytest.mark.skipif(not reference_dir().is_dir(), reason="../shared/reference not present")
def test_stored_calibration_rederives() -> None:
    from simplan.calibration import derive_gemm_efficiency

    stored = json.loads(CALIBRATION_FILE.read_text())
    derived = derive_gemm_efficiency(get_device("a100-80gb"))
    assert derived["gemm_efficiency"] == stored["gemm_efficiency"]
    assert get_device("a100-80gb").gemm_efficiency == stored["gemm_efficiency"]
