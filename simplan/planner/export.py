"""A plan as a job of a training framework: Megatron-LM arguments, a torchtitan job file, a
DeepSpeed config, or a torchrun command for Megatron-LM.

Each export says everything the simulation assumed (model shape, degrees, micro-batch and
gradient accumulation, the ZeRO stage's exact equivalent, recomputation, sequence parallelism,
the pipeline split, schedule and virtual stages, gradient-reduction overlap), or refuses with one
line naming what the framework cannot express. The argument names and configuration keys are
those of the pinned versions in FRAMEWORKS (listed, with their source, in
simplan/data/framework_pins.json).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

from simplan.errors import SimplanError
from simplan.model_knobs import split_spec
from simplan.planfile import FRAMEWORK_NAMES
from simplan.transformer_shape import TransformerSpec

EXPORTS = ("torchrun", "megatron", "torchtitan", "deepspeed")


@dataclass(frozen=True, kw_only=True)
class Framework:
    """A pinned framework version: where its argument names or configuration keys come from."""

    name: str
    version: str
    source: str


FRAMEWORKS = {
    "megatron": Framework(
        name="Megatron-LM",
        version="core_v0.15.3",
        source="NVIDIA/Megatron-LM@core_v0.15.3 megatron/training/arguments.py",
    ),
    "torchtitan": Framework(
        name="torchtitan",
        version="v0.2.2",
        source="pytorch/torchtitan@v0.2.2 torchtitan/config/job_config.py",
    ),
    "deepspeed": Framework(
        name="DeepSpeed",
        version="v0.16.4",
        source="microsoft/DeepSpeed@v0.16.4 deepspeed/runtime/constants.py, zero/config.py",
    ),
}

# torchtitan trains its own model definitions: Llama 3 flavors (torchtitan/models/llama3/
# __init__.py at v0.2.2) as (hidden, layers, heads, KV heads, FFN hidden) with the FFN hidden
# size its ffn_dim_multiplier and multiple_of give. All: SwiGLU, RMSNorm, RoPE, no biases,
# untied embeddings.
TORCHTITAN_LLAMA3 = {
    "8B": (4096, 32, 32, 8, 14336),
    "70B": (8192, 80, 64, 8, 28672),
    "405B": (16384, 126, 128, 8, 53248),
}
TORCHTITAN_SCHEDULES = {"1f1b": "1F1B", "gpipe": "GPipe", "interleaved": "Interleaved1F1B"}
MEGATRON_POSITIONS = {"learned": "learned_absolute", "rope": "rope", "none": "none"}


@dataclass(frozen=True, kw_only=True)
class Chunk:
    """What one pipeline chunk holds: the embedding, transformer blocks, the output head."""

    embedding: bool
    blocks: int
    head: bool


def export(plan: Any, kind: str) -> str:
    """The plan as `kind` (one of EXPORTS): the text of the file or command line, ending in a
    newline; a one-line SimplanError where the framework cannot express the plan."""
    if kind == "torchrun":
        return torchrun(plan)
    if kind == "megatron":
        return " ".join(megatron_args(plan)) + "\n"
    if kind == "torchtitan":
        return torchtitan_toml(plan)
    if kind == "deepspeed":
        return json.dumps(deepspeed_config(plan), indent=2) + "\n"
    raise SimplanError(f"unknown export {kind!r}: use {', '.join(EXPORTS)}")


class Refusal(SimplanError):
    """A framework cannot run what was asked; `why` is the reason alone."""

    def __init__(self, kind: str, why: str) -> None:
        fw = FRAMEWORKS[RULES.get(kind, kind)]
        super().__init__(f"cannot export to {fw.name} {fw.version}: {why}")
        self.why = why


def refuse(kind: str, what: str) -> Refusal:
    return Refusal(kind, what)


# ---- what each framework can run -----------------------------------------------------------
# One set of rules, used by the exporters (to refuse) and by the planner (to propose only what
# a framework can run, `simplan plan --framework`).

TARGETS = FRAMEWORK_NAMES  # what --framework takes
RULES = {"torchrun": "megatron"}  # an export kind that runs another framework's rules


def sync_reason(cfg: Any, compress: tuple[str, ...] = ()) -> str | None:
    """The synchronisation knob (compress, local_sgd, staleness) of `cfg` that a framework
    whose arguments express only plain synchronous all-reduce (and the compressions
    `compress`) cannot run, in one clause; None when it has none."""
    if cfg.compress != "none" and cfg.compress not in compress:
        can = f" (it can: {', '.join(compress)})" if compress else ""
        return (
            f"it has no {cfg.compress} gradient compression hook{can}; plan with --compress "
            "none or run the plan with simplan run"
        )
    if cfg.local_sgd > 1:
        return (
            "it has no local SGD (periodic model averaging); plan with --local-sgd 1 or run "
            "the plan with simplan run"
        )
    if cfg.staleness > 0:
        return "it runs synchronous data parallelism only; plan with --staleness 0"
    return None


def _megatron_reason(cfg: Any) -> str | None:
    sync = sync_reason(cfg)
    if sync:
        return sync
    if cfg.pp > 1 and cfg.schedule == "gpipe":
        return (
            "Megatron-LM runs 1F1B or interleaved 1F1B pipelines, not GPipe; plan with "
            "--schedule 1f1b or interleaved"
        )
    if cfg.recompute == "op":
        return (
            "its selective recomputation is the attention core's, not per-op checkpointing; "
            "plan with --recompute selective or full"
        )
    if cfg.offload == "optimizer" and (cfg.zero >= 2 or (cfg.zero == 0 and cfg.dp > 1)):
        return (
            "its --optimizer-cpu-offload offloads the distributed optimizer's shards (ZeRO-1), "
            f"not ZeRO-{cfg.zero}'s; plan with --zero 1"
        )
    return None


def _torchtitan_reason(cfg: Any) -> str | None:
    sync = sync_reason(cfg)
    if sync:
        return sync
    if cfg.zero in (1, 2):
        return (
            f"ZeRO-{cfg.zero} has no exact FSDP2 equivalent (FSDP2 shards parameters too, "
            f"i.e. ZeRO-3; DDP shards nothing); plan with --zero 0 or 3"
        )
    if cfg.tp > 1 and not cfg.sequence_parallel:
        return (
            "its tensor parallelism always shards the norms' activations along the sequence "
            "(sequence parallel); plan with --sequence-parallel"
        )
    if cfg.recompute == "selective":
        return (
            "its selective checkpointing (per op or every n-th layer) is not recomputation of "
            "the attention core; plan with --recompute none or full"
        )
    if cfg.offload == "optimizer":
        return (
            "its CPU offload (training.enable_cpu_offload, FSDP2's CPUOffloadPolicy) keeps the "
            "parameters and gradients on the host too, not only the optimizer; plan without "
            "--offload"
        )
    if cfg.dtype == "fp16":
        return "it trains in bf16 or fp32, not fp16; plan with --dtype bf16"
    if cfg.fp8 not in ("none", "current"):
        return (
            f"its float8 training (torchao) scales per tensor from the current amax "
            f"(tensorwise) or per row, with no {cfg.fp8} scaling; plan with --fp8 current"
        )
    shard = cfg.dp if cfg.zero == 3 else 1
    if cfg.dtype == "bf16" and shard == 1 and (cfg.tp > 1 or cfg.pp > 1):
        return (
            "without FSDP it trains TP and PP plans in fp32, not bf16 (mixed precision needs "
            "fully_shard there); plan with --zero 3 or --dtype fp32"
        )
    return None


def _deepspeed_reason(cfg: Any) -> str | None:
    if cfg.cp > 1:
        return (
            f"its config has no context parallelism (the plan has cp {cfg.cp}); use --to megatron"
        )
    if cfg.fp8 != "none":
        return "its config has no FP8 training (Transformer Engine lives in the model code)"
    sync = sync_reason(cfg, compress=("fp16", "bf16"))  # its communication_data_type
    if sync:
        return sync
    if cfg.tp > 1 or cfg.pp > 1:
        return (
            f"its config sets no tensor or pipeline degree (the plan has tp {cfg.tp}, pp "
            f"{cfg.pp}: they live in the model code); use --to megatron"
        )
    if cfg.recompute != "none":
        return (
            f"its config does not switch recomputation on (the model code calls "
            f"deepspeed.checkpointing); plan with --recompute none or use --to megatron "
            f"(the plan recomputes {cfg.recompute})"
        )
    if cfg.offload == "optimizer" and cfg.zero == 0 and cfg.dp > 1:
        return (
            "its offload_optimizer needs ZeRO 1, 2 or 3 (each replica would keep the whole "
            "optimizer on its host); plan with --zero 1 or 2"
        )
    return None


CONFIG_RULES = {
    "megatron": _megatron_reason,
    "torchtitan": _torchtitan_reason,
    "deepspeed": _deepspeed_reason,
}


def config_reason(kind: str, cfg: Any) -> str | None:
    """Why `kind` (a framework or export kind) cannot run the parallel configuration `cfg`,
    in one clause; None when it can."""
    if getattr(cfg, "ep", 1) > 1 or getattr(cfg, "etp", 1) > 1:
        return (
            f"simplan does not yet write its expert-parallel degrees (ep {cfg.ep}, etp "
            f"{cfg.etp}) for this framework; simulate without --framework"
        )
    return CONFIG_RULES[RULES.get(kind, kind)](cfg)


def model_reason(kind: str, model: str) -> str | None:
    """Why `kind` cannot train `model` at all (whatever the configuration); None when it can."""
    try:
        check_model(model, kind)
    except Refusal as exc:
        return exc.why
    return None


def unsupported(kind: str, config: Any, model: str | None = None) -> str | None:
    """Why `kind` (a framework or export kind) cannot run `config` (of `model`, when given), as
    one line naming the framework; None when it can."""
    why = (model_reason(kind, model) if model is not None else None) or config_reason(kind, config)
    if why is None:
        return None
    fw = FRAMEWORKS[RULES.get(kind, kind)]
    return f"{fw.name} {fw.version} cannot run this: {why}"


def check_config(kind: str, cfg: Any) -> None:
    """Refuse (one line) a configuration `kind` cannot run."""
    why = config_reason(kind, cfg)
    if why is not None:
        raise refuse(kind, why)


def check_model(model: str, kind: str) -> None:
    """Refuse (one line), before any search, a model that `kind` cannot train at all."""
    quantize = split_spec(model)[1].quantize
    if quantize:
        raise refuse(
            kind,
            f"--quantize {quantize}: simplan does not write frozen weight-only quantized layers "
            "for this framework (its arguments have no such setting); plan without --export "
            "or without --quantize",
        )
    if kind == "deepspeed":
        return
    shape = model_shape(model, "megatron" if kind == "torchrun" else kind)
    if shape.is_moe:
        raise refuse(
            kind,
            f"{model} has mixture-of-experts layers, which simplan does not yet write for this "
            "framework; simulate without --framework",
        )
    if kind == "torchtitan":
        torchtitan_flavor(shape)


def transformer_shape(plan: Any, kind: str) -> TransformerSpec:
    """The plan's model as a transformer shape (a preset or a model TOML), or a refusal."""
    return model_shape(plan.model, kind)


