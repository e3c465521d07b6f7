"""Plant optics (heliostat/optics.py): intercept vs Monte Carlo and quadrature, reflection
doubling, astigmatism, the Vittitoe–Biggs attenuation, Buie's sun shape."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate

from heliostat.frames import normalize, reflect
from heliostat.optics import (
    SUN_SHAPE_RAD,
    SUN_SIGMA_MRAD,
    CircularAperture,
    RectangularAperture,
    astigmatism_sigma_rad,
    atmospheric_attenuation,
    beam_sigma_rad,
    buie_sigma_mrad,
    gaussian_irradiance,
    gaussian_power_on_rectangle,
    intercept_circle,
    intercept_rectangle,
    pointing_intercept,
)

N_MC = 1_000_000
# Monte Carlo tolerance: with N = 1e6 hits the standard error of a share p is
# √(p(1−p)/N) ≤ 5e-4 absolute; for p ≥ 0.3 that is ≤ 0.15 % relative, so the required
# 0.5 % relative agreement is ≥ 3 standard errors: a wrong formula (e.g. forgetting the
# offset or the 1/√2 per axis, which move η by several %) fails, chance does not.
MC_RTOL = 5e-3


def _mc_points(rng, sigma, n=N_MC):
    return rng.normal(0.0, sigma, size=(n, 2))


@pytest.mark.parametrize(
    ("radius", "sigma", "offset"),
    [(0.5, 0.33, 0.0), (0.5, 0.33, 0.2), (1.0, 0.5, 0.6), (0.4, 0.2, 0.3)],
)
def test_circle_intercept_vs_monte_carlo(radius, sigma, offset):
    rng = np.random.default_rng(20240611)
    p = _mc_points(rng, sigma) + np.array([offset, 0.0])
    mc = np.mean(np.hypot(p[:, 0], p[:, 1]) <= radius)
    eta = float(intercept_circle(radius, sigma, offset))
    assert eta == pytest.approx(mc, rel=MC_RTOL)


def test_circle_intercept_closed_forms():
    # Centred: 1 − exp(−R²/2σ²) exactly (Rayleigh cdf).
    assert float(intercept_circle(1.0, 1.0)) == pytest.approx(1 - math.exp(-0.5), rel=1e-14)
    # Offset: 1 − Q1(d/σ, R/σ), checked against direct integration of the Rice pdf.
    r, s, d = 0.7, 0.4, 0.5
    from scipy.special import i0e

    def rice(x):
        return x / s**2 * math.exp(-((x - d) ** 2) / (2 * s**2)) * i0e(x * d / s**2)

    direct, _ = integrate.quad(rice, 0.0, r, epsabs=1e-13)
    assert float(intercept_circle(r, s, d)) == pytest.approx(direct, rel=1e-9)
    # Vectorised over σ and offset.
    out = intercept_circle(1.0, np.array([0.5, 1.0]), np.array([0.0, 0.5]))
    assert out.shape == (2,) and np.all(np.diff(out) < 0)
    with pytest.raises(ValueError, match="sigma_m"):
        intercept_circle(1.0, 0.0)
    with pytest.raises(ValueError, match="sigma_m"):
        intercept_circle(1.0, float("nan"))


@pytest.mark.parametrize(
    ("w", "h", "sigma", "dx", "dy"),
    [(1.0, 0.6, 0.3, 0.0, 0.0), (1.0, 0.6, 0.3, 0.25, -0.1), (8.4, 10.6, 2.3, 1.5, 0.0)],
)
def test_rectangle_intercept_vs_monte_carlo(w, h, sigma, dx, dy):
    rng = np.random.default_rng(7)
    p = _mc_points(rng, sigma) + np.array([dx, dy])
    mc = np.mean((np.abs(p[:, 0]) <= w / 2) & (np.abs(p[:, 1]) <= h / 2))
    eta = float(RectangularAperture(w, h).intercept(sigma, dx, dy))
    assert eta == pytest.approx(mc, rel=MC_RTOL)


@pytest.mark.parametrize("aperture", [CircularAperture(0.5), RectangularAperture(1.0, 0.8)])
@pytest.mark.parametrize("treatment", ["gaussian", "fixed"])
def test_pointing_treatments_vs_monte_carlo(aperture, treatment):
    # Beam 4 mrad per axis, pointing 3 mrad radial RMS, 75 m slant range.
    sb, rms, D = 4e-3, 3e-3, 75.0
    rng = np.random.default_rng(99)
    beam = _mc_points(rng, sb * D)
    if treatment == "gaussian":
        # Each instant draws its own 2-D pointing offset: radial RMS 3 mrad, so the
        # per-axis standard deviation is 3/√2 mrad.
        off = rng.normal(0.0, rms / math.sqrt(2) * D, size=(N_MC, 2))
    else:
        off = np.array([rms * D, 0.0])
    p = beam + off
    if isinstance(aperture, CircularAperture):
        inside = np.hypot(p[:, 0], p[:, 1]) <= aperture.radius_m
    else:
        inside = (np.abs(p[:, 0]) <= aperture.width_m / 2) & (
            np.abs(p[:, 1]) <= aperture.height_m / 2
        )
    eta = float(pointing_intercept(aperture, sb, D, rms, treatment))
    assert eta == pytest.approx(np.mean(inside), rel=MC_RTOL)


def test_pointing_intercept_validation():
    with pytest.raises(ValueError, match="treatment"):
        pointing_intercept(CircularAperture(1.0), 3e-3, 50.0, 1e-3, "median")
    with pytest.raises(ValueError, match="pointing error"):
        pointing_intercept(CircularAperture(1.0), 3e-3, 50.0, -1e-3)
    with pytest.raises(ValueError, match="radius_m"):
        CircularAperture(0.0)
    with pytest.raises(ValueError, match="height_m"):
        RectangularAperture(1.0, -2.0)


def _perturb(u, sigma, rng, n):
    """Unit vectors tilted from u by small Gaussian angles (σ per axis)."""
    u = normalize(u)
    a = normalize(np.cross(u, [0.0, 0.0, 1.0]) if abs(u[2]) < 0.9 else np.cross(u, [1, 0, 0]))
    b = np.cross(u, a)
    t = rng.normal(0.0, sigma, size=(n, 2))
    return normalize(u + t[:, :1] * a + t[:, 1:] * b)


def test_slope_error_doubles_on_reflection_ray_trace():
    # Ray trace with frames.reflect at normal incidence: sun cone σ_sun and mirror-normal
    # error σ_slope; the reflected spread per axis must be √(σ_sun² + (2σ_slope)²).
    rng = np.random.default_rng(5)
    n = 400_000
    sun, slope = 2.51e-3, 1.5e-3
    s = _perturb(np.array([0.0, 0.0, 1.0]), sun, rng, n)
    nrm = _perturb(np.array([0.0, 0.0, 1.0]), slope, rng, n)
    r = reflect(nrm, s)
    # angles of the reflected ray from the ideal (0, 0, 1) along x and y
    ax, ay = r[:, 0] / r[:, 2], r[:, 1] / r[:, 2]
    expected = float(beam_sigma_rad(sun, slope))
    # Sample std of N normal draws has relative standard error 1/√(2N) = 0.11 %; 0.5 %
    # is 4.5 of them, while omitting the doubling would be off by 46 %.
    assert np.std(ax) == pytest.approx(expected, rel=5e-3)
    assert np.std(ay) == pytest.approx(expected, rel=5e-3)
    # Tracking (beam) errors add without doubling.
    assert float(beam_sigma_rad(0.0, 0.0, 3e-3)) == pytest.approx(3e-3)
    with pytest.raises(ValueError, match="slope"):
        beam_sigma_rad(slope_rad=-1.0)


def test_astigmatism():
    # Focused at the slant range and hit at normal incidence: no astigmatism.
    assert float(astigmatism_sigma_rad(4.0, 100.0, 100.0, 0.0)) == pytest.approx(0.0, abs=1e-15)
    # Hand case: d = 2 m, D = f, ω = 60°: H_t = W_s = 2·0.5 = 1 m → √(½·2)/(4·100) = 2.5 mrad
    assert float(astigmatism_sigma_rad(4.0, 100.0, 100.0, math.pi / 3)) == pytest.approx(2.5e-3)


# ----------------------------------------------------------------- attenuation
def test_attenuation_vittitoe_biggs_published_fit():
    # Clear day (23 km visibility) fit of Vittitoe & Biggs (1978), as printed with 5
    # significant digits in HFLCAL / Schmitz et al. (2006): hand-evaluated values.
    assert atmospheric_attenuation(0.0) == pytest.approx(0.99321, abs=1e-12)
    assert atmospheric_attenuation(500.0) == pytest.approx(0.99321 - 0.0588 + 0.004925, abs=1e-9)
    # The polynomial (D <= 1 km) and the exponential (D > 1 km) are two published fits of
    # the same data; they must meet at 1 km to the fits' 4-digit precision.
    below = atmospheric_attenuation(1000.0)
    above = atmospheric_attenuation(1000.0 + 1e-9)
    assert below == pytest.approx(0.89531, abs=1e-9)
    assert above == pytest.approx(math.exp(-0.1106), abs=1e-9)
    assert abs(below - above) < 2e-4
    # 5 km visibility (hazy) is lower everywhere on its range.
    d = np.linspace(0, 1000, 11)
    assert np.all(atmospheric_attenuation(d, "hazy") < atmospheric_attenuation(d))
    assert atmospheric_attenuation(1000.0, "hazy") == pytest.approx(0.74621, abs=1e-9)
    # Beyond 1 km: exp(−1.106e-4 · 2000) = exp(−0.2212) (the ledger's long slant ranges).
    assert atmospheric_attenuation(2000.0) == pytest.approx(math.exp(-0.2212), rel=1e-12)


def test_attenuation_array_and_errors():
    out = atmospheric_attenuation(np.array([[100.0, 2000.0]]))
    assert out.shape == (1, 2) and np.all(np.diff(out) < 0)
    with pytest.raises(ValueError, match="slant_range_m"):
        atmospheric_attenuation(-1.0)
    with pytest.raises(ValueError, match="slant_range_m"):
        atmospheric_attenuation(np.nan)
    with pytest.raises(ValueError, match="model"):
        atmospheric_attenuation(10.0, "foggy")
    with pytest.raises(ValueError, match="1000 m"):
        atmospheric_attenuation(1500.0, "hazy")


def test_buie_sigma_disc_and_aureole():
    # CSR -> 0: limb-darkened disc of 4.65 mrad; a uniform disc has σ = R/2 = 2.325 mrad
    # and limb darkening concentrates light to the centre, so σ is a little smaller.
    s0 = buie_sigma_mrad(0.0)
    assert 2.0 < s0 < 2.325
    # More circumsolar light -> wider effective sun.
    assert s0 < buie_sigma_mrad(0.02) < buie_sigma_mrad(0.1)


# ----------------------------------------------------------------- elliptical spots
@pytest.mark.parametrize(
    ("sigma", "dx", "dy"), [(0.3, 0.0, 0.0), (0.3, 0.25, -0.1), (0.45, 2.3, -0.4)]
)
def test_gaussian_on_rectangle_matches_erf_intercept(sigma, dx, dy):
    # The two intercepts of this module agree where both apply (a round Gaussian on an
    # axis-aligned rectangle): the 96² Gauss–Legendre quadrature is good to < 1e-9
    # relative on the smooth ±8σ box, so 1e-8 is loose by a factor of ten.
    w, h, p = 5.0, 5.0, 1000.0
    mean = np.array([dx, dy])
    cov = sigma**2 * np.eye(2)
    p_on, moment = gaussian_power_on_rectangle(mean, cov, p, np.array([w / 2, h / 2]))
    eta = float(intercept_rectangle(w, h, sigma, dx, dy))
    assert p_on / p == pytest.approx(eta, rel=1e-8)
    if eta > 0.999999:  # wholly inside: full power at the mean
        np.testing.assert_allclose(moment / p_on, mean, atol=1e-12)
    else:  # a spot over the right edge: the part on the target lies further in
        assert moment[0] / p_on < dx


def test_gaussian_on_rectangle_misses_and_density_normalised():
    p_on, moment = gaussian_power_on_rectangle([10.0, 0.0], 0.01 * np.eye(2), 5.0, [1.0, 1.0])
    assert p_on == 0.0 and np.all(moment == 0.0)
    # Peak density of a Gaussian of σx = 0.15, σy = 0.3 with 100 W: 100 / (2π σx σy).
    e = gaussian_irradiance(np.zeros(2), np.diag([0.15**2, 0.3**2]), 100.0, np.zeros(2))
    assert float(e) == pytest.approx(100.0 / (2 * math.pi * 0.15 * 0.3), rel=1e-12)


def test_sun_shape_constant_one_value_two_units():
    # One literal (HFLCAL's 2.51 mrad); the radian form is derived from it.
    assert SUN_SHAPE_RAD == pytest.approx(SUN_SIGMA_MRAD * 1e-3, rel=1e-15)
    assert SUN_SIGMA_MRAD == 2.51
