"""JSON and TOML at the file boundary: atomic writes, schema versions, one-line errors."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from simplan.errors import SimplanError
from simplan.outputs import write_json_atomic as write_json_atomic  # its home is outputs
from simplan.schema import first_non_finite

MAX_INPUT_BYTES = 512 * 1024**2  # no input file simplan reads is near this size


def read_text(path: str | Path) -> str:
    """A file's text, strictly UTF-8 (a leading byte-order mark is dropped); a missing,
    unreadable, binary, huge or non-UTF-8 file is a one-line SimplanError."""
    p = Path(path)
    if p.is_dir():
        raise SimplanError(f"{p}: is a directory; give the path of a file")
    if not p.is_file():
        raise SimplanError(f"{p}: no such file; check the path")
    try:
        size = p.stat().st_size
        if size > MAX_INPUT_BYTES:
            raise SimplanError(
                f"{p}: {size:,} bytes is larger than any simplan input "
                f"(limit {MAX_INPUT_BYTES:,}); check the path"
            )
        data = p.read_bytes()
    except OSError as exc:
        raise SimplanError(f"{p}: cannot read it ({exc.strerror}); check its permissions") from None
    if b"\x00" in data:
        raise SimplanError(f"{p}: a binary file, not text; give a UTF-8 text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SimplanError(
            f"{p}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8"
        ) from None
    return text.removeprefix("\ufeff")


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; NaN and Infinity are refused, naming where they are (simplan writes
    only finite numbers)."""
    p = Path(path)
    text = read_text(p)
    try:
        data = json.loads(text)
        where = first_non_finite(data)
    except json.JSONDecodeError as exc:
        raise SimplanError(f"{p}: malformed JSON at line {exc.lineno}: {exc.msg}") from None
    except ValueError as exc:  # an integer too long to convert
        msg = str(exc).splitlines()[0]
        raise SimplanError(f"{p}: invalid JSON value: {msg}; write finite numbers") from None
    except RecursionError:
        raise SimplanError(f"{p}: JSON nested too deeply; regenerate the file") from None
    if where is not None:
        raise SimplanError(
            f"{p}: {where} is NaN or infinite; write a finite number (or regenerate the file)"
        )
    return data


def read_json_object(path: str | Path) -> dict[str, Any]:
    """Parse a JSON file that must hold an object (not an array, a number or text)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise SimplanError(
            f"{path}: holds a JSON {_json_kind(data)}, not an object; give a simplan JSON file"
        )
    return data


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    return "boolean" if isinstance(value, bool) else "number"


def read_versioned_json(path: str | Path, kind: str, version: int) -> dict[str, Any]:
    """Read a simplan JSON document and check its `schema` = {"kind": kind, "version": version}."""
    data = read_json_object(path)
    schema = data.get("schema")
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
    """Parse a TOML file (strict UTF-8). Values still need their schema (simplan.schema):
    TOML itself allows nan and inf."""
    p = Path(path)
    text = read_text(p)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SimplanError(f"{p}: malformed TOML: {' '.join(str(exc).split())}") from None
    except (ValueError, RecursionError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SimplanError(f"{p}: malformed TOML: {msg}") from None
