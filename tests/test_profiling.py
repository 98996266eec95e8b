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
from tests.helpers import run_cli


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
    assert same[0].fwd_s == mlp_profile.timing("fc1").fwd_s
    other = layer_costs(graph, cpu, "fp32", 64, mlp_profile)
    assert {c.source for c in other} == {SCALED}
    modelled = layer_costs(graph, get_device("h100-sxm"), "bf16", 32, mlp_profile)
    assert {c.source for c in modelled} == {MODEL}


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
    p = mlp_profile
    assert p.optimizer_s is not None and p.optimizer_fixed_s is not None
    assert 0 < p.optimizer_fixed_s <= p.optimizer_s
    assert p.optimizer_step_s(0.5) == pytest.approx(
        p.optimizer_fixed_s + 0.5 * (p.optimizer_s - p.optimizer_fixed_s)
    )
    glue_f, glue_b = p.glue_s()
    assert glue_f >= 0 and glue_b >= 0


def test_simulation_with_a_profile_adds_its_measurements(mlp_profile: simplan.Profile) -> None:
    """One CPU rank: the step is the measured layers, the time outside them (the loss) and the
    measured optimizer step, nothing else."""
    cluster = simplan.load_cluster("localhost-cpu", gpus_per_node=1)
    config = simplan.ParallelConfig(micro_batch=32, global_batch=64, dtype="fp32")
    result = simplan.simulate(mlp_profile.model, cluster, config, profile=mlp_profile)
    layers = sum(
        mlp_profile.timing(layer.name).fwd_s + mlp_profile.timing(layer.name).bwd_s
        for layer in mlp_profile.model.layers
    )
    glue = sum(mlp_profile.glue_s())
    expected = 2 * (layers + glue) + mlp_profile.optimizer_step_s(1.0)
    assert result.step_time_s == pytest.approx(expected, rel=1e-9)
