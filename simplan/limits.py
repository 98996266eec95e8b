"""Documented upper bounds on the sizes a verb accepts, so that its work has a known bound.

Each limit sits well above what any real training job uses; beyond it an input is refused with
one line that prints the limit, rather than planned or simulated for minutes.
"""

from __future__ import annotations

from simplan.errors import SimplanError

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
