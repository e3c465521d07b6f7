"""Delivery to every bus at once: one worker thread per bus, one shared journal.

A plant's controllers sit on many RS-485 buses, and one bus is busy with one exchange at
a time. Delivering bus after bus makes an upload last as long as all buses together;
:func:`deliver_buses` drives them in parallel, so it lasts about as long as its busiest
bus. Each bus gets its own thread, its own :class:`~firmware_bridge.delivery.Bridge`
(and link) and its own batch in the one :class:`~firmware_bridge.journal.Journal`, which
serialises the threads' statements under its lock. The serial I/O and SQLite release the
interpreter lock, so the threads wait on their lines, not on each other.

What does not change: within a bus, delivery is sequential (the journal's resume rule
"only the first pending command can have been on the wire" holds per batch), and every
command is journaled before it is sent. An interrupted upload (killed, Ctrl-C, or
stopped through ``stop``) is resumed by running the same jobs again: each bus finds its
batch in the journal and continues from there.

A failure on one bus (its port cannot be opened or fails for good, its journal batch
holds other commands, ...) ends that bus's work and is reported in its
:class:`BusResult`; the other buses carry on.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from firmware_bridge.delivery import ActuatorCommand, Bridge, Outcome
from firmware_bridge.errors import ActuatorError

#: ``connect()`` of a :class:`BusJob`: a context manager giving an open bridge.
Connect = Callable[[], contextlib.AbstractContextManager[Bridge]]
#: ``progress(bus, outcome, i, n)``: the ``i``-th of the ``n`` commands of a bus ended.
Progress = Callable[[str, Outcome, int, int], None]


@dataclass(frozen=True, slots=True)
class BusJob:
    """The commands for one bus.

    Attributes
    ----------
    bus : str
        The bus's name (for reports).
    port : str
        Its serial port (for reports when the port cannot be opened).
    batch_key : str
        The batch's key in the journal (one batch per bus).
    source : str
        What the batch is (journaled with it).
    commands : tuple of ActuatorCommand
        In the order they are sent.
    connect : callable
        ``connect()`` returns a context manager giving an open :class:`Bridge` whose
        journal is the shared one. Called in the bus's worker thread, so a port that
        does not open fails only that bus; leaving the context closes what it opened
        (``contextlib.nullcontext(bridge)`` for a bridge the caller keeps open).
    broadcast_stow : bool
    bus_members : mapping heliostat id -> address, optional
        Passed to :meth:`Bridge.run` (a broadcast stow checks it).
    """

    bus: str
    port: str
    batch_key: str
    source: str
    commands: tuple[ActuatorCommand, ...]
    connect: Connect
    broadcast_stow: bool = False
    bus_members: Mapping[str, int] | None = None


@dataclass(frozen=True, slots=True)
class BusResult:
    """How one bus's delivery ended.

    Attributes
    ----------
    bus, port : str
    planned : int
        Commands of the job.
    outcomes : tuple of Outcome
        One per command that ended (all of them unless ``error``), in the job's order.
    error : str
        Why the bus stopped before every command ended ('' when it did not): a port
        that failed, a journal batch with other commands, ``"stopped"`` when asked to.
    elapsed_s : float
        Wall time of the bus's worker, port opening included. [s]
    health : dict
        The bridge's per-controller health (address -> dict).
    """

    bus: str
    port: str
    planned: int
    outcomes: tuple[Outcome, ...]
    error: str = ""
    elapsed_s: float = 0.0
    health: dict = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        """Outcomes per state."""
        out: dict[str, int] = {}
        for o in self.outcomes:
            out[o.state] = out.get(o.state, 0) + 1
        return out

    @property
    def missing(self) -> int:
        """Planned commands without an outcome (the bus stopped early)."""
        return self.planned - len(self.outcomes)

    def to_dict(self) -> dict:
        """Summary without the outcomes (those are reported per command)."""
        return {
            "bus": self.bus,
            "port": self.port,
            "planned": self.planned,
            "counts": self.counts,
            "missing": self.missing,
            "error": self.error,
            "elapsed_s": round(self.elapsed_s, 3),
        }


class _Stopped(Exception):
    """Raised inside a worker (from its progress hook) when the caller asked to stop."""


def _run_bus(
    job: BusJob,
    progress: Progress | None,
    progress_lock: threading.Lock,
    stop: threading.Event,
) -> BusResult:
    """One bus's delivery; never raises for the bus's own failures."""
    t0 = time.monotonic()
    done: list[Outcome] = []
    error = ""
    health: dict = {}

    def hook(o: Outcome, i: int, n: int) -> None:
        done.append(o)
        if progress is not None:
            with progress_lock:
                progress(job.bus, o, i, n)
        if stop.is_set() and i < n:
            raise _Stopped

    port = job.port
    try:
        if stop.is_set():
            raise _Stopped
        with job.connect() as bridge:
            port = getattr(bridge.link, "port", job.port)
            try:
                outcomes = bridge.run(
                    job.batch_key,
                    job.source,
                    job.commands,
                    broadcast_stow=job.broadcast_stow,
                    progress=hook,
                    bus_members=job.bus_members,
                    bus_name=job.bus,
                )
                done = list(outcomes)
            finally:
                health = {a: h.to_dict() for a, h in bridge.health.items()}
    except _Stopped:
        error = "stopped"
    except (ActuatorError, OSError) as exc:
        # ActuatorError: a port that failed for good, a refused broadcast, a journal batch
        # with other commands; OSError: the journal's file. The bus stops; others go on.
        error = str(exc) or type(exc).__name__
    return BusResult(
        job.bus, port, len(job.commands), tuple(done), error, time.monotonic() - t0, health
    )


def deliver_buses(
    jobs: Sequence[BusJob],
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> list[BusResult]:
    """Deliver every bus's commands at once, one worker thread per bus.

    Parameters
    ----------
    jobs : sequence of BusJob
        One per bus (distinct buses: two jobs on one line would talk over each other).
    progress : callable, optional
        ``progress(bus, outcome, i, n)`` after each command of each bus; calls are
        serialised (never two at once), so it need not be thread-safe.
    stop : threading.Event, optional
        When set, each bus stops after the command in progress (its result then has
        ``error == "stopped"``); a re-run of the same jobs resumes every bus.

    Returns
    -------
    list of BusResult
        In the order of ``jobs``.

    Raises
    ------
    ValueError
        Two jobs for one bus or one port.
    KeyboardInterrupt
        Re-raised after every worker has stopped (each after its command in progress),
        so that the journal is left resumable.

    Notes
    -----
    A single job runs in the calling thread. An exception that is not a bus failure
    (:class:`~firmware_bridge.errors.ActuatorError` or ``OSError``) is a bug: it is
    re-raised after the other buses have finished.
    """
    for attr in ("bus", "port"):
        seen = [getattr(j, attr) for j in jobs]
        dup = sorted({s for s in seen if seen.count(s) > 1})
        if dup:
            raise ValueError(f"two delivery jobs for {attr} {dup[0]!r}; one per {attr}")
    stop = stop if stop is not None else threading.Event()
    lock = threading.Lock()
    if len(jobs) == 1:
        return [_run_bus(jobs[0], progress, lock, stop)]
    results: list[BusResult | None] = [None] * len(jobs)
    crashes: list[BaseException | None] = [None] * len(jobs)

    def work(k: int) -> None:
        try:
            results[k] = _run_bus(jobs[k], progress, lock, stop)
        except BaseException as exc:  # noqa: BLE001 - a bug: handed to the calling thread
            crashes[k] = exc

    threads = [
        threading.Thread(target=work, args=(k,), name=f"deliver {j.bus}", daemon=True)
        for k, j in enumerate(jobs)
    ]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except KeyboardInterrupt:
        stop.set()  # every bus ends its command in progress, journaled, then stops
        for t in threads:
            t.join()
        raise
    for exc in crashes:
        if exc is not None:
            raise exc
    return [r for r in results if r is not None]
