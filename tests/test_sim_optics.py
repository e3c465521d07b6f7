"""Tests of the simulator's flux-spot optics (sim/optics.py) against physics and
independent references."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from heliostat.config import Target, load_field
from heliostat.frames import intersect_plane, reflect
from heliostat.kinematics import Pose
from heliostat.optics import atmospheric_attenuation, beam_sigma_rad
from heliostat.sun import sun_position
from sim.observe import draw_true_errors
from sim.optics import (
    FluxSpot,
    flux_spot,
    irradiance_w_m2,
    on_target_flux,
    spot_with_sigma,
)

FIELD = Path(__file__).parent / "data" / "field_small.toml"


@pytest.fixture(scope="module")
def field():
    return load_field(FIELD)


def _sun(field, when="2025-06-21T10:00:00Z"):
    return sun_position(field.site, pd.DatetimeIndex([when])).u_sun_enu[0]


def _true_pose(field, hid, seed=3):
    h = field.heliostat(hid)
    t = field.target("cal1")
    s = _sun(field)
    steps = np.rint(h.kinematics.inverse(t.centre_enu_m, s))
    err = draw_true_errors(h.kinematics.drive, np.random.default_rng(seed))
    return h, t, s, h.kinematics.forward(steps, err)


def _grid_moments(spot: FluxSpot, half_m: float, n: int = 1201, box=None):
    """Brute-force midpoint-rule power and centroid of irradiance_w_m2 over a square
    (independent of the analytic moments and of on_target_flux's quadrature)."""
    c = spot.centroid_xy_m
    if box is None:
        box = (c[0] - half_m, c[0] + half_m, c[1] - half_m, c[1] + half_m)
    x0, x1, y0, y1 = box
    hx, hy = (x1 - x0) / n, (y1 - y0) / n
    xs = x0 + hx * (np.arange(n) + 0.5)
    ys = y0 + hy * (np.arange(n) + 0.5)
    gx, gy = np.meshgrid(xs, ys)
    e = irradiance_w_m2(spot, np.stack([gx, gy], axis=-1)) * hx * hy
    p = e.sum()
    return p, np.array([(e * gx).sum() / p, (e * gy).sum() / p])


# ----------------------------------------------------------------- spot geometry
@pytest.mark.parametrize("hid", ["H001", "H002", "AA39"])
def test_spot_centre_and_power_from_true_pose(field, hid):
    h, t, s, pose = _true_pose(field, hid)
    spot = flux_spot(h, pose, s, 850.0, t)
    n, c = pose.u_normal_enu[0], pose.centre_enu_m[0]
    r = reflect(n, s)
    hit = intersect_plane(c, r, t.centre_enu_m, t.u_normal_enu)
    # The centre is the central ray's hit (same as sim.observe's true spot), to 1e-9 m.
    np.testing.assert_allclose(spot.centre_xy_m, t.enu_to_plane(hit), atol=1e-9)
    d = np.linalg.norm(hit - c)
    m = h.mirror
    expected = 850.0 * m.area_m2 * float(n @ s) * m.reflectivity * atmospheric_attenuation(d)
    assert spot.power_w == pytest.approx(expected, rel=1e-12)


def _test_target():
    return Target.make("t", [0.0, 0.0, 50.0], [0.0, 1.0, 0.0], 8.0, 8.0)


def _synthetic(field, *, width, height, slope, focal):
    h = field.heliostat("H001")
    mirror = dataclasses.replace(
        h.mirror, width_m=width, height_m=height, slope_error_mrad=slope, focal_length_m=focal
    )
    return dataclasses.replace(h, mirror=mirror)


def _oblique(theta):
    """Mirror 100 m north of the target facing it at incidence theta; the plane of
    incidence is horizontal, the beam hits the target perpendicularly."""
    r = np.array([0.0, -1.0, 0.0])  # beam toward the target, along its normal
    s = np.array([math.sin(2 * theta), -math.cos(2 * theta), 0.0])  # sun: 2θ from r
    n = (s + r) / np.linalg.norm(s + r)
    return Pose(n[None, :], np.array([[0.0, 100.0, 50.0]])), s


def test_round_spot_normal_incidence_is_hflcal_sum(field):
    # Head-on, focused at the slant range: geometric image vanishes, so per axis
    # σ² = D² (σ_sun² + (2 σ_slope)² + σ_track²) exactly (HFLCAL's error convolution).
    t = _test_target()
    h = _synthetic(field, width=3.0, height=2.0, slope=1.5, focal=None)
    pose, s = _oblique(0.0)
    spot = flux_spot(h, pose, s, 1000.0, t, sun_sigma_mrad=2.51, tracking_sigma_mrad=0.5)
    var = 100.0**2 * ((2.51e-3) ** 2 + (3.0e-3) ** 2 + (0.5e-3) ** 2)
    # ... which is the plant's beam budget (heliostat.optics) times the slant range.
    assert var == pytest.approx((100.0 * float(beam_sigma_rad(2.51e-3, 1.5e-3, 0.5e-3))) ** 2)
    # Finite-difference Jacobians are exact to ~1e-9 relative here (linear map).
    np.testing.assert_allclose(spot.cov_xy_m2, var * np.eye(2), rtol=1e-6, atol=1e-12)


def test_slope_error_doubles_in_plane_and_cos_across(field):
    # Tiny mirror (no image), no sun: reflected slope error is 2σ in the plane of
    # incidence and 2σ cos θ across it (Biggs & Vittitoe, HELIOS).
    theta = math.radians(30.0)
    t = _test_target()
    h = _synthetic(field, width=1e-4, height=1e-4, slope=2.0, focal=None)
    pose, s = _oblique(theta)
    spot = flux_spot(h, pose, s, 1000.0, t, sun_sigma_mrad=0.0)
    sx, sy = np.sqrt(np.diag(spot.cov_xy_m2))
    # Plane of incidence horizontal -> target x; 1e-6 covers the finite differences.
    assert sx == pytest.approx(100.0 * 2 * 2e-3, rel=1e-6)
    assert sy == pytest.approx(100.0 * 2 * 2e-3 * math.cos(theta), rel=1e-6)


@pytest.mark.parametrize("theta_deg", [15.0, 35.0])
def test_astigmatism_matches_hflcal_image_widths(field, theta_deg):
    # Schwarzbözl et al. (HFLCAL): tangential width H_t = L |D/f − cos θ|, sagittal
    # W_s = L |D/f cos θ − 1| for a square mirror of side L (here f = 2 D so both are
    # non-zero); a uniform aperture image of width W has variance W²/12.
    theta = math.radians(theta_deg)
    t = _test_target()
    side = 4.0
    h = _synthetic(field, width=side, height=side, slope=0.0, focal=200.0)
    pose, s = _oblique(theta)
    spot = flux_spot(h, pose, s, 1000.0, t, sun_sigma_mrad=0.0)
    d_over_f = 0.5
    h_t = side * abs(d_over_f - math.cos(theta))
    w_s = side * abs(d_over_f * math.cos(theta) - 1.0)
    sx, sy = np.sqrt(np.diag(spot.cov_xy_m2))
    # First-order (paraxial) model vs the closed form: equal to ~1e-6 (finite differences)
    assert sx == pytest.approx(h_t / math.sqrt(12), rel=1e-5)
    assert sy == pytest.approx(w_s / math.sqrt(12), rel=1e-5)
    assert abs(spot.cov_xy_m2[0, 1]) < 1e-9


# ----------------------------------------------------------------- shapes and moments
@pytest.mark.parametrize("shape", ["round", "faceted", "streaky"])
def test_spot_integrates_to_power_and_centroid(field, shape):
    h, t, s, pose = _true_pose(field, "H002")
    spot = flux_spot(h, pose, s, 900.0, t, shape=shape, rng=np.random.default_rng(7))
    p, c = _grid_moments(spot, half_m=6.0)
    # Midpoint rule with 1 cm cells on a spot of σ ≈ 0.5 m: relative error ~1e-5.
    assert p == pytest.approx(spot.power_w, rel=1e-5)
    np.testing.assert_allclose(c, spot.centroid_xy_m, atol=1e-5)
    if shape != "round":
        # Non-Gaussian spots: the flux centroid is not the central-ray point.
        assert np.linalg.norm(spot.centroid_xy_m - spot.centre_xy_m) > 1e-3
        assert len(spot.components) > 1


def test_faceted_is_seeded_per_heliostat(field):
    h, t, s, pose = _true_pose(field, "H001")
    a = flux_spot(h, pose, s, 900.0, t, shape="faceted")
    b = flux_spot(h, pose, s, 900.0, t, shape="faceted")
    c = flux_spot(h, pose, s, 900.0, t, shape="faceted", rng=np.random.default_rng(1))
    np.testing.assert_array_equal(a.centroid_xy_m, b.centroid_xy_m)
    assert not np.allclose(a.centroid_xy_m, c.centroid_xy_m)


@pytest.mark.parametrize("shape", ["round", "faceted", "streaky"])
def test_on_target_flux_clipped_matches_brute_force(shape):
    # A spot hanging over the right edge of a 5 m target: the truth is the centroid of the
    # part on the target, compared with a 2001² midpoint grid over the target.
    t = Target.make("t", [0.0, 0.0, 50.0], [0.0, 1.0, 0.0], 5.0, 5.0)
    spot = spot_with_sigma(
        [2.3, -0.4],
        0.45,
        5000.0,
        aspect=0.6,
        angle_rad=0.5,
        shape=shape,
        rng=np.random.default_rng(5),
    )
    p_on, cen = on_target_flux(spot, t)
    p_ref, c_ref = _grid_moments(spot, 0, n=2001, box=(-2.5, 2.5, -2.5, 2.5))
    assert 0.3 < p_on / spot.power_w < 0.9
    # Grid cells of 2.5 mm on σ >= 0.1 m: midpoint error ~1e-6 relative; the clipped
    # edge is aligned with cell edges so there is no partial-cell error.
    assert p_on == pytest.approx(p_ref, rel=1e-5)
    np.testing.assert_allclose(cen, c_ref, atol=1e-5)
    assert cen[0] < spot.centroid_xy_m[0]  # clipping pulls the centroid inward


def test_spot_with_sigma_round_moments():
    spot = spot_with_sigma([0.1, -0.2], 0.3, 100.0, aspect=0.5, angle_rad=math.pi / 2)
    np.testing.assert_allclose(spot.cov_xy_m2, np.diag([0.15**2, 0.3**2]), atol=1e-15)
    np.testing.assert_allclose(spot.centroid_xy_m, [0.1, -0.2])
    e = irradiance_w_m2(spot, np.array([0.1, -0.2]))
    assert e == pytest.approx(100.0 / (2 * math.pi * 0.15 * 0.3), rel=1e-12)


def test_validation_messages(field):
    h, t, s, pose = _true_pose(field, "H001")
    with pytest.raises(ValueError, match="shape"):
        flux_spot(h, pose, s, 900.0, t, shape="square")
    with pytest.raises(ValueError, match="behind the mirror"):
        flux_spot(h, pose, -s, 900.0, t)
    with pytest.raises(ValueError, match="dni_w_m2"):
        flux_spot(h, pose, s, float("nan"), t)
    with pytest.raises(ValueError, match="one pose"):
        two = Pose(np.repeat(pose.u_normal_enu, 2, 0), np.repeat(pose.centre_enu_m, 2, 0))
        flux_spot(h, two, s, 900.0, t)
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        irradiance_w_m2(spot_with_sigma([0, 0], 0.3, 1.0), np.zeros(3))
    with pytest.raises(ValueError, match="sigma_m"):
        spot_with_sigma([0, 0], -0.3, 1.0)
