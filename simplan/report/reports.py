"""Report directories: figures (PNG, and SVG where small) plus index.md, for one simulated
step, a planner's ranked plans, a sweep, and the validation records."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from simplan.errors import SimplanError
from simplan.outputs import REPORT_FILES, output_set
from simplan.report import breakdown, compare, memory, timeline, validation
from simplan.report.index import Figure, Section, write_index
from simplan.report.style import FORMATS, gib, save_figure

SVG_MAX_EVENTS = 5000  # above this a timeline SVG grows past a few MB: PNG only


def report_set(out_dir: str | Path, flag: str, *, new: bool = False) -> Any:
    """The report directory as a set: built aside, then replacing out_dir whole (new: out_dir
    must not exist yet)."""
    return output_set(out_dir, flag, owns=REPORT_FILES, new=new)


def _save(fig: Any, out: Path, name: str, caption: str, formats: Sequence[str]) -> Figure:
    save_figure(fig, out, name, formats)
    return Figure(name=name, caption=caption, formats=tuple(formats))


def simulation_sections(
    result: Any, out_dir: str | Path, *, formats: Sequence[str] = FORMATS, title: str = ""
) -> list[Section]:
    """Timeline, per-stage breakdown and memory figures of a SimResult, written to out_dir."""
    out = Path(out_dir)
    cfg = result.config
    head = title or f"{result.model} on {result.cluster}"
    tl_formats = [f for f in formats if f != "svg" or len(result.events) <= SVG_MAX_EVENTS]
    figs = []
    if result.events:
        fig = timeline.timeline_figure(result, title=head)
        caption = "one step, a row per pipeline stage and stream"
        if len(tl_formats) < len(formats):
            caption += f" (PNG only: {len(result.events):,} events make an SVG of several MB)"
        figs.append(_save(fig, out, "timeline", caption, tl_formats))
    stage = _save(
        breakdown.stage_breakdown_figure(result, title=head),
        out,
        "breakdown",
        "time per stage: compute, exposed communication, bubble, recompute, optimizer",
        formats,
    )
    mem = _save(
        memory.memory_figure(result, title=head),
        out,
        "memory",
        "peak memory per device by category, against capacity",
        formats,
    )
    mem_t = _save(
        memory.memory_time_figure(result, title=head),
        out,
        "memory_time",
        "memory of the fullest device over the step",
        formats,
    )
    stats = [
        f"configuration: dp {cfg['dp']} tp {cfg['tp']} pp {cfg['pp']}, micro-batch "
        f"{cfg['micro_batch']} x {cfg.get('num_microbatches', '?')}, {cfg['schedule']}, "
        f"zero {cfg['zero']}, recompute {cfg['recompute']}, {cfg['dtype']}",
        f"step time {result.step_time_s:.4g} s, {result.tokens_per_s:,.0f} tokens/s, "
        f"{result.tflops_per_device:.1f} TFLOP/s per device, MFU {result.mfu:.1%}",
        f"peak memory {gib(result.peak_memory_bytes):.1f} GiB "
        f"({'fits' if result.fits_memory else 'does NOT fit'})",
        timeline.fold_note(cfg, len(result.devices)),
        *result.critical_path,
    ]
    return [
        Section(title="Step", bullets=tuple(stats)),
        Section(
            title="Timeline",
            figures=tuple(figs),
            text="" if figs else "no events recorded (simulate with record=True)",
        ),
        Section(title="Breakdown", figures=(stage,), table=_stage_table(result)),
        Section(title="Memory", figures=(mem, mem_t)),
    ]


def _stage_table(result: Any) -> tuple[list[str], list[list[str]]]:
    headers = [
        "stage",
        "device",
        "compute (ms)",
        "exposed comm (ms)",
        "bubble (ms)",
        "recompute (ms)",
        "optimizer (ms)",
        "peak (GiB)",
        "capacity (GiB)",
    ]
    rows = [
        [
            str(d.stage),
            d.device_name,
            f"{d.compute_s * 1e3:.1f}",
            f"{d.exposed_comm_s * 1e3:.1f}",
            f"{d.bubble_s * 1e3:.1f}",
            f"{d.recompute_s * 1e3:.1f}",
            f"{d.optimizer_s * 1e3:.1f}",
            f"{gib(d.peak_memory_bytes):.1f}",
            f"{gib(d.capacity_bytes):.0f}",
        ]
        for d in result.devices
    ]
    return headers, rows


def write_simulation_report(
    result: Any,
    out_dir: str | Path,
    *,
    title: str = "",
    formats: Sequence[str] = FORMATS,
    command: str = "",
    flag: str = "--report",
    new: bool = False,
    extra: Sequence[Section] = (),
) -> Path:
    """Report of one simulated step (simulate(..., record=True)), with `extra` sections first
    (what a model knob changed); returns out_dir/index.md."""
    head = title or f"{result.model} on {result.cluster}"
    with report_set(out_dir, flag, new=new) as stage:
        sections = [*extra, *simulation_sections(result, stage, formats=formats, title=head)]
        write_index(stage, f"Simulated step: {head}", _regen_note(command), sections)
    return Path(out_dir) / "index.md"


def simulate_plan(plan: Any, *, record: bool) -> Any:
    """SimResult of a planner Plan (its own simulate) or a PlanFile."""
    if hasattr(plan, "simulate"):
        return plan.simulate(record=record)
    from simplan.sim.run import simulate

    return simulate(
        plan.model,
        plan.cluster.load(),
        plan.config,
        placement=list(plan.placement) or None,
        record=record,
    )


def _with_prediction(plan: Any) -> Any:
    """plan, or a copy whose `predicted` holds the simulated step (when it was never simulated)."""
    pred = dict(plan.predicted)
    if pred.get("breakdown") and pred.get("step_time_s"):
        return plan
    from dataclasses import replace

    r = simulate_plan(plan, record=False)
    pred.update(
        step_time_s=r.step_time_s,
        tokens_per_s=r.tokens_per_s,
        mfu=r.mfu,
        peak_memory_bytes=r.peak_memory_bytes,
        fits_memory=r.fits_memory,
        breakdown=r.breakdown,
        stages=[{"stage": d.stage, "capacity_bytes": d.capacity_bytes} for d in r.devices],
    )
    return replace(plan, predicted=pred)


def write_plan_report(
    plans: Sequence[Any],
    baselines: Sequence[Any],
    out_dir: str | Path,
    *,
    formats: Sequence[str] = FORMATS,
    command: str = "",
    flag: str = "--report",
    new: bool = False,
    extra: Callable[[Path, Sequence[str]], Sequence[Section]] | None = None,
) -> Path:
    """Report of the planner's ranked plans (best first) and the baselines: comparison and
    per-plan breakdown, then the best plan's timeline, breakdown and memory (simulated again
    with its timeline), then the sections `extra(dir, formats)` writes (e.g. where a
    multi-task model's heads run). Accepts planner Plans or PlanFiles; returns
    out_dir/index.md."""
    if not plans:
        raise SimplanError("no plans to report (the plan file lists none)")
    with report_set(out_dir, flag, new=new) as stage:
        _plan_report(plans, baselines, stage, formats=formats, command=command, extra=extra)
    return Path(out_dir) / "index.md"


def _plan_report(
    plans: Sequence[Any], baselines: Sequence[Any], out: Path, *, formats: Sequence[str],
    command: str, extra: Callable[[Path, Sequence[str]], Sequence[Section]] | None = None,
) -> Path:  # fmt: skip
    plans = [_with_prediction(p) for p in plans]
    baselines = [_with_prediction(b) for b in baselines]
    rows = compare.plan_rows(plans, baselines)
    best = plans[0]
    cluster = best.cluster.spec + (f" x{best.cluster.nodes} nodes" if best.cluster.nodes else "")
    head = f"{best.model} on {cluster}"
    cmp = _save(
        compare.compare_figure(rows, title=f"{head}: plans and baselines"),
        out,
        "compare",
        "the ranked plans beside the baselines (grey, hatched)",
        formats,
    )
    bars = [(r.label, r.breakdown, r.step_time_s) for r in rows]
    per_plan = _save(
        breakdown.plan_breakdown_figure(bars, title=f"{head}: where the step goes"),
        out,
        "breakdown_plans",
        "step-time breakdown per plan",
        formats,
    )
    sections = [
        Section(title="Plans", figures=(cmp,), table=compare.compare_table(rows)),
        Section(
            title="Breakdown per plan",
            figures=(per_plan,),
            text="averaged over pipeline stages; the black mark is the step time",
        ),
    ]
    result = simulate_plan(best, record=True)
    detail = simulation_sections(result, out, formats=formats, title=f"{head}, plan 1")
    sections += [
        Section(
            title=f"Plan 1: {s.title.lower()}",
            text=s.text,
            figures=s.figures,
            table=s.table,
            bullets=s.bullets,
        )
        for s in detail
    ]
    if extra is not None:
        sections += list(extra(out, formats))
    return write_index(out, f"Plans: {head}", _regen_note(command), sections)


def write_sweep_report(
    points: Sequence[Any],
    out_dir: str | Path,
    *,
    vary: str,
    title: str,
    link_kinds: Sequence[str] = ("network",),
    formats: Sequence[str] = FORMATS,
    command: str = "",
    flag: str = "--out",
    new: bool = False,
) -> Path:
    """Report of a sweep (simplan.report.sweep.run_sweep); returns out_dir/index.md."""
    from simplan.report import sweep

    if not any(not p.error for p in points):
        reasons = "; ".join(sorted({p.error for p in points}))
        raise SimplanError(f"no value of the sweep could be simulated: {reasons}")
    with report_set(out_dir, flag, new=new) as stage:
        fig = _save(
            sweep.sweep_figure(points, vary=vary, title=title, link_kinds=link_kinds),
            stage,
            "sweep",
            f"predicted throughput and MFU against {vary}",
            formats,
        )
        section = Section(
            title=f"Sweep over {vary}", figures=(fig,), table=sweep.sweep_table(points, vary)
        )
        write_index(stage, title, _regen_note(command), [section])
    return Path(out_dir) / "index.md"


def write_validation_report(
    runs_dir: str | Path,
    out_dir: str | Path,
    *,
    formats: Sequence[str] = FORMATS,
    command: str = "",
    flag: str = "--out",
    new: bool = False,
) -> Path:
    """Predicted vs measured over every record in runs_dir; returns out_dir/index.md."""
    points = validation.read_points(runs_dir)
    with report_set(out_dir, flag, new=new) as stage:
        scatter = _save(
            validation.validation_figure(points),
            stage,
            "validation",
            "predicted against measured step time, y = x and ±10%",
            formats,
        )
        errors = _save(
            validation.error_figure(points), stage, "errors", "relative error per run", formats
        )
        section = Section(
            title="Predicted vs measured",
            text=validation.summary(points),
            figures=(scatter, errors),
            table=validation.validation_table(points),
        )
        sections = [
            section,
            *_memory_sections(runs_dir, stage, formats),
            *_task_sections(runs_dir, stage, formats),
        ]
        intro = f"Records: `{runs_dir}` ({len(points)} runs). " + _regen_note(command)
        write_index(stage, "Validation: simulator against real runs", intro, sections)
    return Path(out_dir) / "index.md"


def _memory_sections(runs_dir: str | Path, stage: Path, formats: Sequence[str]) -> list[Section]:
    """Predicted against measured peak memory, where the records measured it."""
    from simplan.report.memory import memory_validation_figure, read_memory_points

    points = read_memory_points(runs_dir)
    if not points:
        return []
    figure = _save(
        memory_validation_figure(points),
        stage,
        "memory",
        "predicted against measured peak tensor memory per rank, y = x and ±10%",
        formats,
    )
    rows = [
        [p.label, f"{p.predicted_bytes / 2**20:.2f}", f"{p.measured_bytes / 2**20:.2f}",
         f"{p.rel_error:+.1%}"]
        for p in points
    ]  # fmt: skip
    return [
        Section(
            title="Peak memory: predicted vs measured",
            text="Measured: the tensor storages live at the peak of one untimed step per rank.",
            figures=(figure,),
            table=(["rank", "predicted MiB", "measured MiB", "error"], rows),
        )
    ]


def _task_sections(runs_dir: str | Path, stage: Path, formats: Sequence[str]) -> list[Section]:
    """Per-task loss and weight over the steps of the multi-task runs, where there are any."""
    from simplan.report.task_curves import read_task_runs, task_curves_figure, task_table

    runs = read_task_runs(runs_dir)
    if not runs:
        return []
    figures = tuple(
        _save(
            task_curves_figure(run),
            stage,
            f"tasks-{i}",
            f"{run.label}: every task's loss and weight per step",
            formats,
        )
        for i, run in enumerate(runs)
    )
    return [
        Section(
            title="Multi-task training: loss and weight per task",
            text="Rank 0's view (replicated: the ranks' mean) of every step, warm-up included.",
            figures=figures,
            table=task_table(runs),
        )
    ]


def _regen_note(command: str) -> str:
    if command:
        return f"Regenerate with `{command}`."
    return "Written by `simplan report` or `simplan simulate --report DIR`."
