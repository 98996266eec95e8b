"""The head placement's report sections: the device figure and the tables."""

from __future__ import annotations

from pathlib import Path

from simplan.parallel import ParallelConfig
from simplan.planner.tasks import plan_heads
from simplan.report.index import render_index
from simplan.report.task_heads import device_roles, task_head_sections
from simplan.topology import load_cluster
from tests.multitask.test_plan_tasks import _heavy_detection


def test_report_shows_each_device_role_and_the_heads(tmp_path: Path) -> None:
    graph, tasks = _heavy_detection()
    choice = plan_heads(
        graph, tasks, load_cluster("pcie-a100"), ParallelConfig(global_batch=64, dtype="bf16")
    )
    roles = device_roles(choice)
    assert len(roles) == 8
    detect = choice.best.placement["heads"]["detect"]
    assert all(roles[d] == "head detect" for d in detect)
    assert all(roles[d] == "trunk" for d in choice.best.placement["trunk_devices"])
    sections = task_head_sections(choice, tmp_path, ("png",))
    assert (tmp_path / "task_heads.png").stat().st_size > 0
    text = render_index("t", "", sections)
    assert "| detect | " + ",".join(str(d) for d in detect) in text
    assert "| replicated | " in text and "over replicated" in text
