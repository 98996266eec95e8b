"""Every benchmark script answers --help with what it measures, and runs nothing.

Some of them take minutes (the device fit, the planner against Megatron-LM's table); a script
that ignored --help would start that work, and the time limit below would stop the test.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = sorted(
    p.name for p in BENCHMARKS.glob("*.py") if 'if __name__ == "__main__":' in p.read_text()
)


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_script_answers_help(script: str) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-500:]
    assert result.stdout.startswith("usage:")
    doc_start = (BENCHMARKS / script).read_text().split('"""')[1].split()[0]
    assert doc_start in result.stdout  # its module doc: what it measures


def test_every_script_is_covered() -> None:
    assert len(SCRIPTS) >= 30
