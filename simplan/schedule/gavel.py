"""Gavel-style heterogeneity-aware max-min fairness (Narayanan et al., OSDI 2020), and its
heterogeneity-agnostic counterpart.

Each round (GAVEL_ROUND_S) in which the jobs or the up GPUs changed, an LP (PuLP, HiGHS)
chooses X[j, t], the share of time job j should run on GPU type t, to maximise
min_j (sum_t X[j,t] * T[j,t]) / (w_j * T_eq[j]) subject to sum_t X[j,t] <= 1 (a job runs on
one type at a time) and sum_j X[j,t] * g_j <= G_t (GPUs of type t that are up), where T[j,t]
is job j's throughput (steps/s) on its rigid GPU count of type t, T_eq[j] = sum_t (G_t / G)
T[j,t] its throughput on an equal share of every type, and w_j its weight. The agnostic
counterpart solves the same LP with T[j,t] = T_eq[j] on every type: all GPUs look alike to it.

Between LP solves, Gavel's round mechanism places jobs by priority X[j,t] / (share of its time
so far that j received on t), highest first (jobs that have not received their share come
first); the remaining jobs then fill spare GPUs. As in Gavel, the max-min LP is followed by a
second one that keeps the max-min value and maximises the total normalised throughput (the
first LP alone leaves ties, and GPUs, to chance). On a cluster of one GPU type both LPs have a
closed-form solution (`one_type_shares`), used there: the same optimum, without a solver.
"""

from __future__ import annotations

from collections.abc import Sequence

import pulp

from simplan.planner.ilp import make_solver, quiet_stdout
from simplan.schedule.core import Shape
from simplan.schedule.state import (
    Allocation,
    ClusterState,
    JobState,
    Policy,
    Request,
    allowed_types,
)

GAVEL_ROUND_S = 360.0  # Gavel's round length: 6 minutes (Narayanan et al., OSDI 2020, sec. 6)
LP_TIME_LIMIT_S = 10.0