def model_shape(model: str, kind: str) -> TransformerSpec:
    from simplan.sources import resolve, transformer_spec

    source = resolve(model)
    if source.kind != "toml":
        raise refuse(
            kind,
            f"{model} is not a transformer model file ({FRAMEWORKS[kind].name} builds its "
            f"own transformer from shape arguments); export a plan of a transformer preset or "
            f"model TOML",
        )
    return transformer_spec(source)


def chunks(plan: Any) -> list[Chunk]:
    """Per pipeline chunk (in the order of plan.config.stages), what it holds."""
    graph = plan.graph
    if graph is None:
        from simplan.sources import load_model

        cfg = plan.config
        graph = load_model(plan.model, seq_len=cfg.seq_len or None, dtype=cfg.dtype)
    layers = list(graph.layers)
    bounds = list(plan.config.stages) or [0, len(layers)]
    out = []
    for c in range(len(bounds) - 1):
        kinds = [layer.kind for layer in layers[bounds[c] : bounds[c + 1]]]
        out.append(
            Chunk(
                embedding="embedding" in kinds,
                blocks=kinds.count("transformer_block"),
                head="lm_head" in kinds,
            )
        )
    return out


def accumulation(cfg: Any) -> int:
    """Micro-batches each data-parallel rank runs per optimizer step."""
    return int(cfg.num_microbatches)


