"""A wider MLP with the MNIST MLP's input and output (784-512-512-10, ReLU): a teacher for
the 784-128-10 `mlp` preset in distillation."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

DESCRIPTION = "MLP 784-512-512-10 (ReLU), a distillation teacher for mlp"


def build(batch: int = 1) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    model = nn.Sequential(
        OrderedDict(
            fc1=nn.Linear(784, 512),
            relu1=nn.ReLU(),
            fc2=nn.Linear(512, 512),
            relu2=nn.ReLU(),
            fc3=nn.Linear(512, 10),
        )
    )
    return model, (torch.randn(batch, 784),)
