"""Vision core without the simulator: registration geometry, input validation, bad
frames, file reading. Synthetic images are built here from the registration's own
inverse (plane -> pixel), so the checks are round trips and invariants."""

from __future__ import annotations

import math
import re

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
    assert "spot_in_dark" not in res.flags
    assert abs(res.x_m - 1.0) < 5 * res.sigma_m and abs(res.y_m - 1.0) < 5 * res.sigma_m


def test_a_neighbour_in_the_sun_off_frame_cancels_and_is_flagged_when_near(reg):
    """The sun-off protocol: the neighbour's spot is in both frames and cancels in
    (on - off). Far from the spot it does no harm; inside the spot's window its drift
    between the frames (2 cm here) leaves a residue that biases the centroid, so the
    result says so."""
    rng = np.random.default_rng(23)

    def frame(spots):
        f = np.full((H_PX, W_PX), 200.0) + rng.normal(0.0, 3.0, (H_PX, W_PX))
        for xy, sig, peak in spots:
            f += gaussian_frame(reg, xy, sig, peak, bg_dn=0.0).astype(float)
        return np.clip(np.rint(f), 0, 4095).astype(np.uint16)

    a = ((-1.0, -0.5), 0.3, 1500.0)
    for b_xy, near in (((1.5, 1.2), False), ((-0.7, -0.3), True)):
        on = frame([a, (b_xy, 0.25, 2000.0)])
        off = frame([((b_xy[0] + 0.02, b_xy[1]), 0.25, 2000.0)])
        res = detect_spot(on, reg, dark=off, bit_depth=12, expected_xy_m=(-1.0, -0.5))
        err = math.hypot(res.x_m + 1.0, res.y_m + 0.5)
        assert res.ok and ("spot_in_dark" in res.flags) == near
        if near:
            assert err > 0.005  # the residue's bias: why the flag is there
        else:
            assert err < 5 * res.sigma_m + 1e-4


def test_dark_frame_of_another_dtype_gives_the_same_result(reg):
    # The integer fast path must subtract the dark frame (not the black level) whatever
    # the dark frame's dtype; the values are equal, so the results must agree. Not bit
    # for bit: each dtype runs its own compiled kernels, whose float32 row sums LLVM may
    # reassociate differently (fastmath), ~1e-7 relative; subtracting the black level
    # instead would move the centroid by centimetres.
    rng = np.random.default_rng(19)
    img = gaussian_frame(reg, (0.5, -0.5), 0.25, 2000.0, rng=rng)
    dark = gaussian_frame(reg, (0.0, 0.0), 0.2, 0.0, rng=rng)
    same = detect_spot(img, reg, dark=dark, black_level_dn=64.0, bit_depth=12)
    other = detect_spot(img, reg, dark=dark.astype(np.float64), black_level_dn=64.0,
                        bit_depth=12)  # fmt: skip
    assert same.ok and other.ok
    a, b = same.as_dict(), other.as_dict()
    for key, va in a.items():
        if isinstance(va, float):
            # 1 um on positions (1000 x below sigma_m here), 1e-5 relative on the rest
            assert b[key] == pytest.approx(va, rel=1e-5, abs=1e-6, nan_ok=True), key
        else:
            assert b[key] == va, key


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


