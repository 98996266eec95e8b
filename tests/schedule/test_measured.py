"""A measured throughput table replaces the simulator for the jobs it names."""

from __future__ import annotations

from pathlib import Path

import pytest

from simplan.errors import SimplanError
from simplan.schedule.core import Job, Shape
from simplan.schedule.measured import MeasuredSpeeds, read_measurements

A100_8 = Shape(gpu_type="a100-80gb", gpus=8, nodes=1)
A100_16 = Shape(gpu_type="a100-80gb", gpus=16, nodes=2)
H100_8 = Shape(gpu_type="h100-sxm", gpus=8, nodes=1)


def _job(model: str = "gpt3-1.3b", **fields: object) -> Job:
    return Job(**{"id": "j", "model": model, "global_batch": 512, "work": 1.0, **fields})  # type: ignore[arg-type]


class Simulated:
    """A stand-in for PlannedSpeeds: 2 s per step everywhere."""

    def step_time_s(self, job: Job, shape: Shape) -> float | None:
        return 2.0


def _table(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "measured.csv"
    path.write_text(text)
    return path


def test_measured_rows_replace_the_simulator(tmp_path: Path) -> None:
    path = _table(
        tmp_path,
        "# steps/s measured on our cluster\n"
        "job,gpu_type,gpus,steps_per_s,nodes\n"
        "gpt3-1.3b,A100,8,0.5,\n"
        "gpt3-1.3b|gb512|s0,NVIDIA H100 SXM,8,1.25,\n"
        "gpt3-1.3b,a100-80gb,16,0.8,2\n",
    )
    table = MeasuredSpeeds.from_csv(path, fallback=Simulated())
    job = _job()
    assert table.step_time_s(job, A100_8) == 1 / 0.5  # by its model
    assert table.step_time_s(job, H100_8) == 1 / 1.25  # by its kind
    assert table.step_time_s(job, A100_16) == 1 / 0.8
    speed = table.speed(job, A100_8)
    assert speed is not None and speed.source == "measured"
    # a shape the table lacks has no speed for a job it names: never simulated beside measured
    assert table.step_time_s(job, Shape(gpu_type="a100-80gb", gpus=4, nodes=1)) is None
    assert table.step_time_s(job, Shape(gpu_type="a100-80gb", gpus=16, nodes=16)) is None
    assert table.step_time_s(_job(max_gpus=4), A100_8) is None  # the job does not allow it
    # other jobs go to the fallback
    assert table.step_time_s(_job("gpt3-350m"), A100_8) == 2.0
    assert MeasuredSpeeds(read_measurements(path)).step_time_s(_job("gpt3-350m"), A100_8) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("job,gpu,gpus,steps_per_s\n", "the header needs job, gpu_type, gpus, steps_per_s"),
        ("job,gpu_type,gpus,steps_per_s\n", "holds no measurements"),
        ("job,gpu_type,gpus,steps_per_s\nm,A100,8,0\n", "line 2, field steps_per_s: must be"),
        ("job,gpu_type,gpus,steps_per_s\nm,A100,8,fast\n", "line 2, field steps_per_s"),
        ("job,gpu_type,gpus,steps_per_s\nm,A100,0,1\n", "line 2, field gpus: must be"),
        ("job,gpu_type,gpus,steps_per_s\nm,K80,8,1\n", "line 2, field gpu_type: unknown GPU"),
        ("job,gpu_type,gpus,steps_per_s\n,A100,8,1\n", "line 2, field job: is missing"),
    ],
)
def test_bad_tables(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SimplanError, match=message):
        read_measurements(_table(tmp_path, text))
