"""Where models come from: presets in models/, TOML shape files, and `file.py:factory`.

`load_model(spec)` returns a ModelGraph counted with torch on the meta device. Graphs of presets
and TOML files are cached (keyed by the file's text, seq_len, dtype and torch version) so that
planning and simulating from a cached graph never imports torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

from simplan.errors import SimplanError
from simplan.io import read_json, read_text, read_toml, write_json_atomic
from simplan.limits import MAX_SEQ_LEN
from simplan.model_graph import GRAPH_SCHEMA_VERSION, ModelGraph
from simplan.model_knobs import ModelKnobs, split_spec
from simplan.schema import show, validate
from simplan.transformer_shape import MODEL_FILE, TransformerSpec, spec_from_file
from simplan.units import check_dtype

COUNTING_VERSION = 12  # bump when counting changes, to invalidate cached graphs
PRESET_PACKAGE = "simplan_presets"
FACTORY_TIMEOUT_ENV = "SIMPLAN_FACTORY_TIMEOUT_S"
DEFAULT_FACTORY_TIMEOUT_S = 120.0


def models_dir() -> Path:
    env = os.environ.get("SIMPLAN_MODELS_DIR")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "models"


def cache_dir() -> Path:
    env = os.environ.get("SIMPLAN_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "simplan"


@dataclass(frozen=True)
class ModelSource:
    """A resolved model spec: kind is 'toml', 'preset-py' or 'factory'."""

    name: str
    kind: str
    path: Path
    factory: str = ""
    description: str = ""
    # pruning and quantization (the spec's suffix)
    knobs: ModelKnobs = field(default_factory=ModelKnobs)

    @property
    def label(self) -> str:
        """The name with the knobs that change the model: resnet50#prune=channels:0.3."""
        return self.name + self.knobs.suffix()


def preset_names() -> list[str]:
    root = models_dir()
    names = [p.stem for p in root.glob("*.toml")]
    names += [p.stem.replace("_", "-") for p in root.glob("*.py") if not p.stem.startswith("_")]
    return sorted(names, key=_preset_order)


def _preset_order(name: str) -> tuple[int, str, float]:
    family = name.split("-")[0]
    size = name.split("-")[-1].rstrip("bm")
    try:
        scale = float(size) * (1e3 if name.endswith("b") else 1.0)
    except ValueError:
        scale = 0.0
    return (0 if family in ("mlp",) else 1, family, scale)


def resolve(spec: str) -> ModelSource:
    """Turn a preset name, a TOML path, or `file.py:factory` (each with an optional knob suffix,
    simplan/model_knobs.py) into a ModelSource."""
    base, knobs = split_spec(spec)
    source = _resolve_base(base)
    return dataclasses.replace(source, knobs=knobs) if knobs else source


def _resolve_base(spec: str) -> ModelSource:
    if ":" in spec and spec.split(":", 1)[0].endswith(".py"):
        path_text, factory = spec.rsplit(":", 1)
        path = Path(path_text)
        if not path.is_file():
            raise SimplanError(f"{path}: no such file; give `path/to/file.py:factory`")
        return ModelSource(name=path.stem, kind="factory", path=path, factory=factory)
    if spec.endswith(".toml"):
        path = Path(spec)
        if not path.is_file():
            raise SimplanError(f"{path}: no such model file; check the path")
        return ModelSource(name=path.stem, kind="toml", path=path)
    root = models_dir()
    toml, py = root / f"{spec}.toml", root / f"{spec.replace('-', '_')}.py"
    if toml.is_file():
        return ModelSource(name=spec, kind="toml", path=toml)
    if py.is_file() and not spec.startswith("_"):
        return ModelSource(name=spec, kind="preset-py", path=py, factory="build")
    raise SimplanError(
        f"unknown model {spec!r}: use a preset ({', '.join(preset_names())}), "
        f"a .toml model file, or path/to/file.py:factory"
    )


def transformer_spec(source: ModelSource) -> TransformerSpec:
    data = read_toml(source.path)
    return spec_from_file(data, name=source.name, where=str(source.path))


def describe(source: ModelSource) -> str:
    if source.kind == "toml":
        data = validate(read_toml(source.path), MODEL_FILE, origin=str(source.path))
        return str(data.get("model", {}).get("description", ""))
    text = read_text(source.path)
    for line in text.splitlines():
        if line.startswith("DESCRIPTION"):
            return line.split("=", 1)[1].strip().strip("\"'")
    return ""


