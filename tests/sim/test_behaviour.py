"""Sensitivity, determinism, traces, bad input."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from simplan.errors import SimplanError
from simplan.parallel import ParallelConfig
from simplan.sim.result import chrome_trace
from simplan.sim.run import simulate
from simplan.sources import load_model
from simplan.topology import load_cluster
from tests.helpers import assert_one_line_error, run_cli

CFG = ParallelConfig(dp=2, tp=4, pp=2, micro_batch=1, global_batch=16, dtype="bf16")


@pytest.fixture(scope="module")
def graph():
    return load_model("gpt3-760m", seq_len=1024, dtype="bf16")


@pytest.mark.parametrize("kinds", [["network"], ["nvlink"], ["network", "nvlink"]])
def test_more_bandwidth_never_slows_a_step(graph, kinds: list[str]) -> None:
    cluster = load_cluster("dgx-a100", nodes=2)
    base = simulate(graph, cluster, CFG, record=False)
    faster = simulate(graph, cluster.with_bandwidth(2.0, kinds=kinds), CFG, record=False)
    assert faster.step_time_s <= base.step_time_s
    for a, b in zip(faster.devices, base.devices, strict=True):
        assert a.exposed_comm_s <= b.exposed_comm_s + 1e-12


def test_same_input_gives_identical_json(graph) -> None:
    cluster = load_cluster("dgx-a100", nodes=2)
    a = json.dumps(simulate(graph, cluster, CFG).to_dict(), sort_keys=True)
    b = json.dumps(
        simulate(graph, load_cluster("dgx-a100", nodes=2), CFG).to_dict(), sort_keys=True
    )
    assert a == b


def test_chrome_trace_has_a_process_per_stage(graph) -> None:
    """A process per stage, and per stage: one forward span per micro-batch (16 samples / dp 2
    / micro-batch 1 = 8), forward and backward spans that add up to the stage's compute time,
    a compute stream that runs one span at a time, and every span inside the step."""
    result = simulate(graph, load_cluster("dgx-a100", nodes=2), CFG)
    trace = chrome_trace(result)
    names = {e["args"]["name"] for e in trace["traceEvents"] if e.get("name") == "process_name"}
    assert len(names) == 2
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert any(e["name"].startswith("F0 c0") for e in spans)
    step_us = result.step_time_s * 1e6
    for d in result.devices:
        mine = [e for e in spans if e["pid"] == d.stage]
        assert sum(e["cat"] == "forward" for e in mine) == 16 // 2 // 1
        work_us = sum(e["dur"] for e in mine if e["cat"] in ("forward", "backward"))
        assert work_us == pytest.approx(d.compute_s * 1e6, rel=1e-9)
        compute = sorted((e["ts"], e["ts"] + e["dur"]) for e in mine if e["tid"] == 0)
        assert all(end <= start + 1e-6 for (_, end), (start, _) in itertools.pairwise(compute))
        assert all(e["ts"] >= 0 and e["ts"] + e["dur"] <= step_us * (1 + 1e-9) for e in mine)


def test_bad_configurations() -> None:
    with pytest.raises(SimplanError, match="not divisible by dp"):
        ParallelConfig(dp=3, global_batch=16)
    with pytest.raises(SimplanError, match="does not divide the per-replica batch"):
        ParallelConfig(dp=2, micro_batch=3, global_batch=16)


def test_cli_degrees_must_match_the_cluster() -> None:
    r = run_cli(
        "simulate",
        "--model",
        "gpt3-125m",
        "--cluster",
        "dgx-a100",
        "--global-batch",
        "8",
        "--dp",
        "2",
        "--tp",
        "2",
    )
    assert_one_line_error(r, "2 x tp 2 x pp 1 = 4 ranks", "8 devices")


def test_cli_pp_larger_than_layers() -> None:
    r = run_cli(
        "simulate",
        "--model",
        "mlp",
        "--cluster",
        "dgx-a100",
        "--global-batch",
        "8",
        "--pp",
        "8",
        "--dp",
        "1",
    )
    assert_one_line_error(r, "exceeds the model's 3 layers")


def test_cli_microbatch_must_divide() -> None:
    r = run_cli(
        "simulate",
        "--model",
        "gpt3-125m",
        "--cluster",
        "dgx-a100",
        "--global-batch",
        "8",
        "--micro-batch",
        "3",
    )
    assert_one_line_error(r, "micro-batch 3")


def test_cli_plan_of_another_schema(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"schema": {"kind": "plan", "version": 0}}))
    assert_one_line_error(run_cli("simulate", "--plan", str(plan)), "version 0")


def test_cli_json_fields(tmp_path: Path) -> None:
    trace = tmp_path / "t.json"
    r = run_cli(
        "simulate",
        "--model",
        "gpt3-125m",
        "--cluster",
        "dgx-h100",
        "--gpus-per-node",
        "4",
        "--global-batch",
        "16",
        "--tp",
        "2",
        "--pp",
        "2",
        "--json",
        "--trace",
        str(trace),
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    for key in (
        "step_time_s",
        "samples_per_s",
        "tokens_per_s",
        "tflops_per_device",
        "mfu",
        "peak_memory_bytes",
        "fits_memory",
        "breakdown",
    ):
        assert key in doc
    assert set(doc["breakdown"]) >= {"compute_s", "exposed_comm_s", "bubble_s", "recompute_s"}
    assert doc["config"]["tp"] == 2 and trace.is_file()


def test_tp_communication_is_kept_under_zero3() -> None:
    graph = load_model("gpt3-125m", seq_len=512, dtype="bf16")
    cluster = load_cluster("pcie-a100", nodes=1)
    base = ParallelConfig(dp=2, tp=4, micro_batch=4, global_batch=8, dtype="bf16")
    ddp = simulate(graph, cluster, base, record=False)
    fsdp = simulate(graph, cluster, base.replace(zero=3), record=False)
    # ZeRO-3 adds parameter gathers; it cannot remove the tensor-parallel all-reduces
    assert fsdp.breakdown["exposed_comm_s"] >= 0.9 * ddp.breakdown["exposed_comm_s"]
