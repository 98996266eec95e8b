"""Every file simplan writes goes through here: atomic single files, atomic sets of files in a
directory, and checks of output paths before any work starts.

- A single file (`write_bytes_atomic`, `write_text_atomic`, `write_json_atomic`, `write_with`) is
  written to a temporary file beside it and renamed over it: a reader sees the old file or the
  new one, never a part.
- A set of files written together (`output_set`: plan.json with plans.json, a report's figures
  with its index.md) is built in a temporary sibling directory and swapped in whole: on Linux
  with renameat2(RENAME_EXCHANGE), elsewhere by renaming the old directory aside first (if the
  writer is killed before the new one is in place, the next writer puts the old one back). The
  directory then holds the complete previous set or the complete new set. Its marker file
  (MARKER) lists the files of the set.
- A directory that holds files simplan did not write is never replaced: the write is refused
  with a one-line error (name a new or empty directory instead). Without a marker (sets written
  before markers existed) a directory counts as simplan's when every entry is a name the caller
  says its kind of set writes.
- Temporaries are named TEMP_PREFIX<pid>-...: readers ignore them, and the next writer in the
  same directory removes those whose process is gone (one killed, even by SIGKILL).

For tests, SIMPLAN_KILL_AT_WRITE_STEP=N kills the process (SIGKILL) at the N-th step of any
write (1-based; each file created, written, renamed, and each step of a set's swap), so that a
test can stop a writer at every point deterministically.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

from simplan.errors import SimplanError

TEMP_PREFIX = ".simplan-tmp-"
MARKER = ".simplan-set.json"
KILL_ENV = "SIMPLAN_KILL_AT_WRITE_STEP"

_steps = 0


def _step() -> None:
    """A point where a write can be interrupted; the test hook kills the process here."""
    global _steps
    wanted = os.environ.get(KILL_ENV)
    if not wanted:
        return
    _steps += 1
    if str(_steps) == wanted.strip():
        os.kill(os.getpid(), signal.SIGKILL)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _file_mode() -> int:
    return 0o666 & ~_umask()


def is_temporary(name: str) -> bool:
    """True for the name of a temporary file or directory of a writer (readers skip these)."""
    return name.startswith(TEMP_PREFIX)


def _owner_alive(name: str) -> bool:
    pid_text = name[len(TEMP_PREFIX) :].split("-", 1)[0]
    if not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Remove the temporaries in directory whose writing process is gone; returns them."""
    removed: list[Path] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if not is_temporary(name) or _owner_alive(name):
            continue
        path = Path(directory) / name
        if _put_back(path):
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            pass  # another writer removed it first
        removed.append(path)
    return removed


ASIDE = "aside-"  # a set moved aside while its successor is put in place (no renameat2)


def _put_back(path: Path) -> bool:
    """A set moved aside by a writer killed before its successor was in place goes back to its
    own name (it is the complete previous set); True if it did."""
    tail = path.name[len(TEMP_PREFIX) :].split("-", 1)[-1]
    if not tail.startswith(ASIDE) or not (path / "old").is_dir():
        return False
    target = path.parent / tail[len(ASIDE) :].split("-", 1)[-1]
    if target.exists():
        return False
    os.rename(path / "old", target)
    path.rmdir()
    return True


def _temp_name() -> str:
    return f"{TEMP_PREFIX}{os.getpid()}-"


