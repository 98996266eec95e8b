"""`simplan clusters`: list cluster presets; `simplan clusters show`: describe and draw one."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from simplan.commands import add_verb
from simplan.commands.argtypes import GPUS_PER_NODE, NODES
from simplan.units import MiB

if TYPE_CHECKING:
    from simplan.topology import Cluster

HELP = """\
List the cluster presets, or describe one cluster (a preset or a TOML file, see
docs/cluster-spec.md): its node groups, devices, links and their bandwidths, and what common
collectives cost on it. --plot draws the topology graph as a PNG.

examples:
  simplan clusters                                   one line per preset
  simplan clusters show dgx-a100                     one DGX A100 node
  simplan clusters show dgx-a100 --nodes 128         1,024 GPUs on a rail-optimized fabric
  simplan clusters show dgx-h100 --gpus-per-node 4   a job that uses 4 of each node's 8 GPUs
  simplan clusters show my-cluster.toml --plot topo.png
  simplan clusters show mixed-a100-h100 --json
"""

SHOW_HELP = """\
Describe a cluster: devices, links with their bandwidths, and the predicted time of a few
collectives (all-reduce inside one node, across all devices, and along a rail).

examples:
  simplan clusters show dgx-a100 --nodes 4
  simplan clusters show pcie-a100 --plot pcie.png
  simplan clusters show cluster.toml --json
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_verb(subparsers, "clusters", "list cluster presets, or show one", HELP)
    p.set_defaults(func=run_list)
    sub = p.add_subparsers(dest="clusters_command", metavar="show", parser_class=type(p))
    s = add_verb(sub, "show", "describe (and draw) one cluster", SHOW_HELP)
    s.add_argument("cluster", metavar="NAME|FILE", help="a preset name or a cluster TOML file")
    s.add_argument("--nodes", type=NODES, default=None, help="scale to N nodes")
    s.add_argument(
        "--gpus-per-node",
        type=GPUS_PER_NODE,
        default=None,
        help="use only the first G devices of every node",
    )
    s.add_argument("--plot", metavar="FILE.png", default=None, help="draw the topology")
    s.add_argument("--json", action="store_true", help="print JSON instead of text")
    s.set_defaults(func=run_show)


def run_list(args: argparse.Namespace) -> int:
    from simplan.io import read_toml
    from simplan.topology.cluster_spec import PRESET_DIR, preset_names

    print(f"{'preset':16s} {'nodes':>5s} {'devices':>7s}  {'devices and fabric':34s} network")
    for name in preset_names():
        raw = read_toml(PRESET_DIR / f"{name}.toml")
        groups = raw.get("node_group", [])
        nodes = sum(int(g.get("count", 1)) for g in groups)
        devices = sum(int(g.get("count", 1)) * int(g.get("devices_per_node", 1)) for g in groups)
        fabric = " + ".join(
            f"{_device_name(g)} {g.get('fabric', {}).get('kind', 'loopback')}" for g in groups
        )
        network = raw.get("network", {}).get("kind", "single-switch")
        print(f"{name:16s} {nodes:5d} {devices:7d}  {fabric:34s} {network}")
    print("\nsimplan clusters show NAME [--nodes N] [--gpus-per-node G] [--plot FILE.png]")
    return 0


def _device_name(group: dict[str, object]) -> str:
    device = group.get("device", "?")
    return str(device.get("name", "custom")) if isinstance(device, dict) else str(device)


def run_show(args: argparse.Namespace) -> int:
    from simplan.topology import load_cluster
    from simplan.topology.plot import plot_cluster

    if args.plot:
        from simplan.outputs import check_output_file

        check_output_file(args.plot, "--plot")
    cluster = load_cluster(args.cluster, nodes=args.nodes, gpus_per_node=args.gpus_per_node)
    summary = cluster.summary()
    summary["examples"] = _examples(cluster)
    if args.plot:
        summary["plot"] = str(plot_cluster(cluster, args.plot))
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    _print_summary(cluster, summary)
    return 0


def _examples(cluster: Cluster) -> list[dict[str, object]]:
    out = []
    size = 256 * MiB
    groups = [("one node", cluster.node_devices(0)), ("all devices", range(cluster.num_devices))]
    if cluster.nodes > 1:
        groups.append(("rail 0 (one device per node)", cluster.rail_devices(0)))
    for label, devices in groups:
        devices = tuple(devices)
        if len(devices) < 2:
            continue
        t = cluster.collective_time("all_reduce", size, devices)
        n = len(devices)
        out.append(
            {
                "group": label,
                "ranks": n,
                "op": "all_reduce",
                "nbytes": size,
                "algorithm": cluster.algorithm("all_reduce", size, devices),
                "time_s": t,
                "busbw_GBps": 2 * (n - 1) / n * size / t / 1e9,
            }
        )
    return out


def _print_summary(cluster: Cluster, summary: dict[str, Any]) -> None:
    spec = cluster.spec
    print(
        f"{cluster.name}: {cluster.nodes} node(s), {cluster.num_devices} device(s), "
        f"network {spec.network.kind}"
    )
    if spec.description:
        print(f"  {spec.description}")
    for g in spec.groups:
        d = g.device
        print(
            f"  group {g.name}: {g.count} x {g.devices_per_node} {d.name} "
            f"({d.memory_bytes / 2**30:.0f} GiB, {d.memory_bandwidth_Bps / 1e9:.0f} GB/s), "
            f"fabric {g.fabric.kind} {g.fabric.bandwidth_Bps / 1e9:g} GB/s per device, "
            f"{g.nics.count} NIC(s) x {g.nics.bandwidth_Bps * 8 / 1e9:g} Gb/s"
        )
    print(f"  graph: {summary['vertices']} vertices, {summary['links']} links")
    kinds: dict[str, list] = {}
    for link in cluster.links.values():
        kinds.setdefault(link.kind, []).append(link)
    for kind, links in sorted(kinds.items()):
        bws = ", ".join(f"{b / 1e9:g}" for b in sorted({x.bandwidth_Bps for x in links}))
        lat = ", ".join(f"{t * 1e6:.2f}" for t in sorted({x.latency_s for x in links}))
        eff = ", ".join(f"{e:.3f}" for e in sorted({x.efficiency for x in links}))
        print(
            f"  {kind:9s} {len(links):5d} links, {bws} GB/s per direction "
            f"(efficiency {eff}, step latency {lat} us)"
        )
    if cluster.calibration:
        cal = cluster.calibration
        print(
            f"  calibrated from {cal.path}: {cal.link_bandwidth_Bps / 1e9:.3f} GB/s, "
            f"step latency {cal.step_latency_s * 1e6:.1f} us"
        )
    for ex in summary["examples"]:
        print(
            f"  all_reduce 256 MiB over {ex['group']} ({ex['ranks']} ranks): "
            f"{ex['time_s'] * 1e3:.3f} ms, {ex['algorithm']}, busbw {ex['busbw_GBps']:.1f} GB/s"
        )
    if "plot" in summary:
        print(f"  wrote {summary['plot']}")
