"""The synthetic workload of the schedule benchmarks: a heavy-tailed trace with the analytic
speed table (simplan.schedule.analytic), so the benchmarks run without the planner.

The distributions are settings of this benchmark, chosen to have the shape published traces
describe (most jobs small and short, a heavy tail of long and wide ones: Jeon et al., ATC 2019,
on Microsoft's Philly cluster; Hu et al., SC 2021, on SenseTime's Helios), not fitted to them:
- arrivals: a Poisson process whose rate loads the cluster to LOAD (offered GPU-seconds per
  second over GPUs) on the analytic speeds;
- GPUs: 1, 2, 4, 8, 16, 32 with weights GPU_WEIGHTS;
- run time alone on its GPUs: log-normal, median MEDIAN_RUN_S, sigma SIGMA (heavy tail),
  clipped to [60 s, 7 days]; work = run time / step time (steps);
- model: one of MODELS (counted by simplan, cached), global batch 256 (GPT) or 1024 (ResNet).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from simplan.schedule.analytic import AnalyticSpeeds
from simplan.schedule.core import Job, Shape
from simplan.schedule.run import Workload
from simplan.topology.cluster_spec import ClusterSpec

GPU_WEIGHTS = {1: 0.50, 2: 0.12, 4: 0.12, 8: 0.18, 16: 0.05, 32: 0.03}
MEDIAN_RUN_S = 1800.0
SIGMA = 1.8
LOAD = 0.9
MODELS = (("gpt3-125m", 256), ("gpt3-350m", 256), ("gpt3-1.3b", 256), ("resnet50", 1024))


def _packed(spec: ClusterSpec, gpus: int) -> list[Shape]:
    shapes = []
    for group in spec.groups:
        nodes = -(-gpus // group.devices_per_node)
        shapes.append(Shape(gpu_type=group.device.name, gpus=gpus, nodes=nodes))
    return shapes


def synthetic_workload(spec: ClusterSpec, jobs: int, seed: int = 0) -> Workload:
    rng = random.Random(seed)
    speeds = AnalyticSpeeds(spec)
    total_gpus = sum(g.count * g.devices_per_node for g in spec.groups)
    sizes, weights = list(GPU_WEIGHTS), list(GPU_WEIGHTS.values())
    drafts: list[tuple[str, int, int, float, float]] = []
    for i in range(jobs):
        model, batch = MODELS[rng.randrange(len(MODELS))]
        gpus = rng.choices(sizes, weights)[0]
        run_s = min(max(rng.lognormvariate(math.log(MEDIAN_RUN_S), SIGMA), 60.0), 7 * 86400.0)
        probe = Job(id=f"j{i}", model=model, global_batch=batch, work=1.0, min_gpus=gpus)
        times = [t for s in _packed(spec, gpus) if (t := speeds.step_time_s(probe, s)) is not None]
        drafts.append((model, batch, gpus, run_s / min(times), run_s))
    offered = sum(gpus * run_s for _, _, gpus, _, run_s in drafts)
    rate = LOAD * total_gpus * jobs / offered  # jobs per second
    now, out = 0.0, []
    for i, (model, batch, gpus, steps, _) in enumerate(drafts):
        out.append(Job(id=f"j{i}", model=model, global_batch=batch, work=steps, arrival_s=now,
                       min_gpus=gpus, max_gpus=gpus))  # fmt: skip
        now += rng.expovariate(rate)
    return Workload(jobs=tuple(out), spec=spec, speeds=speeds)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    from simplan.table import render

    return render(list(headers), rows)
