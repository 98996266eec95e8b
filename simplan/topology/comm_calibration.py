"""Calibrated constants of the collective cost model, and bench-comm calibration files.

The constants live in `collective_constants.json` next to this module. That file is written by
`benchmarks/calibrate_collectives.py`, which derives every value from the reference CSVs and
records where it came from; tests re-derive it and compare. Never edit the numbers by hand.

Per link class ('nvlink', 'pcie', 'network', 'loopback'):
  latency_s   the time of one algorithm step over a link of that class (software + wire);
  efficiency  the fraction of the link's line rate that a collective achieves.
For GPU groups every collective also pays `launch_s` once and a local memory term
`memory_passes * nbytes / memory_bandwidth` (reading, reducing and writing the buffers).
"""

from __future__ import annotations

import bisect
import dataclasses
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from simplan.errors import SimplanError
from simplan.io import read_versioned_json
from simplan.limits import MAX_DEVICES
from simplan.schema import Anything, Float, Int, ListOf, MapOf, Spec, Str, Table, validate

CONSTANTS_FILE = Path(__file__).parent / "collective_constants.json"
CONSTANTS_KIND = "collective-constants"
BENCH_KIND = "collective-calibration"
SCHEMA_VERSION = 1
LINK_CLASSES = ("nvlink", "pcie", "network", "loopback")
# Where `simplan bench-comm --backend gloo` writes without --out, and where `simplan validate`
# reads (the localhost-cpu preset names the 2-rank file): one place for both.
LOCAL_CALIBRATION_DIR = Path("traces/collectives/localhost-cpu")


def local_calibration_path(nprocs: int, backend: str = "gloo") -> Path:
    """The default calibration of `nprocs` local ranks (relative to the working directory)."""
    return LOCAL_CALIBRATION_DIR / f"{backend}-{nprocs}ranks.json"


_SECONDS = Float(min=0.0, max=1e6)
_PER_BYTE = Float(min=0.0, max=1.0)
_FIT = Table(
    {"alpha_s": _SECONDS, "beta_s_per_byte": Float(min=0.0, min_open=True, max=1.0)},
    required=("alpha_s", "beta_s_per_byte"),
    open=True,
    fix="run `simplan bench-comm` again",
)


def _costs(**fields: Spec) -> Table:
    return Table(fields, open=True)


BENCH_DOCUMENT = Table(
    {
        "schema": Anything(),
        "metadata": Table(
            {"nprocs": Int(min=2, max=MAX_DEVICES)},
            required=("nprocs",),
            open=True,
            fix="run `simplan bench-comm` again",
        ),
        "fit": _FIT,
        "fits": MapOf(_FIT),
        "measurements": ListOf(
            Table(
                {"op": Str(), "size_B": Float(min=0.0, max=1e15), "median_s": _SECONDS},
                required=("op", "size_B", "median_s"),
                open=True,
            )
        ),
        "framework": Table(
            {
                "method": Str(max_len=1 << 16),
                "ddp": _costs(
                    step_s=_SECONDS,
                    bucket_s=_SECONDS,
                    s_per_byte=_PER_BYTE,
                    sync_points=ListOf(ListOf(Float(min=0.0, max=1e15), min_len=2, max_len=2)),
                ),
                "fsdp": _costs(step_s=_SECONDS, collective_s=_SECONDS, s_per_byte=_PER_BYTE),
                "tp": _costs(
                    step_s=_SECONDS,
                    collective_s=_SECONDS,
                    s_per_byte=_PER_BYTE,
                    optimizer_step_s=_SECONDS,
                    optimizer_tensor_s=_SECONDS,
                ),
                "pp": _costs(step_s=_SECONDS, action_s=_SECONDS),
            },
            open=True,
        ),
    },
    required=("schema", "metadata", "fit"),
    fix="run `simplan bench-comm` again",
)


@dataclass(frozen=True, kw_only=True)
class LinkClass:
    latency_s: float
    efficiency: float
    source: str = ""

    def __post_init__(self) -> None:
        if self.latency_s < 0:
            raise ValueError("latency_s must be >= 0")
        if not 0 < self.efficiency <= 1.5:
            raise ValueError("efficiency must be in (0, 1.5]")


