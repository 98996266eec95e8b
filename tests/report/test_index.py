"""The markdown index, and a simulation report written without a timeline."""

from __future__ import annotations

from pathlib import Path

from simplan.report import write_simulation_report
from simplan.report.index import Figure, Section, markdown_table, render_index
from tests.report.conftest import make_result


def test_markdown_table_escapes_pipes() -> None:
    text = markdown_table(["a", "b"], [["x|y", "1"]])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| x\\|y | 1 |"]


def test_index_links_figures_in_each_format() -> None:
    fig = Figure(name="timeline", caption="one step", formats=("png", "svg"))
    text = render_index("T", "intro", [Section(title="S", figures=(fig,), bullets=("b",))])
    assert text.startswith("# T\n\nintro\n\n## S\n\n- b\n")
    assert "![one step](timeline.png)\n*one step* ([SVG](timeline.svg))" in text


def test_simulation_report_without_events_has_no_timeline(tmp_path: Path) -> None:
    index = write_simulation_report(make_result(events=()), tmp_path, formats=("png",))
    text = index.read_text()
    assert "no events recorded" in text and "timeline.png" not in text
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".simplan-set.json") == [
        "breakdown.png",
        "index.md",
        "memory.png",
        "memory_time.png",
    ]
    assert "each stage row stands for 8 GPUs (dp 2 x tp 4)" in text
