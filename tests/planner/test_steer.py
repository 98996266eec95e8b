"""A planner a user can steer: degree bounds, micro-batch range, ZeRO stages, schedules and the
memory headroom; the Megatron baseline as users run it; --explain's speed ratios."""

from __future__ import annotations

from dataclasses import replace

import pytest

from simplan.cli import main
from simplan.errors import SimplanError
from simplan.headroom import (
    DEFAULT_HEADROOM_BYTES,
    NO_HEADROOM,
    Headroom,
    parse_headroom,
    published_overheads_bytes,
)
from simplan.parallel import ParallelConfig
from simplan.planfile import ClusterRef
from simplan.planner import Plan, SearchOptions, SearchSpace, search
from simplan.planner.baselines import megatron_configs
from simplan.planner.explain import compare, times_faster
from simplan.planner.search import micro_batches_in
from simplan.sim.run import simulate
from simplan.sources import load_model
from simplan.topology import load_cluster
from simplan.units import GiB

SMALL = SearchSpace(
    micro_batches=(1, 2, 4),
    schedules=("1f1b", "interleaved", "gpipe"),
    virtual_stages=(2,),
    zero=(0, 1, 2),
    recompute=("none", "full"),
    sequence_parallel=(False,),
    fewer_nodes=0,
)


@pytest.fixture(scope="module")
def gpt125m():
    return load_model("gpt3-125m", seq_len=2048, dtype="bf16")


def _search(graph, cluster: str = "dgx-a100", nodes: int | None = 2, **kw) -> object:
    options = SearchOptions(global_batch=32, nodes=nodes, top=3, space=SMALL, **kw)
    return search(graph, cluster, options)


def _proposed(result) -> list[Plan]:
    return list(result.plans)


# --- the headroom ---------------------------------------------------------------------------


def test_the_default_headroom_is_the_published_cuda_context_plus_nccl_init() -> None:
    """Recomputed from the packaged reference table: the largest PyTorch 2.x CUDA context
    (0.92 GiB) and the largest torch.distributed initialisation (2.00 GiB)."""
    parts = published_overheads_bytes()
    assert parts == {"cuda_context": 0.92 * GiB, "nccl_init": 2.00 * GiB}
    assert sum(parts.values()) == pytest.approx(DEFAULT_HEADROOM_BYTES)


def test_a_headroom_is_gib_or_a_percentage_of_capacity() -> None:
    assert parse_headroom("4") == Headroom(reserved_bytes=4 * GiB)
    assert parse_headroom("0.5GiB") == Headroom(reserved_bytes=0.5 * GiB)
    ten = parse_headroom("10%")
    assert ten.bytes_for(80 * GiB) == pytest.approx(8 * GiB)
    assert ten.usable_bytes(80 * GiB) == pytest.approx(72 * GiB)
    for bad in ("", "four", "-1", "4 GB", "95%"):
        with pytest.raises(SimplanError, match="headroom"):
            parse_headroom(bad)


def test_no_plan_is_proposed_above_capacity_less_the_headroom(gpt125m) -> None:
    """Without headroom the winner needs P bytes; a headroom leaving 0.9 P of the device makes it
    not fit, and every plan proposed instead stays within capacity less the headroom."""
    free = _search(gpt125m, memory_headroom=NO_HEADROOM)
    winner = free.plans[0]
    capacity = 80 * GiB
    need = winner.predicted["peak_memory_bytes"]
    headroom = Headroom(reserved_bytes=capacity - 0.9 * need)
    kept = _search(gpt125m, memory_headroom=headroom)
    assert winner.config not in {p.config for p in kept.plans}
    for plan in kept.plans:
        assert plan.fits
        for stage in plan.predicted["stages"]:
            assert stage["capacity_bytes"] == capacity
            assert stage["peak_memory_bytes"] <= capacity - headroom.reserved_bytes


def test_the_simulator_keeps_the_headroom_free(gpt125m) -> None:
    config = ParallelConfig(dp=16, global_batch=32, micro_batch=2, seq_len=2048, dtype="bf16")
    cluster = load_cluster("dgx-a100", nodes=2)
    peak = simulate(gpt125m, cluster, config, record=False).peak_memory_bytes
    just_fits = Headroom(reserved_bytes=80 * GiB - peak)
    assert simulate(gpt125m, cluster, config, record=False, headroom=just_fits).fits_memory
    over = Headroom(reserved_bytes=80 * GiB - peak + 1)
    result = simulate(gpt125m, cluster, config, record=False, headroom=over)
    assert not result.fits_memory
    assert result.devices[0].headroom_bytes == over.reserved_bytes


def test_mixed_precision_keeps_fp32_main_gradients(gpt125m) -> None:
    """bf16 weights (2 bytes), fp32 main gradients (4), fp32 master + two moments (12). Two
    micro-batches: the gradients exist at the peak (the second one's backward)."""
    config = ParallelConfig(dp=1, global_batch=2, micro_batch=1, seq_len=2048, dtype="bf16")
    one = load_cluster("dgx-a100", nodes=1, gpus_per_node=1)
    mem = simulate(gpt125m, one, config, record=False).devices[0].memory
    assert mem["grads"] == pytest.approx(2 * mem["weights"])
    assert mem["optimizer"] == pytest.approx(6 * mem["weights"])


