from __future__ import annotations

import math
from itertools import permutations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simplan.errors import SimplanError
from simplan.topology import load_cluster
from simplan.topology.collectives import OPS, bytes_factor
from simplan.units import KiB, MiB

SIZES = (64 * KiB, 4 * MiB, 256 * MiB)


def _groups(cluster) -> list[tuple[int, ...]]:  # type: ignore[no-untyped-def]
    n = cluster.num_devices
    return [
        tuple(range(8)),
        tuple(range(n)),
        cluster.rail_devices(0),
        (0, 1, 8),  # ragged: two devices on node 0, one on node 1
        (3, 12, 21, 30),  # one device per node, different rails
    ]


@pytest.mark.parametrize("n", [2, 4, 8])
def test_ring_all_reduce_moves_2_n_minus_1_over_n(n: int) -> None:
    cluster = load_cluster("dgx-a100")
    size = 128 * MiB
    plan = cluster.collective_plan("all_reduce", size, range(n))
    assert plan.algorithm == "ring"
    (phase,) = plan.phases
    assert phase.bytes_per_rank == pytest.approx(2 * (n - 1) / n * size)
    assert phase.steps == 2 * (n - 1)
    for i in range(n):  # every GPU sends exactly that much into the switch
        assert phase.channel_bytes[f"n0.g{i}>n0.nvswitch"] == pytest.approx(phase.bytes_per_rank)
    link = cluster.link("n0.g0--n0.nvswitch")
    wire = phase.time_s - phase.latency_s - phase.bytes_per_rank / link.effective_bandwidth_Bps
    c = cluster.constants
    assert wire == pytest.approx(c.memory_passes * size / 2.039e12)  # the local memory term
    assert plan.time_s == pytest.approx(cluster.collective_time("all_reduce", size, range(n)))


def test_bytes_factors() -> None:
    assert bytes_factor("all_reduce", 8) == pytest.approx(1.75)
    assert bytes_factor("reduce_scatter", 8) == bytes_factor("all_gather", 8) == 0.875


def test_doubling_bandwidth_never_slows_anything() -> None:
    base = load_cluster("dgx-a100", nodes=4)
    faster = [
        base.with_bandwidth(2.0, kinds=["network"]),
        base.with_bandwidth(2.0, kinds=["nvlink"]),
        base.with_bandwidth(2.0, links=["n0.g0--n0.nvswitch"]),
        base.with_bandwidth(2.0, links=["n0.nic0--rail0", "n1.nic0--rail0"]),
    ]
    for fast in faster:
        for op in OPS:
            for group in _groups(base):
                devices = group[:2] if op == "p2p" else group
                for size in SIZES:
                    slow_t = base.collective_time(op, size, devices)
                    fast_t = fast.collective_time(op, size, devices)
                    assert fast_t <= slow_t * (1 + 1e-12), (op, group, size)


def test_doubling_a_crossed_link_speeds_up_large_collectives() -> None:
    base = load_cluster("dgx-a100", nodes=4)
    size = 1024 * MiB
    inside = base.with_bandwidth(2.0, kinds=["nvlink"])
    assert inside.collective_time("all_reduce", size, range(8)) < 0.7 * base.collective_time(
        "all_reduce", size, range(8)
    )
    rail = base.rail_devices(0)
    net = base.with_bandwidth(2.0, kinds=["network"])
    assert net.collective_time("all_reduce", size, rail) < 0.6 * base.collective_time(
        "all_reduce", size, rail
    )
    # the links a transfer crosses: doubling them all nearly halves a large transfer
    path = base.with_bandwidth(2.0, links=base.transfer_links(0, 8))
    assert path.transfer_time(0, 8, size) < 0.6 * base.transfer_time(0, 8, size)


def test_spanning_two_nodes_is_slower_than_one_node() -> None:
    cluster = load_cluster("dgx-a100", nodes=2)
    size = 512 * MiB
    inside = cluster.collective_time("all_reduce", size, range(8))
    across = cluster.collective_time("all_reduce", size, (0, 1, 2, 3, 8, 9, 10, 11))
    assert across > 1.5 * inside
    assert cluster.collective_time("all_reduce", size, range(16)) > inside


def test_inside_one_node_the_rule_says_ring() -> None:
    cluster = load_cluster("dgx-h100")
    for size in (1 * KiB, 1 * MiB, 1024 * MiB):
        assert cluster.algorithm("all_reduce", size, range(8)) == "ring"


