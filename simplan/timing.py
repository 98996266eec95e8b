"""Measure per-layer forward and backward times on the local device (imports torch).

The model trains for real: `warmup` untimed forward+backward passes, then `repeats` timed pairs
of passes, one with per-layer hooks (the layer times) and one without (the whole model's time, so
the sum of the layer times can be checked against it). Identical layers (every block of a GPT)
pool their samples and are stored once, as the median. A transformer too large for the device is
timed as a one-block stand-in with the same embedding, block and head shapes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from simplan.build import instantiate
from simplan.environment import cpu_name, environment
from simplan.errors import SimplanError
from simplan.model_graph import ModelGraph
from simplan.module_layers import tensors_in, trace
from simplan.profiles import LayerTiming, Profile
from simplan.sources import load_model, resolve, transformer_spec
from simplan.units import GiB, check_dtype

Advance = Callable[[str], None]
# how the passes are timed; a profile measured otherwise is measured again where it is reused
TIMING_METHOD = (
    "layers: hooked passes; whole model and optimizer: unhooked passes; optimizer per tensor"
)


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return cpu_name()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def available_memory_bytes(device: str) -> float:
    if device.startswith("cuda"):
        return float(torch.cuda.mem_get_info()[0])
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * GiB


def training_bytes(graph: ModelGraph, micro_batch: int) -> float:
    """Rough footprint of timing the whole model: weights, grads and the activations."""
    acts = sum(layer.activation_bytes + layer.output_bytes for layer in graph.layers)
    return 3 * graph.param_bytes + 2 * micro_batch * acts


class InSituTimer:
    """Times every layer inside real forward+backward passes of the whole model.

    Forward: from a layer's forward pre-hook to its forward hook. Backward: from the moment the
    gradient of a layer's output is ready (its backward pre-hook) to the moment the next layer's
    is, or to the end of backward for the last one; on one device the autograd engine runs one
    layer at a time, so these intervals tile the backward pass (the first one starts when
    backward starts: seeding the output gradient is charged to the layer that made the output).
    """

    def __init__(self, model: nn.Module, calls: list[Any], device: str) -> None:
        self.device = device
        self.names_by_module: dict[int, list[str]] = {}
        for call in calls:
            self.names_by_module.setdefault(id(call.module), []).append(call.name)
        self.fwd: dict[str, list[float]] = {c.name: [] for c in calls}
        self.bwd: dict[str, list[float]] = {c.name: [] for c in calls}
        self._modules = list({id(c.module): c.module for c in calls}.values())
        self._handles: list[Any] = []
        self._reset()

    @property
    def active(self) -> bool:
        return bool(self._handles)

    @active.setter
    def active(self, on: bool) -> None:
        """Hooks are registered only while timing layers: registered hooks, even idle ones,
        slow every pass (a full backward hook adds autograd nodes around each layer), which
        would inflate the whole model's time that the plain passes measure."""
        if on == self.active:
            return
        if not on:
            self.close()
            return
        for module in self._modules:
            self._handles += [
                module.register_forward_pre_hook(self._fwd_pre),
                module.register_forward_hook(self._fwd_post),
                module.register_full_backward_pre_hook(self._bwd_pre),
            ]

    def _reset(self) -> None:
        self._fwd_idx: dict[int, int] = {}
        self._bwd_idx: dict[int, int] = {}
        self._fwd_start: dict[str, float] = {}
        self._bwd_starts: list[tuple[float, str]] = []

    def _now(self) -> float:
        _sync(self.device)
        return time.perf_counter()

    def _name(self, module: nn.Module, counter: dict[int, int]) -> str:
        names = self.names_by_module[id(module)]
        i = counter.get(id(module), 0)
        counter[id(module)] = i + 1
        return names[min(i, len(names) - 1)]

    def _fwd_pre(self, module: nn.Module, args: Any) -> None:
        if self.active:
            self._fwd_start[self._name(module, self._fwd_idx)] = self._now()

    def _fwd_post(self, module: nn.Module, args: Any, output: Any) -> None:
        if self.active:
            names = self.names_by_module[id(module)]
            name = names[min(self._fwd_idx[id(module)] - 1, len(names) - 1)]
            self.fwd[name].append(self._now() - self._fwd_start[name])

    def _bwd_pre(self, module: nn.Module, grad_output: Any) -> None:
        if self.active:
            self._bwd_starts.append((self._now(), self._name(module, self._bwd_idx)))

    def step(
        self,
        model: nn.Module,
        inputs: tuple[Any, ...],
        targets: list[Any],
        optimizer: torch.optim.Optimizer | None = None,
    ) -> tuple[float, float, float]:
        """One timed forward+backward (with the loss) of the whole model, then the optimizer
        step with its zero_grad if one is given; (fwd_s, bwd_s, optimizer_s)."""
        self._reset()
        t0 = self._now()
        loss = training_loss(tensors_in(model(*inputs)), targets)
        t1 = self._now()
        loss.backward()
        t2 = self._now()
        if self.active:
            starts = sorted(self._bwd_starts)
            if starts:  # seeding the output gradient belongs to the layer that made the output
                starts[0] = (t1, starts[0][1])
            starts.append((t2, ""))
            for (t, name), (t_next, _) in itertools.pairwise(starts):
                self.bwd[name].append(t_next - t)
        opt_s = 0.0
        if optimizer is not None:  # as training runs it: fresh gradients, then zero_grad
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            opt_s = self._now() - t2
        model.zero_grad(set_to_none=True)
        return t1 - t0, t2 - t1, opt_s

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def _median_timing(samples_fwd: list[float], samples_bwd: list[float], repeats: int) -> LayerTiming:
    return LayerTiming(
        fwd_s=statistics.median(samples_fwd or [0.0]),
        bwd_s=statistics.median(samples_bwd or [0.0]),
        repeats=repeats,
    )


