"""Framework costs of torch.distributed's wrappers, measured with small generic probe models.

A probe is a chain of `nn.Linear(h, h)` layers (bias-free, but with nn.Linear's default bias for
DTensor, whose bias of a row-wise layer is an operation of its own) trained on a batch of 8 (64 for
DDP, whose sync follows a backward as long as training's: a collective right after compute costs
more than one right after a barrier; loss: the output's sum), timed forward+backward with a barrier
before each step (DDP's steps go on with the fused Adam step, as the runtime trains: compute right
after a collective runs slower on a small CPU machine, and that is part of what the sync costs).
Each wrapper is compared with the same chain trained plainly on every rank at once (no
communication), the two alternately step by step (a drifting machine slows both alike); the
plain chain's compute (1/tp of it for tensor parallelism, whose ranks compute a shard, as the
simulator has them) and the time of the raw collectives (the op fits of the same bench-comm run)
are taken away; what remains is the framework's own work (hooks, bucket and shard copy-in/copy-
out, waits, DTensor dispatch):

  DDP      extra = step_s + buckets * bucket_s + bytes * s_per_byte        (per gradient sync)
  FSDP2    extra = step_s + calls * collective_s + bytes * s_per_byte      (calls: 2 all-gathers
           and 1 reduce-scatter per unit and step, each of the unit's bytes)
  DTensor  extra = step_s + collectives * (collective_s + bytes * s_per_byte) (per fwd+bwd;
           one collective per sharded linear: row-wise forward, column-wise backward, none for
           the gradient of the first layer's input, the data)
  pipeline extra = step_s + actions * action_s                             (per step: one stage
           per rank under Schedule1F1B; actions: the sends and receives of the busiest rank)
  DTensor's optimizer: the fused Adam step over the DTensor chain against the plain chain,
           extra = optimizer_step_s + tensors * optimizer_tensor_s

fitted by least squares over the probe rows, coefficients kept >= 0. Worker-side functions
import torch; the fitting does not.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Result = tuple[str, int, list[float], dict[str, Any]]  # op, size_B, times, what the probe was

BATCH = 8
DDP_BATCH = 64  # DDP's sync follows the backward: a backward of 0.1-4 ms, as in training
# (hidden, layers, bucket cap in bytes or 0 for one bucket): bucket count and bytes both vary
DDP_PROBES = (
    (64, 8, 0),
    (64, 8, 64 * 64 * 4),
    (128, 6, 0),
    (256, 3, 0),
    (256, 3, 256 * 256 * 4),
    (512, 4, 0),
    (1024, 2, 0),
)
# (hidden, units): units of 16 KiB to 4 MiB, so that the per-byte copy-in/copy-out is identified
FSDP_PROBES = ((64, 2), (64, 6), (512, 2), (512, 4), (1024, 2))
# (column/row pairs of Linear(h, h), with biases as nn.Linear's default, h, batch): the bytes of
# each collective (batch x h x 4) vary too, so that a per-byte cost is identified
TP_PROBES = ((1, 64, BATCH), (2, 64, BATCH), (4, 64, BATCH), (1, 256, 256), (2, 256, 256))
TP_HIDDEN = 64  # the optimizer probes: the chains of Linear(64, 64)
PP_PROBES = (2, 4, 8)  # micro-batches (of BATCH rows) through one stage per rank, 1F1B
PP_HIDDEN, PP_LAYERS = 64, 2  # each stage: a chain of PP_LAYERS Linear(PP_HIDDEN, PP_HIDDEN)


def _chain(torch: Any, hidden: int, layers: int, bias: bool = False) -> Any:
    torch.manual_seed(0)
    return torch.nn.Sequential(*[torch.nn.Linear(hidden, hidden, bias=bias) for _ in range(layers)])


Step = Callable[[], "float | None"]  # a step's time is its wall time, or what it returns


def _alternating(
    dist: Any, first: Step, second: Step, warmup: int, repeats: int
) -> tuple[list[float], list[float]]:
    """Two steps timed alternately, each after a barrier, so that a machine whose speed
    drifts during the probe slows both alike (their difference is what a probe measures). A
    step that returns a time (one that times a part of itself) is taken at its word."""
    a: list[float] = []
    b: list[float] = []
    for k in range(warmup + repeats):
        for step, times in ((first, a), (second, b)):
            dist.barrier()
            t0 = time.perf_counter()
            t = step()
            if k >= warmup:
                times.append(time.perf_counter() - t0 if t is None else t)
    return a, b


def _trainer(
    torch: Any, model: Any, hidden: int, batch: int = BATCH, adam: bool = False
) -> Callable[[], None]:
    """forward+backward of the chain (loss: the output's sum); with adam, then a fused Adam
    step and its zero_grad, as the runtime trains."""
    x = torch.randn(batch, hidden)  # data: no gradient flows into it
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True) if adam else None

    def step() -> None:
        model(x).sum().backward()
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        model.zero_grad(set_to_none=True)

    return step


def _optimizer_step(torch: Any, model: Any, hidden: int) -> Callable[[], float]:
    """A forward+backward, then one fused Adam step with its zero_grad, as the runtime trains
    (DTensor parameters in their own group); returns the optimizer's time."""
    from torch.distributed.tensor import DTensor

    params = list(model.parameters())
    groups = [[p for p in params if isinstance(p, DTensor) == dt] for dt in (True, False)]
    optimizer = torch.optim.Adam([{"params": g} for g in groups if g], lr=1e-4, fused=True)
    x = torch.randn(BATCH, hidden)

    def step() -> float:
        model(x).sum().backward()
        t0 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    return step


def ddp_probes(torch: Any, dist: Any, warmup: int, repeats: int) -> list[Result]:
    from torch.nn.parallel import DistributedDataParallel as DDP

    out: list[Result] = []
    for hidden, layers, cap in DDP_PROBES:
        nbytes = hidden * hidden * layers * 4
        chain = _trainer(torch, _chain(torch, hidden, layers), hidden, DDP_BATCH, adam=True)
        model = DDP(_chain(torch, hidden, layers), bucket_cap_mb=(cap or 2 * nbytes) / 2**20)
        wrapped = _trainer(torch, model, hidden, DDP_BATCH, adam=True)
        plain, times = _alternating(dist, chain, wrapped, warmup, repeats)
        sizes = model._get_ddp_logging_data().get("rebuilt_bucket_sizes", "")
        buckets = [int(s) for s in str(sizes).split(",") if s.strip()]
        extra = {"hidden": hidden, "layers": layers, "batch": DDP_BATCH}
        out.append(("ddp-plain", nbytes, plain, extra))
        out.append(("ddp-sync", nbytes, times, extra | {"bucket_sizes_B": buckets or [nbytes]}))
    return out


def fsdp_probes(torch: Any, dist: Any, world: int, warmup: int, repeats: int) -> list[Result]:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (world,))
    out: list[Result] = []
    for hidden, units in FSDP_PROBES:
        nbytes = hidden * hidden * 4  # one unit's parameters, unsharded
        model = _chain(torch, hidden, units)
        for layer in model:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        plain, times = _alternating(
            dist,
            _trainer(torch, _chain(torch, hidden, units), hidden),
            _trainer(torch, model, hidden),
            warmup,
            repeats,
        )
        extra = {"hidden": hidden, "units": units}
        out.append(("fsdp-plain", nbytes, plain, extra))
        out.append(("fsdp-step", nbytes, times, extra))
    return out


