"""Read the PAINT calibration archive (DLR / Jülich solar tower) directly.

Three kinds of file, all JSON, positions in WGS84 [lat_deg, lon_deg, alt_m]:

``*tower-measurements.json``
    ``power_plant_properties.coordinates`` (the ENU origin used here) and one entry per
    target: ``type`` (``"planar"`` targets are used), ``normal_vector`` (ENU),
    ``coordinates.center`` / ``upper_left`` / ``upper_right`` / ``lower_left`` /
    ``lower_right``.
``*-heliostat-properties.json``
    ``heliostat_position``, ``width``, ``height`` and ``kinematic_properties``: a list of
    two ``actuators`` (``type_axis`` linear, ``increment`` [steps/m],
    ``initial_stroke_length`` [m], ``offset`` [m], ``pivot_radius`` [m],
    ``initial_angle`` [rad], ``clockwise_axis_movement`` 0/1, ``min_increment``,
    ``max_increment`` [steps]) and the joint translations ``joint_translation_{e,n,u}_1``,
    ``joint_translation_{e,n,u}_2``, ``concentrator_translation_{e,n,u}`` [m]. The
    spelling ``kinematic.first_joint_translation_e`` / ``second_joint_translation_e`` is
    accepted too.
``*-calibration-properties.json``
    ``motor_position.axis_1_motor_position`` / ``axis_2_motor_position`` [steps],
    ``target_name``, ``sun_azimuth`` / ``sun_elevation`` [deg] and
    ``focal_spot.HeliOS`` / ``focal_spot.UTIS`` (WGS84).

Conventions resolved (see ``docs/observations.md``):

* PAINT's ``sun_azimuth`` is measured from south, positive toward east
  (PAINT computes it as atan2(E, −N)); north-clockwise azimuth = 180° − it.
* PAINT's axis-1 ``initial_angle`` is measured from the mirror-vertical pose (ARTIST adds
  an initial-orientation offset of π/2 about east for PAINT heliostats); our chain has no
  such offset, so axis 1's ``initial_angle_rad`` = PAINT value − π/2. Axis 2 carries over
  unchanged. With this the normal sweeps from near zenith at 0 steps to horizontal-south
  at full stroke, as the Jülich heliostats do.
* Translations map by their key names (``_n`` → north, ``_u`` → up).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from heliostat.calibration.observations import Observations, Rejection, observations_from_frame
from heliostat.config import FieldConfig, Heliostat, Mirror, Target
from heliostat.frames import Site
from heliostat.kinematics import HeliostatKinematics, LinearAxis
from heliostat.kinematics.drives.linear import DRIVE as LINEAR_DRIVE

#: Focal-spot methods in the calibration files (CLI spelling → JSON key).
SPOT_METHODS = {"helios": "HeliOS", "utis": "UTIS"}
#: PAINT's ``type_axis`` of a linear actuator, the only kind its heliostats have (the
#: archive's vocabulary, not our drive-type name). PAINT heliostats are read as
#: :mod:`heliostat.kinematics.drives.linear` drives.
PAINT_LINEAR_ACTUATOR = "linear"
#: Axis-1 angle offset between PAINT/ARTIST and our chain. [rad]
AXIS1_ANGLE_OFFSET_RAD = -math.pi / 2


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def _get(d: dict[str, Any], path: Path, *keys: str) -> Any:
    cur: Any = d
    for i, k in enumerate(keys):
        if not isinstance(cur, dict) or k not in cur:
            raise ValueError(f"{path}: key {'.'.join(keys[: i + 1])!r} missing")
        cur = cur[k]
    return cur


def _wgs84(v: Any, path: Path, key: str) -> tuple[float, float, float]:
    ok = isinstance(v, list | tuple) and len(v) == 3
    try:
        out = tuple(float(x) for x in v) if ok else ()
    except (TypeError, ValueError):
        out = ()
    if len(out) != 3 or not all(math.isfinite(x) for x in out):
        raise ValueError(f"{path}: {key}: expected [lat_deg, lon_deg, alt_m], got {v!r}")
    return out  # type: ignore[return-value]


def load_tower(path: str | Path) -> tuple[Site, dict[str, Target]]:
    """Site (the power plant position) and the planar targets of a tower-measurements file."""
    p = Path(path)
    d = _load_json(p)
    lat, lon, alt = _wgs84(
        _get(d, p, "power_plant_properties", "coordinates"),
        p,
        "power_plant_properties.coordinates",
    )
    site = Site(lat, lon, alt, str(d["power_plant_properties"].get("ID", "PAINT plant")))
    targets: dict[str, Target] = {}
    for name, t in d.items():
        if name == "power_plant_properties" or not isinstance(t, dict):
            continue
        if t.get("type") != "planar":
            continue
        c = _get(t, p, "coordinates")

        def enu(key: str, c=c, name=name) -> np.ndarray:
            return site.wgs84_to_enu(*_wgs84(c.get(key), p, f"{name}.coordinates.{key}"))

        normal = np.asarray(_get(t, p, "normal_vector"), dtype=float)
        ul, ur, ll = enu("upper_left"), enu("upper_right"), enu("lower_left")
        targets[name] = Target.make(
            name,
            enu("center"),
            normal,
            float(np.linalg.norm(ur - ul)),
            float(np.linalg.norm(ul - ll)),
        )
    if not targets:
        raise ValueError(f"{p}: no planar target found")
    return site, targets


def _translation(kp: dict[str, Any], which: str) -> tuple[float, float, float]:
    """PAINT (``joint_translation_e_1``) or ARTIST-style (``first_joint_translation_e``)."""
    out = []
    for c in "enu":
        keys = {
            "axis1": (f"joint_translation_{c}_1", f"first_joint_translation_{c}"),
            "axis2": (f"joint_translation_{c}_2", f"second_joint_translation_{c}"),
            "mirror": (f"concentrator_translation_{c}",),
        }[which]
        out.append(float(next((kp[k] for k in keys if k in kp), 0.0)))
    return tuple(out)  # type: ignore[return-value]


def load_heliostat(path: str | Path, site: Site, heliostat_id: str | None = None) -> Heliostat:
    """A linear-actuator heliostat from a ``*-heliostat-properties.json``.

    The id is the file-name prefix before ``-heliostat-properties`` unless given.
    """
    p = Path(path)
    d = _load_json(p)
    hid = heliostat_id or p.name.split("-heliostat-properties")[0]
    pos = site.wgs84_to_enu(*_wgs84(_get(d, p, "heliostat_position"), p, "heliostat_position"))
    kp = d.get("kinematic_properties", d.get("kinematic"))
    if not isinstance(kp, dict):
        raise ValueError(f"{p}: key 'kinematic_properties' missing")
    acts = kp.get("actuators")
    if not isinstance(acts, list) or len(acts) != 2:
        raise ValueError(f"{p}: kinematic_properties.actuators: expected a list of 2 actuators")
    axes = []
    for i, a in enumerate(acts):
        where = f"kinematic_properties.actuators[{i}]"
        kind = str(a.get("type_axis", PAINT_LINEAR_ACTUATOR)).lower()
        if kind != PAINT_LINEAR_ACTUATOR:
            raise ValueError(f"{p}: {where}.type_axis: only linear actuators, got {kind!r}")
        try:
            axes.append(
                LinearAxis(
                    increment_steps_per_m=float(a["increment"]),
                    initial_stroke_m=float(a["initial_stroke_length"]),
                    offset_m=float(a["offset"]),
                    pivot_radius_m=float(a["pivot_radius"]),
                    initial_angle_rad=float(a["initial_angle"])
                    + (AXIS1_ANGLE_OFFSET_RAD if i == 0 else 0.0),
                    clockwise=bool(int(a["clockwise_axis_movement"])),
                    min_steps=int(a.get("min_increment", 0)),
                    max_steps=int(a["max_increment"]),
                )
            )
        except KeyError as exc:
            raise ValueError(f"{p}: {where}: key {exc.args[0]!r} missing") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{p}: {where}: {exc}") from None
    kin = HeliostatKinematics(
        LINEAR_DRIVE.name,
        tuple(float(x) for x in pos),
        axes[0],
        axes[1],
        _translation(kp, "axis1"),
        _translation(kp, "axis2"),
        _translation(kp, "mirror"),
    )
    mirror = Mirror(width_m=float(d.get("width", 3.22)), height_m=float(d.get("height", 2.56)))
    return Heliostat(hid, kin, mirror, "", 1)


def paint_sun_azimuth_to_north_deg(azimuth_deg: float) -> float:
    """PAINT sun azimuth (from south, positive toward east) → clockwise from north. [deg]"""
    return float(np.mod(180.0 - azimuth_deg, 360.0))


@dataclass(frozen=True, slots=True)
class PaintCampaign:
    """One heliostat's PAINT files, read and converted.

    Attributes
    ----------
    field : FieldConfig
        Site (power plant), the tower's planar targets and the one heliostat.
    heliostat_id : str
    observations : Observations or None
        Valid calibration records (None if every record was rejected).
    rejected : list of Rejection
        Records not used; ``row`` is the record's position in ``files``.
    files : tuple of str
        The calibration-properties files, in the order read (sorted by name).
    """

    field: FieldConfig
    heliostat_id: str
    observations: Observations | None
    rejected: list[Rejection]
    files: tuple[str, ...]


def _one(paths: list[Path], what: str, root: Path) -> Path:
    if len(paths) != 1:
        found = ", ".join(str(x) for x in paths) or "none"
        raise ValueError(f"{root}: expected exactly one {what} file, found {found}")
    return paths[0]


def load_paint_dir(directory: str | Path, spot: str = "helios") -> PaintCampaign:
    """Read one heliostat's PAINT files under ``directory`` (searched recursively).

    Parameters
    ----------
    directory : path
        Holds one ``*-heliostat-properties.json``, one ``*tower-measurements.json`` and the
        ``*-calibration-properties.json`` records.
    spot : {"helios", "utis"}
        Which focal-spot method's position to use (case-insensitive).
    """
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory")
    key = SPOT_METHODS.get(spot.lower())
    if key is None:
        raise ValueError(f"spot must be one of {', '.join(SPOT_METHODS)}, got {spot!r}")
    tower = _one(sorted(root.rglob("*tower-measurements.json")), "tower-measurements", root)
    props = _one(sorted(root.rglob("*-heliostat-properties.json")), "heliostat-properties", root)
    cals = sorted(root.rglob("*-calibration-properties.json"))
    if not cals:
        raise ValueError(f"{root}: no *-calibration-properties.json files")
    site, targets = load_tower(tower)
    hel = load_heliostat(props, site)
    field = FieldConfig(site, targets, {hel.id: hel}, source=str(root))
    rows = []
    pre_rejected: list[Rejection] = []
    for i, path in enumerate(cals):
        row = {"heliostat_id": hel.id}
        try:
            d = _load_json(path)
            mp = _get(d, path, "motor_position")
            row["axis1_steps"] = mp.get("axis_1_motor_position", mp.get("Axis1MotorPosition"))
            row["axis2_steps"] = mp.get("axis_2_motor_position", mp.get("Axis2MotorPosition"))
            row["target_id"] = str(_get(d, path, "target_name"))
            az = float(_get(d, path, "sun_azimuth"))
            row["sun_azimuth_deg"] = paint_sun_azimuth_to_north_deg(az)
            row["sun_elevation_deg"] = float(_get(d, path, "sun_elevation"))
            spot_w = _get(d, path, "focal_spot", key)
            e, n, u = site.wgs84_to_enu(*_wgs84(spot_w, path, f"focal_spot.{key}"))
            row.update(spot_e_m=e, spot_n_m=n, spot_u_m=u)
        except (ValueError, TypeError, AttributeError) as exc:
            pre_rejected.append(Rejection(i, f"{path.name}: {str(exc).replace(f'{path}: ', '')}"))
            row = {"heliostat_id": ""}  # rejected again below; keeps row numbers aligned
        rows.append(row)
    df = pd.DataFrame(rows).astype(object).where(pd.DataFrame(rows).notna(), "")
    obs, rejected = observations_from_frame(df, field, first_row=0)
    pre = {r.row for r in pre_rejected}
    rejected = pre_rejected + [
        Rejection(r.row, f"{cals[r.row].name}: {r.reason}") for r in rejected if r.row not in pre
    ]
    rejected.sort(key=lambda r: r.row)
    return PaintCampaign(field, hel.id, obs.get(hel.id), rejected, tuple(str(c) for c in cals))
