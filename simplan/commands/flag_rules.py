"""Flags that would do nothing are errors: every verb's meaningless combinations, decided in one
place from the parsed flags and their defaults (`check_flags`, run before any verb starts), and
from the configuration once the cluster sets dp (`check_config`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from simplan.commands.config_flags import CONFIG_FIELDS, flag_name
from simplan.errors import SimplanError
from simplan.model_graph import ModelGraph
from simplan.parallel import ParallelConfig


@dataclass(frozen=True)
class Flags:
    """The parsed flags of one verb and the defaults they are compared with."""

    args: argparse.Namespace
    defaults: dict[str, Any]
    options: dict[str, str]  # dest -> the flag's name (--tp)
    typed: frozenset[str] = frozenset()  # the dests of the flags on the command line

    def given(self, dest: str) -> bool:
        """Whether the flag is on the command line (even at its default value) or set to
        something other than its default."""
        if dest in self.typed:
            return True
        return dest in self.defaults and getattr(self.args, dest, None) != self.defaults[dest]

    def show(self, dest: str) -> str:
        """The flag with its value, as the user would type it: --tp 2, --sequence-parallel."""
        value = getattr(self.args, dest)
        flag = self.options.get(dest, flag_name(dest))
        return flag if isinstance(value, bool) else f"{flag} {value}"

    def get(self, dest: str) -> Any:
        return getattr(self.args, dest, None)


Rule = Callable[[Flags], Iterator[str]]


def _ignored_by_plan(f: Flags, dests: tuple[str, ...], what: str) -> Iterator[str]:
    if not f.get("plan"):
        return
    for dest in dests:
        if f.given(dest):
            yield (
                f"{f.show(dest)} does nothing with --plan (the plan fixes {what}); drop "
                f"{f.options.get(dest, flag_name(dest))} or --plan"
            )


def _config_rules(f: Flags) -> Iterator[str]:
    """Knobs of the configuration that need another knob to mean anything."""
    tp, pp = f.get("tp") or 1, f.get("pp") or 1
    if f.get("sequence_parallel") and tp == 1:
        yield (
            "--sequence-parallel does nothing with tp 1 (it splits the activations of a "
            "tensor-parallel group); give --tp > 1 or drop --sequence-parallel"
        )
    if f.given("virtual_stages") and pp == 1:
        yield (
            f"{f.show('virtual_stages')} does nothing with pp 1 (virtual stages are chunks of "
            f"a pipeline stage); give --pp > 1 or drop --virtual-stages"
        )
    elif f.given("virtual_stages") and f.get("schedule") != "interleaved":
        yield (
            f"{f.show('virtual_stages')} does nothing with the {f.get('schedule')} schedule; "
            f"give --schedule interleaved or drop --virtual-stages"
        )
    if f.given("schedule") and pp == 1:
        yield (
            f"{f.show('schedule')} does nothing with pp 1 (it orders the micro-batches of a "
            f"pipeline); give --pp > 1 or drop --schedule"
        )


def simulate_rules(f: Flags) -> Iterator[str]:
    placed = ("model", "cluster", "nodes", "gpus_per_node", "stack", *CONFIG_FIELDS)
    yield from _ignored_by_plan(f, placed, "the model, the cluster and the configuration")
    if not f.get("plan"):
        yield from _config_rules(f)


def sweep_rules(f: Flags) -> Iterator[str]:
    yield from _config_rules(f)
    vary = f.get("vary")
    swept = {"nodes": ("nodes", "dp"), "micro-batch": ("micro_batch",)}.get(vary, ())
    for dest in swept:
        if f.given(dest):
            yield (
                f"{f.show(dest)} does nothing with --vary {vary} (the sweep sets it for each "
                f"value); drop {f.options.get(dest, flag_name(dest))}"
            )
    if f.given("link_kind") and vary != "bandwidth":
        yield f"--link-kind only applies to --vary bandwidth, not --vary {vary}; drop it"


def validate_rules(f: Flags) -> Iterator[str]:
    configured = ("model", "strategy", "micro_batch", "global_batch", "seq_len")
    yield from _ignored_by_plan(
        f, (*configured, "schedule", "virtual_stages"), "the model and the configuration"
    )
    if f.get("plan") or f.get("strategy") == "pp":
        return
    for dest in ("schedule", "virtual_stages"):
        if f.given(dest):
            yield (
                f"{f.show(dest)} does nothing with --strategy {f.get('strategy')} (it shapes a "
                f"pipeline); use --strategy pp or drop {f.options.get(dest, flag_name(dest))}"
            )


def profile_rules(f: Flags) -> Iterator[str]:
    device = f.get("device") or "cpu"
    if f.get("out") and f.get("no_save"):
        yield "--out and --no-save contradict each other; drop one"
    if device == "cpu" or device.startswith("cuda"):
        return
    for dest in ("warmup", "repeats", "out", "no_save"):
        if f.given(dest):
            yield (
                f"{f.show(dest)} does nothing with --device {device} (a device model estimates "
                f"the times: nothing is measured or written); drop it or use --device cpu"
            )


def plan_rules(f: Flags) -> Iterator[str]:
    pp, dp = f.get("pp"), f.get("dp")
    if f.get("schedules") and pp is not None and pp[1] == 1:
        yield (
            f"--schedules {','.join(f.get('schedules'))} does nothing with --pp 1 (a schedule "
            f"orders the micro-batches of a pipeline); allow --pp > 1 or drop --schedules"
        )
    if f.get("zero") and dp is not None and dp[1] == 1:
        yield (
            f"--zero {','.join(f.get('zero'))} does nothing with --dp 1 (ZeRO shards over the "
            f"data-parallel ranks); allow --dp > 1 or drop --zero"
        )
    if f.get("json") and f.get("explain"):
        yield "--explain prints its reasons beside the table, not in --json; drop one of them"
    if f.get("export_out") and not f.get("export"):
        yield "--export-out needs --export (which framework's job to write); give --export"


def bench_comm_rules(f: Flags) -> Iterator[str]:
    if f.given("realtime") and f.get("backend") != "gloo":
        yield (
            f"--default-scheduling applies to gloo ranks only, not --backend "
            f"{f.get('backend')}; drop it"
        )


RULES: dict[str, Rule] = {
    "simplan simulate": simulate_rules,
    "simplan report sweep": sweep_rules,
    "simplan validate": validate_rules,
    "simplan profile": profile_rules,
    "simplan plan": plan_rules,
    "simplan bench-comm": bench_comm_rules,
}


def typed_flags(parser: argparse.ArgumentParser, argv: Sequence[str]) -> frozenset[str]:
    """The dests of the flags in `argv` (the arguments after the verb), abbreviations
    included."""
    names = parser._option_string_actions
    typed = set()
    for arg in argv:
        if arg == "--":
            break
        name = arg.split("=", 1)[0]
        if not name.startswith("--"):
            continue
        matches = {a.dest for o, a in names.items() if o == name} or {
            a.dest for o, a in names.items() if o.startswith(name)
        }
        if len(matches) == 1:
            typed |= matches
    return frozenset(typed)


def check_flags(
    parser: argparse.ArgumentParser, args: argparse.Namespace, argv: Sequence[str] = ()
) -> None:
    """Raise a one-line SimplanError for the first flag that would do nothing beside the others
    (`parser` is the verb's own parser, `argv` the arguments after the verb: a flag counts as
    given when it is typed or differs from the parser's default)."""
    rule = RULES.get(parser.prog)
    if rule is None:
        return
    actions = [a for a in parser._actions if a.option_strings]
    flags = Flags(
        args=args,
        defaults={a.dest: a.default for a in actions},
        options={a.dest: next(o for o in a.option_strings if o.startswith("--")) for a in actions},
        typed=typed_flags(parser, argv),
    )
    for message in rule(flags):
        raise SimplanError(message)


def check_config(config: ParallelConfig) -> None:
    """What only the configuration of the flags tells, once the cluster has set dp."""
    if config.zero and config.replicas == 1:
        raise SimplanError(
            f"--zero {config.zero} does nothing with dp 1 (ZeRO shards over the data-parallel "
            f"and context-parallel ranks); lower --tp/--pp to leave dp > 1, or drop --zero"
        )


def check_model(
    graph: ModelGraph, *, seq_len: int = 0, recompute: str = "none", sequence_parallel: bool = False
) -> None:
    """Flags the model gives nothing to act on: a sequence length for a model without a
    sequence dimension (an MLP, a CNN), selective recomputation (of the attention core),
    per-op recomputation or sequence parallelism (of transformer blocks) for a model without
    transformer blocks."""
    if seq_len and not graph.seq_len:
        raise SimplanError(
            f"--seq-len {seq_len} does nothing for {graph.name}, which has no sequence "
            f"dimension; drop --seq-len"
        )
    if any(layer.kind == "transformer_block" for layer in graph.layers):
        return
    if recompute == "selective":
        raise SimplanError(
            f"--recompute selective recomputes the attention core, which {graph.name} does not "
            f"have; use --recompute full or none"
        )
    if recompute == "op":
        raise SimplanError(
            f"--recompute op checkpoints transformer blocks op by op, which {graph.name} does "
            f"not have; use --recompute full or none"
        )
    if sequence_parallel:
        raise SimplanError(
            f"--sequence-parallel splits the activations of transformer blocks, which "
            f"{graph.name} does not have; drop it"
        )


def check_seq_len(model: str, seq_len: int | None, dtype: str | None) -> None:
    """A --seq-len given for a model named by a preset, TOML or factory must mean something."""
    if not seq_len:
        return
    from simplan.sources import load_model

    check_model(load_model(model, seq_len=seq_len, dtype=dtype or "bf16"), seq_len=seq_len)
