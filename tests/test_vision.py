"""Vision core without the simulator: registration geometry, input validation, bad
frames, file reading. Synthetic images are built here from the registration's own
inverse (plane -> pixel), so the checks are round trips and invariants."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from heliostat.config import ArucoMarkers
from heliostat.errors import InputError
from heliostat.vision import (
    FLAGS,
    DetectOptions,
    check_quadrilateral,
    detect_spot,
    register_aruco,
    register_corners,
)
from heliostat.vision.io import load_image

W_PX, H_PX = 640, 512
# A target seen obliquely: a trapezoid (left edge farther away than the right one).
CORNERS = np.array([[100.0, 80.0], [560.0, 40.0], [570.0, 470.0], [95.0, 430.0]])
K = np.array([[900.0, 0.0, 319.5], [0.0, 900.0, 255.5], [0.0, 0.0, 1.0]])
DIST = np.array([-0.08, 0.02, 0.0, 0.0, 0.0])


@pytest.fixture(scope="module")
def reg():
    return register_corners(CORNERS, 5.0, 4.0, (W_PX, H_PX), k_px=K, dist_coeffs=DIST)


def gaussian_frame(reg, centre_xy_m, sigma_m, peak_dn, bg_dn=200.0, rng=None, noise_dn=3.0):
    """A frame with a round Gaussian spot in the *target plane* (evaluated at each pixel's
    plane position; uint16)."""
    m = reg.maps
    u0, v0, u1, v1 = m.roi
    img = np.full((H_PX, W_PX), 50.0)
    x, y = m.x_m.astype(float), m.y_m.astype(float)
    e = peak_dn * np.exp(
        -0.5 * ((x - centre_xy_m[0]) ** 2 + (y - centre_xy_m[1]) ** 2) / sigma_m**2
    )
    on = m.coverage > 0
    img[v0:v1, u0:u1] = np.where(on, bg_dn + e * m.coverage, 50.0)
    if rng is not None:
        img = img + rng.normal(0.0, noise_dn, img.shape)
    return np.clip(np.rint(img), 0, 4095).astype(np.uint16)


# --------------------------------------------------------------------------- registration
def test_corners_map_to_target_corners(reg):
    xy = reg.pixel_to_plane(CORNERS)
    np.testing.assert_allclose(xy, [[-2.5, 2.0], [2.5, 2.0], [2.5, -2.0], [-2.5, -2.0]], atol=1e-9)


def test_pixel_plane_round_trip_with_distortion(reg):
    rng = np.random.default_rng(11)
    xy = rng.uniform([-2.5, -2.0], [2.5, 2.0], (50, 2))
    # The undistortion is iterated to ~1e-9 px, so the round trip closes to ~1e-9 m.
    np.testing.assert_allclose(reg.pixel_to_plane(reg.plane_to_pixel(xy)), xy, atol=1e-8)


def test_pixel_areas_sum_to_target_area(reg):
    # Each pixel's on-target footprint area, summed, is the target's area; the footprints
    # are bilinear quadrilaterals of exact corner points, so only the edge coverage
    # approximation (per-axis clipping of a slightly sheared footprint) is left: < 0.1 %.
    assert reg.maps.area_m2.sum(dtype=np.float64) == pytest.approx(5.0 * 4.0, rel=1e-3)


def test_registration_without_intrinsics_is_a_plain_homography():
    r = register_corners(CORNERS, 5.0, 4.0, (W_PX, H_PX))
    np.testing.assert_allclose(r.plane_to_pixel([[2.5, -2.0]]), [CORNERS[2]], atol=1e-9)


@pytest.mark.parametrize(
    "corners, match",
    [
        ([[0, 0], [10, 10], [0, 10], [10, 0]], "convex"),  # self-crossing (bow tie)
        ([[0, 0], [100, 0], [20, 20], [0, 100]], "convex"),  # dart: one reflex vertex
        ([[0, 0], [0, 100], [100, 100], [100, 0]], "counter-clockwise"),  # wrong order
        ([[0, 0], [0, 0], [100, 100], [0, 100]], "coincide"),
        ([[0, 0], [100, 0], [100, 100]], "shape"),
        ([[0, 0], [100, 0], [100, math.nan], [0, 100]], "finite"),
        ("abc", "expected"),
    ],
)
def test_bad_corners_are_rejected(corners, match):
    with pytest.raises(InputError, match=match):
        check_quadrilateral(corners)


def test_bad_target_size_is_rejected():
    with pytest.raises(InputError, match="width_m"):
        register_corners(CORNERS, 0.0, 4.0, (W_PX, H_PX))


def test_aruco_registration_recovers_known_marker_layout():
    # Draw the markers of a frontal target at a known scale; the registration must map
    # the drawn target corners back to ±w/2, ±h/2.
    mk = ArucoMarkers("DICT_4X4_50", (0, 1, 2, 3), 0.5, 0.05)
    w_m = h_m = 4.0
    scale = 100.0  # px per m
    img = np.full((500, 500), 220, np.uint8)
    d = cv2.aruco.getPredefinedDictionary(cv2.aruco.DICT_4X4_50)
    side = int(round(mk.size_m * scale))
    for (cx, cy), mid in zip(mk.centres_xy_m(w_m, h_m), mk.ids, strict=True):
        m = cv2.aruco.generateImageMarker(d, mid, side)
        u = int(round(250 + cx * scale - side / 2))
        v = int(round(250 - cy * scale - side / 2))
        img[v : v + side, u : u + side] = np.where(m > 128, 220, 20)
    img = cv2.GaussianBlur(img, (5, 5), 1.0)
    r = register_aruco(img, mk, w_m, h_m)
    assert r.n_markers == 4
    # Drawn marker edges sit on pixel boundaries: the marker with its top-left pixel at
    # column c spans [c - 0.5, c + side - 0.5] in pixel-centre coordinates, so the plane
    # origin is at (249.5, 249.5); a blurred step edge is located to ~0.05 px.
    expect = np.array([[49.5, 49.5], [449.5, 49.5], [449.5, 449.5], [49.5, 449.5]])
    np.testing.assert_allclose(r.corners_px, expect, atol=0.1)


def test_aruco_registration_fails_clearly_without_markers():
    mk = ArucoMarkers("DICT_4X4_50", (0, 1, 2, 3), 0.5, 0.05)
    img = np.full((200, 200), 128, np.uint8)
    with pytest.raises(InputError, match="found 0 of the target's 4 markers"):
        register_aruco(img, mk, 4.0, 4.0)


# --------------------------------------------------------------------------- detection
def test_round_spot_centroid_in_the_plane(reg):
    rng = np.random.default_rng(5)
    img = gaussian_frame(reg, (0.7, -0.4), 0.25, 2500.0, rng=rng)
    res = detect_spot(img, reg, bit_depth=12)
    assert res.ok and res.flags == ()
    # Noise 3 DN on a 2500 DN spot: the propagated 1-sigma is ~1e-4 m; allow 5 sigma.
    assert abs(res.x_m - 0.7) < 5 * res.sigma_m + 1e-5
    assert abs(res.y_m + 0.4) < 5 * res.sigma_m + 1e-5
    assert res.size_x_m == pytest.approx(0.25, rel=0.02)  # rms width, 2 % for the noise
    np.testing.assert_allclose([res.u_px, res.v_px], reg.plane_to_pixel([[res.x_m, res.y_m]])[0])


def test_plane_centroid_beats_image_centroid_under_perspective(reg):
    # Noise-free big spot on an oblique view: the area-weighted plane centroid is exact up
    # to the synthetic frame's own discretisation (Gaussian sampled at pixel centres, a
    # midpoint rule of step h ~ 1 cm over sigma = 0.4 m: relative O((h/sigma)^2) ~ 6e-4 of
    # sigma, i.e. 2.5e-4 m) and 1-DN rounding; the naive image-plane centroid mapped to
    # the plane is off by far more.
    img = gaussian_frame(reg, (-1.0, 0.5), 0.4, 3000.0)
    res = detect_spot(img, reg, bit_depth=12)
    assert abs(res.x_m + 1.0) < 2.5e-4 and abs(res.y_m - 0.5) < 2.5e-4
    s = img.astype(float) - 200.0
    m = np.zeros_like(s, bool)
    u0, v0, u1, v1 = reg.maps.roi
    m[v0:v1, u0:u1] = reg.maps.coverage >= 1
    s = np.where(m & (s > 0), s, 0.0)
    vv, uu = np.mgrid[0:H_PX, 0:W_PX]
    naive = reg.pixel_to_plane([[np.sum(s * uu) / s.sum(), np.sum(s * vv) / s.sum()]])[0]
    assert np.hypot(naive[0] + 1.0, naive[1] - 0.5) > 10 * np.hypot(res.x_m + 1.0, res.y_m - 0.5)


def test_colour_and_grey_agree(reg):
    rng = np.random.default_rng(8)
    g16 = gaussian_frame(reg, (0.2, 0.3), 0.3, 2500.0, rng=rng)
    g8 = (g16 // 16).astype(np.uint8)
    bgr = np.dstack([g8, g8, g8])
    r_grey = detect_spot(g8, reg)
    r_col = detect_spot(bgr, reg)
    # Equal channels: BT.601 grey of (g, g, g) is g exactly.
    assert r_col.x_m == pytest.approx(r_grey.x_m, abs=1e-9)
    assert r_col.y_m == pytest.approx(r_grey.y_m, abs=1e-9)
    # 8-bit quantisation of the same frame moves the centroid by well under a pixel
    # (pixel ~ 1 cm here).
    assert abs(r_grey.x_m - 0.2) < 2e-3 and abs(r_grey.y_m - 0.3) < 2e-3


def test_dark_frame_is_subtracted(reg):
    rng = np.random.default_rng(9)
    img = gaussian_frame(reg, (1.0, 1.0), 0.2, 2000.0, rng=rng)
    dark = gaussian_frame(reg, (0.0, 0.0), 0.2, 0.0, rng=rng)
    res = detect_spot(img, reg, dark=dark, bit_depth=12)
    assert res.ok and abs(res.background_dn) < 1.0  # residual offset of two noisy frames
    assert abs(res.x_m - 1.0) < 5 * res.sigma_m and abs(res.y_m - 1.0) < 5 * res.sigma_m


def test_brightest_integrated_signal_wins_over_a_glint(reg):
    rng = np.random.default_rng(10)
    img = gaussian_frame(reg, (-1.0, -0.5), 0.3, 1500.0, rng=rng).astype(float)
    glint = gaussian_frame(reg, (1.5, 1.2), 0.04, 4000.0).astype(float) - 200.0
    img = np.clip(img + np.clip(glint, 0, None), 0, 4095).astype(np.uint16)
    res = detect_spot(img, reg, bit_depth=12)
    assert "multiple_candidates" in res.flags and res.n_candidates == 2
    assert abs(res.x_m + 1.0) < 0.01 and abs(res.y_m + 0.5) < 0.01
    # With an expected aim point near the glint, the glint is chosen instead.
    res2 = detect_spot(img, reg, bit_depth=12, expected_xy_m=(1.4, 1.0))
    assert abs(res2.x_m - 1.5) < 0.01 and abs(res2.y_m - 1.2) < 0.01


def test_expected_far_away_is_flagged(reg):
    img = gaussian_frame(reg, (0.0, 0.0), 0.3, 2000.0, rng=np.random.default_rng(1))
    res = detect_spot(img, reg, expected_xy_m=(2.0, 1.5), options=DetectOptions(max_offset_m=0.5))
    assert "far_from_expected" in res.flags


def test_spot_cut_by_the_edge_is_flagged(reg):
    img = gaussian_frame(reg, (2.4, 0.0), 0.3, 2000.0, rng=np.random.default_rng(2))
    res = detect_spot(img, reg, bit_depth=12)
    assert res.ok and res.touches_edge and "touches_edge" in res.flags
    # Only the on-target part counts: its centroid lies inside the target.
    assert res.x_m < 2.4


def test_saturation_is_reported(reg):
    img = gaussian_frame(reg, (0.0, 0.0), 0.3, 8000.0)  # clipped at 4095
    res = detect_spot(img, reg, bit_depth=12)
    assert "saturated" in res.flags and 0 < res.saturated_fraction < 1


@pytest.mark.parametrize("value, flag", [(0, "all_black"), (4095, "all_white")])
def test_black_and_white_frames_give_flags_not_numbers(reg, value, flag):
    img = np.full((H_PX, W_PX), value, np.uint16)
    res = detect_spot(img, reg, bit_depth=12)
    assert not res.ok and flag in res.flags and "no_spot" in res.flags
    assert math.isnan(res.x_m) and math.isnan(res.u_px)


def test_noise_only_frame_has_no_spot(reg):
    img = gaussian_frame(reg, (0.0, 0.0), 0.3, 0.0, rng=np.random.default_rng(3))
    res = detect_spot(img, reg, bit_depth=12)
    assert not res.ok and res.flags == ("no_spot",) and math.isnan(res.y_m)


def test_flat_frame_has_no_spot(reg):
    img = np.full((H_PX, W_PX), 300, np.uint16)
    res = detect_spot(img, reg, bit_depth=12)
    assert not res.ok and "no_spot" in res.flags


def test_every_flag_is_declared(reg):
    img = gaussian_frame(reg, (2.4, 0.0), 0.3, 8000.0)
    assert set(detect_spot(img, reg, bit_depth=12).flags) <= set(FLAGS)


@pytest.mark.parametrize(
    "image, match",
    [
        (np.zeros((H_PX, W_PX), bool), "dtype"),
        (np.zeros((H_PX, W_PX), complex), "dtype"),
        (np.zeros((H_PX, W_PX, 2), np.uint8), "shape"),
        (np.zeros((4, H_PX, W_PX), np.uint8), "shape"),
        (np.zeros((100, 100), np.uint8), "registration is for 640x512"),
        (np.full((H_PX, W_PX), np.nan, np.float32), "NaN"),
        ([[1, 2], [3, 4]], "numpy array"),
    ],
)
def test_bad_frames_raise_clear_errors(reg, image, match):
    with pytest.raises(InputError, match=match):
        detect_spot(image, reg)


def test_dark_of_wrong_shape_is_rejected(reg):
    img = np.zeros((H_PX, W_PX), np.uint16)
    with pytest.raises(InputError, match="dark"):
        detect_spot(img, reg, dark=np.zeros((H_PX, W_PX, 3), np.uint16))


def test_bad_expected_position_is_rejected(reg):
    img = gaussian_frame(reg, (0.0, 0.0), 0.3, 2000.0)
    with pytest.raises(InputError, match="expected_xy_m"):
        detect_spot(img, reg, expected_xy_m=(0.0, math.nan))


# --------------------------------------------------------------------------- io
def test_load_image_round_trips_16_bit_png(tmp_path, reg):
    img = gaussian_frame(reg, (0.0, 0.0), 0.3, 2000.0)
    p = tmp_path / "f.png"
    cv2.imwrite(str(p), img)
    back = load_image(p)
    assert back.dtype == np.uint16 and np.array_equal(back, img)


def test_load_image_npy(tmp_path):
    a = np.arange(64, dtype=np.float32).reshape(8, 8)
    np.save(tmp_path / "a.npy", a)
    assert np.array_equal(load_image(tmp_path / "a.npy"), a)


@pytest.mark.parametrize(
    "content, match",
    [
        (None, "not found"),
        (b"", "empty"),
        (b"hello, not an image", "not an image OpenCV can decode"),
        ("truncated", "truncated"),
    ],
)
def test_load_image_bad_files(tmp_path, content, match):
    p = tmp_path / "x.png"
    if content == "truncated":
        cv2.imwrite(str(p), np.zeros((64, 64), np.uint16))
        p.write_bytes(p.read_bytes()[:-20])
    elif content is not None:
        p.write_bytes(content)
    with pytest.raises(InputError, match=match):
        load_image(p)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.int32])
@pytest.mark.parametrize("shape", [(37, 53), (64, 64), (41, 40, 3), (33, 70, 4)])
def test_coarse_sampling_equals_strided_slicing(dtype, shape):
    # The fast path (OpenCV nearest resize) must pick exactly every s-th pixel from s // 2.
    from heliostat.vision.signal import _coarse

    rng = np.random.default_rng(4)
    a = rng.integers(0, 200, shape).astype(dtype)
    for s in (1, 2, 3, 8):
        np.testing.assert_array_equal(_coarse(a, s), a[s // 2 :: s, s // 2 :: s])
