"""Sun position: the NREL SPA report's worked example and vector conventions."""

import numpy as np
import pandas as pd
import pytest

from heliostat.frames import Site
from heliostat.sun import clear_sky_dni, sun_position, to_utc_index


def test_nrel_spa_worked_example():
    # Reda & Andreas (2004), Table A5.1: 2003-10-17 12:30:30 local (UTC-7), ΔT = 67 s,
    # 820 mbar, 11 °C -> topocentric zenith 50.11162°, azimuth 194.34024°. The paper prints
    # five decimals, so agreement is required to 5e-6° (half the last printed digit).
    site = Site(39.742476, -105.1786, 1830.14)
    sp = sun_position(
        site, "2003-10-17T12:30:30-07:00", pressure_pa=82000.0, temperature_c=11.0, delta_t_s=67.0
    )
    zenith_deg = 90.0 - np.degrees(sp.elevation_rad[0])
    assert abs(zenith_deg - 50.11162) < 5e-6
    assert abs(np.degrees(sp.azimuth_rad[0]) - 194.34024) < 5e-6


def test_vectors_match_angles_and_are_vectorised():
    site = Site(37.0, -2.5, 500.0)
    times = pd.date_range("2025-03-20T06:00Z", "2025-03-20T18:00Z", freq="1h")
    sp = sun_position(site, times)
    assert sp.u_sun_enu.shape == (len(times), 3)
    np.testing.assert_allclose(np.linalg.norm(sp.u_sun_enu, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.arcsin(sp.u_sun_enu[:, 2]), sp.elevation_rad, atol=1e-12)
    # Morning sun in the east, afternoon in the west (equinox, northern mid-latitude).
    assert sp.u_sun_enu[2, 0] > 0.5 and sp.u_sun_enu[-3, 0] < -0.5
    # Solar noon at 2.5° W on 20 March is ≈12:17 UTC (10 min of longitude + ≈7 min equation
    # of time): the sun is then due south (± 1°) at ≈ 90° − lat (± 1°, refraction).
    noon = sun_position(site, "2025-03-20T12:17Z")
    assert abs(np.degrees(noon.azimuth_rad[0]) - 180.0) < 1.0
    assert abs(np.degrees(noon.elevation_rad[0]) - 53.0) < 1.0


def test_naive_and_bad_times_are_errors():
    site = Site(37.0, -2.5, 500.0)
    with pytest.raises(ValueError, match="timezone-aware"):
        sun_position(site, "2025-06-21T12:00:00")
    with pytest.raises(ValueError, match="cannot parse"):
        to_utc_index(["not a time"])
    idx = to_utc_index(["2025-06-21T14:00:00+02:00", "2025-06-21T12:00:00Z"])
    assert idx[0] == idx[1] and str(idx.tz) == "UTC"


def test_clear_sky_dni_is_physical():
    site = Site(37.0, -2.5, 500.0)
    times = pd.date_range("2025-06-21T00:00Z", periods=24, freq="1h")
    dni = clear_sky_dni(site, times)
    assert dni.max() > 800 and dni.max() < 1100  # clear summer noon, 500 m altitude
    assert np.all(dni[:3] == 0)  # night
