"""Transformer shapes: the `[transformer]` table of a model TOML file (no torch needed)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from simplan.errors import SimplanError

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

    def __post_init__(self) -> None:
        for name in REQUIRED:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"[transformer] {name} must be a positive integer, got {value!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"[transformer] activation must be one of {ACTIVATIONS}, got {self.activation!r}"
            )
        if self.hidden_size % self.num_heads:
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
        return self.hidden_size // self.num_heads

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


def spec_from_table(table: Any, *, name: str, where: str) -> TransformerSpec:
    """Build a TransformerSpec from a parsed `[transformer]` table; one-line errors."""
    if not isinstance(table, dict):
        raise SimplanError(f"{where}: missing table [transformer]; see README 'Model files'")
    missing = [k for k in REQUIRED if k not in table]
    if missing:
        raise SimplanError(
            f"{where}: [transformer] is missing {', '.join(missing)}; "
            f"add it (see README 'Model files')"
        )
    known = {f.name for f in fields(TransformerSpec)} - {"name"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise SimplanError(
            f"{where}: [transformer] has unknown key(s) {', '.join(unknown)}; "
            f"known keys: {', '.join(sorted(known))}"
        )
    try:
        return TransformerSpec(name=str(table.get("name", name)), **table)
    except (TypeError, ValueError) as exc:
        raise SimplanError(f"{where}: {exc}") from None
