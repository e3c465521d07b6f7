"""Read-only commands read a history on read-only media and write nothing beside it."""

from __future__ import annotations

import os
import subprocess

import pytest

from heliostat.campaign import History
from heliostat.cli import main


def _history(path) -> None:
    with History(path) as h:
        h.add_visit("H001", "2025-01-01T10:00:00Z", "2025-01-01T10:00:00Z", "no_spot", "x")


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder holding a history that cannot be written: chmod for a normal user; for
    root (whom chmod does not stop) a read-only bind mount, else skip."""
    src = tmp_path / "media"
    src.mkdir()
    _history(src / "h.sqlite")
    assert sorted(p.name for p in src.iterdir()) == ["h.sqlite"]  # closed cleanly
    if os.geteuid() != 0:
        src.chmod(0o555)
        (src / "h.sqlite").chmod(0o444)
        yield src
        src.chmod(0o755)
        return
    ro = tmp_path / "ro"
    ro.mkdir()
    ok = subprocess.run(["mount", "--bind", str(src), str(ro)], capture_output=True).returncode
    if ok != 0:
        pytest.skip("root without mount permission: cannot make a read-only folder")
    try:
        rc = subprocess.run(
            ["mount", "-o", "remount,ro,bind", str(ro)], capture_output=True
        ).returncode
        if rc != 0:
            pytest.skip("cannot remount read-only")
        yield ro
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)


def test_history_reads_a_file_on_read_only_media(read_only_dir, capsys):
    db = read_only_dir / "h.sqlite"
    assert not os.access(read_only_dir, os.W_OK) or os.geteuid() == 0
    rc = main(["history", "--db", str(db), "--json"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert '"H001"' in out.out
    assert sorted(p.name for p in read_only_dir.iterdir()) == ["h.sqlite"]


def test_history_creates_no_wal_or_shm_files(tmp_path, capsys):
    db = tmp_path / "h.sqlite"
    _history(db)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.sqlite"]
    assert main(["history", "--db", str(db)]) == 0
    assert main(["history", "--db", str(db), "--heliostat", "H001"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.sqlite"]
    capsys.readouterr()


def test_a_reader_sees_a_running_writers_latest_commit(tmp_path):
    # While a campaign has the file open (its -wal exists), the read-only open is not
    # immutable: it sees rows not yet checkpointed into the main file.
    db = tmp_path / "h.sqlite"
    with History(db) as w:
        w.add_visit("H001", "s1", "t", "no_spot", "x")
        assert (tmp_path / "h.sqlite-wal").exists()
        with History(db, readonly=True) as r:
            assert len(r.visits()) == 1
        w.add_visit("H001", "s2", "t", "no_spot", "x")
        with History(db, readonly=True) as r:
            assert len(r.visits()) == 2
