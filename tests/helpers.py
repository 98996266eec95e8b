"""Helpers for tests that drive the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from simplan.model_graph import Layer, ModelGraph, OpCost

ROOT = Path(__file__).resolve().parent.parent


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run `python -m simplan ARGS` in a fresh process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "simplan", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        env=env,
        timeout=timeout,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def chain_graph(
    n: int, *, params: int, io_bytes: float, fwd_ops: OpCost, bwd_ops: OpCost
) -> ModelGraph:
    """n identical synthetic layers in a chain (8 TFLOP forward, 16 backward per sample)."""
    layers = tuple(
        Layer(
            name=f"l{i}",
            kind="block",
            params=params,
            param_bytes=2 * params,
            fwd_flops=8e12,
            bwd_flops=1.6e13,
            activation_bytes=1e6,
            output_bytes=io_bytes,
            input_bytes=io_bytes,
            identity="same",
            fwd_ops=fwd_ops,
            bwd_ops=bwd_ops,
        )
        for i in range(n)
    )
    edges = tuple((f"l{i}", f"l{i + 1}") for i in range(n - 1))
    return ModelGraph(
        name="chain",
        layers=layers,
        edges=edges,
        seq_len=0,
        dtype="bf16",
        tokens_per_sample=1,
        source="test",
    )


def mlp_profile_with(whole_fwd_s: float, whole_bwd_s: float, **fields: object) -> Any:
    """A synthetic CPU profile of the mlp preset: each of its three layers 1e-4 s forward and
    2e-4 s backward (3e-4 and 6e-4 in all), the whole model as given; `fields` set the rest."""
    from simplan.profiles import LayerTiming, Profile
    from simplan.sources import load_model

    graph = load_model("mlp")
    timing = LayerTiming(fwd_s=1e-4, bwd_s=2e-4, repeats=3)
    return Profile(
        model=graph,
        device="cpu",
        device_name="test",
        dtype="fp32",
        micro_batch=8,
        seq_len=0,
        timings={layer.identity: timing for layer in graph.layers},
        whole_model=LayerTiming(fwd_s=whole_fwd_s, bwd_s=whole_bwd_s, repeats=3),
        **fields,  # type: ignore[arg-type]
    )


def two_cpu_spec(calibration: Path) -> dict[str, Any]:
    """A cluster spec of one node of 2 CPU devices on loopback, priced by a bench-comm file."""
    return {
        "name": "cpu2",
        "calibration": str(calibration),
        "node_group": [
            {
                "devices_per_node": 2,
                "device": {
                    "kind": "cpu",
                    "peak_tflops": 0.1,
                    "memory_gib": 8,
                    "memory_bandwidth_gbps": 10,
                },
                "fabric": {"kind": "loopback", "bandwidth_GBps": 99},
            }
        ],
    }


def run_main(capsys: Any, *argv: str) -> tuple[int, str, str]:
    """simplan's main in this process: (exit status, stdout, stderr); argparse's exits too."""
    from simplan.cli import main

    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def process_gone(pid: int) -> bool:
    """Whether a process has exited (absent, or a zombie waiting to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"