@dataclass(frozen=True, kw_only=True)
class CollectiveConstants:
    """The constants of the alpha-beta model (see the module docstring)."""

    launch_s: float
    memory_passes: float
    tree_efficiency: float
    links: dict[str, LinkClass]
    sources: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [c for c in LINK_CLASSES if c not in self.links]
        if missing:
            raise ValueError(f"links: missing link class(es) {missing}")
        if self.launch_s < 0 or self.memory_passes < 0:
            raise ValueError("launch_s and memory_passes must be >= 0")
        if not 0 < self.tree_efficiency <= 1:
            raise ValueError("tree_efficiency must be in (0, 1]")

    def link(self, kind: str) -> LinkClass:
        return self.links[kind]

    def with_link(self, kind: str, **changes: Any) -> CollectiveConstants:
        links = dict(self.links)
        links[kind] = dataclasses.replace(links[kind], **changes)
        return dataclasses.replace(self, links=links)

    def to_dict(self) -> dict[str, Any]:
        return {
            "launch_s": {"value": self.launch_s, "source": self.sources.get("launch_s", "")},
            "memory_passes": {
                "value": self.memory_passes,
                "source": self.sources.get("memory_passes", ""),
            },
            "tree_efficiency": {
                "value": self.tree_efficiency,
                "source": self.sources.get("tree_efficiency", ""),
            },
            "links": {k: dataclasses.asdict(v) for k, v in self.links.items()},
        }

    @staticmethod
    def from_dict(data: dict[str, Any]) -> CollectiveConstants:
        return CollectiveConstants(
            launch_s=float(data["launch_s"]["value"]),
            memory_passes=float(data["memory_passes"]["value"]),
            tree_efficiency=float(data["tree_efficiency"]["value"]),
            links={k: LinkClass(**v) for k, v in data["links"].items()},
            sources={
                k: data[k]["source"] for k in ("launch_s", "memory_passes", "tree_efficiency")
            },
        )


@cache
def default_constants() -> CollectiveConstants:
    """The constants written by benchmarks/calibrate_collectives.py."""
    data = read_versioned_json(CONSTANTS_FILE, CONSTANTS_KIND, SCHEMA_VERSION)
    return CollectiveConstants.from_dict(data["constants"])


def constants_document(constants: CollectiveConstants, notes: str) -> dict[str, Any]:
    return {
        "schema": {"kind": CONSTANTS_KIND, "version": SCHEMA_VERSION},
        "notes": notes,
        "constants": constants.to_dict(),
    }


# ---------------------------------------------------------------- bench-comm files


Points = tuple[tuple[float, float], ...]  # (size_B, seconds), ascending sizes


def _check_points(points: Points, what: str) -> None:
    sizes = [n for n, _ in points]
    if sizes != sorted(set(sizes)) or any(n <= 0 or t < 0 for n, t in points):
        raise ValueError(f"{what} need distinct sizes > 0, ascending, times >= 0")


def _beyond_first(points: Points, nbytes: float) -> float:
    """Linear interpolation in `points` for nbytes above the first size (two points or more);
    the last segment's slope above the largest."""
    k = min(bisect.bisect_left(points, (nbytes,)), len(points) - 1)  # the segment's upper end
    (n0, t0), (n1, t1) = points[k - 1], points[k]
    return t0 + (t1 - t0) * (nbytes - n0) / (n1 - n0)


@dataclass(frozen=True, kw_only=True)
class OpFit:
    """A measured collective (nccl-tests sizes): t = alpha_s + beta_s_per_byte * nbytes, or,
    where the file has them, its measured medians `points` (size_B, median_s), interpolated
    linearly between the measured sizes and continued with beta_s_per_byte below the smallest
    and the last segment's slope above the largest (the medians bend: caches, copies)."""

    alpha_s: float
    beta_s_per_byte: float
    points: Points = ()

    def __post_init__(self) -> None:
        if self.alpha_s < 0 or self.beta_s_per_byte <= 0:
            raise ValueError("an op fit needs alpha_s >= 0 and beta_s_per_byte > 0")
        _check_points(self.points, "measured points")
        if any(t <= 0 for _, t in self.points):
            raise ValueError("measured points need times > 0")

    def time_s(self, nbytes: float) -> float:
        pts = self.points
        if len(pts) < 2:
            return self.alpha_s + self.beta_s_per_byte * nbytes
        if nbytes <= pts[0][0]:
            return max(pts[0][1] - self.beta_s_per_byte * (pts[0][0] - nbytes), self.alpha_s)
        return _beyond_first(pts, nbytes)


_NOT_SCALAR = ("source", "ddp_sync_points")


