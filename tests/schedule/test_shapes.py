"""Candidate shapes of a job on a cluster, and the sub-cluster each stands for."""

from __future__ import annotations

import pytest

from simplan.errors import SimplanError
from simplan.schedule.core import Job, Shape
from simplan.schedule.shapes import (
    allows,
    candidate_shapes,
    check_fits_cluster,
    shape_label,
    shape_spec,
)
from simplan.topology import load_cluster
from simplan.topology.cluster_spec import load_spec


def _job(**fields: object) -> Job:
    return Job(**{"id": "j", "model": "gpt-tiny", "global_batch": 8, "work": 10.0, **fields})  # type: ignore[arg-type]


def _labels(shapes: list[Shape]) -> list[str]:
    return [shape_label(s) for s in shapes]


def test_powers_of_two_packed_and_spread() -> None:
    spec = load_spec("dgx-h100", nodes=2)  # 2 nodes x 8 GPUs
    shapes = candidate_shapes(spec, _job())
    one_node = [s for s in shapes if s.nodes == 1]
    assert candidate_shapes("dgx-h100", _job()) == one_node  # the preset: a single node
    assert _labels(shapes) == [
        "1xh100-sxm/1n", "2xh100-sxm/1n", "2xh100-sxm/2n", "4xh100-sxm/1n", "8xh100-sxm/1n",
        "16xh100-sxm/2n",
    ]  # fmt: skip


def test_spread_needs_a_node_per_gpu() -> None:
    spec = load_spec("dgx-h100", nodes=4, gpus_per_node=2)
    labels = _labels(candidate_shapes(spec, _job(min_gpus=3, max_gpus=4)))
    assert labels == ["4xh100-sxm/2n", "4xh100-sxm/4n"]


def test_gpu_types_and_bounds_on_a_mixed_cluster() -> None:
    spec = load_spec("mixed-a100-h100", nodes=2)  # one A100 node, one H100 node
    job = _job(gpu_types=("h100-sxm",), min_gpus=2, max_gpus=4)
    assert _labels(candidate_shapes(spec, job)) == ["2xh100-sxm/1n", "4xh100-sxm/1n"]
    both = candidate_shapes(spec, _job(min_gpus=8))
    assert _labels(both) == ["8xa100-80gb/1n", "8xh100-sxm/1n"]
    assert all(allows(_job(min_gpus=8), s) for s in both)
    assert not allows(job, both[0])


def test_shape_spec_is_that_many_devices_on_that_many_nodes() -> None:
    spec = load_spec("mixed-a100-h100", nodes=4)
    for shape in candidate_shapes(spec, _job()):
        cluster = load_cluster(shape_spec(spec, shape))
        assert cluster.num_devices == shape.gpus
        assert cluster.nodes == shape.nodes
        assert {cluster.device_model(d).name for d in range(shape.gpus)} == {shape.gpu_type}


def test_shape_spec_refuses_what_the_cluster_lacks() -> None:
    spec = load_spec("dgx-h100", nodes=2)
    with pytest.raises(SimplanError, match="has no a100-80gb nodes"):
        shape_spec(spec, Shape(gpu_type="a100-80gb", gpus=1, nodes=1))
    with pytest.raises(SimplanError, match="does not fit"):
        shape_spec(spec, Shape(gpu_type="h100-sxm", gpus=4, nodes=4))


def test_a_job_that_fits_nowhere() -> None:
    spec = load_spec("dgx-h100", nodes=2)
    check_fits_cluster(spec, [_job(), _job(min_gpus=16)])
    with pytest.raises(
        SimplanError, match=r"job j, field min_gpus: needs 32\.\.any GPUs.*at most 16"
    ):
        check_fits_cluster(spec, [_job(min_gpus=32)])
    with pytest.raises(SimplanError, match=r"field gpu_types: allows a100-80gb.*only h100-sxm"):
        check_fits_cluster(spec, [_job(gpu_types=("a100-80gb",))])
    with pytest.raises(SimplanError, match=r"needs 3\.\.3 GPUs"):
        check_fits_cluster(spec, [_job(min_gpus=3, max_gpus=3)])
