"""A small ResNet-style CNN for 32x32 RGB images (CIFAR-sized), light enough for CPU validation.

ResNet-50 at 224x224 takes seconds per step on one CPU core; this network keeps its structure (a
convolutional stem, residual blocks with batch norm, a pooled linear classifier) at about 0.7 M
parameters. Layers for simplan: the stem, each of the 4 residual blocks, and the classifier head.
"""

from __future__ import annotations

import torch
from torch import nn

DESCRIPTION = "small ResNet-style CNN (stem, 4 residual blocks, classifier), 32x32 images"
WIDTHS = ((32, 64, 2), (64, 64, 1), (64, 128, 2), (128, 128, 1))  # in, out, stride


class Stem(nn.Module):
    simplan_kind = "conv_stem"

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


class ResidualBlock(nn.Module):
    simplan_kind = "residual_block"

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class Classifier(nn.Module):
    simplan_kind = "classifier"

    def __init__(self, cin: int, classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class CNNSmall(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = Stem()
        self.blocks = nn.Sequential(*(ResidualBlock(a, b, s) for a, b, s in WIDTHS))
        self.head = Classifier(WIDTHS[-1][1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def build(batch: int = 1, image_size: int = 32) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    return CNNSmall(), (torch.randn(batch, 3, image_size, image_size),)
