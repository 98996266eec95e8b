"""Where the time of a tiny int8 dynamically quantized model goes (1 thread, this CPU).

    .venv/bin/python benchmarks/int8_call_overhead.py [--model mlp] [--batch 64] [--calls 41]
        [--out traces/quant/int8-call-overhead-<cpu>.json]

The model's fp32 and int8 (torch.ao.quantization.quantize_dynamic) forward passes are timed as
benchmarks/quantized_forward.py times them, and so is every one of its linear layers alone on
the rows it sees in the forward (fp32 and int8, int8_linear_rates.time_call: median thread CPU
time of single calls after evicting L2). The residual of each forward (the forward less its
linear layers) is what the per-layer swap of simplan.quant_time assumes unchanged by
quantization; a difference between the two residuals is a per-forward cost that quantization
adds beyond its layers. The JSON (traces/quant/, with the machine's metadata) records every
time, and the stored per-shape rates' prediction of each layer at these rows.
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
from torch import nn  # noqa: E402

from simplan.environment import cpu_name, environment  # noqa: E402
from simplan.outputs import write_json_atomic  # noqa: E402
from simplan.quant_time import linear_shapes, read_rates  # noqa: E402


def layer_rows(shapes: list[tuple[int, int, int]], calls: int, rates: Any) -> list[dict]:
    rows = []
    for m, k, n in shapes:
        x = torch.randn(m, k)
        fp32 = nn.Linear(k, n).eval()
        int8 = quantized(nn.Sequential(nn.Linear(k, n))).eval()
        rows.append(
            {
                "m": m,
                "k": k,
                "n": n,
                "fp32_s": time_call(fp32, x, calls),
                "int8_s": time_call(int8, x, calls),
                "rates_fp32_s": rates.time_s("fp32", (m, k, n)),
                "rates_int8_s": rates.time_s("int8", (m, k, n)),
            }
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="mlp")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--calls", type=int, default=41)
    slug = "".join(c if c.isalnum() else "-" for c in cpu_name().lower()).strip("-")[:40]
    p.add_argument("--rates", default=str(ROOT / "traces" / "quant" / f"int8-linear-{slug}.json"))
    p.add_argument(
        "--out", default=str(ROOT / "traces" / "quant" / f"int8-call-overhead-{slug}.json")
    )
    args = p.parse_args()
    fixed_allocation()
    torch.set_num_threads(1)
    from simplan.build import instantiate
    from simplan.sources import resolve

    model, inputs = instantiate(
        resolve(args.model), None, batch=args.batch, seq_len=None, device="cpu", dtype="fp32"
    )
    model.eval()
    shapes = linear_shapes(model, inputs)
    fp32_s = time_call(model, inputs, args.calls)
    int8_s = time_call(quantized(model).eval(), inputs, args.calls)
    layers = layer_rows(shapes, args.calls, read_rates(args.rates))
    rest_fp32 = fp32_s - sum(r["fp32_s"] for r in layers)
    rest_int8 = int8_s - sum(r["int8_s"] for r in layers)
    doc = {
        "what": "forward of a model in fp32 and int8 dynamic, and each of its linear layers "
        "alone on the same rows: median thread CPU seconds of single calls after evicting L2",
        "model": args.model,
        "batch": args.batch,
        "fp32_forward_s": fp32_s,
        "int8_forward_s": int8_s,
        "layers": layers,
        "fp32_rest_s": rest_fp32,
        "int8_rest_s": rest_int8,
        "int8_extra_per_forward_s": rest_int8 - rest_fp32,
        "method": {"threads": 1, "calls": args.calls, "environment_variables": MALLOC_ENV},
        "environment": environment(device="cpu", threads=1, environment_variables=MALLOC_ENV),
        "rates": args.rates,
    }
    print(f"{'M':>6} {'K':>5} {'N':>5} {'fp32 us':>8} {'int8 us':>8} {'rates fp32':>10} "
          f"{'rates int8':>10}")  # fmt: skip
    for r in layers:
        print(f"{r['m']:6d} {r['k']:5d} {r['n']:5d} {r['fp32_s'] * 1e6:8.1f} "
              f"{r['int8_s'] * 1e6:8.1f} {r['rates_fp32_s'] * 1e6:10.1f} "
              f"{r['rates_int8_s'] * 1e6:10.1f}")  # fmt: skip
    print(f"forward fp32 {fp32_s * 1e6:.1f} us (rest {rest_fp32 * 1e6:.1f}), int8 "
          f"{int8_s * 1e6:.1f} us (rest {rest_int8 * 1e6:.1f}); int8 extra per forward "
          f"{(rest_int8 - rest_fp32) * 1e6:+.1f} us")  # fmt: skip
    write_json_atomic(doc, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
