"""How the tasks of a multi-task step are weighted, and how their gradients meet in the trunk.

A step (simplan.runtime.mtl_steps) runs every task head on the trunk's features z, takes each
task's loss L_t, back-propagates w_t * L_t through its head alone (w_t from `weights()`, a
constant in that pass) and so gets g_t = d(w_t L_t)/dz; the trunk's backward then starts from
`trunk_grad([g_1..g_T])`; after the step `update(losses, grad_norms)` moves the weights (losses:
the L_t; grad_norms: ||g_t||, both as floats, the same on every rank).

Loss weighting (the trunk's gradient is sum_t g_t):
- equal: w_t = 1.
- uncertainty (Kendall, Gal & Cipolla, CVPR 2018, eq. 7 in the form of their released code):
  L = sum_t exp(-s_t) L_t + s_t with s_t = log sigma_t^2 learnt with the model (here Adam on
  the s_t with dL/ds_t = 1 - exp(-s_t) L_t); w_t = exp(-s_t).
- gradnorm (Chen et al., ICML 2018, eqs. 1-2): G_t = ||grad_W w_t L_t||, mean G, inverse
  training rate r_t = (L_t / L_t(0)) / mean_j (L_j / L_j(0)); the weights descend
  L_grad = sum_t |G_t - mean G * r_t^alpha| (target held constant), dL_grad/dw_t =
  sign(G_t - target_t) G_t / w_t; then renormalised to sum_t w_t = T. W here is the shared
  features z (the representation), so G_t = ||g_t||.
- dwa (Liu, Johns & Davison, CVPR 2019, eq. 7): w_t = T exp(r_t / temp) / sum_j exp(r_j / temp)
  with r_t = L_t(s-1) / L_t(s-2) over the last two steps; w_t = 1 for the first two.

Gradient aggregation (w_t = 1; the trunk's gradient is an aggregate of the rows g_t, from
torchjd, the optional `mtl` extra): pcgrad (Yu et al., NeurIPS 2020), mgda (Sener & Koltun,
NeurIPS 2018, on the representation as their MGDA-UB).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

from simplan.errors import SimplanError

LOSS_WEIGHTINGS = ("equal", "uncertainty", "gradnorm", "dwa")
AGGREGATORS = ("pcgrad", "mgda")
WEIGHTINGS = LOSS_WEIGHTINGS + AGGREGATORS


class TaskWeighting(Protocol):
    def weights(self) -> list[float]: ...

    def trunk_grad(self, grads: list[Any]) -> Any: ...

    def update(self, losses: list[float], grad_norms: list[float]) -> None: ...


def _sum(grads: list[Any]) -> Any:
    total = grads[0]
    for g in grads[1:]:
        total = total + g
    return total


@dataclass
class Equal:
    tasks: int

    def weights(self) -> list[float]:
        return [1.0] * self.tasks

    def trunk_grad(self, grads: list[Any]) -> Any:
        return _sum(grads)

    def update(self, losses: list[float], grad_norms: list[float]) -> None:
        return None


@dataclass
class Uncertainty:
    """Learnt log-variances s_t (start 0), Adam with lr `lr` (Kendall et al. 2018)."""

    tasks: int
    lr: float = 0.05
    log_var: list[float] = field(default_factory=list)
    _adam: Any = None

    def __post_init__(self) -> None:
        import torch

        s = torch.zeros(self.tasks, requires_grad=True)
        self._s, self._adam = s, torch.optim.Adam([s], lr=self.lr)
        self.log_var = [0.0] * self.tasks

    def weights(self) -> list[float]:
        return [math.exp(-s) for s in self.log_var]

    def trunk_grad(self, grads: list[Any]) -> Any:
        return _sum(grads)

    def update(self, losses: list[float], grad_norms: list[float]) -> None:
        import torch

        s = self._s
        loss = (torch.exp(-s) * torch.tensor(losses) + s).sum()
        self._adam.zero_grad()
        loss.backward()
        self._adam.step()
        self.log_var = [float(v) for v in s.detach()]


@dataclass
class GradNorm:
    """Weights w_t (start 1) moved by Adam with lr `lr` on L_grad (Chen et al. update them
    with the network's optimizer), asymmetry `alpha` (0.12 to 3 in the paper; 1.5 on NYUv2)."""

    tasks: int
    alpha: float = 1.5
    lr: float = 0.025
    initial: list[float] = field(default_factory=list)
    _w: Any = None
    _adam: Any = None

    def __post_init__(self) -> None:
        import torch

        self._w = torch.ones(self.tasks, requires_grad=True)
        self._adam = torch.optim.Adam([self._w], lr=self.lr)

    def weights(self) -> list[float]:
        return [float(w) for w in self._w.detach()]

    def trunk_grad(self, grads: list[Any]) -> Any:
        return _sum(grads)

    def update(self, losses: list[float], grad_norms: list[float]) -> None:
        import torch

        if not self.initial:
            self.initial = [max(x, 1e-12) for x in losses]
        ratios = [x / x0 for x, x0 in zip(losses, self.initial, strict=True)]
        mean_ratio = sum(ratios) / len(ratios)
        mean_g = sum(grad_norms) / len(grad_norms)
        grad = []
        for w, g, r in zip(self.weights(), grad_norms, ratios, strict=True):
            target = mean_g * (r / mean_ratio) ** self.alpha
            grad.append(math.copysign(g / w, g - target) if g != target else 0.0)
        self._w.grad = torch.tensor(grad)
        self._adam.step()
        with torch.no_grad():
            self._w.clamp_(min=1e-3)
            self._w.mul_(self.tasks / self._w.sum())


@dataclass
class DynamicWeightAverage:
    """Liu et al. 2019, temperature `temperature` (2 in the paper), over steps."""

    tasks: int
    temperature: float = 2.0
    history: list[list[float]] = field(default_factory=list)

    def weights(self) -> list[float]:
        if len(self.history) < 2:
            return [1.0] * self.tasks
        prev, before = self.history[-1], self.history[-2]
        rates = [a / max(b, 1e-12) for a, b in zip(prev, before, strict=True)]
        exps = [math.exp(r / self.temperature) for r in rates]
        return [self.tasks * e / sum(exps) for e in exps]

    def trunk_grad(self, grads: list[Any]) -> Any:
        return _sum(grads)

    def update(self, losses: list[float], grad_norms: list[float]) -> None:
        self.history = [*self.history[-1:], list(losses)]


@dataclass
class Aggregated:
    """The trunk's gradient aggregated from the task rows by a torchjd aggregator."""

    tasks: int
    method: str
    _aggregator: Any = None

    def __post_init__(self) -> None:
        self._aggregator = torchjd_aggregator(self.method)

    def weights(self) -> list[float]:
        return [1.0] * self.tasks

    def trunk_grad(self, grads: list[Any]) -> Any:
        import torch

        rows = torch.stack([g.reshape(-1) for g in grads])
        return self._aggregator(rows).reshape(grads[0].shape)

    def update(self, losses: list[float], grad_norms: list[float]) -> None:
        return None


def torchjd_aggregator(method: str) -> Any:
    """torchjd's aggregator for `method`, or one line saying how to install it."""
    try:
        from torchjd import aggregation
    except ImportError:
        raise SimplanError(
            f"--weighting {method} needs torchjd: pip install 'simplan[mtl]' (or torchjd)"
        ) from None
    return {"pcgrad": aggregation.PCGrad, "mgda": aggregation.MGDA}[method]()


def make_weighting(name: str, tasks: int) -> TaskWeighting:
    """The strategy `name` (WEIGHTINGS) for `tasks` tasks."""
    if tasks < 1:
        raise SimplanError("a multi-task step needs at least one task")
    if name == "equal":
        return Equal(tasks)
    if name == "uncertainty":
        return Uncertainty(tasks)
    if name == "gradnorm":
        return GradNorm(tasks)
    if name == "dwa":
        return DynamicWeightAverage(tasks)
    if name in AGGREGATORS:
        return Aggregated(tasks, name)
    raise SimplanError(f"unknown task weighting {name!r}: use one of {', '.join(WEIGHTINGS)}")
