"""A generated corpus of bad and extreme FILE inputs, each fed to the verb that reads it.

Every bad input (a valid file with one field dropped, mistyped, out of range, not finite or
misspelled; or a file that is empty, truncated, binary, not UTF-8, or JSON of the wrong shape)
must end with status 2, exactly one line on stderr, no traceback and no output file. Valid
extremes (one layer, batch 1, a 1T-parameter model, a 1M-token sequence) must succeed.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simplan.cli import main
from tests.helpers import ROOT, assert_one_line_error, mlp_profile_with, run_cli

# ------------------------------------------------------------------ valid documents

MODEL = {
    "model": {"description": "a small GPT"},
    "transformer": {
        "hidden_size": 64,
        "num_layers": 2,
        "num_heads": 4,
        "seq_len": 32,
        "vocab_size": 128,
        "ffn_hidden_size": 256,
        "num_kv_heads": 2,
        "activation": "swiglu",
        "tie_embeddings": False,
        "norm": "rmsnorm",
        "position": "rope",
        "bias": False,
        "attention": "flash",
        "dropout": 0.1,
    },
}

CLUSTER = {
    "name": "fuzz",
    "description": "two nodes",
    "node_group": [
        {
            "name": "g",
            "count": 2,
            "devices_per_node": 4,
            "device": {
                "name": "x",
                "peak_tflops": 100,
                "memory_gib": 40,
                "memory_bandwidth_gbps": 2000,
            },
            "fabric": {"kind": "nvswitch", "bandwidth_GBps": 300, "latency_us": 2.0},
            "nics": {"count": 4, "bandwidth_Gbps": 200, "latency_us": 5.0},
        }
    ],
    "network": {
        "kind": "leaf-spine",
        "oversubscription": 2.0,
        "nodes_per_leaf": 1,
        "spines": 2,
        "latency_us": 1.0,
    },
}

PLAN = {
    "schema": {"kind": "plan", "version": 1},
    "model": "mlp",
    "cluster": {"spec": "localhost-cpu", "nodes": 1, "gpus_per_node": 2},
    "config": {
        "dp": 2,
        "tp": 1,
        "pp": 1,
        "micro_batch": 4,
        "global_batch": 8,
        "seq_len": 0,
        "schedule": "1f1b",
        "virtual_stages": 1,
        "zero": 0,
        "recompute": "none",
        "dtype": "fp32",
        "sequence_parallel": False,
        "bucket_bytes": 1 << 20,
        "overlap_grad_reduce": True,
        "reduce_dtype": "",
        "stages": [],
    },
    "placement": [0, 1],
    "predicted": {},
}

RECORD = {
    "model": "mlp",
    "strategy": "ddp",
    "nprocs": 2,
    "micro_batch": 4,
    "predicted_step_s": 0.011,
    "measured_step_s": 0.010,
}

CALIBRATION_FILE = ROOT / "traces/collectives/localhost-cpu/gloo-2ranks.json"

# ------------------------------------------------------------------ bad values per field kind

NAN, INF = math.nan, math.inf
BAD: dict[str, list[Any]] = {
    "pos_int": ["2", True, 1.5, NAN, INF, -1, 0, 1e30, 2**62, [1], {"a": 1}],
    "nonneg_int": ["2", False, 2.5, NAN, -INF, -1, 1e30, 2**62, [0]],
    "pos_float": ["2", True, NAN, INF, -INF, -1.0, 0, 1e30, [1.0]],
    "nonneg_float": ["1", False, NAN, INF, -1e-3, 1e300, {"a": 1}],
    "fraction": ["0.1", True, NAN, -0.5, 1.0, 2],
    "choice": ["bogus", "", 1, True, ["flash"]],
    "bool": ["false", "true", 0, 1, "yes"],
    "text": [1, True, ["a"], {"a": 1}],
}


def _at(doc: dict[str, Any], path: tuple[Any, ...]) -> tuple[Any, Any]:
    node = doc
    for key in path[:-1]:
        node = node[key]
    return node, path[-1]


def set_at(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    node, key = _at(out, path)
    node[key] = value
    return out


def drop_at(doc: dict[str, Any], path: tuple[Any, ...]) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    node, key = _at(out, path)
    del node[key]
    return out


def typo_at(doc: dict[str, Any], path: tuple[Any, ...]) -> dict[str, Any]:
    """The key at path misspelled (its last letter doubled): an unknown key."""
    out = copy.deepcopy(doc)
    node, key = _at(out, path)
    node[key + key[-1]] = node.pop(key)
    return out


def mutations(
    doc: dict[str, Any],
    fields: dict[tuple[Any, ...], str],
    required: list[tuple[Any, ...]],
    open_tables: tuple[str, ...] = (),
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every bad value of every field, every required field dropped, every field misspelled
    (except in `open_tables`, tables that keep unknown keys, where a misspelled optional field
    is only absent)."""
    for path, kind in fields.items():
        name = ".".join(str(p) for p in path)
        for value in BAD[kind]:
            yield f"{name}={value!r}", set_at(doc, path, value)
        if not name.startswith(open_tables):
            yield f"{name} misspelled", typo_at(doc, path)
    for path in required:
        yield f"{'.'.join(str(p) for p in path)} dropped", drop_at(doc, path)