# ---- Megatron-LM --------------------------------------------------------------------------


def megatron_layout(parts: list[Chunk]) -> str:
    """--pipeline-model-parallel-layout: E (embedding), t (a decoder layer), L (the output
    layer and loss), stages split by |; stage c runs on pipeline rank c % pp."""
    return "|".join(
        ("E" if c.embedding else "") + "t" * c.blocks + ("L" if c.head else "") for c in parts
    )


def megatron_args(plan: Any) -> list[str]:
    """pretrain_gpt.py arguments (Megatron-LM core_v0.15.3) that reproduce the plan, each
    "--flag" or "--flag value" (values quoted for a shell)."""
    cfg = plan.config
    shape = transformer_shape(plan, "megatron")
    check_config("megatron", cfg)
    seq = cfg.seq_len or shape.seq_len
    args = [
        f"--num-layers {shape.num_layers}",
        f"--hidden-size {shape.hidden_size}",
        f"--num-attention-heads {shape.num_heads}",
        f"--ffn-hidden-size {shape.ffn}",
        f"--seq-length {seq}",
        f"--max-position-embeddings {seq}",
        f"--vocab-size {shape.vocab_size}",
        "--make-vocab-size-divisible-by 1",  # the vocabulary as given, not padded further
        f"--position-embedding-type {MEGATRON_POSITIONS[shape.position_kind]}",
        f"--normalization {'RMSNorm' if shape.norm_kind == 'rmsnorm' else 'LayerNorm'}",
        f"--hidden-dropout {shape.dropout:g}",
        f"--attention-dropout {shape.dropout:g}",
    ]
    if shape.kv_heads != shape.num_heads:
        args += ["--group-query-attention", f"--num-query-groups {shape.kv_heads}"]
    if shape.activation == "swiglu":
        args.append("--swiglu")
    if not shape.use_bias:
        args.append("--disable-bias-linear")
    if not shape.tie_embeddings:
        args.append("--untie-embeddings-and-output-weights")
    args += [
        f"--tensor-model-parallel-size {cfg.tp}",
        f"--pipeline-model-parallel-size {cfg.pp}",
        f"--micro-batch-size {cfg.micro_batch}",
        f"--global-batch-size {cfg.global_batch}",
    ]
    if cfg.pp > 1:
        args += _megatron_pipeline(cfg, chunks(plan))
    if cfg.recompute == "full":
        args += ["--recompute-granularity full", "--recompute-method uniform",
                 "--recompute-num-layers 1"]  # fmt: skip
    elif cfg.recompute == "selective":
        args.append("--recompute-granularity selective")  # the attention core
    if cfg.sequence_parallel:
        args.append("--sequence-parallel")
    args += _megatron_zero(cfg)
    if cfg.dtype in ("bf16", "fp16"):
        args.append(f"--{cfg.dtype}")
        if cfg.grad_reduce_dtype == "fp32":
            args.append("--accumulate-allreduce-grads-in-fp32")
    if cfg.fp8 != "none":  # Transformer Engine (its default --transformer-impl)
        args += ["--fp8-format hybrid", f"--fp8-recipe {MEGATRON_FP8_RECIPES[cfg.fp8]}"]
    if cfg.tp_overlap:  # userbuffers ring-exchange of the sequence-parallel collectives
        args.append("--tp-comm-overlap")
    if cfg.cp > 1:
        args += [f"--context-parallel-size {cfg.cp}", f"--cp-comm-type {MEGATRON_CP[cfg.cp_comm]}"]
    return args


