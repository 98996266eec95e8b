"""One place for the local calibration: what `simplan bench-comm` writes by default is what
`simplan validate` reads, and --calibration FILE names another on both."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from simplan.topology.bench import default_output
from simplan.topology.cluster import resolve_calibration
from simplan.topology.cluster_spec import load_spec
from simplan.validate import local_cluster


def test_bench_comm_writes_by_default_the_file_the_preset_reads() -> None:
    assert str(default_output("gloo", 2)) == load_spec("localhost-cpu").calibration


def test_validate_reads_the_calibration_bench_comm_wrote_for_its_rank_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    preset = resolve_calibration(str(default_output("gloo", 2))).resolve()
    monkeypatch.chdir(tmp_path)
    assert Path(local_cluster(1).calibration.path).resolve() == preset.resolve()  # none for 1 rank
    written = tmp_path / default_output("gloo", 1)
    written.parent.mkdir(parents=True)
    shutil.copyfile(preset, written)
    assert Path(local_cluster(1).calibration.path).resolve() == written.resolve()
    other = tmp_path / "mine.json"
    shutil.copyfile(preset, other)
    assert Path(local_cluster(1, calibration=other).calibration.path) == other
