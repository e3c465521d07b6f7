"""Fetch one heliostat's records from PAINT's STAC catalogue into PAINT's download layout.

Plain HTTP (``urllib``, no extra dependency). The walk is the one paint-csp's
``StacClient.get_heliostat_data`` makes (``paint/data/stac_client.py``), with the
archive's URL scheme (``paint_mappings``: ``HELIOSTAT_CATALOG_URL``,
``CALIBRATION_COLLECTION_ID``, ``HELIOSTAT_PROPERTIES_COLLECTION_ID``, ``TOWER_STAC_URL``):

heliostat catalogue ``<base>/<ID>/<ID>-heliostat-catalog-stac.json``
    → child collections ``<ID>-calibration-collection`` and
    ``<ID>-heliostat-properties-collection`` → their items (``rel: item`` links) → each
    item's assets; plus the tower item ``<base>/WRI1030197-tower-measurements-item-stac.json``.

Written under ``out`` (what ``heliostat calibrate --paint`` and ``bench paint`` read, and
what paint-csp writes):

* ``<ID>/Properties/<ID>-heliostat-properties.json``
* ``<ID>/Calibration/<record>-calibration-properties.json`` (and the images asked for)
* ``WRI1030197-tower-measurements.json``
* ``metadata/<ID>-calibration-metadata.csv``: one row per record fetched, the columns
  paint-csp's ``get_heliostat_metadata`` writes (index ``Id``; ``HeliostatId``, ``Azimuth``,
  ``Elevation`` in PAINT's convention, the target's corners, ``DateTime``): the record
  times the calibration-properties files do not hold, and the input of PAINT's
  ``DatasetSplitter``.

Resumable: a file is written as ``<name>.part`` and renamed when complete, so a file at
its final name is complete; it is skipped when present (and re-fetched when the catalogue
gives a ``file:checksum`` or ``file:size`` it does not match). Records already in the
metadata file with all their files present cost no request for their item. Checksums
are the STAC file extension's (multihash: sha2-256, sha2-512, sha1, md5); PAINT's
catalogue (paint-csp 3.1.0's generators) gives none, so there only the JSON files are
checked to parse.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd

from heliostat.errors import HeliostatError, InputError

#: The archive's host and plant (paint_mappings ``URL_BASE``, ``POWER_PLANT_GPPD_ID``).
PAINT_HOST = "https://paint-database.org"
PLANT_ID = "WRI1030197"
URL_BASE = f"{PAINT_HOST}/{PLANT_ID}"
HELIOSTAT_CATALOG_URL = URL_BASE + "/{0}/{0}-heliostat-catalog-stac.json"
TOWER_STAC_URL = f"{URL_BASE}/{PLANT_ID}-tower-measurements-item-stac.json"
CALIBRATION_COLLECTION_ID = "{}-calibration-collection"
PROPERTIES_COLLECTION_ID = "{}-heliostat-properties-collection"
#: Asset keys (paint_mappings ``CALIBRATION_*_KEY``, ``HELIOSTAT_PROPERTIES_KEY``, ``TOWER_KEY``).
CALIBRATION_ASSETS = (
    "calibration_properties",
    "raw_image",
    "cropped_image",
    "flux_image",
    "flux_centered_image",
)
PROPERTIES_ASSET = "heliostat-properties"
TOWER_ASSET = "measurements"
#: Sub-folders of the download layout (``SAVE_CALIBRATION``, ``SAVE_PROPERTIES``).
CALIBRATION_FOLDER = "Calibration"
PROPERTIES_FOLDER = "Properties"
METADATA_FOLDER = "metadata"
#: Columns of paint-csp's calibration metadata (``_process_child_metadata``), in order.
CORNERS = ("lower_left", "upper_left", "upper_right", "lower_right")
METADATA_COLUMNS = (
    "HeliostatId",
    "Azimuth",
    "Elevation",
    *(f"{c}_{k}" for c in CORNERS for k in ("latitude", "longitude", "Elevation")),
    "DateTime",
)
#: Multihash codes of the STAC file extension's ``file:checksum`` → hashlib name.
MULTIHASH = {0x12: "sha256", 0x13: "sha512", 0x11: "sha1", 0xD5: "md5"}

#: ``opener(url, timeout_s)`` → a readable binary response (a context manager).
Opener = Callable[[str, float], BinaryIO]


class FetchError(HeliostatError, OSError):
    """The catalogue or a file could not be fetched (offline, 404, bad response)."""


def _default_opener(url: str, timeout_s: float) -> BinaryIO:
    req = urllib.request.Request(url, headers={"User-Agent": "heliostat-calibration"})
    return urllib.request.urlopen(req, timeout=timeout_s)  # noqa: S310 - http(s)/file only


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """One asset to fetch.

    Attributes
    ----------
    url : str
        Where it is (after the mirror rewrite).
    path : str
        Where it goes, relative to the output folder (POSIX separators).
    checksum : str or None
        ``file:checksum`` (multihash, hex) when the catalogue gives one.
    size_bytes : int or None
        ``file:size`` when the catalogue gives one.
    """

    url: str
    path: str
    checksum: str | None = None
    size_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class FetchSummary:
    """What one fetch did.

    Attributes
    ----------
    heliostat_id : str
    records_listed : int
        Records in the heliostat's calibration collection.
    records_selected : int
        After ``since`` and ``max_records``.
    downloaded, skipped : int
        Files written now / already complete.
    verified : int
        Files whose checksum or size the catalogue gave and that matched.
    failed : tuple of (str, str)
        (url, reason) for files not fetched.
    out : str
    """

    heliostat_id: str
    records_listed: int
    records_selected: int
    downloaded: int
    skipped: int
    verified: int
    failed: tuple[tuple[str, str], ...]
    out: str


@dataclass
class _Client:
    opener: Opener
    mirror: str | None
    timeout_s: float
    requests: list[str] = field(default_factory=list)

    def url(self, url: str) -> str:
        if self.mirror and url.startswith(PAINT_HOST + "/"):
            return self.mirror.rstrip("/") + url[len(PAINT_HOST) :]
        return url

    def open(self, url: str) -> BinaryIO:
        self.requests.append(url)
        try:
            return self.opener(url, self.timeout_s)
        except urllib.error.HTTPError as exc:
            raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            reason = getattr(exc, "reason", exc)
            raise FetchError(
                f"cannot reach {url}: {reason} (offline? --mirror URL reads a copy of the archive)"
            ) from None
        except TimeoutError as exc:
            raise FetchError(f"{url}: timed out after {self.timeout_s:g} s ({exc})") from None
        except OSError as exc:
            raise FetchError(f"{url}: {exc}") from None

    def json(self, url: str) -> dict[str, Any]:
        with self.open(url) as resp:
            try:
                raw = resp.read()
            except OSError as exc:
                raise FetchError(f"{url}: read failed: {exc}") from None
        try:
            doc = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise FetchError(f"{url}: not a JSON document ({exc})") from None
        if not isinstance(doc, dict):
            raise FetchError(f"{url}: expected a JSON object")
        return doc


def _links(doc: dict[str, Any], rel: str, base_url: str, client: _Client) -> list[str]:
    out = []
    for link in doc.get("links", []):
        if isinstance(link, dict) and link.get("rel") == rel and "href" in link:
            out.append(client.url(urllib.parse.urljoin(base_url, str(link["href"]))))
    return out


def _asset_file(
    asset: dict[str, Any], folder: str, doc_url: str, client: _Client, key: str
) -> RemoteFile:
    href = asset.get("href")
    if not isinstance(href, str) or not href:
        raise FetchError(f"{doc_url}: asset {key!r} has no href")
    url = client.url(urllib.parse.urljoin(doc_url, href))
    name = urllib.parse.unquote(urllib.parse.urlparse(url).path.rsplit("/", 1)[-1])
    if not name or name in (".", ".."):
        raise FetchError(f"{doc_url}: asset {key!r}: no file name in {href!r}")
    size = asset.get("file:size")
    return RemoteFile(
        url,
        f"{folder}/{name}" if folder else name,
        str(asset["file:checksum"]) if asset.get("file:checksum") else None,
        int(size) if isinstance(size, int | float) else None,
    )


def parse_since(text: str) -> pd.Timestamp:
    """``--since`` (ISO date or date-time; naive means UTC) → a UTC timestamp."""
    try:
        t = pd.Timestamp(text)
    except (ValueError, TypeError) as exc:
        raise InputError(f"--since: not a date: {text!r} ({exc})") from None
    if t is pd.NaT:
        raise InputError(f"--since: not a date: {text!r}")
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def check_file(path: Path, checksum: str | None, size_bytes: int | None) -> str | None:
    """Why the file at ``path`` is not the one the catalogue describes (None: it is).

    Checks ``file:size``, then ``file:checksum`` (multihash hex), when given; a ``.json``
    file must parse.
    """
    if not path.is_file():
        return "missing"
    data = path.read_bytes()
    if size_bytes is not None and len(data) != size_bytes:
        return f"size {len(data)} B, catalogue says {size_bytes} B"
    if checksum:
        try:
            raw = bytes.fromhex(checksum)
            algo, length = MULTIHASH[raw[0]], raw[1]
        except (ValueError, KeyError, IndexError):
            return f"unsupported file:checksum {checksum!r}"
        digest = hashlib.new(algo, data).digest()
        if raw[2:] != digest[:length] or len(raw) != length + 2:
            return f"{algo} differs from file:checksum"
    if path.suffix == ".json":
        try:
            json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return "not valid JSON (incomplete?)"
    return None


def _download(client: _Client, f: RemoteFile, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with client.open(f.url) as resp, open(part, "wb") as out:
        try:
            while chunk := resp.read(1 << 20):
                out.write(chunk)
        except OSError as exc:
            raise FetchError(f"{f.url}: download interrupted: {exc}") from None
    why = check_file(part, f.checksum, f.size_bytes)
    if why is not None:
        part.unlink(missing_ok=True)
        raise FetchError(f"{f.url}: {why}")
    os.replace(part, dest)


def _metadata_row(item: dict[str, Any], heliostat_id: str) -> dict[str, Any]:
    props = item.get("properties", {})
    coords = (item.get("geometry") or {}).get("coordinates") or []
    row: dict[str, Any] = {
        "Id": str(item.get("id")),
        "HeliostatId": heliostat_id,
        "Azimuth": props.get("view:sun_azimuth"),
        "Elevation": props.get("view:sun_elevation"),
    }
    for i, c in enumerate(CORNERS):
        p = coords[i] if i < len(coords) and isinstance(coords[i], list | tuple) else [None] * 3
        row.update({f"{c}_latitude": p[0], f"{c}_longitude": p[1], f"{c}_Elevation": p[2]})
    row["DateTime"] = props.get("datetime")
    return row


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    df = df.reindex(columns=["Id", *METADATA_COLUMNS]).sort_values("Id").set_index("Id")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    df.to_csv(tmp)
    os.replace(tmp, path)


def metadata_path(out: str | Path, heliostat_id: str) -> Path:
    """Where :func:`fetch_heliostat` keeps a heliostat's record metadata."""
    return Path(out) / METADATA_FOLDER / f"{heliostat_id}-calibration-metadata.csv"


