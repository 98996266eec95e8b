"""Cluster topology: specs, the networkx graph, and collective communication costs.

from simplan.topology import load_cluster
cluster = load_cluster("dgx-a100", nodes=4)
cluster.collective_time("all_reduce", 256 * 2**20, range(32))   # seconds
"""

from __future__ import annotations

from simplan.topology.cluster import Cluster, load_cluster
from simplan.topology.cluster_spec import ClusterSpec, preset_names

__all__ = ["Cluster", "ClusterSpec", "load_cluster", "preset_names"]
