from __future__ import annotations

import itertools
import random

import pytest

from simplan.planner.layouts import layouts, node_classes
from simplan.planner.nodes import _solve, order_nodes
from simplan.topology import load_cluster


@pytest.mark.parametrize("seed", range(4))
def test_node_order_ilp_equals_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    n = 6
    cost = [[0.0 if a == b else rng.uniform(1, 5) for b in range(n)] for a in range(n)]
    cost = [[max(cost[a][b], cost[b][a]) for b in range(n)] for a in range(n)]
    order, record = _solve(tuple(range(n)), cost, 5.0)
    best = min(
        sum(cost[a][b] for a, b in itertools.pairwise((0, *rest)))
        for rest in itertools.permutations(range(1, n))
    )
    assert record.sol_status == 1
    assert record.objective == pytest.approx(best)
    assert sorted(order) == list(range(n)) and order[0] == 0


def test_uniform_fabric_keeps_the_natural_order_without_a_solve() -> None:
    cluster = load_cluster("dgx-a100", nodes=4)
    assert order_nodes(cluster, (0, 1, 2, 3)) == ((0, 1, 2, 3), None)


def test_mixed_cluster_layouts_cover_both_class_orders() -> None:
    cluster = load_cluster("mixed-a100-h100")
    assert [name for name, _ in node_classes(cluster)] == ["a100-80gb", "h100-sxm"]
    labels = {lay.label for lay in layouts(cluster, 1, 8, 2)}
    assert labels == {"1 a100-80gb + 1 h100-sxm nodes", "1 h100-sxm + 1 a100-80gb nodes"}
    one_node = {lay.label for lay in layouts(cluster, 1, 8, 1)}
    assert one_node == {"1 a100-80gb node", "1 h100-sxm node"}


def test_tp_groups_stay_inside_a_node() -> None:
    cluster = load_cluster("dgx-a100", nodes=4)
    for layout in layouts(cluster, 4, 4, 2):
        for s in range(2):
            nodes = {cluster.devices[d].node for d in layout.tp_group(s)}
            assert len(nodes) == 1
