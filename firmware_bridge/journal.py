"""The bridge's journal: every command and its outcome, in SQLite (WAL).

A batch (all commands of one ``apply``, or one ``move``/``stow``) is written in full,
each command with its command id, *before* anything goes on the wire. Each command then
moves from ``pending`` to ``confirmed | rejected | unreachable | failed`` (``sent`` marks
the commands of a broadcast). After a crash, the same batch is found again by its key
and resumed: final commands are skipped; the command that may have been in flight
(delivery is sequential: the first one still pending) and any that ended unreachable or
failed are first checked against the controller's status, which echoes the last
applied command id, and only re-sent if the controller never applied them. The
controller also ignores a repeated command id, so even a journal that lost its last
transaction cannot make a command apply twice.

A resumed command is **not** re-sent, and ends ``superseded`` (final; the detail names
the command that supersedes it), when a *later* command of the same batch for the same
controller and of the same group (moves and stows set the pose; parameter sets the
parameters) is already confirmed in the journal, or is the one the controller's status
shows applied (``LAST_CMD_ID`` for a pose, ``PARAM_SET_ID`` for parameters). Re-sending
it would leave the heliostat on a stale setpoint, and the controller would take the
later command's re-send as a repeat of an id it already applied and not restore it.
``superseded`` counts as done (:data:`DONE_STATES`): nothing is left to send.

A command ``confirmed`` in an earlier run is not taken as confirmed now: a re-run reads
the controller back and reports it *replayed* only when the controller still holds its
result; otherwise the command gets a fresh id (:meth:`Journal.reissue`) and is sent again.

One :class:`Journal` may serve several threads at once (one delivery thread per bus,
:mod:`firmware_bridge.fleet`): it holds one connection, and every public method runs
under the journal's lock, so a batch's creation (ids allocated and rows written in one
transaction) or a reissue is never interleaved with another thread's statements.

``synchronous=NORMAL`` in WAL mode survives a killed process (the case the journal is
for) without an fsync per commit; after a power loss the last commits may be missing,
which the read-back above covers.
"""

from __future__ import annotations

import functools
import json
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