# ------------------------------------------------------------------ writing files


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def to_toml(doc: dict[str, Any]) -> str:
    """A small TOML writer: top-level scalars, tables, and arrays of tables (inline inside)."""
    lines = [f"{k} = {toml_value(v)}" for k, v in doc.items() if not _is_section(v)]
    for key, value in doc.items():
        if isinstance(value, dict):
            lines.append(f"\n[{key}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in value.items()]
        elif _is_section(value):
            for item in value:
                lines.append(f"\n[[{key}]]")
                lines += [f"{k} = {toml_value(v)}" for k, v in item.items()]
    return "\n".join(lines) + "\n"


def _is_section(value: Any) -> bool:
    return isinstance(value, dict) or (
        isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)
    )


def corruptions(text: str, kind: str) -> Iterator[tuple[str, bytes]]:
    """File-level damage: empty, truncated, binary, not UTF-8, and (JSON) the wrong shape."""
    data = text.encode()
    yield "empty", b""
    cut = data.index(b'"') + 3 if kind == "toml" else len(data) // 2  # inside a string
    yield "truncated", data[:cut]
    yield "binary junk", bytes(range(256)) * 4
    yield "latin-1 bytes", data[:20] + b"\xe9\xff\xfe" + data[20:]
    yield "a NUL byte", data + b"\x00"
    if kind == "json":
        yield "an array", b"[1, 2, 3]"
        yield "a number", b"42"
        yield "a string", b'"plan"'
        yield "null", b"null"
        yield "NaN", b"NaN"
        yield "a 5000-digit integer", b'{"x": ' + b"9" * 5000 + b"}"
        yield "deep nesting", b"[" * 100_000 + b"]" * 100_000
        yield "a directory", b""  # replaced by a directory below
    else:
        yield "a bare key", b"transformer\n"
        yield "a table that is a number", b"transformer = 5\nnode_group = 5\n"


# ------------------------------------------------------------------ cases


@dataclass(frozen=True)
class Case:
    """One input: the file it writes (name, bytes) and the command line that reads it; `{in}`
    is the input's path, `{out}` an output path that must not exist afterwards."""

    id: str
    name: str
    data: bytes
    argv: tuple[str, ...]
    setup: Callable[[Path], None] | None = None


def model_argv() -> tuple[str, ...]:
    return ("simulate", "--model", "{in}", "--cluster", "h200-1gpu", "--global-batch", "1")


MODEL_FIELDS: dict[tuple[Any, ...], str] = {
    ("transformer", "hidden_size"): "pos_int",
    ("transformer", "num_layers"): "pos_int",
    ("transformer", "num_heads"): "pos_int",
    ("transformer", "seq_len"): "pos_int",
    ("transformer", "vocab_size"): "pos_int",
    ("transformer", "ffn_hidden_size"): "nonneg_int",
    ("transformer", "num_kv_heads"): "nonneg_int",
    ("transformer", "activation"): "choice",
    ("transformer", "tie_embeddings"): "bool",
    ("transformer", "norm"): "choice",
    ("transformer", "position"): "choice",
    ("transformer", "bias"): "bool",
    ("transformer", "attention"): "choice",
    ("transformer", "dropout"): "fraction",
    ("model", "description"): "text",
}
MODEL_REQUIRED = [("transformer", k) for k in ("hidden_size", "num_layers", "num_heads")] + [
    ("transformer", k) for k in ("seq_len", "vocab_size")
]