def tp_probes(torch: Any, dist: Any, world: int, warmup: int, repeats: int) -> list[Result]:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        ParallelStyle,
        RowwiseParallel,
        parallelize_module,
    )

    mesh = init_device_mesh("cpu", (world,))
    out: list[Result] = []
    for pairs, hidden, batch in TP_PROBES:
        layers = 2 * pairs
        nbytes = batch * hidden * 4  # each collective: the activations of one linear
        chain = _chain(torch, hidden, layers, bias=True)
        model = _chain(torch, hidden, layers, bias=True)
        styles: dict[str, ParallelStyle] = {
            str(i): ColwiseParallel() if i % 2 == 0 else RowwiseParallel() for i in range(layers)
        }
        parallelize_module(model, mesh, styles)
        plain, times = _alternating(
            dist,
            _trainer(torch, chain, hidden, batch),
            _trainer(torch, model, hidden, batch),
            warmup,
            repeats,
        )
        extra = {"pairs": pairs, "hidden": hidden, "collectives": layers - 1}  # none for the data
        out.append(("tp-plain", nbytes, plain, extra))
        out.append(("tp-step", nbytes, times, extra))
        if hidden != TP_HIDDEN:
            continue
        plain_opt, opt = _alternating(
            dist,
            _optimizer_step(torch, chain, TP_HIDDEN),
            _optimizer_step(torch, model, TP_HIDDEN),
            warmup,
            repeats,
        )
        extra = {"pairs": pairs, "tensors": 2 * layers}  # a weight and a bias per layer
        out.append(("tp-opt-plain", nbytes, plain_opt, extra))
        out.append(("tp-opt", nbytes, opt, extra))
    return out


