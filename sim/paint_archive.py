"""Synthetic PAINT archives: many simulated Jülich-like heliostats with known true errors,
written in the archive's real schema and PAINT's download layout.

What ``heliostat paint fetch`` would leave in a folder (``<ID>/Properties/…``,
``<ID>/Calibration/<record>-calibration-properties.json``, the tower file,
``metadata/<ID>-calibration-metadata.csv`` with the record times) plus ``truth.json``
(each heliostat's true error parameters). The records follow the real files key for key
(``tests/data/paint/real/AA31``); the heliostats use the real Jülich actuator geometry
(:data:`JULICH_ACTUATORS`) and the real tower's two calibration targets. The truth lies
inside our own model (linear drive, Gaussian spot noise): a figure measured on it is a
best case.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from heliostat.calibration.paint import load_tower
from heliostat.config import Heliostat, Mirror
from heliostat.kinematics import HeliostatKinematics, LinearAxis
from heliostat.sun import sun_position
from sim.observe import draw_true_errors, simulate_observations

#: Actuators in PAINT's spelling (``initial_angle`` in PAINT's convention, radians),
#: from a real Jülich heliostat's properties file.
JULICH_ACTUATORS = (
    dict(
        type_axis="linear", min_increment=0, max_increment=68745, increment=154166.6667,
        offset_shift=0, initial_stroke_length=0.077412795, offset=0.335308,
        pivot_radius=0.338095, radius_shift=0, clockwise_axis_movement=0,
        initial_angle=0.039009536, min_movement_angle=0.015123278,
        max_movement_angle=1.570796327, movement_speed=0,
    ),
    dict(
        type_axis="linear", min_increment=0, max_increment=75308, increment=154166.6667,
        offset_shift=0, initial_stroke_length=0.077522286, offset=0.340771,
        pivot_radius=0.3191, radius_shift=0, clockwise_axis_movement=1,
        initial_angle=0.943922248, min_movement_angle=-0.95993,
        max_movement_angle=0.925674074, movement_speed=0,
    ),
)  # fmt: skip
#: PAINT's concentrator translation of the Jülich heliostats (east, north, up). [m]
CONCENTRATOR_ENU_M = (0.0, 0.175, 0.0)
TARGET_NAMES = ("solar_tower_juelich_upper", "solar_tower_juelich_lower")


def kinematics(position_enu_m) -> HeliostatKinematics:
    """A Jülich heliostat at ``position_enu_m`` as our chain sees it (axis-1 angle − π/2,
    :mod:`heliostat.calibration.paint`)."""
    axes = [
        LinearAxis(
            a["increment"], a["initial_stroke_length"], a["offset"], a["pivot_radius"],
            a["initial_angle"] - (math.pi / 2 if i == 0 else 0.0),
            bool(a["clockwise_axis_movement"]), a["min_increment"], a["max_increment"],
        )
        for i, a in enumerate(JULICH_ACTUATORS)
    ]  # fmt: skip
    return HeliostatKinematics(
        "linear", tuple(position_enu_m), axes[0], axes[1], mirror_offset_enu_m=CONCENTRATOR_ENU_M
    )


def write_synthetic_archive(
    out: str | Path,
    tower_file: str | Path,
    n_heliostats: int = 4,
    n_records: int = 40,
    seed: int = 20260416,
    noise_mrad: float = 0.2,
    template_properties: str | Path | None = None,
) -> dict:
    """Write a synthetic PAINT archive; return the truth written to ``truth.json``.

    Parameters
    ----------
    out : path
        Output folder.
    tower_file : path
        A real ``*-tower-measurements.json`` (site and targets).
    n_heliostats, n_records : int
        Heliostats (ids ``SY01``…) and records per heliostat (random daytime times over
        two years, sun above 10°, alternating the two targets).
    seed : int
    noise_mrad : float
        Spot noise per axis as a beam angle (HeliOS). [mrad]
    template_properties : path, optional
        A real ``*-heliostat-properties.json`` whose ``facet_properties`` and
        ``renovation`` are copied (ARTIST needs the facets; our reader ignores them).
    """
    out = Path(out)
    rng = np.random.default_rng(seed)
    site, targets = load_tower(tower_file)
    tower_text = Path(tower_file).read_text()
    (out / Path(tower_file).name).parent.mkdir(parents=True, exist_ok=True)
    (out / Path(tower_file).name).write_text(tower_text)
    extra = {}
    if template_properties is not None:
        real = json.loads(Path(template_properties).read_text())
        extra = {k: real[k] for k in ("facet_properties", "renovation") if k in real}
    truth: dict = {"seed": seed, "noise_mrad": noise_mrad, "heliostats": {}}
    for h in range(n_heliostats):
        hid = f"SY{h + 1:02d}"
        # 20–90 m from the tower, north of it, within ±50° of north.
        r, a = rng.uniform(20.0, 90.0), np.radians(rng.uniform(-50.0, 50.0))
        pos = (float(r * np.sin(a)), float(r * np.cos(a)), float(rng.uniform(1.0, 2.0)))
        kin = kinematics(pos)
        hel = Heliostat(hid, kin, Mirror(3.22, 2.56), "", 1)
        err = draw_true_errors("linear", rng, translation_m=0.0)
        # Random daytime times over two years with the sun above 10°.
        days = rng.integers(0, 730, 8 * n_records)
        hours = rng.uniform(5.0, 18.0, 8 * n_records)
        cand = pd.DatetimeIndex(
            [pd.Timestamp("2021-01-01", tz="UTC") + pd.Timedelta(days=int(d), hours=float(hh))
             for d, hh in zip(days, hours, strict=True)]
        )  # fmt: skip
        up = sun_position(site, cand).elevation_rad > np.radians(10.0)
        times = cand[up][:n_records]
        if len(times) < n_records:
            raise ValueError(f"{hid}: only {len(times)} daytime records drawn")
        frames = [
            simulate_observations(hel, err, targets[name], site, times[i::2], rng, noise_mrad)
            for i, name in enumerate(TARGET_NAMES)
        ]
        df = pd.concat(frames).sort_values("time_utc").reset_index(drop=True)
        _write_heliostat(out, hid, pos, site, targets, df, rng, extra)
        truth["heliostats"][hid] = {"position_enu_m": list(pos), "errors": err.to_dict()}
    (out / "truth.json").write_text(json.dumps(truth, indent=2))
    return truth


def _wgs84(site, p_enu) -> list[float]:
    lat, lon, h = site.enu_to_wgs84(np.asarray(p_enu, dtype=float))
    return [float(lat), float(lon), float(h)]


def calibration_record(
    row, target, site, position_enu_m, rng: np.random.Generator, utis_noise_mrad: float = 0.3
) -> dict:
    """One ``*-calibration-properties.json`` document in PAINT's schema from a row of
    :func:`sim.observe.simulate_observations` (motor steps, sun, the measured spot as
    HeliOS's; UTIS's spot drawn around the true one with ``utis_noise_mrad`` of beam
    angle at the slant range). PAINT's sun azimuth is 180° − ours (wrapped to ±180°)."""
    true_xy = np.array([row.true_spot_x_m, row.true_spot_y_m])
    slant = np.linalg.norm(target.plane_to_enu(true_xy) - np.asarray(position_enu_m))
    utis = target.plane_to_enu(true_xy + rng.normal(0, utis_noise_mrad * 1e-3 * slant, 2))
    az_paint = (180.0 - row.sun_azimuth_deg + 180.0) % 360.0 - 180.0
    return {
        "motor_position": {
            "axis_1_motor_position": int(row.axis1_steps),
            "axis_2_motor_position": int(row.axis2_steps),
        },
        "target_name": row.target_id,
        "sun_elevation": float(row.sun_elevation_deg),
        "sun_azimuth": float(az_paint),
        "focal_spot": {
            "HeliOS": _wgs84(site, [row.spot_e_m, row.spot_n_m, row.spot_u_m]),
            "UTIS": _wgs84(site, utis),
        },
    }