CLUSTER_FIELDS: dict[tuple[Any, ...], str] = {
    ("name",): "text",
    ("node_group", 0, "count"): "pos_int",
    ("node_group", 0, "devices_per_node"): "pos_int",
    ("node_group", 0, "device", "peak_tflops"): "pos_float",
    ("node_group", 0, "device", "memory_gib"): "pos_float",
    ("node_group", 0, "device", "memory_bandwidth_gbps"): "pos_float",
    ("node_group", 0, "fabric", "kind"): "choice",
    ("node_group", 0, "fabric", "bandwidth_GBps"): "pos_float",
    ("node_group", 0, "fabric", "latency_us"): "nonneg_float",
    ("node_group", 0, "nics", "count"): "pos_int",  # two nodes need NICs: 0 is refused too
    ("node_group", 0, "nics", "bandwidth_Gbps"): "pos_float",
    ("node_group", 0, "nics", "latency_us"): "nonneg_float",
    ("network", "kind"): "choice",
    ("network", "oversubscription"): "pos_float",
    ("network", "nodes_per_leaf"): "pos_int",
    ("network", "spines"): "pos_int",
    ("network", "latency_us"): "nonneg_float",
}
CLUSTER_REQUIRED = [
    ("node_group",),
    ("node_group", 0, "device"),
    ("node_group", 0, "device", "peak_tflops"),
    ("node_group", 0, "fabric", "bandwidth_GBps"),
    ("node_group", 0, "nics", "bandwidth_Gbps"),
]

PLAN_FIELDS: dict[tuple[Any, ...], str] = {
    ("model",): "text",
    ("cluster", "spec"): "text",
    ("cluster", "nodes"): "pos_int",
    ("cluster", "gpus_per_node"): "pos_int",
    **{("config", k): "pos_int" for k in ("dp", "micro_batch", "global_batch", "bucket_bytes")},
    **{("config", k): "choice" for k in ("schedule", "recompute", "dtype")},
    ("config", "seq_len"): "nonneg_int",
    ("config", "sequence_parallel"): "bool",
    ("config", "overlap_grad_reduce"): "bool",
}
PLAN_REQUIRED = [("schema",), ("model",), ("cluster",), ("config",), ("cluster", "spec")] + [
    ("config", k) for k in ("dp", "tp", "pp", "micro_batch", "global_batch")
]
PLAN_EXTRA: list[tuple[str, dict[str, Any]]] = [
    ("zero=true", set_at(PLAN, ("config", "zero"), True)),
    ("zero=4", set_at(PLAN, ("config", "zero"), 4)),
    ("zero=1.5", set_at(PLAN, ("config", "zero"), 1.5)),
    ("tp=3 (world mismatch)", set_at(PLAN, ("config", "tp"), 3)),
    ("tp=0", set_at(PLAN, ("config", "tp"), 0)),
    ("pp='2'", set_at(PLAN, ("config", "pp"), "2")),
    ("virtual_stages=2 on 1f1b", set_at(PLAN, ("config", "virtual_stages"), 2)),
    ("reduce_dtype='fp8'", set_at(PLAN, ("config", "reduce_dtype"), "fp8")),
    ("reduce_dtype=false", set_at(PLAN, ("config", "reduce_dtype"), False)),
    ("stages=[1.5]", set_at(PLAN, ("config", "stages"), [1.5])),
    ("stages=[-1]", set_at(PLAN, ("config", "stages"), [-1])),
    ("stages='0,1'", set_at(PLAN, ("config", "stages"), "0,1")),
    ("stages=[0, 9, 1]", set_at(PLAN, ("config", "stages"), [0, 9, 1])),
    ("placement=[0, 0]", set_at(PLAN, ("placement",), [0, 0])),
    ("placement=[-1, 0]", set_at(PLAN, ("placement",), [-1, 0])),
    ("placement=['0', '1']", set_at(PLAN, ("placement",), ["0", "1"])),
    ("placement=[0]", set_at(PLAN, ("placement",), [0])),
    ("placement=[0, 5]", set_at(PLAN, ("placement",), [0, 5])),
    ("placement=7", set_at(PLAN, ("placement",), 7)),
    ("predicted=[]", set_at(PLAN, ("predicted",), [])),
    ("cluster=[]", set_at(PLAN, ("cluster",), [])),
    ("config='dp2'", set_at(PLAN, ("config",), "dp2")),
    ("config.flavour", set_at(PLAN, ("config", "flavour"), 1)),
    ("schema.kind=profile", set_at(PLAN, ("schema", "kind"), "profile")),
    ("schema.version=2", set_at(PLAN, ("schema", "version"), 2)),
    ("schema=1", set_at(PLAN, ("schema",), 1)),
    ("model=unknown", set_at(PLAN, ("model",), "no-such-model")),
    ("cluster.spec=unknown", set_at(PLAN, ("cluster", "spec"), "no-such-cluster")),
    ("global_batch=6 (dp 2, micro 4)", set_at(PLAN, ("config", "global_batch"), 6)),
]

