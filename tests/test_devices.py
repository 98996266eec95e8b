"""Device models: presets, the roofline, and the calibration against the reference table."""

from __future__ import annotations

import json

import pytest

from simplan.costmodel import model_cost, optimizer_step_s
from simplan.device_fit import CALIBRATION_FILE
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
    eff = []
    for n in (256, 8192):
        flops, nbytes = 2 * n**3, 3 * n * n * 2
        eff.append(flops / (a100.roofline_time_s(flops, nbytes, "bf16") * a100.peak("bf16")))
    assert eff[0] < eff[1] <= a100.matrix_efficiency * (1 + 1e-12)
    # a thin matrix product (k = 64) is bound by memory traffic, not by the tensor cores
    n = 16384
    thin = 2 * n * n * 64
    compute_s = thin / (a100.peak("bf16") * a100.matrix_efficiency)
    assert compute_s > a100.kernel_overhead_s
    assert a100.roofline_time_s(thin, 2 * (2 * n * 64 + n * n), "bf16") > 1.5 * compute_s


def test_faster_device_is_faster_for_every_layer() -> None:
    g = load_model("gpt3-1.3b", dtype="bf16")
    a100, h100 = get_device("a100-80gb"), get_device("h100-sxm")
    for layer in g.layers:
        assert model_cost(layer, h100, "bf16", 4).fwd_s < model_cost(layer, a100, "bf16", 4).fwd_s
    assert optimizer_step_s(1e9, h100, "bf16") < optimizer_step_s(1e9, a100, "bf16")


def test_stored_calibration_reproduces_its_fit() -> None:
    """The stored constants predict the fit rows they were fitted on as recorded, and the
    presets carry them (benchmarks/calibrate_devices.py re-derives the whole fit)."""
    from simplan.device_fit import FITS, RowSimulator, mpt_rows

    stored = json.loads(CALIBRATION_FILE.read_text())
    for family, (section, cluster, preset) in FITS.items():
        fit = stored[family]
        device = get_device(preset)
        assert device.gemm_efficiency == fit["gemm_efficiency"]
        assert device.mem_efficiency == fit["mem_efficiency"]
        assert device.kernel_overhead_s == fit["kernel_overhead_s"]
        assert device.stack_gemm_efficiency == fit["stack_gemm_efficiency"]
        assert device.stack_attention_efficiency == fit["stack_attention_efficiency"]
        assert "flash attention" in device.sources["stack_attention_efficiency"]
        rows = mpt_rows(section)[:3]
        sim = RowSimulator(rows, cluster)
        recorded = {
            (r["model"], r["micro_batch"]): r["predicted_samples_per_s"] for r in fit["rows"]
        }
        for row in rows:
            predicted = sim.predict(row, device)
            assert predicted == pytest.approx(recorded[(row.model, row.micro_batch)], rel=1e-3)
            assert abs(predicted / row.samples_per_s - 1) < 0.25


def test_gemm_rate_is_the_devices_mamf_and_the_stack_takes_its_share() -> None:
    """The presets' GEMM efficiency is the GEMM model's level at the family's MAMF row (not a
    fit to training runs); matrix work runs at that times the stack's share. By hand: a
    1e12-FLOP product on an H100 at 0.85 x 0.6 of 989.5 TFLOP/s takes 1e12 / 504.6e12 s."""
    from simplan.gemm import read_calibration

    levels = read_calibration()["best_shape_efficiency"]
    for preset, family in (("a100-80gb", "a100"), ("h100-sxm", "h100"), ("h200", "h100")):
        device = get_device(preset)
        assert device.gemm_efficiency == levels[family]
        assert "Maximum Achievable Matmul FLOPS" in device.sources["gemm_efficiency"]
        assert "llmfoundry" in device.sources["stack_gemm_efficiency"]
        assert 0 < device.stack_gemm_efficiency < 1
    h100 = get_device("h100-sxm").with_(gemm_efficiency=0.85, stack_gemm_efficiency=0.6)
    assert h100.matrix_efficiency == pytest.approx(0.51)
    assert h100.gemm_time_s(1e12, "bf16") == pytest.approx(1e12 / (989.5e12 * 0.51))
    # memory-bound work is not the stack's GEMM share
    assert h100.memory_time_s(1e9) == get_device("h100-sxm").memory_time_s(1e9)
    with pytest.raises(ValueError, match="stack_gemm_efficiency"):
        h100.with_(stack_gemm_efficiency=0.0)