# --- constraints ----------------------------------------------------------------------------


def test_a_fixed_tp_and_a_bounded_pp_are_respected(gpt125m) -> None:
    result = _search(gpt125m, tp=(2, 2), pp=(1, 2))
    assert result.plans
    for plan in _proposed(result):
        assert plan.config.tp == 2 and plan.config.pp <= 2
    assert result.infeasible.get("tp outside --tp 2", 0) > 0


def test_a_fixed_dp_is_respected(gpt125m) -> None:
    result = _search(gpt125m, dp=(4, 4))
    assert {p.config.dp for p in _proposed(result)} == {4}


def test_excluded_schedules_and_zero_stages_never_appear(gpt125m) -> None:
    result = _search(gpt125m, pp=(2, 4), schedules=("gpipe",), zero=(0,))
    assert result.plans
    for plan in _proposed(result):
        assert plan.config.pp > 1 and plan.config.schedule == "gpipe"
        assert plan.config.zero == 0


def test_a_baseline_outside_the_constraints_is_shown_but_never_proposed(gpt125m) -> None:
    result = _search(gpt125m, tp=(1, 1), pp=(1, 1))
    assert any(b.config.tp > 1 for b in result.baselines)  # Megatron's rule
    assert all(p.config.tp == 1 and p.config.pp == 1 for p in result.plans)


def test_micro_batch_ranges_are_the_ends_and_the_powers_of_two_between() -> None:
    assert micro_batches_in(1, 16) == (1, 2, 4, 8, 16)
    assert micro_batches_in(3, 20) == (3, 4, 8, 16, 20)
    assert micro_batches_in(6, 6) == (6,)
    assert SearchSpace().micro_batches == (1, 2, 4, 8, 16, 32, 64, 128, 256)


def test_resnet50_on_a_dgx_a100_takes_a_micro_batch_above_16() -> None:
    """The old space (micro-batches 1-16) against the default one: larger micro-batches fit a
    CNN's memory many times over and keep the GPU busy."""
    old = search("resnet50", "dgx-a100", SearchOptions(global_batch=2048, micro_batch=(1, 16)))
    new = search("resnet50", "dgx-a100", SearchOptions(global_batch=2048))
    assert old.plans[0].config.micro_batch <= 16
    best = new.plans[0]
    assert best.config.micro_batch > 16
    assert best.predicted["samples_per_s"] > old.plans[0].predicted["samples_per_s"]


def test_constraints_that_cannot_hold_are_one_line() -> None:
    for kw, needle in (
        ({"tp": (4, 2)}, "--tp"),
        ({"micro_batch": (0, 4)}, "--micro-batch"),
        ({"zero": (5,)}, "--zero"),
        ({"schedules": ("zb",)}, "--schedules"),
    ):
        with pytest.raises(SimplanError, match=needle):
            SearchOptions(global_batch=8, **kw)


# --- the Megatron baseline ------------------------------------------------------------------


def test_the_megatron_baseline_is_the_recipe_users_run() -> None:
    """gpt3-1.3b on 4 DGX A100 nodes, global batch 64: TP 8 with sequence parallelism; pp 1
    (dp 4) first, with the distributed optimizer; pp 2 (dp 2, 32 micro-batches) interleaved."""
    graph = load_model("gpt3-1.3b", seq_len=2048, dtype="bf16")
    first, second = list(megatron_configs(graph, 32, 8, 64, "bf16"))[:2]
    assert (first.tp, first.pp, first.dp) == (8, 1, 4)
    assert first.sequence_parallel and first.zero == 1 and first.recompute == "none"
    assert (second.tp, second.pp, second.dp) == (8, 2, 2)
    assert second.schedule == "interleaved" and second.virtual_stages == 2
    assert second.zero == 1 and second.micro_batch == 1


# --- --explain ------------------------------------------------------------------------------


def test_speed_ratios_are_ratios() -> None:
    assert times_faster(3.15, 10.95) == "3.5x faster"
    assert times_faster(1.0, 1.002) == "1.002x faster"
    assert times_faster(0.1, 33.5) == "335x faster"
    assert times_faster(2.0, 1.0) == "2.0x slower"
    assert times_faster(1.0, 1.0) == "as fast"


def test_explain_says_how_many_times_faster() -> None:
    config = ParallelConfig(dp=8, global_batch=8)
    ref = ClusterRef(spec="dgx-a100")

    def plan(step_s: float, role: str) -> Plan:
        predicted = {"step_time_s": step_s, "breakdown": {"compute_s": step_s}}
        return Plan(model="m", cluster=ref, config=config, placement=(), predicted=predicted,
                    role=role)  # fmt: skip

    line = compare(plan(3.15, "plan"), plan(10.95, "baseline:pure-dp"))
    assert "the winner is 3.5x faster" in line and "%" not in line