RECORD_FIELDS: dict[tuple[Any, ...], str] = {
    ("predicted_step_s",): "pos_float",
    ("measured_step_s",): "pos_float",
    ("model",): "text",
    ("strategy",): "text",
    ("nprocs",): "pos_int",
    ("micro_batch",): "pos_int",
}
RECORD_REQUIRED = [("predicted_step_s",), ("measured_step_s",), ("model",), ("strategy",)]

CALIBRATION_FIELDS: dict[tuple[Any, ...], str] = {
    ("metadata", "nprocs"): "pos_int",
    ("fit", "alpha_s"): "nonneg_float",
    ("fit", "beta_s_per_byte"): "pos_float",
    ("fits", "all_reduce", "alpha_s"): "nonneg_float",
    ("framework", "ddp", "step_s"): "nonneg_float",
    ("framework", "fsdp", "s_per_byte"): "nonneg_float",
    ("framework", "pp", "action_s"): "nonneg_float",
}
CALIBRATION_REQUIRED = [("metadata",), ("fit",), ("fit", "alpha_s"), ("metadata", "nprocs")]


def _json(doc: Any) -> bytes:
    return json.dumps(doc).encode()  # NaN and Infinity are written as such


def model_cases() -> Iterator[Case]:
    for label, doc in mutations(MODEL, MODEL_FIELDS, MODEL_REQUIRED):
        yield Case(f"model: {label}", "m.toml", to_toml(doc).encode(), model_argv())
    for label, data in corruptions(to_toml(MODEL), "toml"):
        yield Case(f"model file: {label}", "m.toml", data, model_argv())
    for label, change in (
        ("num_heads=3 (does not divide hidden)", {"num_heads": 3}),
        ("num_kv_heads=3", {"num_kv_heads": 3}),
        ("num_kv_heads > num_heads", {"num_kv_heads": 8}),
        ("num_layers=100000", {"num_layers": 100_000}),
        ("seq_len=2**40", {"seq_len": 2**40}),
        ("vocab_size=10**9", {"vocab_size": 10**9}),
        ("hidden_size=2**20", {"hidden_size": 2**20}),
        ("18T parameters", {"hidden_size": 131_072, "num_heads": 128, "num_layers": 512}),
        ("no [transformer]", None),
    ):
        doc = (
            {"model": MODEL["model"]}
            if change is None
            else {**MODEL, "transformer": {**MODEL["transformer"], **change}}
        )
        yield Case(f"model: {label}", "m.toml", to_toml(doc).encode(), model_argv())
    extra = to_toml({**MODEL, "trainer": {"a": 1}}).encode()
    yield Case("model: unknown table", "m.toml", extra, model_argv())


