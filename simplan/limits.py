"""Sizes beyond any real training job, in one place: every file and flag is checked against them
so that counting, planning and simulating stay bounded in time and memory. Each is generous
(a 1T-parameter model, a 1M-token sequence and 10,000+ GPUs are well inside) and small enough
that no tensor size overflows torch's and no graph or schedule grows without bound."""

from __future__ import annotations

# models
MAX_HIDDEN = 131_072
MAX_LAYERS = 512
MAX_HEADS = 4_096
MAX_SEQ_LEN = 4_194_304
MAX_VOCAB = 4_194_304
MAX_FFN = 1_048_576
MAX_PARAMS = 10**13
MAX_GRAPH_LAYERS = 1_000_000  # layers of any counted model graph (also from factories)

# clusters
MAX_NODES = 16_384
MAX_DEVICES_PER_NODE = 1_024
MAX_DEVICES = 16_384
MAX_BANDWIDTH_GBPS = 1e6  # GB/s: 1 PB/s, far beyond any link
MAX_LATENCY_US = 1e6  # one second

# training steps (batch sizes and degrees: simplan.parallel's MAX_SAMPLES and MAX_DEGREE)
MAX_BUCKET_BYTES = 2**40
