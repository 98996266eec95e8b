"""Executors of the speed table's fan-out: local processes and a real Dask cluster give the same
table as running the searches in this process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from simplan.errors import SimplanError
from simplan.schedule.core import Job, Shape
from simplan.schedule.executors import InlineExecutor, check_executor, open_executor
from simplan.schedule.shapes import candidate_shapes
from simplan.schedule.speeds import PlannedSpeeds
from simplan.topology.cluster_spec import load_spec
from tests.helpers import ROOT

SPEC = load_spec("dgx-h100", nodes=2, gpus_per_node=2)
JOBS = [
    Job(id="a", model="gpt-tiny", global_batch=8, work=10.0),
    Job(id="b", model="gpt-tiny", global_batch=16, work=10.0, max_gpus=2),
]


def _table(executor: str, cache: Path) -> dict[tuple[str, Shape], float | None]:
    table = PlannedSpeeds(SPEC, cache_dir=cache, executor=executor, time_limit_s=20)
    assert table.prepare(JOBS) == sum(len(candidate_shapes(SPEC, j)) for j in JOBS)
    return {(j.kind, s): table.step_time_s(j, s) for j in JOBS for s in candidate_shapes(SPEC, j)}


@pytest.mark.parametrize("name", ["local", "local:3", "inline", "dask://10.0.0.1:8786"])
def test_executor_names(name: str) -> None:
    assert check_executor(name) == name


@pytest.mark.parametrize("name", ["", "local:0", "locals", "dask://host", "ray://h:1", "dask:"])
def test_bad_executor_names(name: str) -> None:
    with pytest.raises(SimplanError, match="use local, local:N"):
        check_executor(name)


def test_inline_executor_hands_back_errors() -> None:
    future = InlineExecutor().submit(int, "x")
    with pytest.raises(ValueError):
        future.result()


def test_local_processes_give_the_inline_table(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    inline = _table("inline", tmp_path / "inline")
    assert _table("local:2", tmp_path / "local") == inline
    assert sum(v is not None for v in inline.values()) == len(inline)


def test_dask_cluster_gives_the_inline_table(tmp_path: Path, monkeypatch) -> None:
    distributed = pytest.importorskip("distributed")
    monkeypatch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    inline = _table("inline", tmp_path / "inline")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        address = cluster.scheduler_address.removeprefix("tcp://")
        assert _table(f"dask://{address}", tmp_path / "dask") == inline
        workers = cluster.scheduler_info["workers"]
        assert len(workers) == 2


def test_dask_without_a_scheduler_is_one_line(monkeypatch) -> None:
    pytest.importorskip("distributed")
    monkeypatch.setattr("simplan.schedule.executors.DASK_CONNECT_TIMEOUT_S", 1.0)
    with (
        pytest.raises(SimplanError, match="no Dask scheduler answered"),
        open_executor("dask://127.0.0.1:9"),
    ):
        pass