def cluster_cases() -> Iterator[Case]:
    argv = ("clusters", "show", "{in}", "--plot", "{out}")
    for label, doc in mutations(CLUSTER, CLUSTER_FIELDS, CLUSTER_REQUIRED):
        yield Case(f"cluster: {label}", "c.toml", to_toml(doc).encode(), argv)
    for label, data in corruptions(to_toml(CLUSTER), "toml"):
        yield Case(f"cluster file: {label}", "c.toml", data, argv)
    group = CLUSTER["node_group"][0]
    for label, doc in (
        ("node_group=[]", {**CLUSTER, "node_group": []}),
        ("device='tpu9'", set_at(CLUSTER, ("node_group", 0, "device"), "tpu9")),
        ("device=5", set_at(CLUSTER, ("node_group", 0, "device"), 5)),
        ("both bandwidth units", set_at(CLUSTER, ("node_group", 0, "nics", "bandwidth_GBps"), 9)),
        ("20,000 nodes", set_at(CLUSTER, ("node_group", 0, "count"), 20_000)),
        ("100,000 devices per node", set_at(CLUSTER, ("node_group", 0, "devices_per_node"), 10**5)),
        ("1e6 GPUs over groups", {**CLUSTER, "node_group": [{**group, "count": 10_000}] * 20}),
        (
            "link to itself",
            {**CLUSTER, "link": [{"a": "n0.g0", "b": "n0.g0", "bandwidth_GBps": 5}]},
        ),
        ("link without b", {**CLUSTER, "link": [{"a": "n0.g0", "bandwidth_GBps": 5}]}),
        ("link nan", {**CLUSTER, "link": [{"a": "n0.g0", "b": "n0.g1", "bandwidth_GBps": NAN}]}),
        ("calibration=5", {**CLUSTER, "calibration": 5}),
        ("calibration missing file", {**CLUSTER, "calibration": "/no/such/calibration.json"}),
    ):
        yield Case(f"cluster: {label}", "c.toml", to_toml(doc).encode(), argv)


def plan_cases() -> Iterator[Case]:
    simulate = ("simulate", "--plan", "{in}", "--trace", "{out}")
    report = ("report", "plan", "{in}", "--out", "{out}")
    for label, doc in [*mutations(PLAN, PLAN_FIELDS, PLAN_REQUIRED), *PLAN_EXTRA]:
        yield Case(f"plan: {label}", "plan.json", _json(doc), simulate)
    for label, data in corruptions(json.dumps(PLAN), "json"):
        yield Case(f"plan file: {label}", "plan.json", data, simulate)
        yield Case(f"plan file (report): {label}", "plan.json", data, report)
    validate = ("validate", "--plan", "{in}", "--runs-dir", "{out}")
    for label, data in corruptions(json.dumps(PLAN), "json"):  # refused before any rank starts
        yield Case(f"plan file (validate): {label}", "plan.json", data, validate)
    for label, doc in PLAN_EXTRA[:3]:
        yield Case(f"plan (validate): {label}", "plan.json", _json(doc), validate)
    plans = {"schema": {"kind": "plans", "version": 1}, "plans": [PLAN], "baselines": []}
    for label, doc in (
        ("plans=[]", {**plans, "plans": []}),
        ("plans=5", {**plans, "plans": 5}),
        ("baselines='x'", {**plans, "baselines": "x"}),
        ("plans[0].config.zero=true", {**plans, "plans": [PLAN_EXTRA[0][1]]}),
        ("plans[0]=[]", {**plans, "plans": [[]]}),
        ("plans[0] nan nodes", {**plans, "plans": [set_at(PLAN, ("cluster", "nodes"), NAN)]}),
        ("version 9", {**plans, "schema": {"kind": "plans", "version": 9}}),
    ):
        yield Case(f"plans: {label}", "plans.json", _json(doc), report)


def profile_cases(profile_doc: dict[str, Any]) -> Iterator[Case]:
    argv = (
        "simulate", "--model", "mlp", "--cluster", "localhost-cpu", "--global-batch", "16",
        "--micro-batch", "8", "--dtype", "fp32", "--profile", "{in}", "--trace", "{out}",
    )  # fmt: skip
    key = next(iter(profile_doc["timings"]))
    fields: dict[tuple[Any, ...], str] = {
        ("micro_batch",): "pos_int",
        ("seq_len",): "nonneg_int",
        ("dtype",): "choice",
        ("device",): "text",
        ("optimizer_s",): "nonneg_float",
        ("timings", key, "fwd_s"): "nonneg_float",
        ("timings", key, "repeats"): "pos_int",
        ("whole_model", "bwd_s"): "nonneg_float",
        ("model", "layers", 0, "params"): "nonneg_int",
        ("model", "layers", 0, "fwd_flops"): "nonneg_float",
        ("model", "seq_len"): "nonneg_int",
    }
    required = [("timings",), ("model",), ("dtype",), ("model", "layers"), ("device",)]
    for label, doc in mutations(profile_doc, fields, required):
        yield Case(f"profile: {label}", "p.json", _json(doc), argv)
    for label, doc in (
        ("layers=[]", set_at(profile_doc, ("model", "layers"), [])),
        ("edges=[['a']]", set_at(profile_doc, ("model", "edges"), [["a"]])),
        ("edges to nowhere", set_at(profile_doc, ("model", "edges"), [["a", "b"]])),
        ("timings=[]", set_at(profile_doc, ("timings",), [])),
    ):
        yield Case(f"profile: {label}", "p.json", _json(doc), argv)
    for label, data in corruptions(json.dumps(profile_doc), "json"):
        yield Case(f"profile file: {label}", "p.json", data, argv)


