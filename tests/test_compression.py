"""Bytes on the wire of one DDP bucket under each compression, checked by hand against torch's
hooks (simplan.compression), on the MNIST MLP's gradients: fc1 weight 128 x 784 and bias 128,
fc2 weight 10 x 128 and bias 10 (101,770 elements, 407,080 bytes in fp32)."""

from __future__ import annotations

import pytest

from simplan.compression import powersgd_split, wire_bytes

MLP = ((128, 784), (128,), (10, 128), (10,))
ELEMS = 128 * 784 + 128 + 10 * 128 + 10  # 101,770


def test_uncompressed_and_half_precision() -> None:
    assert ELEMS == 101_770
    assert wire_bytes("none", MLP, 1, 4) == (407_080.0,)
    assert wire_bytes("fp16", MLP, 1, 4) == (203_540.0,)  # 2 bytes per element
    assert wire_bytes("bf16", MLP, 1, 4) == (203_540.0,)


def test_powersgd_rank_1() -> None:
    # biases uncompressed (138 elements); P = 128 + 10 rows, Q = 784 + 128 rows, rank 1
    assert wire_bytes("powersgd", MLP, 1, 4) == (138 * 4.0, 138 * 4.0, 912 * 4.0)


def test_powersgd_rank_8_sends_a_small_matrix_whole() -> None:
    # fc2: (10 + 128) * 8 * 2 = 2208 >= 1280 elements: torch sends it uncompressed
    split = powersgd_split(MLP, 8)
    assert split.matrices == ((128, 784, 8),)
    assert split.uncompressed_elems == 138 + 1280
    assert wire_bytes("powersgd", MLP, 8, 4) == (1418 * 4.0, 128 * 8 * 4.0, 784 * 8 * 4.0)


def test_powersgd_rank_is_capped_by_the_matrix_and_views_higher_dims_as_matrices() -> None:
    # a conv weight 64 x 3 x 3 x 3 is the matrix 64 x 27; rank 32 -> min(64, 27, 32) = 27,
    # (64 + 27) * 27 * 2 >= 64 * 27: uncompressed
    assert powersgd_split(((64, 3, 3, 3),), 32).uncompressed_elems == 64 * 27
    assert powersgd_split(((64, 3, 3, 3),), 4).matrices == ((64, 27, 4),)
    # one matmul of the rank-4 split: 2 * 64 * 27 * 4 flops
    assert powersgd_split(((64, 3, 3, 3),), 4).matmul_flops == pytest.approx(2 * 64 * 27 * 4)
