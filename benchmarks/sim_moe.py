"""Simulated TFLOP/s per GPU of mixture-of-experts training against published Megatron-Core runs.

Reference: simplan/data/reference/moe_training_throughput.csv (a copy of the shared reference
table; each row cites its source). A row is simulated when simplan can express it:

- bf16, or FP8 with a scaling recipe simplan models (`--fp8`, simplan/fp8.py): 'FP8 blockwise'
  (1x128 / 128x128 block scales) -> `--fp8 block` on any FP8 GPU; MXFP8 (1x32 block scales,
  Blackwell's microscaling format) -> `--fp8 block` on B200 / GB200 only (Hopper has no MXFP8
  GEMMs); MXFP8 on part of the GEMMs only is left out;
- hardware with a cluster preset: H100 -> `dgx-h100` (8 GPUs per node, NVLink 4, 8x400 Gb/s
  InfiniBand, the hardware the rows name); B200 -> `dgx-b200` (8 per node); GB200 ->
  `gb200-nvl72`, the GPUs spread evenly over as few 72-GPU NVLink domains as hold them (256 ->
  4 x 64, 128 -> 2 x 64, 16 -> 1 x 16); a GB200 row that gives NNODES counts 4 GPUs per node
  (a GB200 compute tray: two superchips of two GPUs). B300 / GB300 rows are left out (no
  cluster preset); so are rows that need activation offloading (not modelled);
- context parallelism (CP > 1) with `--cp` (ring K/V exchange, Megatron-Core's default 'p2p');
  its ranks fold into the expert groups as Megatron-Core folds them (dp x cp x tp = edp x ep x
  etp);
- a model preset whose shape equals the row's shape columns (layers, hidden, heads, query
  groups, kv_channels, experts, top-k, expert FFN): mixtral-8x7b, mixtral-8x22b,
  qwen3-235b-a22b, qwen3-30b-a3b;
- a GPU count (num_gpus, or NNODES x 8) and a published TFLOP/s per GPU.

Each simulated row runs with the row's TP, PP, VPP (interleaved schedule when > 1), EP, ETP
(blank = 1), its dispatcher (DeepEP, HybridEP or 'flex' -> --moe-dispatcher deepep: one copy per
token and target node across nodes; else alltoall), micro-batch, global batch and sequence
length; dp = GPUs / (TP x PP x CP); sequence parallelism when TP > 1 (Megatron-Core requires it for
MoE with TP); the distributed optimizer (ZeRO 1; 'FSDP On' -> ZeRO 3) as Megatron-Core's MoE
recipes run; recompute 'full' -> full, Megatron's fine-grained module recomputation (norm, act,
moe_act) -> none (those modules are element-wise work); balanced routing (most rows force load
balancing; dropless rows assume it); `--moe-overlap` where the row's features or dispatcher
name an EP / A2A / 1F1B overlap (rows 18, 19, 21, 22, 30, 47).
Throughput is counted as the sources count it, Megatron-LM's --log-throughput formula
(megatron/training/training.py num_floating_point_operations, the version with the causal
halving of the attention core, e.g. @ 250b7941): per token, 3 passes x 2 FLOPs per multiply-add
over the attention projections h (q + 2 kv) + q h, the causal core q s (QK^T and AV, halved),
the experts each token visits (top-k routed + shared, 3 matrices with SwiGLU), dense MLPs of
the first dense layers, and the logits h V; recomputation not counted. The Mixtral rows of
2024 (MCore v0.8 / v0.9) may predate the halving: there the full count is 8% higher at s 4096.

Nothing is tuned here. The rows ran Megatron-Core with Transformer Engine (2024-2025: fused
kernels, grouped GEMMs, CUDA graphs on several rows), a stack whose matrix kernels run at the
device's measured rate: each GPU is its preset under `--stack kernels`
(simplan.devices.kernels_only), the GEMM model's full tiles at the device's Maximum Achievable
Matmul FLOPS (H100: the 'NVIDIA H100 SXM' bf16 row of
simplan/data/reference/gemm_efficiency_measurements.csv, 794.5 of 989 TFLOP/s, as
simplan/data/gemm_calibration.json reproduces it) and no operation under a kernel launch. B200
and GB200 are datasheet devices with simplan's uncalibrated efficiencies (no stack fitted on
them, so `kernels_only` changes nothing there). A second column shows the H100 rows under the
h100-sxm preset as it stands, with the stack fitted on llm-foundry's 2023 MPT runs
(simplan/data/gpu_calibration.json: its matrix kernels at 0.61 of that rate and 40 us per
operation): the sensitivity to the stack. The acceptance number is the first column.

Prints the table and writes benchmarks/results/sim_moe.json. Usage:
    python benchmarks/sim_moe.py [--rows N]   (N: simulate the first N expressible rows only)
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simplan.device_fit import read_reference_csv
from simplan.devices import STACKS
from simplan.io import write_json_atomic
from simplan.model_graph import ModelGraph
from simplan.parallel import ParallelConfig
from simplan.sim.run import simulate
from simplan.sources import load_model
from simplan.topology import load_cluster

TABLE = "moe_training_throughput.csv"
PRESETS = {
    "Mixtral-8x7B": "mixtral-8x7b",
    "Mixtral-8x22B": "mixtral-8x22b",
    "Qwen3-235B-A22B": "qwen3-235b-a22b",
    "Qwen3-30B-A3B": "qwen3-30b-a3b",
}
CLUSTERS = {"H100": ("dgx-h100", 8), "B200": ("dgx-b200", 8), "GB200": ("gb200-nvl72", 4)}
NVLINK_DOMAIN = {"gb200-nvl72": 72}  # presets whose node is an NVLink domain of up to N GPUs
BLACKWELL = ("B200", "GB200")
SHAPE_COLUMNS = {  # reference column -> TransformerSpec field
    "num_layers": "num_layers",
    "hidden": "hidden_size",
    "attn_heads": "num_heads",
    "query_groups": "num_kv_heads",
    "kv_channels": "kv_channels",
    "num_experts": "num_experts",
    "topk": "moe_top_k",
    "expert_ffn_hidden": "moe_ffn_hidden_size",
}
RESULTS = Path(__file__).resolve().parent / "results" / "sim_moe.json"


@dataclass(frozen=True, kw_only=True)
class Case:
    row: int
    model: str
    preset: str
    cluster: str
    gpus: int
    gpus_per_node: int
    config: ParallelConfig
    published_tflops: float
    label: str
    group: str  # hardware and precision: 'H100 bf16', 'GB200 fp8-block', ...

    @property
    def nodes(self) -> int:
        return self.gpus // self.gpus_per_node

    def cli(self) -> str:
        c = self.config
        flags = [
            f"--model {self.preset} --cluster {self.cluster} --nodes {self.nodes} "
            f"--gpus-per-node {self.gpus_per_node} --stack kernels",
            f"--tp {c.tp} --pp {c.pp} --cp {c.cp} --ep {c.ep} --etp {c.etp}",
            f"--micro-batch {c.micro_batch} --global-batch {c.global_batch}",
            f"--seq-len {c.seq_len} --zero {c.zero} --recompute {c.recompute}",
        ]
        if c.virtual_stages > 1:
            flags.append(f"--schedule interleaved --virtual-stages {c.virtual_stages}")
        if c.sequence_parallel:
            flags.append("--sequence-parallel")
        if c.moe_dispatcher != "alltoall":
            flags.append(f"--moe-dispatcher {c.moe_dispatcher}")
        if c.fp8 != "none":
            flags.append(f"--fp8 {c.fp8}")
        if c.moe_overlap:
            flags.append("--moe-overlap")
        return "simplan simulate " + " ".join(flags)


def _int(text: str) -> int | None:
    head = text.strip().split(" ")[0]
    return int(head) if head.isdigit() else None


def _hardware(row: dict[str, str]) -> str:
    return row["hardware"].split(" ")[0]


def _gpus(row: dict[str, str]) -> int | None:
    text = row["num_gpus"].strip()
    if text.startswith("NNODES="):
        nodes = _int(text.removeprefix("NNODES="))
        per_node = CLUSTERS[_hardware(row)][1] if _hardware(row) in CLUSTERS else 0
        return nodes * per_node if nodes and per_node else None
    return _int(text)


def _cluster(hardware: str) -> str | None:
    name = hardware.split(" ")[0]
    return CLUSTERS[name][0] if name in CLUSTERS else None


def gpus_per_node(cluster: str, gpus: int) -> int:
    """GPUs per node of the simulated cluster: the preset's, or for an NVLink-domain preset
    the GPUs spread evenly over as few domains as hold them."""
    domain = NVLINK_DOMAIN.get(cluster)
    if domain is None:
        return CLUSTERS[next(k for k, v in CLUSTERS.items() if v[0] == cluster)][1]
    return gpus // -(-gpus // domain)


def fp8_recipe(row: dict[str, str]) -> str | None:
    """The `--fp8` recipe of a row's precision ('none' for bf16), None where none maps."""
    precision = row["precision"].strip().upper()
    if precision.startswith("BF16"):
        return "none"
    if precision.startswith("FP8") and "BLOCKWISE" in precision:
        return "block"
    if precision == "MXFP8" and _hardware(row) in BLACKWELL:
        return "block"
    return None


