"""What the conditions of a timed step do to its parts, on this machine (the MLP, 2 ranks).

    .venv/bin/python benchmarks/step_conditions.py [--rounds 200] [--out FILE.json]

Two ranks (spawned, one torch thread each, SCHED_FIFO where permitted, as `simplan validate` runs
them). Every round runs each case once, so that a host whose speed drifts slows all cases alike;
each time is the slower rank's, and the table shows medians over rounds:

- the 784-128-10 MLP's forward+backward (micro-batch 64, with the loss) right after another one,
  and right after a barrier (how `simplan validate` times each step, and now profiles);
- its fused Adam step after a plain backward and after a DDP backward (right after the
  gradient all-reduce);
- a whole training step, plain and under DDP, for the MLP and for the bench-comm probe of about
  the same gradient bytes (6 x Linear(128, 128), 393 KB against the MLP's 407 KB): what DDP adds
  to each;
- the profile's hooked layer times summed against its unhooked whole-model time (each rank
  profiles at once; simplan.timing).

Writes benchmarks/results/step_conditions.json. The numbers quoted in reports/validation.md come
from it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.two_ranks import run_two, slowest  # noqa: E402
from simplan.environment import environment  # noqa: E402
from simplan.io import write_json_atomic  # noqa: E402
from simplan.realtime import enter_realtime  # noqa: E402


def _models(torch: Any) -> dict[str, Any]:
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel as DDP

    def mlp() -> Any:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))

    def chain() -> Any:
        torch.manual_seed(0)
        return nn.Sequential(*[nn.Linear(128, 128, bias=False) for _ in range(6)])

    x, y = torch.randn(64, 784), torch.randint(0, 10, (64,))
    xc = torch.randn(64, 128)
    out = {}
    for name, build, loss in (
        ("mlp", mlp, lambda m: nn.functional.cross_entropy(m(x), y)),
        ("probe", chain, lambda m: m(xc).sum()),
    ):
        for wrapped in (False, True):
            model = DDP(build()) if wrapped else build()
            opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
            out[f"{name}{' DDP' if wrapped else ''}"] = (model, opt, loss)
    return out


def _step(parts: tuple[Any, Any, Any]) -> tuple[float, float]:
    """(forward+backward, optimizer) seconds of one training step."""
    model, opt, loss = parts
    t0 = time.perf_counter()
    loss(model).backward()
    t1 = time.perf_counter()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return t1 - t0, time.perf_counter() - t1


def _round(dist: Any, models: dict[str, Any]) -> dict[str, float]:
    row = {}
    _step(models["mlp"])
    row["mlp fwd+bwd, right after another"] = _step(models["mlp"])[0]
    dist.barrier()
    fb, opt = _step(models["mlp"])
    row["mlp fwd+bwd, right after a barrier"] = fb
    row["mlp Adam, after a plain backward"] = opt
    for name in ("mlp", "mlp DDP", "probe", "probe DDP"):
        dist.barrier()
        fb, opt = _step(models[name])
        row[f"{name} step"] = fb + opt
        if name == "mlp DDP":
            row["mlp Adam, after a DDP backward"] = opt
    return row


def _rank(rank: int, port: int, rounds: int, out: Any) -> None:
    import torch
    import torch.distributed as dist

    from simplan.timing import measure

    torch.set_num_threads(1)
    policy = enter_realtime(True)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    models = _models(torch)
    rows: dict[str, list[float]] = {}
    for k in range(rounds + 10):
        for name, t in _round(dist, models).items():
            if k >= 10:
                rows.setdefault(name, []).append(t)
    medians = {n: statistics.median(slowest(dist, torch, ts)) for n, ts in rows.items()}
    dist.barrier()
    profile = measure("mlp", micro_batch=64, warmup=5, repeats=30)
    whole = profile.whole_model
    whole_s = 0.0 if whole is None else whole.fwd_s + whole.bwd_s
    hooked = torch.tensor([profile.layer_sum_s, whole_s])
    every = [torch.zeros_like(hooked) for _ in range(2)]
    dist.all_gather(every, hooked)
    dist.destroy_process_group()
    if rank == 0:
        worst = torch.stack(every).max(0).values.tolist()
        medians["profile: hooked layers, summed"] = worst[0]
        medians["profile: whole model, unhooked"] = worst[1]
        out.put({"scheduling": policy, "rows": medians})


def measure_all(rounds: int) -> dict[str, Any]:
    return run_two(_rank, rounds)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/step_conditions.json"))
    args = parser.parse_args()
    result = measure_all(args.rounds)
    rows = result["rows"]
    print(f"{'case (slower rank, median over rounds)':48s} {'ms':>8s}")
    for name, seconds in rows.items():
        print(f"{name:48s} {seconds * 1e3:8.3f}")
    for name in ("mlp", "probe"):
        added = rows[f"{name} DDP step"] - rows[f"{name} step"]
        print(f"{'what DDP adds to the ' + name + ' step':48s} {added * 1e3:8.3f}")
    print(f"scheduling: {result['scheduling']}")
    meta = environment(rounds=args.rounds)
    write_json_atomic({"meta": meta, "result": result}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
