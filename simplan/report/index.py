"""The markdown index of a report directory: a title, then sections of text, figures and
tables (index.md, written atomically)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from simplan.outputs import write_text_atomic

Table = tuple[Sequence[str], Sequence[Sequence[str]]]


@dataclass(frozen=True, kw_only=True)
class Figure:
    """A figure written as name.<format> for each of formats; caption says what it shows."""

    name: str
    caption: str
    formats: tuple[str, ...] = ("png",)


@dataclass(frozen=True, kw_only=True)
class Section:
    title: str
    text: str = ""
    figures: tuple[Figure, ...] = ()
    table: Table | None = None
    bullets: tuple[str, ...] = field(default=())


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |"]
    lines.append("|" + "|".join("---" for _ in headers) + "|")
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_index(title: str, intro: str, sections: Sequence[Section]) -> str:
    parts = [f"# {title}", ""]
    if intro:
        parts += [intro, ""]
    for s in sections:
        parts += [f"## {s.title}", ""]
        if s.text:
            parts += [s.text, ""]
        parts += [f"- {b}" for b in s.bullets] + ([""] if s.bullets else [])
        for fig in s.figures:
            image = "png" if "png" in fig.formats else fig.formats[0]
            parts.append(f"![{fig.caption}]({fig.name}.{image})")
            others = [f"[{f.upper()}]({fig.name}.{f})" for f in fig.formats if f != image]
            parts += [f"*{fig.caption}*" + (f" ({', '.join(others)})" if others else ""), ""]
        if s.table is not None:
            parts += [markdown_table(*s.table), ""]
    return "\n".join(parts).rstrip() + "\n"


def write_index(out_dir: str | Path, title: str, intro: str, sections: Sequence[Section]) -> Path:
    """Write out_dir/index.md atomically and return its path."""
    return write_text_atomic(render_index(title, intro, sections), Path(out_dir) / "index.md")