def overlaps(row: dict[str, str]) -> bool:
    """Whether a row overlaps the expert all-to-alls with compute: its features or dispatcher
    name it ('EP overlap', 'EP A2A overlap', 'A2A_OVERLAP=1', '1f1b overlap': Megatron-Core's
    --overlap-moe-expert-parallel-comm, the 1F1B A2A overlap)."""
    text = f"{row['features']} {row['dispatcher']}".lower()
    return (_int(row["EP"]) or 1) > 1 and "overlap" in text


def why_not(row: dict[str, str]) -> str:
    """Why a row cannot be simulated ("" if it can)."""
    if _cluster(row["hardware"]) is None:
        return f"no cluster preset for {row['hardware']}"
    if fp8_recipe(row) is None:
        return f"precision {row['precision']} on {_hardware(row)} (no FP8 recipe maps)"
    if "offloading" in row["features"]:
        return f"{row['features']} (activation offloading is not modelled)"
    if row["model"] not in PRESETS:
        return f"no preset for {row['model']}"
    if _gpus(row) is None or not row["tflops_per_gpu"].strip():
        return "no GPU count or no TFLOP/s"
    return ""


def _recompute(text: str) -> str:
    return "full" if text.strip() == "full" else "none"


def _dispatcher(text: str, ep: int) -> str:
    lowered = text.lower()
    deduplicating = "deepep" in lowered or "hybridep" in lowered or "flex" in lowered
    return "deepep" if deduplicating and ep > 1 else "alltoall"


