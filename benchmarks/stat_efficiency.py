"""Statistical efficiency of the synchronisation knobs, measured: steps to a target loss.

    .venv/bin/python benchmarks/stat_efficiency.py [--seeds 0 1 2] [--lr 0.1] [--target 0.6]
        [--name mlp-teacher] [--from-trace]

The model is the 784-128-10 MLP of models/mlp.py; the data a stream made here: inputs
x ~ N(0, I) in 784 dimensions (a fresh batch every step from a generator seeded by the run's
seed, so nothing is seen twice) labelled by a fixed random linear teacher, argmax(x @ W) over
10 classes (W ~ N(0, 1), seed 1234). The loss is the cross-entropy on 1,024 held-out samples of
the same teacher, evaluated after every step on the replicas' mean parameters; a run stops at
the first step whose loss is <= the target (0.6 by default; or at MAX_STEPS). Plain SGD,
learning rate 0.1 by default (--lr; --target),
global batch 128 (64 per rank), weights initialised from the run's seed.

Variants, all real on 2 gloo ranks (one torch thread each) except the staleness rows:
  ddp                 DistributedDataParallel, gradients all-reduced every step;
  local_sgd H         no DDP: torch's PostLocalSGDOptimizer around SGD with a
                      PeriodicModelAverager(period=H) (parameters averaged every H steps);
  fp16 / bf16         DDP with fp16_compress_hook / a bf16 hook (cast, all-reduce, divide;
                      torch's bf16_compress_hook refuses gloo);
  powersgd r          DDP with powerSGD_hook (rank r, error feedback, compression from step 2,
                      one bucket: gloo crashes with more);
  staleness s         EMULATED in one process, the textbook model of bounded-staleness SGD:
                      the update at step t applies the gradient of the full batch computed on the
                      parameters of step t - s (s = 0 is plain SGD, a check against ddp).

Writes traces/efficiency/<name>.json (the table simplan.efficiency reads; metadata: machine,
torch version, date, seeds, target) and benchmarks/results/stat_efficiency-<name>.json, and
prints the table with the simulator's prediction beside each row: time to target = steps x
the simulated step time of that configuration (simplan simulate, mlp on localhost-cpu, dp 2,
the measured micro-batch-64 profile), and for staleness s the asynchronous simulation's update
rate.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.two_ranks import run_two  # noqa: E402
from simplan.environment import environment  # noqa: E402
from simplan.io import write_json_atomic  # noqa: E402

TARGET_LOSS = 0.6  # cross-entropy on the held-out samples (log 10 = 2.30 at chance)
LR = 0.1
GLOBAL_BATCH = 128
MAX_STEPS = 4000
EVAL_SAMPLES = 1024
DIM, CLASSES, TEACHER_SEED = 784, 10, 1234
LOCAL_SGD = (2, 4, 8, 16)
POWERSGD = (1, 2, 4)
HOOKS = ("fp16", "bf16")
STALENESS = (0, 1, 2, 4, 8)
PROFILE = "traces/profiles/intel-r-xeon-r-processor/mlp-fp32-mb64-s0-t1.json"


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """The training recipe every variant shares: SGD's learning rate and the target loss."""

    lr: float = LR
    target_loss: float = TARGET_LOSS


Variant = tuple[str, int]  # (knob, value): ("ddp", 1), ("local_sgd", 8), ("powersgd", 2), ...


def distributed_variants() -> list[Variant]:
    return (
        [("ddp", 1)]
        + [("local_sgd", h) for h in LOCAL_SGD]
        + [(h, 0) for h in HOOKS]
        + [("powersgd", r) for r in POWERSGD]
    )


def teacher(torch: Any) -> tuple[Any, Any, Any]:
    g = torch.Generator().manual_seed(TEACHER_SEED)
    w = torch.randn(DIM, CLASSES, generator=g)
    x = torch.randn(EVAL_SAMPLES, DIM, generator=g)
    return w, x, (x @ w).argmax(1)


def batch(torch: Any, w: Any, g: Any) -> tuple[Any, Any]:
    x = torch.randn(GLOBAL_BATCH, DIM, generator=g)
    return x, (x @ w).argmax(1)


