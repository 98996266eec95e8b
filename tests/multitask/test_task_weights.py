"""Task-weighting strategies: hand-checked updates, and on a two-task model with one task's loss
scaled 100x, GradNorm and uncertainty weighting balance the tasks while equal weighting does
not."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
from torch import nn

from simplan.errors import SimplanError
from simplan.runtime.mtl_steps import declared, split_views, weighted_total
from simplan.runtime.task_weights import (
    DynamicWeightAverage,
    GradNorm,
    TaskWeighting,
    Uncertainty,
    make_weighting,
)
from simplan.tasks import TaskSpec

STEPS = 1000
LATE = 50


def test_dwa_follows_the_loss_ratios_of_the_last_two_steps():
    dwa = DynamicWeightAverage(2, temperature=2.0)
    assert dwa.weights() == [1.0, 1.0]
    dwa.update([2.0, 1.0], [0.0, 0.0])
    dwa.update([1.0, 1.0], [0.0, 0.0])  # rates 0.5 and 1
    e1, e2 = math.exp(0.25), math.exp(0.5)
    assert dwa.weights() == pytest.approx([2 * e1 / (e1 + e2), 2 * e2 / (e1 + e2)])


def test_uncertainty_weights_settle_at_the_inverse_losses():
    """exp(-s) L + s is least at s = log L: the weight exp(-s) -> 1 / L."""
    u = Uncertainty(2, lr=0.05)
    for _ in range(1500):
        u.update([2.0, 50.0], [0.0, 0.0])
    assert u.weights() == pytest.approx([0.5, 0.02], rel=0.05)


def test_pcgrad_projects_away_the_conflict():
    """Rows (1, 0) and (-1, 1) conflict: each loses its part along the other, (0.5, 0.5) and
    (0, 1), which sum to (0.5, 1.5)."""
    pytest.importorskip("torchjd")
    w = make_weighting("pcgrad", 2)
    out = w.trunk_grad([torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])])
    assert out.tolist() == pytest.approx([0.5, 1.5])


def test_unknown_weighting_is_one_line():
    with pytest.raises(SimplanError, match="unknown task weighting 'nope'"):
        make_weighting("nope", 2)


class TwoTasks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Sequential(nn.Linear(4, 16), nn.Tanh())
        self.a, self.b = nn.Linear(16, 1), nn.Linear(16, 1)


def _train(weighting: TaskWeighting) -> tuple[list[float], list[float]]:
    """Two alike regressions on one trunk (a loss floor each), task b declared 100x heavier:
    per step, the ratio of the tasks' weighted losses and of their feature-gradient norms."""
    tasks = (
        TaskSpec(name="a", outputs=("a",), loss="mse"),
        TaskSpec(name="b", outputs=("b",), loss="mse", weight=100.0),
    )
    model, gen = TwoTasks(), torch.Generator().manual_seed(1)
    x = torch.randn(64, 4, generator=gen)
    noise = 0.5 * torch.randn(64, 2, generator=gen)
    ya, yb = x[:, :1] * 2 + noise[:, :1], x[:, 1:2] * 2 + noise[:, 1:]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_ratio, norm_ratio = [], []
    for _ in range(STEPS):
        weights = weighting.weights()
        z = model.trunk(x)
        (va, vb), captured = split_views(z, 2, weighting)
        losses = [nn.functional.mse_loss(model.a(va), ya), nn.functional.mse_loss(model.b(vb), yb)]
        weighted_total(tasks, losses, weights).backward()
        opt.step()
        opt.zero_grad()
        scaled = declared(tasks, tuple(float(v.detach()) for v in losses))
        norms = [float(g.norm()) for g in captured]
        weighting.update(scaled, norms)
        loss_ratio.append(_ratio([w * v for w, v in zip(weights, scaled, strict=True)]))
        norm_ratio.append(_ratio(norms))
    return loss_ratio, norm_ratio


def _ratio(x: list[float]) -> float:
    return max(x) / min(x)


def _late(ratios: list[float]) -> float:
    """The median over the last LATE steps (single steps are noisy)."""
    return statistics.median(ratios[-LATE:])


def test_equal_weighting_leaves_the_scaled_task_dominant():
    loss_ratio, norm_ratio = _train(make_weighting("equal", 2))
    assert _late(loss_ratio) > 10 and _late(norm_ratio) > 10


def test_gradnorm_balances_the_gradient_norms():
    """With asymmetry alpha = 0 GradNorm's target is the mean norm for every task (Chen et
    al. 2018, sec. 3.2): the norms meet."""
    _, norm_ratio = _train(GradNorm(2, alpha=0.0))
    assert norm_ratio[0] > 50  # the 100x task starts dominant
    assert _late(norm_ratio) < 2


def test_gradnorm_weighs_the_scaled_task_down():
    """With the default asymmetry the tasks' training rates also count, yet the 100x task's
    weight still falls well below the other's."""
    weighting = GradNorm(2)
    _, norm_ratio = _train(weighting)
    w = weighting.weights()
    assert w[0] / w[1] > 10 and _late(norm_ratio) < 10


def test_uncertainty_balances_the_weighted_losses():
    loss_ratio, _ = _train(Uncertainty(2))
    assert loss_ratio[0] > 50
    assert _late(loss_ratio) < 2


@pytest.mark.parametrize("name", ["dwa", "mgda", "pcgrad"])
def test_every_strategy_trains_the_two_tasks(name):
    if name in ("mgda", "pcgrad"):
        pytest.importorskip("torchjd")
    loss_ratio, norm_ratio = _train(make_weighting(name, 2))
    assert all(math.isfinite(x) for x in loss_ratio + norm_ratio)