def case_of(index: int, row: dict[str, str]) -> Case:
    gpus = _gpus(row) or 0
    tp, pp = _int(row["TP"]) or 1, _int(row["PP"]) or 1
    vpp, cp = _int(row["VPP"]) or 1, _int(row["CP"]) or 1
    config = ParallelConfig(
        dp=gpus // (tp * pp * cp),
        tp=tp,
        pp=pp,
        cp=cp,
        ep=_int(row["EP"]) or 1,
        etp=_int(row["ETP"]) or 1,
        micro_batch=_int(row["MBS"]) or 1,
        global_batch=_int(row["GBS"]) or 1,
        seq_len=_int(row["seq_len"]) or 0,
        schedule="interleaved" if vpp > 1 else "1f1b",
        virtual_stages=vpp,
        zero=3 if "FSDP On" in row["DP_or_EDP"] else 1,
        recompute=_recompute(row["recompute"]),
        sequence_parallel=tp > 1,
        dtype="bf16",
        moe_dispatcher=_dispatcher(row["dispatcher"], _int(row["EP"]) or 1),
        fp8=fp8_recipe(row) or "none",
        moe_overlap=overlaps(row),
    )
    cluster = _cluster(row["hardware"]) or ""
    return Case(
        row=index,
        model=row["model"],
        preset=PRESETS[row["model"]],
        cluster=cluster,
        gpus=gpus,
        gpus_per_node=gpus_per_node(cluster, gpus),
        config=config,
        published_tflops=float(row["tflops_per_gpu"]),
        label=(row["features"] or row["notes"])[:40],
        group=f"{_hardware(row)} {'bf16' if config.fp8 == 'none' else 'fp8-' + config.fp8}",
    )


