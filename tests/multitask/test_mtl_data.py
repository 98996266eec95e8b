"""The rendered-shapes data set and the image=N knob that keeps vision presets small."""

from __future__ import annotations

import math

import pytest
import torch

from simplan.errors import SimplanError
from simplan.model_knobs import split_spec
from simplan.shapes_data import anchor_sizes, best_anchor, shapes
from simplan.sources import load_model


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = (shapes(16, image_size=32, grid=2, seed=s) for s in (0, 0, 1))
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)


def test_shapes_cover_the_area_of_their_kind():
    """A square of side s covers s^2 of the image, a disc pi s^2 / 4, the triangle s^2 / 2
    (pixel counting: within a few percent at 128 px)."""
    data = shapes(30, image_size=128, grid=4, seed=3)
    for i in range(len(data)):
        side = float(data.boxes[i, 2])
        lit = (data.images[i].min(dim=0).values > 0.2).float().mean().item()
        expected = side**2 * (math.pi / 4, 1.0, 0.5)[int(data.labels[i])]
        assert lit == pytest.approx(expected, rel=0.12), (i, int(data.labels[i]))


def test_one_positive_anchor_per_image_at_the_centre_cell():
    data = shapes(20, image_size=64, grid=4, anchors=9, seed=1)
    for i in range(len(data)):
        cx, cy, w, h = (float(v) for v in data.boxes[i])
        positives = data.box_mask[i].nonzero().tolist()
        a = best_anchor(w, h, anchor_sizes(9))
        assert positives == [[a, int(cy * 4), int(cx * 4)]]
        assert int(data.anchor_class[i].sum()) == int(data.labels[i]) + 1
        aw, ah = anchor_sizes(9)[a]
        box = data.box_target[i].reshape(9, 4, 4, 4)[a, :, int(cy * 4), int(cx * 4)]
        expected = [cx * 4 - int(cx * 4), cy * 4 - int(cy * 4), math.log(w / aw), math.log(h / ah)]
        assert box.tolist() == pytest.approx(expected, abs=1e-6)


def test_a_square_shape_takes_the_square_anchor_of_its_scale():
    assert best_anchor(0.3, 0.3, anchor_sizes(9)) == 4  # scale 0.3, aspect 1
    assert best_anchor(0.4, 0.2, anchor_sizes(9)) == 5  # scale 0.3, aspect 2


def test_the_image_knob_scales_convolution_flops_by_the_pixels():
    """The stem's convolution counts FLOPs per output pixel: 32 px against 64 px is 1/4."""
    small = load_model("mtl-vision#image=32").layer("stem").fwd_flops
    large = load_model("mtl-vision#image=64").layer("stem").fwd_flops
    assert large / small == pytest.approx(4.0)
    assert split_spec("mtl-vision#image=32")[1].suffix() == "#image=32"


@pytest.mark.parametrize(
    "spec", ["mtl-vision#image=0", "mtl-vision#image=big", "gpt-tiny#image=32"]
)
def test_bad_image_knobs_are_refused(spec):
    with pytest.raises(SimplanError):
        load_model(spec)
