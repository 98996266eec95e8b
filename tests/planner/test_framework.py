"""Planning for a framework (`simplan plan --framework`): every proposed plan is one that
framework runs (its export succeeds, reads back into the plan, and the framework's own
configuration code parses it where the `frameworks` extra is installed); what only another
framework runs is never proposed; nothing runnable is one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simplan.cli import main
from simplan.planner.export import TARGETS, chunks, megatron_layout, unsupported
from simplan.planner.plan import Plan
from tests.helpers import run_main as _run
from tests.planner.test_export import check_export, refusal
from tests.planner.test_export_frameworks import (
    DEEPSPEED_PARSE,
    MEGATRON_LAYOUT_PARSE,
    TORCHTITAN_PARSE,
    installed,
    parse,
)

# per framework: a job it can run, whose unconstrained best plans include ones it cannot
SCENARIOS = {
    "megatron": ("gpt3-1.3b", "dgx-a100", "2", "512"),
    "torchtitan": ("llama3-8b", "dgx-h100", "", "256"),
    "deepspeed": ("llama3-8b", "dgx-h100", "2", "256"),
}


def plan_argv(framework: str, out: Path | None = None) -> list[str]:
    model, cluster, nodes, batch = SCENARIOS[framework]
    argv = ["plan", "--model", model, "--cluster", cluster, "--global-batch", batch,
            "--time-limit", "40", "--top", "3"]  # fmt: skip
    if nodes:
        argv += ["--nodes", nodes]
    if out is not None:
        argv += ["--out", str(out)]
    return argv


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Per framework, the plans.json of a search for it."""
    out = {}
    for framework in TARGETS:
        directory = tmp_path_factory.mktemp(framework)
        assert main([*plan_argv(framework, directory), "--framework", framework]) == 0
        out[framework] = directory
    return out


def proposed(directory: Path) -> list[Plan]:
    from simplan.planfile import plan_from_dict
    from simplan.planner.plan import from_planfile

    doc = json.loads((directory / "plans.json").read_text())
    return [from_planfile(plan_from_dict(p, "plans.json")) for p in doc["plans"]]


@pytest.mark.parametrize("framework", TARGETS)
def test_every_proposed_plan_is_one_the_framework_runs(planned, framework: str) -> None:
    plans = proposed(planned[framework])
    assert plans
    for plan in plans:
        assert plan.framework == framework
        assert refusal(plan, framework) == ""  # the documented limits, written independently
        check_export(plan, framework)  # exported, read back into the plan's settings
    best = Plan.read(planned[framework] / "plan.json")
    assert best.framework == framework and best.config == plans[0].config
    doc = json.loads((planned[framework] / "plans.json").read_text())
    assert doc["constraints"]["framework"] == framework


@pytest.mark.parametrize("framework", TARGETS)
def test_what_only_another_framework_runs_is_never_proposed(capsys, framework: str) -> None:
    """The same search without --framework proposes plans this framework refuses: the
    constraint is what keeps them out."""
    code, out, _ = _run(capsys, *plan_argv(framework), "--json", "--top", "5")
    assert code == 0
    from simplan.parallel import ParallelConfig

    free = [ParallelConfig.from_dict(p["config"]) for p in json.loads(out)["plans"]]
    model = SCENARIOS[framework][0]
    refused = [c for c in free if unsupported(framework, c, model) is not None]
    if framework == "megatron":  # its only limit (GPipe) is rarely the winner: ask for GPipe
        code, out, _ = _run(capsys, *plan_argv(framework), "--json", "--schedules", "gpipe",
                            "--pp", "2-8")  # fmt: skip
        assert code == 0
        refused = [ParallelConfig.from_dict(p["config"]) for p in json.loads(out)["plans"]]
        assert all(c.schedule == "gpipe" for c in refused)
    assert refused, "the scenario does not exercise the constraint"
    code, out, _ = _run(capsys, *plan_argv(framework), "--json", "--top", "5",
                        "--framework", framework)  # fmt: skip
    assert code == 0
    kept = [ParallelConfig.from_dict(p["config"]) for p in json.loads(out)["plans"]]
    assert kept and not set(kept) & set(refused)
    assert all(unsupported(framework, c, model) is None for c in kept)


@pytest.mark.skipif(not installed("torchtitan"), reason="the frameworks extra is not installed")
def test_torchtitan_parses_the_plans_made_for_it(planned, tmp_path) -> None:
    from tests.planner.test_export import read_torchtitan_job

    plans = proposed(planned["torchtitan"])
    paths = []
    for i, plan in enumerate(plans):
        paths.append(tmp_path / f"job{i}.toml")
        paths[-1].write_text(plan.export("torchtitan"))
    for plan, job in zip(plans, parse(TORCHTITAN_PARSE, [str(p) for p in paths]), strict=True):
        back = read_torchtitan_job(job)
        assert (back.dp, back.tp, back.pp) == (plan.config.dp, plan.config.tp, plan.config.pp)
        assert (back.zero, back.recompute) == (plan.config.zero, plan.config.recompute)


