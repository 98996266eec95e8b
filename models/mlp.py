"""The classic MNIST multi-layer perceptron: 784-128-10 with a ReLU."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

DESCRIPTION = "MNIST MLP 784-128-10 (ReLU)"


def build(batch: int = 1) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    model = nn.Sequential(
        OrderedDict(
            fc1=nn.Linear(784, 128),
            relu=nn.ReLU(),
            fc2=nn.Linear(128, 10),
        )
    )
    return model, (torch.randn(batch, 784),)
