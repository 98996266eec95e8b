"""`simplan schedule` and `simplan report schedule` end to end, with an in-memory workload in
place of a trace file (the seam `load_workload`)."""

from __future__ import annotations

import json
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
    assert {"gantt-fifo.png", "gantt-las.png"} <= names
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


ROOT = Path(__file__).resolve().parents[2]
HEADER = "version,id,model,global_batch,seq_len,work,work_unit,arrival_s,min_gpus,max_gpus\n"


def test_a_trace_file_that_asks_for_absent_gpus_gets_one_line(capsys):
    """The bundled CPU trace asks for gpu_types cpu: a dgx-a100 cluster has none."""
    tiny = str(ROOT / "examples" / "traces" / "tiny.csv")
    code, out, err = run(capsys, "schedule", "--trace", tiny, "--cluster", "dgx-a100",
                         "--speeds", "analytic")  # fmt: skip
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "field gpu_types" in err


def test_a_measured_table_sets_the_speed_of_the_jobs_it_names(capsys, tmp_path):
    """One job alone on the cluster with a measured 4 steps/s runs its 100 steps in 25 s; the
    job the table does not name keeps its analytic speed."""
    trace = tmp_path / "t.csv"
    trace.write_text(HEADER + "1,a,gpt3-125m,32,0,100,steps,0,8,8\n1,b,mlp,64,0,100,steps,0,1,1\n")
    measured = tmp_path / "m.csv"
    measured.write_text("job,gpu_type,gpus,steps_per_s\ngpt3-125m,A100,8,4\n")
    argv = ["schedule", "--trace", str(trace), "--cluster", "dgx-a100", "--nodes", "2",
            "--speeds", "analytic", "--json"]  # fmt: skip
    code, out, _ = run(capsys, *argv, "--measured", str(measured))
    assert code == 0
    jcts = {j["id"]: j["jct_s"] for j in json.loads(out)["results"][0]["jobs"]}
    assert jcts["a"] == pytest.approx(25.0)
    code, out, _ = run(capsys, *argv)
    plain = {j["id"]: j["jct_s"] for j in json.loads(out)["results"][0]["jobs"]}
    assert plain["a"] != pytest.approx(25.0) and plain["b"] == pytest.approx(jcts["b"])


def test_report_schedule_refuses_other_json(capsys, tmp_path: Path):
    other = tmp_path / "x.json"
    other.write_text('{"schema": {"kind": "plan", "version": 1}}')
    code, out, err = run(capsys, "report", "schedule", str(other), "--out", str(tmp_path / "r"))
    assert code == 2 and out == "" and "not a simplan schedule file" in err