def record_cases() -> Iterator[Case]:
    argv = ("report", "validation", "--runs", "{dir}", "--out", "{out}")
    optional = ("nprocs", "micro_batch")  # records keep unknown keys: a misspelling is absent
    for label, doc in mutations(RECORD, RECORD_FIELDS, RECORD_REQUIRED, open_tables=optional):
        yield Case(f"run record: {label}", "runs/r.json", _json(doc), argv)
    for label, data in corruptions(json.dumps(RECORD), "json"):
        yield Case(f"run record file: {label}", "runs/r.json", data, argv)


def calibration_cases() -> Iterator[Case]:
    base = json.loads(CALIBRATION_FILE.read_text())
    argv = ("clusters", "show", "{dir}/cluster.toml", "--plot", "{out}")

    def cluster_file(tmp: Path) -> None:
        text = (ROOT / "simplan/topology/presets/localhost-cpu.toml").read_text()
        lines = [x for x in text.splitlines() if not x.startswith("calibration")]
        cal = f"calibration = {json.dumps(str(tmp / 'cal.json'))}"
        (tmp / "cluster.toml").write_text("\n".join([cal, *lines]) + "\n")

    fields, required = CALIBRATION_FIELDS, CALIBRATION_REQUIRED
    for label, doc in mutations(base, fields, required, open_tables=("framework",)):
        yield Case(f"calibration: {label}", "cal.json", _json(doc), argv, cluster_file)
    validate = ("validate", "--model", "mlp", "--calibration", "{in}", "--runs-dir", "{out}")
    for label, data in corruptions(json.dumps(base), "json"):
        yield Case(f"calibration file: {label}", "cal.json", data, argv, cluster_file)
        yield Case(f"calibration file (validate): {label}", "cal.json", data, validate)


FACTORIES = {
    "raises": "def make():\n    raise RuntimeError('no weights')\n",
    "sys.exit(0)": "import sys\ndef make():\n    sys.exit(0)\n",
    "sys.exit(3)": "import sys\ndef make():\n    sys.exit(3)\n",
    "sys.exit('bye')": "import sys\ndef make():\n    sys.exit('bye')\n",
    "sys.exit at import": "import sys\nsys.exit(0)\ndef make():\n    pass\n",
    "raises at import": "raise ImportError('missing dependency')\n",
    "syntax error": "def make(:\n",
    "returns None": "def make():\n    return None\n",
    "returns a module alone": "from torch import nn\ndef make():\n    return nn.Linear(2, 2)\n",
    "returns (1, 2)": "def make():\n    return 1, 2\n",
    "returns three things": (
        "import torch\nfrom torch import nn\n"
        "def make():\n    return nn.Linear(2, 2), torch.ones(1, 2), 3\n"
    ),
    "example input is text": "from torch import nn\ndef make():\n    return nn.Linear(2, 2), 'x'\n",
    "forward fails": (
        "import torch\nfrom torch import nn\n"
        "def make():\n    return nn.Linear(2, 2), torch.ones(4, 3)\n"
    ),
    "no parameters": (
        "import torch\nfrom torch import nn\n"
        "def make():\n    return nn.Sequential(nn.ReLU()), torch.ones(4, 3)\n"
    ),
    "recurses": "def make():\n    return make()\n",
    "loops forever": "def make():\n    while True:\n        pass\n",
    "forward loops forever": (
        "import torch\nfrom torch import nn\n"
        "class Spin(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.w = nn.Linear(2, 2)\n"
        "    def forward(self, x):\n        while True:\n            pass\n"
        "def make():\n    return Spin(), torch.ones(1, 2)\n"
    ),
    "not UTF-8": "def make():\n    return 'caf\xe9'\n",
}


