"""FP8 training: predicted vs published, on simplan/data/reference/fp8_training_speedups.csv and
the 'H100 80GB FP8' rows of llmfoundry_mpt_throughput.csv.

Three groups of rows (NVIDIA Hopper only: the device presets with FP8 peaks):
  mpt     llm-foundry MPT-1b/3b on 8 H100s, FSDP, Transformer Engine FP8 (DelayedScaling, its
          default): tokens/s/GPU, absolute, and the FP8/BF16 speedup of each published pair;
  te      Transformer Engine's per-layer GEMM times of a 5B transformer on an H200 (hidden 4096,
          FFN 16384, M 15,872 tokens; 12 GEMMs, quantization included): the BF16/FP8 ratio;
  torchao Llama3-8B on 8 H100s with FSDP2 and torchao float8 tensorwise (current scaling): the
          tokens/s speedup.
Prints one table and writes benchmarks/results/sim_fp8.json. Acceptance: the median error over
all rows within 15%.

    PYTHONPATH=$PWD python benchmarks/sim_fp8.py
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from simplan.device_fit import RowSimulator, ThroughputRow, mpt_rows, read_reference_csv, row_config
from simplan.devices import DeviceModel, get_device
from simplan.fp8 import fp8_pass_time_s
from simplan.io import write_json_atomic
from simplan.model_graph import Layer, OpCost

RESULTS = Path(__file__).resolve().parent / "results" / "sim_fp8.json"
SPEEDUPS = "fp8_training_speedups.csv"
ACCEPT = 0.15


def _tokens_per_gpu(sim: RowSimulator, row: ThroughputRow, fp8: str, device: DeviceModel) -> float:
    from simplan.sim.run import simulate

    config = row_config(row).replace(fp8=fp8)
    result = simulate(
        sim.graphs[(row.model, row.seq_len)],
        sim.clusters[row.gpus],
        config,
        record=False,
        device=device,
    )
    return result.samples_per_s * row.seq_len / row.gpus


def mpt_table() -> list[dict[str, Any]]:
    device = get_device("h100-sxm")
    fp8_rows = mpt_rows("H100 80GB FP8", gpus=8, seq_len=None)
    bf16_rows = {(r.model, r.seq_len): r for r in mpt_rows("H100 80GB BF16", gpus=8, seq_len=None)}
    sim = RowSimulator(fp8_rows + list(bf16_rows.values()), "dgx-h100")
    out = []
    for row in fp8_rows:
        measured = row.samples_per_s * row.seq_len / row.gpus
        predicted = _tokens_per_gpu(sim, row, "delayed", device)
        out.append(_row("mpt", f"MPT-{row.model} seq {row.seq_len} tokens/s/GPU",
                        measured, predicted))  # fmt: skip
        base = bf16_rows.get((row.model, row.seq_len))
        if base is not None:
            measured_base = base.samples_per_s * base.seq_len / base.gpus
            predicted_base = _tokens_per_gpu(sim, base, "none", device)
            out.append(_row("mpt", f"MPT-{row.model} seq {row.seq_len} speedup",
                            measured / measured_base, predicted / predicted_base))  # fmt: skip
    return out


TE_RECIPES = {"FP8 DelayedScaling": "delayed", "FP8 CurrentScaling": "current",
              "FP8 Block Scaling": "block"}  # fmt: skip


def _te_layer(tokens: int, seq: int, hidden: int, ffn: int, heads: int) -> tuple[Layer, OpCost]:
    """The four linear GEMMs of a block for `tokens` tokens: QKV, attention out, MLP up, down
    (forward; the backward's dgrad and wgrad have the same FLOPs and operand sizes)."""
    gemms = []
    for k, n in ((hidden, 3 * hidden), (hidden, hidden), (hidden, ffn), (ffn, hidden)):
        flops = 2.0 * tokens * k * n
        nbytes = 2.0 * (tokens * k + k * n + tokens * n)
        gemms.append((flops, nbytes, 1))
    ops = OpCost(gemms=tuple(gemms))
    params = 3 * hidden * hidden + hidden * hidden + 2 * hidden * ffn
    layer = Layer(
        name="block", kind="transformer_block", params=params, param_bytes=2 * params,
        fwd_flops=ops.gemm_flops, bwd_flops=2 * ops.gemm_flops, activation_bytes=0.0,
        output_bytes=0.0, input_bytes=0.0, identity="te-5b-block", fwd_ops=ops,
        attrs={"seq_len": seq, "hidden_size": hidden, "ffn_hidden_size": ffn,
               "num_heads": heads, "num_kv_heads": heads},
    )  # fmt: skip
    return layer, ops


def te_table() -> list[dict[str, Any]]:
    device = get_device("h200")
    mb, seq = 31, 512
    layer, ops = _te_layer(1, seq, 4096, 16384, 32)
    per_sample = OpCost(gemms=tuple((f * seq, b, n) for f, b, n in ops.gemms))
    bwd = OpCost(gemms=tuple((f, b, 2 * n) for f, b, n in per_sample.gemms))

    def total(recipe: str) -> float:
        if recipe == "none":
            return sum(
                n * device.roofline_time_s(f * mb, b * mb, "bf16")
                for ops_ in (per_sample, bwd)
                for f, b, n in ops_.gemms
            )
        return fp8_pass_time_s(
            layer, per_sample, device, "bf16", recipe, mb, backward=False
        ) + fp8_pass_time_s(layer, bwd, device, "bf16", recipe, mb, backward=True)

    out = []
    for r in read_reference_csv(SPEEDUPS):
        if not r["hardware"].startswith("NVIDIA H200") or not r["other_config"].startswith(
            "autocast"
        ):
            continue
        recipe = TE_RECIPES[r["lowp_recipe"]]
        measured = float(r["baseline_value"]) / float(r["lowp_value"])
        out.append(_row("te", f"H200 GEMMs {r['lowp_recipe']} speedup", measured,
                        total("none") / total(recipe)))  # fmt: skip
    return out


def torchao_table() -> list[dict[str, Any]]:
    from simplan.parallel import ParallelConfig
    from simplan.sim.run import resolve_model, simulate
    from simplan.topology import load_cluster

    config = ParallelConfig(dp=8, global_batch=8, seq_len=8192, zero=3,
                            recompute="op", reduce_dtype="fp32")  # fmt: skip
    graph = resolve_model("llama3-8b", config)
    cluster = load_cluster("dgx-h100", nodes=1)
    times = {
        fp8: simulate(graph, cluster, config.replace(fp8=fp8), record=False).samples_per_s
        for fp8 in ("none", "current")
    }
    out = []
    for r in read_reference_csv(SPEEDUPS):
        if r["hardware"] == "NVIDIA H100" and r["lowp_recipe"].startswith("float8 tensorwise"):
            measured = float(r["lowp_value"]) / float(r["baseline_value"])
            out.append(_row("torchao", "Llama3-8B FSDP2 tensorwise speedup", measured,
                            times["current"] / times["none"]))  # fmt: skip
    return out


def _row(group: str, what: str, published: float, predicted: float) -> dict[str, Any]:
    return {
        "group": group,
        "what": what,
        "published": round(published, 4),
        "predicted": round(predicted, 4),
        "error": round(predicted / published - 1, 4),
    }


def main() -> int:
    rows = mpt_table() + te_table() + torchao_table()
    print(f"{'group':8} {'row':44} {'published':>10} {'predicted':>10} {'error':>7}")
    for r in rows:
        print(f"{r['group']:8} {r['what']:44} {r['published']:>10.4g} {r['predicted']:>10.4g} "
              f"{r['error']:>+7.1%}")  # fmt: skip
    median = statistics.median(abs(r["error"]) for r in rows)
    ok = median <= ACCEPT
    print(f"median |error| {median:.1%} over {len(rows)} rows ({'within' if ok else 'OVER'} "
          f"{ACCEPT:.0%})")  # fmt: skip
    write_json_atomic({"rows": rows, "median_abs_error": median, "accept": ACCEPT}, RESULTS)
    return 0 if ok else 1


if __name__ == "__main__":
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()  # --help: what it measures; it takes no options
    raise SystemExit(main())
