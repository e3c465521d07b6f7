"""History database: WAL mode, schema versions, clear errors."""

import pytest

from heliostat.errors import InputError
from heliostat.store import ensure_schema, open_db


def test_wal_and_schema_versions(tmp_path):
    db = tmp_path / "history.sqlite"
    conn = open_db(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    ensure_schema(conn, "demo", 1, "CREATE TABLE IF NOT EXISTS demo_rows (x REAL);")
    conn.execute("INSERT INTO demo_rows VALUES (1.5)")
    conn.commit()
    ensure_schema(conn, "demo", 1, "CREATE TABLE IF NOT EXISTS demo_rows (x REAL);")  # idempotent
    ro = open_db(db, readonly=True)
    assert ro.execute("SELECT x FROM demo_rows").fetchone()[0] == 1.5
    with pytest.raises(InputError, match="schema v1, this program knows v0"):
        ensure_schema(conn, "demo", 0, "")


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        open_db(tmp_path / "none.sqlite", readonly=True)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(InputError, match="not a usable SQLite database"):
        open_db(junk)
