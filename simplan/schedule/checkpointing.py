"""A training job's checkpoint with torch.distributed.checkpoint (DCP), for preemption and
restart (imports torch; called inside the ranks).

A checkpoint holds the model's and the optimizer's state (torch.distributed.checkpoint.state_dict,
which unwraps DDP and FSDP) and the number of optimizer steps taken. Every rank writes its part
into CKPT_DIR/step-NNNNNNNN/ (dcp.save); once all have (a barrier), rank 0 names that folder in
CKPT_DIR/latest (simplan.outputs: all-or-nothing) and removes older ones, so a run killed while
saving leaves the previous checkpoint in force.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

LATEST = "latest"


def latest_checkpoint(ckpt_dir: str | Path) -> Path | None:
    """The folder of the last complete checkpoint under ckpt_dir (None: none yet)."""
    pointer = Path(ckpt_dir) / LATEST
    if not pointer.is_file():
        return None
    folder = Path(ckpt_dir) / pointer.read_text().strip()
    return folder if folder.is_dir() else None


def save_checkpoint(ckpt_dir: str | Path, model: Any, optimizer: Any, step: int) -> Path:
    """Save model + optimizer state and `step` (every rank calls it); returns the folder."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    from simplan.outputs import write_text_atomic

    model_state, optim_state = get_state_dict(model, optimizer)
    folder = Path(ckpt_dir) / f"step-{step:08d}"
    dcp.save({"model": model_state, "optim": optim_state, "step": step}, checkpoint_id=folder)
    dist.barrier()
    if dist.get_rank() == 0:
        write_text_atomic(folder.name + "\n", Path(ckpt_dir) / LATEST)
        for old in Path(ckpt_dir).glob("step-*"):
            if old.name != folder.name:
                shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return folder


def load_checkpoint(folder: str | Path, model: Any, optimizer: Any) -> int:
    """Load a checkpoint into model and optimizer (every rank calls it); returns its step."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    state: dict[str, Any] = {"model": model_state, "optim": optim_state, "step": 0}
    dcp.load(state, checkpoint_id=Path(folder))
    set_state_dict(
        model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"]
    )
    return int(state["step"])
