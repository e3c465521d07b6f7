"""Progress lines: counts, percentage, elapsed time and time left; quiet for short jobs."""

from __future__ import annotations

import io

import pytest

from heliostat.progress import Progress, format_duration, format_progress


class FakeClock:
    def __init__(self) -> None:
        self.t_s = 100.0

    def __call__(self) -> float:
        return self.t_s


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    "seconds, text",
    [(0.4, "0 s"), (59.4, "59 s"), (61, "1 min 01 s"), (3599, "59 min 59 s"), (3720, "1 h 02 min")],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_format_progress_eta_is_the_mean_rate_so_far():
    # 100 of 400 in 30 s: 300 left at 0.3 s each = 90 s.
    assert format_progress("detect", 100, 400, 30.0, width=8) == (
        "detect     [##------] 100/400   25%  30 s, ETA 1 min 30 s"
    )
    assert format_progress("fits", 0, 5, 3.0, width=4).endswith("0/5    0%  3 s, ETA …")
    assert format_progress("fits", 5, 5, 125.0, width=4).endswith("5/5  100%  2 min 05 s, done")


def test_the_eta_leaves_out_the_first_items_one_time_work():
    clock, out = FakeClock(), io.StringIO()
    p = Progress("detect", stream=out, clock=clock, log_interval_s=1.0)
    clock.t_s += 30.0  # the first frame: a compile, a flat field
    p(1, 101)
    for i in range(2, 12):
        clock.t_s += 0.5
        p(i, 101)
    last = out.getvalue().splitlines()[-1]
    # 10 frames in 5 s since the first: 90 left at 0.5 s = 45 s (not 90 x 35 s / 11)
    assert last.endswith("11/101   11%  35 s, ETA 45 s")


def test_a_short_job_prints_nothing():
    clock, out = FakeClock(), io.StringIO()
    p = Progress("fits", stream=out, clock=clock)
    for i in range(1, 11):
        clock.t_s += 0.1  # ten items in 1 s
        p(i, 10)
    assert out.getvalue() == ""


def test_a_long_job_in_a_log_writes_a_line_every_interval_and_the_last():
    clock, out = FakeClock(), io.StringIO()
    p = Progress("campaign", stream=out, clock=clock, log_interval_s=10.0)
    for i in range(1, 31):
        clock.t_s += 1.0  # 30 items at 1 s each
        p(i, 30)
    lines = out.getvalue().splitlines()
    # first line once 2 s have passed, then every 10 s, then the final one
    assert [ln.split()[2] for ln in lines] == ["2/30", "12/30", "22/30", "30/30"]
    assert lines[0].endswith("2 s, ETA 28 s") and lines[-1].endswith("30 s, done")


def test_on_a_terminal_the_line_is_redrawn_in_place():
    clock, out = FakeClock(), Tty()
    p = Progress("detect", stream=out, clock=clock, min_interval_s=0.5)
    for i in range(1, 9):
        clock.t_s += 0.5
        p(i, 8)
    text = out.getvalue()
    # drawn from 2 s on (items 4..8), each over the last
    assert text.count("\r") == 5 and text.endswith("8/8  100%  4 s, done\n")
    assert "\n" not in text[:-1]


def test_the_first_note_says_why_the_first_item_is_slow():
    clock, out = FakeClock(), io.StringIO()
    p = Progress("detect", stream=out, clock=clock, first_note="compiling", first_note_after_s=0)
    p._timer.join()  # the note's timer has fired (the first item is "late")
    clock.t_s += 35.0
    p(1, 2)
    clock.t_s += 0.1
    p(2, 2)
    assert out.getvalue().splitlines() == [
        "compiling",
        "  ... first item done after 35 s",
        # the first item's time is no rate for the others: no ETA from it alone
        "detect     [############------------] 1/2   50%  35 s, ETA …",
        "detect     [########################] 2/2  100%  35 s, done",
    ]


def test_no_note_when_the_first_item_comes_in_time():
    out = io.StringIO()
    with Progress("detect", stream=out, first_note="compiling", first_note_after_s=60) as p:
        p(1, 1)
    assert p._timer is None and out.getvalue() == ""
