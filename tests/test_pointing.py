"""The pointing change over the sky (heliostat/kinematics/pointing.py): the one sky grid
and the beam change / mirror turn between two parameter sets, used by the bridge's safety
check and by the campaign history."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from heliostat.config import load_field
from heliostat.kinematics import KinematicErrors
from heliostat.kinematics.pointing import (
    SKY_ELEVATIONS_DEG,
    pointing_change,
    reachable_steps,
    sky_grid,
)

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def h001():
    cfg = load_field(DATA / "field_small.toml")
    return cfg.heliostats["H001"].kinematics, cfg.targets["cal1"].centre_enu_m


def test_sky_grid_is_48_unit_vectors_at_the_grid_elevations():
    sun = sky_grid()
    assert sun.shape == (48, 3)
    np.testing.assert_allclose(np.linalg.norm(sun, axis=1), 1.0, rtol=1e-15)
    # elevation-major: 12 azimuths per elevation; asin of the up component (exact to
    # rounding of sin/asin, ~1e-15 rad).
    el = np.degrees(np.arcsin(sun[:, 2])).reshape(len(SKY_ELEVATIONS_DEG), 12)
    np.testing.assert_allclose(el, np.repeat([SKY_ELEVATIONS_DEG], 12, axis=0).T, atol=1e-12)


def test_beam_change_of_an_elevation_zero_offset(h001):
    """A change d of the elevation-axis zero turns the mirror by d about a horizontal axis
    lying in the mirror plane: the beam turns by at most 2d (exactly 2d when that axis is
    perpendicular to the plane of incidence, 2d*cos(incidence) at the other extreme)."""
    kin, aim = h001
    d = 1e-3
    a = KinematicErrors.from_dict("azel", {"axis1_zero_rad": 2e-3})
    b = KinematicErrors.from_dict("azel", {"axis1_zero_rad": 2e-3, "axis2_zero_rad": d})
    pc = pointing_change(kin, a, b, aim)
    assert pc.beam_max_mrad <= 2 * d * 1e3 * (1 + 1e-6)
    assert pc.beam_max_mrad > 1.9 * d * 1e3  # some sun of the grid is near perpendicular
    # incidence angles stay below 60 deg over most of the grid
    assert pc.beam_rms_mrad > 1.0 * d * 1e3
    # The mirror itself turns by exactly d at every sun (the elevation axis is
    # perpendicular to the normal); 1e-6 relative covers the inverse's 1e-9 rad tolerance.
    assert pc.mirror_max_mrad == pytest.approx(d * 1e3, rel=1e-6)
    assert pc.n_suns > 24  # most of the grid is reachable for this heliostat
    # identical models: zero up to the inverse kinematics' convergence (1e-9 rad)
    same = pointing_change(kin, b, b, aim)
    assert max(same.beam_max_mrad, same.mirror_max_mrad) < 1e-5


def test_nominal_to_errors_is_symmetric_in_the_mirror_turn(h001):
    # Nominal -> e (the bridge's "maximum correction") and e -> nominal turn the mirror
    # between the same two step sets, measured once with each model: for a small set the
    # two agree to second order (here 1e-3 of the value).
    kin, aim = h001
    e = KinematicErrors.from_dict(
        "azel", {"axis1_zero_rad": 3e-3, "axis2_zero_rad": -2e-3, "mirror_collimation_rad": 1e-3}
    )
    fwd = pointing_change(kin, None, e, aim).mirror_max_mrad
    back = pointing_change(kin, e, None, aim).mirror_max_mrad
    assert 2.0 < fwd < 6.0
    assert back == pytest.approx(fwd, rel=1e-3)


def test_unreachable_suns_are_nan_rows_and_no_sun_gives_nan(h001):
    kin, aim = h001
    below = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # under the horizon; due north
    st = reachable_steps(kin, aim, np.vstack([sky_grid()[30], below[:1]]))
    assert np.all(np.isfinite(st[0])) and np.all(np.isnan(st[1]))
    pc = pointing_change(kin, None, None, aim, u_sun_enu=below[:1])
    assert math.isnan(pc.beam_rms_mrad) and math.isnan(pc.mirror_max_mrad) and pc.n_suns == 0
