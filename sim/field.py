"""Simulated fields: a radial-staggered heliostat layout around a tower, targets on the
tower, controller buses, and each heliostat's true (hidden) kinematic errors.

The plant configuration (:class:`heliostat.config.FieldConfig`, written as ``field.toml``)
holds only what a plant knows: positions, nominal drives, mirrors, buses. The true errors
the calibration has to find are kept apart, in ``truth.json``.

Layout
------
Rows of heliostats on circles around the tower foot, on the pole side of the tower (north
of it in the northern hemisphere) within ±``half_sector_deg`` of the meridian. Along a row
the heliostats are ``azimuthal_spacing`` mirror diagonals apart (arc length); rows are
``radial_spacing`` diagonals apart, and every other row is shifted by half a slot, the
classic radial-stagger pattern [1]_. Both spacings exceed one mirror diagonal, so no two
mirrors can touch whatever their pose.

References
----------
.. [1] F. J. Collado and J. Guallar, "A review of optimized design layouts for solar power
   tower plants with campo code," Renewable and Sustainable Energy Reviews 20, 142-154,
   2013. doi:10.1016/j.rser.2012.11.076
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from heliostat.config import (
    ArucoMarkers,
    Bus,
    FieldConfig,
    Heliostat,
    Mirror,
    Safety,
    Target,
    dumps_toml,
    field_to_dict,
)
from heliostat.frames import Site
from heliostat.kinematics import HeliostatKinematics, KinematicErrors, drive, drive_names
from heliostat.kinematics.drives import azel, linear
from sim.observe import draw_true_errors
from sim.reproduce import stable_numbers

#: Reference site of generated fields: the Jülich solar tower (DLR), WGS84.
JUELICH_SITE = Site(50.913296, 6.387514, 87.0, "Simulated plant (Jülich site)")

#: Schema tag written into ``truth.json``.
TRUTH_SCHEMA = "heliostat-sim-truth/1"

#: Largest Modbus RTU slave address (addresses 1..247).
MAX_MODBUS_ADDRESS = 247

#: ``drives="mixed"``: this drive type within ±``linear_half_sector_deg`` of the meridian,
#: where the limited travel of linear actuators reaches the target all day …
MIXED_INNER = linear.DRIVE.name
#: … and this one outside.
MIXED_OUTER = azel.DRIVE.name

#: Mirror reflectivity and slope error of generated heliostats. [1], [mrad]
REFLECTIVITY = 0.93
SLOPE_ERROR_MRAD = 1.5


def drive_choices() -> tuple[str, ...]:
    """Values of ``generate_field(drives=...)``: every registered drive type, or mixed."""
    return (*drive_names(), "mixed")


# --------------------------------------------------------------------------- drives
def typical_kinematics(
    drive_type: str, position_enu_m: tuple[float, float, float]
) -> HeliostatKinematics:
    """Nominal kinematics of a typical heliostat of a drive type (its module's
    :class:`~heliostat.kinematics.drives.Typical`) at a position."""
    t = drive(drive_type).typical
    return HeliostatKinematics(
        drive=drive_type,
        position_enu_m=position_enu_m,
        axis1=t.axis1,
        axis2=t.axis2,
        axis1_offset_enu_m=t.axis1_offset_enu_m,
        axis2_offset_enu_m=t.axis2_offset_enu_m,
        mirror_offset_enu_m=t.mirror_offset_enu_m,
    )


def typical_mirror(drive_type: str) -> Mirror:
    """Mirror of a typical heliostat of a drive type."""
    t = drive(drive_type).typical
    return Mirror(t.mirror_width_m, t.mirror_height_m, REFLECTIVITY, SLOPE_ERROR_MRAD)


def azel_drive(position_enu_m: tuple[float, float, float]) -> HeliostatKinematics:
    """Nominal az-el slew drive: 1000 steps per degree on both axes, azimuth zero
    facing south (the mirror of a pole-side heliostat faces the tower), ±170° travel."""
    return typical_kinematics(azel.DRIVE.name, position_enu_m)


def linear_drive(position_enu_m: tuple[float, float, float]) -> HeliostatKinematics:
    """Nominal Jülich-type drive with two linear actuators (the actuator numbers of the
    PAINT heliostat-properties files, as in ``tests/data/field_small.toml``)."""
    return typical_kinematics(linear.DRIVE.name, position_enu_m)


#: Mirrors of the two built-in heliostat types. [m]
AZEL_MIRROR = typical_mirror(azel.DRIVE.name)
LINEAR_MIRROR = typical_mirror(linear.DRIVE.name)


# --------------------------------------------------------------------------- layout
def radial_staggered_layout(
    n: int,
    mirror_diagonal_m: float,
    first_radius_m: float = 30.0,
    azimuthal_spacing: float = 2.5,
    radial_spacing: float = 2.0,
    half_sector_deg: float = 65.0,
) -> NDArray[np.float64]:
    """Ground positions of ``n`` heliostats in a radial-staggered field.

    Parameters
    ----------
    n : int
        Number of heliostats (≥ 1).
    mirror_diagonal_m : float
        Mirror diagonal D; the spacings are multiples of it. [m]
    first_radius_m : float
        Radius of the innermost row from the tower foot. [m]
    azimuthal_spacing, radial_spacing : float
        Arc-length spacing along a row and spacing between rows, in mirror diagonals
        (both must exceed 1 so mirrors never collide). [1]
    half_sector_deg : float
        Half-width of the field sector around the pole-ward meridian. [deg]

    Returns
    -------
    ndarray of shape (n, 2)
        ``(bearing_rad, radius_m)`` of each heliostat: bearing from the tower foot,
        measured from the pole-ward direction, positive toward east; filled row by row,
        inner rows first, each row from west to east.
    """
    if not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"number of heliostats must be a positive integer, got {n!r}")
    if azimuthal_spacing <= 1.0 or radial_spacing <= 1.0:
        raise ValueError(
            "azimuthal_spacing and radial_spacing must exceed one mirror diagonal, got "
            f"{azimuthal_spacing!r} and {radial_spacing!r}"
        )
    if not 0.0 < half_sector_deg <= 180.0:
        raise ValueError(f"half_sector_deg must lie in (0, 180], got {half_sector_deg!r}")
    half = math.radians(half_sector_deg)
    ds = azimuthal_spacing * mirror_diagonal_m
    dr = radial_spacing * mirror_diagonal_m
    out: list[tuple[float, float]] = []
    row = 0
    while len(out) < n:
        r = first_radius_m + row * dr
        dphi = ds / r
        # slots at k·dphi (even rows) or (k + ½)·dphi (odd rows), inside ±half
        shift = 0.5 if row % 2 else 0.0
        kmax = math.floor(half / dphi - shift)
        ks = np.arange(-kmax - (1 if shift else 0), kmax + 1) + shift
        ks = ks[np.abs(ks * dphi) <= half + 1e-12]
        for k in ks:
            out.append((float(k * dphi), r))
            if len(out) == n:
                break
        row += 1
    return np.array(out)


# --------------------------------------------------------------------------- targets
def tower_targets(
    pole_sign: float, tower_height_m: float = 50.0, calibration_height_m: float = 35.0
) -> dict[str, Target]:
    """A calibration target with ArUco markers and a receiver aperture on the tower.

    ``cal1``: 6 m × 6 m, vertical, facing the field, centre ``calibration_height_m`` up,
    one 0.6 m ``DICT_4X4_50`` marker inset 0.1 m at each corner. ``receiver``: 4 m × 4 m,
    tilted 25° down toward the field, at ``tower_height_m``.
    """
    tilt = math.radians(25.0)
    cal = Target.make(
        "cal1",
        (0.0, 0.0, calibration_height_m),
        (0.0, pole_sign, 0.0),
        6.0,
        6.0,
        ArucoMarkers("DICT_4X4_50", (0, 1, 2, 3), 0.6, 0.1),
    )
    rec = Target.make(
        "receiver",
        (0.0, 0.0, tower_height_m),
        (0.0, pole_sign * math.cos(tilt), -math.sin(tilt)),
        4.0,
        4.0,
    )
    return {cal.id: cal, rec.id: rec}


# --------------------------------------------------------------------------- field
def generate_field(
    n_heliostats: int,
    rng: np.random.Generator,
    drives: str = "mixed",
    site: Site = JUELICH_SITE,
    first_radius_m: float = 30.0,
    linear_half_sector_deg: float = 30.0,
    per_bus: int = MAX_MODBUS_ADDRESS,
) -> FieldConfig:
    """A generated plant: radial-staggered heliostats north (south, below the equator)
    of a tower carrying a calibration target and a receiver.

    Parameters
    ----------
    n_heliostats : int
        Number of heliostats.
    rng : numpy.random.Generator
        Seeded generator for the small terrain undulation (the caller owns the seed).
    drives : str
        A registered drive type (``"azel"``, ``"linear"`` for Jülich-type linear
        actuators, …: every heliostat is its module's typical one) or ``"mixed"``:
        :data:`MIXED_INNER` (linear) drives within ±``linear_half_sector_deg`` of the
        meridian, where their limited actuator travel reaches the target all day,
        :data:`MIXED_OUTER` (az-el) drives outside.
    site : Site
        Plant reference point (the tower foot).
    first_radius_m : float
        Radius of the innermost row. [m]
    per_bus : int
        Controllers per RS-485 bus (Modbus addresses 1..``per_bus``; at most 247).

    Returns
    -------
    FieldConfig
        Ids ``H001``…, buses ``bus1``… on ``loop://`` ports, addresses 1.. per bus.
    """
    choices = drive_choices()
    if drives not in choices:
        raise ValueError(f"drives must be one of {', '.join(choices)}, got {drives!r}")
    if not 1 <= per_bus <= MAX_MODBUS_ADDRESS:
        raise ValueError(f"per_bus must lie in [1, {MAX_MODBUS_ADDRESS}], got {per_bus!r}")
    used = (MIXED_INNER, MIXED_OUTER) if drives == "mixed" else (drives,)
    pole = 1.0 if site.latitude_deg >= 0 else -1.0
    south_only = [d for d in used if drive(d).typical.northern_fields_only]
    if pole < 0 and south_only:
        raise ValueError(
            f"{', '.join(south_only)} drives face south at rest and suit northern fields "
            f"only; site latitude is {site.latitude_deg} deg: use drives="
            f"{', '.join(repr(d) for d in drive_names() if d not in south_only)}"
        )
    # spacing for the largest mirror of any drive type: the layout does not depend on the mix
    diag = max(math.hypot(m.width_m, m.height_m) for m in map(typical_mirror, drive_names()))
    polar = radial_staggered_layout(n_heliostats, diag, first_radius_m)
    width = max(3, len(str(n_heliostats)))
    heliostats: dict[str, Heliostat] = {}
    buses: dict[str, Bus] = {}
    # terrain: a 0.5 % grade rising away from the tower plus ±0.1 m undulation
    bumps = rng.normal(0.0, 0.1, size=len(polar))
    for i, ((bearing, radius), bump) in enumerate(zip(polar, bumps, strict=True)):
        e = radius * math.sin(bearing)
        nn = pole * radius * math.cos(bearing)
        pos = (round(e, 3), round(nn, 3), round(0.005 * radius + float(bump), 3))
        inner = abs(bearing) <= math.radians(linear_half_sector_deg)
        kind = drives if drives != "mixed" else (MIXED_INNER if inner else MIXED_OUTER)
        kin = typical_kinematics(kind, pos)
        bus = f"bus{i // per_bus + 1}"
        buses.setdefault(bus, Bus(bus, "loop://", 115200))
        hid = f"H{i + 1:0{width}d}"
        heliostats[hid] = Heliostat(hid, kin, typical_mirror(kind), bus, i % per_bus + 1)
    return FieldConfig(
        site=site,
        targets=tower_targets(pole),
        heliostats=heliostats,
        buses=buses,
        safety=Safety(max_correction_mrad=20.0, require_confirmation=True),
        source="generated",
    )


def field_toml(field: FieldConfig) -> str:
    """The field as ``field.toml`` text (readable by :func:`heliostat.config.load_field`)."""
    header = (
        "# Simulated plant written by `heliostat sim` (sim/field.py). True kinematic\n"
        "# errors are not in this file: see truth.json next to it.\n"
    )
    return header + dumps_toml(stable_numbers(field_to_dict(field)))


# --------------------------------------------------------------------------- truth
def draw_truth(field: FieldConfig, rng: np.random.Generator) -> dict[str, KinematicErrors]:
    """True error parameters for every heliostat, drawn in field order with
    :func:`sim.observe.draw_true_errors` (1–3 mrad per angular term, ~1 cm translations,
    ~2 mm actuator strokes)."""
    return {hid: draw_true_errors(h.kinematics.drive, rng) for hid, h in field.heliostats.items()}


def truth_to_dict(
    truth: Mapping[str, KinematicErrors], seed: int | None = None, effects: dict | None = None
) -> dict:
    """``truth.json`` content: per heliostat its drive and named true errors, and with
    ``effects`` (:func:`sim.effects.draws_to_dict`) the draws of the effects outside the
    fitted model under the key ``effects``."""
    out: dict[str, Any] = {"schema": TRUTH_SCHEMA}
    if seed is not None:
        out["seed"] = int(seed)
    out["units"] = "names ending _rad are radians, _m metres"
    out["heliostats"] = {hid: {"drive": e.drive, "errors": e.to_dict()} for hid, e in truth.items()}
    if effects is not None:
        out["effects"] = effects
    return out


def truth_json(
    truth: Mapping[str, KinematicErrors], seed: int | None = None, effects: dict | None = None
) -> str:
    """``truth.json`` text (stable key order; floats at the precision every machine agrees
    on, :func:`sim.reproduce.stable_numbers`)."""
    return json.dumps(stable_numbers(truth_to_dict(truth, seed, effects)), indent=2) + "\n"


def load_truth(path: str | Path, field: FieldConfig | None = None) -> dict[str, KinematicErrors]:
    """Read ``truth.json``; with ``field``, check it covers every heliostat with the
    right drive type.

    Raises
    ------
    ValueError
        Naming the file and the heliostat for anything missing or inconsistent.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{p}: file not found") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("schema") != TRUTH_SCHEMA:
        raise ValueError(f"{p}: expected schema {TRUTH_SCHEMA!r}, got {data.get('schema')!r}")
    out: dict[str, KinematicErrors] = {}
    for hid, rec in data.get("heliostats", {}).items():
        try:
            out[hid] = KinematicErrors.from_dict(rec["drive"], rec["errors"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{p}: heliostat {hid!r}: {exc}") from None
    if field is not None:
        for hid, h in field.heliostats.items():
            if hid not in out:
                raise ValueError(f"{p}: no true errors for heliostat {hid!r} of the field")
            if out[hid].drive != h.kinematics.drive:
                raise ValueError(
                    f"{p}: heliostat {hid!r}: truth is for drive {out[hid].drive!r}, "
                    f"field says {h.kinematics.drive!r}"
                )
    return out