def pp_probes(torch: Any, dist: Any, world: int, warmup: int, repeats: int) -> list[Result]:
    """One stage per rank under Schedule1F1B, against the same stage's micro-batches trained
    plainly on every rank at once. A stage with neighbours on both sides (world > 2) sends and
    receives twice per micro-batch and direction; the step is the slowest rank's."""
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B

    rank = dist.get_rank()
    nbytes = BATCH * PP_HIDDEN * 4  # one micro-batch's activations (or their gradient)
    out: list[Result] = []
    for m in PP_PROBES:
        x = torch.randn(m * BATCH, PP_HIDDEN)
        chain = _chain(torch, PP_HIDDEN, PP_LAYERS)

        def plain_step(chain: Any = chain, x: Any = x, m: int = m) -> None:
            for part in x.chunk(m):
                chain(part.detach().requires_grad_(rank > 0)).sum().backward()
            chain.zero_grad(set_to_none=True)

        stage = PipelineStage(chain, rank, world, torch.device("cpu"))
        schedule = Schedule1F1B(stage, m, loss_fn=lambda out, _target: out.sum())

        def step(schedule: Any = schedule, chain: Any = chain, x: Any = x) -> None:
            if rank == 0:
                schedule.step(x)
            elif rank == world - 1:
                schedule.step(target=torch.zeros(len(x)), losses=[])
            else:
                schedule.step()
            chain.zero_grad(set_to_none=True)

        plain, times = _alternating(dist, plain_step, step, warmup, repeats)
        actions = 2 * m * (2 if world > 2 else 1)  # sends + receives of the busiest rank
        extra = {"microbatches": m, "actions": actions}
        out.append(("pp-plain", nbytes, plain, extra))
        out.append(("pp-step", nbytes, times, extra))
    return out


def run_probes(
    torch: Any, dist: Any, world: int, warmup: int, repeats: int, cpu: bool
) -> list[Result]:
    """Every probe on this rank. FSDP and DTensor probes build CPU meshes (gloo) only."""
    out = ddp_probes(torch, dist, warmup, repeats)
    if cpu:
        out += fsdp_probes(torch, dist, world, warmup, repeats)
        out += tp_probes(torch, dist, world, warmup, repeats)
        out += pp_probes(torch, dist, world, warmup, repeats)
    return out


def probe_steps(cpu: bool) -> int:
    """Results run_probes reports (one plain and one wrapped per probe)."""
    optimizer = sum(1 for _, hidden, _ in TP_PROBES if hidden == TP_HIDDEN)
    gloo_only = len(FSDP_PROBES) + len(TP_PROBES) + optimizer + len(PP_PROBES)
    return 2 * (len(DDP_PROBES) + (gloo_only if cpu else 0))


# ---------------------------------------------------------------- fitting (no torch)


def _nonneg_lstsq(rows: list[list[float]], target: list[float]) -> list[float]:
    """Least squares with every coefficient >= 0 (a negative one is fixed at 0 and the rest
    refitted), so that noise never makes a framework cost negative."""
    import numpy as np

    free = list(range(len(rows[0])))
    coef = [0.0] * len(rows[0])
    while free:
        a = np.array([[r[j] for j in free] for r in rows])
        sol, *_ = np.linalg.lstsq(a, np.array(target), rcond=None)
        if all(s >= 0 for s in sol):
            for j, s in zip(free, sol, strict=True):
                coef[j] = float(s)
            return coef
        free.pop(int(np.argmin(sol)))
    return coef


