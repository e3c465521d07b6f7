"""Figures of the gain model: intercept vs Monte Carlo, and the two operating points.

Prints JSON: the analytic intercept (Marcum-Q circle, erf rectangle, Gaussian-averaged
pointing) against a seeded 4-million-sample Monte Carlo, with the MC standard error; and
3 → 0.5 mrad at the Heliogen-like and plant-like points (ΔT, thermal gain, CO2), with the
time of the analytic vs MC intercept as the speed baseline.

    .venv/bin/python bench/ledger_gain.py
"""

from __future__ import annotations

import json
import math
import time

import numpy as np

from heliostat.ledger.gain import heliogen_like, plant_like, pointing_gain
from heliostat.optics import CircularAperture, RectangularAperture, pointing_intercept

N = 4_000_000


def mc(aperture, sb, D, rms, treatment, rng):
    p = rng.normal(0.0, sb * D, size=(N, 2))
    if treatment == "gaussian":
        p += rng.normal(0.0, rms / math.sqrt(2) * D, size=(N, 2))
    else:
        p[:, 0] += rms * D
    if isinstance(aperture, CircularAperture):
        inside = np.hypot(p[:, 0], p[:, 1]) <= aperture.radius_m
    else:
        inside = (np.abs(p[:, 0]) <= aperture.width_m / 2) & (
            np.abs(p[:, 1]) <= aperture.height_m / 2
        )
    return float(np.mean(inside))


def main() -> None:
    rng = np.random.default_rng(12345)
    cases = []
    for ap, sb, D in (
        (CircularAperture(0.5), 3.9e-3, 75.0),  # Heliogen-like spot and aperture
        (RectangularAperture(8.4, 10.6), 4.0e-3, 500.0),  # plant-like
    ):
        for rms_mrad in (3.0, 0.5):
            for tr in ("gaussian", "fixed"):
                t0 = time.perf_counter()
                eta = float(pointing_intercept(ap, sb, D, rms_mrad * 1e-3, tr))
                t_an = time.perf_counter() - t0
                t0 = time.perf_counter()
                m = mc(ap, sb, D, rms_mrad * 1e-3, tr, rng)
                t_mc = time.perf_counter() - t0
                cases.append(
                    {
                        "aperture": type(ap).__name__,
                        "beam_sigma_mrad": sb * 1e3,
                        "slant_m": D,
                        "pointing_rms_mrad": rms_mrad,
                        "treatment": tr,
                        "analytic": eta,
                        "monte_carlo": m,
                        "mc_std_error": math.sqrt(m * (1 - m) / N),
                        "rel_diff": (eta - m) / m,
                        "analytic_s": t_an,
                        "monte_carlo_s_baseline": t_mc,
                    }
                )
    points = {}
    for f in (heliogen_like, plant_like):
        t0 = time.perf_counter()
        g = pointing_gain(f(), 3.0, 0.5)
        d = g.as_dict()
        d["compute_s"] = time.perf_counter() - t0
        points[g.point] = d
    print(
        json.dumps({"intercept_vs_mc": cases, "operating_points_3_to_0.5_mrad": points}, indent=2)
    )


if __name__ == "__main__":
    main()
