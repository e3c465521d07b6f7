"""Human units for the ledger's output: a unit chosen by magnitude, digits by uncertainty.

A figure is shown in the unit that keeps its number between about 1 and 1000 (µs … years,
mJ … GWh, mg … t) and, when its relative standard uncertainty is known, as
``value ± σ`` with σ rounded to one significant figure (two when it starts with a 1) and
the value rounded to the same decimal place — the usual rule of metrology (GUM,
JCGM 100:2008, 7.2.6). Without a known uncertainty three significant figures are shown.
Infinite durations read "never".

These are formatting helpers only (strings at the edges); the numbers inside stay in SI.
"""

from __future__ import annotations

import math

#: (factor to the SI base, unit, upper bound in the base unit for choosing it)
_ENERGY = (
    (1e-3, "mJ", 1.0),
    (1.0, "J", 3.6e4),  # below 0.01 kWh: joules
    (3.6e6, "kWh", 3.6e9),
    (3.6e9, "MWh", 3.6e12),
    (3.6e12, "GWh", math.inf),
)
_MASS = (
    (1e-6, "mg", 1e-3),
    (1e-3, "g", 1.0),
    (1.0, "kg", 1e3),
    (1e3, "t", math.inf),
)
_DURATION = (
    (1e-6, "µs", 1e-3),
    (1e-3, "ms", 1.0),
    (1.0, "s", 120.0),
    (60.0, "min", 7200.0),
    (3600.0, "h", 48 * 3600.0),
    (86400.0, "days", 730 * 86400.0),
    (365.25 * 86400.0, "years", math.inf),
)


def round_to_uncertainty(value: float, sigma: float) -> tuple[float, float, int]:
    """Round a value and its standard uncertainty for display.

    σ keeps one significant figure (two when its first digit is 1); the value is rounded
    to the same decimal place.

    Returns
    -------
    value, sigma : float
        Rounded.
    decimals : int
        Decimal places to print (≥ 0).
    """
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be finite and > 0, got {sigma!r}")
    e = math.floor(math.log10(sigma))
    if sigma / 10**e < 2.0:
        e -= 1
    s = round(sigma, -e)
    e2 = math.floor(math.log10(s))  # rounding may carry (0.96 → 1.0)
    if s / 10**e2 < 2.0:
        e2 -= 1
    e = max(e, e2)
    return round(value, -e), round(sigma, -e), max(-e, 0)


def _fmt(value: float, rel_unc: float, table) -> str:
    v = float(value)
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "never" if table[0][1] == "µs" and v > 0 else f"{v}"
    a = abs(v)
    factor, unit = table[-1][0], table[-1][1]
    for f, u, hi in table:
        if a < hi:
            factor, unit = f, u
            break
    x = v / factor
    if x == 0:
        return f"0 {unit}"
    if rel_unc is not None and math.isfinite(rel_unc) and rel_unc > 0:
        xv, xs, d = round_to_uncertainty(x, abs(x) * rel_unc)
        return f"{xv:.{d}f} ± {xs:.{d}f} {unit}"
    x3 = float(f"{x:.3g}")
    return f"{x3:,.0f} {unit}" if abs(x3) >= 100 else f"{x:.3g} {unit}"


def format_energy(joules: float, rel_unc: float = math.nan) -> str:
    """Energy in mJ, J, kWh, MWh or GWh by magnitude (± σ when ``rel_unc`` is known)."""
    return _fmt(joules, rel_unc, _ENERGY)


def format_mass(kg: float, rel_unc: float = math.nan) -> str:
    """A mass (of CO2e) in mg, g, kg or t by magnitude (± σ when ``rel_unc`` is known)."""
    return _fmt(kg, rel_unc, _MASS)


def format_duration(seconds: float, rel_unc: float = math.nan) -> str:
    """A duration in µs, ms, s, min, h, days or years by magnitude; inf → "never"."""
    return _fmt(seconds, rel_unc, _DURATION)


def format_hours(hours: float, rel_unc: float = math.nan) -> str:
    """:func:`format_duration` of a figure in hours."""
    return format_duration(hours * 3600.0, rel_unc)


def format_operating_hours(hours: float, rel_unc: float = math.nan) -> str:
    """Plant operating time: µs … h, never days or years (an operating hour is not a
    calendar hour: a clear-sky year has ~4,100 of them)."""
    return _fmt(hours * 3600.0, rel_unc, _DURATION[:4] + ((3600.0, "h", math.inf),))
