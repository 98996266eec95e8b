"""`simplan schedule` and `simplan report schedule` end to end, with an in-memory workload in
place of a trace file (the seam `load_workload`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from simplan.cli import main
from simplan.commands import schedule as verb
from simplan.schedule.run import Workload
from tests.schedule.fakes import LinearSpeeds, job

JOBS = tuple(
    job(f"j{i}", 400 * (1 + i % 3), gpus=2 ** (i % 4), arrival_s=20.0 * i) for i in range(10)
)
BASE = ["schedule", "--trace", "t.csv", "--cluster", "dgx-a100", "--nodes", "2"]


@pytest.fixture
def workload(monkeypatch):
    def fake(args, spec):
        return Workload(jobs=JOBS, spec=spec, speeds=LinearSpeeds({"m": 1.0}))

    monkeypatch.setattr(verb, "load_workload", fake)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_compare_prints_one_row_per_policy(capsys, workload):
    code, out, err = run(capsys, *BASE, "--compare", "fifo,srtf,las,hybrid")
    assert code == 0 and err == ""
    rows = [line.split()[0] for line in out.splitlines()[3:7]]
    assert rows == ["fifo", "srtf", "las", "hybrid"]
    assert "10 jobs of t.csv on dgx-a100 (16 GPUs)" in out


def test_json_is_one_document_with_every_job(capsys, workload):
    code, out, _ = run(capsys, *BASE, "--policy", "srtf", "--json", "--mtbf-h", "0.5")
    assert code == 0
    doc = json.loads(out)
    assert doc["schema"] == {"kind": "schedule", "version": 1}
    (result,) = doc["results"]
    assert result["policy"] == "srtf" and len(result["jobs"]) == 10
    assert result["metrics"]["failures"] >= 1  # a half-hour MTBF over two nodes


def test_out_writes_figures_and_report_schedule_rereads_them(capsys, workload, tmp_path):
    out = tmp_path / "sched"
    code, _, _ = run(capsys, *BASE, "--compare", "fifo,las", "--out", str(out))
    assert code == 0
    names = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    assert {"schedule.json", "jct_cdf.png", "utilization.png", "index.md"} <= names
    assert "| las |" in (out / "index.md").read_text()
    again = tmp_path / "again"
    code, _, _ = run(capsys, "report", "schedule", str(out / "schedule.json"), "--out", str(again))
    assert code == 0 and (again / "jct_cdf.png").exists()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--compare", "fifo,bogus"], "--compare takes policies from"),
        (["--compare", "fifo,fifo"], "names a policy twice"),
        (["--policy", "las", "--compare", "fifo,las"], "not both"),
    ],
)
def test_bad_policy_lists_get_one_line(capsys, workload, extra, needle):
    code, out, err = run(capsys, *BASE, *extra)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and needle in err


def test_a_job_that_fits_nowhere_gets_one_line(capsys, monkeypatch):
    def fake(args, spec):
        return Workload(jobs=(job("huge", 10, gpus=64),), spec=spec, speeds=LinearSpeeds({"m": 1}))

    monkeypatch.setattr(verb, "load_workload", fake)
    code, out, err = run(capsys, *BASE)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "job huge" in err


def test_without_the_trace_module_the_verb_says_so_in_one_line(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "simplan.schedule.trace", None)
    code, out, err = run(capsys, *BASE)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "simplan.schedule.trace" in err


def test_report_schedule_refuses_other_json(capsys, tmp_path: Path):
    other = tmp_path / "x.json"
    other.write_text('{"schema": {"kind": "plan", "version": 1}}')
    code, out, err = run(capsys, "report", "schedule", str(other), "--out", str(tmp_path / "r"))
    assert code == 2 and out == "" and "not a simplan schedule file" in err
