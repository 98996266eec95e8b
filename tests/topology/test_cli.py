from __future__ import annotations

import json
from pathlib import Path

import pytest

from simplan.cli import main

GOOD = """\
name = "two-boxes"

[[node_group]]
count = 2
devices_per_node = 4
device = "h100-sxm"
fabric = { kind = "nvswitch", bandwidth_GBps = 450 }
nics = { count = 4, bandwidth_Gbps = 400 }

[network]
kind = "leaf-spine"
nodes_per_leaf = 1
spines = 2
oversubscription = 2.0
"""


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line, no traceback
    assert "Traceback" not in err
    return err


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "cluster.toml"
    path.write_text(text)
    return str(path)


def test_clusters_lists_presets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["clusters"]) == 0
    out = capsys.readouterr().out
    names = ("dgx-a100", "dgx-h100", "h200", "h200-1gpu", "dgx-b200", "gb200-nvl72", "pcie-a100")
    for name in (*names, "localhost-cpu", "mixed-a100-h100"):
        assert name in out


def test_show_file_with_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "topo.png"
    assert main(["clusters", "show", _write(tmp_path, GOOD), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "two-boxes: 2 node(s), 8 device(s)" in out
    assert png.stat().st_size > 10_000


def test_show_json_scaled(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["clusters", "show", "dgx-a100", "--nodes", "4", "--gpus-per-node", "2", "--json"])
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert (data["nodes"], data["devices"]) == (4, 8)
    assert data["examples"][0]["algorithm"] == "ring"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("name = [unclosed\n", "malformed TOML"),
        (
            GOOD.replace("bandwidth_GBps = 450", "bandwidth_GBps = 0"),
            "fabric.bandwidth_GBps must be a finite number in (0,",
        ),
        (
            GOOD.replace("bandwidth_Gbps = 400", "bandwidth_Gbps = -5"),
            "nics.bandwidth_Gbps must be a finite number in (0,",
        ),
        (GOOD + '\n[[link]]\na = "n0.g0"\nb = "n0.g7"\nbandwidth_GBps = 50\n', "link[0].b"),
        (GOOD.replace('kind = "leaf-spine"', 'kind = "none"'), "disconnected"),
        (GOOD.replace("nics = { count = 4,", "nics = { count = 0,"), "disconnected"),
        (GOOD.replace('kind = "nvswitch"', 'kind = "infiniband"'), "fabric.kind"),
        (GOOD.replace('device = "h100-sxm"', 'device = "tpu9"'), "unknown device model"),
        (GOOD.replace("count = 2\n", "count = 2\ncolour = 1\n"), "node_group[0].colour"),
    ],
)
def test_bad_specs_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, needle: str
) -> None:
    err = _error(capsys, ["clusters", "show", _write(tmp_path, text)])
    assert needle in err


def test_unknown_preset(capsys: pytest.CaptureFixture[str]) -> None:
    assert "unknown cluster 'dgx-b300'" in _error(capsys, ["clusters", "show", "dgx-b300"])


def test_missing_calibration_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = 'calibration = "traces/collectives/nowhere.json"\n' + GOOD
    assert "calibration" in _error(capsys, ["clusters", "show", _write(tmp_path, text)])


def test_bench_comm_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--nprocs 1" in _error(capsys, ["bench-comm", "--nprocs", "1"])
    assert "--sizes" in _error(capsys, ["bench-comm", "--sizes", "12Q"])