@dataclass(frozen=True, kw_only=True)
class FrameworkCosts:
    """What torch.distributed's wrappers add to their raw collectives (measured by bench-comm's
    probes, simplan.topology.probes); all zero where nothing was measured.

    ddp_step_s: once per gradient synchronisation (the reducer's set-up, finalize and wait).
    ddp_bucket_s, ddp_s_per_byte: per DDP bucket, plus per byte of it (copy-in/copy-out).
    ddp_sync_points: where measured, what one gradient synchronisation adds as a function of
        the bytes it syncs, (size_B, extra_s) ascending: interpolated linearly, flat below the
        smallest size, the last segment's slope above the largest. It replaces the three terms
        above (its copies' cost per byte bends where the buffers outgrow the caches).
    fsdp_step_s: once per FSDP2 forward+backward (the root's pre-forward and final callback).
    fsdp_collective_s, fsdp_s_per_byte: per FSDP2 all-gather or reduce-scatter of a unit, plus
        per byte of the unit (copy-in/copy-out of the flat buffers).
    tp_step_s: once per DTensor tensor-parallel forward+backward of a micro-batch.
    tp_collective_s: per tensor-parallel collective (the sharded module's DTensor dispatch,
        redistribute and wait); tp_s_per_byte: per byte of it (DTensor's copies).
    tp_optimizer_step_s, tp_optimizer_tensor_s: what an Adam step over DTensor parameters adds
        per step, and per parameter tensor of the tensor-parallel layers.
    pp_step_s: once per step on every pipeline rank (torch.distributed.pipelining's schedule:
        splitting the batch, building its actions, merging the losses).
    pp_action_s: per send or receive a pipeline stage issues (its P2POp, batched isend/irecv
        and wait), on the rank's compute stream.
    source: where the numbers came from.
    """

    ddp_step_s: float = 0.0
    ddp_bucket_s: float = 0.0
    ddp_s_per_byte: float = 0.0
    ddp_sync_points: Points = ()
    fsdp_step_s: float = 0.0
    fsdp_collective_s: float = 0.0
    fsdp_s_per_byte: float = 0.0
    tp_step_s: float = 0.0
    tp_collective_s: float = 0.0
    tp_s_per_byte: float = 0.0
    tp_optimizer_step_s: float = 0.0
    tp_optimizer_tensor_s: float = 0.0
    pp_step_s: float = 0.0
    pp_action_s: float = 0.0
    source: str = ""

    def __post_init__(self) -> None:
        scalars = [f.name for f in dataclasses.fields(self) if f.name not in _NOT_SCALAR]
        negative = [n for n in scalars if getattr(self, n) < 0]
        if negative:
            raise ValueError(f"framework costs must be >= 0: {', '.join(negative)}")
        _check_points(self.ddp_sync_points, "ddp_sync_points")

    def ddp_bucket_cost_s(self, nbytes: float) -> float:
        """Per bucket (0 where ddp_sync_points price the whole synchronisation)."""
        if self.ddp_sync_points:
            return 0.0
        return self.ddp_bucket_s + self.ddp_s_per_byte * nbytes

    def ddp_sync_cost_s(self, nbytes: float) -> float:
        """Once per gradient synchronisation of `nbytes`, besides the per-bucket costs."""
        pts = self.ddp_sync_points
        if not pts:
            return self.ddp_step_s
        if nbytes <= pts[0][0] or len(pts) == 1:
            return pts[0][1] if nbytes <= pts[0][0] else pts[-1][1]
        return max(_beyond_first(pts, nbytes), 0.0)

    def fsdp_collective_cost_s(self, nbytes: float) -> float:
        return self.fsdp_collective_s + self.fsdp_s_per_byte * nbytes


NO_FRAMEWORK_COSTS = FrameworkCosts()


@dataclass(frozen=True, kw_only=True)
class LinkCalibration:
    """What a bench-comm file says about the fabric it ran on (an all-reduce fit
    t = alpha_s + beta_s_per_byte * nbytes with `nprocs` ranks, read as a ring), the fits of the
    other ops it measured, and the framework costs of its probes."""

    path: str
    nprocs: int
    alpha_s: float
    beta_s_per_byte: float
    op_fits: dict[str, OpFit] = field(default_factory=dict)
    framework: FrameworkCosts = NO_FRAMEWORK_COSTS

    @property
    def step_latency_s(self) -> float:
        return self.alpha_s / (2 * (self.nprocs - 1))

    @property
    def link_bandwidth_Bps(self) -> float:
        return 2 * (self.nprocs - 1) / self.nprocs / self.beta_s_per_byte