# K/V exchange of context parallelism: Megatron's --cp-comm-type, torchtitan's rotate method
MEGATRON_CP = {"ring": "p2p", "all_gather": "all_gather"}
TORCHTITAN_CP = {"ring": "alltoall", "all_gather": "allgather"}


# simplan's FP8 recipes as Megatron-core's Fp8Recipe names (megatron/core/enums.py)
MEGATRON_FP8_RECIPES = {"delayed": "delayed", "current": "tensorwise", "block": "blockwise"}


def _megatron_pipeline(cfg: Any, parts: list[Chunk]) -> list[str]:
    if len(parts) != cfg.pp * cfg.virtual_stages:
        raise refuse(
            "megatron",
            f"the plan has {len(parts)} pipeline chunks for pp {cfg.pp} x virtual stages "
            f"{cfg.virtual_stages}; regenerate it with simplan plan",
        )
    # the layout states every chunk's layers: the ILP's uneven split and the virtual stages
    return [f"--pipeline-model-parallel-layout {shlex.quote(megatron_layout(parts))}"]


def _megatron_zero(cfg: Any) -> list[str]:
    overlap = cfg.overlap_grad_reduce and cfg.dp > 1
    args = ["--overlap-grad-reduce"] if overlap else []
    offload = cfg.offload == "optimizer"
    if cfg.zero == 1 or offload:  # one rank's distributed optimizer is the whole optimizer
        args.append("--use-distributed-optimizer")
    if offload:  # every optimizer state and its step on the host (torch's AdamW there)
        args += ["--optimizer-cpu-offload", "--optimizer-offload-fraction 1.0"]
    elif cfg.zero >= 2:
        strategy = "optim_grads" if cfg.zero == 2 else "optim_grads_params"
        args += [
            "--use-megatron-fsdp",
            f"--data-parallel-sharding-strategy {strategy}",
            "--ckpt-format fsdp_dtensor",  # the only checkpoint format Megatron-FSDP writes
        ]
    if cfg.zero >= 1 and overlap:
        args.append("--overlap-param-gather")
    return args