def test_a_candidate_without_measurable_flux_is_no_number_and_the_next_is_taken(reg):
    """A candidate chosen by the aim whose window holds only noise (a faint residue) gives
    no centroid (with weights of either sign, one could lie anywhere, even off the
    target); the detector then measures the next candidate nearest the aim."""
    from dataclasses import replace

    from heliostat.vision import classical as C

    img = gaussian_frame(reg, (-1.0, -0.5), 0.3, 1500.0, rng=np.random.default_rng(12))
    opts = DetectOptions()
    c = C._coarse_stage(img, None, None, reg, 0.0, 4095.0, opts)
    assert len(c.cand) == 1
    # A fake candidate: a patch of noise-only coarse samples near the top right corner.
    labels = c.labels.copy()
    labels[4:8, 46:50] = len(c.stats)
    assert c.full[4:8, 46:50].all()
    stats = np.vstack([c.stats, [[46, 4, 4, 4, 16]]]).astype(c.stats.dtype)
    fake = replace(
        c, labels=labels, stats=stats, cand=np.array([c.cand[0], len(c.stats) - 1]),
        integ=np.r_[c.integ, 1.0], cu=np.r_[c.cu, 47.5], cv=np.r_[c.cv, 5.5],
    )  # fmt: skip
    u0, v0 = reg.maps.roi[:2]
    patch_xy = reg.pixel_to_plane([[u0 + 4 + 8 * 47.5, v0 + 4 + 8 * 5.5]])[0]
    res = C._fine_stage(img, None, None, reg, 0.0, 4095.0, fake, len(c.stats) - 1, [], None, opts)
    assert not res.ok and "no_spot" in res.flags and math.isnan(res.x_m)
    # Through detect_spot with the aim on the residue: the real spot is measured instead.
    real = C._fine_stage(img, None, None, reg, 0.0, 4095.0, fake, int(c.cand[0]), [], None, opts)
    orig = C._coarse_stage
    try:
        C._coarse_stage = lambda *a, **k: fake
        res2 = detect_spot(img, reg, bit_depth=12, expected_xy_m=patch_xy)
    finally:
        C._coarse_stage = orig
    assert res2.ok and "multiple_candidates" in res2.flags
    assert (res2.x_m, res2.y_m) == (real.x_m, real.y_m)
    assert math.hypot(res2.x_m + 1.0, res2.y_m + 0.5) < 0.005


def test_expected_flux_passes_over_a_neighbour_nearer_the_aim(reg):
    rng = np.random.default_rng(13)
    only_a = gaussian_frame(reg, (-1.0, -0.5), 0.3, 1500.0, bg_dn=0.0, rng=rng, noise_dn=0.0)
    b = gaussian_frame(reg, (0.8, 0.6), 0.25, 3500.0, bg_dn=0.0, noise_dn=0.0)
    f_a = detect_spot(only_a, reg, bit_depth=12).flux_dn_m2
    noise = rng.normal(200.0, 3.0, only_a.shape)
    img = np.clip(only_a.astype(float) + b + noise, 0, 4095).astype(np.uint16)
    aim = (0.3, 0.3)  # nearer b: by the aim alone, b is chosen
    by_aim = detect_spot(img, reg, bit_depth=12, expected_xy_m=aim)
    assert abs(by_aim.x_m - 0.8) < 0.01
    # b carries ~1.6x a's flux; with a's predicted flux (8 % off) a is measured instead.
    res = detect_spot(img, reg, bit_depth=12, expected_xy_m=aim, expected_flux_dn_m2=1.08 * f_a)
    assert res.ok and "flux_mismatch" not in res.flags
    assert abs(res.x_m + 1.0) < 0.01 and abs(res.y_m + 0.5) < 0.01
    # A prediction neither spot agrees with: the nearest, flagged.
    res = detect_spot(img, reg, bit_depth=12, expected_xy_m=aim, expected_flux_dn_m2=4.0 * f_a)
    assert res.ok and "flux_mismatch" in res.flags and abs(res.x_m - 0.8) < 0.01
    with pytest.raises(InputError, match="expected_flux_dn_m2"):
        detect_spot(img, reg, expected_xy_m=aim, expected_flux_dn_m2=float("nan"))


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