def shape_mismatch(graph: ModelGraph, row: dict[str, str]) -> str:
    """Where the preset's shape differs from the row's shape columns ("" if nowhere)."""
    spec = graph.meta["transformer"]
    for column, field in SHAPE_COLUMNS.items():
        want = _int(row[column])
        have = spec[field] or (
            spec["hidden_size"] // spec["num_heads"] if field == "kv_channels" else 0
        )
        if field == "moe_ffn_hidden_size":
            have = spec[field] or spec["ffn_hidden_size"]
        if want is not None and want != have:
            return f"{column} {want} != preset's {have}"
    return ""


def megatron_flops_per_token(spec: dict[str, Any], seq_len: int) -> float:
    """FLOPs of one trained token by Megatron-LM's throughput formula (see the module doc)."""
    h, layers = spec["hidden_size"], spec["num_layers"]
    head = spec["kv_channels"] or h // spec["num_heads"]
    q, kv = spec["num_heads"] * head, (spec["num_kv_heads"] or spec["num_heads"]) * head
    per = 3 if spec["activation"] == "swiglu" else 2
    attention = h * (q + 2 * kv) + q * seq_len + q * h  # causal core: 2 products, halved
    moe_ffn = spec["moe_ffn_hidden_size"] or spec["ffn_hidden_size"]
    experts = spec["moe_top_k"] + spec["moe_shared_experts"]
    moe_layers = layers - spec["moe_dense_layers"] if spec["num_experts"] else 0
    mlp = moe_layers * per * h * moe_ffn * experts
    mlp += (layers - moe_layers) * per * h * spec["ffn_hidden_size"]
    return 6.0 * (layers * attention + mlp + h * spec["vocab_size"])


