"""The synthetic workload of the schedule benchmarks: simplan's Philly trace generator
(simplan.schedule.synthetic; the published distributions and their sources are in
simplan/data/cluster_workloads.json: 1/2/4/8 GPUs 70/10/15/5%, durations 10^U[1.5, 3] minutes
for 80% of jobs and 10^U[3, 4] minutes for 20%, a heavy tail; Poisson arrivals) with the
analytic speed table (simplan.schedule.analytic), so the benchmarks run without the planner.

The arrival rate is the benchmark's one setting: it loads the cluster to LOAD (offered
GPU-seconds per second over the cluster's GPUs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from simplan.schedule.analytic import AnalyticSpeeds
from simplan.schedule.run import Workload
from simplan.schedule.synthetic import default_kinds, draw_jobs, load_workload, synthetic_trace
from simplan.topology.cluster_spec import ClusterSpec

LOAD = 0.9


def synthetic_workload(spec: ClusterSpec, jobs: int, seed: int = 0, load: float = LOAD) -> Workload:
    """`jobs` Philly-like jobs on `spec` (work sized on its first GPU type), arriving at the rate
    that offers `load` of its GPUs."""
    philly = load_workload("philly")
    kinds = default_kinds()
    draws = draw_jobs(jobs, seed=seed, jobs_per_hour=1.0, workload=philly, kinds=len(kinds))
    total_gpus = sum(g.count * g.devices_per_node for g in spec.groups)
    offered = sum(d.gpus * d.duration_s for d in draws)
    rate_per_s = load * total_gpus * jobs / offered
    scale = 1.0 / (rate_per_s * 3600.0)  # drawn at one job an hour
    draws = [dataclasses.replace(d, arrival_s=d.arrival_s * scale) for d in draws]
    speeds = AnalyticSpeeds(spec)
    trace = synthetic_trace(
        draws, kinds=kinds, speeds=speeds, spec=spec, gpu_type=spec.groups[0].device.name
    )
    return Workload(jobs=tuple(trace), spec=spec, speeds=speeds)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    from simplan.table import render

    return render(list(headers), rows)
