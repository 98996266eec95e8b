"""Across machines: two torchrun "nodes" on loopback (c10d rendezvous, --nnodes 2) run one
plan through the runtime's torchrun entry (python -m simplan.runtime.worker) and train as the
single-process reference does."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from simplan.io import read_json
from simplan.outputs import write_json_atomic
from simplan.planfile import read_plan
from simplan.ranks import free_port
from simplan.runtime.job import RankResult
from simplan.runtime.launch import job_to_dict
from simplan.runtime.plan_run import runnable_job
from simplan.runtime.reference import compare_losses, reference_losses
from tests.runtime.test_oracle import write_tiny_plan

pytestmark = pytest.mark.distributed

STEPS = 5
TIMEOUT_S = 240


def _node(port: int, job_path: Path, out: Path, log: Path) -> subprocess.Popen[bytes]:
    """One torchrun agent (a "node") with one rank, in its own process group."""
    command = [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", "2", "--nproc-per-node", "1",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "simplan",
        "-m", "simplan.runtime.worker", str(job_path), str(out),
    ]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    with log.open("wb") as sink:
        return subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def test_two_torchrun_nodes_train_as_one_process(tmp_path: Path) -> None:
    plan = read_plan(write_tiny_plan(tmp_path, dp=2, pp=1, zero=3, recompute="full"))
    job = runnable_job(plan, steps=STEPS, timeout_s=TIMEOUT_S)
    job_path = write_json_atomic(job_to_dict(job), tmp_path / "job.json")
    out = tmp_path / "out"
    port = free_port()
    nodes = [_node(port, job_path, out, tmp_path / f"node{i}.log") for i in range(2)]
    try:
        codes = [node.wait(timeout=TIMEOUT_S) for node in nodes]
    finally:
        for node in nodes:  # every agent and its ranks, even when the test failed
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGKILL)
            node.wait()
    logs = "\n".join((tmp_path / f"node{i}.log").read_text()[-2000:] for i in range(2))
    assert codes == [0, 0], logs
    ranks = [RankResult.from_dict(read_json(out / f"rank{r}.json")) for r in range(2)]
    assert ranks[0].losses == ranks[1].losses and len(ranks[0].losses) == STEPS
    expected = reference_losses(job.model, job.config, STEPS)
    comparison = compare_losses(ranks[0].losses, expected)
    assert comparison.equal, comparison.to_dict()