def loss_targets(model: nn.Module, inputs: tuple[Any, ...]) -> list[Any]:
    """Random class indices for every output that looks like logits (float, >= 2 dims), so the
    profile trains with a real cross-entropy loss, as training does; None for other outputs."""
    with torch.no_grad():
        outputs = tensors_in(model(*inputs))
    gen = torch.Generator().manual_seed(1)
    targets: list[Any] = []
    for out in outputs:
        if out.is_floating_point() and out.dim() >= 2:
            idx = torch.randint(0, out.shape[-1], tuple(out.shape[:-1]), generator=gen)
            targets.append(idx.to(out.device))
        else:
            targets.append(None)
    return targets


def training_loss(outputs: list[torch.Tensor], targets: list[Any]) -> torch.Tensor:
    """Cross-entropy of each logits output against its targets (a mean for other outputs)."""
    total = None
    for out, target in zip(outputs, targets, strict=False):
        if not out.requires_grad:
            continue
        if target is None:
            term = out.float().mean()
        else:
            term = nn.functional.cross_entropy(out.flatten(0, -2).float(), target.flatten())
        total = term if total is None else total + term
    if total is None:
        raise SimplanError("the model's outputs do not depend on its parameters; nothing to time")
    return total


def make_adam(model: nn.Module) -> torch.optim.Optimizer | None:
    """Adam with the fused kernel where torch has one (what the runtime trains with)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.Adam(params, lr=1e-4, fused=True) if params else None


TENSOR_PROBE = 16  # one-element tensors of the optimizer's per-tensor probe


def _fixed_optimizer_samples(device: str, repeats: int, tensors: int = 1) -> list[float]:
    """Times of one Adam step over `tensors` single-element tensors: the fixed cost of a step
    (and, with more tensors, what each tensor adds)."""
    tiny = [torch.zeros(1, device=device, requires_grad=True) for _ in range(tensors)]
    for t in tiny:
        t.grad = torch.zeros_like(t)
    optimizer = torch.optim.Adam(tiny, lr=1e-4, fused=True)
    samples = []
    for i in range(2 + repeats):
        _sync(device)
        t0 = time.perf_counter()
        optimizer.step()
        _sync(device)
        if i >= 2:
            samples.append(time.perf_counter() - t0)
    return samples


@contextlib.contextmanager
def _quiet_hooks() -> Iterator[None]:
    """torch warns that a first layer's backward hook fires though its input needs no
    gradient: expected here (the hooks time the layer, not the input's gradient)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        yield


class ProfileSession:
    """A model set up for profiling, timed in one or several rounds.

    Each repeat is a pair of iterations: a plain one (the whole model's time, and the optimizer
    step after it, as training runs it) and a hooked one (the per-layer times). Rounds may be
    interleaved with other work on the same machine, such as a real run's training steps, so
    that the profile and that work see the same conditions; `profile()` pools the samples of
    every round. Each round starts with one untimed iteration (the caches hold the other work).
    """

    def __init__(
        self,
        spec: str,
        *,
        device: str = "cpu",
        micro_batch: int = 1,
        seq_len: int | None = None,
        dtype: str = "fp32",
        warmup: int = 2,
    ) -> None:
        check_dtype(dtype)
        _check_device(device)
        if micro_batch <= 0 or warmup < 0:
            raise SimplanError("micro-batch must be positive, warm-up >= 0")
        self.device, self.dtype, self.micro_batch, self.warmup = device, dtype, micro_batch, warmup
        self.graph = load_model(spec, seq_len=seq_len, dtype=dtype)
        self.model, self.inputs, self.whole = _timing_model(
            spec, self.graph, device, micro_batch, seq_len, dtype
        )
        torch.manual_seed(0)
        self.calls = trace(self.model, self.inputs)
        self.optimizer = make_adam(self.model) if self.whole else None
        self.timer = InSituTimer(self.model, self.calls, device)
        self.targets = loss_targets(self.model, self.inputs)
        self._passes: list[tuple[float, float, float]] = []  # (fwd, bwd, optimizer) s
        self._fixed: list[float] = []
        self._tensors: list[float] = []
        with _quiet_hooks():
            for _ in range(warmup):
                self._plain()

    def _plain(self, before: Callable[[], None] | None = None) -> tuple[float, float, float]:
        if before:
            before()
        self.timer.active = False
        return self.timer.step(self.model, self.inputs, self.targets, self.optimizer)

    def _hooked(self, before: Callable[[], None] | None = None) -> None:
        if before:
            before()
        self.timer.active = True
        self.timer.step(self.model, self.inputs, self.targets)
        self.timer.active = False

    def run(
        self,
        repeats: int,
        advance: Advance | None = None,
        before_pass: Callable[[], None] | None = None,
    ) -> None:
        """Add `repeats` timed pairs of iterations. before_pass runs before every iteration,
        untimed: a real run's ranks pass a barrier there, since they time each step after
        one (on a small CPU machine, compute that follows a wait runs slower than compute
        that follows compute)."""
        with _quiet_hooks():
            self._plain(before_pass)
            for _ in range(repeats):
                self._passes.append(self._plain(before_pass))
                self._hooked(before_pass)
                if advance:
                    advance(f"repeat {self.repeats}")
        if self.whole:
            self._fixed += _fixed_optimizer_samples(self.device, repeats)
            self._tensors += _fixed_optimizer_samples(self.device, repeats, TENSOR_PROBE)

    @property
    def repeats(self) -> int:
        return len(self._passes)

    def passes_s(self) -> list[tuple[float, float, float]]:
        """Every timed plain pass so far: (forward, backward, optimizer) seconds."""
        return list(self._passes)

    def profile(self) -> Profile:
        """The profile of every round so far: medians of the pooled samples."""
        if not self.repeats:
            raise SimplanError("nothing timed yet: run at least one repeat")
        timings = _by_identity(self.graph, self.calls, self.timer.fwd, self.timer.bwd, self.repeats)
        fwd, bwd, opt = zip(*self._passes, strict=True)
        optimizer_s = fixed_s = tensor_s = None
        if self.whole:
            optimizer_s = statistics.median(opt)
            fixed_s = min(statistics.median(self._fixed), optimizer_s)
            many = statistics.median(self._tensors)
            tensor_s = max(many - statistics.median(self._fixed), 0.0) / (TENSOR_PROBE - 1)
        return Profile(
            model=self.graph,
            device="cuda" if self.device.startswith("cuda") else "cpu",
            device_name=device_name(self.device),
            dtype=self.dtype,
            micro_batch=self.micro_batch,
            seq_len=self.graph.seq_len,
            timings=timings,
            whole_model=_median_timing(list(fwd), list(bwd), self.repeats) if self.whole else None,
            optimizer_s=optimizer_s,
            optimizer_fixed_s=fixed_s,
            optimizer_tensor_s=tensor_s,
            meta=_metadata(self.device, self.dtype, self.warmup, self.repeats),
        )

    def close(self) -> None:
        self.timer.close()


def measure(
    spec: str,
    *,
    device: str = "cpu",
    micro_batch: int = 1,
    seq_len: int | None = None,
    dtype: str = "fp32",
    warmup: int = 2,
    repeats: int = 5,
    advance: Advance | None = None,
    on_start: Callable[[int], None] | None = None,
) -> Profile:
    """Profile a model: count it, then time each distinct layer and the whole model."""
    if repeats <= 0:
        raise SimplanError("micro-batch and repeats must be positive, warm-up >= 0")
    session = ProfileSession(
        spec, device=device, micro_batch=micro_batch, seq_len=seq_len, dtype=dtype, warmup=warmup
    )
    try:
        if on_start:
            on_start(repeats)
        session.run(repeats, advance)
        return session.profile()
    finally:
        session.close()


def _check_device(device: str) -> None:
    if device == "cpu":
        return
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SimplanError(
                "--device cuda: no CUDA device here; use --device cpu, or a "
                "device model such as --device h200 for an estimate"
            )
        return
    raise SimplanError(f"unknown device {device!r}: use cpu or cuda (or a device model name)")


def _timing_model(
    spec: str, graph: ModelGraph, device: str, micro_batch: int, seq_len: int | None, dtype: str
) -> tuple[nn.Module, tuple, bool]:
    """The module to time on; a one-block stand-in when a big transformer does not fit."""
    source = resolve(spec)
    tspec = transformer_spec(source) if source.kind == "toml" else None
    need, have = training_bytes(graph, micro_batch), 0.8 * available_memory_bytes(device)
    if need <= have:
        model, inputs = instantiate(
            source, tspec, batch=micro_batch, seq_len=seq_len, device=device, dtype=dtype
        )
        return model.train(), inputs, True
    if tspec is None or tspec.num_layers < 2:
        raise SimplanError(
            f"{graph.name} needs about {need / GiB:.1f} GiB to time on {device}, "
            f"{have / GiB:.1f} GiB are free; use a smaller micro-batch or model"
        )
    small = dataclasses.replace(tspec, num_layers=1)
    model, inputs = instantiate(
        source, small, batch=micro_batch, seq_len=seq_len, device=device, dtype=dtype
    )
    return model.train(), inputs, False


def _metadata(device: str, dtype: str, warmup: int, repeats: int) -> dict[str, Any]:
    return environment(
        device_name=device_name(device),
        dtype=dtype,
        threads=torch.get_num_threads(),
        warmup=warmup,
        repeats=repeats,
        statistic="median",
        timing=TIMING_METHOD,
    )


def _by_identity(
    graph: ModelGraph,
    calls: list[Any],
    fwd: dict[str, list[float]],
    bwd: dict[str, list[float]],
    repeats: int,
) -> dict[str, LayerTiming]:
    """Pool the samples of identical layers and keep one median per identity key."""
    pooled_f: dict[str, list[float]] = {}
    pooled_b: dict[str, list[float]] = {}
    for call in calls:
        key = graph.layer(call.name).identity
        pooled_f.setdefault(key, []).extend(fwd[call.name])
        pooled_b.setdefault(key, []).extend(bwd[call.name])
    return {k: _median_timing(pooled_f[k], pooled_b[k], repeats) for k in pooled_f}
