"""The speed table from the planner and simulator: its values, and its cache by content."""

from __future__ import annotations

from pathlib import Path

import pytest

from simplan.planner import SearchOptions, search
from simplan.schedule.core import Job, Shape
from simplan.schedule.shapes import candidate_shapes
from simplan.schedule.speeds import PlannedSpeeds
from simplan.topology import load_cluster
from simplan.topology.cluster_spec import load_spec
from tests.plan_files import TINY_MODEL

SPEC = load_spec("dgx-h100", nodes=2, gpus_per_node=2)  # 2 nodes x 2 H100s


def _job(model: str = "gpt-tiny", **fields: object) -> Job:
    return Job(**{"id": "j", "model": model, "global_batch": 8, "work": 10.0, **fields})  # type: ignore[arg-type]


def _shape(gpus: int, nodes: int) -> Shape:
    return Shape(gpu_type="h100-sxm", gpus=gpus, nodes=nodes)


def _table(cache: Path) -> PlannedSpeeds:
    return PlannedSpeeds(SPEC, cache_dir=cache, executor="inline", time_limit_s=20)


def test_step_time_is_the_planners_best_on_that_shape(tmp_path: Path) -> None:
    table = _table(tmp_path)
    for gpus, nodes, per in ((1, 1, 1), (2, 1, 2), (2, 2, 1), (4, 2, 2)):
        cluster = load_cluster("dgx-h100", nodes=nodes, gpus_per_node=per)
        options = SearchOptions(global_batch=8, top=1, time_limit_s=20)
        best = search("gpt-tiny", cluster, options).plans[0]
        speed = table.speed(_job(), _shape(gpus, nodes))
        assert speed is not None and speed.source == "simulated"
        assert speed.step_time_s == pytest.approx(best.step_time_s, rel=1e-9)
        assert speed.plan == best.config.describe()


def test_prepare_searches_each_kind_and_shape_once_then_reads_the_cache(tmp_path: Path) -> None:
    jobs = [_job(), _job(), _job(global_batch=16)]
    table = _table(tmp_path)
    shapes = candidate_shapes(SPEC, jobs[0])
    assert len(shapes) == 4
    assert table.prepare(jobs) == 2 * len(shapes)  # two kinds (global batch 8 and 16)
    assert len(list(tmp_path.glob("*.json"))) == 2 * len(shapes)
    again = _table(tmp_path)
    assert again.prepare(jobs) == 0
    assert again.searched == 0
    assert [again.step_time_s(jobs[2], s) for s in shapes] == [
        table.step_time_s(jobs[2], s) for s in shapes
    ]
    assert again.searched == 0


def test_cache_key_follows_the_content(tmp_path: Path) -> None:
    model = tmp_path / "m.toml"
    model.write_text(TINY_MODEL)
    shape = _shape(1, 1)
    table = _table(tmp_path / "cache")
    table.prepare([_job(str(model))], [shape])
    assert table.prepare([_job(str(model))], [shape]) == 0  # same content: a hit
    model.write_text(TINY_MODEL.replace("num_layers = 4", "num_layers = 8"))
    fresh = _table(tmp_path / "cache")
    assert fresh.prepare([_job(str(model))], [shape]) == 1  # new content: a miss
    assert fresh.prepare([_job(str(model), seq_len=16)], [shape]) == 1  # other seq len
    other = PlannedSpeeds(
        load_spec("dgx-a100", nodes=2, gpus_per_node=2), cache_dir=tmp_path / "cache",
        executor="inline", time_limit_s=20,
    )  # fmt: skip
    a100 = Shape(gpu_type="a100-80gb", gpus=1, nodes=1)
    assert other.prepare([_job(str(model))], [a100]) == 1  # other cluster


def test_on_demand_and_none(tmp_path: Path) -> None:
    table = _table(tmp_path)
    assert table.step_time_s(_job(), _shape(2, 2)) is not None  # searched now, then cached
    assert table.searched == 1 and len(list(tmp_path.glob("*.json"))) == 1
    assert table.step_time_s(_job(max_gpus=1), _shape(2, 2)) is None  # not allowed
    assert table.step_time_s(_job(), _shape(8, 2)) is None  # the cluster has no such shape
    assert table.step_time_s(_job(gpu_types=("a100-80gb",)), _shape(1, 1)) is None


def test_a_model_too_big_for_a_shape_has_no_speed(tmp_path: Path) -> None:
    """70B: its bf16 weights alone (140 GB) exceed one 80 GB GPU, optimizer offloaded or not."""
    big = _job("llama3-70b", global_batch=16)
    table = _table(tmp_path)
    assert table.step_time_s(big, _shape(1, 1)) is None
    assert "needs at least" in table.reason(big, _shape(1, 1))


def test_offload_fits_a_13b_model_on_one_gpu(tmp_path: Path) -> None:
    """13B needs > 200 GiB with its Adam states on the device; with them in host memory (the
    cluster's hosts are described) its weights and gradients fit one 80 GB GPU, as in
    ZeRO-Offload."""
    job = _job("gpt3-13b", global_batch=16)
    table = _table(tmp_path)
    one = table.step_time_s(job, _shape(1, 1))
    assert one is not None and one > 0
    four = table.step_time_s(job, _shape(4, 2))
    assert four is not None and four < one


def test_spread_is_slower_than_packed(tmp_path: Path) -> None:
    """Locality: the same GPUs one per node (over the network) are slower than in one node."""
    spec = load_spec("dgx-h100", nodes=4)
    table = PlannedSpeeds(spec, cache_dir=tmp_path, executor="inline", time_limit_s=20)
    job = _job("gpt3-350m", global_batch=64, seq_len=1024)
    for gpus in (2, 4):
        packed = table.step_time_s(job, _shape(gpus, 1))
        spread = table.step_time_s(job, _shape(gpus, gpus))
        assert packed is not None and spread is not None
        assert spread > packed, (gpus, packed, spread)  # its gradients cross the network