def load_model(
    spec: str,
    *,
    seq_len: int | None = None,
    dtype: str = "fp32",
    use_cache: bool = True,
    prune: str = "",
    quantize: str = "",
) -> ModelGraph:
    """The ModelGraph of a preset name, a TOML file or `file.py:factory`, counted per sample;
    `prune` and `quantize` as the flags --prune and --quantize (simplan.model_knobs) take them,
    written into the spec's suffix."""
    check_dtype(dtype)
    if prune or quantize:
        from simplan.model_knobs import with_knobs

        spec = with_knobs(spec, prune=prune or None, quantize=quantize or None)
    if seq_len is not None and seq_len <= 0:
        raise SimplanError(f"seq_len must be a positive integer, got {seq_len}")
    if seq_len is not None and seq_len > MAX_SEQ_LEN:
        raise SimplanError(
            f"seq_len {seq_len:,} is beyond any real job (limit {MAX_SEQ_LEN:,}); lower it"
        )
    source = resolve(spec)
    tspec = transformer_spec(source) if source.kind == "toml" else None
    if tspec is not None and source.knobs.image_size:
        raise SimplanError(f"model {spec!r}: a transformer shape takes no image=N knob")
    cacheable = use_cache and source.kind != "factory"
    key = _cache_key(source, seq_len, dtype) if cacheable else ""
    if cacheable:
        cached = _read_cache(key)
        if cached is not None:
            return cached
    from simplan.build import graph_from_source  # imports torch

    graph = graph_from_source(source, tspec, seq_len=seq_len, dtype=dtype)
    graph = dataclasses.replace(graph, meta={**graph.meta, "spec": spec})
    graph = with_tasks(graph, source)
    check_trainable(graph, spec)
    if cacheable:
        write_json_atomic(graph.to_dict(), cache_dir() / "graphs" / f"{key}.json")
    return graph


def with_tasks(graph: ModelGraph, source: ModelSource) -> ModelGraph:
    """The graph with the source's task declarations (simplan/tasks.py) in meta["tasks"] and
    meta["outputs"], validated; the graph unchanged when the source declares none."""
    from simplan.tasks import check_outputs, parse_tasks

    raw, outputs = declared_tasks(source)
    if raw is None:
        return graph
    tasks = parse_tasks(raw, graph)
    listed = (
        check_outputs(outputs, tasks, graph)
        if outputs is not None
        else tuple(o for t in tasks.tasks for o in t.outputs)
    )
    meta = {**graph.meta, "tasks": [t.to_dict() for t in tasks.tasks], "outputs": list(listed)}
    return dataclasses.replace(graph, meta=meta)


def declared_tasks(source: ModelSource) -> tuple[Any, Any]:
    """(TASKS, OUTPUTS) of a Python model file, or ([[task]] tables, None) of a TOML file;
    (None, None) when there are none."""
    if source.kind == "toml":
        return read_toml(source.path).get("task"), None
    package = PRESET_PACKAGE if source.kind == "preset-py" else None
    module = import_file(source.path, package)
    return getattr(module, "TASKS", None), getattr(module, "OUTPUTS", None)


def check_trainable(graph: ModelGraph, spec: str) -> None:
    """A model with no trainable parameters has nothing to train: refuse it (one line)."""
    inference = graph.meta.get("quantize") == "int8-dynamic"  # a teacher, never trained
    if graph.params > 0 and graph.trainable_params <= 0 and not inference:
        raise SimplanError(
            f"model {spec}: --quantize freezes every parameter, so there is nothing to train; "
            "quantize fewer layer kinds (e.g. transformer_block=int4)"
        )
    if graph.params <= 0:
        raise SimplanError(
            f"model {spec}: has no parameters, so there is nothing to train; give a model "
            "with at least one trainable layer"
        )


def _cache_key(source: ModelSource, seq_len: int | None, dtype: str) -> str:
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "none"
    text = source.path.read_bytes()
    extra = b""
    if source.kind == "preset-py":  # presets may import each other
        extra = b"".join(p.read_bytes() for p in sorted(source.path.parent.glob("*.py")))
    digest = hashlib.sha256(
        text
        + extra
        + repr(
            (source.label, seq_len, dtype, torch_version, GRAPH_SCHEMA_VERSION, COUNTING_VERSION)
        ).encode()
    ).hexdigest()
    return f"{source.name}-{dtype}-{digest[:16]}"


