"""FP8, TP communication overlap and context parallelism in the exports: the flags each
framework takes, refusals where it has none, and torchtitan's own ConfigManager reading the job
back."""

from __future__ import annotations

import json

import pytest

from simplan.errors import SimplanError
from simplan.parallel import ParallelConfig
from simplan.planfile import ClusterRef, PlanFile
from simplan.planner.plan import Plan, from_planfile
from tests.planner.test_export import PINS, megatron_flags
from tests.planner.test_export_frameworks import installed, parse

TORCHTITAN_READ = """
import dataclasses, importlib.util, json, sys, types
spec = importlib.util.find_spec("torchtitan")
package = types.ModuleType("torchtitan")
package.__path__ = list(spec.submodule_search_locations)
sys.modules["torchtitan"] = package
from torchtitan.config import ConfigManager
job = ConfigManager().parse_args(["--job.config_file", sys.argv[1]])
print(json.dumps([{
    "converters": job.model.converters,
    "float8": dataclasses.asdict(job.quantize.linear.float8),
    "async_tp": job.parallelism.enable_async_tensor_parallel,
    "compile": job.compile.enable,
    "cp": job.parallelism.context_parallel_degree,
    "rotate": job.parallelism.context_parallel_rotate_method,
}]))
"""


def plan(dp: int = 2, **fields: object) -> Plan:
    config = ParallelConfig(dp=dp, tp=8, micro_batch=1, global_batch=8, zero=3,
                            sequence_parallel=True, **fields)  # type: ignore[arg-type]  # fmt: skip
    ref = ClusterRef(spec="dgx-h100", nodes=config.world_size // 8)
    return from_planfile(PlanFile(model="llama3-8b", cluster=ref, config=config))


@pytest.mark.parametrize(
    "recipe,megatron", [("delayed", "delayed"), ("current", "tensorwise"), ("block", "blockwise")]
)
def test_megatron_takes_every_recipe_and_the_overlap(recipe: str, megatron: str) -> None:
    flags = megatron_flags(plan(fp8=recipe, tp_overlap=True).export("megatron"))
    assert flags["--fp8-recipe"] == megatron
    assert flags["--fp8-format"] == "hybrid"
    assert flags["--tp-comm-overlap"] is True
    assert {"--fp8-recipe", "--fp8-format", "--tp-comm-overlap"} <= set(
        PINS["megatron"]["arguments"]
    )
    assert "--tp-comm-overlap" not in megatron_flags(plan().export("megatron"))


def test_torchtitan_refuses_recipes_torchao_lacks() -> None:
    for recipe in ("delayed", "block"):
        with pytest.raises(SimplanError, match=f"no {recipe} scaling; plan with --fp8 current"):
            plan(fp8=recipe).export("torchtitan")


def test_deepspeed_refuses_fp8() -> None:
    config = ParallelConfig(dp=8, global_batch=8, fp8="current")
    p = from_planfile(PlanFile(model="llama3-8b", cluster=ClusterRef(spec="dgx-h100", nodes=1),
                               config=config))  # fmt: skip
    with pytest.raises(SimplanError, match="no FP8 training"):
        p.export("deepspeed")


@pytest.mark.skipif(not installed("torchtitan"), reason="the frameworks extra is not installed")
def test_torchtitan_reads_float8_and_async_tp(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "job.toml"
    path.write_text(plan(fp8="current", tp_overlap=True).export("torchtitan"))
    (job,) = parse(TORCHTITAN_READ, [str(path)])
    assert job["converters"] == ["quantize.linear.float8"]
    assert job["float8"]["recipe_name"] == "tensorwise"
    assert job["float8"]["filter_fqns"] == ["output"]
    assert job["async_tp"] is True and job["compile"] is True
    json.dumps(job)


@pytest.mark.parametrize("comm,megatron", [("ring", "p2p"), ("all_gather", "all_gather")])
def test_megatron_takes_context_parallelism(comm: str, megatron: str) -> None:
    flags = megatron_flags(plan(dp=1, cp=2, cp_comm=comm).export("megatron"))
    assert flags["--context-parallel-size"] == "2"
    assert flags["--cp-comm-type"] == megatron
    assert "--context-parallel-size" not in megatron_flags(plan().export("megatron"))


@pytest.mark.skipif(not installed("torchtitan"), reason="the frameworks extra is not installed")
def test_torchtitan_reads_context_parallelism(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "job.toml"
    path.write_text(plan(cp=2, cp_comm="ring").export("torchtitan"))
    (job,) = parse(TORCHTITAN_READ, [str(path)])
    assert (job["cp"], job["rotate"]) == (2, "alltoall")