def test_fused_attention_runs_at_the_stacks_attention_share() -> None:
    """A transformer block's flash-attention kernel (its matrix work outside the GEMM model)
    runs at stack_attention_efficiency of the matrix rate; its linear products do not. By hand:
    at share 0.5 the block's pass time grows by exactly the attention kernel's time at share 1,
    4 s^2 h FLOPs per sample forward and 10 s^2 h backward (torch's count of the flash
    backward, which recomputes the scores)."""
    from simplan.costmodel import fused_attention

    g = load_model("gpt3-125m", dtype="bf16")
    block = next(layer for layer in g.layers if layer.kind == "transformer_block")
    assert fused_attention(block)
    assert not any(fused_attention(x) for x in g.layers if x.kind != "transformer_block")
    s, h = block.attrs["seq_len"], block.attrs["hidden_size"]
    full = get_device("h100-sxm").with_(stack_attention_efficiency=1.0, kernel_overhead_s=1e-9)
    half = full.with_(stack_attention_efficiency=0.5)
    rate = full.peak("bf16") * full.matrix_efficiency
    b = 2
    for unit, one, other in (
        (4, model_cost(block, full, "bf16", b).fwd_s, model_cost(block, half, "bf16", b).fwd_s),
        (10, model_cost(block, full, "bf16", b).bwd_s, model_cost(block, half, "bf16", b).bwd_s),
    ):
        assert other - one == pytest.approx(unit * s * s * h * b / rate, rel=1e-6)
    # a layer without attention is unchanged; the fitted presets carry a share below 1
    head = next(layer for layer in g.layers if layer.kind == "lm_head")
    assert model_cost(head, half, "bf16", b) == model_cost(head, full, "bf16", b)
    for preset in ("a100-80gb", "h100-sxm"):
        assert 0 < get_device(preset).stack_attention_efficiency < 1
    with pytest.raises(ValueError, match="stack_attention_efficiency"):
        full.with_(stack_attention_efficiency=1.5)


def test_kernels_only_drops_the_fitted_stack() -> None:
    """kernels_only: matrix kernels at the device's own rate and a launch as the least cost of
    an operation; a datasheet device (no stack fitted) is unchanged."""
    from simplan.devices import KERNEL_OVERHEAD_S, kernels_only

    h100 = kernels_only(get_device("h100-sxm"))
    assert h100.matrix_efficiency == get_device("h100-sxm").gemm_efficiency
    assert h100.stack_attention_efficiency == 1.0
    assert h100.kernel_overhead_s == KERNEL_OVERHEAD_S
    assert "assumed" in h100.sources["kernel_overhead_s"]
    small = 1e6  # a 1 MFLOP product: under any launch, so it costs the floor
    assert h100.gemm_time_s(small, "bf16") == KERNEL_OVERHEAD_S
    b200 = get_device("b200")
    assert kernels_only(b200).matrix_efficiency == b200.matrix_efficiency
    assert kernels_only(b200).kernel_overhead_s == b200.kernel_overhead_s


def test_blackwell_models_come_from_the_datasheet_table() -> None:
    """B200 / B300 / GB200: the dense peaks, HBM and SM count of device_specs.csv, marked
    datasheet-derived; fp32 (no datasheet peak) is refused with one line."""
    from simplan.units import GB, TB, TFLOP

    b200, b300, gb200 = get_device("b200"), get_device("b300"), get_device("gb200")
    assert b200.peak("bf16") == 2250 * TFLOP and gb200.peak("fp16") == 2500 * TFLOP
    assert b200.memory_bytes == 180 * GB and b300.memory_bytes == 288 * GB
    assert b200.memory_bandwidth_Bps == 8 * TB and b200.sm_count == 148 and gb200.sm_count == 0
    for d in (b200, b300, gb200):
        assert "datasheet-derived until calibrated" in d.sources["peak_flops"]
        assert "datasheet-derived until calibrated" in d.sources["gemm_efficiency"]
        with pytest.raises(SimplanError, match="no fp32 peak"):
            d.peak("fp32")


