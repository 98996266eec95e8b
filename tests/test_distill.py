"""Distillation's costs against hand-computed values: a frozen teacher's memory, the logits
bytes per step, the placements' step, the shape check, and the loss itself."""

from __future__ import annotations

import pytest

from simplan.costmodel import layer_costs
from simplan.distill import (
    Distillation,
    check_pair,
    logits_bytes,
    separate_config,
    simulate_distill,
    teacher_memory_bytes,
)
from simplan.errors import SimplanError
from simplan.runtime import config_for
from simplan.sim.run import simulate
from simplan.sources import load_model
from simplan.topology import load_cluster
from simplan.topology.cluster_spec import load_spec

# mlp-wide: 784-512-512-10, mlp: 784-128-10
WIDE_PARAMS = 784 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10


@pytest.fixture(scope="module")
def graphs():
    return load_model("mlp"), load_model("mlp-wide")


def _cluster(devices: int):
    return load_cluster(load_spec("localhost-cpu", nodes=1, gpus_per_node=devices))


def test_teacher_memory_is_weights_and_one_layer_live(graphs):
    _, teacher = graphs
    mem = teacher_memory_bytes(teacher, micro_batch=64)
    assert mem["weights_bytes"] == WIDE_PARAMS * 4  # no gradients, no Adam moments
    # fc1 at its forward: its input (784 floats) and output (512 floats) per sample
    assert mem["activations_bytes"] == (784 + 512) * 4 * 64
    half = teacher_memory_bytes(load_model("mlp-wide", dtype="bf16"), micro_batch=64)
    assert half["weights_bytes"] == WIDE_PARAMS * 2


def test_logits_bytes_by_hand(graphs):
    student, _ = graphs
    assert logits_bytes(student, 64) == 10 * 4 * 64
    cfg = config_for("ddp", 2, micro_batch=64)  # 2 replicas x 1 micro-batch of 64
    result = simulate_distill(
        student, graphs[1], _cluster(2), cfg, Distillation(teacher="mlp-wide")
    )
    assert result.logits_bytes == 2 * 64 * 10 * 4


def test_output_shape_mismatch_is_one_line(graphs):
    student, _ = graphs
    with pytest.raises(SimplanError) as err:
        check_pair(student, load_model("gpt-tiny"))
    assert "\n" not in str(err.value)
    assert "10" in str(err.value) and "gpt-tiny" in str(err.value)


def test_colocated_adds_the_teacher_forward_to_the_student_step(graphs):
    student, teacher = graphs
    cluster, cfg = _cluster(2), config_for("ddp", 2, micro_batch=64)
    result = simulate_distill(student, teacher, cluster, cfg, Distillation(teacher="mlp-wide"))
    alone = simulate(student, cluster, cfg, record=False).step_time_s
    fwd = sum(c.fwd_s for c in layer_costs(teacher, cluster.device_model(0), "fp32", 64))
    assert result.teacher_forward_s == pytest.approx(fwd)
    assert result.step_time_s == pytest.approx(alone + fwd)
    assert result.peak_memory_bytes == pytest.approx(
        result.student_peak_memory_bytes + teacher_memory_bytes(teacher, 64)["total_bytes"]
    )


def test_separate_step_is_the_slower_pipeline(graphs):
    student, teacher = graphs
    cluster = _cluster(2)
    cfg = separate_config(config_for("ddp", 2, micro_batch=64), 1)
    assert (cfg.dp, cfg.num_microbatches, cfg.global_batch) == (1, 2, 128)
    result = simulate_distill(
        student, teacher, cluster, cfg, Distillation(teacher="mlp-wide", placement="separate")
    )
    send = cluster.transfer_time(0, 1, 64 * 10 * 4)
    teacher_s = 2 * (result.teacher_forward_s + send)
    student_s = result.student_step_s + 2 * send
    assert result.step_time_s == pytest.approx(max(teacher_s, student_s))
    assert result.bound == ("teacher" if teacher_s > student_s else "student")
    assert result.transfer_s == pytest.approx(2 * send)


def test_precomputed_reads_the_logits_bytes(graphs):
    student, teacher = graphs
    cfg = config_for("ddp", 2, micro_batch=64)
    distill = Distillation(teacher="mlp-wide", placement="precomputed", logits_read_Bps=1e6)
    result = simulate_distill(student, teacher, _cluster(2), cfg, distill)
    assert result.transfer_s == pytest.approx(64 * 10 * 4 / 1e6)
    assert result.teacher_memory["total_bytes"] > 0 and result.teacher_busy_s == 0
    with pytest.raises(SimplanError, match="read bandwidth"):
        Distillation(teacher="mlp-wide", placement="precomputed")


def test_separate_needs_a_batch_that_splits():
    with pytest.raises(SimplanError, match="does not split"):
        separate_config(config_for("ddp", 3, micro_batch=64, global_batch=192), 1)


def test_distillation_loss_oracles():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    from simplan.runtime.distill_run import distill_loss

    gen = torch.Generator().manual_seed(0)
    s, t = torch.randn(8, 5, generator=gen), torch.randn(8, 5, generator=gen)
    y = torch.randint(0, 5, (8,), generator=gen)
    ce = F.cross_entropy(s, y)
    assert distill_loss(s, t, y, 2.0, 0.0) == pytest.approx(float(ce))  # labels only
    # the teacher agreeing with the student: the KL term is 0
    assert distill_loss(s, s, y, 3.0, 0.4) == pytest.approx(0.6 * float(ce), abs=1e-6)


def test_student_learns_from_a_trained_teacher_without_labels():
    """A teacher trained on labels y = argmax(W x) teaches a small student with the KL term
    alone (alpha 1): the student's loss on the true labels falls and it agrees with the
    teacher on most samples."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    from simplan.runtime.distill_run import distill_loss, frozen_teacher

    torch.manual_seed(0)
    w = torch.randn(16, 4)
    x = torch.randn(256, 16)
    y = (x @ w).argmax(-1)
    teacher = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    opt = torch.optim.Adam(teacher.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(teacher(x), y).backward()
        opt.step()
    teacher = frozen_teacher(teacher, "")
    assert not any(p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        logits = teacher(x)
    assert (logits.argmax(-1) == y).float().mean() > 0.95
    student = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    s_opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    with torch.no_grad():
        before = float(F.cross_entropy(student(x), y))
    for _ in range(120):
        s_opt.zero_grad()
        distill_loss(student(x), logits, y, 2.0, 1.0).backward()
        s_opt.step()
    with torch.no_grad():
        after = float(F.cross_entropy(student(x), y))
        agree = (student(x).argmax(-1) == logits.argmax(-1)).float().mean()
    assert after < 0.5 * before
    assert agree > 0.85
