"""Rendered shapes: a small, generated (no download), seeded data set for multi-task vision.

Every image holds one shape (circle, square or triangle) of a random colour, size and position
on a dark, slightly noisy background. Its labels serve two tasks:

- classification: the shape's class (0 circle, 1 square, 2 triangle);
- detection on the model's feature grid (G x G cells, A anchors a cell): the cell holding the
  shape's centre and the anchor whose box best overlaps the shape's (IoU of boxes centred
  alike) are the one positive; its box target is (dx, dy, log(w / anchor_w), log(h / anchor_h))
  with (dx, dy) the centre's offset within the cell in [0, 1); every anchor's class target is 0
  (background) except the positive's, class + 1.

    data = shapes(64, image_size=64, grid=4, anchors=9, seed=0)
    data.images.shape == (64, 3, 64, 64); data.boxes[i] == (cx, cy, w, h) as image fractions
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from simplan.errors import SimplanError

CLASSES = ("circle", "square", "triangle")
SIZE_RANGE = (0.25, 0.5)  # the shape's side (or diameter) as a fraction of the image side
ANCHOR_SCALES = (0.15, 0.3, 0.6)  # anchor sides as fractions of the image side
ANCHOR_ASPECTS = (0.5, 1.0, 2.0)  # width / height
NOISE = 0.05  # the background's standard deviation


@dataclass(frozen=True, kw_only=True)
class ShapesData:
    """images (N, 3, S, S) float; labels (N,) long; boxes (N, 4) (cx, cy, w, h) as fractions of
    the side; box_target (N, A*4, G, G) float; box_mask (N, A, G, G) bool (the positives);
    anchor_class (N, A, G, G) long (0 background, class + 1 at the positive)."""

    images: Any
    labels: Any
    boxes: Any
    box_target: Any
    box_mask: Any
    anchor_class: Any

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def rows(self, lo: int, hi: int) -> ShapesData:
        """Samples lo..hi-1 (a view)."""
        return ShapesData(
            images=self.images[lo:hi],
            labels=self.labels[lo:hi],
            boxes=self.boxes[lo:hi],
            box_target=self.box_target[lo:hi],
            box_mask=self.box_mask[lo:hi],
            anchor_class=self.anchor_class[lo:hi],
        )


def anchor_sizes(anchors: int) -> list[tuple[float, float]]:
    """(w, h) of the first `anchors` of scale x aspect (as fractions of the side), scale-major."""
    sizes = [(s * math.sqrt(a), s / math.sqrt(a)) for s in ANCHOR_SCALES for a in ANCHOR_ASPECTS]
    if not 1 <= anchors <= len(sizes):
        raise SimplanError(f"the shapes data has 1 to {len(sizes)} anchors, not {anchors}")
    return sizes[:anchors]


def best_anchor(w: float, h: float, sizes: list[tuple[float, float]]) -> int:
    """The anchor whose box, centred on the shape's, overlaps the (w, h) box most (IoU)."""

    def iou(aw: float, ah: float) -> float:
        inter = min(w, aw) * min(h, ah)
        return inter / (w * h + aw * ah - inter)

    return max(range(len(sizes)), key=lambda i: iou(*sizes[i]))


def shapes(
    count: int, *, image_size: int = 64, grid: int = 4, anchors: int = 9, seed: int = 0
) -> ShapesData:
    """`count` images of `image_size` pixels a side with their labels, the same for one seed."""
    import torch

    if count < 1 or image_size < 8 or grid < 1:
        raise SimplanError("the shapes data needs count >= 1, image_size >= 8 and grid >= 1")
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, len(CLASSES), (count,), generator=gen)
    side = SIZE_RANGE[0] + (SIZE_RANGE[1] - SIZE_RANGE[0]) * torch.rand(count, generator=gen)
    centre = side[:, None] / 2 + (1 - side[:, None]) * torch.rand(count, 2, generator=gen)
    colour = 0.3 + 0.7 * torch.rand(count, 3, generator=gen)
    noise = NOISE * torch.randn(count, 3, image_size, image_size, generator=gen)
    mask = _masks(labels, centre, side, image_size)
    images = noise + mask[:, None] * colour[:, :, None, None]
    boxes = torch.cat([centre, side[:, None], side[:, None]], dim=1)
    box_target, box_mask, anchor_class = _detection_targets(labels, boxes, grid, anchors)
    return ShapesData(
        images=images,
        labels=labels,
        boxes=boxes,
        box_target=box_target,
        box_mask=box_mask,
        anchor_class=anchor_class,
    )


def _masks(labels: Any, centre: Any, side: Any, size: int) -> Any:
    """(N, S, S) 1.0 inside each sample's shape: a disc, a square, or a triangle pointing up
    (apex at the top of its box, base at the bottom), all of box side `side`."""
    import torch

    pix = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    y, x = pix[None, :, None], pix[None, None, :]
    cx, cy = centre[:, 0, None, None], centre[:, 1, None, None]
    r = side[:, None, None] / 2
    circle = (x - cx) ** 2 + (y - cy) ** 2 <= r**2
    square = ((x - cx).abs() <= r) & ((y - cy).abs() <= r)
    depth = (y - (cy - r)) / (2 * r)  # 0 at the apex, 1 at the base
    triangle = (depth >= 0) & (depth <= 1) & ((x - cx).abs() <= r * depth)
    kind = labels[:, None, None]
    return torch.where(kind == 0, circle, torch.where(kind == 1, square, triangle)).float()


def _detection_targets(labels: Any, boxes: Any, grid: int, anchors: int) -> tuple[Any, Any, Any]:
    import torch

    n = labels.shape[0]
    sizes = anchor_sizes(anchors)
    box_target = torch.zeros(n, anchors, 4, grid, grid)
    box_mask = torch.zeros(n, anchors, grid, grid, dtype=torch.bool)
    anchor_class = torch.zeros(n, anchors, grid, grid, dtype=torch.long)
    for i in range(n):
        cx, cy, w, h = (float(v) for v in boxes[i])
        gx, gy = min(int(cx * grid), grid - 1), min(int(cy * grid), grid - 1)
        a = best_anchor(w, h, sizes)
        aw, ah = sizes[a]
        box_target[i, a, :, gy, gx] = torch.tensor(
            [cx * grid - gx, cy * grid - gy, math.log(w / aw), math.log(h / ah)]
        )
        box_mask[i, a, gy, gx] = True
        anchor_class[i, a, gy, gx] = int(labels[i]) + 1
    return box_target.reshape(n, anchors * 4, grid, grid), box_mask, anchor_class
