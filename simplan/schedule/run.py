"""Run a policy, or several, over a trace on a cluster: the one function the verb calls."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from simplan.errors import SimplanError
from simplan.schedule.cluster import ClusterSim, SimOptions, steps_of
from simplan.schedule.core import Job, SpeedTable
from simplan.schedule.results import ScheduleResult
from simplan.schedule.state import Policy, cluster_nodes
from simplan.topology.cluster_spec import ClusterSpec

POLICY_NAMES = ("fifo", "srtf", "las", "gavel", "gavel-agnostic", "elastic", "static", "hybrid")


@dataclass(frozen=True, kw_only=True)
class Workload:
    """What a schedule runs: the jobs, the cluster, and each job's speed on each shape."""

    jobs: tuple[Job, ...]
    spec: ClusterSpec
    speeds: SpeedTable
    work: Callable[[Job], float] = steps_of


def make_policy(name: str, workload: Workload) -> tuple[Policy, Callable[[], tuple[str, ...]]]:
    """A fresh policy (policies may keep state over one run) and what it reports afterwards."""
    from simplan.schedule import policies

    nothing: Callable[[], tuple[str, ...]] = tuple
    if name == "fifo":
        return Policy(name="fifo", decide=policies.fifo), nothing
    if name == "srtf":
        return Policy(name="srtf", decide=policies.srtf), nothing
    if name == "las":
        return policies.make_las(), nothing
    if name == "elastic":
        return Policy(name="elastic", decide=policies.elastic), nothing
    if name in ("gavel", "gavel-agnostic"):
        from simplan.schedule.gavel import make_gavel

        return make_gavel(aware=name == "gavel"), nothing
    if name in ("static", "hybrid"):
        from simplan.schedule.hybrid import make_hybrid, make_static

        maker = make_static if name == "static" else make_hybrid
        return maker(workload)
    raise SimplanError(f"unknown policy {name!r}; use one of {', '.join(POLICY_NAMES)}")


def run_policy(name: str, workload: Workload, options: SimOptions | None = None) -> ScheduleResult:
    policy, notes = make_policy(name, workload)
    sim = ClusterSim(
        workload.jobs,
        cluster_nodes(workload.spec),
        workload.speeds,
        policy,
        options or SimOptions(),
        cluster_name=workload.spec.name,
        work=workload.work,
    )
    return sim.run(notes)


def run_policies(
    names: Sequence[str], workload: Workload, options: SimOptions | None = None
) -> list[ScheduleResult]:
    return [run_policy(name, workload, options) for name in names]
