"""int8 dynamic quantization on this CPU: predicted against measured forward time.

    .venv/bin/python benchmarks/quantized_forward.py [--models gpt-tiny:1,4,8;mlp:64,512]
        [--rates traces/quant/int8-linear-<cpu>.json] [--calls 21] [--out FILE.json]

For each model and batch: the fp32 forward time (eval, no_grad, 1 thread) is measured, the
model is quantized with torch.ao.quantization.quantize_dynamic (nn.Linear -> int8 weights,
activations quantized per call) and its forward time measured; the prediction is the fp32 time
with each linear layer's fp32 time swapped for its int8 time from the stored per-shape rates
(simplan.quant_time, measured by benchmarks/int8_linear_rates.py in another process). Times
are median CPU times of single forward passes, under the same fixed allocation policy as the
rates (see int8_linear_rates.time_call and MALLOC_ENV). Prints a table
and writes benchmarks/results/quantized_forward.json, with the weight bytes before and after.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from int8_linear_rates import MALLOC_ENV, fixed_allocation, quantized, time_call  # noqa: E402

from simplan.environment import cpu_name, environment  # noqa: E402
from simplan.outputs import write_json_atomic  # noqa: E402
from simplan.quant_time import linear_shapes, predict_int8_forward_s, read_rates  # noqa: E402


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of parameters and packed quantized weights (state_dict tensors)."""
    total = 0
    for value in model.state_dict().values():
        if isinstance(value, torch.Tensor):
            total += value.numel() * value.element_size()
        elif isinstance(value, tuple):  # packed (weight, bias) of a quantized linear layer
            total += sum(t.numel() * t.element_size() for t in value if t is not None)
    return total


def row(spec: str, batch: int, rates: Any, calls: int) -> dict[str, Any]:
    from simplan.build import instantiate
    from simplan.sources import resolve, transformer_spec

    source = resolve(spec)
    tspec = transformer_spec(source) if source.kind == "toml" else None
    model, inputs = instantiate(
        source, tspec, batch=batch, seq_len=None, device="cpu", dtype="fp32"
    )
    model.eval()
    shapes = linear_shapes(model, inputs)
    fp32_s = time_call(model, inputs, calls)
    qmodel = quantized(model).eval()
    int8_s = time_call(qmodel, inputs, calls)
    predicted_s = predict_int8_forward_s(fp32_s, shapes, rates)
    return {
        "model": spec,
        "batch": batch,
        "linear_calls": len(shapes),
        "fp32_forward_s": fp32_s,
        "int8_forward_s": int8_s,
        "predicted_int8_forward_s": predicted_s,
        "error": predicted_s / int8_s - 1,
        "fp32_weight_bytes": weight_bytes(model),
        "int8_weight_bytes": weight_bytes(qmodel),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", default="gpt-tiny:1,4,8;gpt-tiny#prune=heads:0.5:4;mlp:64,512")
    slug = "".join(c if c.isalnum() else "-" for c in cpu_name().lower()).strip("-")[:40]
    p.add_argument("--rates", default=str(ROOT / "traces" / "quant" / f"int8-linear-{slug}.json"))
    p.add_argument("--calls", type=int, default=21)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "quantized_forward.json"))
    args = p.parse_args()
    fixed_allocation()  # as the rates were measured
    torch.set_num_threads(1)
    rates = read_rates(args.rates)
    rows = []
    print(f"{'model':28} {'batch':>5} {'fp32 ms':>9} {'int8 ms':>9} {'pred ms':>9} {'error':>7}")
    for item in args.models.split(";"):
        spec, batches = item.rsplit(":", 1)
        for batch in (int(b) for b in batches.split(",")):
            r = row(spec, batch, rates, args.calls)
            rows.append(r)
            print(f"{spec:28} {batch:5d} {r['fp32_forward_s'] * 1e3:9.2f} "
                  f"{r['int8_forward_s'] * 1e3:9.2f} {r['predicted_int8_forward_s'] * 1e3:9.2f} "
                  f"{r['error']:+7.1%}")  # fmt: skip
    doc = {
        "rates": args.rates,
        "environment": environment(device="cpu", threads=1, environment_variables=MALLOC_ENV),
        "rows": rows,
    }
    write_json_atomic(doc, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
