"""The gain model: intercept vs Monte Carlo, reflection doubling, thermal balance."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import integrate

from heliostat.frames import normalize, reflect
from heliostat.ledger.gain import (
    SIGMA_SB,
    Absorber,
    CircularAperture,
    RectangularAperture,
    astigmatism_sigma_rad,
    atmospheric_transmittance,
    beam_sigma_rad,
    heliogen_like,
    intercept_circle,
    plant_like,
    pointing_gain,
    pointing_intercept,
    stagnation_temperature_k,
    with_changes,
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


def test_atmospheric_transmittance():
    # Vittitoe–Biggs: 0.99321 at 0 m; at 500 m 0.99321 − 0.0588 + 0.004925 = 0.939335.
    assert float(atmospheric_transmittance(0.0)) == pytest.approx(0.99321)
    assert float(atmospheric_transmittance(500.0)) == pytest.approx(0.939335, rel=1e-12)
    assert float(atmospheric_transmittance(2000.0)) == pytest.approx(math.exp(-0.2212))
    with pytest.raises(ValueError):
        atmospheric_transmittance(-1.0)


def test_stagnation_temperature_closed_form():
    # 1000 suns of 1000 W/m² on a black body: T = (1e6/σ)^¼ = 2049.2 K.
    t = float(stagnation_temperature_k(1e6))
    assert t == pytest.approx((1e6 / 5.670374419e-8) ** 0.25, rel=1e-15)
    assert t == pytest.approx(2049.2, abs=0.1)
    # The energy balance reaches it with no convection, no useful heat and T_amb → 0.
    ab = Absorber(
        area_m2=2.0,
        absorptivity=0.9,
        emissivity=0.8,
        h_conv_w_m2k=0.0,
        u_useful_w_m2k=0.0,
        t_fluid_k=0.0,
        t_amb_k=0.0,
    )
    t_bal = float(ab.temperature_k(2.0 * 8e5))
    assert t_bal == pytest.approx(float(stagnation_temperature_k(8e5, 0.9, 0.8)), rel=1e-9)
    with pytest.raises(ValueError):
        stagnation_temperature_k(-1.0)


def test_energy_balance_hand_worked():
    # Choose T = 1000 K and work the absorbed flux out by hand (A = 2 m²):
    #   radiation  εσ(T⁴ − Ta⁴) = 0.8 · 5.670374419e-8 · (1e12 − 300⁴) = 44 995.5 W/m²
    #   convection h(T − Ta)    = 10 · 700                               =  7 000   W/m²
    #   useful     U(T − Tf)    = 100 · 200                              = 20 000   W/m²
    #   sum 71 995.5 W/m² = α q  →  q = 79 995.06 W/m², P = 2 q = 159 990.1 W.
    rad = 0.8 * SIGMA_SB * (1000.0**4 - 300.0**4)
    assert rad == pytest.approx(44995.5, abs=0.1)
    p = 2.0 * (rad + 7000.0 + 20000.0) / 0.9
    assert p == pytest.approx(159990.1, abs=0.1)
    ab = Absorber(
        area_m2=2.0,
        absorptivity=0.9,
        emissivity=0.8,
        h_conv_w_m2k=10.0,
        u_useful_w_m2k=100.0,
        t_fluid_k=800.0,
        t_amb_k=300.0,
    )
    t = ab.temperature_k(np.array([p, 0.0]))
    assert t[0] == pytest.approx(1000.0, rel=1e-9)  # bisection stops at 1e-9 relative
    # No sun: the receiver is drained (the fluid never heats it), so it sits at ambient.
    assert t[1] == pytest.approx(300.0, rel=1e-9)
    # Weak sun below the fluid temperature: no useful heat flows either way and the
    # absorber cannot exceed its stagnation temperature (radiation + convection only).
    weak = ab.temperature_k(np.array([2.0 * 1000.0]))[0]
    no_fluid = replace(ab, u_useful_w_m2k=0.0).temperature_k(np.array([2.0 * 1000.0]))[0]
    assert weak == pytest.approx(no_fluid, rel=1e-9) and weak < 800.0
    assert float(ab.useful_w(1000.0)) == pytest.approx(100.0 * 2.0 * 200.0)
    assert float(ab.useful_w(700.0)) == 0.0  # below the fluid: no useful heat
    with pytest.raises(ValueError, match="power_w"):
        ab.temperature_k(-1.0)
    with pytest.raises(ValueError, match="emissivity"):
        Absorber(area_m2=1.0, emissivity=0.0)


@pytest.fixture(scope="module")
def gains():
    # 3 mrad → 0.5 mrad at both operating points, on an equinox day; hourly steps keep it
    # fast (the year sums 13 days).
    return {
        name: pointing_gain(f(), 3.0, 0.5, step_s=1800.0)
        for name, f in (("heliogen-like", heliogen_like), ("plant-like", plant_like))
    }


def test_operating_points(gains):
    h, p = gains["heliogen-like"], gains["plant-like"]
    # Heliogen-like: a target in the 1000-1500 °C class at clear-sky noon.
    assert 1000.0 < h.t_before_k - 273.15 < h.t_after_k - 273.15 < 1500.0
    # Plant-like: salt receiver surface 550-750 °C, power near the 120 MWt class.
    assert 550.0 < p.t_before_k - 273.15 < 750.0
    assert 100e6 < p.power_before_w < 180e6
    for g in (h, p):
        assert g.intercept_after > g.intercept_before
        assert g.delta_t_k > 0 and g.thermal_gain_kwh_per_day > 0
        assert g.thermal_gain_kwh_per_year > 100 * g.thermal_gain_kwh_per_day
        assert g.stagnation_after_k > g.t_after_k  # the limit is never reached
        assert 8.0 < g.operating_hours_per_day < 14.0  # equinox day, sun above 5°
        # CO2 = kWh / 0.9 · 0.181
        assert g.co2_avoided_kg_per_day == pytest.approx(g.thermal_gain_kwh_per_day / 0.9 * 0.181)
        d = g.as_dict()
        assert d["delta_t_k"] == g.delta_t_k and "co2_avoided_kg_per_year" in d


def test_gain_is_zero_without_improvement_and_power_scales():
    pt = heliogen_like()
    g0 = pointing_gain(pt, 2.0, 2.0, step_s=3600.0)
    assert g0.thermal_gain_kwh_per_day == 0.0 and g0.delta_t_k == 0.0
    # Noon power is linear in the reflectivity (everything else fixed).
    g1 = pointing_gain(with_changes(pt, reflectivity=0.465), 2.0, 2.0, step_s=3600.0)
    assert g1.power_before_w == pytest.approx(0.5 * g0.power_before_w, rel=1e-12)
    # A fixed bias loses more than a Gaussian spread of the same RMS.
    gf = pointing_gain(pt, 3.0, 3.0, step_s=3600.0, treatment="fixed")
    gg = pointing_gain(pt, 3.0, 3.0, step_s=3600.0)
    assert gf.intercept_before < gg.intercept_before
    with pytest.raises(ValueError, match="before_mrad"):
        pointing_gain(pt, -1.0, 0.5)
    with pytest.raises(ValueError, match="step_s"):
        pointing_gain(pt, 1.0, 0.5, step_s=7.0)


def test_field_state_validation():
    from heliostat.ledger.gain import field_state

    pt = heliogen_like()
    s = np.array([[0.0, -0.5, math.sqrt(0.75)]])
    st = field_state(pt, s, [900.0], 1e-3)
    assert st.power_w.shape == (1,) and st.operating[0]
    # Below the minimum elevation, or no DNI: no power, no useful heat.
    low = np.array([[0.0, -1.0, 0.0]])
    assert field_state(pt, low, [900.0], 1e-3).power_w[0] == 0.0
    assert field_state(pt, s, [0.0], 1e-3).useful_w[0] == 0.0
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        field_state(pt, np.zeros((2, 2)), [1.0, 1.0], 1e-3)
    with pytest.raises(ValueError, match="1 values for 2"):
        field_state(pt, np.vstack([s, s]), [1.0], 1e-3)
    with pytest.raises(ValueError, match="finite"):
        field_state(pt, s, [float("nan")], 1e-3)
    with pytest.raises(ValueError, match="n_heliostats"):
        with_changes(pt, n_heliostats=0)
