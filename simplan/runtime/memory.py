"""Peak tensor memory of one rank, measured (imports torch).

On a CPU there is no allocator that counts (the resident set size grows in pages, is shared
with the interpreter and rarely shrinks), so `TensorTracker` counts tensors as torch's own
`torch.distributed._tools.mem_tracker.MemTracker` does: a TorchDispatchMode that sees every
tensor an operator returns, counts each storage once (by its UntypedStorage, whose Python
object lives as long as the storage does) and subtracts it when a weak reference to the storage
says it was freed. Storage resizes (FSDP2 frees and re-allocates its unsharded parameters with
`UntypedStorage.resize_`, which no dispatch mode sees) are followed while tracking.

`MemoryProbe` wraps a rank's training: `tracking()` around the model's build and warm-up (so
that the parameters, the optimizer state and the data are known), then `measure()` runs one
more, untimed step and returns a `StepMemory`: the peak of the tracked bytes during that step,
the phase it happened in, and what the live storages at the peak were (parameters, gradients,
optimizer state, activations, other). On a GPU the step's peak is also read from the caching
allocator (`torch.cuda.max_memory_allocated` and `max_memory_reserved`).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map_only
from torch.utils.weak import WeakIdKeyDictionary

PARTS = ("parameters", "gradients", "optimizer", "activations", "other")
PHASES = ("build", "forward_backward", "optimizer_step")
METHOD = "tensor storages (TorchDispatchMode, weakref on free)"


@dataclass(frozen=True, kw_only=True)
class StepMemory:
    """One training step's memory on one rank.

    parts_bytes: the live tensor bytes at the step's peak by part (PARTS): parameters (the
        rank's own copy or shard), gradients, optimizer state, activations (what the forward
        and backward allocated that is not a gradient: saved tensors, logits, temporaries,
        gathered parameters) and other (what the build allocated besides the parameters: the
        data, framework buffers such as DDP's gradient buckets; and the optimizer's
        temporaries).
    tracked_peak_bytes: the peak of the live tensor bytes during the step (their sum at it).
    peak_phase: the phase the peak happened in (PHASES).
    peak_allocated_bytes / peak_reserved_bytes: the caching allocator's peaks over the step
        (torch.cuda.max_memory_allocated / max_memory_reserved); 0 on a CPU.
    """

    parts_bytes: dict[str, int] = field(default_factory=dict)
    tracked_peak_bytes: int
    peak_phase: str
    peak_allocated_bytes: int = 0
    peak_reserved_bytes: int = 0
    method: str = METHOD

    def __post_init__(self) -> None:
        if self.peak_phase not in PHASES:
            raise ValueError(f"peak_phase must be one of {', '.join(PHASES)}")
        if set(self.parts_bytes) - set(PARTS):
            raise ValueError(f"parts_bytes keys must be among {', '.join(PARTS)}")


@dataclass
class _Entry:
    serial: int
    nbytes: int


class TensorTracker(TorchDispatchMode):
    """Live tensor storage bytes, their peak and, when `snapshot` is on, what was live at it."""

    def __init__(self) -> None:
        super().__init__()
        self._entries: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._sizes: dict[int, int] = {}  # serial -> bytes, of the live storages
        self._serials = itertools.count()
        self._orig_resize: Any = None
        self.phase = "build"
        self.current_bytes = 0
        self.peak_bytes = 0
        self.peak_phase = "build"
        self.snapshot = False
        self.peak_live: dict[int, int] = {}
        self._step_born: set[int] = set()  # serials born in forward_backward while snapshotting

    # ------------------------------------------------------------------ storages

    def track(self, tensor: torch.Tensor) -> None:
        """Count the storages behind `tensor` (a plain tensor or a wrapper such as DTensor)."""
        from torch.distributed._tools.common_utils import get_untyped_storages

        for st in get_untyped_storages(tensor):
            entry = self._entries.get(st)
            if entry is None:
                entry = _Entry(serial=next(self._serials), nbytes=0)
                self._entries[st] = entry
                weakref.finalize(st, self._freed, entry.serial)
                self._sizes[entry.serial] = 0
                if self.snapshot and self.phase == "forward_backward":
                    self._step_born.add(entry.serial)
            self._resized(entry, st.nbytes())

    def serial_of(self, tensor: torch.Tensor) -> set[int]:
        """The serials of the tracked storages behind `tensor` (empty when untracked)."""
        from torch.distributed._tools.common_utils import get_untyped_storages

        found = (self._entries.get(st) for st in get_untyped_storages(tensor))
        return {e.serial for e in found if e is not None}

    def step_serials(self) -> set[int]:
        """The storages allocated in the forward and backward of the measured step, freed or
        not."""
        return set(self._step_born)

    def refresh(self) -> None:
        """Re-read every live storage's size (resizes made while not tracking)."""
        for st, entry in list(self._entries.items()):
            self._resized(entry, st.nbytes())

    def reset_peak(self) -> None:
        self.peak_bytes = self.current_bytes
        self.peak_phase = self.phase
        self.peak_live = dict(self._sizes) if self.snapshot else {}

    def _resized(self, entry: _Entry, nbytes: int) -> None:
        if nbytes == entry.nbytes:
            return
        self.current_bytes += nbytes - entry.nbytes
        entry.nbytes = nbytes
        self._sizes[entry.serial] = nbytes
        if self.current_bytes > self.peak_bytes:
            self.peak_bytes = self.current_bytes
            self.peak_phase = self.phase
            if self.snapshot:
                self.peak_live = dict(self._sizes)

    def _freed(self, serial: int) -> None:
        self.current_bytes -= self._sizes.pop(serial, 0)

    # ------------------------------------------------------------------ the mode

    def __enter__(self) -> TensorTracker:
        self._orig_resize = torch.UntypedStorage.resize_
        orig, tracker = self._orig_resize, self

        @functools.wraps(orig)
        def resize_(st: torch.UntypedStorage, size: int) -> Any:
            out = orig(st, size)
            entry = tracker._entries.get(st)
            if entry is not None:
                tracker._resized(entry, st.nbytes())
            return out

        torch.UntypedStorage.resize_ = resize_  # type: ignore[method-assign, assignment]
        super().__enter__()
        return self

    def __exit__(self, *args: Any) -> None:
        torch.UntypedStorage.resize_ = self._orig_resize  # type: ignore[method-assign]
        super().__exit__(*args)

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        from torch.distributed.tensor import DTensor

        if any(t is DTensor for t in types):  # let DTensor run its local operators
            return NotImplemented
        out = func(*args, **(kwargs or {}))
        tree_map_only(torch.Tensor, self.track, out)
        return out


