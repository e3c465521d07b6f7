"""A damaged or full history / journal file is a one-line error naming the file (exit 2),
never an internal error, and what was stored before stays intact."""

from __future__ import annotations

import sqlite3

import pytest

from firmware_bridge.journal import Journal
from heliostat.campaign import History
from heliostat.cli import main
from heliostat.errors import InputError


def _corrupt_middle(path) -> None:
    """Overwrite 4 KiB in the middle of a checkpointed SQLite file."""
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 4096] = b"\xde\xad\xbe\xef" * 1024
    path.write_bytes(bytes(data))


def _history(path, n=400) -> None:
    with History(path) as h:
        for i in range(n):
            h.add_visit("H001", f"s{i:04d}", "2025-01-01T00:00:00Z", "no_spot", "x" * 200, "r")


def test_a_corrupt_history_is_a_one_line_error(tmp_path, capsys):
    db = tmp_path / "h.sqlite"
    _history(db)
    _corrupt_middle(db)
    for extra in ([], ["--heliostat", "H001"]):
        rc = main(["history", "--db", str(db), *extra])
        err = capsys.readouterr().err
        assert rc == 2, err
        assert err.startswith(f"heliostat: error: {db}: the history database file is damaged")
        assert len(err.strip().splitlines()) == 1


def test_a_corrupt_journal_is_a_one_line_error(tmp_path):
    jpath = tmp_path / "j.sqlite"
    with Journal(jpath) as j:
        for k in range(60):
            j.create_batch(f"b{k}", "t", [("H001", "p", 1, "move", {"x": "y" * 300}, None)] * 5)
    _corrupt_middle(jpath)
    with pytest.raises(OSError, match=rf"{jpath}: the bridge journal file is damaged"):
        with Journal(jpath) as j:
            for k in range(60):
                j.entries(f"b{k}")


def test_disk_full_in_the_journal_names_the_cause_and_keeps_what_was_stored(tmp_path):
    # SQLite's page limit gives the same SQLITE_FULL as a full disk.
    jpath = tmp_path / "j.sqlite"
    with Journal(jpath) as j:
        first = j.create_batch("a", "t", [("H001", "p", 1, "stow", {}, None)])
        j._db.execute("PRAGMA max_page_count = 12")
        big = [("H001", "p", 1, "move", {"x": "y" * 2000}, None)] * 200
        with pytest.raises(OSError, match=r"j.sqlite: disk full: the bridge journal could not"):
            j.create_batch("b", "t", big)  # was: "cannot rollback - no transaction is active"
        assert not j.has_batch("b")
        assert j.entries("a") == first


def test_disk_full_in_the_history_names_the_cause_and_keeps_what_was_stored(tmp_path):
    db = tmp_path / "h.sqlite"
    _history(db, n=3)
    with History(db) as h:
        h.con.execute("PRAGMA max_page_count = 8")
        with pytest.raises(InputError, match=r"h.sqlite: disk full: the history database"):
            for i in range(1000):
                h.add_visit("H002", f"t{i:04d}", "2025-01-01T00:00:00Z", "x", "y" * 500)
    with History(db, readonly=True) as h:
        assert (h.visits()["heliostat_id"] == "H001").sum() == 3
