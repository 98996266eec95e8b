"""Where models come from: presets in models/, TOML shape files, and `file.py:factory`.

`load_model(spec)` returns a ModelGraph counted with torch on the meta device. Graphs of presets
and TOML files are cached (keyed by the file's text, seq_len, dtype and torch version) so that
planning and simulating from a cached graph never imports torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

from simplan.errors import SimplanError
from simplan.io import read_json, read_toml, write_json_atomic
from simplan.model_graph import GRAPH_SCHEMA_VERSION, ModelGraph
from simplan.transformer_shape import TransformerSpec, spec_from_table
from simplan.units import check_dtype

COUNTING_VERSION = 4  # bump when counting changes, to invalidate cached graphs
PRESET_PACKAGE = "simplan_presets"


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
    """Turn a preset name, a TOML path, or `file.py:factory` into a ModelSource."""
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
    return spec_from_table(data.get("transformer"), name=source.name, where=str(source.path))


def describe(source: ModelSource) -> str:
    if source.kind == "toml":
        return str(read_toml(source.path).get("model", {}).get("description", ""))
    text = source.path.read_text()
    for line in text.splitlines():
        if line.startswith("DESCRIPTION"):
            return line.split("=", 1)[1].strip().strip("\"'")
    return ""


def load_model(
    spec: str, *, seq_len: int | None = None, dtype: str = "fp32", use_cache: bool = True
) -> ModelGraph:
    """The ModelGraph of a preset name, a TOML file or `file.py:factory`, counted per sample."""
    check_dtype(dtype)
    if seq_len is not None and seq_len <= 0:
        raise SimplanError(f"seq_len must be a positive integer, got {seq_len}")
    source = resolve(spec)
    tspec = transformer_spec(source) if source.kind == "toml" else None
    cacheable = use_cache and source.kind != "factory"
    key = _cache_key(source, seq_len, dtype) if cacheable else ""
    if cacheable:
        cached = _read_cache(key)
        if cached is not None:
            return cached
    from simplan.build import graph_from_source  # imports torch

    graph = graph_from_source(source, tspec, seq_len=seq_len, dtype=dtype)
    graph = dataclasses.replace(graph, meta={**graph.meta, "spec": spec})
    if cacheable:
        write_json_atomic(graph.to_dict(), cache_dir() / "graphs" / f"{key}.json")
    return graph


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
            (source.name, seq_len, dtype, torch_version, GRAPH_SCHEMA_VERSION, COUNTING_VERSION)
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
    except Exception as exc:
        raise SimplanError(f"{path}: importing it failed: {type(exc).__name__}: {exc}") from None
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
