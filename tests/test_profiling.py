"""Measured profiles: structure, metadata, JSON round trip, and the cost model that reads them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import simplan
from simplan.costmodel import MEASURED, MODEL, SCALED, layer_costs
from simplan.cpubench import local_cpu_device
from simplan.devices import get_device
from simplan.profiles import read_profile, write_profile
from tests.helpers import mlp_profile_with, run_cli


@pytest.fixture(scope="module")
def mlp_profile() -> simplan.Profile:
    return simplan.profile("mlp", micro_batch=32, warmup=1, repeats=5)


def test_profile_has_a_timing_per_layer_and_metadata(mlp_profile: simplan.Profile) -> None:
    p = mlp_profile
    assert set(p.timings) == {layer.identity for layer in p.model.layers}
    assert all(t.fwd_s > 0 and t.bwd_s > 0 for t in p.timings.values())
    for key in ("torch_version", "device_name", "dtype", "threads", "date"):
        assert p.meta[key]
    assert p.whole_model is not None and p.whole_model.fwd_s > 0


def test_profile_round_trip(tmp_path: Path, mlp_profile: simplan.Profile) -> None:
    path = write_profile(mlp_profile, tmp_path / "p.json")
    again = read_profile(path)
    assert again == mlp_profile


def test_other_schema_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"schema": {"kind": "profile", "version": 99}}))
    with pytest.raises(simplan.SimplanError, match="version 99"):
        read_profile(path)


def test_cost_sources(mlp_profile: simplan.Profile) -> None:
    cpu = local_cpu_device()
    graph = mlp_profile.model
    same = layer_costs(graph, cpu, "fp32", 32, mlp_profile)
    assert {c.source for c in same} == {MEASURED}
    scale_f, _ = mlp_profile.layer_scale()
    assert same[0].fwd_s == pytest.approx(mlp_profile.timing("fc1").fwd_s * scale_f, rel=1e-12)
    other = layer_costs(graph, cpu, "fp32", 64, mlp_profile)
    assert {c.source for c in other} == {SCALED}
    modelled = layer_costs(graph, get_device("h100-sxm"), "bf16", 32, mlp_profile)
    assert {c.source for c in modelled} == {MODEL}


def test_layers_are_brought_down_to_the_whole_model_they_exceed() -> None:
    over = mlp_profile_with(2e-4, 6e-4)  # the hooked layers sum to more forward, equal backward
    assert over.layer_scale() == pytest.approx((2 / 3, 1.0))
    assert over.glue_s() == (0.0, 0.0)
    under = mlp_profile_with(5e-4, 9e-4)  # the whole model has work outside its layers
    assert under.layer_scale() == (1.0, 1.0)
    assert under.glue_s() == pytest.approx((2e-4, 3e-4))
    cpu = local_cpu_device()
    costs = layer_costs(over.model, cpu, "fp32", 8, over)
    assert sum(c.fwd_s for c in costs) == pytest.approx(2e-4)
    assert sum(c.bwd_s for c in costs) == pytest.approx(6e-4)


def test_identical_blocks_are_measured_once(tmp_path: Path) -> None:
    toml = tmp_path / "tiny.toml"
    toml.write_text(
        "[transformer]\nhidden_size = 64\nnum_layers = 4\nnum_heads = 4\n"
        "seq_len = 32\nvocab_size = 100\n"
    )
    p = simplan.profile(str(toml), warmup=1, repeats=2)
    assert len(p.timings) == 3  # embedding, one block shape, head
    assert len(p.model.layers) == 6


def test_profile_cli_writes_under_traces(tmp_path: Path) -> None:
    result = run_cli(
        "profile", "mlp", "--micro-batch", "16", "--repeats", "3", "--json", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    path = Path(doc["profile_path"])
    assert path.parts[:2] == ("traces", "profiles")
    assert (tmp_path / path).is_file()
    assert doc["total"]["fwd_flops"] == 16 * 2 * (784 * 128 + 128 * 10)
    assert {row["source"] for row in doc["layers"]} == {"measured"}


def test_profile_measures_the_optimizer_and_the_time_outside_layers(
    mlp_profile: simplan.Profile,
) -> None:
    """An Adam step over one one-element tensor costs less than over the mlp's 101,770
    parameters (strictly: the fixed cost is clamped to the whole step, which equality would
    hide), and half of the parameters cost between the two. The layers, brought down to the
    whole model, plus the time outside them, add up to the whole model's measured passes."""
    p = mlp_profile
    assert p.optimizer_s is not None and p.optimizer_fixed_s is not None
    assert 0 < p.optimizer_fixed_s < p.optimizer_s
    assert p.optimizer_fixed_s < (p.optimizer_step_s(0.5) or 0.0) < p.optimizer_s
    assert p.whole_model is not None
    (fwd, bwd), (scale_f, scale_b) = p.layer_sums_s(), p.layer_scale()
    glue_f, glue_b = p.glue_s()
    assert fwd * scale_f + glue_f == pytest.approx(p.whole_model.fwd_s, rel=1e-9)
    assert bwd * scale_b + glue_b == pytest.approx(p.whole_model.bwd_s, rel=1e-9)


