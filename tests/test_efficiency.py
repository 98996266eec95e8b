"""Statistical efficiency: declarations, the measured table, interpolation, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simplan.efficiency import (
    PLAIN,
    EfficiencySources,
    declared_from_specs,
    efficiency,
    knob_of,
    parse_declared,
    read_table,
)
from simplan.errors import SimplanError
from simplan.parallel import ParallelConfig

ROOT = Path(__file__).resolve().parents[1]
RECORDED = ROOT / "traces" / "efficiency" / "mlp-teacher.json"


def cfg(**knobs: object) -> ParallelConfig:
    return ParallelConfig(dp=4, global_batch=64, **knobs)  # type: ignore[arg-type]


def write_table(tmp_path: Path, rows: list[tuple[str, int, float]], reached: bool = True) -> Path:
    path = tmp_path / "table.json"
    doc = {
        "schema": {"kind": "efficiency", "version": 1},
        "rows": [
            {"knob": k, "value": v, "steps_to_target": s, "reached": reached} for k, v, s in rows
        ],
    }
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture
def table(tmp_path: Path) -> EfficiencySources:
    rows = [("none", 1, 100.0), ("local_sgd", 2, 100.0), ("local_sgd", 8, 125.0),
            ("local_sgd", 16, 200.0), ("powersgd", 1, 90.0)]  # fmt: skip
    return EfficiencySources(table=read_table(write_table(tmp_path, rows)))


def test_knob_of_each_field() -> None:
    assert knob_of(cfg()) is None
    assert knob_of(cfg(local_sgd=8)) == ("local_sgd", 8)
    assert knob_of(cfg(staleness=3)) == ("staleness", 3)
    assert knob_of(cfg(compress="powersgd", powersgd_rank=4)) == ("powersgd", 4)
    assert knob_of(cfg(compress="bf16")) == ("bf16", 0)


def test_plain_is_one_by_definition() -> None:
    assert efficiency(cfg(), EfficiencySources()) == PLAIN


def test_measured_value_is_the_ratio_of_steps(table: EfficiencySources) -> None:
    e = efficiency(cfg(local_sgd=8), table)
    assert e.value == pytest.approx(100 / 125)
    assert e.source.startswith("measured: ") and "table.json" in e.source


def test_between_measured_values_steps_are_interpolated(table: EfficiencySources) -> None:
    # H=4 lies a third of the way from H=2 (100 steps) to H=8 (125 steps): 108.33 steps
    e = efficiency(cfg(local_sgd=4), table)
    assert e.value == pytest.approx(100 / (100 + 25 * 2 / 6))
    assert "interpolated between 2 and 8" in e.source


def test_beyond_the_measured_values_is_refused(table: EfficiencySources) -> None:
    with pytest.raises(SimplanError, match=r"outside the measured H 2\.\.16.*extrapolation"):
        efficiency(cfg(local_sgd=32), table)


def test_fewer_steps_than_plain_is_capped_at_one(table: EfficiencySources) -> None:
    e = efficiency(cfg(compress="powersgd", powersgd_rank=1), table)
    assert e.value == 1.0 and "1.111 capped at 1" in e.source


def test_declared_wins_over_measured(table: EfficiencySources) -> None:
    sources = EfficiencySources(declared={("local_sgd", 8): 0.5}, table=table.table)
    assert efficiency(cfg(local_sgd=8), sources).value == 0.5
    assert efficiency(cfg(local_sgd=8), sources).source == "declared"


def test_unknown_without_declaration_or_table() -> None:
    with pytest.raises(SimplanError, match="declare one with --efficiency fp16:E"):
        efficiency(cfg(compress="fp16"), EfficiencySources())


def test_a_knob_the_table_lacks(table: EfficiencySources) -> None:
    with pytest.raises(SimplanError, match="no measurement of staleness"):
        efficiency(cfg(staleness=2), table)


def test_declarations_parse() -> None:
    assert parse_declared("local_sgd=8:0.8") == (("local_sgd", 8), 0.8)
    assert parse_declared("local-sgd=8:0.8") == (("local_sgd", 8), 0.8)
    assert parse_declared("fp16:1") == (("fp16", 0), 1.0)
    assert parse_declared("powersgd=2:0.25") == (("powersgd", 2), 0.25)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("local_sgd=8", "write KNOB\\[=VALUE\\]:EFFICIENCY"),
        ("local_sgd=8:1.5", "must be in \\(0, 1\\]"),
        ("local_sgd=8:0", "must be in \\(0, 1\\]"),
        ("local_sgd=8:fast", "is not a number"),
        ("momentum=2:0.5", "unknown knob 'momentum'"),
        ("fp16=2:0.9", "fp16 takes no value"),
        ("local_sgd=x:0.9", "needs a whole H"),
        ("local_sgd=1:0.9", "H must be >= 2"),
    ],
)
def test_bad_declarations_are_one_line_errors(spec: str, message: str) -> None:
    with pytest.raises(SimplanError, match=message) as info:
        parse_declared(spec)
    assert "\n" not in str(info.value)


def test_declarations_from_a_json_file(tmp_path: Path) -> None:
    path = tmp_path / "eff.json"
    path.write_text(json.dumps({"local_sgd=8": 0.8, "fp16": 1}))
    assert declared_from_specs([str(path), "bf16:0.9"]) == {
        ("local_sgd", 8): 0.8,
        ("fp16", 0): 1.0,
        ("bf16", 0): 0.9,
    }
    path.write_text(json.dumps({"local_sgd=8": 2}))
    with pytest.raises(SimplanError, match="must be in \\(0, 1\\]"):
        declared_from_specs([str(path)])


def test_a_table_without_plain_ddp_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SimplanError, match="no plain DDP row"):
        read_table(write_table(tmp_path, [("local_sgd", 2, 10.0)]))


def test_rows_that_never_reached_the_target_are_left_out(tmp_path: Path) -> None:
    with pytest.raises(SimplanError, match="no plain DDP row"):
        read_table(write_table(tmp_path, [("none", 1, 10.0)], reached=False))


def test_the_recorded_table() -> None:
    """The table measured by benchmarks/stat_efficiency.py: every knob it ran is there, each
    efficiency the ratio of median steps (plain DDP 445 steps to loss 0.6)."""
    sources = EfficiencySources(table=read_table(RECORDED))
    doc = json.loads(RECORDED.read_text())
    steps = {(r["knob"], r["value"]): r["steps_to_target"] for r in doc["rows"]}
    for config, key in (
        (cfg(local_sgd=16), ("local_sgd", 16)),
        (cfg(compress="powersgd", powersgd_rank=1), ("powersgd", 1)),
        (cfg(staleness=8), ("staleness", 8)),
    ):
        e = efficiency(config, sources)
        assert e.value == pytest.approx(min(1.0, steps[("none", 1)] / steps[key]))
        assert e.source.startswith("measured: ") and "mlp-teacher.json" in e.source
    assert doc["metadata"]["seeds"] == [0, 1, 2] and doc["metadata"]["torch_version"]


SIM = ("simulate", "--model", "mlp", "--cluster", "localhost-cpu", "--global-batch", "128",
       "--micro-batch", "64", "--dtype", "fp32")  # fmt: skip


def test_simulate_prints_goodput(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.helpers import run_main

    code, out, _ = run_main(capsys, *SIM, "--local-sgd", "8", "--efficiency", "local_sgd=8:0.5",
                            "--json")  # fmt: skip
    doc = json.loads(out)
    assert code == 0 and doc["goodput"]["efficiency_source"] == "declared"
    assert doc["goodput"]["goodput_samples_per_s"] == pytest.approx(doc["samples_per_s"] * 0.5)
    code, _, err = run_main(capsys, *SIM, "--local-sgd", "32", "--efficiency-table", str(RECORDED))
    assert code == 2 and "extrapolation" in err and err.count("\n") == 1


def test_asynchronous_runs_read_the_table_at_their_mean_staleness(tmp_path: Path) -> None:
    """Plain DDP (staleness 0) 100 steps, fixed delay 1: 110, 4: 200. A mean of 0.5 lies
    between 0 and 1 (105 steps), 2.5 half-way from 1 to 4 (155 steps); 5 is beyond."""
    from simplan.efficiency import at_mean_staleness

    rows = [("none", 1, 100.0), ("staleness", 1, 110.0), ("staleness", 4, 200.0)]
    t = read_table(write_table(tmp_path, rows))
    assert at_mean_staleness(t, 0.5).value == pytest.approx(100 / 105)
    e = at_mean_staleness(t, 2.5)
    assert e.value == pytest.approx(100 / 155) and "assumed" in e.source
    with pytest.raises(SimplanError, match="beyond the staleness measured"):
        at_mean_staleness(t, 5.0)
