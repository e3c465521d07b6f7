"""Read the PAINT calibration archive (DLR / Jülich solar tower) directly.

Three kinds of file, all JSON, positions in WGS84 [lat_deg, lon_deg, alt_m]. The key
names are the archive's own, as its package ``paint-csp`` defines them in
``paint/util/paint_mappings.py`` (name there in brackets; a test compares them with the
module in paint-csp's wheel when one is at hand, ``tests/test_calibration_paint.py``):

``<plant>-tower-measurements.json`` (ARTIST's tutorials: ``tower-measurements.json``)
    ``power_plant_properties`` [``POWER_PLANT_KEY``] ``.coordinates`` (the ENU origin
    used here) and one entry per target: ``type`` (``"planar"`` targets are used;
    the ``"convex_cylinder"`` receiver is skipped), ``normal_vector`` (ENU),
    ``coordinates.center`` / ``upper_left`` / ``upper_right`` / ``lower_left`` /
    ``lower_right``.
``<ID>-heliostat-properties.json`` (ARTIST's tutorials: ``heliostat-properties.json``)
    ``heliostat_position``, ``width``, ``height``, ``initial_orientation`` (must be
    [0, −1, 0], the pose the axis-1 convention below assumes) and
    ``kinematics_properties`` [``KINEMATICS_PROPERTIES_KEY``]: a list of two
    ``actuators`` (keys: the values of ``HELIOSTAT_PROPERTIES_CONVERSION_MAP``;
    ``type_axis`` ``"linear"``, ``increment`` [steps/m], ``initial_stroke_length`` [m],
    ``offset`` [m], ``pivot_radius`` [m], ``initial_angle`` [rad],
    ``clockwise_axis_movement`` 0/1, ``min_increment``, ``max_increment`` [steps]) and
    the translations ``joint_translation_{e,n,u}_{1,2}``,
    ``concentrator_translation_{e,n,u}`` [m].
``<record>-calibration-properties.json``
    ``motor_position.axis_1_motor_position`` / ``axis_2_motor_position`` [steps],
    ``target_name``, ``sun_azimuth`` / ``sun_elevation`` [deg] and
    ``focal_spot.HeliOS`` / ``focal_spot.UTIS`` (WGS84).

Which files belong together (PAINT's download layout, the flat layout, ARTIST's
tutorial layout, a root holding many heliostats): :mod:`heliostat.calibration.paint_layout`.

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
from heliostat.calibration.paint_layout import HeliostatFiles, find_paint_files
from heliostat.config import FieldConfig, Heliostat, Mirror, Target
from heliostat.errors import InputError
from heliostat.frames import Site
from heliostat.kinematics import HeliostatKinematics, LinearAxis
from heliostat.kinematics.drives.linear import DRIVE as LINEAR_DRIVE

# The archive's key names (paint-csp ``paint_mappings`` constant in the comment).
KEY_POWER_PLANT = "power_plant_properties"  # POWER_PLANT_KEY
KEY_PLANT_ID = "ID"  # ID_KEY
KEY_TYPE = "type"  # TOWER_TYPE_KEY
TYPE_PLANAR = "planar"  # PLANAR_KEY
KEY_NORMAL = "normal_vector"  # TOWER_NORMAL_VECTOR_KEY
KEY_COORDINATES = "coordinates"  # TOWER_COORDINATES_KEY
KEY_CENTER = "center"  # CENTER
KEY_UPPER_LEFT = "upper_left"  # UPPER_LEFT
KEY_UPPER_RIGHT = "upper_right"  # UPPER_RIGHT
KEY_LOWER_LEFT = "lower_left"  # LOWER_LEFT
KEY_LOWER_RIGHT = "lower_right"  # LOWER_RIGHT
KEY_HELIOSTAT_POSITION = "heliostat_position"  # HELIOSTAT_POSITION_KEY
KEY_WIDTH = "width"  # HELIOSTAT_WIDTH_KEY
KEY_HEIGHT = "height"  # HELIOSTAT_HEIGHT_KEY
KEY_INITIAL_ORIENTATION = "initial_orientation"  # INITIAL_ORIENTATION_KEY
KEY_KINEMATICS = "kinematics_properties"  # KINEMATICS_PROPERTIES_KEY
KEY_ACTUATORS = "actuators"  # ACTUATOR_KEY
#: Actuator keys (values of paint-csp's HELIOSTAT_PROPERTIES_CONVERSION_MAP).
KEY_TYPE_AXIS = "type_axis"
KEY_MIN_INCREMENT = "min_increment"
KEY_MAX_INCREMENT = "max_increment"
KEY_INCREMENT = "increment"
KEY_INITIAL_STROKE = "initial_stroke_length"
KEY_OFFSET = "offset"
KEY_PIVOT_RADIUS = "pivot_radius"
KEY_CLOCKWISE = "clockwise_axis_movement"
KEY_INITIAL_ANGLE = "initial_angle"
#: Joint and concentrator translations per ENU component (FIRST_JOINT_TRANSLATION_E_KEY
#: … SECOND_JOINT_TRANSLATION_U_KEY, CONCENTRATOR_TRANSLATION_E_KEY …).
KEYS_JOINT1 = tuple(f"joint_translation_{c}_1" for c in "enu")
KEYS_JOINT2 = tuple(f"joint_translation_{c}_2" for c in "enu")
KEYS_CONCENTRATOR = tuple(f"concentrator_translation_{c}" for c in "enu")
KEY_MOTOR_POSITION = "motor_position"  # MOTOR_POS_KEY
KEY_AXIS1_STEPS = "axis_1_motor_position"  # AXIS1_MOTOR_SAVE
KEY_AXIS2_STEPS = "axis_2_motor_position"  # AXIS2_MOTOR_SAVE
KEY_TARGET_NAME = "target_name"  # TARGET_NAME_KEY
KEY_SUN_AZIMUTH = "sun_azimuth"  # SUN_AZIMUTH
KEY_SUN_ELEVATION = "sun_elevation"  # SUN_ELEVATION
KEY_FOCAL_SPOT = "focal_spot"  # FOCAL_SPOT_KEY
KEY_HELIOS = "HeliOS"  # HELIOS_KEY
KEY_UTIS = "UTIS"  # UTIS_KEY

#: Focal-spot methods in the calibration files (CLI spelling → JSON key).
SPOT_METHODS = {"helios": KEY_HELIOS, "utis": KEY_UTIS}
#: PAINT's ``type_axis`` of a linear actuator (the archive's vocabulary, not our
#: drive-type name). PAINT heliostats are read as :mod:`heliostat.kinematics.drives.linear`.
PAINT_LINEAR_ACTUATOR = "linear"
#: ``type_axis`` of ARTIST's ideal actuator: its motor positions *are* the joint angles.
PAINT_IDEAL_ACTUATOR = "ideal"
#: The mirror's pose at zero joint angles the axis-1 convention assumes (normal −N).
INITIAL_ORIENTATION = (0.0, -1.0, 0.0)
#: Axis-1 angle offset between PAINT/ARTIST and our chain. [rad]
AXIS1_ANGLE_OFFSET_RAD = -math.pi / 2


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    return data


def _get(d: dict[str, Any], path: Path, *keys: str) -> Any:
    cur: Any = d
    for i, k in enumerate(keys):
        if not isinstance(cur, dict) or k not in cur:
            raise InputError(f"{path}: key {'.'.join(keys[: i + 1])!r} missing")
        cur = cur[k]
    return cur


def _floats(v: Any, n: int, path: Path, key: str, what: str) -> tuple[float, ...]:
    ok = isinstance(v, list | tuple) and len(v) == n
    try:
        out = tuple(float(x) for x in v) if ok else ()
    except (TypeError, ValueError):
        out = ()
    if len(out) != n or not all(math.isfinite(x) for x in out):
        raise InputError(f"{path}: {key}: expected {what}, got {v!r}")
    return out


def _wgs84(v: Any, path: Path, key: str) -> tuple[float, float, float]:
    return _floats(v, 3, path, key, "[lat_deg, lon_deg, alt_m]")  # type: ignore[return-value]


def load_tower(path: str | Path) -> tuple[Site, dict[str, Target]]:
    """Site (the power plant position) and the planar targets of a tower-measurements file.

    Width and height are the distances upper-left → upper-right and upper-left →
    lower-left of the surveyed corners [m]; the centre is the file's ``center``.
    """
    p = Path(path)
    d = _load_json(p)
    where = f"{KEY_POWER_PLANT}.{KEY_COORDINATES}"
    lat, lon, alt = _wgs84(_get(d, p, KEY_POWER_PLANT, KEY_COORDINATES), p, where)
    site = Site(lat, lon, alt, str(d[KEY_POWER_PLANT].get(KEY_PLANT_ID, "PAINT plant")))
    targets: dict[str, Target] = {}
    for name, t in d.items():
        if name == KEY_POWER_PLANT or not isinstance(t, dict) or t.get(KEY_TYPE) != TYPE_PLANAR:
            continue
        c = _get(t, p, KEY_COORDINATES)

        def enu(key: str, c=c, name=name) -> np.ndarray:
            return site.wgs84_to_enu(*_wgs84(c.get(key), p, f"{name}.{KEY_COORDINATES}.{key}"))

        normal = _floats(_get(t, p, KEY_NORMAL), 3, p, f"{name}.{KEY_NORMAL}", "[e, n, u]")
        ul, ur, ll = enu(KEY_UPPER_LEFT), enu(KEY_UPPER_RIGHT), enu(KEY_LOWER_LEFT)
        targets[name] = Target.make(
            name,
            enu(KEY_CENTER),
            normal,
            float(np.linalg.norm(ur - ul)),
            float(np.linalg.norm(ul - ll)),
        )
    if not targets:
        raise InputError(f"{p}: no planar target found")
    return site, targets


def _translation(kp: dict[str, Any], keys: tuple[str, ...], p: Path) -> tuple[float, ...]:
    try:
        return tuple(float(kp.get(k, 0.0)) for k in keys)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{p}: {KEY_KINEMATICS}.{keys[0][:-2]}…: {exc}") from None


def _actuator(a: Any, i: int, p: Path) -> LinearAxis:
    where = f"{KEY_KINEMATICS}.{KEY_ACTUATORS}[{i}]"
    if not isinstance(a, dict):
        raise InputError(f"{p}: {where}: expected an object, got {a!r}")
    kind = str(a.get(KEY_TYPE_AXIS, "")).lower()
    if kind == PAINT_IDEAL_ACTUATOR and KEY_INCREMENT in a:
        raise InputError(
            f"{p}: {where} (actuator of axis {i + 1}): {KEY_TYPE_AXIS} is 'ideal' (motor "
            f"positions taken as joint angles) but it carries linear-actuator parameters "
            f"({KEY_INCREMENT} {a[KEY_INCREMENT]!r} steps/m, {KEY_INITIAL_STROKE} "
            f"{a.get(KEY_INITIAL_STROKE)!r} m): refusing to guess which is meant"
        )
    if kind != PAINT_LINEAR_ACTUATOR:
        raise InputError(
            f"{p}: {where}.{KEY_TYPE_AXIS}: only {PAINT_LINEAR_ACTUATOR!r} actuators are "
            f"modelled, got {a.get(KEY_TYPE_AXIS)!r}"
        )
    try:
        return LinearAxis(
            increment_steps_per_m=float(a[KEY_INCREMENT]),
            initial_stroke_m=float(a[KEY_INITIAL_STROKE]),
            offset_m=float(a[KEY_OFFSET]),
            pivot_radius_m=float(a[KEY_PIVOT_RADIUS]),
            initial_angle_rad=float(a[KEY_INITIAL_ANGLE])
            + (AXIS1_ANGLE_OFFSET_RAD if i == 0 else 0.0),
            clockwise=bool(int(a[KEY_CLOCKWISE])),
            min_steps=int(a.get(KEY_MIN_INCREMENT, 0)),
            max_steps=int(a[KEY_MAX_INCREMENT]),
        )
    except KeyError as exc:
        raise InputError(f"{p}: {where}: key {exc.args[0]!r} missing") from None
    except (TypeError, ValueError) as exc:
        raise InputError(f"{p}: {where}: {exc}") from None


def load_heliostat(path: str | Path, site: Site, heliostat_id: str | None = None) -> Heliostat:
    """A linear-actuator heliostat from a heliostat-properties file.

    The id is the file-name prefix before ``-heliostat-properties`` unless given.

    Raises
    ------
    InputError
        For a missing or malformed key, an ``initial_orientation`` other than [0, −1, 0],
        and an actuator that is not linear (an ``"ideal"`` one carrying linear-actuator
        parameters is named as such).
    """
    p = Path(path)
    d = _load_json(p)
    hid = heliostat_id or p.name.split("-heliostat-properties")[0]
    pos = site.wgs84_to_enu(*_wgs84(_get(d, p, KEY_HELIOSTAT_POSITION), p, KEY_HELIOSTAT_POSITION))
    if KEY_INITIAL_ORIENTATION in d:
        o = _floats(d[KEY_INITIAL_ORIENTATION], 3, p, KEY_INITIAL_ORIENTATION, "[e, n, u]")
        if not np.allclose(o, INITIAL_ORIENTATION):
            raise InputError(
                f"{p}: {KEY_INITIAL_ORIENTATION}: only {list(INITIAL_ORIENTATION)} (the "
                f"archive's) is supported, got {list(o)}"
            )
    kp = _get(d, p, KEY_KINEMATICS)
    acts = kp.get(KEY_ACTUATORS) if isinstance(kp, dict) else None
    if not isinstance(acts, list) or len(acts) != 2:
        raise InputError(f"{p}: {KEY_KINEMATICS}.{KEY_ACTUATORS}: expected a list of 2 actuators")
    axes = [_actuator(a, i, p) for i, a in enumerate(acts)]
    kin = HeliostatKinematics(
        LINEAR_DRIVE.name,
        tuple(float(x) for x in pos),
        axes[0],
        axes[1],
        _translation(kp, KEYS_JOINT1, p),
        _translation(kp, KEYS_JOINT2, p),
        _translation(kp, KEYS_CONCENTRATOR, p),
    )
    try:
        mirror = Mirror(
            width_m=float(d.get(KEY_WIDTH, 3.22)), height_m=float(d.get(KEY_HEIGHT, 2.56))
        )
    except (TypeError, ValueError) as exc:
        raise InputError(f"{p}: {KEY_WIDTH}/{KEY_HEIGHT}: {exc}") from None
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
        The calibration-properties files, in the order read (sorted by path).
    tower : str
        The tower-measurements file used.
    """

    field: FieldConfig
    heliostat_id: str
    observations: Observations | None
    rejected: list[Rejection]
    files: tuple[str, ...]
    tower: str = ""


