"""Corrected motor setpoints from a fitted error model, and the corrections file.

For a time and an aim point the corrected setpoint is the inverse kinematics of the
*fitted* model (nominal + fitted errors); the nominal setpoint is the inverse of the
nominal model, which is what the controller would command without calibration. Both are
rounded to integer steps, as the controller takes them.

The corrections file (``heliostat-corrections/1``, see ``docs/corrections.md``) carries,
per heliostat, the fitted parameters (the form the controller accepts), their standard
errors, optional setpoints and the fit's figures. The file's one reader and one writer
(:func:`read_corrections`, :func:`write_corrections`, :data:`FORMAT`) live in the small
:mod:`heliostat.corrections_format`, which the firmware bridge imports without the
fitting stack; they are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from heliostat.calibration.fit import FitResult
from heliostat.config import Target
from heliostat.corrections_format import FORMAT, read_corrections, write_corrections
from heliostat.errors import CalibrationError
from heliostat.frames import Site
from heliostat.kinematics import HeliostatKinematics, KinematicErrors, KinematicsError
from heliostat.kinematics.drives._base import BACKLASH
from heliostat.sun import sun_position

__all__ = [
    "FORMAT",
    "Setpoints",
    "corrected_setpoints",
    "corrections_document",
    "errors_from_parameters",
    "heliostat_entry",
    "move_directions",
    "setpoints_in_order",
    "parse_aim",
    "read_corrections",
    "tracking_approach",
    "write_corrections",
]


@dataclass(frozen=True, slots=True)
class Setpoints:
    """Corrected and nominal motor setpoints for N (time, aim) requests.

    Attributes
    ----------
    times_utc : tuple of str
        ISO 8601 UTC times.
    target : str
    aim_xy_m : ndarray of shape (N, 2)
        Aim point in the target plane. [m]
    steps : ndarray of shape (N, 2), int64
        Corrected setpoints (fitted model). [steps]
    nominal_steps : ndarray of shape (N, 2), int64
        Setpoints of the nominal model. [steps]
    """

    times_utc: tuple[str, ...]
    target: str
    aim_xy_m: NDArray[np.float64]
    steps: NDArray[np.int64]
    nominal_steps: NDArray[np.int64]

    @property
    def difference_steps(self) -> NDArray[np.int64]:
        """Corrected minus nominal. [steps]"""
        return self.steps - self.nominal_steps

    def records(self) -> list[dict[str, Any]]:
        return [
            {
                "time_utc": t,
                "target": self.target,
                "aim_xy_m": [float(a) for a in self.aim_xy_m[i]],
                "axis1_steps": int(self.steps[i, 0]),
                "axis2_steps": int(self.steps[i, 1]),
                "nominal_axis1_steps": int(self.nominal_steps[i, 0]),
                "nominal_axis2_steps": int(self.nominal_steps[i, 1]),
            }
            for i, t in enumerate(self.times_utc)
        ]


#: Half-width of the time step over which :func:`tracking_approach` differentiates. [s]
TRACKING_DT_S = 60.0


def tracking_approach(
    kin: HeliostatKinematics,
    errors: KinematicErrors,
    site: Site,
    times: pd.DatetimeIndex,
    aim_enu_m: NDArray[np.float64],
) -> NDArray[np.float64] | None:
    """Direction each axis arrives from while the heliostat tracks the sun onto
    ``aim_enu_m``: the sign of d(steps)/dt (the fitted model's setpoints
    :data:`TRACKING_DT_S` before and after each time), 0 where the axis stands still.
    A tracking controller moves every axis the way the sun drives it, so this is the
    side its gears bear on; a move against it (a slew from stow, a new target) takes
    up the backlash the other way until the first tracking step. None when ``errors``
    has no backlash (the setpoints do not depend on it). Shape (N, 2)."""
    if not any(errors.get(n) for n in BACKLASH):
        return None
    t = pd.DatetimeIndex(times)
    dt = pd.Timedelta(seconds=TRACKING_DT_S)
    later = kin.inverse(aim_enu_m, sun_position(site, t + dt).u_sun_enu, errors)
    earlier = kin.inverse(aim_enu_m, sun_position(site, t - dt).u_sun_enu, errors)
    return np.sign(later - earlier)


def move_directions(steps: ArrayLike, start: ArrayLike = (0.0, 0.0)) -> NDArray[np.float64]:
    """Direction (±1) of each axis's move onto each setpoint when a controller goes to
    ``steps`` (N, 2) in order from ``start`` (stow): the sign of the step change, +1 for
    no move (the simulator's rule, :func:`sim.effects.approach_signs`)."""
    st = np.asarray(steps, dtype=float)
    prev = np.vstack([np.asarray(start, dtype=float)[None, :], st[:-1]])
    return np.where(st - prev < 0, -1.0, 1.0)


def setpoints_in_order(
    kin: HeliostatKinematics,
    errors: KinematicErrors | None,
    aim_enu_m: ArrayLike,
    u_sun_enu: ArrayLike,
    start: ArrayLike = (0.0, 0.0),
    iterations: int = 2,
) -> NDArray[np.float64]:
    """Integer setpoints for visits taken in order from ``start``, each aimed for the
    direction its axes will arrive from (:func:`move_directions` of the setpoints
    themselves: found by aiming without a direction, then ``iterations`` times with the
    directions of the last setpoints). Without a backlash in ``errors``: the plain
    inverse, rounded. Shape (N, 2). [steps]

    Raises
    ------
    KinematicsError
        As :meth:`HeliostatKinematics.inverse`.
    """
    steps = np.rint(kin.inverse(aim_enu_m, u_sun_enu, errors))
    if errors is None or not any(errors.get(n) for n in BACKLASH):
        return steps
    for _ in range(iterations):
        steps = np.rint(kin.inverse(aim_enu_m, u_sun_enu, errors, move_directions(steps, start)))
    return steps


def corrected_setpoints(
    kin: HeliostatKinematics,
    errors: KinematicErrors,
    site: Site,
    times,
    target: Target,
    aim_xy_m: ArrayLike = (0.0, 0.0),
) -> Setpoints:
    """Corrected and nominal integer setpoints to put the beam on an aim point.

    Parameters
    ----------
    kin : HeliostatKinematics
    errors : KinematicErrors
        Fitted error set.
    site : Site
        For the sun position.
    times : timezone-aware time(s)
    target : Target
    aim_xy_m : array_like of shape (2,) or (N, 2)
        Aim point(s) in the target plane. [m]

    Notes
    -----
    A fitted backlash (``axis<i>_backlash_rad``) enters with the direction each axis
    arrives from: while tracking, the direction it moves to follow the sun
    (:func:`tracking_approach`).

    Raises
    ------
    CalibrationError
        If the sun is below the horizon or a setpoint falls outside the actuator travel
        (message names the time).
    """
    sp = sun_position(site, times)
    n = len(sp.times)
    aim_xy = np.broadcast_to(np.asarray(aim_xy_m, dtype=float), (n, 2))
    stamps = tuple(t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in sp.times)
    low = np.flatnonzero(sp.elevation_rad <= 0)
    if low.size:
        raise CalibrationError(f"sun below the horizon at {stamps[low[0]]}: no setpoint")
    aim = target.plane_to_enu(aim_xy)
    try:
        approach = tracking_approach(kin, errors, site, sp.times, aim)
        fitted = np.rint(kin.inverse(aim, sp.u_sun_enu, errors, approach)).astype(np.int64)
        nominal = np.rint(kin.inverse(aim, sp.u_sun_enu)).astype(np.int64)
    except KinematicsError as exc:
        raise CalibrationError(f"no setpoint for target {target.id!r}: {exc}") from None
    ok = kin.within_limits(fitted)
    if not np.all(ok):
        i = int(np.flatnonzero(~ok)[0])
        raise CalibrationError(
            f"corrected setpoint {fitted[i].tolist()} at {stamps[i]} is outside the actuator travel"
        )
    return Setpoints(stamps, target.id, np.array(aim_xy), fitted, nominal)


def heliostat_entry(result: FitResult, setpoints: Setpoints | None = None) -> dict[str, Any]:
    """One heliostat's entry of the corrections file.

    Raises
    ------
    CalibrationError
        For a failed fit: a failed fit must never reach a controller.
    """
    if not result.success:
        raise CalibrationError(
            f"fit of {result.heliostat_id} failed ({result.reason}): no corrections written"
        )

    def num(v: float) -> float | None:
        return float(v) if math.isfinite(v) else None

    return {
        "heliostat": result.heliostat_id,
        "drive": result.drive,
        "parameters": result.parameters(),
        "parameter_std": {k: num(v) for k, v in result.std.items()},
        "setpoints": setpoints.records() if setpoints is not None else [],
        "rms_before_mrad": num(result.rms_before_mrad),
        "rms_after_mrad": num(result.rms_after_mrad),
        "loo_rms_mrad": num(result.loo_rms_mrad),
        "n_points": result.n_points,
        "n_outliers": result.n_outliers,
    }


def corrections_document(
    entries: Iterable[Mapping[str, Any]], field_path: str, created_utc: str | None = None
) -> dict[str, Any]:
    """The whole corrections document (``heliostat-corrections/1``)."""
    created = created_utc or pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "format": FORMAT,
        "created_utc": created,
        "field": str(field_path),
        "heliostats": list(entries),
    }


def errors_from_parameters(drive: str, parameters: Mapping[str, float]) -> KinematicErrors:
    """The error set a corrections entry describes (unlisted parameters are zero)."""
    return KinematicErrors.from_dict(drive, parameters)


def parse_aim(text: str | Sequence[float]) -> tuple[float, float]:
    """``"x,y"`` (target-plane metres) to a pair, with a clear error."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        x, y = (float(v) for v in parts)
    except (TypeError, ValueError):
        raise ValueError(f"aim point must be 'x,y' in target-plane metres, got {text!r}") from None
    return x, y