# --------------------------------------------------------------------------- fast paths
# The detector's speed-ups (cached sampling geometry, pruned deblending, closed-form 3x3
# solve, scalar plane->pixel, tie-aware median) must give the same numbers as the plain
# formulations they replace; these compare against those formulations directly.
def _deblend_reference(sm, labels, lab, box_stats, thr, options):
    """The multi-level thresholding of classical._deblend written plainly: every level,
    per-piece peaks and fluxes over all pixels (no pruning)."""
    x0, y0, w0, h0 = (int(t) for t in box_stats[:4])
    box = (slice(y0, y0 + h0), slice(x0, x0 + w0))
    comp = labels[box] == lab
    vals = np.where(comp, sm[box], 0.0).astype(np.float32)
    peak = float(vals.max())
    if peak <= thr * 1.5:
        return None, False
    lm = (vals >= cv2.dilate(vals, np.ones((5, 5), np.uint8))) & (vals > 2.0 * thr)
    if np.count_nonzero(lm) < 2:
        return None, False
    total = float(vals.sum())
    multi = False
    for t in thr * (peak / thr) ** (np.arange(1, 32) / 32):
        n, sl = cv2.connectedComponents((vals > t).astype(np.uint8), connectivity=8)
        if n <= 2:
            continue
        flux = np.bincount(sl.ravel(), weights=vals.ravel(), minlength=n)[1:]
        pk = np.zeros(n)
        np.maximum.at(pk, sl.ravel(), vals.ravel())
        pk = pk[1:]
        seen = [k for k in range(n - 1) if flux[k] >= options.min_candidate_fraction * total
                and t <= options.peaks_contrast * pk[k]]  # fmt: skip
        multi = multi or len(seen) >= 2
        keep = [k + 1 for k in range(n - 1) if flux[k] >= options.min_candidate_fraction * total
                and t <= options.deblend_contrast * pk[k]]  # fmt: skip
        # Every pixel to the nearest kept piece; drop the weakest part until each part
        # holds deblend_min_fraction of the flux.
        while len(keep) >= 2:
            d = [cv2.distanceTransform((sl != k).astype(np.uint8), cv2.DIST_L2, 3) for k in keep]
            owner = np.where(comp, np.argmin(np.stack(d), axis=0), -1)
            part = [float(vals[owner == i].sum()) for i in range(len(keep))]
            if min(part) >= options.deblend_min_fraction * total:
                return sorted(keep), False
            del keep[int(np.argmin(part))]
    return None, multi


def test_pruned_deblending_matches_the_plain_multilevel_thresholding():
    from heliostat.vision.classical import _deblend

    rng = np.random.default_rng(21)
    opts = DetectOptions()
    vv, uu = np.mgrid[0:40, 0:48]
    n_split = n_multi = 0
    for _ in range(150):
        # Two to four lumps of random height, width and spacing, plus noise: deep and
        # shallow saddles, unequal peaks, faceted-like clusters.
        img = np.zeros((40, 48))
        for _ in range(rng.integers(2, 5)):
            c = rng.uniform([8, 8], [32, 40])
            img += rng.uniform(5, 100) * np.exp(
                -0.5 * ((vv - c[0]) ** 2 + (uu - c[1]) ** 2) / rng.uniform(1.5, 5) ** 2
            )
        sm = (img + rng.normal(0, 0.5, img.shape)).astype(np.float32)
        thr = 3.0
        n, labels, stats, _ = cv2.connectedComponentsWithStats(
            (sm > thr).astype(np.uint8), connectivity=8
        )
        for lab in range(1, n):
            got_parts, got_multi = _deblend(sm, labels, lab, stats[lab], thr, opts)
            ref_keep, ref_multi = _deblend_reference(sm, labels, lab, stats[lab], thr, opts)
            assert (got_parts is None) == (ref_keep is None)
            assert got_multi == ref_multi
            if got_parts is not None:
                assert len(got_parts) == len(ref_keep)
                n_split += 1
            n_multi += ref_multi
    # The draw must exercise both outcomes, or the comparison proves little.
    assert n_split >= 10 and n_multi >= 3


