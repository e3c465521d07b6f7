"""Record PAINT STAC catalogue responses, made by PAINT's own generators, for the tests.

The documents are produced by ``paint-csp``'s ``paint/preprocessing/*_stac.py`` (the code
that builds the archive's catalogue), never written by hand: this script only feeds them
the metadata of records we hold. It must run in an interpreter where ``paint`` (paint-csp
3.1.0, Python >= 3.11) imports, e.g. a separate venv (it cannot share ours)::

    python3.11 -m venv /tmp/paintvenv
    /tmp/paintvenv/bin/pip install torch==2.13.0 paint-csp==3.1.0
    /tmp/paintvenv/bin/python tests/data/paint_stac/make_fixtures.py

Writes ``tests/data/paint_stac/responses.json``: ``{"paint_csp": version, "url_base":
PAINT's URL_BASE, "documents": {path below https://paint-database.org/: document}}``.
The served data files themselves (calibration-properties, heliostat-properties, tower)
are not copied here: the tests serve them from ``tests/data/paint/real/AA31`` and the
synthetic ``tests/data/paint/AA39`` at the paths the assets name.

Inputs fed to the generators:

* AA31: the two real records (sun azimuth/elevation from their files). Their times and
  calibration targets are not in the files we hold; the times below are invented (stated
  here) and the target id follows the record's ``target_name``.
* AA39: the first 12 synthetic records of ``tests/data/paint/make_paint_files.py``, with
  the times that script simulated them at (12 days 30 days apart from 2023-01-15, at
  08:30, 11:30 and 14:30 UTC, records numbered in time order).
"""

from __future__ import annotations

import argparse
import json
from importlib.metadata import version
from pathlib import Path

import pandas as pd
from paint.preprocessing import (
    get_tower_measurements,
    make_calibration_collection,
    make_calibration_item,
    make_catalog,
    make_heliostat_catalog,
    make_tower_item,
)
from paint.preprocessing.properties_stac import make_properties_collection, make_properties_item
from paint.util import paint_mappings as m

HERE = Path(__file__).resolve().parent
PAINT_DATA = HERE.parent / "paint"
HOST = "https://paint-database.org/"
#: PAINT's calibration-target ids (CALIBRATION_TARGET_TO_COORDINATES): 4 = STJ upper,
#: 7 = STJ lower (1 and 7 both map to the lower target's coordinates).
TARGET_IDS = {"solar_tower_juelich_upper": 4, "solar_tower_juelich_lower": 7}
#: Invented times for the two real AA31 records (not in the files we hold).
AA31_TIMES = {125284: "2022-05-17T08:12:44Z", 126372: "2022-06-02T15:40:03Z"}
#: Gauss-Krüger offsets (East, North from PAINT's GK base) and altitude, for the
#: properties items' geometry only (the fetcher does not use them).
GK_POSITION = {"AA31": (-41.2, 57.6, 88.7), "AA39": (13.3, 24.7, 88.7)}
N_AA39 = 12


def _records(heliostat_id: str) -> list[tuple[int, dict, pd.Timestamp]]:
    if heliostat_id == "AA31":
        folder = PAINT_DATA / "real" / "AA31"
        out = []
        for rid, t in AA31_TIMES.items():
            rec = json.loads((folder / f"{rid}-calibration-properties.json").read_text())
            out.append((rid, rec, pd.Timestamp(t)))
        return out
    days = pd.date_range("2023-01-15T00:00Z", periods=12, freq="30D")
    times = sorted(d + pd.Timedelta(hours=h) for d in days for h in (8.5, 11.5, 14.5))
    folder = PAINT_DATA / "AA39" / "Calibration"
    out = []
    for k in range(N_AA39):
        rid = 100000 + k
        rec = json.loads((folder / f"{rid}-calibration-properties.json").read_text())
        out.append((rid, rec, times[k]))
    return out


def _path(url: str) -> str:
    if not url.startswith(HOST):
        raise ValueError(f"unexpected href {url!r}")
    return url[len(HOST) :]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE / "responses.json")
    path = ap.parse_args(argv).out
    docs: dict[str, dict] = {}

    def put(doc: dict, url: str | None = None) -> None:
        self_href = next(link["href"] for link in doc["links"] if link["rel"] == "self")
        docs[_path(url or self_href)] = doc

    ids = ["AA31", "AA39"]
    put(make_catalog(ids))
    extreme, _tower = get_tower_measurements()
    put(make_tower_item(extreme))
    for hid in ids:
        put(make_heliostat_catalog(hid, False, True, True))
        rows = []
        for rid, rec, t in _records(hid):
            row = pd.Series(
                {
                    m.HELIOSTAT_ID: hid,
                    m.CALIBRATION_TARGET: TARGET_IDS[rec["target_name"]],
                    m.CREATED_AT: t,
                    m.UPDATED_AT: t,
                    m.SYSTEM: "HeliOS.FDM",
                    m.AZIMUTH: rec["sun_azimuth"],
                    m.SUN_ELEVATION: rec["sun_elevation"],
                }
            )
            item = make_calibration_item(rid, row, processed_available=True)
            put(item)
            bbox = item["bbox"]
            rows.append(
                {
                    **row.to_dict(),
                    m.LATITUDE_MIN_KEY: bbox[0],
                    m.LONGITUDE_MIN_KEY: bbox[1],
                    m.ELEVATION_MIN: bbox[2],
                    m.LATITUDE_MAX_KEY: bbox[3],
                    m.LONGITUDE_MAX_KEY: bbox[4],
                    m.ELEVATION_MAX: bbox[5],
                    m.URL_KEY: m.CALIBRATION_ITEM_URL % (hid, rid),
                    m.TITLE_KEY: item["title"],
                }
            )
        put(make_calibration_collection(hid, pd.DataFrame(rows)))
        east, north, alt = GK_POSITION[hid]
        created = "2021-04-15T10:00:00Z"
        (lat, lon), prop_item = make_properties_item(
            hid,
            pd.Series(
                {m.EAST_KEY: east, m.NORTH_KEY: north, m.ALTITUDE_KEY: alt, m.CREATED_AT: created}
            ),
        )
        # PAINT's preprocessing script (scripts/generate_properties_stacs_and_data.py) saves
        # this item as HELIOSTAT_PROPERTIES_ITEM, the name the collection links to; the
        # item's own "self" link says "-heliostat-properties-stac.json".
        put(prop_item, m.HELIOSTAT_PROPERTIES_ITEM_URL % (hid, hid))
        put(
            make_properties_collection(
                hid,
                pd.DataFrame(
                    [
                        {
                            m.LATITUDE_KEY: lat,
                            m.LONGITUDE_KEY: lon,
                            m.ELEVATION: alt,
                            m.CREATED_AT: prop_item["properties"]["datetime"],
                            m.URL_KEY: m.HELIOSTAT_PROPERTIES_ITEM_URL % (hid, hid),
                            m.TITLE_KEY: prop_item["title"],
                        }
                    ]
                ),
            )
        )
    out = {
        "paint_csp": version("paint-csp"),
        "url_base": m.URL_BASE,
        "documents": dict(sorted(docs.items())),
    }
    path.write_text(json.dumps(out, indent=1, default=float) + "\n")
    print(f"wrote {len(docs)} documents to {path}")


if __name__ == "__main__":
    main()
