"""The atomic writers of simplan.outputs: single files, sets of files, stale temporaries, and the
checks of output paths."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simplan import outputs
from simplan.errors import SimplanError
from simplan.outputs import (
    MARKER,
    PLAN_FILES,
    REPORT_FILES,
    check_output_dir,
    check_output_file,
    check_record_dir,
    is_temporary,
    new_directory,
    output_set,
    remove_stale_temporaries,
    write_json_atomic,
    write_text_atomic,
    write_with,
)


def tree(root: Path) -> dict[str, bytes]:
    """Every file under root (relative path -> bytes)."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if is_temporary(p.name)]


def dead_pid() -> int:
    """The id of a process that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_single_file_is_created_with_its_parents_and_replaced(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "x.txt"
    assert write_text_atomic("one", target) == target
    assert target.read_text() == "one"
    write_text_atomic("two", target)
    assert target.read_text() == "two"
    assert os.listdir(target.parent) == ["x.txt"]
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask


def test_json_round_trips(tmp_path: Path) -> None:
    import json

    data = {"a": [1, 2.5, None], "b": "é"}
    assert json.loads(write_json_atomic(data, tmp_path / "d.json").read_text()) == data


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "x.png"
    target.write_bytes(b"old")

    def half(tmp: Path) -> None:
        tmp.write_bytes(b"ne")
        raise RuntimeError("renderer failed")

    with pytest.raises(RuntimeError):
        write_with(target, half)
    assert tree(tmp_path) == {"x.png": b"old"}


def test_stale_temporaries_of_ended_processes_are_removed(tmp_path: Path) -> None:
    gone = dead_pid()
    (tmp_path / f".simplan-tmp-{gone}-abc").write_bytes(b"")
    (tmp_path / f".simplan-tmp-{gone}-dir").mkdir()
    (tmp_path / f".simplan-tmp-{gone}-dir" / "plan.json").write_text("{}")
    mine = tmp_path / f".simplan-tmp-{os.getpid()}-live"
    mine.write_bytes(b"")
    (tmp_path / "user.txt").write_text("keep")
    removed = remove_stale_temporaries(tmp_path)
    assert len(removed) == 2
    assert sorted(os.listdir(tmp_path)) == sorted([mine.name, "user.txt"])


def test_the_next_writer_removes_what_a_killed_one_left(tmp_path: Path) -> None:
    gone = dead_pid()
    (tmp_path / f".simplan-tmp-{gone}-x").write_bytes(b"")
    write_text_atomic("new", tmp_path / "x.txt")
    assert os.listdir(tmp_path) == ["x.txt"]


def test_a_set_replaces_the_previous_set_whole(tmp_path: Path) -> None:
    out = tmp_path / "plans"
    with output_set(out, "--out", PLAN_FILES) as stage:
        (stage / "plan.json").write_text("1")
        (stage / "plans.json").write_text("1s")
    with output_set(out, "--out", PLAN_FILES) as stage:
        (stage / "plan.json").write_text("2")
    files = tree(out)
    assert files.pop(MARKER) and files == {"plan.json": b"2"}  # plans.json of set 1 is gone
    assert temporaries(tmp_path) == []


def test_a_set_that_fails_midway_changes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "r"
    with output_set(out, "--report", REPORT_FILES) as stage:
        (stage / "index.md").write_text("old")
    before = tree(out)
    with pytest.raises(RuntimeError), output_set(out, "--report", REPORT_FILES) as stage:
        (stage / "index.md").write_text("new")
        raise RuntimeError("figure failed")
    assert tree(out) == before
    assert temporaries(tmp_path) == []


def test_without_rename_exchange_the_fallback_replaces_the_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outputs, "_exchange", lambda a, b: False)
    out = tmp_path / "r"
    for text in ("old", "new"):
        with output_set(out, "--report", REPORT_FILES) as stage:
            (stage / "index.md").write_text(text)
    assert (out / "index.md").read_text() == "new"
    assert temporaries(tmp_path) == []


def test_a_set_moved_aside_by_a_killed_writer_is_put_back(tmp_path: Path) -> None:
    out = tmp_path / "my-plans"
    with output_set(out, "--out", PLAN_FILES) as stage:
        (stage / "plan.json").write_text("old")
    before = tree(out)
    aside = tmp_path / f".simplan-tmp-{dead_pid()}-aside-k3j_x-my-plans"  # as _swap_in names it
    aside.mkdir()
    out.rename(aside / "old")  # killed here: the old set aside, the new one not yet in place
    remove_stale_temporaries(tmp_path)
    assert tree(out) == before and temporaries(tmp_path) == []


@pytest.mark.parametrize("foreign", ["notes.txt", "sub/"])
def test_a_directory_with_files_simplan_did_not_write_is_refused(
    tmp_path: Path, foreign: str
) -> None:
    out = tmp_path / "r"
    with output_set(out, "--out", REPORT_FILES) as stage:
        (stage / "index.md").write_text("mine")
    if foreign.endswith("/"):
        (out / foreign).mkdir()
    else:
        (out / foreign).write_text("the user's")
    before = tree(tmp_path)
    refused = pytest.raises(SimplanError, match=f"--out {out}: holds files simplan did not write")
    with refused, output_set(out, "--out", REPORT_FILES) as stage:
        (stage / "index.md").write_text("new")
    assert tree(tmp_path) == before


def test_a_set_written_before_markers_is_replaced_when_every_name_is_its_kind(
    tmp_path: Path,
) -> None:
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "index.md").write_text("old")
    (legacy / "timeline.svg").write_text("<svg/>")
    with output_set(legacy, "--out", REPORT_FILES) as stage:
        (stage / "index.md").write_text("new")
    assert set(os.listdir(legacy)) == {"index.md", MARKER}
    plans = tmp_path / "plans"
    plans.mkdir()
    (plans / "index.md").write_text("not a plan file")
    with pytest.raises(SimplanError, match=r"index\.md"):
        check_output_dir(plans, "--out", PLAN_FILES)


def test_a_set_of_another_kind_is_not_replaced(tmp_path: Path) -> None:
    plans = tmp_path / "plans"
    with output_set(plans, "--out", PLAN_FILES) as stage:
        (stage / "plans.json").write_text("{}")
    with pytest.raises(SimplanError, match=r"did not write \(plans\.json\)"):
        check_output_dir(plans, "--out", REPORT_FILES)
    (plans / "plan.json").write_text("{}")  # a plan file the set did not list
    with pytest.raises(SimplanError, match=r"did not write \(plan\.json\)"):
        check_output_dir(plans, "--out", PLAN_FILES)


def test_a_new_set_refuses_an_existing_directory(tmp_path: Path) -> None:
    out = tmp_path / "r"
    with output_set(out, "--out", REPORT_FILES) as stage:
        (stage / "index.md").write_text("first")
    refused = pytest.raises(SimplanError, match="exists already")
    with refused, output_set(out, "--out", REPORT_FILES, new=True) as stage:
        (stage / "index.md").write_text("second")
    assert (out / "index.md").read_text() == "first"


names = st.sets(st.sampled_from(["a.png", "b.svg", "c.pdf", "index.md"]), min_size=1)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(old=names, new=names, payload=st.binary(max_size=64))
def test_after_a_set_the_directory_holds_exactly_the_new_set(
    tmp_path: Path, old: set[str], new: set[str], payload: bytes
) -> None:
    out = tmp_path / "prop"
    for files, tag in ((old, b"old"), (new, b"new")):
        with output_set(out, "--out", REPORT_FILES) as stage:
            for name in files:
                (stage / name).write_bytes(tag + payload)
    files = tree(out)
    files.pop(MARKER)
    assert files == {name: b"new" + payload for name in new}


def test_new_directory_never_names_an_existing_one(tmp_path: Path) -> None:
    first = new_directory(tmp_path, "rep")
    first.mkdir()
    second = new_directory(tmp_path, "rep")
    assert second != first and not second.exists()
    assert second.name.startswith("rep-") and second.parent == tmp_path
    assert not any(tmp_path.glob("rep-*-*-*"))  # only `first` exists; nothing was created


# --- checks of output paths ------------------------------------------------------------------


def read_only_place() -> Path:
    """A directory nothing can be created in, whoever runs the test (root too)."""
    return Path("/proc/simplan-no-such-dir")


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda t: (t / "d").mkdir() or t / "d", "is a directory"),
        (lambda t: (t / "f").write_text("x") and t / "f" / "out.json", "is not a directory"),
        (lambda t: read_only_place() / "x.json", "choose another path"),
    ],
)
def test_bad_output_files_are_refused_and_nothing_is_written(
    tmp_path: Path, make, needle: str
) -> None:
    path = make(tmp_path)
    before = tree(tmp_path)
    with pytest.raises(SimplanError, match=needle) as err:
        check_output_file(path, "--trace")
    assert str(err.value).startswith(f"--trace {path}") and "\n" not in str(err.value)
    assert tree(tmp_path) == before and temporaries(tmp_path) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in a read-only directory")
def test_a_read_only_directory_is_refused(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(SimplanError, match="not writable"):
            check_output_file(ro / "x.json", "--out")
        with pytest.raises(SimplanError, match="not writable"):
            check_output_dir(ro / "plans", "--out", PLAN_FILES)
    finally:
        ro.chmod(0o755)


def test_output_directories_are_checked_without_creating_them(tmp_path: Path) -> None:
    assert check_output_dir(tmp_path / "a" / "b", "--out", PLAN_FILES) == tmp_path / "a" / "b"
    assert check_record_dir(tmp_path / "runs", "--runs-dir") == tmp_path / "runs"
    assert os.listdir(tmp_path) == []
    (tmp_path / "f").write_text("x")
    checks = (lambda p, f: check_output_dir(p, f, PLAN_FILES), check_record_dir)
    for check in checks:
        with pytest.raises(SimplanError, match="is a file, not a directory"):
            check(tmp_path / "f", "--out")
        with pytest.raises(SimplanError, match="choose another path"):
            check(tmp_path / "f" / "below", "--out")
        with pytest.raises(SimplanError, match="choose another path"):
            check(read_only_place() / "below", "--out")
    assert os.listdir(tmp_path) == ["f"]
