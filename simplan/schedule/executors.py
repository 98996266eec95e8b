"""Where a fan-out of independent tasks runs (`--executor`):

- `local`: processes of this machine, one per CPU (concurrent.futures.ProcessPoolExecutor);
- `local:N`: N local processes;
- `inline`: in this process, one after another (debugging, tiny tables);
- `dask://HOST:PORT`: the workers of a running Dask distributed scheduler (install
  `simplan[schedule]`; the workers need simplan importable and the same models and files).

Each is a concurrent.futures.Executor; `open_executor(name)` is a context manager that shuts it
down (local processes end; a Dask cluster is left running, only the connection closes).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import Any

from simplan.errors import SimplanError

EXECUTOR_HELP = (
    "where the speed table is computed: local (processes, one per CPU; the default), local:N "
    "(N processes), inline (this process), or dask://HOST:PORT (a running Dask scheduler; "
    "needs simplan[schedule])"
)
DASK_CONNECT_TIMEOUT_S = 10.0
_LOCAL = re.compile(r"local(?::(\d+))?")
_DASK = re.compile(r"dask://[^\s:/]+:\d+")


class InlineExecutor(Executor):
    """Runs each task as it is submitted, in this process."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the caller through the future
            future.set_exception(exc)
        return future


def check_executor(name: str) -> str:
    """The executor name if it is one of the forms above, else a one-line SimplanError."""
    local = _LOCAL.fullmatch(name)
    if name == "inline" or _DASK.fullmatch(name):
        return name
    if local and (local.group(1) is None or int(local.group(1)) >= 1):
        return name
    raise SimplanError(
        f"--executor {name!r}: use local, local:N (N >= 1), inline or dask://HOST:PORT"
    )


def local_workers(name: str) -> int:
    """Processes of `local` / `local:N`."""
    match = _LOCAL.fullmatch(name)
    if match and match.group(1):
        return int(match.group(1))
    return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def open_executor(name: str, tasks: int | None = None) -> Iterator[Executor]:
    """The executor `name` names, shut down on leaving; `tasks` caps local processes."""
    check_executor(name)
    if name == "inline":
        yield InlineExecutor()
        return
    if name.startswith("dask://"):
        with _dask_executor(name[len("dask://") :]) as executor:
            yield executor
        return
    workers = local_workers(name)
    if tasks is not None:
        workers = max(1, min(workers, tasks))
    import multiprocessing

    # spawn: a fresh interpreter per worker, safe beside threads of the parent
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


@contextlib.contextmanager
def _dask_executor(address: str) -> Iterator[Executor]:
    try:
        from distributed import Client
    except ImportError:
        raise SimplanError(
            "--executor dask://... needs Dask distributed: pip install 'simplan[schedule]'"
        ) from None
    try:
        client = Client(f"tcp://{address}", timeout=DASK_CONNECT_TIMEOUT_S)
    except OSError as exc:
        raise SimplanError(
            f"--executor dask://{address}: no Dask scheduler answered "
            f"({' '.join(str(exc).split())[:160]}); start one (`dask scheduler`) or fix the "
            f"address"
        ) from None
    try:
        yield client.get_executor(pure=False)
    finally:
        client.close()