def write_with(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Atomically create or replace path with what write(tmp_path) writes to a temporary path
    beside it (for writers that want a file name, such as matplotlib's savefig)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target.parent)
    fd, tmp_name = tempfile.mkstemp(prefix=_temp_name(), dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _step()
        write(tmp)
        _step()
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, target)
        _step()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def write_bytes_atomic(data: bytes, path: str | Path) -> Path:
    """Atomically create or replace path with data: a reader sees the old file or the new one."""
    return write_with(path, lambda tmp: tmp.write_bytes(data))


def write_text_atomic(text: str, path: str | Path) -> Path:
    """Atomically create or replace path with text (UTF-8)."""
    return write_bytes_atomic(text.encode("utf-8"), path)


def json_text(data: Any) -> str:
    return json.dumps(data, indent=1, sort_keys=False) + "\n"


def write_json_atomic(data: Any, path: str | Path) -> Path:
    """Atomically create or replace path with data as JSON."""
    return write_text_atomic(json_text(data), path)


# --- checks of output paths, before any work ---------------------------------------------------


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        if p.is_symlink():  # a dangling link: its target's place is not ours to create
            break
        p = p.parent
    return p


def _check_creatable(path: Path, flag: str, what: str) -> None:
    """The missing path can be created: its nearest existing ancestor is a writable directory."""
    base = _nearest_existing(path.parent)
    if not base.is_dir():
        raise SimplanError(
            f"{flag} {path}: {base} is not a directory, so the {what} cannot be created there; "
            f"choose another path"
        )
    _check_writable_dir(base, flag, path)


def _check_writable_dir(directory: Path, flag: str, path: Path) -> None:
    if not os.access(directory, os.W_OK | os.X_OK):
        raise SimplanError(f"{flag} {path}: {directory} is not writable; choose another path")
    try:  # os.access says yes to root even on a read-only file system: try it
        fd, probe = tempfile.mkstemp(prefix=_temp_name(), dir=directory)
    except OSError as exc:
        reason = exc.strerror or "not writable"
        raise SimplanError(f"{flag} {path}: cannot write in {directory} ({reason.lower()}); "
                           f"choose another path") from None  # fmt: skip
    os.close(fd)
    os.unlink(probe)


def check_output_file(path: str | Path, flag: str) -> Path:
    """Refuse (SimplanError) an output file path that cannot be written: a directory, a place
    under a file, a read-only place. Writes nothing; returns the path."""
    target = Path(path)
    if str(path).endswith(os.sep) or target.is_dir():
        raise SimplanError(f"{flag} {path}: is a directory; name a file")
    if target.exists() and not target.is_file():
        raise SimplanError(f"{flag} {path}: is not a regular file; name a file")
    if target.parent.is_dir():
        _check_writable_dir(target.parent, flag, target)
    else:
        _check_creatable(target, flag, "file")
    return target


def check_record_dir(path: str | Path, flag: str) -> Path:
    """Refuse (SimplanError) a directory that files are to be added to (validation records)
    when it cannot be: a file, a read-only place. Writes nothing; returns the path."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise SimplanError(f"{flag} {path}: is a file, not a directory; name a directory")
    if target.is_dir():
        _check_writable_dir(target, flag, target)
    else:
        _check_creatable(target, flag, "directory")
    return target


def owned_names(
    names: Collection[str] = (), suffixes: Collection[str] = ()
) -> Callable[[str], bool]:
    """`owns` for a kind of set: the names (or name suffixes) it writes."""
    return lambda name: name in names or any(name.endswith(s) for s in suffixes)


PLAN_FILES = owned_names(names=("plan.json", "plans.json"))
REPORT_FILES = owned_names(names=("index.md",), suffixes=(".png", ".svg", ".pdf"))


def _listed(directory: Path) -> frozenset[str] | None:
    """The files the marker of directory lists, or None without a (readable) marker."""
    try:
        doc = json.loads((directory / MARKER).read_text(encoding="utf-8"))
        files = doc["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return frozenset(str(f) for f in files) if isinstance(files, list) else None


def _foreign(directory: Path, owns: Callable[[str], bool]) -> list[str]:
    """Entries of an existing directory that this kind of set did not write: all but the
    marker, temporaries, and files of the kind (`owns`) that the marker lists (when there is
    one). A set of another kind (a plan set where a report goes) counts as foreign."""
    listed = _listed(directory)

    def ours(name: str) -> bool:
        if name == MARKER or is_temporary(name):
            return True
        if (directory / name).is_dir():
            return False
        return owns(name) and (listed is None or name in listed)

    return [n for n in sorted(os.listdir(directory)) if not ours(n)]


def _refuse_foreign(directory: Path, flag: str, foreign: list[str]) -> None:
    shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
    raise SimplanError(
        f"{flag} {directory}: holds files simplan did not write ({shown}); name a new or empty "
        f"directory (simplan replaces only a directory of its own output)"
    )


def check_output_dir(path: str | Path, flag: str, owns: Callable[[str], bool]) -> Path:
    """Refuse (SimplanError) an output directory that cannot be written as a set: a file, a
    read-only place, a directory holding files simplan did not write (see module doc; `owns`
    says which names the caller's kind of set writes). Writes nothing; returns the path."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise SimplanError(f"{flag} {path}: is a file, not a directory; name a directory")
    if not target.exists():
        _check_creatable(target, flag, "directory")
        return target
    real = target.resolve()
    if real == real.parent or real == Path.cwd().resolve():
        raise SimplanError(f"{flag} {path}: name a directory of its own for the output")
    foreign = _foreign(real, owns)
    if foreign:
        _refuse_foreign(target, flag, foreign)
    _check_writable_dir(real.parent, flag, target)
    return target


def _refuse_existing(target: Path, flag: str) -> None:
    if target.exists() and not (target.is_dir() and not os.listdir(target)):
        raise SimplanError(f"{flag} {target}: exists already; name a new directory")


def new_directory(base: str | Path, name: str) -> Path:
    """A directory base/name-<UTC date-time> that does not exist yet (-2, -3, ... appended when
    one of that second exists): where generated output goes unless the user names a place."""
    import datetime

    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    first = Path(base) / f"{name}-{stamp}"
    candidate, n = first, 1
    while candidate.exists() or candidate.is_symlink():
        n += 1
        candidate = first.with_name(f"{first.name}-{n}")
    return candidate


def check_distinct_dirs(first: tuple[str, str | None], second: tuple[str, str | None]) -> None:
    """Refuse two output directories (flag, path) that are the same or one inside the other: each
    set replaces its directory as a whole."""
    (flag_a, a), (flag_b, b) = first, second
    if not a or not b:
        return
    pa, pb = Path(a).absolute().resolve(), Path(b).absolute().resolve()
    if pa == pb or pa in pb.parents or pb in pa.parents:
        raise SimplanError(
            f"{flag_b} {b} and {flag_a} {a} overlap; give each its own directory "
            f"(each is replaced as a whole)"
        )


# --- sets of files ------------------------------------------------------------------------------

AT_FDCWD = -100
RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
    renameat2.argtypes += [ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    if renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_in(stage: Path, target: Path, flag: str, *, new: bool) -> None:
    """Put the staged directory at target: the old set (if any) is replaced whole; with new,
    a directory that appeared there meanwhile is refused instead."""
    if not target.exists() or (target.is_dir() and not os.listdir(target)):
        try:
            os.rename(stage, target)  # onto nothing or an empty directory: atomic
            _step()
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    if new:
        _refuse_existing(target, flag)
    if _exchange(stage, target):
        _step()
        shutil.rmtree(stage)  # now the old set, under the temporary name
        _step()
        return
    aside = Path(tempfile.mkdtemp(prefix=f"{_temp_name()}{ASIDE}", suffix=f"-{target.name}",
                                  dir=target.parent))  # fmt: skip
    os.rename(target, aside / "old")
    _step()
    os.rename(stage, target)
    _step()
    shutil.rmtree(aside)
    _step()


@contextlib.contextmanager
def output_set(
    path: str | Path,
    flag: str,
    owns: Callable[[str], bool],
    *,
    new: bool = False,
) -> Iterator[Path]:
    """Build a set of files in a temporary directory (yielded) and, when the block ends without
    an exception, put it at path as a whole, replacing a previous set there; on an exception
    nothing changes. A directory holding files simplan did not write is refused; with new=True
    any existing directory is (the set goes to a new folder)."""
    target = Path(path)
    if target.is_symlink():
        target = target.resolve()
    if new:
        _refuse_existing(target, flag)
    check_output_dir(target, flag, owns)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target.parent)
    stage = Path(tempfile.mkdtemp(prefix=_temp_name(), dir=target.parent))
    try:
        os.chmod(stage, 0o777 & ~_umask())
        _step()
        yield stage
        files = sorted(n for n in os.listdir(stage) if not is_temporary(n))
        write_json_atomic({"schema": {"kind": "output-set", "version": 1}, "files": files},
                          stage / MARKER)  # fmt: skip
        if new:
            _refuse_existing(target, flag)
        if target.exists():
            foreign = _foreign(target, owns)
            if foreign:  # appeared while the set was being built
                _refuse_foreign(target, flag, foreign)
        _swap_in(stage, target, flag, new=new)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
