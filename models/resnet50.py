"""A ResNet-50-shaped CNN (He et al. 2016) built from torch.nn alone: 224x224 RGB, 1000 classes.

Layers for simplan: the stem, each of the 16 bottleneck blocks, and the classifier head.
"""

from __future__ import annotations

import torch
from torch import nn

DESCRIPTION = "ResNet-50 (16 bottleneck blocks, 25.6M parameters), 224x224 images"
STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # width, blocks, stride
EXPANSION = 4


class Stem(nn.Module):
    simplan_kind = "conv_stem"

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn = nn.BatchNorm2d(64)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.bn(self.conv(x))))


class Bottleneck(nn.Module):
    simplan_kind = "bottleneck"

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * EXPANSION
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        skip = x if self.down is None else self.down(x)
        return torch.relu(y + skip)


class Classifier(nn.Module):
    simplan_kind = "classifier"

    def __init__(self, cin: int, classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def stages() -> nn.Sequential:
    blocks: list[nn.Module] = []
    cin = 64
    for width, count, stride in STAGES:
        for i in range(count):
            blocks.append(Bottleneck(cin, width, stride if i == 0 else 1))
            cin = width * EXPANSION
    return nn.Sequential(*blocks)


class ResNet50(nn.Module):
    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        self.stem = Stem()
        self.blocks = stages()
        self.head = Classifier(512 * EXPANSION, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def build(batch: int = 1, image_size: int = 224) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    return ResNet50(), (torch.randn(batch, 3, image_size, image_size),)