def _crossover(cluster, devices) -> float:  # type: ignore[no-untyped-def]
    """The size where the tree stops being the fastest (bisection in log space)."""
    lo, hi = 1.0 * KiB, 16.0 * 1024 * MiB
    assert cluster.algorithm("all_reduce", lo, devices) == "tree"
    assert cluster.algorithm("all_reduce", hi, devices) != "tree"
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if cluster.algorithm("all_reduce", mid, devices) == "tree" else (lo, mid)
    return hi


def test_algorithm_flips_from_tree_to_ring_where_the_rule_says() -> None:
    crossings = []
    for nodes in (4, 16, 64):
        cluster = load_cluster("dgx-a100", nodes=nodes)
        devices = range(cluster.num_devices)
        s_star = _crossover(cluster, devices)
        below = cluster.algorithm_times("all_reduce", s_star * 0.99, devices)
        above = cluster.algorithm_times("all_reduce", s_star * 1.01, devices)
        assert min(below, key=below.get) == "tree"
        assert min(above, key=above.get) in ("ring", "hierarchical")
        # the rule's closed form for tree vs ring gives the same size when ring is the winner
        ring = cluster.collective_plan("all_reduce", 1.0, devices, algorithm="ring").phases[0]
        tree = cluster.collective_plan("all_reduce", 1.0, devices, algorithm="tree").phases[0]
        n = cluster.num_devices
        b = (ring.time_s - ring.latency_s) / ring.bytes_per_rank
        closed = (ring.latency_s - tree.latency_s) / (
            b * (2 / cluster.constants.tree_efficiency - 2 * (n - 1) / n)
        )
        if min(above, key=above.get) == "ring":
            assert s_star == pytest.approx(closed, rel=1e-3)
        crossings.append(s_star)
    assert crossings == sorted(crossings)  # the crossover grows with the node count


# the least each rank must send or receive, as a fraction of the per-rank buffer, in a group of n
MIN_TRAFFIC = {
    "all_reduce": lambda n: 2 * (n - 1) / n,
    "reduce_scatter": lambda n: (n - 1) / n,
    "all_gather": lambda n: (n - 1) / n,
    "all_to_all": lambda n: (n - 1) / n,
    "broadcast": lambda n: 1.0,  # every receiver gets the whole buffer
}


def test_any_group_works() -> None:
    """Every op on every kind of group (a node, all nodes, a rail, ragged, one device per
    node) takes at least its least traffic per rank at the group's fastest route."""
    cluster = load_cluster("dgx-a100", nodes=4)
    size = 8 * MiB
    for group in _groups(cluster):
        fastest = max(cluster.bottleneck_bandwidth(a, b) for a, b in permutations(group, 2))
        for op, traffic in MIN_TRAFFIC.items():
            bound = traffic(len(group)) * size / fastest
            assert cluster.collective_time(op, size, group) >= bound, (op, group)
    assert cluster.algorithm("all_reduce", 1024 * MiB, (0, 1, 8)) in ("ring", "tree")


def test_p2p_is_latency_plus_bytes_over_bottleneck() -> None:
    cluster = load_cluster("dgx-a100", nodes=2)
    size = 64 * MiB
    expected = (
        cluster.constants.launch_s
        + cluster.constants.link("network").latency_s
        + size / cluster.bottleneck_bandwidth(0, 8)
    )
    assert cluster.transfer_time(0, 8, size) == pytest.approx(expected)
    assert cluster.transfer_time(3, 3, size) == 0.0


def test_bad_groups_are_user_errors() -> None:
    cluster = load_cluster("dgx-a100")
    with pytest.raises(SimplanError, match="does not exist"):
        cluster.collective_time("all_reduce", 1.0, [0, 99])
    with pytest.raises(SimplanError, match="repeats"):
        cluster.collective_time("all_reduce", 1.0, [0, 0])
    with pytest.raises(SimplanError, match="unknown collective"):
        cluster.collective_time("allreduce", 1.0, [0, 1])
    assert cluster.collective_time("all_reduce", 1.0, [5]) == 0.0


_BASE = load_cluster("dgx-a100", nodes=4)
_LINKS = sorted(_BASE.links)


@settings(max_examples=40, deadline=None)
@given(
    group=st.lists(st.integers(0, 31), min_size=2, max_size=12, unique=True),
    op=st.sampled_from(OPS),
    size=st.sampled_from(SIZES),
    link=st.sampled_from(_LINKS),
)
def test_doubling_any_single_link_never_slows_any_collective(
    group: list[int], op: str, size: int, link: str
) -> None:
    devices = group[:2] if op == "p2p" else group
    fast = _BASE.with_bandwidth(2.0, links=[link])
    assert fast.collective_time(op, size, devices) <= _BASE.collective_time(op, size, devices) * (
        1 + 1e-12
    )