@pytest.mark.skipif(not installed("deepspeed"), reason="the frameworks extra is not installed")
def test_deepspeed_parses_the_plans_made_for_it(planned, tmp_path) -> None:
    plans = proposed(planned["deepspeed"])
    args = []
    for i, plan in enumerate(plans):
        path = tmp_path / f"ds{i}.json"
        path.write_text(plan.export("deepspeed"))
        args.append(f"{path}:{plan.config.dp}")
    for plan, got in zip(plans, parse(DEEPSPEED_PARSE, args), strict=True):
        assert got["zero"] == plan.config.zero
        assert (got["micro_batch"], got["accumulation"]) == (
            plan.config.micro_batch,
            plan.config.num_microbatches,
        )


@pytest.mark.skipif(not installed("megatron.core"), reason="the frameworks extra is not installed")
def test_megatron_core_reads_the_layouts_of_the_plans_made_for_it(capsys) -> None:
    code, out, _ = _run(capsys, *plan_argv("megatron"), "--pp", "2-4", "--framework", "megatron",
                        "--json")  # fmt: skip
    assert code == 0
    from simplan.parallel import ParallelConfig
    from simplan.planfile import ClusterRef, PlanFile
    from simplan.planner.plan import from_planfile

    model, cluster, nodes, _ = SCENARIOS["megatron"]
    plans = [
        from_planfile(
            PlanFile(
                model=model,
                cluster=ClusterRef(spec=cluster, nodes=int(nodes)),
                config=ParallelConfig.from_dict(p["config"]),
            )
        )
        for p in json.loads(out)["plans"]
    ]
    assert plans and all(p.config.pp > 1 and p.config.schedule != "gpipe" for p in plans)
    args = []
    for plan in plans:
        layers = sum(c.blocks for c in chunks(plan))
        args.append(json.dumps([megatron_layout(chunks(plan)), plan.config.pp, layers]))
    for plan, ids in zip(plans, parse(MEGATRON_LAYOUT_PARSE, args), strict=True):
        assert [len(chunk) for chunk in ids] == [c.blocks for c in chunks(plan)]


def test_export_defaults_to_the_framework(capsys, tmp_path) -> None:
    job = tmp_path / "job.toml"
    argv = [*plan_argv("torchtitan", tmp_path / "plans"), "--framework", "torchtitan"]
    code, _, err = _run(capsys, *argv, "--export", "--export-out", str(job))
    assert code == 0, err
    plan = Plan.read(tmp_path / "plans" / "plan.json")
    assert job.read_text() == plan.export("torchtitan")
    # `simplan export` without --to exports to the framework the plan file records
    code, out, _ = _run(capsys, "export", str(tmp_path / "plans" / "plan.json"))
    assert code == 0 and out == plan.export("torchtitan")


def test_export_with_no_name_needs_a_framework(capsys) -> None:
    code, out, err = _run(capsys, *plan_argv("megatron"), "--export")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "--export without a name needs --framework" in err


@pytest.mark.parametrize(
    ("framework", "extra", "says"),
    [
        ("deepspeed", ["--tp", "2"], "DeepSpeed can run none of the"),
        ("megatron", ["--schedules", "gpipe", "--pp", "2-8"], "Megatron-LM can run none of the"),
        ("torchtitan", ["--zero", "1,2", "--dp", "2-64"], "torchtitan can run none of the"),
    ],
)
def test_nothing_runnable_is_one_line(capsys, tmp_path, framework, extra, says) -> None:
    out_dir = tmp_path / "plans"
    argv = [*plan_argv(framework, out_dir), "--framework", framework, *extra]
    code, out, err = _run(capsys, *argv)
    assert code == 2 and out == "" and not out_dir.exists()
    assert err.count("\n") == 1 and says in err and "Traceback" not in err


def test_a_model_the_framework_cannot_train_is_refused_before_searching(capsys) -> None:
    code, out, err = _run(capsys, "plan", "--model", "resnet50", "--cluster", "dgx-a100",
                          "--global-batch", "64", "--framework", "megatron")  # fmt: skip
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "not a transformer model" in err


def test_simulate_checks_one_configuration(capsys) -> None:
    base = ("simulate", "--model", "llama3-8b", "--cluster", "dgx-h100", "--global-batch", "256")
    code, out, err = _run(capsys, *base, "--zero", "1", "--framework", "torchtitan")
    assert code == 2 and out == "" and err.count("\n") == 1 and "ZeRO-1" in err
    code, out, err = _run(capsys, *base, "--tp", "2", "--framework", "deepspeed")
    assert code == 2 and "tensor or pipeline degree" in err
    code, out, _ = _run(capsys, *base, "--zero", "3", "--recompute", "full", "--framework",
                        "torchtitan", "--json")  # fmt: skip
    assert code == 0 and json.loads(out)["config"]["zero"] == 3


