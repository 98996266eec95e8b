"""Progress on stderr: a bar on a terminal, plain lines at a bounded rate elsewhere."""

from __future__ import annotations

import io

from simplan.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_plain_lines_wait_for_the_quiet_time_then_come_at_a_bounded_rate() -> None:
    clock, out = Clock(), io.StringIO()  # a StringIO is not a terminal
    with Progress(800, "estimating", stream=out, quiet_s=5, interval_s=10, clock=clock) as bar:
        for _ in range(800):  # one advance every 1/16 s: 50 s of work
            clock.now += 0.0625
            bar.advance()
    lines = _lines(out)
    assert "\r" not in out.getvalue()
    # first line at 5 s, then at 15, 25, 35, 45 s; and one at the end
    assert len(lines) == 6, lines
    assert lines[0] == "estimating: 80/800 after 5 s"
    assert lines[1] == "estimating: 240/800 after 15 s"
    assert lines[-1] == "estimating: 800/800 after 50 s done"


def test_short_work_writes_nothing_when_not_a_terminal() -> None:
    clock, out = Clock(), io.StringIO()
    with Progress(10, "simulating", stream=out, quiet_s=5, clock=clock) as bar:
        for _ in range(10):
            clock.now += 0.1
            bar.advance()
    assert out.getvalue() == ""


def test_a_forced_bar_redraws_in_place_and_silenced_writes_nothing() -> None:
    clock, out = Clock(), io.StringIO()
    with Progress(4, "profiling", stream=out, enabled=True, clock=clock) as bar:
        bar.advance(2)
    assert out.getvalue().count("\r") == 2 and out.getvalue().endswith("\n")
    assert "2/4" in out.getvalue()
    quiet = io.StringIO()
    with Progress(4, "profiling", stream=quiet, enabled=False, quiet_s=0, clock=clock) as bar:
        clock.now += 100
        bar.advance(4)
    assert quiet.getvalue() == ""