@dataclass(frozen=True, slots=True)
class PaintArchive:
    """Every heliostat found under a folder.

    Attributes
    ----------
    campaigns : tuple of PaintCampaign
        Heliostats read, with at least one record file, sorted by id.
    refused : tuple of (str, str)
        (heliostat id, reason) for heliostats whose files could not be read.
    without_records : tuple of str
        Heliostats with a properties file and no calibration record.
    unassigned : tuple of str
        Calibration records under no heliostat's folder.
    """

    campaigns: tuple[PaintCampaign, ...]
    refused: tuple[tuple[str, str], ...]
    without_records: tuple[str, ...]
    unassigned: tuple[str, ...]


def _spot_key(spot: str) -> str:
    key = SPOT_METHODS.get(spot.lower())
    if key is None:
        raise InputError(f"spot must be one of {', '.join(SPOT_METHODS)}, got {spot!r}")
    return key


def load_campaign(files: HeliostatFiles, spot: str = "helios") -> PaintCampaign:
    """Read one heliostat's files (found by :func:`~.paint_layout.find_paint_files`).

    Raises
    ------
    InputError
        When the tower or properties file is missing or malformed, or there is no record.
        A malformed record is not an error: it is listed in ``rejected``.
    """
    key = _spot_key(spot)
    if files.tower is None:
        raise InputError(
            f"{files.properties}: no *tower-measurements.json in its folder or above it"
        )
    if not files.records:
        raise InputError(f"{files.properties.parent}: no *calibration-properties.json records")
    site, targets = load_tower(files.tower)
    hel = load_heliostat(files.properties, site, files.heliostat_id)
    field = FieldConfig(site, targets, {hel.id: hel}, source=str(files.properties))
    cals = files.records
    rows = []
    pre_rejected: list[Rejection] = []
    for i, path in enumerate(cals):
        row = {"heliostat_id": hel.id}
        try:
            d = _load_json(path)
            mp = _get(d, path, KEY_MOTOR_POSITION)
            row["axis1_steps"] = _get(mp, path, KEY_AXIS1_STEPS)
            row["axis2_steps"] = _get(mp, path, KEY_AXIS2_STEPS)
            row["target_id"] = str(_get(d, path, KEY_TARGET_NAME))
            az = float(_get(d, path, KEY_SUN_AZIMUTH))
            row["sun_azimuth_deg"] = paint_sun_azimuth_to_north_deg(az)
            row["sun_elevation_deg"] = float(_get(d, path, KEY_SUN_ELEVATION))
            spot_w = _get(d, path, KEY_FOCAL_SPOT, key)
            e, n, u = site.wgs84_to_enu(*_wgs84(spot_w, path, f"{KEY_FOCAL_SPOT}.{key}"))
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
    return PaintCampaign(
        field, hel.id, obs.get(hel.id), rejected, tuple(str(c) for c in cals), str(files.tower)
    )


