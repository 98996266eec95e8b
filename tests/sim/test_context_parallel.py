"""Context parallelism: per-rank memory and K/V bytes by hand, the ring's overlap, refusals."""

from __future__ import annotations

import pytest

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
    assert ring.step_time_s < gather.step_time_s


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
