"""Typed field specs for the files simplan reads, and one validation pass per file kind.

A file is parsed (TOML or JSON) into plain values, then checked against a spec built from the
values below: integers (never booleans, never fractions, never text), finite floats in a range,
strict booleans, strings from a fixed set, lists, maps and nested tables whose unknown keys are
errors with a "did you mean". `validate` returns the checked values (integral floats become
ints, ints in float fields become floats) or raises one SimplanError line that names the file,
the field and what the field must be.

    spec = Table({"count": Int(min=1, max=65_536), "kind": Str(choices=("a", "b"))},
                 required=("count",))
    values = validate(raw, spec, origin="cluster.toml")
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from simplan.errors import SimplanError


class Invalid(ValueError):
    """A value that does not fit its spec; `validate` adds the file's name."""


class Spec(Protocol):
    """Checks one value and returns it converted to the type the spec names."""

    def expect(self) -> str: ...

    def check(self, value: Any, at: str) -> Any: ...


def show(value: Any) -> str:
    """A short, one-line rendering of a bad value for an error message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and abs(value) >= 10**30:
        return f"a {len(str(abs(value)))}-digit integer"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)}"
    if value is None:
        return "null"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _fail(at: str, spec: Spec, value: Any) -> Invalid:
    return Invalid(f"{at} must be {spec.expect()}, not {show(value)}")


def _num(x: float) -> str:
    if float(x).is_integer() and abs(x) < 1e16:
        return f"{int(x):,}"
    return f"{x:g}"


def _range_text(lo: float | None, hi: float | None, lo_open: bool = False) -> str:
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{_num(lo)}, {_num(hi)}]"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {_num(lo)}"
    if hi is not None:
        return f" <= {_num(hi)}"
    return ""


@dataclass(frozen=True, kw_only=True)
class Int:
    """An integer: booleans, text and fractions are refused; an integral float (2.0) is 2."""

    min: int | None = None
    max: int | None = None

    def expect(self) -> str:
        return "an integer" + _range_text(self.min, self.max)

    def check(self, value: Any, at: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(at, self, value)
        number = value
        if isinstance(value, float):
            if not (math.isfinite(value) and value.is_integer()):
                raise _fail(at, self, value)
            number = int(value)
        if (self.min is not None and number < self.min) or (
            self.max is not None and number > self.max
        ):
            raise _fail(at, self, value)
        return int(number)


@dataclass(frozen=True, kw_only=True)
class Float:
    """A finite number (an int is taken as a float); `min_open` excludes min itself."""

    min: float | None = None
    max: float | None = None
    min_open: bool = False

    def expect(self) -> str:
        return "a finite number" + _range_text(self.min, self.max, self.min_open)

    def check(self, value: Any, at: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(at, self, value)
        try:
            number = float(value)
        except OverflowError:
            raise _fail(at, self, value) from None
        if not math.isfinite(number):
            raise _fail(at, self, value)
        low_bad = self.min is not None and (
            number <= self.min if self.min_open else number < self.min
        )
        if low_bad or (self.max is not None and number > self.max):
            raise _fail(at, self, value)
        return number


@dataclass(frozen=True, kw_only=True)
class Bool:
    """true or false; the text "false" and the number 0 are not booleans."""

    def expect(self) -> str:
        return "true or false"

    def check(self, value: Any, at: str) -> bool:
        if not isinstance(value, bool):
            raise _fail(at, self, value)
        return value


@dataclass(frozen=True, kw_only=True)
class Str:
    """Text, optionally one of `choices`; `nonempty` refuses ""."""

    choices: tuple[str, ...] = ()
    nonempty: bool = False
    max_len: int = 4096

    def expect(self) -> str:
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        return "non-empty text" if self.nonempty else "text"

    def check(self, value: Any, at: str) -> str:
        if not isinstance(value, str) or len(value) > self.max_len:
            raise _fail(at, self, value)
        if (self.choices and value not in self.choices) or (self.nonempty and not value):
            raise _fail(at, self, value)
        return value


@dataclass(frozen=True, kw_only=True)
class Anything:
    """Any parsed value (free-form metadata)."""

    def expect(self) -> str:
        return "any value"

    def check(self, value: Any, at: str) -> Any:
        return value


@dataclass(frozen=True)
class Nullable:
    """`inner`, or null (JSON) meaning "not given"."""

    inner: Spec

    def expect(self) -> str:
        return f"{self.inner.expect()} or null"

    def check(self, value: Any, at: str) -> Any:
        return None if value is None else self.inner.check(value, at)


@dataclass(frozen=True)
class Either:
    """The first of `options` whose type matches (e.g. a preset name or an inline table)."""

    options: tuple[Spec, ...]

    def expect(self) -> str:
        return " or ".join(o.expect() for o in self.options)

    def check(self, value: Any, at: str) -> Any:
        for option in self.options:
            if _same_kind(option, value):
                return option.check(value, at)
        raise _fail(at, self, value)


def _same_kind(spec: Spec, value: Any) -> bool:
    kinds: dict[type, tuple[type, ...]] = {
        Table: (dict,),
        MapOf: (dict,),
        ListOf: (list, tuple),
        Str: (str,),
        Bool: (bool,),
    }
    wanted = kinds.get(type(spec))
    if wanted is None:
        return not isinstance(value, dict | list | tuple | str | bool)
    return isinstance(value, wanted)


@dataclass(frozen=True)
class ListOf:
    """A list whose items all match `item`, with between min_len and max_len items."""

    item: Spec
    min_len: int = 0
    max_len: int = 1_000_000

    def expect(self) -> str:
        size = f" of {self.min_len} to {self.max_len:,} items" if self.min_len else ""
        return f"a list{size} of {self.item.expect()}"

    def check(self, value: Any, at: str) -> list[Any]:
        if not isinstance(value, list | tuple):
            raise _fail(at, self, value)
        if not self.min_len <= len(value) <= self.max_len:
            raise Invalid(
                f"{at} must hold {self.min_len} to {self.max_len:,} items, not {len(value):,}"
            )
        return [self.item.check(v, f"{at}[{i}]") for i, v in enumerate(value)]


@dataclass(frozen=True)
class MapOf:
    """A table with free keys (text) whose values all match `value`."""

    value: Spec
    max_len: int = 1_000_000

    def expect(self) -> str:
        return f"a table of {self.value.expect()}"

    def check(self, value: Any, at: str) -> dict[str, Any]:
        if not isinstance(value, dict) or len(value) > self.max_len:
            raise _fail(at, self, value)
        return {str(k): self.value.check(v, _join(at, str(k))) for k, v in value.items()}


@dataclass(frozen=True)
class Table:
    """A table with known keys: `fields` maps each key to its spec; `required` keys must be
    present; any other key is an error with a "did you mean" (unless `open`)."""

    fields: Mapping[str, Spec]
    required: Sequence[str] = ()
    open: bool = False
    fix: str = field(default="")  # what to do about a missing key, e.g. "see docs/x.md"

    def expect(self) -> str:
        return "a table"

    def check(self, value: Any, at: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise _fail(at or "the document", self, value)
        for key in value:
            if key not in self.fields and not self.open:
                raise Invalid(unknown_key(str(key), self.fields, at))
        for key in self.required:
            if key not in value:
                hint = f"; {self.fix}" if self.fix else ""
                raise Invalid(
                    f"{_join(at, key)} is missing: add it ({self.fields[key].expect()}){hint}"
                )
        return {
            key: (self.fields[key].check(v, _join(at, key)) if key in self.fields else v)
            for key, v in value.items()
        }


def first_non_finite(value: Any, at: str = "") -> str | None:
    """The path of the first NaN or infinite number inside parsed JSON/TOML (None if none)."""
    if isinstance(value, float) and not math.isfinite(value):
        return at or "the document"
    if isinstance(value, dict):
        items: Any = ((_join(at, str(k)), v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"{at}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for where, item in items:
        found = first_non_finite(item, where)
        if found is not None:
            return found
    return None


def unknown_key(key: str, known: Mapping[str, Any] | Sequence[str], at: str = "") -> str:
    """`unknown key X; did you mean Y?` (or the known keys when nothing is close)."""
    names = sorted(known)
    close = difflib.get_close_matches(key, names, n=1)
    hint = f"did you mean {close[0]}?" if close else f"known fields: {', '.join(names)}"
    return f"unknown field {_join(at, show_key(key))}; {hint}"


def show_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else repr(key)[:40]


def _join(at: str, key: str) -> str:
    return f"{at}.{key}" if at else key


def validate(data: Any, spec: Spec, *, origin: str, at: str = "") -> Any:
    """`data` checked against `spec`; a mismatch is one SimplanError line naming `origin`."""
    try:
        return spec.check(data, at)
    except Invalid as exc:
        raise SimplanError(f"{origin}: {exc}") from None
