"""Gradient compression and local SGD as torch runs them: what goes on the wire, and what the
compression computes.

Compression follows torch's DDP communication hooks (torch.distributed.algorithms.ddp_comm_hooks):

- 'fp16' / 'bf16' (fp16_compress_hook and its bfloat16 twin): each bucket is cast to the half
  type and divided by the world size (encode), all-reduced at 2 bytes per element, and copied
  back into the fp32 bucket (decode).
- 'powersgd' (powerSGD_hook, warm start, error feedback): per bucket, every gradient is viewed
  as a matrix m x n (its first dimension by the rest); a 1-D gradient, and a matrix that
  compression would not shrink by torch's min_compression_rate of 2, is all-reduced
  uncompressed; each other matrix becomes P (m x r') and Q (n x r'), r' = min(m, n, r). Three
  all-reduces in sequence: the uncompressed part, all P, all Q, with P's orthogonalisation and
  Q = M^T P between the last two.

Compression compute is priced by rates fitted to measurements of this CPU
(benchmarks/compression_costs.py -> traces/compression/<device>.json); on a device with no such
file, by the device model's roofline (memory traffic for casts and element-wise work, GEMM rate
for the matmuls).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from simplan.devices import DeviceModel
from simplan.errors import SimplanError
from simplan.model_graph import Layer

# torch's PowerSGD and post-local SGD both start with plain all-reduce steps: PowerSGDState's
# start_powerSGD_iter (torch requires > 1 with error feedback or warm start) and
# PostLocalSGDState's start_localSGD_iter / PeriodicModelAverager's warmup_steps. The runtime
# sets them to this, the fewest torch allows.
SYNC_WARMUP_STEPS = 2
MIN_COMPRESSION_RATE = 2  # PowerSGDState's default
HALF_BYTES = 2
COSTS_DIR = Path(__file__).resolve().parents[1] / "traces" / "compression"

Shape = tuple[int, ...]


def has_sync_warmup(config: Any) -> bool:
    """Whether the configuration's synchronisation starts with SYNC_WARMUP_STEPS plain steps
    (PowerSGD, post-local SGD)."""
    return bool(config.compress == "powersgd" or config.local_sgd > 1)


def layer_shapes(layer: Layer) -> tuple[Shape, ...]:
    """The shapes of the layer's trainable parameters, as counted (attrs['param_shapes'] less
    the frozen quantized weights); a layer with
    parameters but no shapes (a graph counted before shapes were recorded) is refused."""
    shapes = layer.attrs.get("param_shapes")
    if shapes is None:
        if layer.params:
            raise SimplanError(
                f"layer {layer.name} records no parameter shapes, which PowerSGD needs: "
                "count the model again (simplan profile --model ...)"
            )
        return ()
    out = [tuple(int(d) for d in s) for s in shapes]
    for frozen in layer.attrs.get("frozen_shapes", []):  # no gradients (simplan.quantize)
        out.remove(tuple(int(d) for d in frozen))
    return tuple(out)


def matrix_of(shape: Shape) -> tuple[int, int] | None:
    """The matrix PowerSGD views a gradient as (None for a 1-D or scalar one)."""
    if len(shape) <= 1:
        return None
    return shape[0], math.prod(shape[1:])


@dataclass(frozen=True, kw_only=True)
class PowerSGDSplit:
    """One bucket under PowerSGD: elements all-reduced uncompressed, and the compressed
    matrices (m, n, r')."""

    uncompressed_elems: int
    matrices: tuple[tuple[int, int, int], ...]

    @property
    def p_elems(self) -> int:
        return sum(m * r for m, _, r in self.matrices)

    @property
    def q_elems(self) -> int:
        return sum(n * r for _, n, r in self.matrices)

    @property
    def matmul_flops(self) -> float:
        """One of the three products (P = M Q, Q = M^T P, M = P Q^T): 2 m n r' each."""
        return float(sum(2 * m * n * r for m, n, r in self.matrices))

    @property
    def matrix_elems(self) -> int:
        return sum(m * n for m, n, _ in self.matrices)


@functools.lru_cache(maxsize=4096)
def powersgd_split(shapes: tuple[Shape, ...], rank: int) -> PowerSGDSplit:
    """torch's powerSGD_hook's split of a bucket's gradients (its _should_compress)."""
    plain, matrices = 0, []
    for shape in shapes:
        mat = matrix_of(shape)
        if mat is None:
            plain += math.prod(shape)
            continue
        m, n = mat
        r = min(m, n, rank)
        if (m + n) * r * MIN_COMPRESSION_RATE < m * n:
            matrices.append((m, n, r))
        else:
            plain += m * n
    return PowerSGDSplit(uncompressed_elems=plain, matrices=tuple(matrices))


def wire_bytes(
    compress: str, shapes: tuple[Shape, ...], rank: int, grad_bytes: int
) -> tuple[float, ...]:
    """Bytes per rank of each all-reduce one bucket of gradients `shapes` needs, in order."""
    elems = sum(math.prod(s) for s in shapes)
    if compress == "none":
        return (float(elems * grad_bytes),)
    if compress in ("fp16", "bf16"):
        return (float(elems * HALF_BYTES),)
    if compress == "powersgd":
        split = powersgd_split(shapes, rank)
        parts = (split.uncompressed_elems, split.p_elems, split.q_elems)
        return tuple(float(n * grad_bytes) for n in parts)
    raise SimplanError(f"unknown compression {compress!r}")


@dataclass(frozen=True, kw_only=True)
class CompressionRates:
    """Fitted costs of one device (see benchmarks/compression_costs.py for each formula)."""

    cast_encode: dict[str, tuple[float, float]]  # dtype -> (per call s, s per element)
    cast_decode: dict[str, tuple[float, float]]
    half_reduce_s_per_elem: dict[str, float]  # gloo's software sum of half elements
    powersgd: dict[str, tuple[float, float, float]]  # phase -> per matrix, per flop, per elem
    averaging: tuple[float, float]  # per call s, s per parameter
    hook_s: float  # a Python DDP hook per bucket, with its future's first callback
    callback_s: float  # each further chained callback
    nested_extra_s: float  # an all-reduce issued from a callback, beyond one from the main thread
    # powerSGD_hook per bucket beyond its tensor work: (per bucket s, s per element)
    powersgd_bookkeeping: tuple[float, float]
    cast_bookkeeping: dict[str, tuple[float, float]]  # the fp16 / bf16 hooks' likewise
    source: str


@lru_cache(maxsize=16)
def rates_for(device_name: str) -> CompressionRates | None:
    """The measured rates of a device (traces/compression/<name>.json), or None."""
    path = COSTS_DIR / f"{device_name}.json"
    if not path.is_file():
        return None
    from simplan.io import read_json

    return rates_from_doc(read_json(path), str(path.relative_to(COSTS_DIR.parents[1])))


def _pair(values: Any) -> tuple[float, float]:
    return float(values[0]), float(values[1])


def rates_from_doc(doc: dict[str, Any], source: str) -> CompressionRates:
    """The rates of a benchmarks/compression_costs.py document."""
    casts, psgd, hook = doc["casts"], doc["powersgd"], doc["python_hook"]
    return CompressionRates(
        cast_encode={k: (v["encode"][0], v["encode"][1]) for k, v in casts.items()},
        cast_decode={k: (v["decode"][0], v["decode"][1]) for k, v in casts.items()},
        half_reduce_s_per_elem=dict(doc["half_reduce"]["extra_s_per_elem"]),
        powersgd={k: (psgd[k][0], psgd[k][1], psgd[k][2]) for k in ("encode", "middle", "decode")},
        averaging=(doc["averaging"]["fit"][0], doc["averaging"]["fit"][1]),
        hook_s=float(hook["hook_s"]),
        callback_s=float(hook["callback_s"]),
        nested_extra_s=float(hook.get("nested_extra_s", 0.0)),
        powersgd_bookkeeping=_pair(doc.get("powersgd_bookkeeping", {}).get("fit", (0.0, 0.0))),
        cast_bookkeeping={k: _pair(v["fit"]) for k, v in doc.get("cast_bookkeeping", {}).items()},
        source=source,
    )


@dataclass(frozen=True, kw_only=True)
class BucketCompute:
    """Compression compute of one bucket: `encode_s` in the hook, before its first all-reduce;
    `between_s[i]` after all-reduce i (the callbacks chained on it)."""

    encode_s: float
    between_s: tuple[float, ...]


def _linear(coef: tuple[float, float], n: float) -> float:
    return coef[0] + coef[1] * n


def bucket_compute(
    compress: str,
    shapes: tuple[Shape, ...],
    rank: int,
    device: DeviceModel,
    grad_bytes: int,
    rates: CompressionRates | None = None,
) -> BucketCompute:
    """What compressing one bucket computes, priced by `rates` (default: the device's
    measured rates), else by its roofline."""
    wires = wire_bytes(compress, shapes, rank, grad_bytes)
    if compress == "none":
        return BucketCompute(encode_s=0.0, between_s=(0.0,) * len(wires))
    elems = float(sum(math.prod(s) for s in shapes))
    rates = rates or rates_for(device.name)
    if compress in ("fp16", "bf16"):
        if rates is not None and compress in rates.cast_encode:
            encode = _linear(rates.cast_encode[compress], elems)
            decode = _linear(rates.cast_decode[compress], elems)
            decode += rates.half_reduce_s_per_elem.get(compress, 0.0) * elems + rates.hook_s
            decode += _linear(rates.cast_bookkeeping.get(compress, (0.0, 0.0)), elems)
        else:  # read fp32, write half; read half, write fp32
            encode = device.memory_time_s(elems * (grad_bytes + HALF_BYTES) * 2)
            decode = device.memory_time_s(elems * (grad_bytes + HALF_BYTES))
        return BucketCompute(encode_s=encode, between_s=(decode,))
    split = powersgd_split(shapes, rank)
    phases = _powersgd_phases(split, elems, device, grad_bytes, rates)
    plain = device.memory_time_s(split.uncompressed_elems * grad_bytes * 3)  # div, copy back
    if rates is not None:  # the callbacks: copies of the plain part back, the hook's, and
        # P's and Q's all-reduces, issued from callbacks
        plain = _linear(rates.cast_decode.get("fp16", (0.0, 0.0)), split.uncompressed_elems)
        plain += rates.hook_s + 2 * (rates.callback_s + rates.nested_extra_s)
        plain += _linear(rates.powersgd_bookkeeping, elems)
    return BucketCompute(encode_s=phases[0], between_s=(plain, phases[1], phases[2]))


def _powersgd_phases(
    split: PowerSGDSplit,
    elems: float,
    device: DeviceModel,
    grad_bytes: int,
    rates: CompressionRates | None,
) -> tuple[float, float, float]:
    """(encode, middle, decode) seconds of PowerSGD on one bucket."""
    k = len(split.matrices)
    flops = split.matmul_flops
    if rates is not None:
        a, b, c = (rates.powersgd[p] for p in ("encode", "middle", "decode"))
        # the error feedback (encode, decode) covers the whole bucket, matrices and the rest
        return (
            a[0] * k + a[1] * flops + a[2] * elems,
            b[0] * k + b[1] * flops + b[2] * split.matrix_elems,
            c[0] * k + c[1] * flops + c[2] * elems,
        )
    gemm = device.gemm_time_s(flops, "fp32") if flops else 0.0
    feedback = device.memory_time_s(elems * grad_bytes * 3)  # add, copy; subtract
    return (gemm + feedback, gemm, gemm + feedback)


def averaging_compute_s(params: float, device: DeviceModel, grad_bytes: int) -> float:
    """Local SGD's parameter averaging without its all-reduce (flatten, divide, copy back)."""
    rates = rates_for(device.name)
    if rates is not None:
        return _linear(rates.averaging, params)
    return device.memory_time_s(params * grad_bytes * 4)


def compression_source(device: DeviceModel) -> str:
    """Where compression compute prices come from, for the result."""
    rates = rates_for(device.name)
    return rates.source if rates is not None else f"roofline of {device.name}"