def test_the_optimizer_step_without_tensor_counts_shares_the_rest_by_parameters() -> None:
    """1e-3 s in all, 2e-4 s fixed: half of the parameters cost 2e-4 + 0.5 x 8e-4 = 6e-4 s."""
    profile = mlp_profile_with(1e-3, 1e-3, optimizer_s=1e-3, optimizer_fixed_s=2e-4)
    assert profile.optimizer_step_s(0.5) == pytest.approx(6e-4)
    assert profile.optimizer_step_s(0.0) == pytest.approx(2e-4)
    assert profile.optimizer_step_s(1.0) == pytest.approx(1e-3)


def test_simulation_with_a_profile_adds_its_measurements(mlp_profile: simplan.Profile) -> None:
    """One CPU rank: the step is the whole model's measured forward+backward per micro-batch
    (the layers, brought to it: the time outside them added, or the hooks' overhead taken
    out) and the measured optimizer step, nothing else."""
    cluster = simplan.load_cluster("localhost-cpu", gpus_per_node=1)
    config = simplan.ParallelConfig(micro_batch=32, global_batch=64, dtype="fp32")
    result = simplan.simulate(mlp_profile.model, cluster, config, profile=mlp_profile)
    whole = mlp_profile.whole_model
    assert whole is not None
    expected = 2 * (whole.fwd_s + whole.bwd_s) + mlp_profile.optimizer_step_s(1.0)
    assert result.step_time_s == pytest.approx(expected, rel=1e-9)


def test_a_session_pools_its_rounds_and_times_the_whole_model_without_hooks() -> None:
    from simplan.timing import ProfileSession

    session = ProfileSession("mlp", micro_batch=4, warmup=1)
    calls: list[int] = []
    try:
        session.run(2, before_pass=lambda: calls.append(len(calls)))
        assert not any(m._forward_hooks or m._backward_pre_hooks for m in session.model.modules())
        session.run(1)
        profile = session.profile()
    finally:
        session.close()
    assert len(calls) == 1 + 2 * 2  # the round's untimed pass, then two passes per repeat
    assert profile.meta["repeats"] == 3 and len(session.passes_s()) == 3
    assert all(t.repeats == 3 for t in profile.timings.values())
    assert profile.whole_model is not None and profile.optimizer_s is not None


def test_the_optimizer_step_keeps_each_tensors_cost_when_parameters_are_sharded() -> None:
    """mlp: 4 parameter tensors. optimizer 1e-3 = fixed 1e-4 + 3 tensors x 1e-4 + 6e-4 of
    per-parameter work: half the parameters in all 4 tensors keep the tensors' cost."""
    profile = mlp_profile_with(
        1e-3, 1e-3, optimizer_s=1e-3, optimizer_fixed_s=1e-4, optimizer_tensor_s=1e-4
    )
    assert profile.optimizer_step_s(1.0, 4) == pytest.approx(1e-3)
    assert profile.optimizer_step_s(0.5, 4) == pytest.approx(1e-4 + 3e-4 + 3e-4)
    assert profile.optimizer_step_s(0.5, 2) == pytest.approx(1e-4 + 1e-4 + 3e-4)
    assert profile.optimizer_step_s(0.5) == pytest.approx(1e-4 + 0.5 * 9e-4)  # no tensor count
