"""Transformer shapes: the `[transformer]` table of a model TOML file (no torch needed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simplan.errors import SimplanError
from simplan.limits import (
    MAX_EXPERTS,
    MAX_FFN,
    MAX_HEADS,
    MAX_HIDDEN,
    MAX_LAYERS,
    MAX_PARAMS,
    MAX_SEQ_LEN,
    MAX_VOCAB,
)
from simplan.schema import Anything, Bool, Float, Int, ListOf, MapOf, Str, Table, validate

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
    kv_channels: int = 0  # width of one attention head; 0 means hidden_size / num_heads
    # mixture of experts (MoE): 0 experts means every block has a dense MLP
    num_experts: int = 0  # routed experts per MoE block
    moe_top_k: int = 0  # experts each token is routed to
    moe_ffn_hidden_size: int = 0  # hidden width of one expert's MLP; 0 means ffn_hidden_size
    moe_shared_experts: int = 0  # experts every token passes through (each moe_ffn wide)
    moe_dense_layers: int = 0  # the first blocks keep a dense MLP (DeepSeek-V3: 3)
    moe_capacity_factor: float = 0.0  # tokens an expert takes, over the mean; 0: dropless
    moe_imbalance: float = 1.0  # the busiest expert's tokens over the mean (1: balanced)

    def __post_init__(self) -> None:
        for name in REQUIRED:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"[transformer] {name} must be a positive integer, got {value!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"[transformer] activation must be one of {ACTIVATIONS}, got {self.activation!r}"
            )
        if self.kv_channels < 0:
            raise ValueError(f"[transformer] kv_channels must be >= 0, got {self.kv_channels!r}")
        if not self.kv_channels and self.hidden_size % self.num_heads:
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
        self._check_moe()

    def _check_moe(self) -> None:
        if self.num_experts == 0:
            moe = ("moe_top_k", "moe_shared_experts", "moe_dense_layers", "moe_ffn_hidden_size")
            if any(getattr(self, name) for name in moe):
                raise ValueError("[transformer] moe_* settings need num_experts > 0")
            return
        if not 1 <= self.moe_top_k <= self.num_experts:
            raise ValueError(
                f"[transformer] moe_top_k must be between 1 and num_experts "
                f"{self.num_experts}, got {self.moe_top_k}"
            )
        if self.moe_dense_layers >= self.num_layers:
            raise ValueError(
                f"[transformer] moe_dense_layers {self.moe_dense_layers} leaves no MoE block "
                f"of the {self.num_layers} layers"
            )
        if self.moe_imbalance < 1.0 or self.moe_imbalance > self.num_experts:
            raise ValueError(
                f"[transformer] moe_imbalance (busiest expert's load over the mean) must be "
                f"between 1 and num_experts {self.num_experts}, got {self.moe_imbalance}"
            )
        if self.moe_capacity_factor and self.moe_capacity_factor < 1.0:
            raise ValueError(
                f"[transformer] moe_capacity_factor must be 0 (dropless) or >= 1, got "
                f"{self.moe_capacity_factor}"
            )

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def moe_ffn(self) -> int:
        return self.moe_ffn_hidden_size or self.ffn

    def is_moe_block(self, index: int) -> bool:
        """Whether block `index` (from 0) has a mixture-of-experts MLP."""
        return self.is_moe and index >= self.moe_dense_layers

    @property
    def routed_load(self) -> float:
        """The busiest expert's tokens over the mean: the declared imbalance, capped by the
        capacity factor (tokens beyond capacity are dropped)."""
        if self.moe_capacity_factor:
            return min(self.moe_imbalance, self.moe_capacity_factor)
        return self.moe_imbalance

    @property
    def ffn(self) -> int:
        return self.ffn_hidden_size or 4 * self.hidden_size

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def head_dim(self) -> int:
        return self.kv_channels or self.hidden_size // self.num_heads

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

    def block_attrs(self, index: int = 0) -> dict[str, Any]:
        """The attributes a block records in the graph (its MoE shape if it is an MoE block)."""
        attrs = self._dense_attrs()
        if self.kv_channels:
            attrs["head_dim"] = self.kv_channels
        if self.is_moe_block(index):
            attrs.update(
                num_experts=self.num_experts,
                moe_top_k=self.moe_top_k,
                moe_ffn_hidden_size=self.moe_ffn,
                moe_shared_experts=self.moe_shared_experts,
                moe_load=self.routed_load,
            )
        return attrs

    def _dense_attrs(self) -> dict[str, Any]:
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
        "kv_channels": Int(min=0, max=MAX_HIDDEN),
        "num_experts": Int(min=0, max=MAX_EXPERTS),
        "moe_top_k": Int(min=0, max=MAX_EXPERTS),
        "moe_ffn_hidden_size": Int(min=0, max=MAX_FFN),
        "moe_shared_experts": Int(min=0, max=MAX_EXPERTS),
        "moe_dense_layers": Int(min=0, max=MAX_LAYERS),
        "moe_capacity_factor": Float(min=0.0, max=float(MAX_EXPERTS)),
        "moe_imbalance": Float(min=1.0, max=float(MAX_EXPERTS)),
    },
    required=REQUIRED,
    fix="see README 'Model files'",
)
MODEL_FILE = Table(
    {
        "model": Table({"description": Str(), "name": Str(nonempty=True)}),
        "transformer": TRANSFORMER_TABLE,
        "task": ListOf(MapOf(Anything())),  # multi-task declarations, simplan/tasks.py
    },
    required=("transformer",),
    fix="see README 'Model files'",
)


def approx_params(spec: TransformerSpec) -> int:
    """Parameters of the shape, closed form (attention, MLP and embeddings; norms and biases
    left out): enough to bound the work of counting it. An MoE block holds all its experts
    (routed and shared) and its router."""
    h, kv = spec.hidden_size, spec.kv_heads * spec.head_dim
    q = spec.attention_width
    attention = 2 * h * q + 2 * h * kv
    per = 3 if spec.activation == "swiglu" else 2
    mlp = per * h * spec.ffn
    experts = spec.num_experts + spec.moe_shared_experts
    moe = per * h * spec.moe_ffn * experts + h * spec.num_experts
    moe_blocks = spec.num_layers - spec.moe_dense_layers if spec.is_moe else 0
    embeddings = spec.vocab_size * h * (1 if spec.tie_embeddings else 2)
    return (
        spec.num_layers * attention
        + (spec.num_layers - moe_blocks) * mlp
        + moe_blocks * moe
        + embeddings
    )


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
