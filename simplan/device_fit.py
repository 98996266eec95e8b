"""Derive the GPU device models' efficiencies from published training throughput.

Fit data: simplan/data/reference/llmfoundry_mpt_throughput.csv, the rows of section "A100 80GB"
with 8 GPUs (one node) and sequence length 2048: MPT models of 125M to 30B parameters trained
with FSDP (FULL_SHARD, bf16 compute, fp32 gradient reduction: llm-foundry's DEFAULT mixed
precision) at the listed micro-batch, gradient accumulation and activation checkpointing. Shapes
come from llmfoundry_mpt_model_configs.csv (ALiBi, so no position embedding; no biases; tied
embeddings; vocab 50368).

The 8-GPU rows of the same section from 16384 tokens on (up to 65536), where attention is most of
the work, identify a fourth constant, `stack_attention_efficiency`: the share of the matrix rate
that the stack's fused attention kernels (llm-foundry's triton flash attention) reach. All four
constants are fitted jointly: one least-squares fit over the rows of both sets, each row one
observation (simplan.device_fit.fit_efficiencies). Fitting the two sets in turn, each with the
other's constants held, stops at a point that is not the joint optimum (the constants trade
off against each other across the sets).

Each row is simulated on one node (`dgx-a100`, or `dgx-h100` for the H100 fit of the section "H100
80GB BF16"). The GEMM rate is not fitted here: it is the device's, the full-tile efficiency at
which the GEMM model reproduces the family's Maximum Achievable Matmul FLOPS
(simplan/data/gemm_calibration.json, benchmarks/gemm_sweep.py). What the rows identify is what the
llm-foundry stack of 2023 loses: three constants (`stack_gemm_efficiency`: the share of that rate
its matrix kernels reached, `mem_efficiency`: memory-bound work, `kernel_overhead_s`: the least
cost of each operation, launch and eager dispatch included) are chosen on a grid (the share in
steps of 0.02 of peak of the matrix rate it gives) with the attention share to minimise the squared
log error of the predicted samples per second over the rows. The rows cannot tell a uniform loss of
busy time from slower matrix kernels apart by themselves; a uniform loss would put memory-bound
kernels at the datasheet bandwidth (the A100 fit's memory efficiency went to 1.0), so the loss is
taken where it is physical, on the matrix kernels (the 2023 stacks ran older GEMM libraries; on the
H100, from before its Hopper kernels matured).
Each layer is counted with the work the rows ran: the loss (an fp32 cross-entropy over the logits,
whose up-cast and log-softmax stream several times the logits' bytes) rides on the output layer,
dropout is the fused kernel. The A100 fit also takes the same rows (8 GPUs, seq 2048 and from 16384
tokens on) of the section "A100 40GB", each simulated on its own device: the same chip with 1.555
TB/s of HBM against 2.039 TB/s, so the two sections together tell memory-bound work from matrix
work apart, which the 80GB rows alone identify only weakly (fitted on them alone, every memory
efficiency from 0.55 to 0.75 comes within 10% of the least loss). The H100 section has 5 rows at
seq 2048, which do not identify the memory efficiency; it shares the A100's. The A100 fit serves
a100-80gb and a100-40gb; the H100 fit serves h100-sxm and h200 (same chip, faster memory) until a
profile of the target GPU replaces the model. The other rows of the same sections (sequence lengths
512 to 8192 but 2048, other GPU counts) and Megatron-LM's tables are held out as checks
(benchmarks/calibrate_devices.py prints them).

Run `python benchmarks/calibrate_devices.py` to re-derive and store the result in
simplan/data/gpu_calibration.json.
"""

from __future__ import annotations

import csv
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simplan.devices import DeviceModel
from simplan.errors import SimplanError
from simplan.model_graph import ModelGraph
from simplan.parallel import ParallelConfig
from simplan.transformer_shape import TransformerSpec

