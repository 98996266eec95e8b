"""Knobs that change the model itself: structured pruning and weight quantization (no torch).

A knob travels with the model spec as a suffix, so every verb, plan file and real run that
loads the spec builds the same smaller model: `resnet50#prune=channels:0.3`,
`gpt-tiny#prune=heads:0.5,ffn:0.25#quantize=int8-dynamic`. The command line writes the suffix
from `--prune` and `--quantize` (see PRUNE_HELP and QUANTIZE_HELP).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from simplan.errors import SimplanError
from simplan.transformer_shape import TransformerSpec
from simplan.units import DTYPE_BYTES

KNOB_SEP = "#"
# what can be pruned: channels of a CNN module (Torch-Pruning, following layer dependencies);
# attention heads, FFN width and whole blocks of a transformer shape
MODULE_PRUNE = ("channels",)
SHAPE_PRUNE = ("heads", "ffn", "layers")
PRUNE_WHAT = MODULE_PRUNE + SHAPE_PRUNE
# bits per weight of the quantized linear layers' weights; int8-dynamic also quantizes the
# activations at run time (torch.ao.quantization.quantize_dynamic, inference only)
QUANT_BITS = {"int8": 8, "int4": 4, "fp8": 8, "int8-dynamic": 8}
# what a weight-only format stores beside the weights: (weights per scale, bytes per scale),
# 0 weights per scale = one per row of the weight matrix (per output channel), -1 = one per
# tensor. int8: an fp32 scale per output channel (bitsandbytes' Int8Params, torchao's int8
# weight-only); int4: an fp32 absmax per block of 64 weights (bitsandbytes' 4-bit format as
# QLoRA uses it, without double quantization); fp8 (e4m3) and int8-dynamic: one fp32 scale per
# tensor (torch.ao's per-tensor qint8 is symmetric: its zero point is 0 and not counted)
QUANT_SCALES = {"int8": (0, 4), "int4": (64, 4), "fp8": (-1, 4), "int8-dynamic": (-1, 4)}
ALL_LINEAR = ""  # the kind of `--quantize DTYPE` without KIND=: every linear layer's weights

PRUNE_HELP = (
    "structured pruning, WHAT:FRACTION[,WHAT:FRACTION]: 'channels:0.3' removes 30%% of every "
    "prunable convolution's channels (torch modules, Torch-Pruning); 'heads:0.5', 'ffn:0.25' "
    "and 'layers:0.5' shrink a transformer shape's attention heads, FFN width or blocks"
)
MAX_IMAGE_SIZE = 4096  # pixels a side: beyond any vision preset's training images
QUANTIZE_HELP = (
    "weight-only quantization: DTYPE (every linear layer's weights) or KIND=DTYPE[,...] per "
    "layer kind of the model graph (e.g. transformer_block=int4,embedding=int8); DTYPE int8, "
    "int4 or fp8. A quantized weight is frozen, as when fine-tuning over a quantized base: it "
    "is stored at that width (plus its scales: int8 one fp32 per output channel, int4 one fp32 "
    "per 64 weights, fp8 one fp32 per tensor), dequantized to the compute dtype at each use, "
    "and has no gradient, optimizer state or gradient sync; the backward still computes the "
    "gradient of its input. A float DTYPE (fp32, bf16, fp16) for a kind must equal --dtype. "
    "int8-dynamic (int8 weights and activations) is for inference (a teacher)"
)


@dataclass(frozen=True, kw_only=True)
class ModelKnobs:
    """prune: (what, fraction removed) pairs; quantize: '' or a key of QUANT_BITS."""

    prune: tuple[tuple[str, float], ...] = ()
    quantize: str = ""
    image_size: int = 0  # a vision preset's input side in pixels (0: the preset's own)

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for what, fraction in self.prune:
            if what not in PRUNE_WHAT:
                raise SimplanError(
                    f"cannot prune {what!r}: use one of {', '.join(PRUNE_WHAT)} (e.g. "
                    f"--prune channels:0.3)"
                )
            if what in seen:
                raise SimplanError(f"--prune names {what} twice; give it once")
            seen.add(what)
            if not (isinstance(fraction, float) and 0.0 < fraction < 1.0):
                raise SimplanError(
                    f"--prune {what}:{fraction}: the fraction removed must be above 0 and "
                    f"below 1 (pruning everything leaves no model)"
                )
        if self.quantize:
            parse_quantize(self.quantize)  # validates
        if not 0 <= self.image_size <= MAX_IMAGE_SIZE:
            raise SimplanError(
                f"image={self.image_size}: give an image side of 1 to {MAX_IMAGE_SIZE} pixels"
            )

    def __bool__(self) -> bool:
        return bool(self.prune or self.quantize or self.image_size)

    def fraction(self, what: str) -> float:
        return dict(self.prune).get(what, 0.0)

    def suffix(self) -> str:
        """The spec suffix ('' without knobs)."""
        parts = []
        if self.prune:
            parts.append("prune=" + ",".join(f"{w}:{f:g}" for w, f in self.prune))
        if self.quantize:
            parts.append(f"quantize={self.quantize}")
        if self.image_size:
            parts.append(f"image={self.image_size}")
        return "".join(KNOB_SEP + p for p in parts)

    def describe(self) -> str:
        parts = [f"{w} -{f:.0%}" for w, f in self.prune]
        for kind, dtype in self.quantize_kinds():
            parts.append(f"{dtype} {kind or 'linear'} weights")
        if self.image_size:
            parts.append(f"{self.image_size}x{self.image_size} images")
        return ", ".join(parts)

    def quantize_kinds(self) -> tuple[tuple[str, str], ...]:
        """(layer kind, dtype) pairs of --quantize; kind ALL_LINEAR: every linear weight."""
        return parse_quantize(self.quantize) if self.quantize else ()


def parse_quantize(text: str) -> tuple[tuple[str, str], ...]:
    """'int8' (every linear weight) or 'KIND=DTYPE[,KIND=DTYPE]' (also KIND:DTYPE) into
    (kind, dtype) pairs; the dtypes are checked here, the kinds against the model's graph."""
    valid = (*QUANT_BITS, *DTYPE_BYTES)
    pairs = []
    for item in text.split(","):
        kind, sep, dtype = item.strip().replace(":", "=").rpartition("=")
        kind, dtype = kind.strip(), dtype.strip()
        if sep and not kind:
            raise SimplanError(f"--quantize {text!r}: write KIND=DTYPE, e.g. linear=int8")
        if dtype not in valid:
            raise SimplanError(
                f"unknown quantization dtype {dtype!r}: use one of {', '.join(valid)} "
                f"(--quantize int8 or --quantize KIND=DTYPE,...)"
            )
        if not sep and dtype not in QUANT_BITS:
            raise SimplanError(
                f"--quantize {dtype}: a float dtype applies to a layer kind (KIND={dtype}); "
                "the whole model's dtype is --dtype"
            )
        pairs.append((kind or ALL_LINEAR, dtype))
    kinds = [k for k, _ in pairs]
    if len(set(kinds)) != len(kinds) or (ALL_LINEAR in kinds and len(kinds) > 1):
        raise SimplanError(
            f"--quantize {text!r}: name each layer kind once (DTYPE alone means every linear "
            "layer and takes no KIND=DTYPE beside it)"
        )
    return tuple(pairs)


