"""Context parallelism: per-rank memory and K/V bytes by hand, the ring's overlap, refusals."""

from __future__ import annotations

import pytest

from simplan.context_parallel import (
    causal_imbalance,
    merge_step_bytes,
    ring_exposed_s,
    ring_merge_s,
)
from simplan.devices import get_device
from simplan.errors import SimplanError
from simplan.parallel import ParallelConfig
from simplan.sim.costs import layer_steps
from simplan.sim.run import simulate
from simplan.sources import load_model
from tests.helpers import run_main
from tests.sim.test_oracles import h100s


@pytest.fixture(scope="module")
def gpt():  # type: ignore[no-untyped-def]
    return load_model("gpt3-1.3b", seq_len=2048, dtype="bf16")


def test_kv_exchange_bytes_by_hand(gpt) -> None:  # type: ignore[no-untyped-def]
    dev = get_device("h100-sxm")
    ring = ParallelConfig(cp=2, micro_batch=2, global_batch=2)
    block = next(s for s in layer_steps(gpt, dev, ring) if s.cp_fwd)
    kv = 2 * 2048 * 2048 * 2 * 2  # K and V: 2 x seq x hidden (16 KV heads x 128) x mb 2 x bf16
    assert block.cp_fwd == (("all_gather", kv),)
    assert block.cp_bwd == (("all_gather", 2 * kv),)  # K/V again, and dK/dV back
    assert block.cp_fwd_attention_s > 0
    gather = layer_steps(gpt, dev, ring.replace(cp_comm="all_gather"))
    block = next(s for s in gather if s.cp_fwd)
    assert block.cp_bwd == (("reduce_scatter", kv),)
    assert block.cp_fwd_attention_s == 0.0  # gathered before the attention: nothing hides it
    # with tp 2 each TP rank exchanges the K/V of its own heads
    tp = next(s for s in layer_steps(gpt, dev, ring.replace(tp=2)) if s.cp_fwd)
    assert tp.cp_fwd == (("all_gather", kv / 2),)


def test_activations_divide_by_cp_and_weights_do_not(gpt) -> None:  # type: ignore[no-untyped-def]
    one = simulate(gpt, h100s(1), ParallelConfig(micro_batch=1, global_batch=1), record=False)
    two = simulate(gpt, h100s(2), ParallelConfig(cp=2, micro_batch=1, global_batch=1),
                   record=False)  # fmt: skip
    assert two.devices[0].saved_activation_bytes == pytest.approx(
        one.devices[0].saved_activation_bytes / 2
    )
    assert two.devices[0].memory["weights"] == one.devices[0].memory["weights"]
    # ZeRO-1 shards the optimizer over dp x cp ranks
    z1 = simulate(gpt, h100s(2), ParallelConfig(cp=2, zero=1, micro_batch=1, global_batch=1),
                  record=False)  # fmt: skip
    assert z1.devices[0].memory["optimizer"] == pytest.approx(
        two.devices[0].memory["optimizer"] / 2
    )


def test_ring_hides_kv_behind_attention(gpt) -> None:  # type: ignore[no-untyped-def]
    base = ParallelConfig(cp=4, micro_batch=1, global_batch=1)
    ring = simulate(gpt, h100s(4), base)
    gather = simulate(gpt, h100s(4), base.replace(cp_comm="all_gather"))
    hidden = sum(e[5] - e[4] for e in ring.events if e[1] == "tp")
    assert hidden > 0 and not [e for e in gather.events if e[1] == "tp"]
    # the ring pays per-step merges instead: without them it would beat the exposed gather
    # (at 512 tokens a rank the merges may cost more than the gather they replace)
    steps = [s for s in layer_steps(gpt, get_device("h100-sxm"), base) if s.cp_fwd]
    merges = sum(
        ring_merge_s(gpt.layer(s.name), get_device("h100-sxm"), "bf16", 1, 1, 4, bwd)
        for s in steps
        for bwd in (False, True)
    )
    assert merges > 0
    assert ring.step_time_s - merges < gather.step_time_s
    # the merges are compute on the rank, the only compute the ring adds
    compute = ring.devices[0].compute_s - gather.devices[0].compute_s
    assert compute == pytest.approx(merges, rel=1e-6)


