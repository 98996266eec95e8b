"""Multi-task vision: a shared convolutional trunk with two task heads.

The trunk (the stem and the first three ResNet-50 stages) feeds an image-classification head and
an object-detection head; the detection head has a shared neck that feeds a box-regression branch
and a class-logits branch (per anchor, on the 14x14 feature map). The model graph is a DAG, not a
chain: the trunk's last block has two consumers.
"""

from __future__ import annotations

import torch
from torch import nn

from .resnet50 import EXPANSION, STAGES, Bottleneck, Classifier, Stem

DESCRIPTION = "shared ResNet trunk + classification head + detection head (box + class)"
ANCHORS = 9
DET_CLASSES = 80
# task declarations (simplan/tasks.py): outputs in the order forward returns them
OUTPUTS = ["cls_head", "det_box", "det_cls"]
TASKS = [
    {"name": "classify", "outputs": ["cls_head"], "loss": "cross_entropy"},
    {"name": "detect", "outputs": ["det_box", "det_cls"], "loss": "detection"},
]


class DetNeck(nn.Module):
    simplan_kind = "det_neck"

    def __init__(self, cin: int, width: int = 256) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


class DetBranch(nn.Module):
    simplan_kind = "det_branch"

    def __init__(self, width: int, outputs: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, outputs, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(x)))


def trunk() -> nn.Sequential:
    blocks: list[nn.Module] = []
    cin = 64
    for width, count, stride in STAGES[:3]:
        for i in range(count):
            blocks.append(Bottleneck(cin, width, stride if i == 0 else 1))
            cin = width * EXPANSION
    return nn.Sequential(*blocks)


TRUNK_OUT = STAGES[2][0] * EXPANSION  # channels out of the trunk


class MultiTaskVision(nn.Module):
    """The trunk, the classifier and a detection head: (neck, box branch, class branch), by
    default the light one above."""

    def __init__(
        self, classes: int = 1000, detection: tuple[nn.Module, nn.Module, nn.Module] | None = None
    ) -> None:
        super().__init__()
        self.stem = Stem()
        self.trunk = trunk()
        self.cls_head = Classifier(TRUNK_OUT, classes)
        self.det_neck, self.det_box, self.det_cls = detection or (
            DetNeck(TRUNK_OUT),
            DetBranch(256, ANCHORS * 4),
            DetBranch(256, ANCHORS * DET_CLASSES),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.trunk(self.stem(x))
        neck = self.det_neck(features)
        return self.cls_head(features), self.det_box(neck), self.det_cls(neck)


def build(batch: int = 1, image_size: int = 224) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    return MultiTaskVision(), (torch.randn(batch, 3, image_size, image_size),)
