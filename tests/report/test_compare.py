"""Plan comparison: four panels, a bar per plan, baselines grey and hatched, capacity marks."""

from __future__ import annotations

from matplotlib.colors import to_rgba

from simplan.parallel import ParallelConfig
from simplan.planfile import ClusterRef, PlanFile
from simplan.report.compare import compare_figure, compare_table, plan_rows, short_number
from simplan.report.style import BASELINE_COLOR, PLAN_COLOR
from simplan.units import GiB


def planfile(role: str, step_s: float, dp: int, tp: int, fits: bool = True) -> PlanFile:
    return PlanFile(
        model="gpt3-1.3b",
        cluster=ClusterRef(spec="dgx-a100", nodes=2),
        config=ParallelConfig(dp=dp, tp=tp, global_batch=64),
        predicted={
            "step_time_s": step_s,
            "tokens_per_s": 64 * 2048 / step_s,
            "mfu": 0.5 / step_s,
            "peak_memory_bytes": 40 * GiB / tp,
            "fits_memory": fits,
            "breakdown": {"compute_s": step_s * 0.8, "exposed_comm_s": step_s * 0.2},
            "stages": [{"stage": 0, "capacity_bytes": 80 * GiB}],
        },
        extra={"role": role},
    )


def rows():
    plans = [planfile("plan", 1.0, 4, 4), planfile("plan", 1.2, 2, 8)]
    baselines = [
        planfile("baseline:pure-dp", 1.5, 16, 1, fits=False),
        planfile("baseline:megatron", 1.3, 2, 8),
    ]
    return plan_rows(plans, baselines)


def test_rows_from_plan_files() -> None:
    r = rows()
    assert [x.label for x in r] == ["plan 1", "plan 2", "pure-dp", "megatron"]
    assert [x.is_baseline for x in r] == [False, False, True, True]
    assert r[0].capacity_bytes == 80 * GiB and r[2].fits is False
    headers, body = compare_table(r)
    assert headers[3] == "step time (s)" and body[2][-1] == "no"
    assert body[0][2] == "dp4 tp4 pp1 mb1 gb64 1f1b"


def test_compare_figure_panels_bars_and_colours() -> None:
    fig = compare_figure(rows(), title="plans")
    assert len(fig.axes) == 4
    xlabels = [ax.get_xlabel() for ax in fig.axes]
    assert xlabels == [
        "step time (ms)",
        "throughput (tokens/s)",
        "MFU (%)",
        "peak memory per device (GiB)",
    ]
    first = fig.axes[0]
    assert [t.get_text() for t in first.get_yticklabels()] == [
        "plan 1",
        "plan 2",
        "pure-dp",
        "megatron",
    ]
    for ax in fig.axes:
        bars = ax.patches
        assert len(bars) == 4
        colors = [b.get_facecolor() for b in bars]
        assert colors == [to_rgba(PLAN_COLOR)] * 2 + [to_rgba(BASELINE_COLOR)] * 2
        assert [b.get_hatch() or "" for b in bars] == ["", "", "//", "//"]
    assert [b.get_width() for b in fig.axes[0].patches] == [1000.0, 1200.0, 1500.0, 1300.0]
    assert [t.get_text() for t in fig.axes[0].texts] == ["1,000", "1,200", "1,500", "1,300"]
    capacity = [c for c in fig.axes[3].collections if c.get_label() == "capacity"]
    assert len(capacity[0].get_segments()) == 4


def test_short_numbers() -> None:
    assert short_number(324479.2) == "324,479"
    assert short_number(60.43) == "60.4"
    assert short_number(0.012345) == "0.0123"
