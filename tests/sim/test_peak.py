"""The peak of a step is its largest moment: hand-computed moments of small schedules."""

from __future__ import annotations

import pytest

from simplan.parallel import ParallelConfig
from simplan.sim.peak import (
    Static,
    SweepLayer,
    backward_moments,
    optimizer_moment,
    peak_moment,
)
from simplan.sim.run import simulate
from simplan.sources import load_model
from tests.sim.test_oracles import h100s

STATIC = Static(weights=300, optimizer=600, buffers=50)  # 950 B live all step


def _chain(loss: float = 0.0) -> list[SweepLayer]:
    """Three layers saving 10, 20 and 30 B; 5 B gradients at each cut; 100 B of parameter
    gradient each; the first layer needs no input gradient."""
    return [
        SweepLayer(activation_bytes=10, grad_out_bytes=5, grad_in_bytes=0, param_grad_bytes=100),
        SweepLayer(activation_bytes=20, grad_out_bytes=5, grad_in_bytes=5, param_grad_bytes=100),
        SweepLayer(
            activation_bytes=30,
            grad_out_bytes=5,
            grad_in_bytes=5,
            loss_bytes=loss,
            param_grad_bytes=100,
        ),
    ]


def test_one_microbatch_peaks_at_the_first_layer_with_every_gradient() -> None:
    moments = backward_moments(_chain(), STATIC, held_bytes=0, accumulated_grad_bytes=0)
    # last layer: 60 saved + 5 in + 5 out, its own gradient 100
    # middle: 30 saved + 10, gradients 200; first: 10 saved + 5, gradients 300
    assert [m.total for m in moments] == [950 + 100 + 70, 950 + 200 + 40, 950 + 300 + 15]
    step = optimizer_moment(STATIC, 300)
    assert step.total == 1250
    peak = peak_moment([*moments, step])
    assert peak.total == 1265 and peak.name == "backward layer 0"
    assert peak.parts == {
        "weights": 300,
        "grads": 300,
        "optimizer": 600,
        "activations": 15,
        "buffers": 50,
    }


def test_accumulated_gradients_move_the_peak_to_the_start_of_the_last_backward() -> None:
    moments = backward_moments(_chain(), STATIC, held_bytes=40, accumulated_grad_bytes=300)
    # every gradient exists already; the start holds the most activations: 40 held + 60 + 10
    assert peak_moment(moments).total == 950 + 300 + 40 + 60 + 10
    assert peak_moment(moments).name == "backward layer 2"


def test_the_loss_holds_two_output_sized_gradients_before_the_layer_backward() -> None:
    moments = backward_moments(_chain(loss=500), STATIC, held_bytes=0, accumulated_grad_bytes=0)
    # the loss's gradient of its log-probabilities and of the logits (5 + 500), no parameter
    # gradient yet
    assert moments[0].parts["grads"] == 0
    assert moments[0].parts["activations"] == 60 + 5 + 500


def test_fsdp_holds_the_gathered_layer_the_prefetched_one_and_an_unsharded_gradient() -> None:
    layers = [
        SweepLayer(activation_bytes=0, gathered_bytes=1000, unsharded_grad_bytes=1000),
        SweepLayer(activation_bytes=0, gathered_bytes=2000, unsharded_grad_bytes=2000),
    ]
    moments = backward_moments(layers, STATIC, held_bytes=0, accumulated_grad_bytes=0)
    assert moments[0].parts["buffers"] == 50 + 2000 + 1000 + 2000  # layer 1, layer 0 prefetched
    assert moments[1].parts["buffers"] == 50 + 1000 + 1000


def test_peak_needs_a_moment() -> None:
    with pytest.raises(ValueError, match="at least one"):
        peak_moment([])


def test_fp32_ddp_keeps_a_bucket_copy_of_the_gradients_and_the_data() -> None:
    """The MLP 784-128-10 in fp32 on 2 data-parallel ranks at micro-batch 64: the buffers are
    torch DDP's gradient buckets (one fp32 copy of the 101,770 parameters) and the step's data
    (64 images of 784 fp32 values, 64 int64 labels)."""
    graph = load_model("mlp")
    config = ParallelConfig(dp=2, micro_batch=64, global_batch=128, dtype="fp32")
    device = simulate(graph, h100s(2), config).devices[0]
    assert device.memory["buffers"] == 101_770 * 4 + 64 * 784 * 4 + 64 * 8
    assert device.memory["weights"] == 101_770 * 4
    assert device.memory["optimizer"] == 2 * 101_770 * 4
