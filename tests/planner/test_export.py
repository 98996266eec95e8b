"""Exports read back: every export of real plans (the demo plan, Llama 3 70B on 16 DGX H100
nodes, GPT-3 6.7B on mixed-a100-h100 with the ILP's uneven split) and of hand-made variants
(every ZeRO stage, recomputation, interleaving) is parsed with the pinned framework names
(simplan/data/framework_pins.json: Megatron-LM's argument names, torchtitan's job-config keys,
DeepSpeed's config keys, each from a cited tag) and read back into the plan's degrees,
micro-batch, accumulation, ZeRO equivalent, recomputation and stage split; or it is refused with
one line exactly where the framework has no exact equivalent."""

from __future__ import annotations

import json
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from simplan.cli import main
from simplan.errors import SimplanError
from simplan.parallel import ParallelConfig
from simplan.planfile import ClusterRef, PlanFile, write_plan
from simplan.planner.export import EXPORTS, FRAMEWORKS
from simplan.planner.plan import Plan, from_planfile
from tests.helpers import run_main as _run

ROOT = Path(__file__).resolve().parents[2]
PINS = json.loads((ROOT / "simplan" / "data" / "framework_pins.json").read_text())

# torchtitan v0.2.2 torchtitan/models/llama3/__init__.py: flavor -> (dim, n_layers, n_heads,
# n_kv_heads, ffn_dim_multiplier, multiple_of); its FeedForward sizes the hidden layer as below
TORCHTITAN_FLAVORS = {
    "8B": (4096, 32, 32, 8, 1.3, 1024),
    "70B": (8192, 80, 64, 8, 1.3, 4096),
    "405B": (16384, 126, 128, 8, 1.2, 4096),
}


def torchtitan_ffn(dim: int, multiplier: float, multiple_of: int) -> int:
    hidden = int(multiplier * int(2 * 4 * dim / 3))
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


@dataclass(frozen=True, kw_only=True)
class ReadBack:
    """What a framework would run, read from an export."""

    dp: int
    tp: int
    pp: int
    micro_batch: int
    microbatches: int  # per data-parallel rank and optimizer step
    zero: int
    recompute: str
    sequence_parallel: bool
    stages: tuple[int, ...]  # layer boundaries per chunk, as the plan writes them
    shape: dict[str, Any]


def model_toml(model: str) -> dict[str, Any]:
    return tomllib.loads((ROOT / "models" / f"{model}.toml").read_text())["transformer"]


def layers_of(model: str) -> int:
    return model_toml(model)["num_layers"] + 2  # embedding, blocks, output head


def expected_stages(plan: Plan) -> tuple[int, ...]:
    return plan.config.stages or (0, layers_of(plan.model))


# ---- readers ------------------------------------------------------------------------------


def megatron_flags(text: str) -> dict[str, str | bool]:
    tokens = shlex.split(text, comments=True)
    if "pretrain_gpt.py" in tokens:
        tokens = tokens[tokens.index("pretrain_gpt.py") + 1 :]
    flags: dict[str, str | bool] = {}
    for i, token in enumerate(tokens):
        if not token.startswith("--"):
            assert i and tokens[i - 1].startswith("--"), f"stray value {token!r}"
            continue
        assert token not in flags, f"{token} given twice"
        value = tokens[i + 1] if i + 1 < len(tokens) else None
        flags[token] = value if value is not None and not value.startswith("--") else True
    return flags


def num(flags: dict[str, str | bool], flag: str) -> int:
    value = flags[flag]
    assert isinstance(value, str), f"{flag} has no value"
    return int(value)