FIT_FILE = "llmfoundry_mpt_throughput.csv"
SHAPES_FILE = "llmfoundry_mpt_model_configs.csv"
CALIBRATION_FILE = Path(__file__).resolve().parent / "data" / "gpu_calibration.json"
REFERENCE_DIR = Path(__file__).resolve().parent / "data" / "reference"
# the stack's matrix efficiency (share of peak: MAMF rate x the stack's share of it)
MATRIX_GRID = tuple(round(0.40 + 0.02 * i, 2) for i in range(28))  # 0.40 .. 0.94
MEM_GRID = tuple(round(0.30 + 0.05 * i, 2) for i in range(15))  # 0.3 .. 1.0
# seconds per operation; the first is the prior (simplan.devices.KERNEL_OVERHEAD_S, a launch),
# kept unless another value lowers the fit's loss by more than OVERHEAD_TOLERANCE (relative):
# the rows' operations are mostly far longer than any of them
OVERHEAD_GRID = (5e-6, 2e-6, 10e-6, 20e-6, 40e-6)
OVERHEAD_TOLERANCE = 0.01
# the fused attention kernels' share of the matrix rate, fitted on the rows from ATTENTION_SEQ
# tokens on (MPT-125m at 16384 tokens: attention is 3.6x the block's other matrix work)
ATTENTION_GRID = tuple(round(0.40 + 0.05 * i, 2) for i in range(13))  # 0.40 .. 1.00
ATTENTION_SEQ = 16384
# the joint search: a pass over every COARSE-th grid value, then the full grids near the
# COARSE_KEEP best points of that pass
COARSE = 2
COARSE_KEEP = 3
# family: (section of the fit table, cluster preset, device preset); the A100 is fitted first
FITS = {
    "a100": ("A100 80GB with 1600 Gbps node-node interconnect (RoCE)", "dgx-a100", "a100-80gb"),
    "h100": ("H100 80GB BF16", "dgx-h100", "h100-sxm"),
}
# sections fitted with a family's own, by the same rows (8 GPUs, seq 2048 and from ATTENTION_SEQ
# tokens on): the A100 40GB is the same chip with 1.555 TB/s of HBM against the 80GB's 2.039, so
# rows on both tell memory-bound work from matrix work apart
ALSO_FITTED = {
    "a100": (("A100 40GB with 1600 Gbps node-node interconnect (RoCE)", "dgx-a100", "a100-40gb"),),
}


def fit_sections(family: str) -> tuple[tuple[str, str, str], ...]:
    """(section, cluster preset, device preset) of every section a family is fitted on."""
    return (FITS[family], *ALSO_FITTED.get(family, ()))


def is_fit_row(row: ThroughputRow) -> bool:
    """Whether a row of a fitted section is a fit row: 8 GPUs at seq 2048 (the stack) or from
    ATTENTION_SEQ tokens on (its attention kernels)."""
    return row.gpus == 8 and (row.seq_len == 2048 or row.seq_len >= ATTENTION_SEQ)


def reference_dir() -> Path:
    """The published tables shipped with the package (each CSV's first line cites its source)."""
    return REFERENCE_DIR


def read_reference_csv(name: str) -> list[dict[str, str]]:
    """The rows of one reference table, its `#` citation line skipped."""
    path = reference_dir() / name
    if not path.is_file():
        raise SimplanError(f"{path}: reference table not found; reinstall simplan")
    with path.open(encoding="utf-8") as handle:
        lines = [line for line in handle if not line.startswith("#")]
    return list(csv.DictReader(lines))


@dataclass(frozen=True, kw_only=True)
class ThroughputRow:
    """One published training run: what was run and how many samples per second it reached."""

    section: str
    model: str
    gpus: int
    seq_len: int
    micro_batch: int
    global_batch: int
    checkpointing: bool
    samples_per_s: float


def mpt_rows(section: str, gpus: int | None = 8, seq_len: int | None = 2048) -> list[ThroughputRow]:
    """Rows of one section; gpus / seq_len None keep every value."""
    rows = []
    for r in read_reference_csv(FIT_FILE):
        if r["section"] != section:
            continue
        if gpus is not None and int(r["# GPUs"]) != gpus:
            continue
        if seq_len is not None and int(r["SeqLen (T)"]) != seq_len:
            continue
        rows.append(
            ThroughputRow(
                section=r["section"],
                model=r["Model"],
                gpus=int(r["# GPUs"]),
                seq_len=int(r["SeqLen (T)"]),
                micro_batch=int(r["MicroBatchSize"]),
                global_batch=int(r["GlobalBatchSize"]),
                checkpointing=r["Activation Checkpointing"] == "True",
                samples_per_s=float(r["Throughput (T/s)"]) / int(r["SeqLen (T)"]),
            )
        )
    return [r for r in rows if r.samples_per_s > 0]


