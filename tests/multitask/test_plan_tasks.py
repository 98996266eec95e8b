"""The head placement ILP: equal to brute force, its choice simulated against the baselines,
and `simplan plan` / `simplan simulate --task-placement` on multi-task models."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from simplan.parallel import ParallelConfig
from simplan.planner.task_ilp import HeadProblem, brute_force, solve_heads
from simplan.planner.tasks import plan_heads
from simplan.tasks import parse_tasks
from simplan.topology import load_cluster
from tests.helpers import run_main
from tests.multitask.graphs import dag, layer


def _random_problem(rng: random.Random, heads: int, devices: int) -> HeadProblem:
    rs = tuple(r for r in range(1, devices + 1) if rng.random() < 0.7) or (1,)
    sizes = tuple(s for s in (1, 2, 4) if s < devices)

    def u() -> float:
        return rng.uniform(0.0, 10.0)

    return HeadProblem(
        devices=devices,
        trunk_sizes=rs,
        group_sizes=sizes,
        trunk=tuple(u() for _ in rs),
        trunk_fwd=tuple(u() / 3 for _ in rs),
        local=tuple(tuple(u() for _ in rs) for _ in range(heads)),
        trunk_extra=tuple(tuple(u() / 5 for _ in rs) for _ in range(heads)),
        path=tuple(tuple(tuple(u() for _ in rs) for _ in sizes) for _ in range(heads)),
        trunk_comm=tuple(tuple(tuple(u() / 5 for _ in rs) for _ in sizes) for _ in range(heads)),
        tail=tuple(tuple(u() / 5 for _ in sizes) for _ in range(heads)),
    )


@pytest.mark.parametrize("seed", range(12))
def test_ilp_equals_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    problem = _random_problem(rng, heads=rng.choice((1, 2, 3)), devices=rng.choice((3, 4, 6, 8)))
    exact = brute_force(problem)
    choice, record = solve_heads(problem, time_limit_s=20)
    assert exact is not None and choice is not None
    assert record.sol_status == 1 and record.status == "Optimal"
    assert choice.objective_s == pytest.approx(exact.objective_s, rel=1e-6, abs=1e-9)


TASKS = [
    {"name": "classify", "outputs": ["cls"], "loss": "cross_entropy"},
    {"name": "detect", "outputs": ["det"], "loss": "detection"},
]


def _heavy_detection() -> Any:
    """A trunk (2 GFLOP forward a sample, 2M parameters, 0.4 MB of features) with a small
    classifier and a parameter-heavy detection head (200M parameters, 5 GFLOP a sample), as
    the box head of a two-stage detector with wide fully connected layers."""
    shapes = {
        "stem": layer("stem", 1e9, 100_000, 4e5),
        "trunk": layer("trunk", 2e10, 2_000_000, 4e5),
        "cls": layer("cls", 1e7, 10_000, 4e3),
        "det": layer("det", 5e9, 200_000_000, 4e4),
    }
    graph = dag(
        ["stem", "trunk"], {"classify": ["cls"], "detect": ["det"]}, shapes=shapes, dtype="bf16"
    )
    return graph, parse_tasks(TASKS, graph)


def test_heavy_detection_head_goes_alone_and_beats_replicated() -> None:
    """On 8 PCIe A100s, replicating the detection head all-reduces its 200M parameters over
    PCIe every step; alone on one device it needs no all-reduce, and the trunk's features
    (0.4 MB a sample) are cheap to send: the ILP places it alone and the simulation agrees."""
    graph, tasks = _heavy_detection()
    cluster = load_cluster("pcie-a100")
    choice = plan_heads(graph, tasks, cluster, ParallelConfig(global_batch=64, dtype="bf16"))
    assert choice.chosen == "ilp"
    assert choice.best.placement["heads"]["detect"] != "replicated"
    replicated = choice.results["replicated"]
    assert choice.best.step_s < 0.6 * replicated.step_s
    assert choice.solve.sol_status == 1
    assert choice.predicted_s == pytest.approx(choice.best.step_s, rel=0.1)
    why = "\n".join(choice.to_dict()["why"])
    assert "ilp" in why and "over replicated" in why and "detect on" in why


def test_plan_reports_where_each_head_runs(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(
        capsys,
        *("plan", "--model", "mtl-vision", "--cluster", "eth25-a100", "--global-batch", "64"),
        "--explain",
    )
    assert code == 0, err
    assert "task heads:" in out and "why (heads):" in out
    assert "classify:" in out and "detect:" in out
    code, out, err = run_main(
        capsys,
        *("plan", "--model", "mtl-vision", "--cluster", "eth25-a100", "--global-batch", "64"),
        "--json",
    )
    assert code == 0, err
    heads = json.loads(out)["task_heads"]
    assert set(heads["candidates"]) >= {"ilp", "replicated"}
    assert heads["ilp"]["sol_status"] == 1
    chosen = heads["candidates"][heads["chosen"]]
    assert chosen["step_time_s"] <= heads["candidates"]["replicated"]["step_time_s"]
    assert set(chosen["placement"]["heads"]) == {"classify", "detect"}


def test_simulate_task_placement_cli(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    base = ("simulate", "--model", "mtl-vision", "--cluster", "localhost-cpu")
    base += ("--global-batch", "8", "--dtype", "fp32")
    trace = tmp_path / "step.json"
    code, out, err = run_main(
        capsys, *base, "--task-placement", "detect=1", "--json", "--trace", str(trace)
    )
    assert code == 0, err
    events = json.loads(trace.read_text())["traceEvents"]
    assert {e["name"] for e in events if e["ph"] == "X"} >= {"trunk fwd", "detect fwd"}
    doc = json.loads(out)
    assert doc["placement"]["heads"] == {"classify": "replicated", "detect": [1]}
    assert doc["cut"][0]["slice_bytes"] == pytest.approx(8 * 802816)
    code, out, err = run_main(capsys, *base, "--task-placement", "detect=0-1")
    assert code == 2 and "leave at least one for the trunk" in err
    assert len(err.strip().splitlines()) == 1
    code, out, err = run_main(
        capsys, "simulate", "--model", "mlp", "--cluster", "localhost-cpu",
        "--global-batch", "8", "--task-placement", "replicated",
    )  # fmt: skip
    assert code == 2 and "declares no tasks" in err
    code, out, err = run_main(capsys, *base, "--task-placement", "replicated", "--explain")
    assert code == 2 and "--task-placement does not combine with --explain" in err


def test_mixed_cluster_puts_the_trunk_on_the_fastest_devices() -> None:
    """One A100 node (devices 0-7) and one H100 node (8-15): replicated, every replica runs
    at the A100's pace; the trunk on the H100s with heads on the A100s is faster."""
    from simplan.sources import load_model
    from simplan.tasks import load_tasks

    graph = load_model("mtl-text", dtype="bf16")
    tasks = load_tasks(graph)
    assert tasks is not None
    cluster = load_cluster("mixed-a100-h100")
    choice = plan_heads(graph, tasks, cluster, ParallelConfig(global_batch=256, dtype="bf16"))
    trunk = choice.best.placement["trunk_devices"]
    assert all(cluster.device_model(d).name == "h100-sxm" for d in trunk)
    assert choice.best.step_s < choice.results["replicated"].step_s
