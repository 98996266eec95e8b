"""The one environment-metadata builder that every stored measurement uses."""

from __future__ import annotations

import datetime as dt
import os
import platform

import torch

from simplan.environment import environment


def test_environment_says_where_and_with_what_and_keeps_the_callers_keys() -> None:
    meta = environment(threads_per_rank=1, cpu_count=-1)
    assert meta["torch_version"] == torch.__version__
    assert meta["python"] == platform.python_version() and meta["host"] == platform.node()
    assert meta["threads_per_rank"] == 1 and meta["cpu_count"] == -1  # the caller's key wins
    assert environment()["cpu_count"] == os.cpu_count()
    date = dt.datetime.fromisoformat(meta["date"])
    assert date.utcoffset() == dt.timedelta(0)
    assert abs(dt.datetime.now(dt.UTC) - date) < dt.timedelta(minutes=5)
    assert len(meta["load_average"]) == 3