def _write_heliostat(
    out: Path, hid: str, pos, site, targets, df: pd.DataFrame, rng, extra: dict
) -> None:
    (out / hid / "Calibration").mkdir(parents=True, exist_ok=True)
    (out / hid / "Properties").mkdir(parents=True, exist_ok=True)
    props = {
        "heliostat_position": _wgs84(site, pos),
        "height": 2.56,
        "width": 3.22,
        "initial_orientation": [0.0, -1.0, 0.0],
        "kinematics_properties": {
            "actuators": [dict(a) for a in JULICH_ACTUATORS],
            **{f"joint_translation_{c}_{j}": 0.0 for j in (1, 2) for c in "enu"},
            **{f"concentrator_translation_{c}": v
               for c, v in zip("enu", CONCENTRATOR_ENU_M, strict=True)},
        },
        **extra,
    }  # fmt: skip
    (out / hid / "Properties" / f"{hid}-heliostat-properties.json").write_text(
        json.dumps(props, indent=2)
    )
    meta = []
    base = 200000 + 1000 * int(hid[2:])
    for k, row in df.iterrows():
        rec = calibration_record(row, targets[row.target_id], site, pos, rng)
        rid = base + int(k)
        (out / hid / "Calibration" / f"{rid}-calibration-properties.json").write_text(
            json.dumps(rec, indent=2)
        )
        meta.append(
            {
                "Id": rid,
                "HeliostatId": hid,
                "Azimuth": rec["sun_azimuth"],
                "Elevation": rec["sun_elevation"],
                "DateTime": pd.Timestamp(row.time_utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )
    (out / "metadata").mkdir(exist_ok=True)
    pd.DataFrame(meta).set_index("Id").to_csv(out / "metadata" / f"{hid}-calibration-metadata.csv")
