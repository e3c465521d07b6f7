"""Progress of long jobs for a person: counts, rate and time left, on stderr.

The numeric code reports progress through a plain callback, ``progress(done, total)``;
this module is the edge that shows it. :class:`Progress` is such a callback: a job that
ends within ``show_after_s`` (2 s) prints nothing; a longer one, on a terminal, redraws
one line in place (at most every ``min_interval_s``) and in a log (not a terminal) writes
a line every ``log_interval_s`` and a final one, so a job that takes minutes is never
silent. Its ``first_note`` says why the first item is slow when it is (the spot
detector's kernels, compiled on first use).
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

Clock = Callable[[], float]


def format_duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min`` (whole seconds)."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def format_progress(
    label: str,
    done: int,
    total: int,
    elapsed_s: float,
    width: int = 24,
    eta_s: float | None = None,
) -> str:
    """One progress line: label, bar, counts, percentage, elapsed time and time left.

    The time left is ``eta_s`` when given (NaN: unknown, ``ETA …``), else it assumes the
    remaining items take as long as the done ones on average:
    ``elapsed_s · (total − done) / done``; unknown before the first item.

    Examples
    --------
    >>> format_progress("detect", 100, 400, 30.0, width=8)
    'detect     [##------] 100/400   25%  30 s, ETA 1 min 30 s'
    """
    total = max(total, 0)
    frac = min(1.0, done / total) if total else 1.0
    filled = int(width * frac)
    bar = "#" * filled + "-" * (width - filled)
    n = len(str(total))
    head = f"{label:<10} [{bar}] {done:>{n}}/{total}  {100 * frac:3.0f}%  "
    if done >= total:
        return head + f"{format_duration(elapsed_s)}, done"
    if eta_s is None and done > 0:
        eta_s = elapsed_s * (total - done) / done
    if eta_s is None or math.isnan(eta_s):
        return head + f"{format_duration(elapsed_s)}, ETA …"
    return head + f"{format_duration(elapsed_s)}, ETA {format_duration(eta_s)}"


class Progress:
    """A ``progress(done, total)`` callback that shows counts, percentage and time left.

    Parameters
    ----------
    label : str
        What is counted (``"detect"``, ``"campaign"``, ``"fits"``).
    stream : text stream, optional
        Default ``sys.stderr``.
    min_interval_s : float
        Least time between two redraws on a terminal. [s]
    log_interval_s : float
        Time between two lines when the stream is not a terminal. [s]
    show_after_s : float
        Nothing is shown before this much time has passed: short jobs stay quiet. [s]
    quiet : bool
        Show nothing.
    clock : callable
        Monotonic time source (injectable for tests). [s]
    first_note : str
        Printed when the first item has not come after ``first_note_after_s`` (say why
        it is slow: the spot detector's kernels compiled on first use). Use the object as
        a context manager so that the timer stops with the job.
    first_note_after_s : float
        [s]
    """

    def __init__(
        self,
        label: str,
        stream: TextIO | None = None,
        min_interval_s: float = 0.2,
        log_interval_s: float = 10.0,
        show_after_s: float = 2.0,
        quiet: bool = False,
        clock: Clock = time.monotonic,
        first_note: str = "",
        first_note_after_s: float = 2.0,
    ) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.min_interval_s = min_interval_s
        self.log_interval_s = log_interval_s
        self.quiet = quiet
        self.clock = clock
        self.t0 = clock()
        # the first line is due at t0 + show_after_s
        wait = min_interval_s if self.tty else log_interval_s
        self._last = self.t0 + show_after_s - wait
        self._shown = False
        self._first: tuple[int, float] | None = None  # (done, time) at the first report
        self._finished = False
        self._lock = threading.Lock()
        self._noted = False
        self._timer: threading.Timer | None = None
        if first_note and not quiet:
            self._timer = threading.Timer(first_note_after_s, self._note, (first_note,))
            self._timer.daemon = True
            self._timer.start()

    def _note(self, text: str) -> None:
        with self._lock:
            end = "\n" if self.tty and self._shown else ""
            print(end + text, file=self.stream, flush=True)
            self._noted = True

    def _eta(self, done: int, total: int, now: float) -> float:
        """Time left from the rate since the first report: the first item often carries
        one-time work (a compile, a flat field, opening a device) that the others do not.
        Unknown (NaN) until a second report. [s]"""
        if self._first is None or done <= self._first[0] or done >= total:
            return math.nan
        d0, t1 = self._first
        return (now - t1) / (done - d0) * (total - done)

    def close(self) -> None:
        """Stop the first-item timer (the job ended, maybe early)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __call__(self, done: int, total: int) -> None:
        if self._timer is not None and done > 0:
            self.close()
            with self._lock:
                if self._noted:
                    took = format_duration(self.clock() - self.t0)
                    print(f"  ... first item done after {took}", file=self.stream, flush=True)
        if self.quiet or self._finished or total <= 0:
            return
        now = self.clock()
        if self._first is None and done > 0:
            self._first = (done, now)
        last_item = done >= total
        wait = self.min_interval_s if self.tty else self.log_interval_s
        if now - self._last < wait and not (last_item and self._shown):
            return
        self._last = now
        self._shown = True
        line = format_progress(
            self.label, done, total, now - self.t0, eta_s=self._eta(done, total, now)
        )
        if self.tty:
            print("\r" + line, end="\n" if last_item else "", file=self.stream, flush=True)
        else:
            print(line, file=self.stream, flush=True)
        self._finished = last_item