def test_closed_form_3x3_solve_and_ring_plane_fit():
    from heliostat.vision import _kernels as K

    rng = np.random.default_rng(22)
    for _ in range(20):
        m = rng.normal(size=(3, 3))
        r = rng.normal(size=3)
        ok, *x = K._solve3(np.c_[m, r])
        assert ok
        np.testing.assert_allclose(x, np.linalg.solve(m, r), rtol=1e-9, atol=1e-12)
    assert not K._solve3(np.array([[1.0, 2, 3, 1], [2, 4, 6, 1], [0, 1, 1, 1]]))[0]
    # The ring's plane equals the plain normal-equation fit with one 3-sigma clip over the
    # samples on the board, away (3 cells) from labelled samples and outside the window;
    # with a few outliers it recovers the plane (noise 1, ~2000 samples: coefficient
    # scatter ~0.025 in the offset, ~2e-4 / px in the slopes: bounds of 5 sigma and more).
    nv, nu, s, o = 60, 70, 8, 4
    ii, jj = np.mgrid[0:nv, 0:nu]
    uc, vc = 300.0, 250.0
    u, v = jj * s + o - uc, ii * s + o - vc
    sig = (50.0 + 0.02 * u - 0.01 * v + rng.normal(0, 1.0, (nv, nu))).astype(np.float32)
    sig[rng.random((nv, nu)) < 0.01] += 20.0  # outliers
    full = rng.random((nv, nu)) > 0.05
    labels = np.zeros((nv, nu), np.int32)
    labels[28:33, 30:36] = 1  # a spot: it and two cells around it are left out
    sig[26:35, 28:38] += 500.0
    win = (25, 36, 27, 39)  # window cells: rows cv0:cv1, columns cu0:cu1
    ring = np.zeros((nv, nu), bool)
    ring[10:50, 10:60] = True
    near = np.zeros((nv, nu), bool)
    near[26:35, 28:38] = True
    inside = np.zeros((nv, nu), bool)
    inside[win[0] : win[1], win[2] : win[3]] = True
    sel = ring & full & ~near & ~inside
    assert 24 < sel.sum() <= 2048  # no subsetting here
    keep = np.ones(sel.sum(), bool)
    z = sig[sel].astype(np.float64)
    a_all = np.c_[np.ones(sel.sum()), u[sel], v[sel]]
    for _ in range(2):
        ref = np.linalg.lstsq(a_all[keep], z[keep], rcond=None)[0]
        keep = np.abs(z - a_all @ ref) < 3.0
    got = K.ring_plane(labels, full, sig, 10, 50, 10, 60, *win, s, o, uc, vc, 1.0, -1.0)
    np.testing.assert_allclose(got, ref, rtol=1e-7, atol=1e-9)
    assert abs(got[0] - 50.0) < 0.15
    assert abs(got[1] - 0.02) < 1e-3 and abs(got[2] + 0.01) < 1e-3
    # Too few board samples: the fallback level.
    assert K.ring_plane(labels, np.zeros_like(full), sig, 10, 50, 10, 60, *win, s, o, uc, vc,
                        1.0, -1.0) == (-1.0, 0.0, 0.0)  # fmt: skip


def test_scalar_plane_to_pixel_equals_the_array_version(reg):
    from heliostat.vision.classical import _plane_to_pixel_1

    for xy in ([0.0, 0.0], [2.4, -1.9], [-2.5, 2.0], [1.3, 0.7]):
        np.testing.assert_allclose(_plane_to_pixel_1(reg, *xy), reg.plane_to_pixel([xy])[0],
                                   rtol=0, atol=1e-9)  # fmt: skip


