"""Pipeline schedules: the order in which each pipeline rank runs forward and backward passes.

An op is (kind, microbatch, chunk): kind 'F' or 'B'; chunk is the model chunk index (0..pp*v-1),
rank r owns chunks r, r + pp, r + 2pp, ... The orders follow torch.distributed.pipelining's
ScheduleGPipe and Schedule1F1B and Megatron-LM's interleaved 1F1B (Narayanan et al. 2021).
"""

from __future__ import annotations

Op = tuple[str, int, int]


def gpipe(rank: int, pp: int, m: int) -> list[Op]:
    """All forwards, then all backwards (in micro-batch order, as torch's ScheduleGPipe)."""
    return [("F", i, rank) for i in range(m)] + [("B", i, rank) for i in range(m)]


def one_f_one_b(rank: int, pp: int, m: int) -> list[Op]:
    """Warm-up forwards, then one forward / one backward, then the remaining backwards."""
    warmup = min(pp - rank - 1, m)
    ops: list[Op] = [("F", i, rank) for i in range(warmup)]
    for j in range(m - warmup):
        ops += [("F", warmup + j, rank), ("B", j, rank)]
    ops += [("B", i, rank) for i in range(m - warmup, m)]
    return ops


def interleaved(rank: int, pp: int, m: int, v: int) -> list[Op]:
    """Megatron-LM's interleaved 1F1B with v model chunks per rank (m a multiple of pp)."""
    total = m * v

    def chunk_of(k: int, forward: bool) -> int:
        local = (k // pp) % v
        local = local if forward else v - 1 - local
        return local * pp + rank

    def micro_of(k: int) -> int:
        return (k // (pp * v)) * pp + k % pp

    warmup = total if m == pp else min((pp - rank - 1) * 2 + (v - 1) * pp, total)
    ops: list[Op] = [("F", micro_of(k), chunk_of(k, True)) for k in range(warmup)]
    for j in range(total - warmup):
        k = warmup + j
        ops += [("F", micro_of(k), chunk_of(k, True)), ("B", micro_of(j), chunk_of(j, False))]
    ops += [("B", micro_of(j), chunk_of(j, False)) for j in range(total - warmup, total)]
    return ops


def schedule(name: str, rank: int, pp: int, m: int, v: int = 1) -> list[Op]:
    if name == "gpipe":
        return gpipe(rank, pp, m)
    if name == "1f1b":
        return one_f_one_b(rank, pp, m)
    if name == "interleaved":
        return interleaved(rank, pp, m, v)
    raise ValueError(f"unknown schedule {name!r}")
