"""Per-op selective activation checkpointing (`--recompute op`), torchtitan's default
"selective" policy: each transformer block runs under torch.utils.checkpoint with
`create_selective_checkpoint_contexts`; the outputs of the ops below are saved (of the block's
`aten.mm` calls, the 1st, 3rd, 5th, ...), the block's input is kept, and every other op runs
again in the backward. A linear layer with a bias runs as `aten.addmm`, which is not on the
list: GPT blocks with biases keep only their attention output.

One rule, read by the counting (simplan.counting: which outputs a block saves, which forward
ops it runs again) and by the runtime (simplan.runtime.compose: the checkpoint policy), so the
simulated and the executed policy cannot drift apart. torchtitan's list names the CUDA attention
kernels; simplan adds torch's CPU flash kernel so that a CPU run keeps what a GPU run keeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from simplan.errors import SimplanError
from simplan.model_graph import Layer, ModelGraph, OpCost

MM = "aten.mm.default"
OP_CHECKPOINT = "op_checkpoint"  # a transformer block's attrs key: what the counting found

SAVED_OPS = frozenset(
    {
        MM,
        "aten._scaled_dot_product_efficient_attention.default",
        "aten._scaled_dot_product_flash_attention.default",
        "aten._scaled_dot_product_cudnn_attention.default",
        "aten._scaled_dot_product_flash_attention_for_cpu.default",
        "aten._scaled_mm.default",
        "_c10d_functional.reduce_scatter_tensor.default",
        "aten.max.default",
    }
)


@dataclass(kw_only=True)
class OpPolicy:
    """Which op calls of one checkpointed region keep their outputs; one instance per region,
    the forward and the backward's re-run counting their `aten.mm` calls apart."""

    mm_calls: dict[bool, int] = field(default_factory=lambda: {False: 0, True: 0})

    def saves(self, op_name: str, recomputing: bool = False) -> bool:
        """True when the op's outputs are saved: a listed op, except every second mm."""
        if op_name == MM:
            self.mm_calls[recomputing] += 1
            return self.mm_calls[recomputing] % 2 == 1
        return op_name in SAVED_OPS


def op_checkpoint(layer: Layer) -> tuple[float, OpCost]:
    """(bytes per sample of the outputs the policy saves, the forward ops it runs again) of a
    counted transformer block."""
    found = layer.attrs.get(OP_CHECKPOINT)
    if not isinstance(found, dict):
        raise SimplanError(
            f"layer {layer.name} was counted without per-op checkpointing (--recompute op); "
            "count the model again"
        )
    return float(found["saved_bytes"]), OpCost.from_dict(found["recompute_ops"])


def op_checkpoint_counted(graph: ModelGraph) -> bool:
    """Every transformer block of the graph carries what per-op checkpointing keeps."""
    return all(
        isinstance(layer.attrs.get(OP_CHECKPOINT), dict)
        for layer in graph.layers
        if layer.kind == "transformer_block"
    )
