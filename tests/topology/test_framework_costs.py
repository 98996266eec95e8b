"""Calibration files with per-op fits and framework costs: reading, round trip, errors, fitting."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from simplan.cli import main
from simplan.errors import SimplanError
from simplan.topology import load_cluster
from simplan.topology.comm_calibration import (
    FrameworkCosts,
    bench_document,
    framework_costs,
    read_link_calibration,
)
from simplan.topology.probes import fit_framework
from tests.helpers import two_cpu_spec

FRAMEWORK = {
    "ddp": {"step_s": 3e-4, "bucket_s": 1e-4, "s_per_byte": 2e-10},
    "fsdp": {"step_s": 0.0, "collective_s": 1e-3, "s_per_byte": 5e-10},
    "tp": {
        "step_s": 4e-4,
        "collective_s": 1.5e-3,
        "optimizer_step_s": 1e-5,
        "optimizer_tensor_s": 4e-5,
    },
    "pp": {"step_s": 6e-4, "action_s": 1.2e-4},
}


def _doc(**parts: Any) -> dict[str, Any]:
    fits = {
        "all_reduce": {"alpha_s": 2e-4, "beta_s_per_byte": 1e-9},
        "reduce_scatter": {"alpha_s": 5e-5, "beta_s_per_byte": 2e-9},
        "p2p": {"alpha_s": 7e-5, "beta_s_per_byte": 4e-10},
    }
    meta = {"nprocs": 2, "date": "2026-01-01T00:00:00+00:00", "torch": "2.13.0+cpu"}
    return bench_document(meta, fits["all_reduce"], [], fits=fits, framework=FRAMEWORK) | parts


def _write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(doc))
    return path


def test_calibration_round_trips_fits_and_framework_costs(tmp_path: Path) -> None:
    cal = read_link_calibration(_write(tmp_path, _doc()))
    assert cal.framework == FrameworkCosts(
        ddp_step_s=3e-4,
        ddp_bucket_s=1e-4,
        ddp_s_per_byte=2e-10,
        fsdp_collective_s=1e-3,
        fsdp_s_per_byte=5e-10,
        tp_step_s=4e-4,
        tp_collective_s=1.5e-3,
        tp_optimizer_step_s=1e-5,
        tp_optimizer_tensor_s=4e-5,
        pp_step_s=6e-4,
        pp_action_s=1.2e-4,
        source=cal.framework.source,
    )
    assert "2026-01-01" in cal.framework.source and "2.13.0" in cal.framework.source
    assert cal.op_fits["p2p"].time_s(1e6) == pytest.approx(7e-5 + 4e-10 * 1e6)


def test_cluster_uses_each_measured_op_fit_and_scales_its_bandwidth(tmp_path: Path) -> None:
    cluster = load_cluster(two_cpu_spec(_write(tmp_path, _doc())))
    n = 4 * 2**20
    assert cluster.collective_time("reduce_scatter", n, [0, 1]) == pytest.approx(5e-5 + 2e-9 * n)
    assert cluster.transfer_time(0, 1, n) == pytest.approx(7e-5 + 4e-10 * n)
    assert cluster.collective_time("all_reduce", n, [0, 1]) == pytest.approx(2e-4 + 1e-9 * n)
    faster = cluster.with_bandwidth(2.0, kinds=["loopback"])
    assert faster.collective_time("reduce_scatter", n, [0, 1]) == pytest.approx(5e-5 + 1e-9 * n)
    assert faster.framework == cluster.framework


def test_measured_medians_price_their_sizes_and_bend_between_them(tmp_path: Path) -> None:
    """The file's medians are used as measured, interpolated between sizes and continued
    with the fit's slope below the smallest and the last segment's above the largest."""
    rows = [
        {"op": "all_reduce", "size_B": n, "median_s": t, "repeats": 3, "ranks": 2}
        for n, t in ((2**16, 2.5e-4), (2**20, 5e-4), (2**22, 1.7e-3))
    ]
    cluster = load_cluster(two_cpu_spec(_write(tmp_path, _doc(measurements=rows))))
    time = lambda n: cluster.collective_time("all_reduce", n, [0, 1])  # noqa: E731
    assert time(2**20) == pytest.approx(5e-4)
    mid = (2**20 + 2**22) / 2
    assert time(mid) == pytest.approx((5e-4 + 1.7e-3) / 2)
    assert time(2**15) == pytest.approx(2.5e-4 - 1e-9 * 2**15)  # the fit's 1 ns/B
    slope = (1.7e-3 - 5e-4) / (2**22 - 2**20)
    assert time(2**23) == pytest.approx(1.7e-3 + slope * 2**22)
    assert time(16) >= 2e-4  # never below the fit's latency


def test_files_without_the_new_sections_read_as_before(tmp_path: Path) -> None:
    doc = _doc()
    del doc["fits"], doc["framework"]
    cluster = load_cluster(two_cpu_spec(_write(tmp_path, doc)))
    assert cluster.framework == FrameworkCosts()
    n = 4 * 2**20  # the ring over the calibrated link: half an all-reduce's steps and bytes
    assert cluster.collective_time("reduce_scatter", n, [0, 1]) == pytest.approx(1e-4 + 5e-10 * n)


def test_gpu_presets_carry_no_framework_costs() -> None:
    assert load_cluster("dgx-a100").framework == FrameworkCosts()


@pytest.mark.parametrize(
    "framework",
    [{"ddp": {"step_s": -1e-3}}, {"tp": {"collective_s": "fast"}}, {"fsdp": [1, 2]}],
)
def test_malformed_framework_costs_are_a_one_line_error(
    tmp_path: Path, framework: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, _doc(framework=framework))
    with pytest.raises(SimplanError, match=r"framework\.(ddp|tp|fsdp)\b.* must be") as info:
        read_link_calibration(path)
    assert "\n" not in str(info.value)
    spec = tmp_path / "cpu2.toml"
    spec.write_text(
        f'name = "cpu2"\ncalibration = "{path}"\n[[node_group]]\ncount = 1\n'
        'devices_per_node = 2\ndevice = "cpu"\n'
        'fabric = { kind = "loopback", bandwidth_GBps = 1 }\n'
    )
    code = main(["simulate", "--model", "mlp", "--cluster", str(spec), "--global-batch", "2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and f"{path}: framework." in err


def test_framework_section_without_costs_is_zero() -> None:
    assert framework_costs({}, "x") == FrameworkCosts()


def _rows(op: str, plain_s: float, extra_s: float, size: int, extra: dict) -> list[dict]:
    """A probe's plain row (ddp-plain, fsdp-plain, tp-plain, tp-opt-plain, pp-plain) and its
    wrapped row. A tensor-parallel rank computes half the plain chain (2 ranks)."""
    base = {"size_B": size, "repeats": 3, "ranks": 2}
    plain = "tp-opt-plain" if op == "tp-opt" else op.split("-")[0] + "-plain"
    compute = plain_s / 2 if op == "tp-step" else plain_s
    return [
        base | {"op": plain, "median_s": plain_s, "extra": dict(extra)},
        base | {"op": op, "median_s": compute + extra_s, "extra": extra},
    ]


def test_fit_framework_recovers_known_costs() -> None:
    """Synthetic probe rows built from known costs over a raw-collective model give them back."""

    def op_time(op: str, nbytes: float) -> float:
        return 1e-4 + 1e-9 * nbytes

    rows: list[dict] = []
    for sizes in ([2**17], [2**14] * 8, [3 * 2**18], [2**18] * 3):
        total = sum(sizes)
        extra = 3e-4 + len(sizes) * 1e-4 + 2e-10 * total + sum(op_time("", s) for s in sizes)
        info = {"hidden": total, "layers": len(sizes)}
        ddp = _rows("ddp-sync", 1e-3, extra, total, info)
        ddp[1]["extra"] = info | {"bucket_sizes_B": sizes}
        rows += ddp
    for units, b in ((2, 2**14), (6, 2**14), (2, 2**20), (4, 2**20)):
        extra = 2e-4 + 3 * units * (1e-3 + 5e-10 * b) + 3 * units * op_time("", b)
        rows += _rows("fsdp-step", 1e-3, extra, b, {"hidden": b, "units": units})
    for pairs, b in ((1, 2048), (2, 2048), (4, 2048), (1, 2**18), (2, 2**18)):
        n = 2 * pairs - 1
        extra = 4e-4 + n * (1.5e-3 + 3e-9 * b + op_time("", b))
        rows += _rows("tp-step", 1e-3, extra, b, {"pairs": pairs, "hidden": b, "collectives": n})
    for pairs in (1, 2, 4):
        extra = 1e-5 + 2 * pairs * 4e-5
        rows += _rows("tp-opt", 2e-4, extra, 2048, {"pairs": pairs, "tensors": 2 * pairs})
    for m in (2, 4, 8):  # the busiest rank's sends (half its actions) pay the raw p2p
        extra = 6e-4 + 2 * m * 1.2e-4 + m * op_time("", 2048)
        rows += _rows("pp-step", 1e-3, extra, 2048, {"microbatches": m, "actions": 2 * m})
    rows.sort(key=lambda m: m["op"])  # as bench-comm stores them: wrapped rows may come first
    fw = fit_framework(rows, op_time)
    assert fw["ddp"]["step_s"] == pytest.approx(3e-4)
    assert fw["ddp"]["bucket_s"] == pytest.approx(1e-4)
    assert fw["ddp"]["s_per_byte"] == pytest.approx(2e-10)
    assert fw["fsdp"]["step_s"] == pytest.approx(2e-4)
    assert fw["fsdp"]["collective_s"] == pytest.approx(1e-3)
    assert fw["fsdp"]["s_per_byte"] == pytest.approx(5e-10)
    assert fw["tp"]["step_s"] == pytest.approx(4e-4)
    assert fw["tp"]["collective_s"] == pytest.approx(1.5e-3)
    assert fw["tp"]["s_per_byte"] == pytest.approx(3e-9)
    assert fw["tp"]["optimizer_step_s"] == pytest.approx(1e-5)
    assert fw["tp"]["optimizer_tensor_s"] == pytest.approx(4e-5)
    assert fw["pp"]["step_s"] == pytest.approx(6e-4)
    assert fw["pp"]["action_s"] == pytest.approx(1.2e-4)


def test_fit_framework_never_returns_a_negative_cost() -> None:
    rows: list[dict] = []
    for pairs in (1, 2, 4):  # the wrapped probe is *faster* with more collectives: pure noise
        rows += _rows(
            "tp-step", 1e-3, 5e-3 - pairs * 1e-4, 64, {"pairs": pairs, "collectives": pairs}
        )
    fw = fit_framework(rows, lambda op, b: 0.0)
    assert fw["tp"]["collective_s"] == 0.0
    # the constant alone, weighted as every row is (1 / its wrapped step): sum w^2 e / sum w^2
    extras = [5e-3 - p * 1e-4 for p in (1, 2, 4)]
    weights = [1 / (1e-3 / 2 + e) ** 2 for e in extras]
    mean = sum(w * e for w, e in zip(weights, extras, strict=True)) / sum(weights)
    assert fw["tp"]["step_s"] == pytest.approx(mean)


def test_ddp_sync_points_come_from_one_bucket_probes_and_never_fall() -> None:
    """Extras of 3e-4, 2e-4 (noise: pooled with its neighbour) and 1e-3 by size; the probe of
    several buckets is left out (its all-reduces overlap the backward)."""
    rows: list[dict] = []
    for size, extra_s in ((100_000, 3e-4), (200_000, 2e-4), (800_000, 1e-3)):
        rows += _rows("ddp-sync", 1e-3, extra_s, size, {"bucket_sizes_B": [size]})
    rows += _rows("ddp-sync", 1e-3, 5e-2, 400_000, {"bucket_sizes_B": [200_000, 200_000]})
    fw = fit_framework(rows, lambda op, b: 0.0)
    sizes, values = zip(*fw["ddp"]["sync_points"], strict=True)
    assert sizes == (100_000, 200_000, 800_000)
    assert values == pytest.approx((2.5e-4, 2.5e-4, 1e-3))
    costs = framework_costs(fw, "test")
    assert costs.ddp_sync_cost_s(500_000) == pytest.approx(2.5e-4 + 7.5e-4 / 2)
