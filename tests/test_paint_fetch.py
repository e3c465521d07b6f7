"""``heliostat paint fetch`` against recorded STAC catalogue responses (no network).

The catalogue documents in tests/data/paint_stac/responses.json were made by PAINT's own
STAC generators (paint-csp 3.1.0, ``paint/preprocessing/*_stac.py``; regenerate with
tests/data/paint_stac/make_fixtures.py in a venv holding paint-csp). They are served here
from a local folder, by a local HTTP server or as ``file://`` URLs, together with the data
files their assets name (the real AA31 records and the synthetic AA39 ones).
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.error
from pathlib import Path

import pandas as pd
import pytest

from heliostat.calibration.paint import load_paint_dir
from heliostat.calibration.paint_fetch import (
    FetchError,
    check_file,
    fetch_heliostat,
    metadata_path,
    read_metadata,
)
from heliostat.cli import main

DATA = Path(__file__).resolve().parent / "data"
RESPONSES = DATA / "paint_stac" / "responses.json"
PAINT = DATA / "paint"


def _documents() -> dict[str, dict]:
    return json.loads(RESPONSES.read_text())["documents"]


def build_mirror(root: Path) -> Path:
    """A folder laid out like https://paint-database.org/ holding the recorded documents
    and the files their assets point to."""
    for rel, doc in _documents().items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(doc))
    plant = root / "WRI1030197"
    shutil.copy(PAINT / "real" / "WRI1030197-tower-measurements.json", plant)
    for hid, src in (("AA31", PAINT / "real" / "AA31"), ("AA39", PAINT / "AA39")):
        for sub, pattern in (("Calibration", "*calibration-properties.json"),
                             ("Properties", "*heliostat-properties.json")):  # fmt: skip
            (plant / hid / sub).mkdir(parents=True, exist_ok=True)
            for f in src.rglob(pattern):
                shutil.copy(f, plant / hid / sub / f.name)
    return root


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # quiet
        pass


@pytest.fixture()
def server(tmp_path):
    """A local HTTP server over the mirror; yields (base URL, mirror root, request log)."""
    root = build_mirror(tmp_path / "mirror")
    log: list[str] = []

    class Handler(_Handler):
        def do_GET(self):  # noqa: N802 - http.server's name
            log.append(self.path)
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root, log
    finally:
        httpd.shutdown()
        httpd.server_close()


def _item_times(hid: str) -> dict[str, pd.Timestamp]:
    out = {}
    for rel, doc in _documents().items():
        if rel.startswith(f"WRI1030197/{hid}/Calibration/") and rel.endswith("-item-stac.json"):
            out[doc["id"]] = pd.Timestamp(doc["properties"]["datetime"])
    return out


def test_fixtures_were_made_by_paints_generators():
    d = json.loads(RESPONSES.read_text())
    assert d["paint_csp"] == "3.1.0"
    docs = d["documents"]
    cat = docs["WRI1030197/AA39/AA39-heliostat-catalog-stac.json"]
    assert cat["id"] == "AA39-heliostat-catalog"
    # An item as PAINT's make_calibration_item writes it: the STAC view extension.
    item = docs["WRI1030197/AA31/Calibration/125284-calibration-item-stac.json"]
    assert "view:sun_azimuth" in item["properties"]
    # Its sun angles are the real record's.
    rec = json.loads((PAINT / "real" / "AA31" / "125284-calibration-properties.json").read_text())
    assert item["properties"]["view:sun_azimuth"] == rec["sun_azimuth"]


def test_fixtures_regenerate_identically(tmp_path):
    """With an interpreter holding paint-csp (env PAINT_PYTHON), the script reproduces
    the committed documents."""
    py = os.environ.get("PAINT_PYTHON")
    if not py or not Path(py).exists():
        pytest.skip("PAINT_PYTHON (an interpreter with paint-csp 3.1.0) not set")
    script = DATA / "paint_stac" / "make_fixtures.py"
    out = tmp_path / "responses.json"
    subprocess.run([py, str(script), "--out", str(out)], check=True, capture_output=True)
    assert json.loads(out.read_text()) == json.loads(RESPONSES.read_text())


def test_fetch_since_and_max_over_http(server, tmp_path):
    base, root, log = server
    out = tmp_path / "out"
    lines: list[str] = []
    s = fetch_heliostat(
        "AA39", out, max_records=5, since=pd.Timestamp("2023-03-01", tz="UTC"),
        mirror=base, progress=lines.append,
    )  # fmt: skip
    times = _item_times("AA39")
    want = sorted((t, i) for i, t in times.items() if t >= pd.Timestamp("2023-03-01", tz="UTC"))
    want_ids = sorted(i for _, i in want[-5:])
    got = sorted(p.name.split("-")[0] for p in (out / "AA39" / "Calibration").iterdir())
    assert got == want_ids
    assert (s.records_listed, s.records_selected, s.downloaded, s.skipped) == (12, 5, 7, 0)
    assert s.failed == ()
    # Byte for byte the served files.
    for rid in got:
        name = f"{rid}-calibration-properties.json"
        assert (out / "AA39" / "Calibration" / name).read_bytes() == (
            root / "WRI1030197" / "AA39" / "Calibration" / name
        ).read_bytes()
    assert (out / "WRI1030197-tower-measurements.json").is_file()
    assert any("5 of 12 records selected" in m for m in lines)
    # The record times, from the items, in paint-csp's metadata format.
    meta = read_metadata(metadata_path(out, "AA39"))
    assert sorted(meta.index) == want_ids
    for rid in want_ids:
        assert meta.loc[rid, "DateTime"] == times[rid]
    # What calibrate --paint reads.
    camp = load_paint_dir(out / "AA39")
    assert camp.observations is not None and len(camp.observations.steps) == 5


def test_fetch_resumes_without_refetching(server, tmp_path):
    base, _root, log = server
    out = tmp_path / "out"
    fetch_heliostat("AA39", out, max_records=5, mirror=base)
    first = set(log)
    log.clear()
    s = fetch_heliostat("AA39", out, max_records=8, mirror=base)
    assert (s.records_selected, s.downloaded, s.skipped) == (8, 3, 5 + 2)
    # No complete record's item read again (the 3 new ones' items are read for their
    # asset links), no complete file downloaded twice.
    items_again = sorted(
        p.rsplit("/", 1)[-1].split("-")[0]
        for p in log
        if p.endswith("-item-stac.json") and "Calibration" in p
    )
    assert items_again == ["100004", "100005", "100006"]
    data_again = [p for p in log if p.endswith("-calibration-properties.json") and p in first]
    assert data_again == []
    # A third run has nothing to do.
    log.clear()
    s = fetch_heliostat("AA39", out, max_records=8, mirror=base)
    assert (s.downloaded, s.skipped) == (0, 10)


def test_incomplete_file_is_fetched_again(tmp_path):
    root = build_mirror(tmp_path / "mirror")
    out = tmp_path / "out"
    fetch_heliostat("AA31", out, mirror=root.as_uri())
    f = out / "AA31" / "Calibration" / "125284-calibration-properties.json"
    good = f.read_bytes()
    f.write_bytes(good[:40])  # cut short (by another tool or a disk-full)
    (f.parent / (f.name + ".part")).write_bytes(b"junk")  # our own leftover
    s = fetch_heliostat("AA31", out, mirror=root.as_uri())
    assert f.read_bytes() == good
    assert s.downloaded == 1 and not (f.parent / (f.name + ".part")).exists()


def _multihash_sha256(data: bytes) -> str:
    return "1220" + hashlib.sha256(data).hexdigest()


def test_checksums_verified_where_the_catalogue_gives_them(tmp_path):
    root = build_mirror(tmp_path / "mirror")
    # PAINT's catalogue carries no checksums; add the STAC file extension's fields to one
    # recorded item to exercise the check.
    item_p = root / "WRI1030197/AA31/Calibration/125284-calibration-item-stac.json"
    data_p = root / "WRI1030197/AA31/Calibration/125284-calibration-properties.json"
    item = json.loads(item_p.read_text())
    item["assets"]["calibration_properties"]["file:checksum"] = _multihash_sha256(
        data_p.read_bytes()
    )
    item["assets"]["calibration_properties"]["file:size"] = data_p.stat().st_size
    item_p.write_text(json.dumps(item))
    out = tmp_path / "out"
    s = fetch_heliostat("AA31", out, mirror=root.as_uri())
    assert s.verified == 1 and s.failed == ()
    # The served file no longer matches its checksum: refused, not written, reported.
    out2 = tmp_path / "out2"
    data_p.write_bytes(data_p.read_bytes().replace(b"47.87", b"47.88"))
    rc = main(["paint", "fetch", "--heliostat", "AA31", "--out", str(out2),
               "--mirror", root.as_uri()])  # fmt: skip
    assert rc == 1
    assert not (out2 / "AA31" / "Calibration" / "125284-calibration-properties.json").exists()
    assert (out2 / "AA31" / "Calibration" / "126372-calibration-properties.json").exists()
    meta = read_metadata(metadata_path(out2, "AA31"))
    assert list(meta.index) == ["126372"]  # only complete records are listed


def test_check_file_multihash(tmp_path):
    p = tmp_path / "a.bin"
    p.write_bytes(b"abc")
    assert check_file(p, _multihash_sha256(b"abc"), 3) is None
    assert "differs" in check_file(p, _multihash_sha256(b"abd"), None)
    assert "size" in check_file(p, None, 4)
    assert "unsupported" in check_file(p, "ff00", None)
    assert check_file(tmp_path / "none", None, None) == "missing"


def test_offline_is_one_line(tmp_path, capsys):
    def offline(url, timeout_s):
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))

    with pytest.raises(FetchError, match="cannot reach https://paint-database.org/"):
        fetch_heliostat("AA39", tmp_path, opener=offline)
    # Through the CLI: a port nothing listens on; one line on stderr, exit 2.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc = main(["paint", "fetch", "--heliostat", "AA39", "--out", str(tmp_path / "o"),
               "--mirror", f"http://127.0.0.1:{port}", "--timeout", "5"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("heliostat: error: cannot reach http://127.0.0.1")


def test_unknown_heliostat_names_the_url(server, tmp_path):
    base, _root, _log = server
    with pytest.raises(FetchError, match=r"AZ99-heliostat-catalog-stac.json: HTTP 404"):
        fetch_heliostat("AZ99", tmp_path, mirror=base)


def test_cli_fetch_json(server, tmp_path, capsys):
    base, _root, _log = server
    rc = main(["paint", "fetch", "--heliostat", "AA31", "--out", str(tmp_path),
               "--mirror", base, "--json"])  # fmt: skip
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    assert d["records_listed"] == 2 and d["files_downloaded"] == 4 and d["failed"] == []


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
