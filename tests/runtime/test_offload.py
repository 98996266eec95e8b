"""The runtime and CPU offload of the optimizer: refused in one line on CPU ranks and where
FSDP2's CPUOffloadPolicy is not what the plan asks; accepted for one rank or ZeRO-2/3 on CUDA."""

from __future__ import annotations

import pytest

from simplan.errors import SimplanError
from simplan.parallel import ParallelConfig
from simplan.runtime import JobSpec
from simplan.runtime.job import runtime_refusal
from simplan.sources import load_model

GRAPH = load_model("gpt-tiny", dtype="fp32")


def _config(**fields):
    return ParallelConfig(micro_batch=1, dtype="fp32", offload="optimizer", **fields)


def test_cpu_ranks_refuse_offload_in_one_line():
    why = runtime_refusal(_config(global_batch=1), GRAPH, cuda=False)
    assert why.startswith("--offload optimizer needs CUDA devices") and "\n" not in why


@pytest.mark.parametrize(
    "fields",
    [
        {"global_batch": 1},
        {"dp": 2, "zero": 2, "global_batch": 2},
        {"dp": 2, "zero": 3, "global_batch": 2},
    ],
)
def test_cuda_ranks_run_one_rank_or_zero_2_and_3(fields):
    assert runtime_refusal(_config(**fields), GRAPH, cuda=True) == ""


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"tp": 2, "global_batch": 1}, "data-parallel plans only"),
        ({"dp": 2, "zero": 1, "global_batch": 2}, "use zero 2 or 3"),
        ({"dp": 2, "zero": 0, "global_batch": 2}, "use zero 2 or 3"),
    ],
)
def test_what_cpu_offload_policy_is_not_is_refused(fields, says):
    assert says in runtime_refusal(_config(**fields), GRAPH, cuda=True)
    with pytest.raises(SimplanError, match=says):
        JobSpec(model="gpt-tiny", config=_config(**fields), steps=1)


def test_the_cpu_offload_policy_wiring_trains_as_the_plain_model(monkeypatch, tmp_path):
    """What runs on CUDA, composed here on the CPU (unpinned, the CUDA check lifted): FSDP2 with
    CPUOffloadPolicy on one rank changes where the optimizer runs, not the losses."""
    import simplan.runtime.job as job_module
    from simplan.ranks import free_port
    from simplan.runtime.worker import train

    monkeypatch.setattr(job_module, "offload_refusal", lambda config, cuda=None: "")
    losses = {}
    for mode in ("none", "optimizer"):
        config = ParallelConfig(micro_batch=2, global_batch=2, dtype="fp32", offload=mode)
        job = JobSpec(model="gpt-tiny", config=config, steps=3, warmup=0, baseline_steps=0,
                      realtime=False)  # fmt: skip
        out = tmp_path / mode
        out.mkdir()
        losses[mode] = train(0, 1, f"tcp://127.0.0.1:{free_port()}", job, out).losses
    assert losses["optimizer"] == pytest.approx(losses["none"], rel=1e-5)
