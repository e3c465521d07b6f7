"""Sun position and clear-sky direct normal irradiance for a site.

Sun angles come from the NREL Solar Position Algorithm (SPA) as implemented in pvlib
[1]_, [2]_. The sun is at infinity, so one sun vector in the site ENU frame serves every
heliostat of a field (a heliostat 1.5 km from the reference point sees the same vector;
only its own local vertical differs, by 0.23 mrad, which its axis-tilt terms absorb).

References
----------
.. [1] I. Reda and A. Andreas, "Solar position algorithm for solar radiation
   applications," Solar Energy 76(5), 577-589, 2004. doi:10.1016/j.solener.2003.12.003
.. [2] W. F. Holmgren, C. W. Hansen and M. A. Mikofski, "pvlib python: a python package
   for modeling solar energy systems," JOSS 3(29), 884, 2018. doi:10.21105/joss.00884
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from heliostat.errors import InputError
from heliostat.frames import Site, azel_to_enu

#: Standard atmosphere at sea level. [Pa]
STANDARD_PRESSURE_PA = 101325.0


@dataclass(frozen=True, slots=True)
class SunPosition:
    """Sun position at a set of UTC times.

    Attributes
    ----------
    times : pandas.DatetimeIndex
        UTC times, length N.
    azimuth_rad : ndarray of shape (N,)
        Azimuth, clockwise from north. [rad]
    elevation_rad : ndarray of shape (N,)
        Apparent (refracted) elevation above the horizon. [rad]
    u_sun_enu : ndarray of shape (N, 3)
        Unit vector toward the sun, ENU.
    """

    times: pd.DatetimeIndex
    azimuth_rad: NDArray[np.float64]
    elevation_rad: NDArray[np.float64]
    u_sun_enu: NDArray[np.float64]

    @property
    def zenith_rad(self) -> NDArray[np.float64]:
        """Apparent zenith angle. [rad]"""
        return np.pi / 2 - self.elevation_rad


def to_utc_index(times) -> pd.DatetimeIndex:
    """Convert times to a UTC ``DatetimeIndex``; naive times are an error.

    Parameters
    ----------
    times : str, datetime, numpy/pandas timestamp(s)
        Timezone-aware times; strings must carry an offset (``Z`` or ``+hh:mm``).

    Raises
    ------
    ValueError
        If any time is naive or unparsable.
    """
    if isinstance(times, pd.DatetimeIndex):
        if times.tz is None:
            raise ValueError("times must be timezone-aware, got a naive DatetimeIndex")
        return times.tz_convert("UTC")
    stamps = []
    for t in np.atleast_1d(np.asarray(times, dtype=object)).ravel():
        try:
            ts = pd.Timestamp(t)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"cannot parse time {t!r}: {exc}") from None
        if ts is pd.NaT:
            raise ValueError(f"time is missing (NaT): {t!r}")
        if ts.tzinfo is None:
            raise ValueError(
                f"times must be timezone-aware (e.g. '2025-06-21T12:00:00Z'), got naive {t!r}"
            )
        stamps.append(ts.tz_convert("UTC"))
    idx = pd.DatetimeIndex(stamps)
    return idx.tz_convert("UTC")


def sun_position(
    site: Site,
    times,
    pressure_pa: float | None = None,
    temperature_c: float = 12.0,
    delta_t_s: float | None = None,
) -> SunPosition:
    """Topocentric sun position for a site, vectorised over times.

    Parameters
    ----------
    site : Site
        Plant reference point (WGS84).
    times : timezone-aware time(s)
        Times of interest; converted to UTC.
    pressure_pa : float, optional
        Air pressure for the refraction correction. [Pa] Default: the standard
        atmosphere at the site altitude.
    temperature_c : float
        Air temperature for the refraction correction. [°C]
    delta_t_s : float, optional
        TT − UT1. [s] Default: pvlib's polynomial estimate for the date.

    Returns
    -------
    SunPosition
    """
    import pvlib

    idx = to_utc_index(times)
    if pressure_pa is None:
        pressure_pa = float(pvlib.atmosphere.alt2pres(site.altitude_m))
    if not np.isfinite(pressure_pa) or pressure_pa <= 0:
        raise ValueError(f"pressure_pa must be positive, got {pressure_pa!r}")
    sp = pvlib.solarposition.spa_python(
        idx,
        site.latitude_deg,
        site.longitude_deg,
        altitude=site.altitude_m,
        pressure=pressure_pa,
        temperature=temperature_c,
        delta_t=delta_t_s,
    )
    az = np.radians(sp["azimuth"].to_numpy(dtype=float))
    el = np.radians(sp["apparent_elevation"].to_numpy(dtype=float))
    return SunPosition(idx, az, el, azel_to_enu(az, el))


def clear_sky_dni(site: Site, times, model: str = "ineichen") -> NDArray[np.float64]:
    """Clear-sky direct normal irradiance at the site. [W m⁻²]

    Uses pvlib's Ineichen–Perez model with its Linke turbidity climatology (shipped with
    pvlib, no network), or ``model="simplified_solis"``.
    """
    import pvlib

    idx = to_utc_index(times)
    loc = pvlib.location.Location(site.latitude_deg, site.longitude_deg, altitude=site.altitude_m)
    cs = loc.get_clearsky(idx, model=model)
    return np.clip(cs["dni"].to_numpy(dtype=float), 0.0, None)


def utc_time(text: object, where: str) -> pd.Timestamp:
    """One timezone-aware time (ISO 8601, e.g. ``2025-04-01T10:00:00Z``) as UTC.

    Raises
    ------
    InputError
        Unparsable, missing or without a timezone; the message starts with ``where``
        (the option or key) and quotes the text.
    """
    try:
        t = pd.Timestamp(text)
    except (ValueError, TypeError):
        raise InputError(f"{where}: not an ISO 8601 time: {text!r}") from None
    if t is pd.NaT:
        raise InputError(f"{where}: not an ISO 8601 time: {text!r}")
    if t.tzinfo is None:
        raise InputError(f"{where} {text!r} has no timezone (write e.g. 2025-04-01T10:00:00Z)")
    return t.tz_convert("UTC")