# ---- torchtitan ---------------------------------------------------------------------------


def torchtitan_flavor(shape: TransformerSpec) -> str:
    """The torchtitan llama3 flavor of this shape, or a refusal."""
    dims = (shape.hidden_size, shape.num_layers, shape.num_heads, shape.kv_heads, shape.ffn)
    llama = (
        shape.activation == "swiglu"
        and shape.norm_kind == "rmsnorm"
        and shape.position_kind == "rope"
        and not shape.use_bias
        and not shape.tie_embeddings
    )
    for flavor, known in TORCHTITAN_LLAMA3.items():
        if llama and dims == known:
            return flavor
    raise refuse(
        "torchtitan",
        f"{shape.name} is not one of torchtitan's Llama 3 models (flavors "
        f"{', '.join(TORCHTITAN_LLAMA3)}: SwiGLU, RMSNorm, RoPE, untied embeddings), and "
        f"torchtitan takes no shape from its job config; use --to megatron",
    )


def torchtitan_job(plan: Any) -> dict[str, dict[str, Any]]:
    """The torchtitan v0.2.2 job configuration (section -> key -> value) of the plan."""
    cfg = plan.config
    shape = transformer_shape(plan, "torchtitan")
    flavor = torchtitan_flavor(shape)
    check_config("torchtitan", cfg)
    shard = cfg.dp if cfg.zero == 3 else 1
    parallelism: dict[str, Any] = {
        "data_parallel_replicate_degree": cfg.dp // shard,
        "data_parallel_shard_degree": shard,
        "tensor_parallel_degree": cfg.tp,
        "pipeline_parallel_degree": cfg.pp,
        "context_parallel_degree": cfg.cp,
    }
    if cfg.cp > 1:  # head-tail load balancing (its default) is simplan's 2 x cp chunks
        parallelism["context_parallel_rotate_method"] = TORCHTITAN_CP[cfg.cp_comm]
    if shard > 1:
        parallelism["fsdp_reshard_after_forward"] = "always"  # ZeRO-3: gather per forward
    per_rank = cfg.global_batch // cfg.dp
    if cfg.pp > 1:
        # one pipeline round of all micro-batches per step: no accumulation on top of it
        local = per_rank
        parallelism["pipeline_parallel_microbatch_size"] = cfg.micro_batch
        parallelism["pipeline_parallel_schedule"] = TORCHTITAN_SCHEDULES[cfg.schedule]
        parallelism["module_fqns_per_model_part"] = torchtitan_parts(chunks(plan))
    else:
        local = cfg.micro_batch  # global // (local * dp) micro-batches are accumulated
    precision = "float32" if cfg.dtype == "fp32" else "bfloat16"
    job: dict[str, dict[str, Any]] = {
        "model": {"name": "llama3", "flavor": flavor},
        "training": {
            "local_batch_size": local,
            "global_batch_size": cfg.global_batch,
            "seq_len": cfg.seq_len or shape.seq_len,
            "mixed_precision_param": precision,
            "mixed_precision_reduce": "float32",
        },
        "parallelism": parallelism,
        "activation_checkpoint": _torchtitan_checkpoint(cfg.recompute),
        **_torchtitan_fast_paths(cfg, parallelism),
    }
    if cfg.fp8 == "current":
        job["model"]["converters"] = ["quantize.linear.float8"]
    return job


def _torchtitan_checkpoint(recompute: str) -> dict[str, str]:
    """torchtitan's [activation_checkpoint]: per-op recomputation is its selective mode with
    the op-level option (simplan.op_policy follows its save list)."""
    if recompute == "op":
        return {"mode": "selective", "selective_ac_option": "op"}
    return {"mode": recompute}


