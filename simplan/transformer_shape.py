"""Transformer shapes: the `[transformer]` table of a model TOML file (no torch needed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simplan.errors import SimplanError
from simplan.limits import (
    MAX_FFN,
    MAX_HEADS,
    MAX_HIDDEN,
    MAX_LAYERS,
    MAX_PARAMS,
    MAX_SEQ_LEN,
    MAX_VOCAB,
)
from simplan.schema import Bool, Float, Int, Str, Table, validate

REQUIRED = ("hidden_size", "num_layers", "num_heads", "seq_len", "vocab_size")
ACTIVATIONS = ("gelu", "swiglu")
NORMS = ("layernorm", "rmsnorm")
POSITIONS = ("learned", "rope", "none")
ATTENTIONS = ("flash", "math")


@dataclass(frozen=True, kw_only=True)
class TransformerSpec:
    """A decoder-only transformer language model (GPT or Llama style)."""

    name: str
    hidden_size: int
    num_layers: int
    num_heads: int
    seq_len: int
    vocab_size: int
    ffn_hidden_size: int = 0  # 0 means 4 * hidden_size
    num_kv_heads: int = 0  # 0 means num_heads (multi-head attention); fewer is GQA
    activation: str = "gelu"
    tie_embeddings: bool = True
    norm: str = ""  # default: layernorm for gelu, rmsnorm for swiglu
    position: str = ""  # default: learned for gelu, rope for swiglu
    bias: bool | None = None  # default: True for gelu, False for swiglu
    attention: str = "flash"  # "flash" (fused kernel) or "math" (scores materialised)
    dropout: float = 0.0  # hidden and attention dropout probability
    head_size: int = 0  # 0 means hidden_size // num_heads; set when heads are pruned

    def __post_init__(self) -> None:
        for name in REQUIRED:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"[transformer] {name} must be a positive integer, got {value!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"[transformer] activation must be one of {ACTIVATIONS}, got {self.activation!r}"
            )
        if self.head_size < 0:
            raise ValueError(f"[transformer] head_size must be >= 0, got {self.head_size!r}")
        if not self.head_size and self.hidden_size % self.num_heads:
            raise ValueError(
                f"[transformer] hidden_size {self.hidden_size} must be divisible by "
                f"num_heads {self.num_heads}"
            )
        if self.kv_heads <= 0 or self.num_heads % self.kv_heads:
            raise ValueError(
                f"[transformer] num_heads {self.num_heads} must be a multiple of "
                f"num_kv_heads {self.num_kv_heads}"
            )
        if self.ffn_hidden_size < 0:
            raise ValueError("[transformer] ffn_hidden_size must be positive")
        if self.norm and self.norm not in NORMS:
            raise ValueError(f"[transformer] norm must be one of {NORMS}, got {self.norm!r}")
        if self.position and self.position not in POSITIONS:
            raise ValueError(f"[transformer] position must be one of {POSITIONS}")
        if self.attention not in ATTENTIONS:
            raise ValueError(
                f"[transformer] attention must be one of {ATTENTIONS}, got {self.attention!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"[transformer] dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def ffn(self) -> int:
        return self.ffn_hidden_size or 4 * self.hidden_size

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def head_dim(self) -> int:
        return self.head_size or self.hidden_size // self.num_heads

    @property
    def attention_width(self) -> int:
        """Width of the attention's output (heads x head size): the output projection's input."""
        return self.num_heads * self.head_dim

    @property
    def norm_kind(self) -> str:
        return self.norm or ("layernorm" if self.activation == "gelu" else "rmsnorm")

    @property
    def position_kind(self) -> str:
        return self.position or ("learned" if self.activation == "gelu" else "rope")

    @property
    def use_bias(self) -> bool:
        return self.activation == "gelu" if self.bias is None else self.bias

    def block_attrs(self) -> dict[str, Any]:
        return {
            "hidden_size": self.hidden_size,
            "num_heads": self.num_heads,
            "num_kv_heads": self.kv_heads,
            "ffn_hidden_size": self.ffn,
            "activation": self.activation,
            "seq_len": self.seq_len,
            "attention": self.attention,
            "dropout": self.dropout,
        }


TRANSFORMER_TABLE = Table(
    {
        "name": Str(nonempty=True),
        "hidden_size": Int(min=1, max=MAX_HIDDEN),
        "num_layers": Int(min=1, max=MAX_LAYERS),
        "num_heads": Int(min=1, max=MAX_HEADS),
        "seq_len": Int(min=1, max=MAX_SEQ_LEN),
        "vocab_size": Int(min=1, max=MAX_VOCAB),
        "ffn_hidden_size": Int(min=0, max=MAX_FFN),
        "num_kv_heads": Int(min=0, max=MAX_HEADS),
        "activation": Str(choices=ACTIVATIONS),
        "tie_embeddings": Bool(),
        "norm": Str(choices=NORMS),
        "position": Str(choices=POSITIONS),
        "bias": Bool(),
        "attention": Str(choices=ATTENTIONS),
        "dropout": Float(min=0.0, max=0.99),
    },
    required=REQUIRED,
    fix="see README 'Model files'",
)
MODEL_FILE = Table(
    {
        "model": Table({"description": Str(), "name": Str(nonempty=True)}),
        "transformer": TRANSFORMER_TABLE,
    },
    required=("transformer",),
    fix="see README 'Model files'",
)


def approx_params(spec: TransformerSpec) -> int:
    """Parameters of the shape, closed form (attention, MLP and embeddings; norms and biases
    left out): enough to bound the work of counting it."""
    h, kv = spec.hidden_size, spec.kv_heads * spec.head_dim
    attention = 2 * h * spec.attention_width + 2 * h * kv
    mlp = (3 if spec.activation == "swiglu" else 2) * h * spec.ffn
    embeddings = spec.vocab_size * h * (1 if spec.tie_embeddings else 2)
    return spec.num_layers * (attention + mlp) + embeddings


def spec_from_table(table: Any, *, name: str, where: str) -> TransformerSpec:
    """Build a TransformerSpec from a parsed `[transformer]` table; one-line errors."""
    if not isinstance(table, dict):
        raise SimplanError(f"{where}: missing table [transformer]; see README 'Model files'")
    values = validate(table, TRANSFORMER_TABLE, origin=where, at="transformer")
    try:
        spec = TransformerSpec(name=str(values.pop("name", name)), **values)
    except (TypeError, ValueError) as exc:
        raise SimplanError(f"{where}: {exc}") from None
    params = approx_params(spec)
    if params > MAX_PARAMS:
        raise SimplanError(
            f"{where}: [transformer] describes about {params:.3g} parameters, more than any "
            f"real job (limit {MAX_PARAMS:.0e}); lower num_layers, hidden_size or vocab_size"
        )
    return spec


def spec_from_file(data: dict[str, Any], *, name: str, where: str) -> TransformerSpec:
    """The TransformerSpec of a whole parsed model TOML file (its [model] and [transformer])."""
    if "transformer" not in data:
        raise SimplanError(f"{where}: missing table [transformer]; see README 'Model files'")
    validate(data, MODEL_FILE, origin=where)
    return spec_from_table(data["transformer"], name=name, where=where)