def _bf16_hook(state, bucket):  # no annotations: DDP checks them
    """Cast the bucket to bf16, all-reduce it, divide by the world size (gloo has bf16 sums)."""
    import torch.distributed as dist

    world = dist.get_world_size()
    low = bucket.buffer().to(torch_bf16())
    fut = dist.all_reduce(low, async_op=True).get_future()

    def back(f):
        return f.value()[0].float().div_(world)

    return fut.then(back)


def torch_bf16() -> Any:
    import torch

    return torch.bfloat16


def _wrap(torch: Any, model: Any, knob: str, value: int, lr: float) -> tuple[Any, Any]:
    """The module to train and its optimizer for one distributed variant."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    opt_params = model.parameters()
    if knob == "local_sgd":
        from torch.distributed.algorithms.model_averaging.averagers import (
            PeriodicModelAverager,
        )
        from torch.distributed.optim import PostLocalSGDOptimizer

        sgd = torch.optim.SGD(opt_params, lr=lr)
        averager = PeriodicModelAverager(period=value, warmup_steps=0)
        return model, PostLocalSGDOptimizer(optim=sgd, averager=averager)
    ddp = DDP(model, bucket_cap_mb=64)  # one bucket: powerSGD_hook needs it on gloo
    if knob == "fp16":
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

        ddp.register_comm_hook(None, default_hooks.fp16_compress_hook)
    elif knob == "bf16":
        ddp.register_comm_hook(None, _bf16_hook)
    elif knob == "powersgd":
        from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as ps

        state = ps.PowerSGDState(
            process_group=None, matrix_approximation_rank=value, start_powerSGD_iter=2
        )
        ddp.register_comm_hook(state, ps.powerSGD_hook)
    return ddp, torch.optim.SGD(ddp.parameters(), lr=lr)


def _eval_loss(torch: Any, dist: Any, model: Any, probe: Any, data: Any, average: bool) -> float:
    from torch.nn.utils import parameters_to_vector, vector_to_parameters

    flat = parameters_to_vector(model.parameters()).detach().clone()
    if average:
        dist.all_reduce(flat)
        flat /= dist.get_world_size()
    vector_to_parameters(flat, probe.parameters())
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(probe(data[1]), data[2]))


def _train_rank(
    torch: Any, dist: Any, rank: int, variant: Variant, seed: int, recipe: Recipe
) -> dict[str, Any]:
    from models.mlp import build

    knob, value = variant
    data = teacher(torch)
    torch.manual_seed(seed)
    model, _ = build()
    probe, _ = build()
    net, opt = _wrap(torch, model, knob, value, recipe.lr)
    g = torch.Generator().manual_seed(seed)
    half = GLOBAL_BATCH // 2
    train_s, loss, steps = 0.0, float("inf"), MAX_STEPS
    stop = torch.zeros(1)
    for step in range(1, MAX_STEPS + 1):
        x, y = batch(torch, data[0], g)
        x, y = x[rank * half : (rank + 1) * half], y[rank * half : (rank + 1) * half]
        t0 = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        train_s += time.perf_counter() - t0
        loss = _eval_loss(torch, dist, model, probe, data, average=knob == "local_sgd")
        stop.fill_(1.0 if loss <= recipe.target_loss else 0.0)
        dist.broadcast(stop, 0)  # rank 0's verdict: both ranks stop at the same step
        if stop.item():
            steps = step
            break
    return {"steps": steps, "final_loss": loss, "train_wall_s": train_s}


def _rank(rank: int, port: int, seeds: list[int], recipe: Recipe, out: Any) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    rows = []
    for variant in distributed_variants():
        for seed in seeds:
            result = _train_rank(torch, dist, rank, variant, seed, recipe)
            rows.append({"knob": variant[0], "value": variant[1], "seed": seed} | result)
            if rank == 0:
                print(f"  {variant[0]} {variant[1]} seed {seed}: {result}", flush=True)
    dist.destroy_process_group()
    if rank == 0:
        out.put(rows)


def stale_run(s: int, seed: int, recipe: Recipe) -> dict[str, Any]:
    """Bounded-staleness SGD emulated in one process: each update applies the gradient of the
    global batch computed on the parameters of s updates ago."""
    import torch
    from torch.nn.utils import parameters_to_vector, vector_to_parameters

    from models.mlp import build

    torch.set_num_threads(1)
    data = teacher(torch)
    torch.manual_seed(seed)
    model, _ = build()
    worker, _ = build()
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr)
    g = torch.Generator().manual_seed(seed)
    history = [parameters_to_vector(model.parameters()).detach().clone()]
    train_s, loss, steps = 0.0, float("inf"), MAX_STEPS
    for step in range(1, MAX_STEPS + 1):
        x, y = batch(torch, data[0], g)
        t0 = time.perf_counter()
        vector_to_parameters(history[0], worker.parameters())  # the parameters s updates old
        worker.zero_grad()
        torch.nn.functional.cross_entropy(worker(x), y).backward()
        for p, q in zip(model.parameters(), worker.parameters(), strict=True):
            p.grad = q.grad
        opt.step()
        history.append(parameters_to_vector(model.parameters()).detach().clone())
        history = history[-(s + 1) :]
        train_s += time.perf_counter() - t0
        with torch.no_grad():
            loss = float(torch.nn.functional.cross_entropy(model(data[1]), data[2]))
        if loss <= recipe.target_loss:
            steps = step
            break
    return {"steps": steps, "final_loss": loss, "train_wall_s": train_s}


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (knob, value): median steps, final loss and wall time over the seeds."""
    keys: list[tuple[str, int]] = []
    for r in runs:
        if (r["knob"], r["value"]) not in keys:
            keys.append((r["knob"], r["value"]))
    rows = []
    for knob, value in keys:
        mine = [r for r in runs if (r["knob"], r["value"]) == (knob, value)]
        rows.append(
            {
                "knob": knob,
                "value": value,
                "emulated": knob == "staleness",
                "steps_to_target": statistics.median(r["steps"] for r in mine),
                "steps_per_seed": [r["steps"] for r in mine],
                "reached": all(r["steps"] < MAX_STEPS for r in mine),
                "final_loss": statistics.median(r["final_loss"] for r in mine),
                "train_wall_s": statistics.median(r["train_wall_s"] for r in mine),
            }
        )
    return rows


