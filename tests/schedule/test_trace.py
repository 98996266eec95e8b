"""Job traces: reading, writing, work in steps, GPU type names, and every bad-trace error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simplan.errors import SimplanError
from simplan.schedule.core import Job
from simplan.schedule.trace import (
    COLUMNS,
    canonical_gpu_type,
    read_trace,
    work_steps,
    write_trace,
)
from tests.helpers import ROOT
from tests.plan_files import TINY_MODEL

TINY = ROOT / "examples" / "traces" / "tiny.csv"
HEADER = ",".join(COLUMNS)


def _csv(tmp_path: Path, *rows: str, header: str = HEADER) -> Path:
    path = tmp_path / "t.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_tiny_example_reads_with_its_values() -> None:
    jobs = read_trace(TINY)
    assert len(jobs) == 8
    assert len({j.id for j in jobs}) == 8
    first = jobs[0]
    assert first == Job(id="tiny-gpt-a", model="gpt-tiny", global_batch=8, work=20.0,
                        gpu_types=("cpu",), max_gpus=2)  # fmt: skip
    deadline = next(j for j in jobs if j.id == "tiny-gpt-c")
    assert deadline.deadline_s == 120.0 and deadline.arrival_s == 8.0
    assert [j.arrival_s for j in jobs] == sorted(j.arrival_s for j in jobs)


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_round_trip(tmp_path: Path, fmt: str) -> None:
    jobs = read_trace(TINY)
    jobs.append(
        Job(id="x,y", model="gpt3-125m", global_batch=12, seq_len=256, work=1.5e9,
            work_unit="tokens", arrival_s=0.25, weight=3.0, deadline_s=1e5, min_gpus=2,
            max_gpus=16, gpu_types=("a100-80gb", "h100-sxm"))
    )  # fmt: skip
    path = write_trace(jobs, tmp_path / f"trace.{fmt}")
    assert read_trace(path) == jobs


def test_json_trace_has_its_version(tmp_path: Path) -> None:
    path = write_trace(read_trace(TINY)[:2], tmp_path / "t.json")
    doc = json.loads(path.read_text())
    assert doc["version"] == 1 and len(doc["jobs"]) == 2


def test_work_in_steps() -> None:
    jobs = {j.id: j for j in read_trace(TINY)}
    assert work_steps(jobs["tiny-gpt-a"]) == 20.0  # steps as given
    assert work_steps(jobs["mlp-a"]) == 3200 / 64  # samples / global batch
    assert work_steps(jobs["tiny-gpt-b"]) == 10240 / (8 * 64)  # tokens / (batch x seq)
    own = Job(id="o", model="gpt-tiny", global_batch=8, work=8 * 128 * 5, work_unit="tokens")
    assert work_steps(own) == 5.0  # gpt-tiny's own sequence length is 128


def test_model_file_relative_to_the_trace(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "m.toml").write_text(TINY_MODEL)
    path = _csv(tmp_path, "1,a,m.toml,8,,10,steps,,,,,,")
    monkeypatch.chdir(ROOT)
    (job,) = read_trace(path)
    assert Path(job.model) == tmp_path / "m.toml"


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("A100", "a100-80gb"),
        ("a100_40gb", "a100-40gb"),
        ("NVIDIA A100-SXM4-80GB", "a100-80gb"),
        ("H100", "h100-sxm"),
        ("NVIDIA H100 SXM", "h100-sxm"),
        ("h100-sxm", "h100-sxm"),
        ("H200", "h200"),
        ("NVIDIA B200", "b200"),
        ("GB200", "gb200"),
        ("NVIDIA B300 SXM", "b300"),
        ("CPU", "cpu"),
    ],
)
def test_canonical_gpu_type(name: str, canonical: str) -> None:
    assert canonical_gpu_type(name) == canonical


def test_unknown_gpu_type() -> None:
    with pytest.raises(SimplanError, match=r"unknown GPU type 'v100'.*a100-80gb"):
        canonical_gpu_type("v100")


GOOD = "1,a,gpt-tiny,8,,10,steps,,,,,,"

BAD_ROWS = [
    ("1,a,no-such-model,8,,10,steps,,,,,,", "model: unknown model 'no-such-model'"),
    ("1,a,gpt-tiny,8,,-5,steps,,,,,,", "work: must be > 0, got -5"),
    ("1,a,gpt-tiny,8,,0,steps,,,,,,", "work: must be > 0"),
    ("1,a,gpt-tiny,0,,10,steps,,,,,,", "global_batch: must be >= 1"),
    ("1,a,gpt-tiny,8.5,,10,steps,,,,,,", "global_batch: must be a whole number"),
    ("1,a,gpt-tiny,8,,ten,steps,,,,,,", "work: must be a number, got 'ten'"),
    ("1,a,gpt-tiny,8,,nan,steps,,,,,,", "work: must be a finite number"),
    ("1,a,gpt-tiny,8,,10,epochs,,,,,,", "work_unit: must be one of steps, samples, tokens"),
    ("1,a,gpt-tiny,8,,10,steps,-1,,,,,", "arrival_s: must be >= 0"),
    ("1,a,gpt-tiny,8,,10,steps,,-2,,,,", "weight: must be >= 0"),
    ("1,a,gpt-tiny,8,,10,steps,50,,40,,,", "deadline_s: 40 is not after arrival_s 50"),
    ("1,a,gpt-tiny,8,,10,steps,,,,0,,", "min_gpus: must be >= 1"),
    ("1,a,gpt-tiny,8,,10,steps,,,,4,2,", "max_gpus: 2 is below min_gpus 4"),
    ("1,a,gpt-tiny,8,,10,steps,,,,,,v100", "gpu_types: unknown GPU type 'v100'"),
    ("1,,gpt-tiny,8,,10,steps,,,,,,", "id: is missing"),
    ("1,a,gpt-tiny,,,10,steps,,,,,,", "global_batch: is missing"),
    ("2,a,gpt-tiny,8,,10,steps,,,,,,", "version: is '2'; this simplan reads version 1"),
    ("1,a,gpt-tiny,8,,10,steps", "(row): has not the 13 cells of the header"),
    ("1,a,gpt-tiny,8,,10,steps,,,,,,,extra", "(row)"),
]  # fmt: skip


@pytest.mark.parametrize(("row", "message"), BAD_ROWS)
def test_bad_row(tmp_path: Path, row: str, message: str) -> None:
    path = _csv(tmp_path, row)
    with pytest.raises(SimplanError) as info:
        read_trace(path)
    text = str(info.value)
    assert "\n" not in text
    assert f"{path}: line 2, field {message}" in text, text


def test_duplicate_id_names_both_rows(tmp_path: Path) -> None:
    path = _csv(tmp_path, GOOD, "# a comment", "1,b,mlp,8,,10,steps,,,,,,", GOOD)
    with pytest.raises(SimplanError, match=r"line 5, field id: 'a' repeats the id of line 2"):
        read_trace(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id,model,global_batch,work\na,mlp,8,10\n", "the header has no version column"),
        (HEADER + "\n", "holds no jobs"),
        (HEADER + ",colour\n" + GOOD + ",red\n", "line 2, field colour: is not a v1 field"),
    ],
)
def test_bad_csv(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(SimplanError, match=message):
        read_trace(path)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("{not json", "malformed JSON at line 1"),
        ("[1, 2]", 'a JSON trace is an object {"version": 1'),
        ('{"version": 3, "jobs": []}', "top level, field version: is 3"),
        ('{"version": 1, "jobs": [], "job": 1}', "unknown top-level field 'job'"),
        ('{"version": 1, "jobs": [7]}', r"jobs\[0\], field \(job\): must be an object"),
        ('{"version": 1, "jobs": [{"id": "a", "model": "mlp", "global_batch": true, '
         '"work": 1}]}', r"jobs\[0\], field global_batch: must be a number, got True"),
        ('{"version": 1, "jobs": [{"id": "a", "model": "mlp", "global_batch": 8, '
         '"work": -1}]}', r"jobs\[0\], field work: must be > 0"),
    ],
)  # fmt: skip
def test_bad_json(tmp_path: Path, doc: str, message: str) -> None:
    path = tmp_path / "t.json"
    path.write_text(doc)
    with pytest.raises(SimplanError, match=message):
        read_trace(path)


def test_other_extension_refused(tmp_path: Path) -> None:
    with pytest.raises(SimplanError, match=r"name a \.csv or \.json file"):
        read_trace(tmp_path / "t.txt")