def read_metadata(path: Path) -> pd.DataFrame:
    """A calibration metadata CSV (ours or paint-csp's ``get_heliostat_metadata``), index ``Id``
    as str, ``DateTime`` as UTC timestamps."""
    try:
        df = pd.read_csv(path, dtype={"Id": str})
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None
    missing = [c for c in ("Id", "HeliostatId", "Azimuth", "Elevation", "DateTime") if c not in df]
    if missing:
        raise InputError(f"{path}: column(s) {', '.join(missing)} missing")
    df = df.set_index("Id")
    df["DateTime"] = pd.to_datetime(df["DateTime"], utc=True, errors="coerce")
    return df


def fetch_heliostat(
    heliostat_id: str,
    out: str | Path,
    *,
    max_records: int | None = None,
    since: pd.Timestamp | None = None,
    assets: Sequence[str] = ("calibration_properties",),
    mirror: str | None = None,
    opener: Opener | None = None,
    timeout_s: float = 60.0,
    progress: Callable[[str], None] | None = None,
) -> FetchSummary:
    """Fetch a heliostat's properties, its records and the tower file into ``out``.

    Parameters
    ----------
    heliostat_id : str
        PAINT's id, e.g. ``"AA39"``.
    out : path
        Output folder (created); PAINT's download layout below it.
    max_records : int, optional
        Keep only the newest ``max_records`` records (after ``since``).
    since : pandas.Timestamp, optional
        Keep records taken at or after this time (UTC).
    assets : sequence of str
        Calibration assets per record (``CALIBRATION_ASSETS``); the properties and tower
        files are always fetched.
    mirror : str, optional
        Base URL replacing ``https://paint-database.org`` in every URL (a copy of the
        archive; ``file://`` works).
    opener : callable, optional
        ``opener(url, timeout_s)`` → binary response; default ``urllib.request.urlopen``.
    timeout_s : float
        Per-request timeout. [s]
    progress : callable, optional
        Called with one line of progress text per step.

    Returns
    -------
    FetchSummary

    Raises
    ------
    FetchError
        When the heliostat's catalogue, a collection or the tower item cannot be read
        (offline, 404); a record whose file fails is listed in ``failed`` instead.
    InputError
        For a bad argument.
    """
    hid = heliostat_id.strip()
    if not hid or "/" in hid:
        raise InputError(f"--heliostat: expected an id such as AA39, got {heliostat_id!r}")
    bad = [a for a in assets if a not in CALIBRATION_ASSETS]
    if bad:
        raise InputError(f"--assets: unknown {bad}; choose from {', '.join(CALIBRATION_ASSETS)}")
    if max_records is not None and max_records < 1:
        raise InputError(f"--max: expected at least 1, got {max_records}")
    say = progress or (lambda _msg: None)
    client = _Client(opener or _default_opener, mirror, timeout_s)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    cat_url = client.url(HELIOSTAT_CATALOG_URL.format(hid))
    catalog = client.json(cat_url)
    children = {}
    for url in _links(catalog, "child", cat_url, client):
        doc = client.json(url)
        children[doc.get("id")] = (url, doc)
    if CALIBRATION_COLLECTION_ID.format(hid) not in children:
        raise FetchError(f"{cat_url}: heliostat {hid} has no calibration collection")

    files: list[RemoteFile] = []
    # Properties: collection → its item(s) → the heliostat-properties asset.
    prop = children.get(PROPERTIES_COLLECTION_ID.format(hid))
    if prop is None:
        raise FetchError(f"{cat_url}: heliostat {hid} has no properties collection")
    for item_url in _links(prop[1], "item", prop[0], client):
        item = client.json(item_url)
        asset = item.get("assets", {}).get(PROPERTIES_ASSET)
        if asset is not None:
            files.append(
                _asset_file(asset, f"{hid}/{PROPERTIES_FOLDER}", item_url, client, PROPERTIES_ASSET)
            )
    tower_url = client.url(TOWER_STAC_URL)
    tower = client.json(tower_url)
    t_asset = tower.get("assets", {}).get(TOWER_ASSET)
    if t_asset is None:
        raise FetchError(f"{tower_url}: no {TOWER_ASSET!r} asset")
    files.append(_asset_file(t_asset, "", tower_url, client, TOWER_ASSET))
    n_down = n_skip = n_ver = 0
    for f in files:
        if check_file(out / f.path, f.checksum, f.size_bytes) is not None:
            say(f"{hid}: {f.path}")
            _download(client, f, out / f.path)
            n_down += 1
        else:
            n_skip += 1
        n_ver += bool(f.checksum or f.size_bytes is not None)

    # Records: the collection lists the items; an item gives the time and the assets.
    col_url, collection = children[CALIBRATION_COLLECTION_ID.format(hid)]
    item_urls = _links(collection, "item", col_url, client)
    meta_file = metadata_path(out, hid)
    cache_file = meta_file.with_name(f"{hid}-catalogue-items.csv")
    known = read_metadata(meta_file) if meta_file.is_file() else None
    rows: dict[str, dict[str, Any]] = {}
    for table_ in (read_metadata(cache_file) if cache_file.is_file() else None, known):
        if table_ is None:
            continue
        for rid, r in table_.iterrows():
            t = r["DateTime"]
            rows[str(rid)] = {
                "Id": str(rid),
                **r.to_dict(),
                "DateTime": None if pd.isna(t) else t.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
    n_cached = len(rows)
    say(f"{hid}: {len(item_urls)} records in the catalogue")

    def rid_of(url: str) -> str:
        return url.rsplit("/", 1)[-1].split("-", 1)[0]

    url_of = {rid_of(u): u for u in item_urls}
    # Items not yet known are read to learn their time (needed for since / max).
    todo_items = [u for u in item_urls if rid_of(u) not in rows]
    items: dict[str, dict[str, Any]] = {}
    for k, url in enumerate(todo_items, 1):
        if k == 1 or k % 50 == 0 or k == len(todo_items):
            say(f"{hid}: reading record items {k}/{len(todo_items)}")
        item = client.json(url)
        rid = str(item.get("id", rid_of(url)))
        items[rid] = item
        rows[rid] = _metadata_row(item, hid)
    listed = {rid_of(u) for u in item_urls} | set(items)
    if items or not cache_file.is_file() or n_cached != len(rows):
        # Every item read so far (a later run reads only the new ones).
        _write_csv(pd.DataFrame(list(rows.values())), cache_file)
    table = pd.DataFrame([rows[r] for r in rows if r in listed])
    if table.empty:
        selected: list[str] = []
    else:
        t = pd.to_datetime(table["DateTime"], utc=True, errors="coerce")
        keep = t.notna() if since is None else t >= since
        table = table[keep].assign(_t=t[keep]).sort_values(["_t", "Id"], ascending=False)
        if max_records is not None:
            table = table.head(max_records)
        selected = list(table["Id"])
    say(
        f"{hid}: {len(selected)} of {len(listed)} records selected"
        + (f" (since {since:%Y-%m-%d %H:%M} UTC)" if since is not None else "")
        + (f" (newest {max_records})" if max_records is not None else "")
    )

    failed: list[tuple[str, str]] = []
    done_rows = []
    folder = f"{hid}/{CALIBRATION_FOLDER}"
    for k, rid in enumerate(selected, 1):
        item = items.get(rid)
        if item is None:
            # Known from an earlier run: its files are predictable only from the item, so
            # read it again unless every wanted file is already there under PAINT's names.
            names = {
                "calibration_properties": f"{rid}-calibration-properties.json",
                "raw_image": f"{rid}-raw.png",
                "cropped_image": f"{rid}-cropped.png",
                "flux_image": f"{rid}-flux.png",
                "flux_centered_image": f"{rid}-flux-centered.png",
            }
            if all(check_file(out / folder / names[a], None, None) is None for a in assets):
                n_skip += len(assets)
                done_rows.append(rows[rid])
                continue
            if rid not in url_of:
                failed.append((col_url, f"record {rid}: no longer listed in the collection"))
                continue
            item = client.json(url_of[rid])
        item_url = url_of.get(rid, col_url)
        ok = True
        for a in assets:
            asset = item.get("assets", {}).get(a)
            if asset is None:
                failed.append((item_url, f"record {rid}: no {a!r} asset"))
                ok = False
                continue
            f = _asset_file(asset, folder, item_url, client, a)
            why = check_file(out / f.path, f.checksum, f.size_bytes)
            if why is None:
                n_skip += 1
                n_ver += bool(f.checksum or f.size_bytes is not None)
                continue
            try:
                _download(client, f, out / f.path)
            except FetchError as exc:
                failed.append((f.url, str(exc)))
                ok = False
                continue
            n_down += 1
            n_ver += bool(f.checksum or f.size_bytes is not None)
        if ok:
            done_rows.append(rows[rid])
        say(f"{hid}: [{k}/{len(selected)}] record {rid}" + ("" if ok else " FAILED"))
    # The metadata file lists the records whose files are complete (the rest are
    # retried next time).
    previous = [] if known is None else [rows[r] for r in map(str, known.index) if r in rows]
    merged = {r["Id"]: r for r in previous + done_rows}
    _write_csv(pd.DataFrame(list(merged.values())), meta_file)
    return FetchSummary(
        hid, len(listed), len(selected), n_down, n_skip, n_ver, tuple(failed), str(out)
    )