def test_measured_names_find_their_preset() -> None:
    from simplan.devices import preset_for

    for measured, preset in [
        ("NVIDIA GB200", "gb200"),
        ("NVIDIA B200", "b200"),
        ("NVIDIA B300 SXM6 AC", "b300"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA H100 80GB HBM3", "h100-sxm"),
    ]:
        found = preset_for(measured)
        assert found is not None and found.name == preset


def test_joint_search_finds_the_grid_optimum_where_turns_stop_short() -> None:
    """The device fit searches its constants jointly. On a loss whose constants trade off (a
    narrow valley along matrix - mem = 0.1, minimum at (0.76, 0.6, 0.85)), fitting one constant
    at a time from the start stops at once; the joint search finds the grid's minimum, the one
    a brute force over the whole grid finds."""
    import itertools

    from simplan.device_fit import (
        ATTENTION_GRID,
        MATRIX_GRID,
        MEM_GRID,
        JointFit,
        Point,
        _joint_search,
    )

    class Valley(JointFit):
        def loss(self, point: Point, overhead: float) -> float:
            matrix, mem, attention = point
            return (
                100 * (matrix - mem - 0.16) ** 2
                + (matrix + mem - 1.36) ** 2
                + (attention - 0.85) ** 2
            )

    fit = Valley(sims=())
    grids = (MATRIX_GRID, MEM_GRID, ATTENTION_GRID)
    brute = min(itertools.product(*grids), key=lambda p: fit.loss(p, 0.0))
    assert brute == (0.76, 0.6, 0.85)
    assert _joint_search(fit, grids, 0.0) == (fit.loss(brute, 0.0), brute)
    # one constant at a time from (0.7, 0.75, 0.95), until none moves: stuck in the valley
    point: Point = (0.7, 0.75, 0.95)
    for _ in range(20):
        for i, grid in enumerate(grids):
            options = [(*point[:i], x, *point[i + 1 :]) for x in grid]
            point = min(options, key=lambda p: fit.loss(p, 0.0))
    assert point == (0.9, 0.75, 0.85)
    assert fit.loss(point, 0.0) > 10 * fit.loss(brute, 0.0)


def test_the_overhead_moves_off_its_prior_only_where_the_rows_tell() -> None:
    """A per-operation overhead that changes the loss by a few parts in a million (the fit rows'
    operations are far longer) stays at the prior, a launch; one the loss clearly prefers is
    taken, and the constants searched again there."""
    from dataclasses import dataclass

    from simplan.device_fit import (
        ATTENTION_GRID,
        MATRIX_GRID,
        MEM_GRID,
        OVERHEAD_GRID,
        JointFit,
        Point,
        _fit_joint,
    )

    @dataclass(frozen=True)
    class Bowl(JointFit):
        weight: float = 0.0

        def loss(self, point: Point, overhead: float) -> float:
            matrix, mem, attention = point
            flat = (matrix - 0.7) ** 2 + (mem - 0.65) ** 2 + (attention - 0.9) ** 2 + 0.01
            return flat * (1 + self.weight * (overhead - 20e-6) ** 2 / 20e-6**2)

    grids = (MATRIX_GRID, MEM_GRID, ATTENTION_GRID)
    loss, point, overhead, identified = _fit_joint(Bowl(sims=(), weight=1e-5), grids)
    assert (point, overhead, identified) == ((0.7, 0.65, 0.9), OVERHEAD_GRID[0], False)
    assert loss == pytest.approx(0.01, rel=1e-4)
    _, point, overhead, identified = _fit_joint(Bowl(sims=(), weight=1.0), grids)
    assert (point, overhead, identified) == ((0.7, 0.65, 0.9), 20e-6, True)