def mpt_spec(model: str, seq_len: int) -> TransformerSpec:
    for r in read_reference_csv(SHAPES_FILE):
        if r["model"] == model:
            h = int(r["d_model"])
            return TransformerSpec(
                name=f"mpt-{model}",
                hidden_size=h,
                num_heads=int(r["n_heads"]),
                num_layers=int(r["n_layers"]),
                seq_len=seq_len,
                vocab_size=int(r["vocab_size"]),
                ffn_hidden_size=int(r["expansion_ratio"]) * h,
                activation="gelu",
                tie_embeddings=True,
                position="none",
                bias=False,
            )
    raise SimplanError(f"{SHAPES_FILE}: no MPT model {model!r}")


def row_config(row: ThroughputRow) -> ParallelConfig:
    return ParallelConfig(
        dp=row.gpus,
        micro_batch=row.micro_batch,
        global_batch=row.global_batch,
        zero=3,
        dtype="bf16",
        reduce_dtype="fp32",
        recompute="full" if row.checkpointing else "none",
    )


class RowSimulator:
    """Simulates published rows under candidate device models (graphs counted once)."""

    def __init__(self, rows: list[ThroughputRow], cluster_spec: str) -> None:
        from simplan.build import graph_from_spec
        from simplan.topology import load_cluster

        self.rows = rows
        self.graphs: dict[tuple[str, int], ModelGraph] = {}
        self.clusters: dict[int, Any] = {}
        for row in rows:
            key = (row.model, row.seq_len)
            if key not in self.graphs:
                self.graphs[key] = graph_from_spec(mpt_spec(row.model, row.seq_len), dtype="bf16")
            if row.gpus not in self.clusters:
                nodes, per = (row.gpus // 8, None) if row.gpus >= 8 else (1, row.gpus)
                self.clusters[row.gpus] = load_cluster(cluster_spec, nodes=nodes, gpus_per_node=per)

    def predict(self, row: ThroughputRow, device: DeviceModel) -> float:
        from simplan.sim.run import simulate

        result = simulate(
            self.graphs[(row.model, row.seq_len)],
            self.clusters[row.gpus],
            row_config(row),
            record=False,
            device=device,
        )
        return result.samples_per_s

    def table(self, device: DeviceModel) -> list[dict[str, Any]]:
        """Each row: what was run, measured and predicted samples per second."""
        return [
            {
                "model": r.model,
                "gpus": r.gpus,
                "seq_len": r.seq_len,
                "micro_batch": r.micro_batch,
                "checkpointing": r.checkpointing,
                "measured_samples_per_s": r.samples_per_s,
                "predicted_samples_per_s": round(self.predict(r, device), 4),
            }
            for r in self.rows
        ]

    def loss(self, device: DeviceModel) -> float:
        return sum(math.log(self.predict(r, device) / r.samples_per_s) ** 2 for r in self.rows)


def mamf_efficiency(family: str) -> tuple[float, str]:
    """The family's GEMM full-tile efficiency at its Maximum Achievable Matmul FLOPS, and where
    it comes from."""
    from simplan.gemm import CALIBRATION_FILE as GEMM_FILE
    from simplan.gemm import read_calibration

    levels = read_calibration().get("best_shape_efficiency", {})
    if family not in levels:
        raise SimplanError(f"{GEMM_FILE}: no best-shape efficiency for {family}; run gemm_sweep")
    source = (
        f"simplan/data/gemm_calibration.json best_shape_efficiency[{family!r}]: the GEMM model's "
        "full-tile rate at the family's Maximum Achievable Matmul FLOPS row of "
        "simplan/data/reference/gemm_efficiency_measurements.csv (benchmarks/gemm_sweep.py)"
    )
    return float(levels[family]), source


def attention_rows(section: str) -> list[ThroughputRow]:
    """The section's 8-GPU rows from ATTENTION_SEQ tokens on: attention is most of their work."""
    return [r for r in mpt_rows(section, seq_len=None) if r.seq_len >= ATTENTION_SEQ]


def table_loss(table: list[dict[str, Any]]) -> float:
    """RowSimulator.loss of rows already simulated (RowSimulator.table)."""
    return sum(
        math.log(r["predicted_samples_per_s"] / r["measured_samples_per_s"]) ** 2 for r in table
    )


Point = tuple[float, float, float]  # (matrix efficiency, memory efficiency, attention share)
Grids = tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]  # the values of each


