"""How far a change of kinematic parameters turns the mirror and the beam, over the sky.

One sky grid and one comparison of two parameter sets over it, used by the bridge's safety
check (a parameter set's "maximum correction": how far it turns the mirror, DESIGN.md)
and by the campaign history's drift figures (how far the beam moves when a heliostat
aimed with one fit behaves like the next).

For each sun of the grid that the heliostat can serve within its travel limits, the motor
steps that put the beam on the aim point are solved with parameter set ``a`` and with
set ``b``. Two figures follow:

* **beam change** (RMS and maximum over the grid): the steps of ``a`` run through model
  ``b``; the angle between that beam and the direction to the aim point is how far the
  beam lands off the aim if the heliostat behaves like ``b`` but is aimed with ``a``.
  Only the steps of ``a`` need to be reachable.
* **mirror turn** (maximum over the grid): the angle between the mirror normals that
  model ``a`` gives for the two step sets, i.e. how far switching the aiming from ``a``
  to ``b`` turns the mirror (the beam turns up to twice as far). Joint angles themselves
  are a poor measure: near a vertical normal a small tilt needs a large azimuth change,
  and the parameters of a poorly conditioned fit may be large one by one while their
  joint effect is small. Both step sets must be reachable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from heliostat.frames import angle_between, azel_to_enu, normalize
from heliostat.kinematics.errors import KinematicErrors
from heliostat.kinematics.model import HeliostatKinematics, KinematicsError

#: Sun azimuths of the sky grid, clockwise from north. [deg]
SKY_AZIMUTHS_DEG: tuple[float, ...] = tuple(float(a) for a in range(0, 360, 30))
#: Sun elevations of the sky grid: the field's working sky, low sun included. [deg]
SKY_ELEVATIONS_DEG: tuple[float, ...] = (10.0, 30.0, 55.0, 80.0)


def sky_grid() -> NDArray[np.float64]:
    """Sun directions over the sky the field works in. Shape (48, 3), ENU unit vectors.

    Azimuth every 30° (:data:`SKY_AZIMUTHS_DEG`) at the elevations
    :data:`SKY_ELEVATIONS_DEG` (10°, 30°, 55°, 80°), elevation-major.
    """
    az, el = np.meshgrid(np.radians(SKY_AZIMUTHS_DEG), np.radians(SKY_ELEVATIONS_DEG))
    return azel_to_enu(az.ravel(), el.ravel())


def reachable_steps(
    kin: HeliostatKinematics,
    aim_enu_m: ArrayLike,
    u_sun_enu: ArrayLike,
    errors: KinematicErrors | None = None,
) -> NDArray[np.float64]:
    """Motor steps that put the beam on the aim point, NaN where that cannot be done.

    Parameters
    ----------
    kin : HeliostatKinematics
    aim_enu_m : array_like of shape (3,) or (N, 3)
        Aim point(s), ENU. [m]
    u_sun_enu : array_like of shape (N, 3)
        Unit vectors toward the sun, ENU.
    errors : KinematicErrors, optional
        The parameter set the steps are solved with (None: nominal).

    Returns
    -------
    ndarray of shape (N, 2)
        Real-valued steps; a row is NaN where the inverse does not converge, the angles
        lie outside the actuator geometry, or the steps lie outside the travel limits.
    """
    sun = np.atleast_2d(np.asarray(u_sun_enu, dtype=float))
    aim = np.broadcast_to(np.asarray(aim_enu_m, dtype=float), sun.shape)
    try:  # one batched solve; row by row only when some sun is unreachable
        th = kin.inverse_angles(aim, sun, errors)
    except KinematicsError:
        th = np.full((len(sun), 2), np.nan)
        for k, (a, s) in enumerate(zip(aim, sun, strict=True)):
            try:
                th[k] = kin.inverse_angles(a, s, errors)[0]
            except KinematicsError:
                pass
    with np.errstate(invalid="ignore"):
        st = kin.angles_to_steps(th, errors)
    ok = np.all(np.isfinite(st), axis=1)
    ok[ok] &= kin.within_limits(st[ok])
    st[~ok] = np.nan
    return st


def _in_geometry(
    kin: HeliostatKinematics, steps: NDArray[np.float64], errors: KinematicErrors | None
) -> NDArray[np.bool_]:
    """Rows of finite steps whose joint angles exist under ``errors`` (actuator geometry)."""
    ok = np.all(np.isfinite(steps), axis=1)
    with np.errstate(invalid="ignore"):
        ok[ok] &= np.all(np.isfinite(kin.steps_to_angles(steps[ok], errors)), axis=1)
    return ok


@dataclass(frozen=True, slots=True)
class PointingChange:
    """How far going from parameter set ``a`` to ``b`` moves beam and mirror over the sky.

    Attributes
    ----------
    beam_rms_mrad, beam_max_mrad : float
        RMS and maximum over the grid of the beam's angle off the aim point when aimed
        with ``a`` and behaving like ``b`` (NaN when no sun of the grid is reachable
        with ``a``). [mrad]
    mirror_max_mrad : float
        Largest angle between the mirror normals (model ``a``) of the steps solved with
        ``a`` and with ``b`` (NaN when no sun is reachable with both). [mrad]
    n_suns : int
        Suns of the grid reachable with both sets.
    """

    beam_rms_mrad: float
    beam_max_mrad: float
    mirror_max_mrad: float
    n_suns: int


def pointing_change(
    kin: HeliostatKinematics,
    errors_a: KinematicErrors | None,
    errors_b: KinematicErrors | None,
    aim_enu_m: ArrayLike,
    u_sun_enu: ArrayLike | None = None,
) -> PointingChange:
    """The beam change and mirror turn between two parameter sets (module docstring).

    Parameters
    ----------
    kin : HeliostatKinematics
        The heliostat (nominal geometry and travel limits).
    errors_a, errors_b : KinematicErrors or None
        The two parameter sets (None: nominal).
    aim_enu_m : array_like of shape (3,)
        Aim point, ENU. [m]
    u_sun_enu : array_like of shape (N, 3), optional
        Sun directions; default :func:`sky_grid`.

    Returns
    -------
    PointingChange
    """
    sun = sky_grid() if u_sun_enu is None else np.atleast_2d(np.asarray(u_sun_enu, float))
    aim = np.broadcast_to(np.asarray(aim_enu_m, dtype=float), sun.shape)
    st_a = reachable_steps(kin, aim, sun, errors_a)
    st_b = reachable_steps(kin, aim, sun, errors_b)

    beam_rms = beam_max = math.nan
    ok = _in_geometry(kin, st_a, errors_b)
    if np.any(ok):
        r, c = kin.reflected(st_a[ok], sun[ok], errors_b)
        ang = angle_between(r, normalize(aim[ok] - c)) * 1e3
        beam_rms, beam_max = float(np.sqrt(np.mean(ang**2))), float(np.max(ang))

    mirror_max = math.nan
    both = _in_geometry(kin, st_a, errors_a) & _in_geometry(kin, st_b, errors_a)
    if np.any(both):
        n_a = kin.forward(st_a[both], errors_a).u_normal_enu
        n_b = kin.forward(st_b[both], errors_a).u_normal_enu
        mirror_max = float(np.max(angle_between(n_a, n_b)) * 1e3)
    return PointingChange(beam_rms, beam_max, mirror_max, int(np.count_nonzero(both)))
