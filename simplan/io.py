"""JSON and TOML at the file boundary: atomic writes, schema versions, one-line errors."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from simplan.errors import SimplanError
from simplan.outputs import write_json_atomic as write_json_atomic  # its home is outputs


def read_json(path: str | Path) -> Any:
    p = Path(path)
    if not p.is_file():
        raise SimplanError(f"{p}: no such file; check the path")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise SimplanError(f"{p}: malformed JSON at line {exc.lineno}: {exc.msg}") from None


def read_versioned_json(path: str | Path, kind: str, version: int) -> dict[str, Any]:
    """Read a simplan JSON document and check its `schema` = {"kind": kind, "version": version}."""
    data = read_json(path)
    schema = data.get("schema") if isinstance(data, dict) else None
    if not isinstance(schema, dict) or schema.get("kind") != kind:
        raise SimplanError(f"{path}: not a simplan {kind} file (missing schema.kind = {kind!r})")
    if schema.get("version") != version:
        raise SimplanError(
            f"{path}: {kind} schema version {schema.get('version')!r} is not supported "
            f"(this simplan reads version {version}); regenerate the file"
        )
    return data


def schema_header(kind: str, version: int) -> dict[str, Any]:
    return {"kind": kind, "version": version}


def read_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise SimplanError(f"{p}: no such file; check the path")
    try:
        return tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SimplanError(f"{p}: malformed TOML: {exc}") from None