def throughputs(state: ClusterState, js: JobState) -> dict[str, float]:
    """Steps/s of the job on its rigid GPU count, packed, on each allowed type (0: cannot)."""
    out: dict[str, float] = {}
    for gpu_type in allowed_types(js.job, state):
        per_node = state.nodes[state.nodes_by_type[gpu_type][0]].gpus
        nodes = -(-js.rigid_gpus // per_node)
        shape = Shape(gpu_type=gpu_type, gpus=js.rigid_gpus, nodes=nodes)
        fits = js.rigid_gpus % nodes == 0 and nodes <= len(state.nodes_by_type[gpu_type])
        step = state.speeds.step_time_s(js.job, shape) if fits else None
        out[gpu_type] = 1.0 / step if step else 0.0
    return out


def max_min_shares(
    jobs: Sequence[JobState],
    tput: dict[str, dict[str, float]],
    capacity: dict[str, int],
) -> dict[tuple[str, str], float]:
    """The max-min fair time shares X[(job id, type)] of the LP in the module doc (on one GPU
    type, its closed-form solution)."""
    if len(capacity) == 1:
        return one_type_shares(jobs, tput, capacity)
    return lp_shares(jobs, tput, capacity)


def lp_shares(
    jobs: Sequence[JobState],
    tput: dict[str, dict[str, float]],
    capacity: dict[str, int],
) -> dict[tuple[str, str], float]:
    """The two LPs of the module doc, solved by PuLP (HiGHS)."""
    total = sum(capacity.values()) or 1
    prob = pulp.LpProblem("gavel_max_min", pulp.LpMaximize)
    z = prob.add_variable("z", 0, None, cat="Continuous")
    x = {
        (js.id, t): prob.add_variable(f"x_{n}_{k}", 0, 1, cat="Continuous")
        for n, js in enumerate(jobs)
        for k, t in enumerate(capacity)
        if tput[js.id].get(t, 0.0) > 0
    }
    prob += z
    progress = []
    for js in jobs:
        mine = [(t, v) for (i, t), v in x.items() if i == js.id]
        if not mine:
            continue
        equal = sum(capacity[t] / total * tput[js.id].get(t, 0.0) for t in capacity)
        prob += pulp.lpSum(v for _, v in mine) <= 1
        norm = js.job.weight * equal if js.job.weight > 0 else equal
        progress.append(pulp.lpSum(v * tput[js.id][t] / norm for t, v in mine))
        prob += progress[-1] >= z
    for t, gpus in capacity.items():
        used = [v * js.rigid_gpus for js in jobs if (v := x.get((js.id, t))) is not None]
        if used:
            prob += pulp.lpSum(used) <= gpus
    _solve(prob)
    # second stage: keep the max-min value, use what is left (the most total progress)
    prob += z >= (z.value() or 0.0) * (1 - 1e-6)
    prob.setObjective(pulp.lpSum(progress))
    _solve(prob)
    return {key: float(v.value() or 0.0) for key, v in x.items()}


def one_type_shares(
    jobs: Sequence[JobState],
    tput: dict[str, dict[str, float]],
    capacity: dict[str, int],
) -> dict[tuple[str, str], float]:
    """The two LPs on one GPU type, solved exactly without a solver. There T_eq = T, so job j's
    normalised progress is X_j / w_j: the max-min value is z = min(1 / max w_j, G / sum w_j g_j)
    (every X_j = z w_j fits both bounds); the second LP keeps X_j >= z w_j and spends the GPUs
    left on the most progress per GPU, 1 / (w_j g_j), first, each job up to X_j = 1 (a
    fractional knapsack, whose greedy solution is optimal)."""
    ((gpu_type, gpus),) = capacity.items()
    mine = [js for js in jobs if tput[js.id].get(gpu_type, 0.0) > 0]
    if not mine:
        return {}
    weight = {js.id: js.job.weight if js.job.weight > 0 else 1.0 for js in mine}
    demand = sum(weight[js.id] * js.rigid_gpus for js in mine)
    z = min(1.0 / max(weight.values()), gpus / demand) * (1 - 1e-6)
    shares = {js.id: z * weight[js.id] for js in mine}
    left = gpus - sum(shares[js.id] * js.rigid_gpus for js in mine)
    for js in sorted(mine, key=lambda js: weight[js.id] * js.rigid_gpus):
        if left <= 0:
            break
        more = min(1.0 - shares[js.id], left / js.rigid_gpus)
        shares[js.id] += more
        left -= more * js.rigid_gpus
    return {(i, gpu_type): x for i, x in shares.items()}


def _solve(prob: pulp.LpProblem) -> None:
    with quiet_stdout():
        prob.solve(make_solver(LP_TIME_LIMIT_S))


class Gavel:
    """The round-based policy; aware=False is the heterogeneity-agnostic counterpart."""

    def __init__(self, aware: bool) -> None:
        self.aware = aware
        self.shares: dict[tuple[str, str], float] = {}
        self.solved_at_s = -float("inf")
        self.solves = 0
        self.solved_for: tuple[frozenset[str], tuple[int, ...]] = (frozenset(), ())

    def _tput(
        self, state: ClusterState, js: JobState, fraction: dict[str, float]
    ) -> dict[str, float]:
        """Steps/s by type; agnostic: the same on every type, that of an equal share of every
        type (`fraction`: each type's share of the cluster's GPUs)."""
        real = throughputs(state, js)
        if self.aware:
            return real
        equal = sum(fraction[t] * v for t, v in real.items())
        return {t: equal for t, v in real.items() if v > 0}

    def decide(self, state: ClusterState, queue: Sequence[JobState]) -> Allocation:
        now = state.now_s
        capacity = {t: state.gpus_of_type(t) for t in state.gpu_types}
        key = (frozenset(js.id for js in queue), tuple(capacity.values()))
        due = now >= self.solved_at_s + GAVEL_ROUND_S - 1e-9
        if due and queue and key != self.solved_for:
            total = state.total_gpus
            fraction = {t: state.gpus_of_type(t, up_only=False) / total for t in state.gpu_types}
            tput = {js.id: self._tput(state, js, fraction) for js in queue}
            self.shares = max_min_shares(queue, tput, capacity)
            self.solved_at_s, self.solves, self.solved_for = now, self.solves + 1, key
        pairs: list[tuple[float, int, Request]] = []
        for n, js in enumerate(queue):
            waited = max(now - js.job.arrival_s, GAVEL_ROUND_S)
            for t in allowed_types(js.job, state):
                share = self.shares.get((js.id, t), 0.0)
                received = js.gpu_s_on(t, now) / js.rigid_gpus / waited
                priority = share / received if received > 0 else (1e9 * share)
                pairs.append((-priority, n, Request(job_id=js.id, gpus=js.rigid_gpus, gpu_type=t)))
        pairs.sort(key=lambda p: (p[0], p[1]))
        return Allocation(requests=tuple(r for _, _, r in pairs))


def make_gavel(aware: bool = True) -> Policy:
    gavel = Gavel(aware)
    name = "gavel" if aware else "gavel-agnostic"
    return Policy(name=name, decide=gavel.decide, round_s=GAVEL_ROUND_S)