def read_megatron(text: str, world: int) -> ReadBack:
    pin = PINS["megatron"]
    flags = megatron_flags(text)
    for flag, value in flags.items():
        assert flag in pin["arguments"], f"{flag} is not a Megatron-LM {pin['tag']} argument"
        if flag in pin["choices"]:
            assert value in pin["choices"][flag], f"{flag} {value}"
    tp = num(flags, "--tensor-model-parallel-size")
    pp = num(flags, "--pipeline-model-parallel-size")
    dp = world // (tp * pp)
    mb = num(flags, "--micro-batch-size")
    gb = num(flags, "--global-batch-size")
    assert gb % (mb * dp) == 0  # Megatron-LM's own check
    num_layers = num(flags, "--num-layers")
    layout = flags.get("--pipeline-model-parallel-layout")
    if isinstance(layout, str):
        parts = layout.split("|")
        assert len(parts) % pp == 0 and layout.startswith("E") and layout.endswith("L")
        assert layout.count("t") == num_layers and set(layout) <= set("EtL|")
        stages = [0]
        for part in parts:
            stages.append(stages[-1] + len(part))
    else:
        assert pp == 1
        stages = [0, num_layers + 2]
    if "--overlap-param-gather" in flags:  # Megatron-LM refuses it otherwise
        assert "--overlap-grad-reduce" in flags
    strategy = flags.get("--data-parallel-sharding-strategy", "no_shard")
    if "--use-megatron-fsdp" in flags:
        zero = {"no_shard": 0, "optim": 1, "optim_grads": 2, "optim_grads_params": 3}[strategy]
        assert flags.get("--ckpt-format") == "fsdp_dtensor"
        assert "--use-distributed-optimizer" not in flags
    else:
        assert strategy == "no_shard"
        zero = 1 if "--use-distributed-optimizer" in flags else 0
    granularity = flags.get("--recompute-granularity", "none")
    if granularity == "full":
        assert flags["--recompute-method"] == "uniform" and flags["--recompute-num-layers"] == "1"
    kv = num(
        flags, "--num-query-groups" if "--num-query-groups" in flags else "--num-attention-heads"
    )
    if "--num-query-groups" in flags:
        assert "--group-query-attention" in flags
    return ReadBack(
        dp=dp,
        tp=tp,
        pp=pp,
        micro_batch=mb,
        microbatches=gb // (mb * dp),
        zero=zero,
        recompute=str(granularity),
        sequence_parallel="--sequence-parallel" in flags,
        stages=tuple(stages),
        shape={
            "hidden_size": num(flags, "--hidden-size"),
            "num_layers": num_layers,
            "num_heads": num(flags, "--num-attention-heads"),
            "num_kv_heads": kv,
            "ffn_hidden_size": num(flags, "--ffn-hidden-size"),
            "vocab_size": num(flags, "--vocab-size"),
            "seq_len": num(flags, "--seq-length"),
            "swiglu": "--swiglu" in flags,
            "rmsnorm": flags["--normalization"] == "RMSNorm",
            "rope": flags["--position-embedding-type"] == "rope",
            "tied": "--untie-embeddings-and-output-weights" not in flags,
        },
    )


def _recompute_of(section: dict[str, Any]) -> str:
    """simplan's recompute mode of torchtitan's [activation_checkpoint] (its default mode is
    selective, per op)."""
    mode = section.get("mode", "selective")
    if mode == "selective":
        return "op" if section.get("selective_ac_option", "op") == "op" else "layers"
    return str(mode)


def read_torchtitan(text: str) -> ReadBack:
    return read_torchtitan_job(tomllib.loads(text))


