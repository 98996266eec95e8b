"""Multi-task vision with a heavy detection head: mtl-vision's trunk and classifier, and the
RetinaNet head (Lin et al. 2017, "Focal Loss for Dense Object Detection", section 4) over LVIS's
1,203 classes (Gupta et al. 2019, "LVIS: A Dataset for Large Vocabulary Instance Segmentation").

The trunk (the stem and the first three ResNet-50 stages: 1,024 channels at stride 16) feeds the
image classifier and the detection head. The detection head is RetinaNet's on one pyramid level:
the feature pyramid's level for that stride (a 1x1 lateral convolution to 256 channels and a 3x3
output convolution, Lin et al. 2017, "Feature Pyramid Networks for Object Detection"), then two
subnets, each four 3x3 convolutions of 256 channels with ReLU and a final 3x3 convolution: K x A
class logits (K = 1,203 classes, A = 9 anchors) and 4 x A box offsets. The class subnet's final
convolution alone holds 24.9 M parameters, three times the trunk's 8.5 M.
"""

from __future__ import annotations

import torch
from torch import nn

# the same tasks, outputs in the order forward returns them, as mtl-vision (simplan/tasks.py)
from .mtl_vision import OUTPUTS as OUTPUTS
from .mtl_vision import TASKS as TASKS
from .mtl_vision import TRUNK_OUT, MultiTaskVision

DESCRIPTION = "mtl-vision trunk + classifier + RetinaNet head (Lin et al. 2017), LVIS 1,203 classes"
ANCHORS = 9  # RetinaNet: 3 scales x 3 aspect ratios a location
DET_CLASSES = 1203  # LVIS v1
WIDTH = 256  # RetinaNet's subnet and pyramid width
SUBNET_CONVS = 4  # 3x3 convolutions before a subnet's final one


class PyramidLevel(nn.Module):
    """FPN's level at the trunk's stride: 1x1 lateral convolution, 3x3 output convolution."""

    simplan_kind = "det_neck"

    def __init__(self, cin: int, width: int = WIDTH) -> None:
        super().__init__()
        self.lateral = nn.Conv2d(cin, width, 1)
        self.output = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.lateral(x))


class RetinaSubnet(nn.Module):
    """RetinaNet's class or box subnet: SUBNET_CONVS 3x3 convolutions with ReLU, then a 3x3
    convolution to `outputs` channels."""

    simplan_kind = "det_branch"

    def __init__(self, outputs: int, width: int = WIDTH) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(width, width, 3, padding=1) for _ in range(SUBNET_CONVS)
        )
        self.out = nn.Conv2d(width, outputs, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = torch.relu(conv(x))
        return self.out(x)


class MultiTaskVisionLVIS(MultiTaskVision):
    def __init__(self, classes: int = 1000) -> None:
        detection = (
            PyramidLevel(TRUNK_OUT),
            RetinaSubnet(ANCHORS * 4),
            RetinaSubnet(ANCHORS * DET_CLASSES),
        )
        super().__init__(classes, detection)


def build(batch: int = 1, image_size: int = 224) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    return MultiTaskVisionLVIS(), (torch.randn(batch, 3, image_size, image_size),)
