"""Killing `simplan plan --out DIR` or `simplan report plan ... --out DIR` at any write step
(SIGKILL, injected deterministically with SIMPLAN_KILL_AT_WRITE_STEP) leaves DIR holding either
the complete previous set of files or the complete new one, with no temporary inside; the
temporaries a killed writer leaves beside DIR belong to it alone, and the next writer removes
them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from simplan import outputs
from simplan.cli import main
from simplan.outputs import KILL_ENV, MARKER, is_temporary
from tests.helpers import ROOT
from tests.plan_files import write_tiny_plan

pytestmark = pytest.mark.slow

PLAN = ["plan", "--model", "gpt3-125m", "--cluster", "dgx-a100", "--nodes", "1", "--top", "1"]


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(root.rglob("*"))
    }


# simplan's command line with the swap that works without renameat2 (other systems)
WITHOUT_EXCHANGE = (
    "import sys, simplan.outputs as o; from simplan.cli import main; "
    "o._exchange = lambda a, b: False; sys.exit(main(sys.argv[1:]))"
)


def run(
    argv: list[str], cwd: Path, kill_at: int | None = None, *, exchange: bool = True
) -> tuple[int, int, str]:
    """(exit status, pid, stderr) of `python -m simplan argv`, killed at write step kill_at."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop(KILL_ENV, None)
    if kill_at is not None:
        env[KILL_ENV] = str(kill_at)
    entry = ["-m", "simplan"] if exchange else ["-c", WITHOUT_EXCHANGE]
    proc = subprocess.Popen(
        [sys.executable, *entry, *argv],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, proc.pid, err


def restore(snapshot: Path, target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(snapshot, target)


def temporaries_of(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if is_temporary(p.name)]


def check_no_temporary_but_the_killed_ones(parent: Path, out: Path, pid: int) -> None:
    assert not [p for p in out.iterdir() if is_temporary(p.name)]
    for p in temporaries_of(parent):
        assert p.name.startswith(f"{outputs.TEMP_PREFIX}{pid}-"), p  # only the killed writer's


def is_complete_new_plan_set(out: Path, global_batch: int) -> bool:
    names = {p.name for p in out.iterdir()}
    if names != {"plan.json", "plans.json", MARKER}:
        return False
    plan = json.loads((out / "plan.json").read_text())
    plans = json.loads((out / "plans.json").read_text())
    marker = json.loads((out / MARKER).read_text())
    return (
        plan == plans["plans"][0]  # the pair belongs together
        and plan["config"]["global_batch"] == global_batch
        and marker["files"] == ["plan.json", "plans.json"]
    )


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "rename-aside"])
def test_a_killed_plan_out_leaves_the_old_pair_or_the_new_pair(
    tmp_path: Path, exchange: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With renameat2 DIR holds a complete pair at every moment (killed at every write step);
    with the rename-aside fallback (killed at each step of its swap) it does once the next
    writer has put a set moved aside back (remove_stale_temporaries)."""
    out, old = tmp_path / "plans", tmp_path / "old-copy"
    code, _, err = run([*PLAN, "--global-batch", "16", "--out", str(out)], tmp_path)
    assert code == 0, err
    shutil.copytree(out, old)
    seen = {"old": 0, "new": 0}
    argv = [*PLAN, "--global-batch", "32", "--out", str(out)]
    points = range(1, 60)
    if not exchange:  # the steps before the swap are those of the renameat2 case
        monkeypatch.setattr(outputs, "_exchange", lambda a, b: False)
        steps = write_steps(argv, tmp_path, monkeypatch)
        points = range(steps - 4, steps + 2)  # the last file's rename, the swap, one past it
    for kill_at in points:
        restore(old, out)
        code, pid, err = run(argv, tmp_path, kill_at, exchange=exchange)
        if code == 0:
            break
        assert code == -signal.SIGKILL, err
        for p in temporaries_of(tmp_path):
            assert p.name.startswith(f"{outputs.TEMP_PREFIX}{pid}-"), p  # the killed writer's
        if not exchange:
            outputs.remove_stale_temporaries(tmp_path)  # what the next writer does first
        if tree(out) == tree(old):
            seen["old"] += 1
        else:
            assert is_complete_new_plan_set(out, 32), tree(out).keys()
            seen["new"] += 1
        assert not [p for p in out.iterdir() if is_temporary(p.name)]
    else:
        pytest.fail("the plan never finished: more write steps than expected")
    least_old = 6 if exchange else 1
    assert kill_at > 8 and seen["old"] >= least_old and seen["new"] >= 1, seen  # all were hit
    assert is_complete_new_plan_set(out, 32)
    assert temporaries_of(tmp_path) == []  # the finished run removed what the killed ones left


def write_steps(argv: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """The number of write steps of `simplan argv`, counted in this process."""
    count = [0]
    monkeypatch.setattr(outputs, "_step", lambda: count.__setitem__(0, count[0] + 1))
    monkeypatch.chdir(cwd)
    assert main(argv) == 0
    monkeypatch.undo()
    return count[0]


def test_a_killed_report_leaves_the_old_report_or_the_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = write_tiny_plan(tmp_path, dp=2, pp=2, name="first.json")
    second = write_tiny_plan(tmp_path, dp=4, pp=1, name="second.json")
    out = tmp_path / "report"
    new_argv = ["report", "plan", str(second), "--format", "png", "--out", str(out)]
    snapshots = {}
    for name, plan in (("new", second), ("old", first)):
        argv = ["report", "plan", str(plan), "--format", "png", "--out", str(out)]
        code, _, err = run(argv, tmp_path)
        assert code == 0, err
        snapshots[name] = tmp_path / f"{name}-copy"
        shutil.copytree(out, snapshots[name])
    old, new = tree(snapshots["old"]), tree(snapshots["new"])
    assert old != new and "compare.png" in new
    steps = write_steps(new_argv, tmp_path, monkeypatch)
    restore(snapshots["old"], out)
    # every step from the index on (the swap is there), and the figures' steps spread before it
    points = sorted({1, *range(2, steps - 8, 3), *range(max(1, steps - 8), steps + 1)})
    assert len(points) >= 15, steps
    seen = {"old": 0, "new": 0}
    for kill_at in points:
        restore(snapshots["old"], out)
        code, pid, err = run(new_argv, tmp_path, kill_at)
        assert code == -signal.SIGKILL, (kill_at, steps, err)
        state = tree(out)
        assert state in (old, new), (kill_at, sorted(state))
        seen["old" if state == old else "new"] += 1
        check_no_temporary_but_the_killed_ones(tmp_path, out, pid)
    assert seen["old"] >= 10 and seen["new"] >= 1, seen
    code, _, err = run(new_argv, tmp_path)
    assert code == 0, err
    assert tree(out) == new and temporaries_of(tmp_path) == []