def _tensors_of(optimizer: torch.optim.Optimizer) -> Iterator[torch.Tensor]:
    for state in optimizer.state.values():
        yield from (v for v in state.values() if isinstance(v, torch.Tensor))


def _params_of(optimizer: torch.optim.Optimizer) -> Iterator[torch.Tensor]:
    for group in optimizer.param_groups:
        yield from group["params"]


class MemoryProbe:
    """Measures one training step's tensor memory (see the module's docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.tracker = TensorTracker()

    @contextlib.contextmanager
    def tracking(self) -> Iterator[TensorTracker]:
        """Track what is built and trained inside (the model, its data, warm-up steps)."""
        with self.tracker:
            yield self.tracker

    def measure(
        self,
        forward_backward: Callable[[], Any],
        optimizer_step: Callable[[], Any],
        optimizer: torch.optim.Optimizer,
    ) -> StepMemory:
        """Run one step (forward_backward, then optimizer_step) and return its memory."""
        t = self.tracker
        t.refresh()
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        t.snapshot = True
        grads: set[int] = set()
        try:
            with self.tracking():
                t.phase = "forward_backward"
                t.reset_peak()
                forward_backward()
                grads = self._grads(optimizer)
                t.phase = "optimizer_step"
                optimizer_step()
        finally:
            t.snapshot = False
        if cuda:
            torch.cuda.synchronize(self.device)
        parts = self._parts(optimizer, grads)
        return StepMemory(
            parts_bytes=parts,
            tracked_peak_bytes=t.peak_bytes,
            peak_phase=t.peak_phase,
            peak_allocated_bytes=int(torch.cuda.max_memory_allocated(self.device)) if cuda else 0,
            peak_reserved_bytes=int(torch.cuda.max_memory_reserved(self.device)) if cuda else 0,
        )

    def _grads(self, optimizer: torch.optim.Optimizer) -> set[int]:
        out: set[int] = set()
        for p in _params_of(optimizer):
            if p.grad is not None:
                out |= self.tracker.serial_of(p.grad)
        return out

    def _parts(self, optimizer: torch.optim.Optimizer, grads: set[int]) -> dict[str, int]:
        """The storages live at the peak, by part."""
        t = self.tracker
        params: set[int] = set()
        for p in _params_of(optimizer):
            params |= t.serial_of(p)
        state: set[int] = set()
        for s in _tensors_of(optimizer):
            state |= t.serial_of(s)
        step = t.step_serials()
        parts = dict.fromkeys(PARTS, 0)
        for serial, nbytes in t.peak_live.items():
            parts[_part(serial, params, grads, state, step)] += nbytes
        return parts


def _part(serial: int, params: set[int], grads: set[int], state: set[int], step: set[int]) -> str:
    if serial in params:
        return "parameters"
    if serial in grads:
        return "gradients"
    if serial in state:
        return "optimizer"
    return "activations" if serial in step else "other"