def _pairs(measurements: list[dict[str, Any]], plain: str, wrapped: str) -> list[tuple[dict, dict]]:
    """Each wrapped row with the plain row of the same chain (probes that differ only in their
    buckets share one)."""
    base = {_key(m): m for m in measurements if m["op"] == plain}
    return [(base[_key(m)], m) for m in measurements if m["op"] == wrapped and _key(m) in base]


def _key(m: dict[str, Any]) -> tuple:
    extra = m.get("extra", {})
    return (m["size_B"], extra.get("hidden"), extra.get("layers"), extra.get("units"),
            extra.get("pairs"), extra.get("microbatches"), extra.get("tensors"))  # fmt: skip


METHOD = (
    "probes: chains of Linear(h, h) (DDP: batch 64, with the Adam step; TP: with biases, some "
    "larger), forward+backward, barrier before each step, wrapped and plain alternately, slowest "
    "rank per step, median over steps; extra = wrapped - plain chain (1/tp of it for TP) - raw "
    "collectives (this file's op fits); least squares over the probe rows weighted by 1/step, "
    "coefficients >= 0 (simplan/topology/probes.py)"
)


Row = Callable[[dict[str, Any]], list[float]]
Raw = Callable[[dict[str, Any]], float]


@dataclass(frozen=True)
class Family:
    """One wrapper's probe rows and the model fitted to them: extra = wrapped - plain * share
    - raw collectives, with share the part of the plain chain's compute a wrapped rank does."""

    plain: str  # the op name of the plain rows
    wrapped: str  # and of the wrapped rows
    model: str  # the fitted model, as text
    names: tuple[str, ...]  # its coefficients
    row: Row  # a wrapped row's coefficients' factors
    raw: Raw  # its raw collectives' time
    share: Callable[[dict[str, Any]], float] = lambda _: 1.0


def _tp_share(m: dict[str, Any]) -> float:
    """A tensor-parallel rank computes 1/tp of the plain chain (as the simulator has it)."""
    return 1.0 / max(int(m.get("ranks", 1)), 1)


def fit_framework(
    measurements: list[dict[str, Any]], op_time: Callable[[str, float], float]
) -> dict[str, Any]:
    """The framework costs (module docstring) from the probe rows; op_time(op, nbytes) is the
    raw collective's time as the simulator prices it."""

    def ddp_raw(m: dict[str, Any]) -> float:
        return sum(op_time("all_reduce", s) for s in m["extra"]["bucket_sizes_B"])

    def fsdp_raw(m: dict[str, Any]) -> float:
        b = m["size_B"]
        return m["extra"]["units"] * (2 * op_time("all_gather", b) + op_time("reduce_scatter", b))

    families = {
        "ddp": Family(
            "ddp-plain",
            "ddp-sync",
            "extra_s = step_s + buckets * bucket_s + bytes * s_per_byte",
            ("step_s", "bucket_s", "s_per_byte"),
            lambda m: [1.0, float(len(m["extra"]["bucket_sizes_B"])), float(m["size_B"])],
            ddp_raw,
        ),
        "fsdp": Family(
            "fsdp-plain",
            "fsdp-step",
            "extra_s = step_s + collectives * collective_s + bytes * s_per_byte",
            ("step_s", "collective_s", "s_per_byte"),
            lambda m: [1.0, 3.0 * m["extra"]["units"], 3.0 * m["extra"]["units"] * m["size_B"]],
            fsdp_raw,
        ),
        "tp": Family(
            "tp-plain",
            "tp-step",
            "extra_s = step_s + collectives * (collective_s + bytes * s_per_byte)",
            ("step_s", "collective_s", "s_per_byte"),
            lambda m: [
                1.0,
                float(m["extra"]["collectives"]),
                float(m["extra"]["collectives"] * m["size_B"]),
            ],
            lambda m: m["extra"]["collectives"] * op_time("all_reduce", m["size_B"]),
            _tp_share,
        ),
        "pp": Family(  # the busiest rank's sends are half its actions
            "pp-plain",
            "pp-step",
            "extra_s = step_s + actions * action_s",
            ("step_s", "action_s"),
            lambda m: [1.0, float(m["extra"]["actions"])],
            lambda m: m["extra"]["actions"] / 2 * op_time("p2p", m["size_B"]),
        ),
    }
    out: dict[str, Any] = {"method": METHOD}
    for name, family in families.items():
        pairs = _pairs(measurements, family.plain, family.wrapped)
        if not pairs:
            continue
        out[name] = _fit(pairs, family)
        if name == "ddp":
            out[name] |= _ddp_sync_points(pairs, out[name]["measured_extra_s"])
    if "tp" in out:
        out["tp"] |= _fit_tp_optimizer(measurements)
    return out