def run_case(case: Case, graph: ModelGraph, clusters: dict[str, Any]) -> dict[str, Any]:
    """The row simulated on its cluster under the kernels stack (`--stack kernels`) and, for
    H100 rows, under the fitted stack too."""
    started = time.perf_counter()
    result = simulate(graph, clusters["kernels"], case.config, record=False)
    fitted_stack = None  # the H100's: the other GPUs have no fitted stack
    if case.cluster == "dgx-h100":
        fitted_stack = simulate(graph, clusters["fitted"], case.config, record=False).step_time_s
    c = case.config
    flops = megatron_flops_per_token(graph.meta["transformer"], c.seq_len) * c.seq_len
    flops *= c.global_batch

    def tflops(step_s: float) -> float:
        return flops / step_s / case.gpus / 1e12

    predicted = tflops(result.step_time_s)
    mpt = tflops(fitted_stack) if fitted_stack else None
    return {
        "row": case.row,
        "model": case.model,
        "gpus": case.gpus,
        "config": case.config.describe(),
        "cli": case.cli(),
        "published_tflops": case.published_tflops,
        "predicted_tflops": round(predicted, 1),
        "error": round(predicted / case.published_tflops - 1.0, 4),
        "predicted_tflops_mpt_stack": round(mpt, 1) if mpt else None,
        "error_mpt_stack": round(mpt / case.published_tflops - 1.0, 4) if mpt else None,
        "group": case.group,
        "simplan_tflops": round(result.tflops_per_device, 1),
        "step_s": round(result.step_time_s, 3),
        "breakdown_s": {k: round(v, 3) for k, v in result.breakdown.items()},
        "fits": result.fits_memory,
        "label": case.label,
        "wall_s": round(time.perf_counter() - started, 1),
    }


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarise(results: list[dict[str, Any]], skipped: int) -> tuple[float, float]:
    """Print the median |error| over all rows and per group; return (all, H100 rows under the
    MPT-fitted stack)."""
    median = _median([abs(r["error"]) for r in results])
    mpt = _median([abs(r["error_mpt_stack"]) for r in results if r["error_mpt_stack"] is not None])
    print(
        f"{len(results)} rows simulated, {skipped} not expressible; median |error| "
        f"{100 * median:.1f}% (H100 rows under the llm-foundry-fitted stack: {100 * mpt:.1f}%)"
    )
    for group in sorted({r["group"] for r in results}):
        errors = [abs(r["error"]) for r in results if r["group"] == group]
        print(f"  {group:<14} {len(errors):>2} rows, median |error| {100 * _median(errors):.1f}%")
    return median, mpt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=0, help="simulate only the first N rows")
    args = parser.parse_args(argv)
    rows = read_reference_csv(TABLE)
    skipped = {i: why_not(r) for i, r in enumerate(rows) if why_not(r)}
    cases = [case_of(i, r) for i, r in enumerate(rows) if i not in skipped]
    if args.rows:
        cases = cases[: args.rows]
    graphs: dict[tuple[str, int], ModelGraph] = {}
    clusters: dict[tuple[str, int], Any] = {}
    results = []
    for case in cases:
        key = (case.preset, case.config.seq_len)
        if key not in graphs:
            graphs[key] = load_model(case.preset, seq_len=case.config.seq_len, dtype="bf16")
        bad = shape_mismatch(graphs[key], rows[case.row])
        if bad:
            raise SystemExit(f"row {case.row}: preset {case.preset} does not match: {bad}")
        ckey = (case.cluster, case.gpus)
        if ckey not in clusters:
            clusters[ckey] = {
                stack: load_cluster(
                    case.cluster, nodes=case.nodes, gpus_per_node=case.gpus_per_node, stack=stack
                )
                for stack in STACKS
            }
        results.append(run_case(case, graphs[key], clusters[ckey]))
        r = results[-1]
        column = (
            f"MPT stack {r['predicted_tflops_mpt_stack']:>6.1f} "
            f"({100 * r['error_mpt_stack']:+6.1f}%)"
            if r["error_mpt_stack"] is not None
            else ""
        )
        print(
            f"row {r['row']:>2} {r['model']:<16} {r['gpus']:>4} GPUs  {r['config']:<48} "
            f"published {r['published_tflops']:>6.1f}  predicted {r['predicted_tflops']:>6.1f}  "
            f"error {100 * r['error']:+6.1f}%   {column}",
            flush=True,
        )
    median, mpt = summarise(results, len(skipped))
    for i, why in skipped.items():
        print(f"  row {i:>2} {rows[i]['model']:<20} skipped: {why}")
    write_json_atomic(
        {
            "reference": f"simplan/data/reference/{TABLE}",
            "median_abs_error": median,
            "device": "each GPU's preset under --stack kernels (simplan.devices.kernels_only)",
            "median_abs_error_mpt_stack": mpt,
            "rows": results,
            "skipped": [
                {"row": i, "model": rows[i]["model"], "why": w} for i, w in skipped.items()
            ],
        },
        RESULTS,
    )
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
