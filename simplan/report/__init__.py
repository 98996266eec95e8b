"""Reports: matplotlib figures (headless, PNG and SVG) and a markdown index per directory.

    from simplan.report import write_simulation_report, write_plan_report
    write_simulation_report(simulate(model, cluster, config), "reports/demo")
    write_plan_report(plans, baselines, "reports/demo")       # planner Plans or PlanFiles
    write_validation_report("traces/runs", "reports/validation")

Figures one by one: simplan.report.timeline.timeline_figure(result), breakdown, memory,
compare, sweep (run_sweep + sweep_figure) and validation; each returns a matplotlib Figure.
"""

from __future__ import annotations

from simplan.report.reports import (
    simulate_plan,
    write_plan_report,
    write_simulation_report,
    write_sweep_report,
    write_validation_report,
)
from simplan.report.sweep import SweepPoint, run_sweep

__all__ = [
    "SweepPoint",
    "run_sweep",
    "simulate_plan",
    "write_plan_report",
    "write_simulation_report",
    "write_sweep_report",
    "write_validation_report",
]