TRACE_KNOB = {"ddp": "none"}  # benchmark variant -> the knob name simplan.efficiency reads


def trace_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The summary rows as simplan.efficiency reads them: knob 'none' (plain DDP), 'local_sgd'
    (value H), 'staleness' (s), 'powersgd' (rank), 'fp16' or 'bf16' (value 0)."""
    return [r | {"knob": TRACE_KNOB.get(r["knob"], r["knob"])} for r in rows]


def measure(seeds: list[int], recipe: Recipe) -> list[dict[str, Any]]:
    print("2 gloo ranks: ddp, local SGD, compression hooks", flush=True)
    runs: list[dict[str, Any]] = run_two(_rank, seeds, recipe, timeout_s=3000)
    print("one process: bounded staleness (emulated)", flush=True)
    for s in STALENESS:
        for seed in seeds:
            result = stale_run(s, seed, recipe)
            print(f"  staleness {s} seed {seed}: {result}", flush=True)
            runs.append({"knob": "staleness", "value": s, "seed": seed} | result)
    return runs


def trace_document(runs: list[dict[str, Any]], seeds: list[int], recipe: Recipe) -> dict[str, Any]:
    return {
        "schema": {"kind": "efficiency", "version": 1},
        "metadata": environment(
            model="models/mlp.py (784-128-10)",
            data=f"x ~ N(0, I) in {DIM} dims, labels argmax(x @ W), W ~ N(0, 1) seed "
            f"{TEACHER_SEED}; a fresh batch per step; loss on {EVAL_SAMPLES} held-out samples",
            optimizer=f"SGD lr {recipe.lr}",
            global_batch=GLOBAL_BATCH,
            ranks=2,
            backend="gloo",
            seeds=seeds,
            target_loss=recipe.target_loss,
            max_steps=MAX_STEPS,
            staleness="emulated in one process (gradient on parameters s updates old)",
            script="benchmarks/stat_efficiency.py",
        ),
        "rows": trace_rows(summarise(runs)),
        "runs": runs,
    }


def sim_config(knob: str, value: int) -> Any:
    """The configuration of a row on the 2-rank CPU cluster: dp 2, micro-batch 64, fp32."""
    from simplan.parallel import ParallelConfig

    knobs: dict[str, dict[str, Any]] = {
        "local_sgd": {"local_sgd": value},
        "staleness": {"staleness": value},
        "powersgd": {"compress": "powersgd", "powersgd_rank": value},
        "fp16": {"compress": "fp16"},
        "bf16": {"compress": "bf16"},
    }
    changes = knobs.get(knob, {})
    return ParallelConfig(dp=2, micro_batch=GLOBAL_BATCH // 2, global_batch=GLOBAL_BATCH,
                          dtype="fp32", **changes)  # fmt: skip


def predicted_step_s(knob: str, value: int) -> tuple[float, str]:
    """Seconds per GLOBAL_BATCH samples under the simulator, and what produced the number."""
    from simplan.profiles import read_profile
    from simplan.sim.async_dp import simulate_async_step
    from simplan.sim.run import resolve_model, simulate
    from simplan.topology import load_cluster

    cluster = load_cluster("localhost-cpu")
    config = sim_config(knob, value)
    step = simulate("mlp", cluster, config, profile=read_profile(ROOT / PROFILE), record=False)
    if knob != "staleness" or value == 0:
        return step.step_time_s, "synchronous step"
    res = simulate_async_step(resolve_model("mlp", config), cluster, config, step)
    per_update = config.global_batch // config.dp
    return GLOBAL_BATCH / (res.updates_per_s * per_update), (
        f"async PS: staleness mean {res.staleness_mean:.2f} max {res.staleness_max}"
    )


def table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with efficiency and the simulator's time to target beside the measured one."""
    base = next(r["steps_to_target"] for r in rows if r["knob"] == "none")
    out = []
    for r in rows:
        step_s, how = predicted_step_s(r["knob"], r["value"])
        out.append(
            r
            | {
                "efficiency": base / r["steps_to_target"],
                "sim_step_s": step_s,
                "sim_source": how,
                "predicted_time_to_target_s": r["steps_to_target"] * step_s,
            }
        )
    return out


