"""Exports parsed by the frameworks' own configuration code at the pinned versions (the
`frameworks` extra: torchtitan 0.2.2's ConfigManager, DeepSpeed 0.16.4's DeepSpeedConfig,
Megatron-Core 0.15.3's pipeline layout parser; megatron-core does not ship Megatron-LM's
argument parser, whose names test_export.py checks against the pinned list), then read back into
the plan's degrees, micro-batch, accumulation, ZeRO stage, recomputation and stage split. Each
framework parses in a child process: torchtitan's package __init__ imports its GPU kernels
(triton), so only its config package is loaded; DeepSpeed sets up an accelerator on import.
Skipped where the extra is not installed."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from simplan.errors import SimplanError
from simplan.parallel import ParallelConfig
from simplan.planfile import ClusterRef, PlanFile
from simplan.planner.plan import Plan, from_planfile
from tests.planner.test_export import (
    SCENARIOS,
    VARIANTS,
    even_stages,
    expected_stages,
    layers_of,
    planned,  # noqa: F401  (the module fixture: the planned scenarios)
    read_torchtitan_job,
)

TORCHTITAN_PARSE = """
import dataclasses, importlib.util, json, sys, types
spec = importlib.util.find_spec("torchtitan")
package = types.ModuleType("torchtitan")
package.__path__ = list(spec.submodule_search_locations)
sys.modules["torchtitan"] = package  # its config package alone, without the GPU kernels
from torchtitan.config import ConfigManager
out = []
for path in sys.argv[1:]:
    job = ConfigManager().parse_args(["--job.config_file", path])
    out.append({name: dataclasses.asdict(getattr(job, name)) for name in
                ("model", "training", "parallelism", "activation_checkpoint")})
print(json.dumps(out))
"""

DEEPSPEED_PARSE = """
import json, sys
import deepspeed.runtime.config as config

config.dist.get_rank = lambda *args, **kwargs: 0  # no process group: rank 0 of the mpu below


class DataParallel:  # the data-parallel size DeepSpeed checks the batch sizes against
    def __init__(self, size):
        self.size = size

    def get_data_parallel_world_size(self):
        return self.size

    def get_data_parallel_rank(self):
        return 0

    def get_model_parallel_world_size(self):
        return 1

    def get_model_parallel_rank(self):
        return 0


out = []
for arg in sys.argv[1:]:
    path, dp = arg.rsplit(":", 1)
    c = config.DeepSpeedConfig(json.load(open(path)), mpu=DataParallel(int(dp)))
    out.append({"train_batch_size": c.train_batch_size,
                "micro_batch": c.train_micro_batch_size_per_gpu,
                "accumulation": c.gradient_accumulation_steps,
                "zero": int(c.zero_optimization_stage),
                "overlap_comm": bool(c.zero_config.overlap_comm),
                "bf16": bool(c.bfloat16_enabled), "fp16": bool(c.fp16_enabled)})
print(json.dumps(out))
"""


def installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def parse(script: str, args: list[str]) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def all_plans(planned_paths: dict[str, Path]) -> list[Plan]:
    plans = [Plan.read(planned_paths[name]) for name in SCENARIOS]
    for model, cluster, nodes, fields in VARIANTS:
        config = ParallelConfig(**fields)
        if config.chunks > 1:
            config = config.replace(stages=even_stages(layers_of(model), config.chunks))
        ref = ClusterRef(spec=cluster, nodes=nodes)
        plans.append(from_planfile(PlanFile(model=model, cluster=ref, config=config)))
    return plans


def exported(plans: list[Plan], kind: str, directory: Path) -> list[tuple[Plan, Path]]:
    out = []
    for i, plan in enumerate(plans):
        try:
            text = plan.export(kind)
        except SimplanError:
            continue  # refusals are checked in test_export.py
        path = directory / f"{kind}-{i}"
        path.write_text(text)
        out.append((plan, path))
    return out


@pytest.mark.skipif(not installed("torchtitan"), reason="the frameworks extra is not installed")
def test_torchtitan_parses_every_export(planned, tmp_path) -> None:  # noqa: F811
    files = exported(all_plans(planned), "torchtitan", tmp_path)
    assert len(files) >= 6  # Llama plans: DDP and FSDP, interleaved PP, full recomputation
    for (plan, _), job in zip(
        files, parse(TORCHTITAN_PARSE, [str(f) for _, f in files]), strict=True
    ):
        back = read_torchtitan_job(job)
        cfg = plan.config
        assert (back.dp, back.tp, back.pp) == (cfg.dp, cfg.tp, cfg.pp)
        assert (back.micro_batch, back.microbatches) == (cfg.micro_batch, cfg.num_microbatches)
        assert (back.zero, back.recompute) == (cfg.zero, cfg.recompute)
        assert back.stages == expected_stages(plan)


@pytest.mark.skipif(not installed("deepspeed"), reason="the frameworks extra is not installed")
def test_deepspeed_parses_every_export(planned, tmp_path) -> None:  # noqa: F811
    files = exported(all_plans(planned), "deepspeed", tmp_path)
    assert len(files) >= 4  # data-parallel plans at every ZeRO stage
    args = [f"{path}:{plan.config.dp}" for plan, path in files]
    for (plan, _), got in zip(files, parse(DEEPSPEED_PARSE, args), strict=True):
        cfg = plan.config
        assert got["train_batch_size"] == cfg.global_batch
        assert (got["micro_batch"], got["accumulation"]) == (cfg.micro_batch, cfg.num_microbatches)
        assert got["zero"] == cfg.zero and got["overlap_comm"] == cfg.overlap_grad_reduce
        assert (got["bf16"], got["fp16"]) == (cfg.dtype == "bf16", cfg.dtype == "fp16")


MEGATRON_LAYOUT_PARSE = """
import json, sys
from megatron.core import parallel_state
from megatron.core.transformer.enums import LayerType
from megatron.core.transformer.pipeline_parallel_layer_layout import PipelineParallelLayerLayout

out = []
for arg in sys.argv[1:]:
    layout, pp, layers = json.loads(arg)
    parsed = PipelineParallelLayerLayout.from_str(layout, pp)
    parsed.validate_layer_layout(num_layers=layers, mtp_num_layers=None)
    vpp = len(parsed.layout[0])
    parallel_state.set_virtual_pipeline_model_parallel_world_size(vpp if vpp > 1 else None)
    out.append([parsed.get_layer_id_list(LayerType.decoder, vp_stage=v, pp_rank=r)
                for v in range(vpp) for r in range(pp)])  # in chunk order: v * pp + r
print(json.dumps(out))
"""


@pytest.mark.skipif(not installed("megatron.core"), reason="the frameworks extra is not installed")
def test_megatron_core_reads_every_pipeline_layout(planned) -> None:  # noqa: F811
    """Megatron-Core's own layout parser puts each decoder layer on the chunk the plan does."""
    from simplan.planner.export import chunks, megatron_layout

    plans = [p for p in all_plans(planned) if p.config.pp > 1]
    plans = [p for p in plans if p.config.schedule != "gpipe"]
    assert len(plans) >= 10
    args = [
        json.dumps([megatron_layout(chunks(p)), p.config.pp, layers_of(p.model) - 2]) for p in plans
    ]
    for plan, got in zip(plans, parse(MEGATRON_LAYOUT_PARSE, args), strict=True):
        first, want = 0, []
        for part in chunks(plan):
            want.append(list(range(first, first + part.blocks)))
            first += part.blocks
        assert got == want