def read_link_calibration(path: str | Path) -> LinkCalibration:
    """Read a bench-comm calibration file (one-line SimplanError if it is not one)."""
    p = Path(path)
    if not p.is_file():
        raise SimplanError(
            f"calibration = {str(path)!r}: no such file; run `simplan bench-comm` or fix the path"
        )
    data = read_versioned_json(p, BENCH_KIND, SCHEMA_VERSION)
    data = validate(data, BENCH_DOCUMENT, origin=str(p))
    fit = data["fit"]
    try:
        cal = LinkCalibration(
            path=str(p),
            nprocs=int(data["metadata"]["nprocs"]),
            alpha_s=float(fit["alpha_s"]),
            beta_s_per_byte=float(fit["beta_s_per_byte"]),
            op_fits=op_fits(data.get("fits", {}), data.get("measurements", [])),
            framework=framework_costs(data.get("framework", {}), f"{p} ({_when(data)})"),
        )
    except KeyError as exc:
        raise SimplanError(f"{p}: calibration field {exc} is missing") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise SimplanError(f"{p}: malformed calibration: {' '.join(str(exc).split())}") from None
    if cal.nprocs < 2 or cal.beta_s_per_byte <= 0 or cal.alpha_s < 0:
        raise SimplanError(f"{p}: fit needs nprocs >= 2, beta_s_per_byte > 0, alpha_s >= 0")
    return cal


def _when(data: dict[str, Any]) -> str:
    meta = data.get("metadata", {})
    return f"measured {meta.get('date', '?')}, torch {meta.get('torch', '?')}"


def op_fits(fits: dict[str, Any], measurements: list[dict[str, Any]]) -> dict[str, OpFit]:
    """Each fitted op with its measured medians (a bench-comm file's 'fits' and rows)."""
    return {
        op: OpFit(
            alpha_s=float(f["alpha_s"]),
            beta_s_per_byte=float(f["beta_s_per_byte"]),
            points=tuple(
                sorted(
                    (float(m["size_B"]), float(m["median_s"]))
                    for m in measurements
                    if m.get("op") == op
                )
            ),
        )
        for op, f in fits.items()
    }


def framework_costs(data: dict[str, Any], source: str) -> FrameworkCosts:
    """FrameworkCosts from a calibration file's "framework" section (absent parts: zero)."""
    if not data:
        return NO_FRAMEWORK_COSTS
    ddp, fsdp, tp = data.get("ddp", {}), data.get("fsdp", {}), data.get("tp", {})
    pp = data.get("pp", {})
    return FrameworkCosts(
        ddp_step_s=float(ddp.get("step_s", 0.0)),
        ddp_bucket_s=float(ddp.get("bucket_s", 0.0)),
        ddp_s_per_byte=float(ddp.get("s_per_byte", 0.0)),
        ddp_sync_points=tuple((float(n), float(t)) for n, t in ddp.get("sync_points", [])),
        fsdp_step_s=float(fsdp.get("step_s", 0.0)),
        fsdp_collective_s=float(fsdp.get("collective_s", 0.0)),
        fsdp_s_per_byte=float(fsdp.get("s_per_byte", 0.0)),
        tp_step_s=float(tp.get("step_s", 0.0)),
        tp_collective_s=float(tp.get("collective_s", 0.0)),
        tp_s_per_byte=float(tp.get("s_per_byte", 0.0)),
        tp_optimizer_step_s=float(tp.get("optimizer_step_s", 0.0)),
        tp_optimizer_tensor_s=float(tp.get("optimizer_tensor_s", 0.0)),
        pp_step_s=float(pp.get("step_s", 0.0)),
        pp_action_s=float(pp.get("action_s", 0.0)),
        source=source,
    )


def bench_document(
    metadata: dict[str, Any],
    fit: dict[str, Any],
    measurements: list[dict[str, Any]],
    *,
    fits: dict[str, dict[str, Any]] | None = None,
    framework: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """fit: the all-reduce fit (read as the links' latency and bandwidth); fits: one fit per
    measured op; framework: the probes' framework costs (simplan.topology.probes)."""
    doc = {
        "schema": {"kind": BENCH_KIND, "version": SCHEMA_VERSION},
        "metadata": metadata,
        "fit": fit,
        "measurements": measurements,
    }
    if fits:
        doc["fits"] = fits
    if framework:
        doc["framework"] = framework
    return doc


def dumps(data: Any) -> str:
    return json.dumps(data, indent=1)


# The hardware behind simplan/data/reference/collective_bandwidth_measurements.csv's "4 nodes x 8
# B200" rows, as a cluster spec: the network constants are fitted on it and checked against it.
B200_4X8_SPEC: dict[str, object] = {
    "name": "b200-4x8",
    "node_group": [
        {
            "name": "b200",
            "count": 4,
            "devices_per_node": 8,
            "device": {
                "name": "b200",
                "peak_tflops": 2250,
                "memory_gib": 180,
                "memory_bandwidth_gbps": 8000,
            },
            "fabric": {"kind": "nvswitch", "bandwidth_GBps": 900},
            "nics": {"count": 8, "bandwidth_Gbps": 400},
        }
    ],
    "network": {"kind": "single-switch"},
}
