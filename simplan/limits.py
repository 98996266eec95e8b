"""Sizes beyond any real training job, in one place: every file and flag is checked against them
so that counting, planning and simulating stay bounded in time and memory. Each is generous
(a 1T-parameter model, a 1M-token sequence and 10,000+ GPUs are well inside) and small enough
that no tensor size overflows torch's and no graph or schedule grows without bound."""

from __future__ import annotations

from simplan.errors import SimplanError

# models
MAX_HIDDEN = 131_072
MAX_LAYERS = 512
MAX_HEADS = 4_096
MAX_SEQ_LEN = 4_194_304
MAX_VOCAB = 4_194_304
MAX_FFN = 1_048_576
MAX_EXPERTS = 65_536  # routed experts of one MoE layer (DeepSeek-V3: 256)
MAX_PARAMS = 10**13
MAX_GRAPH_LAYERS = 1_000_000  # layers of any counted model graph (also from factories)

# clusters
MAX_NODES = 16_384
MAX_DEVICES_PER_NODE = 1_024
MAX_DEVICES = 16_384
MAX_BANDWIDTH_GBPS = 1e6  # GB/s: 1 PB/s, far beyond any link
MAX_LATENCY_US = 1e6  # one second

# training steps (degrees and micro-batches: simplan.parallel's MAX_DEGREE and MAX_SAMPLES)
MAX_BUCKET_BYTES = 2**40
# Samples per optimizer step. The largest published training batches are 65,536 images
# (ResNet-50 with LARS/LAMB) and about 16M tokens of language-model sequences (a few thousand
# samples); 2^20 is 16 times the largest.
MAX_GLOBAL_BATCH = 2**20


def check_global_batch(value: int, name: str = "global batch") -> None:
    """Refuse a global batch above MAX_GLOBAL_BATCH (one line naming the limit)."""
    if value > MAX_GLOBAL_BATCH:
        raise SimplanError(
            f"{name} {value:,} is above the largest this tool plans or simulates, "
            f"{MAX_GLOBAL_BATCH:,} samples per step (16x the largest published training "
            f"batch); use a global batch of at most {MAX_GLOBAL_BATCH:,}"
        )