def _ddp_sync_points(pairs: list[tuple[dict, dict]], extras: list[float]) -> dict[str, Any]:
    """What one gradient synchronisation adds, by its bytes, from the one-bucket probes (each
    pair's measured extra): (size_B, extra_s) ascending, made non-decreasing by pooling
    adjacent violators (a sync of more bytes never costs less; what breaks that is the probes'
    noise). Probes of several buckets are left out: their buckets' all-reduces overlap the
    backward, so the sum of their raw collectives overstates what they expose and their extra
    is not comparable."""
    by_size: dict[float, list[float]] = {}
    for (_, m), extra in zip(pairs, extras, strict=True):
        if len(m["extra"]["bucket_sizes_B"]) == 1:
            by_size.setdefault(float(m["size_B"]), []).append(extra)
    if not by_size:
        return {}
    sizes = sorted(by_size)
    values = _non_decreasing([max(sum(by_size[n]) / len(by_size[n]), 0.0) for n in sizes])
    return {
        "sync_model": "extra_s per synchronisation = interpolation of sync_points over its bytes",
        "sync_points": [[n, t] for n, t in zip(sizes, values, strict=True)],
    }


def _non_decreasing(values: list[float]) -> list[float]:
    """The closest non-decreasing sequence in least squares (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [mean, count]
    for v in values:
        blocks.append([v, 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m1, c1), (m2, c2) = blocks[-2], blocks.pop()
            blocks[-1] = [(m1 * c1 + m2 * c2) / (c1 + c2), c1 + c2]
    return [m for m, c in blocks for _ in range(int(c))]


def _fit(pairs: list[tuple[dict, dict]], family: Family) -> dict[str, Any]:
    """The family's extra per pair, fitted to its model's rows (coefficients >= 0), with the
    residuals. Each row is weighted by 1 / its wrapped step's time, so that the fit errs alike
    relative to every probe's step: unweighted, the largest probes (tens of milliseconds)
    would decide the costs of the small ones."""
    rows = [family.row(m) for _, m in pairs]
    extra = [
        m["median_s"] - base["median_s"] * family.share(m) - family.raw(m) for base, m in pairs
    ]
    weight = [1.0 / m["median_s"] for _, m in pairs]
    coef = _nonneg_lstsq(
        [[w * x for x in r] for w, r in zip(weight, rows, strict=True)],
        [w * e for w, e in zip(weight, extra, strict=True)],
    )
    names = dict(zip(family.names, coef, strict=True))
    return {"model": family.model, **names, **_residual(rows, extra, coef)}


def _fit_tp_optimizer(measurements: list[dict[str, Any]]) -> dict[str, Any]:
    """What an Adam step over DTensor parameters adds to one over plain tensors:
    extra_s = optimizer_step_s + tensors * optimizer_tensor_s."""
    family = Family(
        "tp-opt-plain",
        "tp-opt",
        "extra_s = optimizer_step_s + tensors * optimizer_tensor_s",
        ("optimizer_step_s", "optimizer_tensor_s"),
        lambda m: [1.0, float(m["extra"]["tensors"])],
        lambda m: 0.0,
    )
    pairs = _pairs(measurements, family.plain, family.wrapped)
    if not pairs:
        return {}
    fit = _fit(pairs, family)
    return {
        "optimizer_model": fit["model"],
        "optimizer_step_s": fit["optimizer_step_s"],
        "optimizer_tensor_s": fit["optimizer_tensor_s"],
        "optimizer_measured_extra_s": fit["measured_extra_s"],
        "optimizer_fitted_extra_s": fit["fitted_extra_s"],
    }


def _residual(rows: list[list[float]], extra: list[float], coef: Sequence[float]) -> dict:
    fitted = [sum(c * x for c, x in zip(coef, r, strict=True)) for r in rows]
    return {
        "rows": len(rows),
        "measured_extra_s": extra,
        "fitted_extra_s": fitted,
    }
