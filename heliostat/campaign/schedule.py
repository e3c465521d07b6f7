"""Time, slots and setpoints of a campaign (pure functions and two clocks).

A campaign divides time into *slots* of ``slot_s`` seconds counted from the Unix epoch
(UTC). In each slot every scheduled heliostat is visited at most once: an observation (or
a recorded skip) is keyed by ``(heliostat, slot start)``, so a run that is interrupted and
started again finds what it already did and carries on.

Clocks are parameters: :class:`SystemClock` on a plant, :class:`SteppedClock` in tests
and simulations (``sleep`` advances an injectable seconds clock, e.g. the controller
emulator's :class:`sim.controllers.ManualClock`, so that nothing really sleeps and the
sun position follows the simulated time).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from heliostat.config import Heliostat
from heliostat.kinematics import KinematicsError


class Clock(Protocol):
    """What the campaign needs of a clock."""

    def now_utc(self) -> pd.Timestamp:
        """Current time, timezone-aware UTC."""

    def sleep(self, seconds: float) -> None:
        """Wait. [s]"""


class SystemClock:
    """The computer's clock."""

    def now_utc(self) -> pd.Timestamp:
        return pd.Timestamp.now(tz="UTC")

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class SteppedClock:
    """UTC time = ``start_utc`` + an injectable seconds clock; ``sleep`` advances it.

    Parameters
    ----------
    start_utc : str or Timestamp
        Timezone-aware UTC time at ``seconds() == 0``.
    seconds : callable returning float
        E.g. :class:`sim.controllers.ManualClock` (shared with emulated controllers,
        whose axes then move while the campaign waits). [s]
    advance : callable taking float
        Advances ``seconds`` (default ``seconds.advance``).
    """

    def __init__(
        self,
        start_utc,
        seconds: Callable[[], float],
        advance: Callable[[float], None] | None = None,
    ) -> None:
        t = pd.Timestamp(start_utc)
        if t.tzinfo is None:
            raise ValueError(f"start_utc must carry a timezone (e.g. ...Z), got {start_utc!r}")
        self.start_utc = t.tz_convert("UTC")
        self.seconds = seconds
        self._advance = advance if advance is not None else seconds.advance  # type: ignore[attr-defined]

    def now_utc(self) -> pd.Timestamp:
        return self.start_utc + pd.Timedelta(seconds=float(self.seconds()))

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._advance(float(seconds))


def slot_start(t_utc: pd.Timestamp, slot_s: float) -> pd.Timestamp:
    """Start of the slot holding ``t_utc`` (slots counted from the Unix epoch)."""
    ts = pd.Timestamp(t_utc)
    if ts.tzinfo is None:
        raise ValueError(f"time must be timezone-aware UTC, got {t_utc!r}")
    sec = ts.value / 1e9
    return pd.Timestamp(math.floor(sec / slot_s) * slot_s, unit="s", tz="UTC")


def slot_key(t_utc: pd.Timestamp, slot_s: float) -> str:
    """The slot's key: its start as ISO 8601 UTC (``2025-04-01T10:30:00Z``)."""
    return slot_start(t_utc, slot_s).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_utc(t: pd.Timestamp) -> str:
    """ISO 8601 UTC with a Z, to the millisecond when it has a fraction."""
    t = pd.Timestamp(t).tz_convert("UTC")
    if t.microsecond or t.nanosecond:
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def azimuth_spread_rad(azimuth_rad: ArrayLike) -> float:
    """Arc of azimuths the points cover: 2π minus the largest gap between neighbours
    around the circle (0 for fewer than two points). [rad]"""
    a = np.sort(np.mod(np.asarray(azimuth_rad, dtype=float).ravel(), 2 * np.pi))
    if a.size < 2:
        return 0.0
    gaps = np.diff(np.concatenate([a, a[:1] + 2 * np.pi]))
    return float(2 * np.pi - gaps.max())


def spread_ok(
    azimuth_rad: ArrayLike,
    elevation_rad: ArrayLike,
    min_points: int,
    min_azimuth_spread_rad: float,
    min_elevation_spread_rad: float,
) -> tuple[bool, str]:
    """Whether sun positions are enough and spread enough for a fit, and why not."""
    az = np.asarray(azimuth_rad, dtype=float).ravel()
    el = np.asarray(elevation_rad, dtype=float).ravel()
    if az.size < min_points:
        return False, f"{az.size} of {min_points} observations"
    a = azimuth_spread_rad(az)
    if a < min_azimuth_spread_rad:
        return False, (
            f"sun azimuth spread {math.degrees(a):.1f} deg < "
            f"{math.degrees(min_azimuth_spread_rad):.1f} deg"
        )
    e = float(el.max() - el.min())
    if e < min_elevation_spread_rad:
        return False, (
            f"sun elevation spread {math.degrees(e):.1f} deg < "
            f"{math.degrees(min_elevation_spread_rad):.1f} deg"
        )
    return True, ""


def on_target_steps(
    h: Heliostat, aim_enu_m: ArrayLike, u_sun_enu: ArrayLike
) -> NDArray[np.int64] | None:
    """Integer setpoint of the nominal model that puts the beam on the aim point, or None
    when it is unreachable or outside the travel. [steps]"""
    kin = h.kinematics
    try:
        st = np.rint(kin.inverse(np.atleast_2d(aim_enu_m), np.atleast_2d(u_sun_enu)))[0]
    except (KinematicsError, ValueError):
        return None
    if not np.all(np.isfinite(st)) or not kin.within_limits(st)[0]:
        return None
    return st.astype(np.int64)


def off_target_steps(
    h: Heliostat, on_steps: ArrayLike, offset_rad: tuple[float, float]
) -> NDArray[np.int64] | None:
    """Setpoint for the sun-off frame: the on-target joint angles plus ``offset_rad``
    (minus it when plus leaves the travel), as integer steps; None when neither fits."""
    kin = h.kinematics
    theta = kin.steps_to_angles(np.asarray(on_steps, dtype=float)[None])
    for sign in (1.0, -1.0):
        st = np.rint(kin.angles_to_steps(theta + sign * np.asarray(offset_rad)))[0]
        if np.all(np.isfinite(st)) and kin.within_limits(st)[0]:
            return st.astype(np.int64)
    return None
