"""Schedule metrics, each with its formula:

- JCT (job completion time) of a job = finish_s - arrival_s; avg, median and p99 over jobs
  (p99: numpy's linear-interpolation percentile);
- makespan = last finish - first arrival;
- utilization = allocated GPU-seconds / (cluster GPUs * makespan) (GPUs held count as busy,
  restart time included; GPUs of a failed node count in the denominator);
- queueing delay of a job = first_start_s - arrival_s (avg over jobs);
- finish-time fairness ratio of a job (Themis, Mahajan et al., NSDI 2020) = JCT / isolated_s,
  isolated_s being its run time alone on the cluster (rigid GPU count, best type, packed): 1 is
  no slowdown from sharing; avg and max over jobs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from simplan.schedule.results import JobRecord, Metrics


def busy_gpu_s(busy: Sequence[tuple[float, int]], end_s: float) -> float:
    """Integral of allocated GPUs over time from the step function busy (time_s, gpus)."""
    total = 0.0
    for (t0, gpus), (t1, _) in zip(busy, [*busy[1:], (end_s, 0)], strict=True):
        total += gpus * (min(t1, end_s) - t0)
    return total


def schedule_metrics(
    jobs: Sequence[JobRecord],
    busy: Sequence[tuple[float, int]],
    total_gpus: int,
    failures: int,
) -> Metrics:
    if not jobs:
        raise ValueError("schedule_metrics: no jobs")
    jct = np.array([j.jct_s for j in jobs])
    ratio = np.array([j.jct_s / j.isolated_s for j in jobs])
    start = min(j.arrival_s for j in jobs)
    end = max(j.finish_s for j in jobs)
    makespan = end - start
    used = busy_gpu_s(busy, end)
    return Metrics(
        jobs=len(jobs),
        avg_jct_s=float(jct.mean()),
        median_jct_s=float(np.median(jct)),
        p99_jct_s=float(np.percentile(jct, 99)),
        makespan_s=makespan,
        utilization=used / (total_gpus * makespan) if makespan > 0 else 0.0,
        avg_queueing_s=float(np.mean([j.queueing_s for j in jobs])),
        avg_finish_time_ratio=float(ratio.mean()),
        max_finish_time_ratio=float(ratio.max()),
        preemptions=sum(j.preemptions for j in jobs),
        failures=failures,
    )