# --- the command line -----------------------------------------------------------------------


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
    out, err = capsys.readouterr()
    return code, out, err


PLAN = ("plan", "--model", "mlp", "--cluster", "localhost-cpu", "--global-batch", "8")


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (("--tp", "4-2"), "LO above HI"),
        (("--tp", "2-4-8"), "N or LO-HI"),
        (("--micro-batch", "0-4"), "a whole number from 1"),
        (("--zero", "0,4"), "comma-separated list of 0, 1, 2, 3"),
        (("--zero", "1,1"), "names one value twice"),
        (("--schedules", "zb-h1"), "1f1b, interleaved, gpipe"),
        (("--memory-headroom", "95%"), "at most 90%"),
        (("--memory-headroom", "lots"), "GiB"),
        (("--pp", "1", "--schedules", "gpipe"), "--schedules gpipe does nothing with --pp 1"),
        (("--dp", "1", "--zero", "1"), "--zero 1 does nothing with --dp 1"),
        (("--dp", "3"), "loosen --dp or add devices"),
    ],
)
def test_bad_constraints_are_refused_in_one_line(capsys, extra, needle) -> None:
    code, out, err = _run(capsys, *PLAN, *extra)
    assert code == 2 and out == ""
    assert "Traceback" not in err
    assert needle in err.strip().splitlines()[-1]


def test_plan_flags_steer_the_search(capsys) -> None:
    code, out, err = _run(capsys, *PLAN, "--dtype", "fp32", "--dp", "2", "--micro-batch", "2",
                          "--json")  # fmt: skip
    assert code == 0, err
    import json

    doc = json.loads(out)
    assert all(p["config"]["dp"] == 2 and p["config"]["micro_batch"] == 2 for p in doc["plans"])
    held = doc["constraints"]
    assert held["dp"] == [2, 2] and held["micro_batch"] == [2, 2] and held["tp"] is None
    assert held["memory_headroom"] == {"reserved_bytes": DEFAULT_HEADROOM_BYTES, "fraction": 0.0}


def test_simulate_shows_the_headroom_against_capacity(capsys) -> None:
    code, out, _ = _run(capsys, "simulate", "--model", "gpt3-125m", "--cluster", "dgx-a100",
                        "--global-batch", "8", "--memory-headroom", "10%")  # fmt: skip
    assert code == 0
    header = next(line for line in out.splitlines() if "capacity GiB" in line)
    assert "headroom GiB" in header
    row = next(line for line in out.splitlines() if line.split()[:1] == ["0"])
    assert "8.00" in row.split()  # 10% of 80 GiB


def test_a_headroom_the_step_cannot_keep_exits_3_and_names_it(capsys) -> None:
    code, _, err = _run(capsys, "simulate", "--model", "gpt3-125m", "--cluster", "dgx-a100",
                        "--global-batch", "8", "--memory-headroom", "79.9")  # fmt: skip
    assert code == 3
    assert "79.90 GiB free (--memory-headroom)" in err


def test_replace_keeps_options_frozen() -> None:
    options = SearchOptions(global_batch=8, tp=(2, 2))
    assert replace(options, tp=None).constrained_space().tp_range is None
    assert options.constrained_space().tp_range == (2, 2)


def test_skipping_larger_micro_batches_loses_no_candidate_that_fits(gpt125m) -> None:
    """The estimates kept equal those of every candidate estimated one by one (but for CPU
    offload variants of plans that fit without it, which are never estimated)."""
    from simplan.deadline import Deadline
    from simplan.planner.driver import Search, _balanced_fits
    from simplan.planner.search import candidates

    cluster = load_cluster("dgx-a100", nodes=2)
    space = replace(SMALL, micro_batches=SearchSpace().micro_batches, zero=(0, 3))
    tight = Headroom(reserved_bytes=72 * GiB)  # 8 GiB left: the larger micro-batches overflow
    options = SearchOptions(
        global_batch=256, space=space, deadline=Deadline.never(), memory_headroom=tight
    )
    s = Search(gpt125m, cluster, "gpt3-125m", ClusterRef(spec="dgx-a100", nodes=2), options)
    configs, _ = candidates(gpt125m, cluster, 256, space, tight)
    kept = {(c, layout.label) for _e, c, layout, _b in s.evaluate(configs, Deadline.never())}
    every = set()
    for c in configs:
        for layout in s.layouts(c.dp, c.tp, c.pp):
            plain = c.replace(offload="none")
            if c.offload != "none" and s.score(plain, layout)[0].fits:
                continue  # offload only adds time to a plan that fits without it: not estimated
            est = s.score(c, layout)[0]
            if est.fits or _balanced_fits(est):
                every.add((c, layout.label))
    assert kept and kept == every
    assert s.reasons["memory (a smaller micro-batch did not fit)"] > 0