def test_merge_bytes_by_hand(gpt) -> None:  # type: ignore[no-untyped-def]
    block = next(layer for layer in gpt.layers if layer.kind == "transformer_block")
    tokens = 2 * 2048 / 4  # micro-batch 2, cp 4
    # forward: bf16 partial -> fp32 (2 + 4), two rescales (8 + 8), the sum (12): 34 bytes
    assert merge_step_bytes(block, "bf16", 2, 1, 4, False) == tokens * 2048 * 34
    # backward: dQ, dK, dV (hidden 2048 each, no GQA) added into fp32: 2 + 4 + 4 bytes
    assert merge_step_bytes(block, "bf16", 2, 1, 4, True) == tokens * 3 * 2048 * 10
    assert merge_step_bytes(block, "bf16", 2, 2, 4, True) == tokens * 3 * 1024 * 10  # tp 2
    dev = get_device("h100-sxm")
    step = dev.memory_time_s(merge_step_bytes(block, "bf16", 2, 1, 4, False))
    assert ring_merge_s(block, dev, "bf16", 2, 1, 4, False) == pytest.approx(3 * step)
    assert ring_merge_s(block, dev, "bf16", 2, 1, 1, False) == 0.0


def test_ring_exposure_is_per_step() -> None:
    # 4 ranks: 3 transfers of 1 s each, 4 steps of 2 s of compute: every transfer hides
    assert ring_exposed_s(3.0, 8.0, 4) == 0.0
    # 3 transfers of 3 s behind steps of 2 s: 1 s exposed at each of them
    assert ring_exposed_s(9.0, 8.0, 4) == pytest.approx(3.0)
    # the same totals spread evenly hide more than a whole-pass comparison would expose:
    # 9 s of transfers against 8 s of compute, 1 s over in total, but 3 s step by step
    assert ring_exposed_s(9.0, 8.0, 4) > 9.0 - 8.0
    assert ring_exposed_s(2.0, 0.0, 1) == 2.0  # no ring: all exposed
    # backward: each of the 3 steps moves 1 s (K/V 0.5 s, dK/dV 0.5 s), all hidden, and the
    # last step's dK/dV (0.5 s) go home after the last compute
    assert ring_exposed_s(3.0, 8.0, 4, backward=True) == pytest.approx(0.5)


def test_causal_imbalance_by_hand() -> None:
    # one sequence of 4 tokens on 2 ranks, contiguous: rank 0 queries see 1 + 2 = 3 keys,
    # rank 1's 3 + 4 = 7; the mean is 5, so the slowest does 7 / 5
    assert causal_imbalance((4,), 2, "contiguous") == pytest.approx(7 / 5)
    assert causal_imbalance((4,), 2, "balanced") == 1.0
    # two sequences of 2 packed on 2 ranks: each rank holds one whole sequence (3 each)
    assert causal_imbalance((2, 2), 2, "contiguous") == 1.0
    # a long sequence on many ranks: the last rank's (cp - 1/2) blocks over the mean cp / 2
    assert causal_imbalance((8 * 8192,), 8, "contiguous") == pytest.approx(7.5 / 4, rel=1e-3)
    with pytest.raises(ValueError, match="layout"):
        causal_imbalance((4,), 2, "zigzag")


def test_cp_must_split_the_sequence_into_2cp_chunks(gpt) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SimplanError, match="cp 3 does not divide the sequence of 2048 tokens"):
        simulate(gpt, h100s(3), ParallelConfig(cp=3, micro_batch=1, global_batch=1))


def test_world_counts_cp() -> None:
    config = ParallelConfig(dp=2, tp=2, cp=2, global_batch=2)
    assert config.world_size == 8 and config.replicas == 4
    assert "cp2" in config.describe()


def test_cli_refuses_in_one_line(capsys) -> None:  # type: ignore[no-untyped-def]
    base = ("simulate", "--model", "gpt3-125m", "--global-batch", "8")
    code, _, err = run_main(capsys, *base, "--cluster", "dgx-h100", "--cp", "3", "--dp", "1",
                            "--gpus-per-node", "3")  # fmt: skip
    assert code == 2 and "cp 3 does not divide the sequence of 2048 tokens" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run_main(capsys, *base, "--cluster", "dgx-a100", "--fp8", "delayed")
    assert code == 2 and "a100-80gb has no FP8 tensor cores" in err
    assert len(err.strip().splitlines()) == 1


def test_cp_with_pipeline_and_data_parallel_ranks(gpt) -> None:  # type: ignore[no-untyped-def]
    base = ParallelConfig(pp=2, dp=2, micro_batch=1, global_batch=4)
    plain = simulate(gpt, h100s(4), base, record=False)
    split = simulate(gpt, h100s(8), base.replace(cp=2), record=False)
    for a, b in zip(plain.devices, split.devices, strict=True):
        assert b.saved_activation_bytes == pytest.approx(a.saved_activation_bytes / 2)
    assert split.step_time_s < plain.step_time_s