def _torchtitan_fast_paths(cfg: Any, parallelism: dict[str, Any]) -> dict[str, Any]:
    """FP8 (torchao float8, tensorwise: current scaling; the output head left in bf16) and
    async TP, both of which torchtitan runs under torch.compile."""
    extra: dict[str, Any] = {}
    if cfg.fp8 == "current":  # with the converter named in [model]
        extra["quantize.linear.float8"] = {"recipe_name": "tensorwise", "filter_fqns": ["output"]}
    if cfg.tp_overlap:
        parallelism["enable_async_tensor_parallel"] = True
    if extra or cfg.tp_overlap:
        extra["compile"] = {"enable": True}
    return extra


def torchtitan_parts(parts: list[Chunk]) -> list[list[str]]:
    """module_fqns_per_model_part: the modules of each pipeline chunk, in torchtitan's names."""
    out, first = [], 0
    for c in parts:
        names = ["tok_embeddings"] if c.embedding else []
        names += [f"layers.{i}" for i in range(first, first + c.blocks)]
        names += ["norm", "output"] if c.head else []
        out.append(names)
        first += c.blocks
    return out


def torchtitan_toml(plan: Any) -> str:
    job = torchtitan_job(plan)
    lines = [f"# torchtitan {FRAMEWORKS['torchtitan'].version} job: {plan.model}"]
    for section, values in job.items():
        lines.append(f"\n[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a basic TOML string: JSON's escapes are TOML's


# ---- DeepSpeed ----------------------------------------------------------------------------


def deepspeed_config(plan: Any) -> dict[str, Any]:
    """The DeepSpeed config (ds_config.json) of a data-parallel plan."""
    cfg = plan.config
    check_config("deepspeed", cfg)
    config: dict[str, Any] = {
        "train_batch_size": cfg.global_batch,
        "train_micro_batch_size_per_gpu": cfg.micro_batch,
        "gradient_accumulation_steps": accumulation(cfg),
        "zero_optimization": {
            "stage": cfg.zero,
            "overlap_comm": bool(cfg.overlap_grad_reduce),
            "contiguous_gradients": True,
        },
        "bf16": {"enabled": cfg.dtype == "bf16"},
        "fp16": {"enabled": cfg.dtype == "fp16"},
    }
    if cfg.compress in ("fp16", "bf16"):  # gradients all-reduced at half width
        config["communication_data_type"] = cfg.compress
    elif cfg.dtype in ("bf16", "fp16") and cfg.grad_reduce_dtype == "fp32":
        config["communication_data_type"] = "fp32"
    if cfg.offload == "optimizer":
        zero = config["zero_optimization"]
        # one rank: ZeRO-2 shards nothing, and is ZeRO-Offload's stage (gradients stream to the
        # host during the backward)
        zero["stage"] = cfg.zero if cfg.dp > 1 else 2
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    return config


# ---- torchrun -----------------------------------------------------------------------------


def node_order(plan: Any) -> list[int]:
    """Nodes in the order the ranks fill them (torchrun's node rank i runs on entry i)."""
    cluster = plan.load_cluster()
    devices = plan.placement or tuple(range(plan.config.world_size))
    order: list[int] = []
    for d in devices:
        node = cluster.devices[d].node
        if node not in order:
            order.append(node)
    return order


def torchrun(plan: Any) -> str:
    """A torchrun command for Megatron-LM's pretrain_gpt.py, with the node ranks to use."""
    cfg = plan.config
    args = megatron_args(plan)
    nodes = node_order(plan)
    per_node = cfg.world_size // max(len(nodes), 1)
    shape = transformer_shape(plan, "megatron")
    lines = [
        f"# {plan.model}: {cfg.describe()}",
        "# node rank -> cluster node: "
        + ", ".join(f"{rank}->n{node}" for rank, node in enumerate(nodes)),
        f"# the tokenizer must give {shape.vocab_size} tokens (--vocab-size); add its "
        "--tokenizer-type and the data arguments",
        "torchrun "
        + " ".join(
            [
                f"--nnodes {len(nodes)}",
                f"--nproc-per-node {per_node}",
                "--node-rank $NODE_RANK",
                "--rdzv-backend c10d",
                "--rdzv-endpoint $MASTER_ADDR:29500",
                shlex.quote("pretrain_gpt.py"),
                *args,
            ]
        ),
    ]
    return "\n".join(lines) + "\n"
