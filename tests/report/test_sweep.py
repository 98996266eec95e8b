"""Sweeps: simulated through the API (a small synthetic model), and the figure's content."""

from __future__ import annotations

from matplotlib.colors import to_rgba

from simplan.model_graph import ModelGraph, OpCost
from simplan.parallel import ParallelConfig
from simplan.report.style import CAPACITY_COLOR
from simplan.report.sweep import SweepPoint, run_sweep, sweep_figure, sweep_table
from tests.helpers import chain_graph

OPS = OpCost(gemms=((2e12, 1e8, 4),), mem_bytes=1e7, mem_ops=4)


def chain(n: int = 4) -> ModelGraph:
    return chain_graph(n, params=10**8, io_bytes=1e6, fwd_ops=OPS, bwd_ops=OPS)


def test_sweeps_through_the_simulator() -> None:
    config = ParallelConfig(dp=2, tp=1, pp=2, micro_batch=2, global_batch=16)
    by_nodes = run_sweep(chain(), "dgx-h100", config, vary="nodes", values=[1, 2], gpus_per_node=4)
    assert [p.devices for p in by_nodes] == [4, 8]
    assert by_nodes[1].config.startswith("dp4 tp1 pp2")
    assert by_nodes[1].tokens_per_s > by_nodes[0].tokens_per_s
    by_bw = run_sweep(
        chain(), "dgx-h100", config, vary="bandwidth", values=[0.25, 1, 4], nodes=2, gpus_per_node=2
    )
    steps = [p.step_time_s for p in by_bw]
    assert steps[0] >= steps[1] >= steps[2]  # more bandwidth never makes a step slower
    by_mb = run_sweep(
        chain(), "dgx-h100", config, vary="micro-batch", values=[1, 3, 4], nodes=1, gpus_per_node=4
    )
    assert by_mb[1].error and not by_mb[0].error and not by_mb[2].error
    headers, rows = sweep_table(by_mb, "micro-batch")
    assert headers[0] == "micro-batch" and rows[1][2] == by_mb[1].error


def points() -> list[SweepPoint]:
    return [
        SweepPoint(value=1, devices=8, step_time_s=2.0, tokens_per_s=1000.0, mfu=0.5),
        SweepPoint(value=2, devices=16, step_time_s=1.1, tokens_per_s=1800.0, mfu=0.45),
        SweepPoint(value=4, devices=32, error="tp 8 x pp 8 does not divide"),
        SweepPoint(value=8, devices=64, step_time_s=0.4, tokens_per_s=5000.0, mfu=0.3, fits=False),
    ]


def test_node_sweep_figure() -> None:
    fig = sweep_figure(points(), vary="nodes", title="scaling")
    tput, mfu = fig.axes
    assert tput.get_xlabel() == "GPUs" and tput.get_ylabel() == "throughput (tokens/s)"
    assert mfu.get_ylabel() == "MFU (%)"
    lines = {ln.get_label(): ln for ln in tput.lines}
    assert list(lines["predicted"].get_xdata()) == [8.0, 16.0, 64.0]  # the error point is left out
    assert list(lines["predicted"].get_ydata()) == [1000.0, 1800.0, 5000.0]
    assert list(lines["linear scaling"].get_ydata()) == [1000.0, 2000.0, 8000.0]
    oom = lines["does not fit in memory"]
    assert list(oom.get_xdata()) == [64.0]
    assert to_rgba(oom.get_markeredgecolor()) == to_rgba(CAPACITY_COLOR)
    assert [t.get_text() for t in tput.get_xticklabels()] == ["8", "16", "64"]
    assert list({ln.get_label(): ln for ln in mfu.lines}["predicted"].get_ydata()) == [
        50.0,
        45.0,
        30.0,
    ]


def test_bandwidth_sweep_labels_the_links() -> None:
    fig = sweep_figure(points(), vary="bandwidth", title="bw", link_kinds=["network"])
    assert fig.axes[0].get_xlabel() == "network bandwidth (x the cluster's)"
    labels = [ln.get_label() for ln in fig.axes[0].lines]
    assert "linear scaling" not in labels
