"""Execute a trace for real under a policy and simulate it under the same policy; compare.

Order of work (`execute`): the modelled step time of every job on every slot count it may get
(RunSpeeds, measured profiles; before any clock runs), the measured launch costs
(real_costs.measure_costs, unless given), the simulation (ModelledClusterSim), then the real run
(RealClusterRun). `comparison_document` is the record written under traces/schedule/.

Errors are (simulated - measured) / measured, for the makespan, the average JCT and each JCT.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simplan.schedule.cluster import SimOptions
from simplan.schedule.core import Job, Shape
from simplan.schedule.real import (
    RUN_SCHEMA_VERSION,
    LaunchRecord,
    ModelledClusterSim,
    RealClusterRun,
    check_slots,
    job_steps,
    scaled,
)
from simplan.schedule.real_costs import LaunchCosts, RunSpeeds, measure_costs, run_config
from simplan.schedule.results import ScheduleResult
from simplan.schedule.state import cluster_nodes
from simplan.topology.cluster_spec import ClusterSpec

RECORD_DIR = Path("traces/schedule")


@dataclass(frozen=True, kw_only=True)
class RealComparison:
    """A real run of a trace and its simulation under one policy."""

    policy: str
    slots: int
    time_scale: float
    speeds: str
    costs: LaunchCosts
    measured: ScheduleResult
    simulated: ScheduleResult
    launches: tuple[LaunchRecord, ...]

    def comparison(self) -> dict[str, Any]:
        m, s = self.measured.metrics, self.simulated.metrics
        sim_jct = {j.id: j.jct_s for j in self.simulated.jobs}
        return {
            "makespan_s": _pair(m.makespan_s, s.makespan_s),
            "avg_jct_s": _pair(m.avg_jct_s, s.avg_jct_s),
            "jobs": [{"id": j.id, **_pair(j.jct_s, sim_jct[j.id])} for j in self.measured.jobs],
        }


def _pair(measured: float, simulated: float) -> dict[str, float]:
    error = (simulated - measured) / measured if measured > 0 else 0.0
    return {"measured": measured, "simulated": simulated, "error": error}


def slot_counts(job: Job, slots: int) -> list[int]:
    """The slot counts a job may be given: min_gpus .. max_gpus (or all slots)."""
    top = min(job.max_gpus or slots, slots)
    return [n for n in range(job.min_gpus, top + 1) if run_config(job, n) is not None]


RIGID_POLICIES = ("fifo", "srtf", "las")


def rigid_count(job: Job, slots: int) -> list[int]:
    """The slot count a rigid policy gives a job (ClusterSim's rigid_size: max_gpus, else
    min_gpus, halved while the batch does not split)."""
    n = min(job.max_gpus or job.min_gpus, slots)
    while n >= job.min_gpus:
        if run_config(job, n) is not None:
            return [n]
        n //= 2
    return []


def execute(
    jobs: Sequence[Job],
    spec: ClusterSpec,
    policy: str,
    *,
    time_scale: float = 1.0,
    timeout_s: float = 120.0,
    profiled: bool = True,
    work_dir: Path | None = None,
    costs: LaunchCosts | None = None,
    echo: Callable[[str], None] = lambda _: None,
) -> RealComparison:
    from simplan.schedule.real_launch import rank_context
    from simplan.schedule.run import Workload, make_policy

    slots = check_slots(spec)
    jobs = scaled(jobs, time_scale)
    nodes = cluster_nodes(spec)
    context = rank_context()
    speeds = RunSpeeds(profiled=profiled, context=context)

    def sizes(job: Job) -> list[int]:
        return rigid_count(job, slots) if policy in RIGID_POLICIES else slot_counts(job, slots)

    echo("modelling each job's step time on the slot counts the policy may give it")
    for job in jobs:
        for n in sizes(job):
            speeds.step_time_s(job, Shape(gpu_type=nodes[0].gpu_type, gpus=n, nodes=1))
    workload = Workload(jobs=tuple(jobs), spec=spec, speeds=speeds, work=job_steps)
    with tempfile.TemporaryDirectory(prefix="simplan-schedule-", dir=work_dir) as tmp:
        if costs is None:
            costs = measure_costs(jobs, sizes, Path(tmp) / "costs", context, echo)
        chosen, notes = make_policy(policy, workload)
        sim = ModelledClusterSim(
            jobs, nodes, speeds, chosen, SimOptions(checkpoint_s=0.0),
            cluster_name=spec.name, work=job_steps, costs=costs,
        ).run(notes)  # fmt: skip
        echo(f"simulated: makespan {sim.metrics.makespan_s:.1f} s; running the trace for real")
        chosen, notes = make_policy(policy, workload)
        real = RealClusterRun(
            jobs, nodes, speeds, chosen, costs=costs, run_dir=Path(tmp) / "run",
            context=context, cluster_name=spec.name, timeout_s=timeout_s, echo=echo,
        )  # fmt: skip
        measured = real.run(notes)
    return RealComparison(
        policy=policy,
        slots=slots,
        time_scale=time_scale,
        speeds="measured layer profile" if profiled else "device model",
        costs=costs,
        measured=measured,
        simulated=sim,
        launches=tuple(real.records),
    )


def comparison_document(result: RealComparison, trace: str, command: str = "") -> dict[str, Any]:
    """The record of a real run: both schedules, the comparison, the launches and metadata."""
    from simplan.environment import environment

    return {
        "schema": {"kind": "schedule-run", "version": RUN_SCHEMA_VERSION},
        "trace": trace,
        "policy": result.policy,
        "slots": result.slots,
        "time_scale": result.time_scale,
        "step_times": result.speeds,
        "launch_costs": result.costs.to_dict(),
        "comparison": result.comparison(),
        "measured": result.measured.to_dict(),
        "simulated": result.simulated.to_dict(),
        "launches": [dataclasses.asdict(r) | {"losses": list(r.losses)} for r in result.launches],
        "meta": environment(command=command),
    }


def write_record(document: dict[str, Any], record_dir: str | Path = RECORD_DIR) -> Path:
    """Write the record as record_dir/run-<policy>-<UTC time>.json (a new name, atomically)."""
    from simplan.outputs import new_directory, write_json_atomic

    stem = new_directory(record_dir, f"run-{document['policy']}")
    path = stem.with_suffix(".json")
    while path.exists():
        stem = stem.with_name(stem.name + "-2")
        path = stem.with_suffix(".json")
    return write_json_atomic(document, path)