def test_the_exports_and_the_planner_share_one_rule_set() -> None:
    """Each rule the exporter refuses with is the predicate the search prunes by."""
    from simplan.errors import SimplanError
    from simplan.parallel import ParallelConfig
    from simplan.planfile import ClusterRef, PlanFile
    from simplan.planner.plan import from_planfile

    configs = [
        ParallelConfig(dp=8, zero=z, recompute=r, global_batch=64)
        for z in (0, 1, 2, 3)
        for r in ("none", "selective", "full")
    ] + [ParallelConfig(dp=4, tp=2, global_batch=64, sequence_parallel=sp) for sp in (False, True)]
    for framework in TARGETS:
        for config in configs:
            plan = from_planfile(
                PlanFile(model="llama3-8b", cluster=ClusterRef(spec="dgx-h100"), config=config)
            )
            why = unsupported(framework, config, "llama3-8b")
            try:
                plan.export(framework)
                refused = None
            except SimplanError as exc:
                refused = str(exc)
            assert (why is None) == (refused is None), (framework, config.describe())
            if why is not None and refused is not None:
                assert why.split(": ", 1)[1] == refused.split(": ", 1)[1]


# ---- the frameworks' published recipes ---------------------------------------------------


def test_every_recipe_cites_its_source_and_is_a_valid_configuration() -> None:
    import re

    from simplan.planner.recipes import load_recipes
    from simplan.sources import resolve

    recipes = load_recipes()
    assert {r.framework for r in recipes} == set(TARGETS)
    for r in recipes:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40} \S+", r.source), r.source
        assert r.name.split("/")[-1] in r.source
        assert resolve(r.model).kind == "toml"  # a transformer preset
        devices = r.published_devices or r.tp * r.pp * 8
        batch = r.published_global_batch or r.micro_batch * devices // (r.tp * r.pp)
        config = r.config(devices, batch, "bf16", 2048)
        assert not isinstance(config, str), config
        assert (config.tp, config.pp, config.micro_batch) == (r.tp, r.pp, r.micro_batch)


def test_a_recipe_applies_only_where_the_devices_and_batch_divide() -> None:
    from simplan.planner.recipes import recipes_for

    (gpt175,) = recipes_for("megatron", "gpt3-175b")
    assert "do not divide by its tp 8 x pp 16" in str(gpt175.config(64, 1536, "bf16", 2048))
    assert "does not divide" in str(gpt175.config(1024, 100, "bf16", 2048))
    config = gpt175.config(1024, 1536, "bf16", 2048)
    assert not isinstance(config, str) and config.dp == 8 and config.num_microbatches == 192


def test_the_recipe_row_is_shown_with_the_right_ratio_and_never_proposed(capsys) -> None:
    from simplan.planner.explain import times_faster

    argv = [*plan_argv("torchtitan"), "--framework", "torchtitan"]
    code, out, _ = _run(capsys, *argv, "--json")
    assert code == 0
    doc = json.loads(out)
    (row,) = [b for b in doc["baselines"] if b["role"] == "baseline:torchtitan-recipe"]
    # llama3_8b.toml: FSDP over all 8 devices, local batch 1, per-op selective checkpointing
    config = row["config"]
    assert (config["dp"], config["tp"], config["pp"], config["micro_batch"]) == (8, 1, 1, 1)
    assert (config["zero"], config["recompute"]) == (3, "op")
    assert all(p["role"] == "plan" for p in doc["plans"])
    (recipe,) = doc["recipes"]
    assert recipe["applies"] and "pytorch/torchtitan@" in recipe["source"]
    code, out, _ = _run(capsys, *argv, "--explain")
    assert code == 0
    winner_s = doc["plans"][0]["step_time_s"]
    ratio = times_faster(winner_s, row["step_time_s"])
    (line,) = [x for x in out.splitlines() if "vs baseline:torchtitan-recipe" in x]
    assert f"the winner is {ratio} (" in line
    ratio_value = float(ratio.split("x")[0])
    speeds = row["step_time_s"] / winner_s
    assert ratio_value == pytest.approx(max(speeds, 1 / speeds), rel=0.06)
    assert "llama3_8b.toml (pytorch/torchtitan@" in out  # where the recipe comes from


def test_a_recipe_that_does_not_fit_is_shown_and_said(capsys) -> None:
    """Megatron-LM's Llama 3 8B script (no recomputation, micro-batch 1) does not fit a DGX H100
    at sequence 8192 in bf16 under the memory model (the script runs fp8): shown, marked."""
    argv = ["plan", "--model", "llama3-8b", "--cluster", "dgx-h100", "--global-batch", "256",
            "--framework", "megatron", "--time-limit", "40"]  # fmt: skip
    code, out, _ = _run(capsys, *argv, "--json")
    assert code == 0
    doc = json.loads(out)
    rows = [b for b in doc["baselines"] if b["role"] == "baseline:megatron-recipe"]
    assert len(rows) == 1
    (recipe,) = doc["recipes"]
    assert recipe["fits"] == rows[0]["fits_memory"]
    if not recipe["fits"]:
        assert all(p["config"] != rows[0]["config"] for p in doc["plans"])
        code, out, _ = _run(capsys, *argv, "--explain")
        assert "baseline:megatron-recipe: examples/llama/train_llama3_8b_h100_fp8.sh" in out
        assert "does not fit in memory under the simulator" in out
        (line,) = [x for x in out.splitlines() if "vs baseline:megatron-recipe" in x]
        assert line.endswith("(it does not fit: the memory less the headroom)")
