"""The distillation flags of validate, simulate and plan."""

from __future__ import annotations

import json

import pytest

from tests.helpers import run_main


@pytest.mark.parametrize(
    "argv",
    [
        ("validate", "--model", "mlp", "--teacher", "gpt-tiny", "--placement", "separate"),
        ("simulate", "--model", "mlp", "--cluster", "localhost-cpu", "--global-batch", "128"),
        ("plan", "--model", "mlp", "--cluster", "localhost-cpu", "--global-batch", "128"),
    ],
)
def test_mismatched_teacher_is_one_line_exit_2(capsys, tmp_path, argv):
    extra = ("--runs-dir", str(tmp_path)) if argv[0] == "validate" else ("--teacher", "gpt-tiny")
    code, _, err = run_main(capsys, *argv, *extra)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "logits per sample" in lines[0], err


def test_simulate_compares_placements_and_explains(capsys):
    argv = ("simulate", "--model", "mlp", "--cluster", "localhost-cpu", "--global-batch", "128")
    code, out, _ = run_main(capsys, *argv, "--teacher", "mlp-wide", "--json")
    assert code == 0
    doc = json.loads(out)["distillation"]
    steps = {p["placement"]: p["step_time_s"] for p in doc["placements"]}
    assert set(steps) == {"colocated", "separate"}  # precomputed needs a read bandwidth
    assert doc["chosen"] == min(steps, key=steps.__getitem__)
    code, out, _ = run_main(capsys, *argv, "--teacher", "mlp-wide", "--explain")
    assert code == 0 and f"{doc['chosen']} (" in out and "over the student alone" in out


def test_validate_refuses_a_simulated_only_placement(capsys, tmp_path):
    argv = ("validate", "--model", "mlp", "--teacher", "mlp-wide", "--placement", "precomputed")
    code, _, err = run_main(capsys, *argv, "--runs-dir", str(tmp_path))
    assert code == 2 and "invalid choice" in err


SIM = ("simulate", "--model", "mlp", "--cluster", "localhost-cpu", "--global-batch", "128")


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (("--temperature", "3"), "need(s) --teacher"),
        (("--explain",), "--teacher"),
        (
            ("--teacher", "mlp-wide", "--placement", "colocated", "--teacher-devices", "2"),
            "separate",
        ),
        (
            ("--teacher", "mlp-wide", "--placement", "separate", "--logits-read-gbps", "1"),
            "precomp",
        ),
    ],
)
def test_distillation_flags_that_would_do_nothing(capsys, extra, needle):
    code, out, err = run_main(capsys, *SIM, *extra)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and needle in err, err


def test_a_teacher_that_fits_nowhere_exits_3(capsys):
    """GPT-3 175B's bf16 weights (325 GiB) fit on no 80 GB A100, beside a student or alone."""
    argv = ("simulate", "--model", "gpt3-1.3b", "--cluster", "dgx-a100", "--nodes", "1")
    code, out, err = run_main(
        capsys, *argv, "--global-batch", "56", "--micro-batch", "1", "--teacher", "gpt3-175b"
    )
    assert code == 3 and "distillation (colocated)" in out
    assert "no distillation placement fits" in err and "351 GiB" in err