def test_median_of_tied_samples_is_the_upper_median():
    from heliostat.vision.signal import _median

    rng = np.random.default_rng(23)
    for v in (np.rint(rng.normal(0, 0.7, 4001)).astype(np.float32),  # 8-bit-like ties
              rng.normal(0, 1.0, 4000).astype(np.float32)):  # fmt: skip
        assert _median(v) == np.sort(v)[v.size // 2]


def test_registrations_do_not_share_cached_geometry(reg):
    # The coarse pass caches sampled masks per registration: a second registration with
    # another box must not reuse the first one's.
    other = register_corners(CORNERS + [30.0, 20.0], 5.0, 4.0, (W_PX, H_PX), k_px=K,
                             dist_coeffs=DIST)  # fmt: skip
    rng = np.random.default_rng(24)
    img_a = gaussian_frame(reg, (0.5, 0.5), 0.3, 2000.0, rng=rng)
    img_b = gaussian_frame(other, (-0.5, -0.5), 0.3, 2000.0, rng=rng)
    first = detect_spot(img_a, reg, bit_depth=12)
    for _ in range(2):
        rb = detect_spot(img_b, other, bit_depth=12)
        ra = detect_spot(img_a, reg, bit_depth=12)
        assert ra == first
        assert abs(rb.x_m + 0.5) < 5 * rb.sigma_m + 1e-5
        assert abs(rb.y_m + 0.5) < 5 * rb.sigma_m + 1e-5


def test_fine_step_two_on_a_large_spot(reg):
    # Every second pixel of a spot ~40 px wide: the centroid stays within its (doubled)
    # noise; totals are scaled back to the whole window (1 % for the sampling).
    rng = np.random.default_rng(25)
    img = gaussian_frame(reg, (0.3, -0.2), 0.45, 2500.0, rng=rng)
    full = detect_spot(img, reg, bit_depth=12)
    half = detect_spot(img, reg, bit_depth=12, options=DetectOptions(fine_step_px=2))
    assert half.sigma_m == pytest.approx(2 * full.sigma_m, rel=0.1)
    assert abs(half.x_m - 0.3) < 5 * half.sigma_m + 1e-5
    assert abs(half.y_m + 0.2) < 5 * half.sigma_m + 1e-5
    assert half.flux_dn_m2 == pytest.approx(full.flux_dn_m2, rel=0.01)
    assert half.integrated_dn == pytest.approx(full.integrated_dn, rel=0.01)
    with pytest.raises(InputError, match="fine_step_px"):
        detect_spot(img, reg, options=DetectOptions(fine_step_px=0))


def test_a_flat_frame_with_a_spot_is_refused_and_left_out_of_the_mean(reg):
    """A sun-off frame that holds a neighbour's spot is no flat field: divided by it, a
    spot measured there would be suppressed. prepare_flat says where the patch is;
    mean_flat leaves such frames out."""
    from heliostat.vision import SpotInFlatError, prepare_flat
    from heliostat.vision.pipeline import mean_flat

    rng = np.random.default_rng(31)
    clean = [gaussian_frame(reg, (0.0, 0.0), 0.2, 0.0, rng=rng) for _ in range(2)]
    spotty = gaussian_frame(reg, (1.0, 0.5), 0.3, 800.0, rng=rng)
    prepare_flat(clean[0], reg, black_level_dn=50.0)  # 150 DN board, 3 DN noise: fine
    u, v = reg.plane_to_pixel([[1.0, 0.5]])[0]
    with pytest.raises(SpotInFlatError, match=r"around pixel \((\d+), (\d+)\)") as exc:
        prepare_flat(spotty, reg, black_level_dn=50.0)
    pu, pv = (int(t) for t in re.search(r"pixel \((\d+), (\d+)\)", str(exc.value)).groups())
    assert abs(pu - u) < 5 and abs(pv - v) < 5
    mixed = mean_flat([clean[0], spotty, clean[1]], reg, black_level_dn=50.0)
    both = mean_flat(clean, reg, black_level_dn=50.0)
    np.testing.assert_array_equal(mixed.gain_roi, both.gain_roi)
    with pytest.raises(InputError, match="all 1 sun-off frames have a spot"):
        mean_flat([spotty], reg, black_level_dn=50.0)
