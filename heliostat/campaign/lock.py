"""One campaign per plant at a time: an exclusive lock beside the history file.

Two campaigns on one plant would drive the same heliostats and write the same history
side by side. :class:`PlantLock` takes ``fcntl.flock`` on ``<history db>.lock`` (the
kernel drops it when the process dies, so a crash leaves no stale lock) and writes the
holder's pid, host and start time into it, so that a second run is refused with a
message naming the run that holds it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

from heliostat.errors import InputError


class PlantLock:
    """Exclusive, non-blocking lock of a plant's history file.

    Parameters
    ----------
    history_db : str or Path
        The history database; the lock file is ``<history_db>.lock``.
    """

    def __init__(self, history_db: str | Path) -> None:
        self.db = Path(history_db)
        self.path = Path(str(history_db) + ".lock")
        self._fd: int | None = None

    def acquire(self) -> PlantLock:
        """Take the lock, or raise InputError naming the run that holds it."""
        if str(self.db) == ":memory:":  # a throw-away history: nothing to share
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(os.pread(fd, 4096, 0))
            os.close(fd)
            raise InputError(
                f"{self.db}: another campaign is running on this plant ({holder}; lock file "
                f"{self.path}); refusing to run two at once"
            ) from None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "start_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Let go of the lock (the file stays: removing it would race a new holder)."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> PlantLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _describe(raw: bytes) -> str:
    """The holder as 'pid N on host H since T' (or what can be said of it)."""
    try:
        d = json.loads(raw.decode() or "{}")
        return f"pid {d['pid']} on host {d['host']} since {d['start_utc']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"
