"""The gain model: thermal balance, operating points, the gain over a day and a year
(the beam and intercept it uses are tested in test_optics.py)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from heliostat.ledger.gain import (
    SIGMA_SB,
    Absorber,
    heliogen_like,
    plant_like,
    pointing_gain,
    stagnation_temperature_k,
    with_changes,
)


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
