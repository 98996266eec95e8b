from __future__ import annotations

import json

import pytest

from simplan.cli import main


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # a usage error, from argparse
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_json_has_the_documented_keys(capsys) -> None:
    code, out, _ = _run(
        capsys, "plan", "--model", "gpt3-125m", "--cluster", "dgx-a100", "--nodes", "1",
        "--global-batch", "16", "--json", "--top", "2",
    )  # fmt: skip
    assert code == 0
    data = json.loads(out)
    assert {"plans", "baselines", "search_time_s", "candidates", "infeasible"} <= set(data)
    for row in data["plans"] + data["baselines"]:
        assert {"config", "step_time_s", "peak_memory_bytes", "tokens_per_s", "mfu"} <= set(row)
    best = data["plans"][0]["step_time_s"]
    assert all(best <= b["step_time_s"] for b in data["baselines"])


def test_plan_out_explain_export(capsys, tmp_path) -> None:
    code, out, err = _run(
        capsys, "plan", "--model", "gpt3-125m", "--cluster", "dgx-a100", "--nodes", "2",
        "--global-batch", "32", "--out", str(tmp_path), "--explain", "--export", "megatron",
    )  # fmt: skip
    assert code == 0
    assert (tmp_path / "plan.json").exists() and (tmp_path / "plans.json").exists()
    assert "why:" in err and "why:" not in out  # stdout holds the export alone
    assert out.startswith("--num-layers") and len(out.splitlines()) == 1
    code, out, _ = _run(capsys, "simulate", "--plan", str(tmp_path / "plan.json"))
    assert code == 0 and "step time" in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model", "gpt3-175b", "--cluster", "dgx-a100", "--nodes", "1",
          "--global-batch", "8"], "needs at least"),
        (["--model", "no-such-model", "--cluster", "dgx-a100", "--global-batch", "8"], "model"),
        (["--model", "gpt3-125m", "--cluster", "dgx-a100", "--global-batch", "0"], "batch"),
        (["--model", "gpt3-125m", "--cluster", "dgx-a100", "--global-batch", "8",
          "--top", "0"], "--top"),
        (["--model", "gpt3-125m", "--cluster", "nowhere", "--global-batch", "8"], "cluster"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_with_one_line(capsys, args: list[str], needle: str) -> None:
    code, _, err = _run(capsys, "plan", *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err


def test_help_teaches_with_examples(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["plan", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "--global-batch" in out and "--export" in out