def print_table(rows: list[dict[str, Any]], recipe: Recipe) -> None:
    from simplan.table import render

    print(
        f"time to cross-entropy {recipe.target_loss} (SGD lr {recipe.lr}, global batch "
        f"{GLOBAL_BATCH}, 2 ranks; medians over seeds; staleness rows emulated in 1 process)"
    )
    print(
        render(
            ["knob", "value", "steps", "per seed", "final loss", "efficiency",
             "measured s", "sim step ms", "predicted s", "simulator"],
            [
                [r["knob"], r["value"], f"{r['steps_to_target']:g}",
                 " ".join(str(s) for s in r["steps_per_seed"]), f"{r['final_loss']:.3f}",
                 f"{r['efficiency']:.3f}", f"{r['train_wall_s']:.2f}",
                 f"{r['sim_step_s'] * 1e3:.2f}", f"{r['predicted_time_to_target_s']:.2f}",
                 r["sim_source"]]
                for r in rows
            ],
        )
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lr", type=float, default=LR, help="SGD learning rate")
    parser.add_argument("--target", type=float, default=TARGET_LOSS, help="target loss")
    parser.add_argument("--name", default="mlp-teacher", help="traces/efficiency/NAME.json")
    parser.add_argument(
        "--from-trace", action="store_true", help="no training: the table of the stored trace"
    )
    args = parser.parse_args()
    recipe = Recipe(lr=args.lr, target_loss=args.target)
    path = ROOT / "traces" / "efficiency" / f"{args.name}.json"
    if args.from_trace:
        from simplan.io import read_json_object

        doc = read_json_object(path)
        meta = doc["metadata"]
        recipe = Recipe(lr=float(meta["optimizer"].split()[-1]), target_loss=meta["target_loss"])
    else:
        doc = trace_document(measure(args.seeds, recipe), args.seeds, recipe)
        write_json_atomic(doc, path)
    rows = table(doc["rows"])
    print_table(rows, recipe)
    out = ROOT / "benchmarks" / "results" / f"stat_efficiency-{args.name}.json"
    write_json_atomic({"trace": str(path.relative_to(ROOT)), "rows": rows}, out)
    print(f"wrote {path.relative_to(ROOT)} and {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
