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
from heliostat.kinematics import HeliostatKinematics, KinematicErrors, LinearAxis, RotaryAxis
from sim.observe import draw_true_errors
from sim.reproduce import stable_numbers

#: Reference site of generated fields: the Jülich solar tower (DLR), WGS84.
JUELICH_SITE = Site(50.913296, 6.387514, 87.0, "Simulated plant (Jülich site)")

#: Schema tag written into ``truth.json``.
TRUTH_SCHEMA = "heliostat-sim-truth/1"

#: Largest Modbus RTU slave address (addresses 1..247).
MAX_MODBUS_ADDRESS = 247

DRIVE_CHOICES = ("azel", "linear", "mixed")


# --------------------------------------------------------------------------- drives
def azel_drive(position_enu_m: tuple[float, float, float]) -> HeliostatKinematics:
    """Nominal az-el slew drive: 1000 steps per degree on both axes, azimuth zero
    facing south (the mirror of a pole-side heliostat faces the tower), ±170° travel."""
    return HeliostatKinematics(
        drive="azel",
        position_enu_m=position_enu_m,
        axis1=RotaryAxis(1000.0 * 180.0 / math.pi, math.radians(180.0), -170_000, 170_000),
        axis2=RotaryAxis(1000.0 * 180.0 / math.pi, 0.0, -5_000, 92_000),
        mirror_offset_enu_m=(0.0, 0.1, 0.0),
    )


def linear_drive(position_enu_m: tuple[float, float, float]) -> HeliostatKinematics:
    """Nominal Jülich-type drive with two linear actuators (the actuator numbers of the
    PAINT heliostat-properties files, as in ``tests/data/field_small.toml``)."""
    return HeliostatKinematics(
        drive="linear",
        position_enu_m=position_enu_m,
        axis1=LinearAxis(154166.666, 0.075, 0.34, 0.3204, math.radians(-90.0), False, 0, 70_000),
        axis2=LinearAxis(154166.666, 0.075, 0.3479, 0.309, math.radians(55.0), True, 0, 70_000),
        axis2_offset_enu_m=(0.0, 0.0, 0.315),
        mirror_offset_enu_m=(0.0, -0.17755, -0.4045),
    )


#: Mirrors of the two heliostat types. [m]
AZEL_MIRROR = Mirror(width_m=3.2, height_m=2.5, reflectivity=0.93, slope_error_mrad=1.5)
LINEAR_MIRROR = Mirror(width_m=3.2, height_m=2.44, reflectivity=0.93, slope_error_mrad=1.5)


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
        ``"azel"``, ``"linear"`` (Jülich-type linear actuators) or ``"mixed"``: linear
        drives within ±``linear_half_sector_deg`` of the meridian, where their limited
        actuator travel reaches the target all day, az-el drives outside.
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
    if drives not in DRIVE_CHOICES:
        raise ValueError(f"drives must be one of {', '.join(DRIVE_CHOICES)}, got {drives!r}")
    if not 1 <= per_bus <= MAX_MODBUS_ADDRESS:
        raise ValueError(f"per_bus must lie in [1, {MAX_MODBUS_ADDRESS}], got {per_bus!r}")
    pole = 1.0 if site.latitude_deg >= 0 else -1.0
    if pole < 0 and drives != "azel":
        raise ValueError(
            "linear (Jülich-type) drives face south at rest and suit northern fields only; "
            f"site latitude is {site.latitude_deg} deg: use drives='azel'"
        )
    diag = max(math.hypot(m.width_m, m.height_m) for m in (AZEL_MIRROR, LINEAR_MIRROR))
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
        linear = drives == "linear" or (
            drives == "mixed" and abs(bearing) <= math.radians(linear_half_sector_deg)
        )
        kin = linear_drive(pos) if linear else azel_drive(pos)
        bus = f"bus{i // per_bus + 1}"
        buses.setdefault(bus, Bus(bus, "loop://", 115200))
        hid = f"H{i + 1:0{width}d}"
        heliostats[hid] = Heliostat(
            hid, kin, LINEAR_MIRROR if linear else AZEL_MIRROR, bus, i % per_bus + 1
        )
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


def truth_to_dict(truth: Mapping[str, KinematicErrors], seed: int | None = None) -> dict:
    """``truth.json`` content: per heliostat its drive and named true errors."""
    out: dict[str, Any] = {"schema": TRUTH_SCHEMA}
    if seed is not None:
        out["seed"] = int(seed)
    out["units"] = "names ending _rad are radians, _m metres"
    out["heliostats"] = {hid: {"drive": e.drive, "errors": e.to_dict()} for hid, e in truth.items()}
    return out


def truth_json(truth: Mapping[str, KinematicErrors], seed: int | None = None) -> str:
    """``truth.json`` text (stable key order; floats at the precision every machine agrees
    on, :func:`sim.reproduce.stable_numbers`)."""
    return json.dumps(stable_numbers(truth_to_dict(truth, seed)), indent=2) + "\n"


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
