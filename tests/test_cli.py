"""The command line: help texts, listing, exit codes."""

from __future__ import annotations

import json

from simplan.cli import main
from tests.helpers import run_cli


def test_help_lists_verbs(capsys) -> None:  # type: ignore[no-untyped-def]
    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    for verb in ("models", "profile"):
        assert verb in out


def test_models_json() -> None:
    result = run_cli("models", "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["gpt3-175b"]["layers"] == 98
    assert rows["mlp"]["params"] == 101_770


def test_usage_error_is_one_line() -> None:
    result = run_cli("profile")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1


def test_device_model_profile_table() -> None:
    result = run_cli("profile", "gpt3-175b", "--device", "a100-80gb")
    assert result.returncode == 0, result.stderr
    assert "blocks.0-95 (x96)" in result.stdout
    assert "model" in result.stdout
