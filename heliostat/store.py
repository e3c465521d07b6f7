"""The plant's history database: one SQLite file (WAL journal) shared by all stages.

Each part of the system owns its tables and a schema version, registered through
:func:`ensure_schema`; a file written by a newer version is refused rather than
misread. Connections use WAL so a reader (``heliostat history``) never blocks the
campaign writing observations, and ``synchronous=FULL`` so a committed row survives a
power cut — the bridge's journal depends on that.
"""

from __future__ import annotations

import functools
import os
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path

from heliostat.errors import InputError

_META_DDL = """
CREATE TABLE IF NOT EXISTS schema_versions (
    component TEXT PRIMARY KEY,
    version INTEGER NOT NULL
)
"""


def open_db(path: str | Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open (or create) a history database with WAL journaling.

    Parameters
    ----------
    path : str or Path
        Database file; ``":memory:"`` for a throw-away database.
    readonly : bool
        Open an existing file read-only (``heliostat history``, ``campaign --dry-run``);
        a missing file is an error. Nothing is written beside it (:func:`readonly_uri`).

    Raises
    ------
    InputError
        If the file cannot be opened or is not an SQLite database.
    """
    p = str(path)
    try:
        if readonly:
            if p != ":memory:" and not Path(p).exists():
                raise InputError(f"{p}: history database not found")
            conn = sqlite3.connect(readonly_uri(p), uri=True, timeout=10.0)
        else:
            if p != ":memory:":
                Path(p).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(p, timeout=10.0)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        raise InputError(f"{p}: not a usable SQLite database: {exc}") from None
    conn.row_factory = sqlite3.Row
    return conn


def readonly_uri(path: str | Path) -> str:
    """The SQLite URI that reads a database file without writing anything beside it.

    ``mode=ro`` always. Also ``immutable=1`` — no locks, no ``-wal``/``-shm`` files
    created — when the file or its folder cannot be written (read-only media, where
    ``mode=ro`` alone fails on a WAL database) or when no ``-wal``/``-shm`` file exists,
    i.e. no process has the database open for writing now (a campaign keeps them while
    it runs; then the plain read-only open sees its latest commits).
    """
    p = Path(path)
    if str(path) == ":memory:":
        return "file::memory:?mode=ro"
    writable = os.access(p.parent, os.W_OK) and os.access(p, os.W_OK)
    in_use = Path(f"{p}-wal").exists() or Path(f"{p}-shm").exists()
    immutable = not writable or not in_use
    return p.resolve().as_uri() + "?mode=ro" + ("&immutable=1" if immutable else "")


def ensure_schema(conn: sqlite3.Connection, component: str, version: int, ddl: str) -> None:
    """Create a component's tables if absent and record its schema version.

    Raises
    ------
    InputError
        If the file holds a newer schema version of the component than this code knows.
    """
    with conn:
        conn.execute(_META_DDL)
        row = conn.execute(
            "SELECT version FROM schema_versions WHERE component = ?", (component,)
        ).fetchone()
        if row is not None and row[0] > version:
            raise InputError(
                f"history database has {component} schema v{row[0]}, this program knows "
                f"v{version}: upgrade the program before using this file"
            )
        conn.executescript(ddl)
        conn.execute(
            "INSERT INTO schema_versions(component, version) VALUES (?, ?) "
            "ON CONFLICT(component) DO UPDATE SET version = excluded.version",
            (component, version),
        )


def database_problem(path: str | Path, exc: sqlite3.Error, what: str = "database") -> str:
    """A one-line message for an SQLite error on a file, naming the file and the cause.

    ``database or disk is full`` becomes "disk full" (SQLite has rolled the failed
    transaction back: what was committed before is intact); a damaged file says so.
    """
    text = str(exc)
    if "database or disk is full" in text:
        return (
            f"{path}: disk full: the {what} could not be written ({text}); nothing of the "
            "failed step was stored, what was stored before is intact; free space and run again"
        )
    if "malformed" in text or "not a database" in text:
        return (
            f"{path}: the {what} file is damaged ({text}); restore it from a backup "
            "(`sqlite3 FILE .recover` can salvage its rows)"
        )
    return f"{path}: {what} error: {text}"


def is_database_error(exc: BaseException) -> bool:
    """An SQLite error caused by the file or the disk, not by a bug in the SQL."""
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(
        exc, sqlite3.ProgrammingError | sqlite3.InterfaceError
    )


def wrap_file_errors(cls: type, error: type[Exception], what: str, names: Iterable[str]) -> None:
    """Make the methods ``names`` of ``cls`` turn an SQLite error of the file (damaged,
    disk full, locked: :func:`is_database_error`) into ``error`` with the one-line message
    of :func:`database_problem` naming ``self.path``; errors of the SQL itself pass."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def call(self, *args, **kwargs):  # noqa: ANN001, ANN202
            try:
                return fn(self, *args, **kwargs)
            except sqlite3.Error as exc:
                if not is_database_error(exc):
                    raise
                raise error(database_problem(self.path, exc, what)) from None

        return call

    for name in list(names):
        setattr(cls, name, wrap(getattr(cls, name)))
