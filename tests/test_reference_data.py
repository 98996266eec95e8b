"""The published tables shipped in simplan/data/reference: cited, readable, and all in use."""

from __future__ import annotations

from pathlib import Path

import pytest

from simplan.device_fit import read_reference_csv, reference_dir
from simplan.errors import SimplanError

ROOT = Path(__file__).resolve().parents[1]
TABLES = sorted(p.name for p in reference_dir().glob("*.csv"))


def test_the_tables_are_in_the_package() -> None:
    assert reference_dir() == ROOT / "simplan" / "data" / "reference"
    assert (reference_dir() / "README.md").is_file()
    assert len(TABLES) == 10


@pytest.mark.parametrize("name", TABLES)
def test_each_table_cites_its_source_and_is_read_below_it(name: str) -> None:
    path = reference_dir() / name
    first, header = path.read_text(encoding="utf-8").splitlines()[:2]
    assert first.startswith("# ") and len(first) > 40  # the citation line
    rows = read_reference_csv(name)
    assert rows and list(rows[0]) == header.split(",")  # the header, not the citation
    assert name in (reference_dir() / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", TABLES)
def test_each_table_is_read_by_the_code(name: str) -> None:
    """A table nothing reads does not belong in the package."""
    sources = [*ROOT.glob("simplan/**/*.py"), *ROOT.glob("benchmarks/*.py")]
    assert any(name in p.read_text(encoding="utf-8") for p in sources), name


def test_a_missing_table_is_one_line_naming_it() -> None:
    with pytest.raises(SimplanError, match=r"no_such_table\.csv: reference table not found"):
        read_reference_csv("no_such_table.csv")