def parse_prune(text: str) -> tuple[tuple[str, float], ...]:
    """'channels:0.3' or 'heads:0.5,ffn:0.25' (also WHAT=FRACTION) into (what, fraction)s."""
    pairs = []
    for item in text.split(","):
        what, sep, value = item.strip().replace("=", ":").partition(":")
        if not sep:
            raise SimplanError(
                f"--prune {text!r}: write WHAT:FRACTION, e.g. channels:0.3 or heads:0.5"
            )
        try:
            fraction = float(value.rstrip("%")) / (100.0 if value.endswith("%") else 1.0)
        except ValueError:
            raise SimplanError(f"--prune {item!r}: {value!r} is not a fraction") from None
        if not math.isfinite(fraction):
            raise SimplanError(f"--prune {item!r}: the fraction must be a finite number")
        pairs.append((what.strip(), fraction))
    ModelKnobs(prune=tuple(pairs))  # validates
    return tuple(pairs)


def split_spec(spec: str) -> tuple[str, ModelKnobs]:
    """A model spec without its knob suffix, and the knobs."""
    base, *parts = spec.split(KNOB_SEP)
    prune: tuple[tuple[str, float], ...] = ()
    quantize = ""
    image_size = 0
    for part in parts:
        key, _, value = part.partition("=")
        if key == "prune":
            prune = parse_prune(value)
        elif key == "quantize":
            quantize = value
        elif key == "image":
            image_size = _image_size(spec, value)
        else:
            raise SimplanError(
                f"model {spec!r}: unknown model knob {key!r}; use prune=..., quantize=... or "
                "image=..."
            )
    return base, ModelKnobs(prune=prune, quantize=quantize, image_size=image_size)


def _image_size(spec: str, value: str) -> int:
    """The pixels of `image=N` (a positive integer), or one line saying what to write."""
    if not value.isdigit() or int(value) == 0:
        raise SimplanError(f"model {spec!r}: image={value!r}: give the image side in pixels")
    return int(value)


def with_knobs(spec: str, *, prune: str | None = None, quantize: str | None = None) -> str:
    """The spec with the knobs of --prune and --quantize added (both None: spec unchanged)."""
    base, knobs = split_spec(spec)
    new = ModelKnobs(
        prune=parse_prune(prune) if prune else knobs.prune,
        quantize=quantize if quantize else knobs.quantize,
        image_size=knobs.image_size,
    )
    return base + new.suffix()


def kept(n: int, fraction: float) -> int:
    """Units left of n after removing `fraction` of them, Torch-Pruning's rounding: the removed
    count is rounded up (n * fraction) but at least one unit stays."""
    return max(1, n - math.ceil(n * fraction - 1e-9))


def prune_shape(spec: TransformerSpec, knobs: ModelKnobs) -> TransformerSpec:
    """The transformer shape with heads, FFN width or blocks removed: the head size stays, so
    fewer heads narrow the attention (its QKV and output projections); with grouped-query
    attention heads go from every KV group alike."""
    if knobs.fraction("channels"):
        raise SimplanError(
            f"{spec.name} is a transformer shape: prune heads, ffn or layers, not channels"
        )
    changes: dict[str, Any] = {}
    if knobs.fraction("heads"):
        fraction, groups = knobs.fraction("heads"), spec.kv_heads
        if groups < spec.num_heads:  # GQA: each KV group keeps its share of query heads
            heads, kv = groups * kept(spec.num_heads // groups, fraction), groups
        else:
            heads = kv = kept(spec.num_heads, fraction)
        changes.update(num_heads=heads, num_kv_heads=kv, kv_channels=spec.head_dim)
    if knobs.fraction("ffn"):
        changes["ffn_hidden_size"] = kept(spec.ffn, knobs.fraction("ffn"))
    if knobs.fraction("layers"):
        changes["num_layers"] = kept(spec.num_layers, knobs.fraction("layers"))
    return dataclasses.replace(spec, **changes)
