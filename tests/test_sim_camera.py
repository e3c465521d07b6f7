"""Tests holding the simulated camera (sim/camera.py) to physics: centroid, flux,
determinism, registration markers, camera.toml round trip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from heliostat.config import dumps_toml, load_camera, load_field
from heliostat.sun import sun_position
from sim.camera import (
    SensorModel,
    camera_to_dict,
    camera_view,
    metres_per_pixel,
    place_camera,
    render_frame,
    render_pair,
)
from sim.observe import draw_true_errors
from sim.optics import flux_spot, on_target_flux, spot_with_sigma

FIELD = Path(__file__).parent / "data" / "field_small.toml"


@pytest.fixture(scope="module")
def setup():
    field = load_field(FIELD)
    target = field.target("cal1")
    camera = place_camera(field, target)
    return field, target, camera


def _spot(field, target, hid="H001", shape="round", seed=11):
    h = field.heliostat(hid)
    s = sun_position(field.site, pd.DatetimeIndex(["2025-06-21T10:00:00Z"])).u_sun_enu[0]
    steps = np.rint(h.kinematics.inverse(target.plane_to_enu([0.4, -0.3]), s))
    err = draw_true_errors(h.kinematics.drive, np.random.default_rng(seed))
    return flux_spot(h, h.kinematics.forward(steps, err), s, 880.0, target, shape=shape)


def _spot_irradiance(camera, target, spots, **kw):
    """Noise-free on and off frames at one exposure -> the spots' irradiance per pixel,
    recovered the way a plant would (dark-frame subtraction, gain, exposure, albedo)."""
    rng = np.random.default_rng(0)
    on, off, truths = render_pair(camera, target, spots, rng=rng, noise=False, **kw)
    exp = truths[0].exposure
    sensor = SensorModel()
    gain = sensor.gain_e_per_dn(camera.bit_depth)
    view = camera_view(camera, target)
    diff = (on.astype(np.float64) - off.astype(np.float64)) * gain / exp
    return diff / view.albedo, truths, view


# ----------------------------------------------------------------- placement
def test_place_camera_frames_the_target(setup):
    field, target, camera = setup
    uv = camera.project(target.corners_enu_m())
    assert np.all(uv >= 0) and np.all(uv[:, 0] < 1280) and np.all(uv[:, 1] < 1024)
    # fill = 0.8 of the limiting (vertical) dimension, measured symmetrically about the
    # principal point as place_camera defines it; 3 px covers the 2 px lens distortion.
    span = 2 * np.max(np.abs(uv[:, 1] - camera.k_px[1, 2]))
    assert span == pytest.approx(0.8 * 1024, abs=3.0)
    # Off-axis: perspective makes the near (bottom) edge longer than the top edge.
    top, bottom = uv[1, 0] - uv[0, 0], uv[2, 0] - uv[3, 0]
    assert bottom > top + 5
    # The camera sits in front of the target (positive side of its normal).
    assert (camera.position_enu_m - target.centre_enu_m) @ target.u_normal_enu > 0


@pytest.mark.parametrize("roll_rad", [0.0, 0.1])
def test_camera_toml_round_trip(setup, tmp_path, roll_rad):
    field, target, _ = setup
    camera = place_camera(field, target, roll_rad=roll_rad)
    p = tmp_path / "camera.toml"
    p.write_text(dumps_toml(camera_to_dict(camera)))
    back = load_camera(p)
    pts = np.concatenate([target.corners_enu_m(), target.centre_enu_m[None]])
    # TOML floats are written with repr (exact); the look-at rebuild is exact to ~1e-12.
    np.testing.assert_allclose(back.project(pts), camera.project(pts), atol=1e-6)
    assert back.bit_depth == 12 and back.target == "cal1"


def test_pixel_to_plane_map_inverts_projection(setup):
    _, target, camera = setup
    view = camera_view(camera, target)
    rng = np.random.default_rng(2)
    ij = np.stack([rng.integers(0, 1024, 200), rng.integers(0, 1280, 200)], axis=1)
    xy = view.xy_m[ij[:, 0], ij[:, 1]].astype(np.float64)
    uv = camera.project(target.plane_to_enu(xy))
    # float32 storage of xy (~5e-7 m) is 1e-4 px at ~6 mm per pixel.
    np.testing.assert_allclose(uv, ij[:, ::-1].astype(float), atol=1e-3)


# ----------------------------------------------------------------- physics of frames
@pytest.mark.parametrize("shape", ["round", "faceted", "streaky", "small"])
def test_centroid_and_flux_noise_free(setup, shape):
    field, target, camera = setup
    if shape == "small":  # σ ≈ 3 px: the pixel-footprint averaging matters here
        sigma_m = 3.0 * metres_per_pixel(camera, target, [0.7, -0.45])
        spot = spot_with_sigma([0.7, -0.45], sigma_m, 2000.0, aspect=0.7, angle_rad=0.3)
    else:
        spot = _spot(field, target, shape=shape)
    # 16-bit ADC: "noise off" still rounds to integers, and rounding without dither is
    # biased in the faint tails (on - off of two rounded values whose fractional part is
    # nearly constant over the uniform wall): at 12 bit that costs up to ~0.13 px for
    # the wide streaky spot whose tails cover the wall, 0.01-0.04 px for the others.
    camera = dataclasses.replace(camera, bit_depth=16)
    e, (truth,), view = _spot_irradiance(camera, target, [spot])
    # Centroid in the target plane, each pixel weighted by its irradiance × its footprint
    # area (the pixel value is irradiance, not power): the flux-weighted centroid over the
    # whole visible plane (board, ink and wall), compared with the spot's whole-plane
    # centroid; clipping to the target is tested against brute force in test_sim_optics.
    w = np.where(view.on_wall, e * view.pixel_area_m2, 0.0)
    xy = view.xy_m.astype(np.float64)
    c_xy = (w[..., None] * xy).reshape(-1, 2).sum(0) / w.sum()
    c_px = camera.project(target.plane_to_enu(c_xy))[0]
    want_px = camera.project(target.plane_to_enu(spot.centroid_xy_m))[0]
    if truth.fraction_on_target > 1 - 1e-7:  # then the on-target truth is the same point
        np.testing.assert_allclose(truth.centroid_px, want_px, atol=1e-3)
    err_px = np.linalg.norm(c_px - want_px)
    print(f"{shape}: centroid error {err_px:.4f} px")
    assert err_px < 0.05, f"centroid off by {err_px:.4f} px"
    # Total flux on the visible plane equals DNI·A·cosθ·ρ·τ within 1 % (issue).
    p = float(np.sum(np.where(view.on_wall, e * view.pixel_area_m2, 0.0)))
    print(f"{shape}: flux ratio {p / spot.power_w:.5f}")
    assert p == pytest.approx(spot.power_w, rel=0.01)
    np.testing.assert_allclose(
        truth.centroid_px, camera.project(truth.centroid_enu_m)[0], atol=1e-9
    )


def test_spot_partly_off_target_truth(setup):
    field, target, camera = setup
    spot = spot_with_sigma([2.2, 0.5], 0.3, 5000.0, shape="faceted")
    img, (truth,) = render_frame(camera, target, [spot], rng=np.random.default_rng(1))
    p_on, cen = on_target_flux(spot, target)
    assert 0.2 < truth.fraction_on_target < 0.95
    assert truth.fraction_on_target == pytest.approx(p_on / spot.power_w)
    np.testing.assert_allclose(truth.centroid_xy_m, cen)
    assert cen[0] < spot.centroid_xy_m[0] and abs(cen[0]) <= target.width_m / 2
    np.testing.assert_allclose(truth.centroid_enu_m, target.plane_to_enu(cen))


def test_same_seed_same_bytes(setup):
    field, target, camera = setup
    spots = [_spot(field, target, "H001", "faceted"), _spot(field, target, "H002")]
    a, _ = render_frame(camera, target, spots, rng=np.random.default_rng(42))
    b, _ = render_frame(camera, target, spots, rng=np.random.default_rng(42))
    c, _ = render_frame(camera, target, spots, rng=np.random.default_rng(43))
    assert a.dtype == np.uint16 and a.shape == (1024, 1280)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


def test_noise_statistics(setup):
    # Flat ambient-only frame: the spread of (frame - noise-free frame) matches shot +
    # read noise of the sensor model, sqrt(e + r²)/gain, within 3 % (n ≈ 1e5 pixels
    # gives ~0.5 % sampling error on a standard deviation; rounding adds 1/12 DN²).
    _, target, camera = setup
    sensor = SensorModel()
    clean, _ = render_frame(camera, target, [], rng=np.random.default_rng(0), noise=False)
    noisy, _ = render_frame(camera, target, [], rng=np.random.default_rng(0))
    view = camera_view(camera, target)
    sel = (view.albedo > 0.8) & target.contains(view.xy_m.astype(float))
    d = noisy[sel].astype(float) - clean[sel].astype(float)
    gain = sensor.gain_e_per_dn(12)
    e = (clean[sel].astype(float) - sensor.black_dn(12)) * gain
    expected = np.sqrt(np.mean((e + sensor.read_noise_e**2) / gain**2) + 2 / 12)
    assert d.std() == pytest.approx(expected, rel=0.03)
    assert abs(d.mean()) < 0.05


def test_auto_exposure_saturation_and_clouds(setup):
    field, target, camera = setup
    spot = _spot(field, target)
    img, (t,) = render_frame(camera, target, [spot], rng=np.random.default_rng(0), noise=False)
    # Auto exposure: peak at 70 % of full scale (rounding: ±0.5 DN).
    assert img.max() == pytest.approx(0.7 * 4095, abs=1.0)
    assert t.saturated_fraction == 0.0
    img2, (t2,) = render_frame(
        camera, target, [spot], rng=np.random.default_rng(0), exposure=3 * t.exposure
    )
    assert t2.peak_dn > 4095 and t2.saturated_fraction > 0.3 and img2.max() == 4095
    # A cloud at 50 % halves the spot's signal above the ambient (same exposure).
    e1, _, _ = _spot_irradiance(camera, target, [spot])
    e2, (t3,), _ = _spot_irradiance(camera, target, [spot], cloud_factor=0.5)
    assert np.nansum(e2) / np.nansum(e1) == pytest.approx(0.5, rel=2e-3)
    assert t3.power_on_target_w == pytest.approx(0.5 * on_target_flux(spot, target)[0])


def test_two_spots_and_eight_bit(setup):
    field, target, camera = setup
    cam8 = dataclasses.replace(camera, bit_depth=8)
    spots = [_spot(field, target, "H001"), spot_with_sigma([-1.0, 0.8], 0.25, 3000.0)]
    img, truths = render_frame(cam8, target, spots, rng=np.random.default_rng(3))
    assert img.dtype == np.uint8
    assert len(truths) == 2
    # Wholly on the target (8σ inside): the truth is the Gaussian's own centre.
    np.testing.assert_allclose(truths[1].centroid_xy_m, [-1.0, 0.8], atol=1e-12)
    # The second spot is visible where its truth says: local max near its pixel.
    u, v = np.rint(truths[1].centroid_px).astype(int)
    assert img[v, u] > np.median(img) + 50


# ----------------------------------------------------------------- registration markers
def test_aruco_markers_detected_at_projected_corners(setup):
    _, target, camera = setup
    img, truths = render_frame(camera, target, [], rng=np.random.default_rng(9))
    assert truths == []
    img8 = (img >> 4).astype(np.uint8)
    params = cv2.aruco.DetectorParameters()
    params.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
    det = cv2.aruco.ArucoDetector(cv2.aruco.getPredefinedDictionary(cv2.aruco.DICT_4X4_50), params)
    corners, ids, _ = det.detectMarkers(img8)
    assert ids is not None and sorted(ids.ravel().tolist()) == [0, 1, 2, 3]
    mk = target.markers
    expected = mk.corners_xy_m(target.width_m, target.height_m)
    worst = 0.0
    for c, i in zip(corners, ids.ravel(), strict=True):
        k = list(mk.ids).index(int(i))
        uv = camera.project(target.plane_to_enu(expected[k]))
        worst = max(worst, float(np.max(np.linalg.norm(c.reshape(4, 2) - uv, axis=1))))
    print(f"worst marker corner error {worst:.3f} px")
    # Issue requirement: detected corners agree with the projection within ~0.5 px.
    assert worst < 0.5, f"worst marker corner error {worst:.3f} px"