def _read_cache(key: str) -> ModelGraph | None:
    path = cache_dir() / "graphs" / f"{key}.json"
    if not path.is_file():
        return None
    try:
        return ModelGraph.from_dict(read_json(path))
    except (SimplanError, KeyError, TypeError, ValueError):
        return None  # a damaged cache entry is recounted


def import_file(path: Path, package: str | None = None) -> ModuleType:
    """Import a Python file; presets are imported as submodules of one package so they can
    import each other relatively."""
    if package:
        if package not in sys.modules:
            pkg_spec = importlib.util.spec_from_loader(package, loader=None, is_package=True)
            assert pkg_spec is not None
            pkg = importlib.util.module_from_spec(pkg_spec)
            pkg.__path__ = [str(path.parent)]
            sys.modules[package] = pkg
        return importlib.import_module(f"{package}.{path.stem}")
    name = f"simplan_user_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SimplanError(f"{path}: cannot import this file as Python")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SimplanError:
        raise
    except SystemExit as exc:
        raise SimplanError(
            f"{path}: importing it called sys.exit({show(exc.code)}); a model file must not exit"
        ) from None
    except Exception as exc:
        raise SimplanError(f"{path}: importing it failed: {_one_line(exc)}") from None
    return module


def factory_of(source: ModelSource) -> Any:
    package = PRESET_PACKAGE if source.kind == "preset-py" else None
    module = import_file(source.path, package)
    fn = getattr(module, source.factory, None)
    if not callable(fn):
        raise SimplanError(
            f"{source.path}: has no function {source.factory!r}; "
            f"define {source.factory}() returning (nn.Module, example_input)"
        )
    return fn


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def factory_timeout_s() -> float:
    """Seconds a `file.py:factory` may take (import and call): $SIMPLAN_FACTORY_TIMEOUT_S or
    120 s."""
    text = os.environ.get(FACTORY_TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_FACTORY_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise SimplanError(
            f"{FACTORY_TIMEOUT_ENV}={text!r}: give a number of seconds > 0 (or unset it)"
        )
    return value


class _FactoryTimeout(BaseException):
    """Raised in the main thread by SIGALRM; a BaseException so that `except Exception` in the
    user's code does not swallow it."""


@contextmanager
def time_bound(seconds: float) -> Iterator[None]:
    """Raise _FactoryTimeout in the body after `seconds` (and every second after that, in case
    the body swallows it). SIGALRM works in the main thread only; elsewhere the body runs
    unbounded."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise _FactoryTimeout()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    outer_s, outer_interval_s = signal.setitimer(signal.ITIMER_REAL, seconds, 1.0)
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        if previous is not None:
            signal.signal(signal.SIGALRM, previous)
        if outer_s > 0:  # someone else's alarm was pending: give it back what is left
            left_s = max(outer_s - (time.monotonic() - started), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, left_s, outer_interval_s)


def call_factory(source: ModelSource, **kwargs: Any) -> Any:
    """Import the source's file and call its factory (see run_user_code)."""
    call = f"{source.path}:{source.factory}()"
    return run_user_code(call, lambda: factory_of(source)(**kwargs))


def run_user_code(call: str, fn: Callable[[], Any]) -> Any:
    """fn() (code from a user's model file), bounded by factory_timeout_s(): an exception, a
    sys.exit() (any code) or a timeout becomes one SimplanError line that names `call`."""
    limit = factory_timeout_s()
    try:
        with time_bound(limit):
            return fn()
    except _FactoryTimeout:
        raise SimplanError(
            f"{call} did not return within {limit:g} s; fix it or raise {FACTORY_TIMEOUT_ENV}"
        ) from None
    except SimplanError:
        raise
    except SystemExit as exc:
        raise SimplanError(
            f"{call} called sys.exit({show(exc.code)}); a model file must return, never exit"
        ) from None
    except RecursionError:
        raise SimplanError(f"{call} recursed without end; fix the model file") from None
    except Exception as exc:
        raise SimplanError(f"{call} raised {_one_line(exc)}; fix the model file") from None