def read_torchtitan_job(job: dict[str, Any]) -> ReadBack:
    """A torchtitan job config (section -> key -> value): from the export's TOML, or as
    torchtitan's own ConfigManager parsed it."""
    pin = PINS["torchtitan"]
    for section, values in job.items():
        assert section in pin["sections"], f"[{section}] is not a torchtitan section"
        for key in values:
            assert key in pin["sections"][section], f"{section}.{key} is not a torchtitan key"
    par, training = job["parallelism"], job["training"]
    assert job["model"]["name"] == "llama3"
    dim, layers, heads, kv, mult, multiple_of = TORCHTITAN_FLAVORS[job["model"]["flavor"]]
    replicate = par.get("data_parallel_replicate_degree", 1)
    shard = par.get("data_parallel_shard_degree", -1)
    assert shard >= 1, "the export states the shard degree, never torchtitan's -1 (the rest)"
    dp, tp, pp = (
        replicate * shard,
        par.get("tensor_parallel_degree", 1),
        par.get("pipeline_parallel_degree", 1),
    )
    local, gb = training["local_batch_size"], training["global_batch_size"]
    assert gb % (local * dp) == 0
    accumulation = gb // (local * dp)  # torchtitan v0.2.2's gradient accumulation steps
    if pp > 1:
        mb = par.get("pipeline_parallel_microbatch_size", 1)
        assert local % mb == 0
        microbatches = accumulation * (local // mb)
        parts = par["module_fqns_per_model_part"]
        assert len(parts) % pp == 0
        names = [n for part in parts for n in part]
        assert names == [
            "tok_embeddings",
            *(f"layers.{i}" for i in range(layers)),
            "norm",
            "output",
        ]
        stages = [0]
        for part in parts:  # norm and output are one layer of the plan: the head
            stages.append(stages[-1] + len(part) - (1 if "norm" in part else 0))
    else:
        assert par.get("module_fqns_per_model_part") is None
        mb, microbatches, stages = local, accumulation, [0, layers + 2]
    zero = 3 if shard > 1 else 0
    if zero == 3:
        assert par["fsdp_reshard_after_forward"] == "always"
    return ReadBack(
        dp=dp,
        tp=tp,
        pp=pp,
        micro_batch=mb,
        microbatches=microbatches,
        zero=zero,
        recompute=_recompute_of(job.get("activation_checkpoint", {})),
        sequence_parallel=tp > 1,  # torchtitan's tensor parallelism is sequence parallel
        stages=tuple(stages),
        shape={
            "hidden_size": dim,
            "num_layers": layers,
            "num_heads": heads,
            "num_kv_heads": kv,
            "ffn_hidden_size": torchtitan_ffn(dim, mult, multiple_of),
            "seq_len": training["seq_len"],
            "swiglu": True,
            "rmsnorm": True,
            "rope": True,
            "tied": False,
        },
    )


def read_deepspeed(text: str, world: int, model: str) -> ReadBack:
    pin = PINS["deepspeed"]
    config = json.loads(text)
    assert set(config) <= set(pin["keys"])
    assert set(config["zero_optimization"]) <= set(pin["zero_optimization"])
    for precision in ("bf16", "fp16"):
        assert set(config.get(precision, {})) <= set(pin["precision"])
    mb, gas = config["train_micro_batch_size_per_gpu"], config["gradient_accumulation_steps"]
    assert config["train_batch_size"] == mb * gas * world  # DeepSpeed's own check
    return ReadBack(
        dp=world,
        tp=1,
        pp=1,
        micro_batch=mb,
        microbatches=gas,
        zero=config["zero_optimization"]["stage"],
        recompute="none",
        sequence_parallel=False,
        stages=(0, layers_of(model)),
        shape={},
    )


def read_back(plan: Plan, kind: str, text: str) -> ReadBack:
    world = plan.config.world_size
    if kind == "torchrun":
        tokens = shlex.split(text, comments=True)
        nnodes = int(tokens[tokens.index("--nnodes") + 1])
        per_node = int(tokens[tokens.index("--nproc-per-node") + 1])
        return read_megatron(text, nnodes * per_node)
    if kind == "megatron":
        return read_megatron(text, world)
    if kind == "torchtitan":
        return read_torchtitan(text)
    return read_deepspeed(text, world, plan.model)


# ---- what each framework can express exactly (the documented limits) ---------------------


def refusal(plan: Plan, kind: str) -> str:
    """Why `kind` cannot run the plan exactly ("" if it can)."""
    cfg, shape = plan.config, model_toml(plan.model)
    if kind in ("megatron", "torchrun"):
        if cfg.recompute == "op":
            return "not per-op checkpointing"
        return "GPipe" if cfg.pp > 1 and cfg.schedule == "gpipe" else ""
    if kind == "deepspeed":
        if cfg.tp > 1 or cfg.pp > 1:
            return "tensor or pipeline degree"
        return "recomputation" if cfg.recompute != "none" else ""
    llama = shape.get("activation") == "swiglu" and shape.get("tie_embeddings") is False
    if not llama:
        return "Llama 3 models"
    if cfg.zero in (1, 2):
        return f"ZeRO-{cfg.zero}"
    if cfg.tp > 1 and not cfg.sequence_parallel:
        return "sequence parallel"
    if cfg.recompute == "selective":
        return "attention core"
    if cfg.dtype == "fp16":
        return "fp16"
    bf16_without_fsdp = cfg.dtype == "bf16" and cfg.zero == 0 and (cfg.tp > 1 or cfg.pp > 1)
    return "in fp32, not bf16" if bf16_without_fsdp else ""


def check_export(plan: Plan, kind: str) -> None:
    why = refusal(plan, kind)
    if why:
        with pytest.raises(SimplanError) as info:
            plan.export(kind)
        message = str(info.value)
        assert "\n" not in message and why in message
        assert message.startswith(
            f"cannot export to {FRAMEWORKS[kind if kind != 'torchrun' else 'megatron'].name}"
        )
        return
    text = plan.export(kind)
    back = read_back(plan, kind, text)
    cfg = plan.config
    assert (back.dp, back.tp, back.pp) == (cfg.dp, cfg.tp, cfg.pp)
    assert back.micro_batch == cfg.micro_batch
    assert back.microbatches == cfg.num_microbatches
    assert back.zero == cfg.zero
    assert back.recompute == cfg.recompute
    assert back.sequence_parallel == cfg.sequence_parallel
    assert back.stages == expected_stages(plan)
    shape = model_toml(plan.model)
    want = {
        "hidden_size": shape["hidden_size"],
        "num_layers": shape["num_layers"],
        "num_heads": shape["num_heads"],
        "num_kv_heads": shape.get("num_kv_heads") or shape["num_heads"],
        "ffn_hidden_size": shape.get("ffn_hidden_size") or 4 * shape["hidden_size"],
        "vocab_size": shape["vocab_size"],
        "seq_len": cfg.seq_len or shape["seq_len"],
        "swiglu": shape["activation"] == "swiglu",
        "rmsnorm": shape["activation"] == "swiglu",
        "rope": shape["activation"] == "swiglu",
        "tied": shape.get("tie_embeddings", True),
    }
    assert back.shape == {k: want[k] for k in back.shape}


# ---- plans --------------------------------------------------------------------------------

SCENARIOS = {
    "demo": ("gpt3-1.3b", "dgx-a100", "2", "512"),
    "llama3-70b": ("llama3-70b", "dgx-h100", "16", "512"),
    "mixed": ("gpt3-6.7b", "mixed-a100-h100", "", "128"),
}


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The best plan of each scenario, written by `simplan plan --out` (a short search)."""
    out = {}
    for name, (model, cluster, nodes, batch) in SCENARIOS.items():
        directory = tmp_path_factory.mktemp(name)
        argv = ["plan", "--model", model, "--cluster", cluster, "--global-batch", batch,
                "--time-limit", "40", "--top", "1", "--out", str(directory)]  # fmt: skip
        if nodes:
            argv += ["--nodes", nodes]
        assert main(argv) == 0
        out[name] = directory / "plan.json"
    return out


@pytest.mark.parametrize("kind", EXPORTS)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_export_of_the_planned_plans_reads_back(planned, scenario: str, kind: str) -> None:
    check_export(Plan.read(planned[scenario]), kind)


def test_the_mixed_plan_is_split_unevenly_and_the_exports_keep_it(planned) -> None:
    plan = Plan.read(planned["mixed"])
    sizes = [b - a for a, b in zip(plan.config.stages[:-1], plan.config.stages[1:], strict=True)]
    assert plan.config.pp > 1 and len(set(sizes)) > 1
    back = read_megatron(plan.export("megatron"), plan.config.world_size)
    assert back.stages == plan.config.stages


def even_stages(layers: int, chunks: int) -> tuple[int, ...]:
    return tuple(round(i * layers / chunks) for i in range(chunks + 1))


VARIANTS = [
    ("llama3-70b", "dgx-h100", 16, dict(dp=4, tp=8, pp=4, micro_batch=1, global_batch=64,
     schedule="interleaved", virtual_stages=2, zero=zero, recompute=rc, sequence_parallel=sp))
    for zero in (0, 1, 2, 3) for rc in ("none", "selective", "full") for sp in (False, True)
] + [
    ("llama3-8b", "dgx-h100", 1, dict(dp=8, micro_batch=2, global_batch=64, zero=zero))
    for zero in (0, 1, 2, 3)
] + [
    ("llama3-8b", "dgx-h100", 1, dict(dp=8, micro_batch=1, global_batch=64, zero=zero,
     recompute="op"))
    for zero in (0, 3)
] + [
    ("gpt3-1.3b", "dgx-a100", 2, dict(dp=8, pp=2, micro_batch=2, global_batch=64,
     schedule="gpipe", recompute="full")),
    ("llama3-8b", "dgx-h100", 1, dict(dp=4, pp=2, micro_batch=1, global_batch=32,
     dtype="fp16", overlap_grad_reduce=False)),
    ("llama3-8b", "dgx-h100", 1, dict(dp=4, pp=2, micro_batch=1, global_batch=32,
     dtype="fp32")),
    ("llama3-8b", "dgx-h100", 1, dict(dp=2, tp=4, micro_batch=1, global_batch=32,
     zero=3, sequence_parallel=True, recompute="full")),
]  # fmt: skip


@pytest.mark.parametrize("kind", EXPORTS)
@pytest.mark.parametrize(("model", "cluster", "nodes", "fields"), VARIANTS)
def test_every_variant_exports_exactly_or_refuses(
    model: str, cluster: str, nodes: int, fields: dict[str, Any], kind: str
) -> None:
    config = ParallelConfig(**fields)
    if config.chunks > 1:
        config = config.replace(stages=even_stages(layers_of(model), config.chunks))
    ref = ClusterRef(spec=cluster, nodes=nodes)
    check_export(from_planfile(PlanFile(model=model, cluster=ref, config=config)), kind)


def test_overlap_follows_the_simulation() -> None:
    ref = ClusterRef(spec="dgx-h100", nodes=1)
    for overlap in (False, True):
        config = ParallelConfig(dp=8, micro_batch=1, global_batch=8, zero=1,
                                overlap_grad_reduce=overlap)  # fmt: skip
        plan = from_planfile(PlanFile(model="llama3-8b", cluster=ref, config=config))
        flags = megatron_flags(plan.export("megatron"))
        assert ("--overlap-grad-reduce" in flags) is overlap
        assert ("--overlap-param-gather" in flags) is overlap
        assert json.loads(plan.export("deepspeed"))["zero_optimization"]["overlap_comm"] is overlap


def test_a_model_without_a_transformer_shape_is_refused() -> None:
    ref = ClusterRef(spec="dgx-a100", nodes=1)
    plan = from_planfile(
        PlanFile(model="mlp", cluster=ref, config=ParallelConfig(dp=8, global_batch=64))
    )
    for kind in ("megatron", "torchtitan", "torchrun"):
        with pytest.raises(SimplanError, match="not a transformer model file"):
            plan.export(kind)
    config = json.loads(plan.export("deepspeed"))
    assert config["train_batch_size"] == 64 and config["gradient_accumulation_steps"] == 8


def test_the_pins_name_their_source() -> None:
    for kind, framework in FRAMEWORKS.items():
        pin = PINS[kind]
        assert framework.version == pin["tag"] and pin["repository"] in framework.source
        assert len(pin["commit"]) == 40


# ---- the command line ---------------------------------------------------------------------


def test_export_verb_writes_the_file_and_json(capsys, planned, tmp_path) -> None:
    path = planned["llama3-70b"]
    plan = Plan.read(path)
    code, out, _ = _run(capsys, "export", str(path), "--to", "megatron")
    assert code == 0 and out == plan.export("megatron")
    target = tmp_path / "args.txt"
    code, out, _ = _run(capsys, "export", str(path), "--to", "megatron", "--out", str(target))
    assert code == 0 and target.read_text() == plan.export("megatron")
    code, out, _ = _run(capsys, "export", str(path), "--to", "torchrun", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["text"] == plan.export("torchrun")
    assert " ".join(doc["arguments"]) + "\n" == plan.export("megatron")


def test_export_verb_refuses_in_one_line_and_writes_nothing(capsys, tmp_path) -> None:
    ref = ClusterRef(spec="dgx-h100", nodes=1)
    config = ParallelConfig(dp=8, micro_batch=1, global_batch=8, zero=2)
    path = write_plan(PlanFile(model="llama3-8b", cluster=ref, config=config), tmp_path / "p.json")
    target = tmp_path / "job.toml"
    code, out, err = _run(capsys, "export", str(path), "--to", "torchtitan", "--out", str(target))
    assert code == 2 and out == "" and not target.exists()
    assert len(err.strip().splitlines()) == 1 and "ZeRO-2" in err


def test_plan_export_prints_the_export_alone(capsys, tmp_path) -> None:
    argv = ["plan", "--model", "llama3-8b", "--cluster", "dgx-h100", "--global-batch", "64",
            "--time-limit", "10", "--top", "1", "--out", str(tmp_path),
            "--export", "megatron"]  # fmt: skip
    code, out, err = _run(capsys, *argv)
    assert code == 0
    assert out == Plan.read(tmp_path / "plan.json").export("megatron")
    assert "best plan's stages" in err  # the table went to stderr
    # the search kept to plans Megatron-LM runs (as --framework megatron would)
    assert json.loads((tmp_path / "plan.json").read_text())["framework"] == "megatron"
    code, out, _ = _run(capsys, *argv, "--json")
    doc = json.loads(out)
    assert doc["export"]["text"] == Plan.read(tmp_path / "plan.json").export("megatron")
    assert doc["export"]["arguments"] and doc["plans"]
    target = tmp_path / "args.txt"
    code, out, _ = _run(capsys, *argv, "--export-out", str(target))
    assert code == 0 and target.read_text() == Plan.read(tmp_path / "plan.json").export("megatron")
    assert "best plan's stages" in out and f"wrote {target}" in out


def test_accumulation_is_not_lost() -> None:
    """torchtitan's accumulation is global / (local * dp): local is the micro-batch."""
    ref = ClusterRef(spec="dgx-h100", nodes=1)
    config = ParallelConfig(dp=8, micro_batch=2, global_batch=256, zero=3)
    plan = from_planfile(PlanFile(model="llama3-8b", cluster=ref, config=config))
    training = tomllib.loads(plan.export("torchtitan"))["training"]
    assert training["local_batch_size"] == 2
    assert training["global_batch_size"] // (training["local_batch_size"] * 8) == 16


# every verb with --json prints one JSON document on stdout; `validate` and `run` (which start
# gloo ranks) are checked by their own tests
JSON_COMMANDS = {
    "simplan models": ["models"],
    "simplan clusters show": ["clusters", "show", "dgx-a100"],
    "simplan simulate": ["simulate", "--model", "gpt3-175b", "--cluster", "dgx-a100",
                         "--global-batch", "64"],  # does not fit: exit 3, still one document
    "simplan profile": ["profile", "gpt3-125m", "--device", "h100-sxm"],
    "simplan plan": ["plan", "--model", "llama3-8b", "--cluster", "dgx-h100", "--global-batch",
                     "64", "--time-limit", "10", "--top", "1", "--export", "megatron"],
    "simplan trace check": ["trace", "check", str(ROOT / "examples" / "traces" / "tiny.csv")],
    "simplan trace speeds": ["trace", "speeds", str(ROOT / "examples" / "traces" / "tiny.csv"),
                             "--cluster", "localhost-cpu", "--executor", "inline"],
    "simplan trace generate": ["trace", "generate", "--jobs", "2", "--cluster", "dgx-a100",
                               "--executor", "inline", "--out", "t.csv"],  # in a temporary cwd
}  # fmt: skip


def test_every_json_flag_is_covered() -> None:
    from simplan.cli import _all_parsers, build_parser

    with_json = {
        p.prog for p in _all_parsers(build_parser()) if "--json" in p._option_string_actions
    }
    # simplan schedule's JSON: tests/schedule/test_schedule_cli.py (it needs a workload)
    assert with_json == {
        *JSON_COMMANDS,
        "simplan export",
        "simplan validate",
        "simplan run",
        "simplan schedule",
    }


@pytest.mark.parametrize("verb", list(JSON_COMMANDS))
def test_json_is_one_document(capsys, tmp_path, monkeypatch, verb: str) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, _ = _run(capsys, *JSON_COMMANDS[verb], "--json")
    assert code in (0, 3)
    assert isinstance(json.loads(out), (dict, list))  # json.loads refuses anything after it


def test_plan_refuses_a_model_the_framework_cannot_train_before_searching(capsys) -> None:
    code, out, err = _run(
        capsys, "plan", "--model", "gpt3-1.3b", "--cluster", "dgx-a100", "--global-batch", "64",
        "--export", "torchtitan",
    )  # fmt: skip
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "torchtitan's Llama 3 models" in err
    assert "candidates" not in err  # no search ran