@dataclass(frozen=True)
class JointFit:
    """Sets of rows, each with the device its rows ran on; a candidate point sets the same
    efficiencies on every one."""

    sims: tuple[tuple[RowSimulator, DeviceModel], ...]

    @staticmethod
    def device(base: DeviceModel, point: Point, overhead: float) -> DeviceModel:
        matrix, mem, attention = point
        return base.with_(
            stack_gemm_efficiency=matrix / base.gemm_efficiency,
            mem_efficiency=mem,
            stack_attention_efficiency=attention,
            kernel_overhead_s=overhead,
        )

    def loss(self, point: Point, overhead: float) -> float:
        """Squared log error summed over every row of every set (each row one observation)."""
        return sum(sim.loss(self.device(base, point, overhead)) for sim, base in self.sims)

    def best(self, points: list[Point], overhead: float) -> list[tuple[float, Point]]:
        """The points by loss, least first (ties: the higher efficiencies)."""
        scored = [(self.loss(point, overhead), point) for point in points]
        return sorted(scored, key=lambda sp: (round(sp[0], 12), tuple(-x for x in sp[1])))


def _around(grid: tuple[float, ...], value: float, steps: int) -> tuple[float, ...]:
    """The grid's values within `steps` places of value (on the grid)."""
    i = grid.index(value)
    return grid[max(i - steps, 0) : i + steps + 1]


def _joint_search(fit: JointFit, grids: Grids, overhead: float) -> tuple[float, Point]:
    """The least-loss point of the grids' product: a pass over every COARSE-th value of each
    grid, then the full grids within COARSE places of the COARSE_KEEP best coarse points."""
    matrix, mem, attention = (grid[::COARSE] for grid in grids)
    ranked = fit.best(list(itertools.product(matrix, mem, attention)), overhead)
    fine: set[Point] = set()
    for _, point in ranked[:COARSE_KEEP]:
        matrix, mem, attention = (
            _around(grid, x, COARSE) for grid, x in zip(grids, point, strict=True)
        )
        fine.update(itertools.product(matrix, mem, attention))
    return fit.best(sorted(fine), overhead)[0]


def _fit_joint(fit: JointFit, grids: Grids) -> tuple[float, Point, float, bool]:
    """(loss, point, overhead, whether the rows identify the overhead): the joint search at
    the prior overhead (a launch), then the overhead at that point: another value of the grid
    replaces the prior only where it lowers the loss by more than OVERHEAD_TOLERANCE (the
    rows' operations are mostly far longer than any of the values), and the search runs again
    there."""
    prior = OVERHEAD_GRID[0]
    loss, point = _joint_search(fit, grids, prior)
    losses = {o: fit.loss(point, o) if o != prior else loss for o in OVERHEAD_GRID}
    best = min(OVERHEAD_GRID, key=lambda o: losses[o])
    if losses[best] >= losses[prior] * (1 - OVERHEAD_TOLERANCE):
        return loss, point, prior, False
    loss, point = _joint_search(fit, grids, best)
    return loss, point, best, True


