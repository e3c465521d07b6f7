"""The simulated sky: sun position, clear-sky DNI and a seeded cloud-dimming series.

Sun angles and clear-sky DNI come from :mod:`heliostat.sun` (pvlib SPA and Ineichen–Perez
with pvlib's bundled Linke turbidity, no network). Clouds are a two-state Markov chain
(clear / cloudy) on a fixed time grid; a cloudy step transmits a random fraction of the
beam, a clear step a little haze jitter. The transmitted fraction multiplies the DNI.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from heliostat.frames import Site
from heliostat.sun import SunPosition, clear_sky_dni, sun_position, to_utc_index


@dataclass(frozen=True, slots=True)
class CloudSeries:
    """Fraction of the clear-sky beam that gets through, on a regular UTC grid.

    Attributes
    ----------
    start : pandas.Timestamp
        First grid time (UTC).
    step_s : float
        Grid spacing. [s]
    factor : ndarray of shape (N,)
        Transmitted fraction of the direct beam per grid step, in [0, 1]. [1]
    """

    start: pd.Timestamp
    step_s: float
    factor: NDArray[np.float64]

    def at(self, times) -> NDArray[np.float64]:
        """Cloud factor at timezone-aware times (the grid step containing each time;
        1.0 outside the series). [1]"""
        idx = to_utc_index(times)
        k = np.floor((idx - self.start).total_seconds().to_numpy() / self.step_s).astype(int)
        inside = (k >= 0) & (k < self.factor.size)
        out = np.ones(k.shape, dtype=float)
        out[inside] = self.factor[k[inside]]
        return out


def clear_series(start, end, step_s: float = 300.0) -> CloudSeries:
    """A cloudless series (factor 1 everywhere)."""
    t0 = to_utc_index([start])[0]
    t1 = to_utc_index([end])[0]
    n = max(1, int(np.ceil((t1 - t0).total_seconds() / step_s)))
    return CloudSeries(t0, float(step_s), np.ones(n))


def cloud_series(
    start,
    end,
    rng: np.random.Generator,
    cloudiness: float = 0.2,
    step_s: float = 300.0,
    mean_cloud_s: float = 1800.0,
    cloudy_factor: tuple[float, float] = (0.05, 0.7),
    haze_sigma: float = 0.01,
) -> CloudSeries:
    """A seeded cloud-dimming series between two UTC times.

    Parameters
    ----------
    start, end : timezone-aware time
        Span of the series.
    rng : numpy.random.Generator
        Seeded generator (the caller owns the seed).
    cloudiness : float
        Long-run fraction of time under cloud, in [0, 1). [1]
    step_s : float
        Grid spacing. [s]
    mean_cloud_s : float
        Mean duration of a cloudy spell. [s]
    cloudy_factor : (float, float)
        Range of the beam fraction transmitted under cloud (uniform per step). [1]
    haze_sigma : float
        Standard deviation of the clear-sky jitter below 1. [1]

    Notes
    -----
    Markov chain with P(cloudy→clear) = step/mean_cloud and P(clear→cloudy) chosen so the
    stationary cloudy fraction is ``cloudiness``: p_cc = p_cl · c / (1 − c).
    """
    if not 0.0 <= cloudiness < 1.0:
        raise ValueError(f"cloudiness must lie in [0, 1), got {cloudiness!r}")
    if step_s <= 0 or mean_cloud_s < step_s:
        raise ValueError(
            f"need 0 < step_s <= mean_cloud_s, got step_s={step_s!r}, mean_cloud_s={mean_cloud_s!r}"
        )
    base = clear_series(start, end, step_s)
    n = base.factor.size
    p_clear = step_s / mean_cloud_s  # cloudy -> clear
    p_cloud = min(1.0, p_clear * cloudiness / (1.0 - cloudiness))  # clear -> cloudy
    u = rng.uniform(size=n)
    cloudy = np.zeros(n, dtype=bool)
    state = bool(rng.uniform() < cloudiness)
    for i in range(n):
        cloudy[i] = state
        state = (u[i] >= p_clear) if state else (u[i] < p_cloud)
    lo, hi = cloudy_factor
    dim = rng.uniform(lo, hi, size=n)
    haze = 1.0 - np.abs(rng.normal(0.0, haze_sigma, size=n))
    factor = np.clip(np.where(cloudy, dim, haze), 0.0, 1.0)
    return CloudSeries(base.start, base.step_s, factor)


@dataclass(frozen=True, slots=True)
class Sky:
    """Sun and beam irradiance over a site.

    Attributes
    ----------
    site : Site
    clouds : CloudSeries or None
        Dimming series; None = always clear.
    """

    site: Site
    clouds: CloudSeries | None = None

    def sun(self, times) -> SunPosition:
        """Sun position (pvlib SPA) at the times."""
        return sun_position(self.site, times)

    def cloud_factor(self, times) -> NDArray[np.float64]:
        """Transmitted fraction of the clear-sky beam at the times. [1]"""
        idx = to_utc_index(times)
        if self.clouds is None:
            return np.ones(len(idx))
        return self.clouds.at(idx)

    def clear_dni_w_m2(self, times) -> NDArray[np.float64]:
        """Clear-sky direct normal irradiance (Ineichen–Perez). [W m⁻²]"""
        return clear_sky_dni(self.site, times)

    def dni_w_m2(self, times) -> NDArray[np.float64]:
        """Direct normal irradiance with cloud dimming. [W m⁻²]"""
        return self.clear_dni_w_m2(times) * self.cloud_factor(times)


def daylight_windows(
    site: Site, start_date: str, days: int, min_elevation_deg: float = 10.0, step_s: float = 60.0
) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """Per UTC day, the first and last time (on a ``step_s`` grid) the sun stands above
    ``min_elevation_deg``; days when it never does are left out.

    Parameters
    ----------
    start_date : str
        First day, ``YYYY-MM-DD`` (UTC).
    days : int
        Number of consecutive days.
    """
    if not isinstance(days, int | np.integer) or days < 1:
        raise ValueError(f"days must be a positive integer, got {days!r}")
    try:
        day0 = pd.Timestamp(start_date).normalize()
    except (ValueError, TypeError) as exc:
        raise ValueError(f"start date must be YYYY-MM-DD, got {start_date!r}: {exc}") from None
    if day0.tzinfo is None:
        day0 = day0.tz_localize("UTC")
    else:
        day0 = day0.tz_convert("UTC")
    out = []
    for d in range(int(days)):
        t0 = day0 + pd.Timedelta(days=d)
        grid = pd.date_range(t0, t0 + pd.Timedelta(days=1), freq=pd.Timedelta(seconds=step_s))
        grid = grid[:-1]
        el = np.degrees(sun_position(site, grid).elevation_rad)
        up = np.flatnonzero(el > min_elevation_deg)
        if up.size:
            out.append((grid[up[0]], grid[up[-1]]))
    return out