def factory_cases() -> Iterator[Case]:
    argv = ("profile", "{in}:make", "--device", "h100-sxm")
    for label, source in FACTORIES.items():
        data = source.encode("latin-1") if label == "not UTF-8" else source.encode()
        yield Case(f"factory: {label}", "net.py", data, argv)


def static_cases() -> list[Case]:
    return [
        *model_cases(),
        *cluster_cases(),
        *plan_cases(),
        *record_cases(),
        *calibration_cases(),
        *factory_cases(),
    ]


CASES = static_cases()


# ------------------------------------------------------------------ running


@pytest.fixture(autouse=True)
def _short_factory_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMPLAN_FACTORY_TIMEOUT_S", "1")


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def run_case(case: Case, tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp / case.name
    target.parent.mkdir(parents=True, exist_ok=True)
    if case.id.endswith("a directory"):
        target.mkdir()
    else:
        target.write_bytes(case.data)
    if case.setup:
        case.setup(tmp)
    out = tmp / "out" / "result"
    fields = {"in": str(target), "out": str(out), "dir": str(target.parent)}
    argv = [a.format(**fields) for a in case.argv]
    before = _files(tmp)
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, (argv, code, captured.err, captured.out[-500:])
    assert len(lines) == 1 and lines[0].strip(), captured.err
    assert "Traceback" not in captured.err
    assert _files(tmp) == before, "an output was written"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_file_is_one_line_and_exit_2(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_case(case, tmp_path, capsys)


@pytest.fixture(scope="module")
def profile_doc() -> dict[str, Any]:
    return mlp_profile_with(3e-4, 6e-4).to_dict()


def test_bad_profiles_are_one_line_and_exit_2(
    profile_doc: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = list(profile_cases(profile_doc))
    assert len(cases) > 80
    for i, case in enumerate(cases):
        run_case(case, tmp_path / str(i), capsys)


def test_the_corpus_is_large_and_covers_every_file_kind() -> None:
    kinds = {c.id.split(":")[0].removesuffix(" file").split(" (")[0] for c in CASES}
    assert {"model", "cluster", "plan", "plans", "run record", "calibration", "factory"} <= kinds
    assert len(CASES) >= 300


# ------------------------------------------------------------------ the valid documents work


def _ok(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def test_the_unmutated_documents_are_accepted(
    profile_doc: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The mutations start from valid files: each verb accepts the original."""
    (tmp_path / "m.toml").write_text(to_toml(MODEL))
    _ok(["simulate", "--model", str(tmp_path / "m.toml"), "--cluster", "h200-1gpu",
         "--global-batch", "1"], capsys)  # fmt: skip
    (tmp_path / "c.toml").write_text(to_toml(CLUSTER))
    _ok(["clusters", "show", str(tmp_path / "c.toml")], capsys)
    (tmp_path / "plan.json").write_text(json.dumps(PLAN))
    trace = tmp_path / "trace.json"
    _ok(["simulate", "--plan", str(tmp_path / "plan.json"), "--trace", str(trace)], capsys)
    assert trace.is_file()
    (tmp_path / "p.json").write_text(json.dumps(profile_doc))
    _ok(["simulate", "--model", "mlp", "--cluster", "localhost-cpu", "--global-batch", "16",
         "--micro-batch", "8", "--dtype", "fp32", "--profile", str(tmp_path / "p.json")],
        capsys)  # fmt: skip
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "r.json").write_text(json.dumps(RECORD))
    from simplan.report.validation import read_points

    assert read_points(tmp_path / "runs")[0].measured_step_s == RECORD["measured_step_s"]


def _model_file(tmp: Path, name: str, **shape: Any) -> str:
    path = tmp / f"{name}.toml"
    path.write_text(to_toml({"transformer": shape}))
    return str(path)


def test_valid_extremes_succeed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one_layer = _model_file(
        tmp_path, "one", hidden_size=8, num_layers=1, num_heads=1, seq_len=1, vocab_size=2
    )
    _ok(["simulate", "--model", one_layer, "--cluster", "h200-1gpu", "--global-batch", "1"], capsys)
    trillion = _model_file(
        tmp_path, "t1", hidden_size=65_536, num_layers=20, num_heads=512, seq_len=2048,
        vocab_size=65_536,
    )  # fmt: skip
    out = _ok(["profile", trillion, "--device", "h100-sxm", "--json"], capsys)
    params = json.loads(out)["params"]
    assert 1e12 <= params < 1.1e12  # 20 x 12 h^2 + 2 V h (untied), norms and biases aside
    long = _model_file(
        tmp_path, "long", hidden_size=256, num_layers=2, num_heads=4, seq_len=1_048_576,
        vocab_size=1000,
    )  # fmt: skip
    out = _ok(["profile", long, "--device", "h100-sxm", "--json"], capsys)
    assert json.loads(out)["seq_len"] == 1_048_576


def test_a_factory_that_returns_runs_under_the_bound(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "net.py"
    path.write_text(
        "import torch\nfrom torch import nn\n"
        "def make():\n"
        "    return nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)), torch.ones(5, 3)\n"
    )
    out = _ok(["profile", f"{path}:make", "--device", "h100-sxm", "--json"], capsys)
    assert json.loads(out)["params"] == 3 * 4 + 4 + 4 * 2 + 2


# ------------------------------------------------------------------ the real entry point


def test_the_entry_point_behaves_the_same(tmp_path: Path) -> None:
    """A few cases through `python -m simplan` in a fresh process: same status, one line."""
    bad_model = tmp_path / "m.toml"
    bad_model.write_bytes(to_toml(MODEL).encode()[:30] + b"\xff\xfe")
    assert_one_line_error(run_cli("profile", str(bad_model), "--device", "h200"), "UTF-8")
    bad_cluster = tmp_path / "c.toml"
    bad_cluster.write_text(to_toml(set_at(CLUSTER, ("network", "oversubscription"), NAN)))
    assert_one_line_error(
        run_cli("clusters", "show", str(bad_cluster)), "network.oversubscription", "nan"
    )
    net = tmp_path / "net.py"
    net.write_text(FACTORIES["sys.exit(0)"])
    assert_one_line_error(run_cli("profile", f"{net}:make", "--device", "h200"), "sys.exit(0)")


# ------------------------------------------------------------------ property: parsed documents

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def _table_of(doc: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """The document with any of its keys given any value (and maybe one foreign key)."""
    return st.fixed_dictionaries(
        {}, optional={k: VALUES | st.just(v) for k, v in doc.items()} | {"extra": VALUES}
    )


def _refused_or_accepted(fn: Callable[[], Any]) -> None:
    """fn() returns, or raises one SimplanError line; never anything else."""
    from simplan.errors import SimplanError

    try:
        fn()
    except SimplanError as exc:
        assert str(exc).strip() and "\n" not in str(exc)


@settings(max_examples=150, deadline=None)
@given(_table_of(MODEL["transformer"]), st.booleans())
def test_any_transformer_table_is_a_spec_or_one_line(table: dict[str, Any], whole: bool) -> None:
    from simplan.transformer_shape import spec_from_file, spec_from_table

    if whole:
        _refused_or_accepted(lambda: spec_from_file({"transformer": table}, name="m", where="m"))
    else:
        _refused_or_accepted(lambda: spec_from_table(table, name="m", where="m.toml"))


@settings(max_examples=150, deadline=None)
@given(_table_of(CLUSTER["node_group"][0]), _table_of(CLUSTER["network"]))
def test_any_cluster_table_is_a_spec_or_one_line(
    group: dict[str, Any], network: dict[str, Any]
) -> None:
    from simplan.topology.cluster_spec import parse_spec

    _refused_or_accepted(
        lambda: parse_spec({"node_group": [group], "network": network}, origin="c.toml")
    )


@settings(max_examples=150, deadline=None)
@given(_table_of(PLAN["config"]), _table_of(PLAN["cluster"]), VALUES)
def test_any_plan_document_is_a_plan_or_one_line(
    config: dict[str, Any], cluster: dict[str, Any], placement: Any
) -> None:
    from simplan.planfile import plan_from_dict

    doc = {**PLAN, "config": config, "cluster": cluster, "placement": placement}
    _refused_or_accepted(lambda: plan_from_dict(doc, "plan.json"))