def fit_efficiencies(family: str, mem_efficiency: float | None = None) -> dict[str, Any]:
    """Fit what llm-foundry's stack loses on one device family ('a100' or 'h100'), the GEMM rate
    held at the family's MAMF (mamf_efficiency): its matrix kernels' share of that rate, memory
    efficiency, its fused attention kernels' share and the per-operation overhead, jointly, by
    least squares over the section's 8-GPU rows at seq 2048 and from ATTENTION_SEQ tokens on
    (where attention is most of the work; simplan.device_fit._fit_joint).
    With mem_efficiency given, it is held: the H100 section has 5 seq-2048 rows, too few to tell
    memory-bound work from matrix work apart (its best-fit memory efficiency would make the H100
    stream memory slower than the A100), so it takes the A100's HBM streaming efficiency."""
    from simplan.devices import get_device

    section, cluster, preset = FITS[family]
    gemm, gemm_source = mamf_efficiency(family)
    base = get_device(preset).with_(gemm_efficiency=gemm)
    rows, long_rows = mpt_rows(section), attention_rows(section)
    sim, long_sim = RowSimulator(rows, cluster), RowSimulator(long_rows, cluster)
    sets = [(sim, base), (long_sim, base)]
    others: dict[str, tuple[RowSimulator, DeviceModel]] = {}
    for other, other_cluster, other_preset in ALSO_FITTED.get(family, ()):
        fit_rows = [r for r in mpt_rows(other, gpus=None, seq_len=None) if is_fit_row(r)]
        others[other] = (
            RowSimulator(fit_rows, other_cluster),
            get_device(other_preset).with_(gemm_efficiency=gemm),
        )
    sets += others.values()
    mem_grid = MEM_GRID if mem_efficiency is None else (mem_efficiency,)
    matrices = tuple(matrix for matrix in MATRIX_GRID if matrix <= gemm)
    _, point, overhead, identified = _fit_joint(
        JointFit(sims=tuple(sets)), (matrices, mem_grid, ATTENTION_GRID)
    )
    matrix, mem, attention = point
    stack = matrix / gemm
    fitted = JointFit.device(base, point, overhead)
    table, long_table = sim.table(fitted), long_sim.table(fitted)
    loss, long_loss = table_loss(table), table_loss(long_table)
    also = "".join(
        f" and the {len(other_sim.rows)} such rows of '{name}' (on {other_base.name})"
        for name, (other_sim, other_base) in others.items()
    )
    return {
        "gemm_efficiency": gemm,
        "gemm_source": gemm_source,
        "stack_gemm_efficiency": stack,
        "mem_efficiency": mem,
        "kernel_overhead_s": overhead,
        "stack_attention_efficiency": attention,
        "attention_source": (
            f"simplan/data/reference/{FIT_FILE}: least-squares (log) fit over the "
            f"{len(long_rows)} '{section}', 8-GPU MPT rows of {ATTENTION_SEQ}-65536 tokens "
            f"(llm-foundry's triton flash attention), grid {ATTENTION_GRID[0]}-"
            f"{ATTENTION_GRID[-1]}, fitted jointly with the other constants (see source)"
        ),
        "attention_rms_log_error": round(math.sqrt(long_loss / len(long_rows)), 5),
        "attention_rows": long_table,
        "source": (
            f"simplan/data/reference/{FIT_FILE}: joint least-squares (log) fit over the "
            f"{len(rows)} '{section}', 8-GPU, seq-2048 MPT rows (llm-foundry, FSDP FULL_SHARD, "
            f"bf16, fp32 reduction), its {len(long_rows)} rows from {ATTENTION_SEQ} tokens{also}, "
            f"simulated on one {cluster} node with the GEMM rate at MAMF; grid "
            f"matrix efficiency (MAMF x stack) {matrices[0]}-{matrices[-1]} x "
            + (
                f"mem {MEM_GRID[0]}-{MEM_GRID[-1]}"
                if mem_efficiency is None
                else f"mem_efficiency {mem_efficiency} (the A100 fit's, shared)"
            )
            + f" x attention {ATTENTION_GRID[0]}-{ATTENTION_GRID[-1]} x overhead "
            f"{min(OVERHEAD_GRID) * 1e6:g}-{max(OVERHEAD_GRID) * 1e6:g} us"
        ),
        "rms_log_error": round(math.sqrt(loss / len(rows)), 5),
        "kernel_overhead_identified": identified,
        "rows": table,
        "other_sections": {
            name: other_sim.table(JointFit.device(other_base, point, overhead))
            for name, (other_sim, other_base) in others.items()
        },
        "derived_by": "benchmarks/calibrate_devices.py (simplan.device_fit.fit_efficiencies)",
    }
