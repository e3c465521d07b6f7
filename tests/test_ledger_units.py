"""Human units: unit by magnitude, digits by uncertainty (reference values worked by hand
with the GUM rounding rule: σ to 1 significant figure, 2 when it starts with 1)."""

from __future__ import annotations

import math

import pytest

from heliostat.ledger.units import (
    format_duration,
    format_energy,
    format_hours,
    format_mass,
    round_to_uncertainty,
)


def test_round_to_uncertainty_hand_worked():
    assert round_to_uncertainty(4.2, 2.1) == (4.0, 2.0, 0)
    assert round_to_uncertainty(12.34, 0.617) == (12.3, 0.6, 1)
    # leading 1: two figures
    assert round_to_uncertainty(19.3, 1.45) == (19.3, 1.4, 1)
    with pytest.raises(ValueError, match="sigma"):
        round_to_uncertainty(1.0, 0.0)


def test_payback_of_milliseconds_is_not_shown_with_false_precision():
    # Regression: payback printed "1.2e-06 h" with two figures for a ±50 % compute figure.
    # 1.2e-6 h = 4.32 ms; σ = 2.16 ms → "4 ± 2 ms".
    assert format_hours(1.2e-6, 0.5) == "4 ± 2 ms"
    assert format_hours(math.inf) == "never"
    assert format_hours(3.0) == "3 h"


def test_units_by_magnitude():
    assert format_energy(160.1, 0.5) == "160 ± 80 J"
    assert format_energy(0.0123) == "12.3 mJ"
    # 12.3 kWh ± 5 % = ± 0.615 kWh → 0.6
    assert format_energy(12.3 * 3.6e6, 0.05) == "12.3 ± 0.6 kWh"
    assert format_energy(656_347.3 * 3.6e6) == "656 MWh"
    assert format_mass(1.9245e-5, 0.5) == "19 ± 10 mg"
    assert format_mass(0.5) == "500 g"
    assert format_mass(284_019.0) == "284 t"
    assert format_duration(90.0) == "90 s"
    assert format_duration(3 * 86400.0) == "3 days"
    assert format_duration(10 * 365.25 * 86400.0) == "10 years"
    assert format_duration(0.0) == "0 µs"
