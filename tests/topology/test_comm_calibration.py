from __future__ import annotations

import importlib.util
import json
import statistics
import sys
from pathlib import Path
from types import ModuleType

import pytest

from simplan.errors import SimplanError
from simplan.topology import load_cluster
from simplan.topology.comm_calibration import (
    CONSTANTS_FILE,
    default_constants,
    read_link_calibration,
)
from tests.helpers import two_cpu_spec

ROOT = Path(__file__).resolve().parents[2]


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_stored_constants_equal_what_the_script_derives() -> None:
    derived, _ = _script("calibrate_collectives").derive()
    stored = json.loads(CONSTANTS_FILE.read_text())["constants"]
    assert json.loads(json.dumps(derived.to_dict())) == stored
    assert default_constants() == derived


def test_every_constant_says_where_it_came_from() -> None:
    c = default_constants()
    assert all(c.sources[k] for k in ("launch_s", "memory_passes", "tree_efficiency"))
    assert "vtrain_a100_allreduce_lut.csv" in c.link("nvlink").source
    assert "collective_bandwidth_measurements.csv" in c.link("network").source


def test_vtrain_accuracy_gate() -> None:
    errors = _script("collectives_accuracy").vtrain_errors()
    all_errs = [abs(p / m - 1) for rows in errors.values() for _, m, p in rows]
    assert sorted(errors) == list(range(2, 9))
    assert statistics.median(all_errs) <= 0.10
    assert max(all_errs) <= 0.25


def test_calibration_file_sets_loopback_links(tmp_path: Path) -> None:
    doc = {
        "schema": {"kind": "collective-calibration", "version": 1},
        "metadata": {"nprocs": 2},
        "fit": {"alpha_s": 2e-4, "beta_s_per_byte": 1e-9},
    }
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(doc))
    cluster = load_cluster(two_cpu_spec(path))
    size = 8 * 2**20
    assert cluster.collective_time("all_reduce", size, [0, 1]) == pytest.approx(2e-4 + 1e-9 * size)
    assert read_link_calibration(path).link_bandwidth_Bps == pytest.approx(1e9)
    path.write_text(json.dumps({"schema": {"kind": "profile", "version": 1}}))
    with pytest.raises(SimplanError, match="collective-calibration"):
        load_cluster(two_cpu_spec(path))
