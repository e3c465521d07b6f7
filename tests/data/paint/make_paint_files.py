"""Write small PAINT-format test files from a simulated Jülich-like heliostat.

Run from the repository root:  .venv/bin/python tests/data/paint/make_paint_files.py

Writes into tests/data/paint/AA39/ in PAINT's download layout:
``WRI1030197-tower-measurements.json`` (the real tower file, copied from
tests/data/paint/real/), ``Properties/AA39-heliostat-properties.json``,
``Calibration/<id>-calibration-properties.json`` (one per record, plus one record with the
sun below the horizon that the reader must reject) and ``truth.json`` (the true error
parameters, for the tests). The files follow the real archive's schema key for key
(tests/data/paint/real/AA31: same keys, same order, same nesting; the test
``test_synthetic_files_have_the_real_schema`` checks it). The heliostat is our own, ~28 m
north-east of the tower, aiming at the real tower's two Jülich targets. The files use
PAINT's conventions (docs/observations.md): WGS84 positions, sun azimuth from south
positive toward east, axis-1 initial angle measured from the mirror-vertical pose.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from heliostat.calibration.paint import load_tower  # noqa: E402
from heliostat.config import Heliostat, Mirror, Target  # noqa: E402
from heliostat.kinematics import HeliostatKinematics  # noqa: E402
from sim.observe import draw_true_errors, simulate_observations  # noqa: E402
from sim.paint_archive import (  # noqa: E402
    CONCENTRATOR_ENU_M,
    JULICH_ACTUATORS,
    calibration_record,
)
from sim.paint_archive import kinematics as paint_kinematics  # noqa: E402

HERE = Path(__file__).resolve().parent
OUT = HERE / "AA39"
REAL = HERE / "real"
TOWER = REAL / "WRI1030197-tower-measurements.json"
SEED = 20240901
NOISE_MRAD = 0.2  # HeliOS spot noise per axis, as beam angle
UTIS_NOISE_MRAD = 0.3
SITE, _TOWER_TARGETS = load_tower(TOWER)

# Actuators in PAINT's spelling (initial_angle in PAINT's convention, radians): the real
# Jülich geometry sim.paint_archive holds.
ACTUATORS = [dict(a) for a in JULICH_ACTUATORS]
POSITION_ENU_M = (13.26, 24.72, 1.69)
CONCENTRATOR = CONCENTRATOR_ENU_M
#: The real tower's targets the records alternate between.
TARGET_NAMES = ("solar_tower_juelich_upper", "solar_tower_juelich_lower")


def kinematics() -> HeliostatKinematics:
    """The heliostat as our chain sees it (axis 1 angle offset −π/2, see paint.py)."""
    return paint_kinematics(POSITION_ENU_M)


def targets() -> dict[str, Target]:
    return {k: _TOWER_TARGETS[k] for k in TARGET_NAMES}


def wgs84(p_enu) -> list[float]:
    lat, lon, h = SITE.enu_to_wgs84(np.asarray(p_enu, dtype=float))
    return [float(lat), float(lon), float(h)]


def main() -> None:
    rng = np.random.default_rng(SEED)
    kin = kinematics()
    hel = Heliostat("AA39", kin, Mirror(3.22, 2.56), "", 1)
    truth = draw_true_errors("linear", rng, translation_m=0.0)
    tg = targets()
    (OUT / "Calibration").mkdir(parents=True, exist_ok=True)
    (OUT / "Properties").mkdir(parents=True, exist_ok=True)

    (OUT / "WRI1030197-tower-measurements.json").write_text(TOWER.read_text())
    # Facets as the archive gives them (the same four for every Jülich heliostat).
    real_props = json.loads((REAL / "AA31" / "AA31-heliostat-properties.json").read_text())

    props = {
        "heliostat_position": wgs84(POSITION_ENU_M),
        "height": 2.56,
        "width": 3.22,
        "initial_orientation": [0.0, -1.0, 0.0],
        "kinematics_properties": {
            "actuators": ACTUATORS,
            **{f"joint_translation_{c}_{j}": 0.0 for j in (1, 2) for c in "enu"},
            **{
                f"concentrator_translation_{c}": v for c, v in zip("enu", CONCENTRATOR, strict=True)
            },
        },
        "facet_properties": real_props["facet_properties"],
        "renovation": "2021-04-15",
    }
    (OUT / "Properties" / "AA39-heliostat-properties.json").write_text(json.dumps(props, indent=2))

    # 12 days spread over a year, 3 times a day, alternating the two targets.
    days = pd.date_range("2023-01-15T00:00Z", periods=12, freq="30D")
    times = [d + pd.Timedelta(hours=h) for d in days for h in (8.5, 11.5, 14.5)]
    records = []
    for i, name in enumerate(tg):
        df = simulate_observations(hel, truth, tg[name], SITE, times[i::2], rng, NOISE_MRAD)
        records.append(df)
    df = pd.concat(records).sort_values("time_utc").reset_index(drop=True)
    for k, row in df.iterrows():
        rec = calibration_record(row, tg[row.target_id], SITE, POSITION_ENU_M, rng, UTIS_NOISE_MRAD)
        name = f"{100000 + k}-calibration-properties.json"
        (OUT / "Calibration" / name).write_text(json.dumps(rec, indent=2))
    bad = dict(rec, sun_elevation=-3.0)
    (OUT / "Calibration" / "199999-calibration-properties.json").write_text(json.dumps(bad))
    (OUT / "truth.json").write_text(
        json.dumps(
            {
                "heliostat": "AA39",
                "seed": SEED,
                "noise_mrad": NOISE_MRAD,
                "utis_noise_mrad": UTIS_NOISE_MRAD,
                "n_records": len(df),
                "errors": truth.to_dict(),
            },
            indent=2,
        )
    )
    print(f"wrote {len(df)} records (+1 bad) to {OUT}")


if __name__ == "__main__":
    main()