def load_paint_root(root: str | Path, spot: str = "helios") -> PaintArchive:
    """Read every heliostat under ``root`` (any of the layouts of
    :mod:`~heliostat.calibration.paint_layout`); a heliostat whose files cannot be read
    is listed in ``refused`` with the reason, the others are read."""
    _spot_key(spot)
    layout = find_paint_files(root)
    campaigns, refused, without = [], [], []
    for h in layout.heliostats:
        if not h.records:
            without.append(h.heliostat_id)
            continue
        try:
            campaigns.append(load_campaign(h, spot))
        except (InputError, OSError) as exc:
            refused.append((h.heliostat_id, str(exc)))
    return PaintArchive(
        tuple(campaigns),
        tuple(refused),
        tuple(without),
        tuple(str(p) for p in layout.unassigned),
    )


def load_paint_dir(directory: str | Path, spot: str = "helios") -> PaintCampaign:
    """Read one heliostat's PAINT files under ``directory``.

    Parameters
    ----------
    directory : path
        A folder in any layout of :mod:`~heliostat.calibration.paint_layout` holding
        exactly one heliostat (the tower file may be in it or above it).
    spot : {"helios", "utis"}
        Which focal-spot method's position to use (case-insensitive).

    Raises
    ------
    InputError
        When the folder holds no heliostat or several, or its files cannot be read.
    """
    _spot_key(spot)
    layout = find_paint_files(directory)
    if len(layout.heliostats) != 1:
        ids = ", ".join(h.heliostat_id for h in layout.heliostats) or "none"
        raise InputError(
            f"{layout.root}: expected exactly one heliostat-properties file, found {ids} "
            "(use load_paint_root for many)"
        )
    return load_campaign(layout.heliostats[0], spot)
