"""Progress of long work on stderr: a bar on a terminal, plain lines at a bounded rate elsewhere.

On a terminal the bar is redrawn in place (carriage return). When stderr is a file or a pipe
(a CI log, `2> log`), plain lines are written instead: none during the first `quiet_s` seconds
(short work, and a one-line error, stay alone on stderr), then at most one every `interval_s`,
and a last line with the total when the work ends, if a line was written before.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

QUIET_S = 5.0  # plain lines only for work that has run this long
INTERVAL_S = 10.0  # and then at most one line per this many seconds


class Progress:
    """enabled: None for the stream's kind (a bar on a terminal, plain lines elsewhere); True
    forces the bar, False silences it."""

    def __init__(
        self,
        total: int,
        label: str,
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        quiet_s: float = QUIET_S,
        interval_s: float = INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = max(total, 1)
        self.label = label
        self.done = 0
        self.stream = stream or sys.stderr
        if enabled is None:
            self.mode = "bar" if _isatty(self.stream) else "lines"
        else:
            self.mode = "bar" if enabled else "off"
        self.quiet_s, self.interval_s, self._clock = quiet_s, interval_s, clock
        self._start = clock()
        self._last_line: float | None = None

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def advance(self, n: int = 1, note: str = "") -> None:
        self.done = min(self.done + n, self.total)
        if self.mode == "bar":
            self._bar(note)
        elif self.mode == "lines":
            now = self._clock()
            due = self._last_line is None or now - self._last_line >= self.interval_s
            if now - self._start >= self.quiet_s and due:
                self._line(now, note)

    def _bar(self, note: str) -> None:
        width = 30
        filled = int(width * self.done / self.total)
        elapsed = self._clock() - self._start
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(
            f"\r{self.label} [{bar}] {self.done}/{self.total} {elapsed:5.1f}s {note[:30]:<30}"
        )
        self.stream.flush()

    def _line(self, now: float, note: str) -> None:
        self._last_line = now
        tail = f" {note}" if note else ""
        self.stream.write(
            f"{self.label}: {self.done}/{self.total} after {now - self._start:.0f} s{tail}\n"
        )
        self.stream.flush()

    def __enter__(self) -> Progress:
        self.advance(0)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.mode == "bar":
            self.stream.write("\n")
            self.stream.flush()
        elif self.mode == "lines" and self._last_line is not None and exc_type is None:
            self._line(self._clock(), "done")


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream
        return False