#: States a resume never re-sends.
FINAL_STATES = ("confirmed", "rejected", "superseded")
#: Final states with nothing left to do (a batch of only these succeeded).
DONE_STATES = ("confirmed", "superseded")
STATES = ("pending", "sent", "confirmed", "rejected", "superseded", "unreachable", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    batch_key TEXT PRIMARY KEY,
    created_utc TEXT NOT NULL,
    source TEXT NOT NULL,
    n_commands INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS commands (
    row_id INTEGER PRIMARY KEY,
    batch_key TEXT NOT NULL REFERENCES batches(batch_key),
    seq INTEGER NOT NULL,
    command_id INTEGER NOT NULL,
    heliostat TEXT NOT NULL,
    port TEXT NOT NULL,
    address INTEGER NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    exception_code INTEGER,
    detail TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    created_utc TEXT NOT NULL,
    updated_utc TEXT NOT NULL,
    UNIQUE (batch_key, seq)
);
CREATE INDEX IF NOT EXISTS commands_state ON commands(state);
"""


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One journaled command."""

    row_id: int
    batch_key: str
    seq: int
    command_id: int
    heliostat: str
    port: str
    address: int
    kind: str
    payload: dict
    state: str
    attempts: int
    exception_code: int | None
    detail: str
    #: The outcome's reason in a few words (``Outcome.reason``).
    reason: str = ""


def _locked(method: Callable) -> Callable:
    """Run a :class:`Journal` method under the journal's lock (re-entrant: a method may
    call another)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


class Journal:
    """SQLite journal of commands (``path=":memory:"`` for a throwaway one).

    Safe to share between threads (see the module docstring).

    Parameters
    ----------
    path : str or Path
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, timeout=10.0, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(commands)")}
            if "reason" not in columns:  # a journal written before outcomes had a reason
                self._db.execute("ALTER TABLE commands ADD COLUMN reason TEXT NOT NULL DEFAULT ''")
            if self._meta("next_command_id") is None:
                # A random start keeps ids from a fresh journal clear of those a controller
                # remembers from an old one (it refuses a reused id with other content).
                self._set_meta("next_command_id", str(1 + secrets.randbelow(2**30)))
        except sqlite3.Error as exc:
            from heliostat.store import database_problem

            raise OSError(
                "cannot open " + database_problem(self.path, exc, "bridge journal")
            ) from None

    @_locked
    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    @_locked
    def allocate_ids(self, n: int) -> list[int]:
        """Reserve ``n`` fresh command ids (within a transaction of the caller)."""
        start = int(self._meta("next_command_id") or 1)
        if start + n > 0xFFFF_FFFF:
            start = 1
        self._set_meta("next_command_id", str(start + n))
        return list(range(start, start + n))

    # ------------------------------------------------------------------ batches
    @_locked
    def has_batch(self, batch_key: str) -> bool:
        row = self._db.execute("SELECT 1 FROM batches WHERE batch_key = ?", (batch_key,))
        return row.fetchone() is not None

    @_locked
    def batch_created_utc(self, batch_key: str) -> str | None:
        """When a batch was first journaled (UTC, ISO 8601), None when it is not."""
        row = self._db.execute(
            "SELECT created_utc FROM batches WHERE batch_key = ?", (batch_key,)
        ).fetchone()
        return row[0] if row else None

    @_locked
    def create_batch(
        self,
        batch_key: str,
        source: str,
        rows: Iterable[tuple[str, str, int, str, dict, int | None]],
    ) -> list[JournalEntry]:
        """Journal a new batch; ``rows`` are (heliostat, port, address, kind, payload,
        shared_id) where rows with the same non-None ``shared_id`` share one command id
        (a broadcast). Returns the entries in order."""
        rows = list(rows)
        now = utc_now()
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            groups = {r[5] for r in rows if r[5] is not None}
            singles = sum(1 for r in rows if r[5] is None)
            ids = self.allocate_ids(singles + len(groups))
            shared = {g: ids.pop() for g in sorted(groups)}
            db.execute(
                "INSERT INTO batches(batch_key, created_utc, source, n_commands) VALUES (?,?,?,?)",
                (batch_key, now, source, len(rows)),
            )
            for seq, (hid, port, addr, kind, payload, group) in enumerate(rows):
                cid = shared[group] if group is not None else ids.pop(0)
                db.execute(
                    "INSERT INTO commands(batch_key, seq, command_id, heliostat, port, address,"
                    " kind, payload, state, created_utc, updated_utc)"
                    " VALUES (?,?,?,?,?,?,?,?,'pending',?,?)",
                    (batch_key, seq, cid, hid, port, addr, kind, json.dumps(payload), now, now),
                )
            db.execute("COMMIT")
        except BaseException:
            # SQLite has already rolled back after some errors (a full disk): a second
            # ROLLBACK would replace the cause with "no transaction is active".
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return self.entries(batch_key)

    @_locked
    def reissue(self, row_id: int, detail: str = "") -> JournalEntry:
        """Give a command a fresh command id and make it ``pending`` again.

        For a command confirmed in an earlier run whose result the controller no longer
        holds (replaced, reset to factory state, or moved by someone else): the old id
        is in the controller's history (or in nobody's), so only a new id is applied.
        """
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            (cid,) = self.allocate_ids(1)
            db.execute(
                "UPDATE commands SET command_id = ?, state = 'pending', attempts = 0,"
                " exception_code = NULL, detail = ?, reason = '', updated_utc = ?"
                " WHERE row_id = ?",
                (cid, detail, utc_now(), row_id),
            )
            db.execute("COMMIT")
        except BaseException:
            # SQLite has already rolled back after some errors (a full disk): a second
            # ROLLBACK would replace the cause with "no transaction is active".
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        row = db.execute("SELECT batch_key, seq FROM commands WHERE row_id = ?", (row_id,))
        key, seq = row.fetchone()
        return next(e for e in self.entries(key) if e.seq == seq)

    @_locked
    def entries(self, batch_key: str) -> list[JournalEntry]:
        cur = self._db.execute(
            "SELECT row_id, batch_key, seq, command_id, heliostat, port, address, kind,"
            " payload, state, attempts, exception_code, detail, reason FROM commands"
            " WHERE batch_key = ? ORDER BY seq",
            (batch_key,),
        )
        return [
            JournalEntry(*r[:8], json.loads(r[8]), *r[9:])  # type: ignore[arg-type]
            for r in cur.fetchall()
        ]

    @_locked
    def mark(
        self,
        row_id: int,
        state: str,
        attempts: int,
        exception_code: int | None = None,
        detail: str = "",
        reason: str = "",
    ) -> None:
        """Record a command's new state (one small commit)."""
        if state not in STATES:
            raise ValueError(f"journal state must be one of {STATES}, got {state!r}")
        self._db.execute(
            "UPDATE commands SET state = ?, attempts = ?, exception_code = ?, detail = ?,"
            " reason = ?, updated_utc = ? WHERE row_id = ?",
            (state, attempts, exception_code, detail, reason, utc_now(), row_id),
        )

    @_locked
    def counts(self, batch_key: str | None = None) -> dict[str, int]:
        """Commands per state (of one batch, or of the whole journal)."""
        sql = "SELECT state, COUNT(*) FROM commands"
        args: tuple = ()
        if batch_key is not None:
            sql += " WHERE batch_key = ?"
            args = (batch_key,)
        return dict(self._db.execute(sql + " GROUP BY state", args).fetchall())


def _wrap_file_errors() -> None:
    """An SQLite error of the journal's file becomes an OSError naming the journal."""
    from heliostat.store import wrap_file_errors

    public = [n for n, f in vars(Journal).items() if callable(f) and not n.startswith("_")]
    wrap_file_errors(Journal, OSError, "bridge journal", [n for n in public if n != "close"])


_wrap_file_errors()


def peek_counts(path: str | Path) -> dict[str, int]:
    """Commands per state of a journal another process may be writing, read without
    creating or locking anything ({} when the file is missing or not yet a journal)."""
    p = Path(path)
    if not p.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=5) as db:
            return dict(db.execute("SELECT state, COUNT(*) FROM commands GROUP BY state"))
    except sqlite3.Error:
        return {}
