"""Vision against the simulator's ground truth: rendered frames (sim.camera) of spots with
known flux centroids (sim.optics), on the 5 m x 5 m target of tests/data/field_small.toml
seen by the default simulated camera (1280 x 1024, 12 bit, shot + read noise, barrel
distortion, oblique view). One pixel is ~6.3 mm on the target.

Every frame's truth is ``FrameTruth.centroid_xy_m``: the flux centroid of the part of the
spot that lands on the target. "Pixel-equivalent" errors divide by the side of the
pixel's footprint on the target at the truth.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from heliostat.config import load_field
from heliostat.vision import detect_spot, prepare_flat, register_aruco, register_corners

camera_mod = pytest.importorskip("sim.camera")
optics = pytest.importorskip("sim.optics")

DATA = Path(__file__).parent / "data"
BLACK_DN = 64.0  # sim.camera.SensorModel().black_dn(12)


@pytest.fixture(scope="module")
def scene():
    field = load_field(DATA / "field_small.toml")
    tgt = field.target("cal1")
    cam = camera_mod.place_camera(field, tgt)
    corners = cam.project(tgt.corners_enu_m())
    reg = register_corners(
        corners,
        tgt.width_m,
        tgt.height_m,
        (cam.width_px, cam.height_px),
        k_px=cam.k_px,
        dist_coeffs=cam.dist_coeffs,
        markers=tgt.markers,
    )
    rng = np.random.default_rng(20260101)
    # Flat field: a sun-off frame auto-exposed for the ambient-lit target.
    flat_img, _ = camera_mod.render_frame(cam, tgt, [], rng=rng)
    flat = prepare_flat(flat_img, reg, black_level_dn=BLACK_DN)
    return dict(field=field, target=tgt, camera=cam, reg=reg, flat=flat, flat_img=flat_img)


def _render(scene, spots, rng):
    cam, tgt = scene["camera"], scene["target"]
    img, truths = camera_mod.render_frame(cam, tgt, spots, rng=rng)
    dark, _ = camera_mod.render_frame(cam, tgt, [], rng=rng, exposure=truths[0].exposure)
    return img, dark, truths


def _random_spot(scene, rng, shape, half_extent_m=2.4):
    ps = float(scene["reg"].pixel_scale_m([[0.0, 0.0]])[0])
    sigma_px = rng.uniform(10.0, 40.0)
    centre = rng.uniform(-half_extent_m, half_extent_m, 2)
    aspect = 1.0 if shape == "round" else rng.uniform(0.4, 1.0)
    return optics.spot_with_sigma(
        centre,
        sigma_px * ps,
        1000.0,
        shape=shape,
        aspect=aspect,
        angle_rad=rng.uniform(0.0, math.pi),
        rng=rng,
    )


def _errors(scene, shape, n, seed):
    reg = scene["reg"]
    rng = np.random.default_rng(seed)
    px_eq, mm = [], []
    for _ in range(n):
        img, dark, (truth,) = _render(scene, [_random_spot(scene, rng, shape)], rng)
        res = detect_spot(
            img, reg, dark=dark, flat=scene["flat"], black_level_dn=BLACK_DN, bit_depth=12
        )
        assert res.ok, res.flags
        t = truth.centroid_xy_m
        e = math.hypot(res.x_m - t[0], res.y_m - t[1])
        px_eq.append(e / float(reg.pixel_scale_m([t])[0]))
        mm.append(e * 1e3)
    return np.array(px_eq), np.array(mm)


def test_round_spots_median_error_below_005_pixel(scene):
    # Issue target: median <= 0.05 pixel-equivalents over the whole target (centres up to
    # 0.1 m from the edges, so some spots are cut). Measured ~0.02 (bench/vision.py
    # --accuracy); 12 frames keep the test fast while the median's scatter (~0.005) stays
    # well inside the margin.
    px_eq, mm = _errors(scene, "round", 12, seed=101)
    assert np.median(px_eq) <= 0.05
    assert mm.max() <= 1.0  # and no single frame off by a millimetre


@pytest.mark.parametrize("shape, seed", [("streaky", 202), ("faceted", 303)])
def test_streaky_and_lumpy_spots_within_1_mm(scene, shape, seed):
    # Issue target: within 1 mm on the 5 m target for streaky/lumpy spots, everywhere.
    # Measured max ~0.4 mm.
    _, mm = _errors(scene, shape, 8, seed=seed)
    assert mm.max() <= 1.0


@pytest.mark.parametrize(
    "shape, sigma_px, where",
    [("round", 15.0, (0.6, -0.4)), ("faceted", 25.0, (-1.0, 0.8)), ("round", 15.0, "marker")],
)
def test_reported_sigma_matches_the_scatter_from_noise(scene, shape, sigma_px, where):
    """sigma_m is the centroid's 1-sigma noise per axis: read and ambient noise, the
    spot's own shot noise, and the flat field's noise, through the flat field (a spot on
    a marker's dark ink has few photons: its sigma is several times larger). The same
    spot measured 24 times, each with new sun-on, sun-off and flat frames, scatters as
    sigma_m says (the scatter's own uncertainty over 24 x 2 values is ~10 %). Measured
    0.98, 0.91, 0.93; with the read noise alone (before) 1.17, 1.02 and 5.5."""
    reg, cam, tgt = scene["reg"], scene["camera"], scene["target"]
    on_marker = where == "marker"
    if on_marker:
        where = tgt.markers.corners_xy_m(tgt.width_m, tgt.height_m)[0].mean(axis=0)
    ps = float(reg.pixel_scale_m([where])[0])
    spot = optics.spot_with_sigma(
        where, sigma_px * ps, 1000.0, shape=shape, aspect=0.7, rng=np.random.default_rng(5)
    )
    rng = np.random.default_rng(505)
    xy, sig, flags = [], [], set()
    for _ in range(24):
        flat_img, _ = camera_mod.render_frame(cam, tgt, [], rng=rng)
        flat = prepare_flat(flat_img, reg, black_level_dn=BLACK_DN)
        img, dark, _ = _render(scene, [spot], rng)
        res = detect_spot(img, reg, dark=dark, flat=flat, black_level_dn=BLACK_DN, bit_depth=12)
        xy.append((res.x_m, res.y_m))
        sig.append(res.sigma_m)
        flags |= set(res.flags)
    ratio = np.std(np.array(xy), axis=0, ddof=1).mean() / np.mean(sig)
    assert 0.75 < ratio < 1.3
    assert ("on_marker" in flags) == on_marker


def test_noise_free_frame_is_exact(scene):
    # Without noise and with an exact flat field the only error left is the renderer's
    # and the detector's geometry (float32 maps, footprint model): < 0.01 pixel.
    cam, tgt, reg = scene["camera"], scene["target"], scene["reg"]
    flat_img, _ = camera_mod.render_frame(cam, tgt, [], rng=np.random.default_rng(0), noise=False)
    flat = prepare_flat(flat_img, reg, black_level_dn=BLACK_DN)
    spot = optics.spot_with_sigma([1.1, -0.7], 0.15, 1000.0, shape="streaky", aspect=0.5)
    img, (truth,) = camera_mod.render_frame(
        cam, tgt, [spot], rng=np.random.default_rng(1), noise=False
    )
    dark, _ = camera_mod.render_frame(
        cam, tgt, [], rng=np.random.default_rng(2), noise=False, exposure=truth.exposure
    )
    res = detect_spot(img, reg, dark=dark, flat=flat, black_level_dn=BLACK_DN, bit_depth=12)
    t = truth.centroid_xy_m
    err_px = math.hypot(res.x_m - t[0], res.y_m - t[1]) / float(reg.pixel_scale_m([t])[0])
    assert err_px < 0.01
    # The reported pixel position is the truth's projection (same camera model).
    np.testing.assert_allclose([res.u_px, res.v_px], truth.centroid_px, atol=0.01)
    # ENU output follows the target pose.
    res_enu = detect_spot(img, reg, dark=dark, flat=flat, black_level_dn=BLACK_DN, target=tgt)
    np.testing.assert_allclose(
        [res_enu.e_m, res_enu.n_m, res_enu.u_m], tgt.plane_to_enu([res.x_m, res.y_m]), atol=1e-9
    )


def test_second_spot_the_right_one_is_chosen(scene):
    # A neighbour's spot anywhere on the target, 0.3x to 3x as strong. "Right" = the spot of
    # the heliostat under test, whose commanded aim we know to within its pointing error
    # (here N(0, 0.2 m) per axis: ~2 mrad at 100 m); detection is given that aim point.
    # Spots whose centres are more than 2.5 (rms_a + rms_b) apart must always be told
    # apart; closer ones may merge, but then never without a warning flag.
    rng = np.random.default_rng(404)
    reg = scene["reg"]
    wrong_separated = silent_wrong = n_separated = 0
    for _ in range(16):
        a = _random_spot(scene, rng, "faceted", 2.0)
        b = _random_spot(scene, rng, "round", 2.2)
        b = optics.FluxSpot(b.centre_xy_m, b.cov_xy_m2, 1000.0 * rng.uniform(0.3, 3.0))
        img, dark, (ta, tb) = _render(scene, [a, b], rng)
        aim = ta.centroid_xy_m + rng.normal(0.0, 0.2, 2)
        res = detect_spot(
            img, reg, dark=dark, flat=scene["flat"], black_level_dn=BLACK_DN,
            expected_xy_m=aim,
        )  # fmt: skip
        da = math.hypot(res.x_m - ta.centroid_xy_m[0], res.y_m - ta.centroid_xy_m[1])
        db = math.hypot(res.x_m - tb.centroid_xy_m[0], res.y_m - tb.centroid_xy_m[1])
        right = res.ok and da < db
        rms = math.sqrt(np.trace(a.cov_xy_m2)) + math.sqrt(np.trace(b.cov_xy_m2))
        if math.hypot(*(ta.centroid_xy_m - tb.centroid_xy_m)) > 2.5 * rms:
            n_separated += 1
            wrong_separated += not right
        warned = {"multiple_peaks", "overlapping_spots"} & set(res.flags)
        silent_wrong += not right and not warned
    assert n_separated >= 10  # the draw really exercises separated pairs
    assert wrong_separated == 0
    assert silent_wrong <= 1  # two spots fused into one round blob cannot be recognised


def test_aruco_registration_on_a_rendered_frame(scene):
    cam, tgt = scene["camera"], scene["target"]
    reg = register_aruco(
        scene["flat_img"], tgt.markers, tgt.width_m, tgt.height_m,
        k_px=cam.k_px, dist_coeffs=cam.dist_coeffs,
    )  # fmt: skip
    assert reg.n_markers == 4
    pts = np.array([[0.0, 0.0], [2.0, 2.0], [-2.0, 1.0], [1.5, -2.4], [-2.4, -2.4]])
    uv = cam.project(tgt.plane_to_enu(pts))
    err_mm = np.hypot(*(reg.pixel_to_plane(uv) - pts).T) * 1e3
    # Edge-fitted marker corners are good to < 0.1 px here (~0.6 mm); the homography
    # from 16 of them puts every target point within 1 mm.
    assert err_mm.max() < 1.0
    np.testing.assert_allclose(reg.corners_px, cam.project(tgt.corners_enu_m()), atol=0.25)


def test_aruco_registration_with_a_spot_in_the_frame(scene):
    """A frame exposed for a sun spot (a neighbour's in a sun-off frame) leaves the board
    at a few percent of full scale: the markers must still be found (the 8-bit stretch
    up to the 99.5th percentile alone lands in the spot and loses them)."""
    cam, tgt = scene["camera"], scene["target"]
    rng = np.random.default_rng(29)
    spot = optics.spot_with_sigma([0.4, -0.3], 0.3, 3000.0)
    img, _ = camera_mod.render_frame(cam, tgt, [spot], rng=rng)
    reg = register_aruco(
        img, tgt.markers, tgt.width_m, tgt.height_m, k_px=cam.k_px, dist_coeffs=cam.dist_coeffs
    )
    assert reg.n_markers == 4
    np.testing.assert_allclose(reg.corners_px, cam.project(tgt.corners_enu_m()), atol=0.5)


def test_no_spot_on_a_dark_frame(scene):
    rng = np.random.default_rng(7)
    img, _ = camera_mod.render_frame(scene["camera"], scene["target"], [], rng=rng)
    res = detect_spot(img, scene["reg"], bit_depth=12)
    assert not res.ok and "no_spot" in res.flags


def test_fill_observations_from_frames(scene, tmp_path):
    import cv2

    from heliostat.vision.pipeline import fill_observations

    rng = np.random.default_rng(55)
    rows = []
    truths = []
    (tmp_path / "frames").mkdir()
    for i in range(3):
        spot = _random_spot(scene, rng, "faceted", 2.0)
        img, dark, (truth,) = _render(scene, [spot], rng)
        cv2.imwrite(str(tmp_path / f"frames/f{i}.png"), img)
        cv2.imwrite(str(tmp_path / f"frames/f{i}_dark.png"), dark)
        rows.append(dict(heliostat_id="H001", frame=f"frames/f{i}.png", spot_x_m=9.9,
                         quality_flags="cloud" if i == 0 else ""))  # fmt: skip
        truths.append(truth.centroid_xy_m)
    (tmp_path / "frames/bad.png").write_bytes(b"not a png")
    rows.append(dict(heliostat_id="H001", frame="frames/bad.png", spot_x_m=9.9, quality_flags=""))
    rows.append(dict(heliostat_id="H002", frame="", spot_x_m=1.0, quality_flags=""))
    obs = pd.DataFrame(rows)
    out, outcomes = fill_observations(
        obs, tmp_path, scene["reg"], target=scene["target"], black_level_dn=BLACK_DN,
        bit_depth=12,
    )  # fmt: skip
    assert len(outcomes) == 4 and outcomes[3].error
    for i, t in enumerate(truths):
        # The flat comes from only three dark frames at the sun-on exposure (noisy), so
        # allow 1 mm rather than the 0.4 mm of a good flat.
        assert math.hypot(out.spot_x_m[i] - t[0], out.spot_y_m[i] - t[1]) < 1e-3
        assert out.sigma_m[i] > 0
        assert np.isfinite(out.spot_e_m[i])
    assert out.quality_flags[0].startswith("cloud")
    assert math.isnan(out.spot_x_m[3]) and "vision_error" in out.quality_flags[3]
    assert out.spot_x_m[4] == 1.0  # a row without a frame is left alone


def test_8_bit_camera(scene):
    # An 8-bit camera (uint8 frames, 256 levels): quantisation and 4x coarser noise steps
    # than 12 bit; the centroid stays within 1 mm (measured ~0.3 mm).
    field, tgt = scene["field"], scene["target"]
    cam = camera_mod.place_camera(field, tgt, bit_depth=8)
    reg = register_corners(
        cam.project(tgt.corners_enu_m()), 5.0, 5.0, (cam.width_px, cam.height_px),
        k_px=cam.k_px, dist_coeffs=cam.dist_coeffs, markers=tgt.markers,
    )  # fmt: skip
    rng = np.random.default_rng(88)
    black = camera_mod.SensorModel().black_dn(8)
    flat = prepare_flat(
        camera_mod.render_frame(cam, tgt, [], rng=rng)[0], reg, black_level_dn=black
    )
    spot = optics.spot_with_sigma([-0.8, 1.2], 0.15, 1000.0, shape="streaky", aspect=0.6)
    img, (truth,) = camera_mod.render_frame(cam, tgt, [spot], rng=rng)
    dark, _ = camera_mod.render_frame(cam, tgt, [], rng=rng, exposure=truth.exposure)
    assert img.dtype == np.uint8
    res = detect_spot(img, reg, dark=dark, flat=flat, black_level_dn=black, bit_depth=8)
    t = truth.centroid_xy_m
    assert math.hypot(res.x_m - t[0], res.y_m - t[1]) < 1e-3


# --------------------------------------------------------------------------- deblending
# Seeds below were picked by drawing from the same generators; each comment says what the
# previous rule (16 threshold levels, a saddle below 0.2 of both peaks, each piece holding
# 20 % of the component's flux above that level) did on the frame.
def _two_spot_frame(scene, seed):
    """Faceted spot a (1 kW) and a round spot b (2 kW) 1.3-1.7 (rms_a + rms_b) apart."""
    rng = np.random.default_rng(seed)
    ps = float(scene["reg"].pixel_scale_m([[0.0, 0.0]])[0])
    sa_px, sb_px = rng.uniform(15, 30), rng.uniform(15, 30)
    a = optics.spot_with_sigma(
        [0.0, 0.0], sa_px * ps, 1000.0, shape="faceted", aspect=rng.uniform(0.6, 1.0),
        angle_rad=rng.uniform(0, math.pi), rng=rng,
    )  # fmt: skip
    rms = math.sqrt(np.trace(a.cov_xy_m2)) + sb_px * ps * math.sqrt(2.0)
    ang, d = rng.uniform(0, 2 * math.pi), rng.uniform(1.3, 1.7) * rms
    b_at = a.centroid_xy_m + d * np.array([math.cos(ang), math.sin(ang)])
    b = optics.spot_with_sigma(b_at, sb_px * ps, 2000.0)
    img, dark, (ta, tb) = _render(scene, [a, b], rng)
    return img, dark, ta, tb, d / rms


def test_touching_pair_is_split_and_the_aimed_spot_chosen(scene):
    # 1.66 (rms_a + rms_b) apart, b twice as strong: one coarse component that splits
    # from a contrast of 0.18 into parts of 66 % and 34 % of its flux. The previous rule
    # (16 levels; each piece's flux counted above the level only) left it whole, flagged
    # multiple_peaks, with the fused centroid nearer b; now it is split and
    # the piece nearest the aim is measured. (Pairs ~1.3 apart mostly have their saddle
    # above 0.2 of the weaker peak, like the deep lumps of single faceted spots: they stay
    # fused; see DetectOptions.deblend_contrast.)
    img, dark, ta, tb, sep = _two_spot_frame(scene, 30)
    assert 1.6 < sep < 1.7
    res = detect_spot(
        img, scene["reg"], dark=dark, flat=scene["flat"], black_level_dn=BLACK_DN,
        expected_xy_m=ta.centroid_xy_m + [0.05, -0.05],
    )  # fmt: skip
    da = math.hypot(res.x_m - ta.centroid_xy_m[0], res.y_m - ta.centroid_xy_m[1])
    db = math.hypot(res.x_m - tb.centroid_xy_m[0], res.y_m - tb.centroid_xy_m[1])
    assert res.ok and da < db
    # The neighbour's wings inside a's part still pull the centroid (measured 4 mm on a
    # separation of ~0.5 m): the result is flagged, never silent.
    assert da < 0.05
    assert {"multiple_candidates", "overlapping_spots"} <= set(res.flags)


def test_single_faceted_spot_with_deep_lumps_is_not_split(scene):
    # A faceted spot whose facets form two lumps with a saddle at ~0.4-0.5 of the weaker
    # one's peak: a split at contrast 0.5 puts the centroid 0.26 m off. At the default
    # (0.2) it stays whole and within the 1 mm of the other accuracy tests, flagged
    # multiple_peaks (separate bright parts, not split).
    from heliostat.vision import DetectOptions

    rng = np.random.default_rng(190)
    ps = float(scene["reg"].pixel_scale_m([[0.0, 0.0]])[0])
    spot = optics.spot_with_sigma(
        [rng.uniform(-1.5, 1.5), rng.uniform(-1.5, 1.5)], rng.uniform(25, 40) * ps, 1000.0,
        shape="faceted", aspect=rng.uniform(0.6, 1.0), angle_rad=rng.uniform(0, math.pi),
        rng=rng,
    )  # fmt: skip
    img, dark, (truth,) = _render(scene, [spot], rng)
    kw = dict(dark=dark, flat=scene["flat"], black_level_dn=BLACK_DN, bit_depth=12)
    t = truth.centroid_xy_m
    res = detect_spot(img, scene["reg"], **kw)
    assert res.n_candidates == 1 and "multiple_peaks" in res.flags
    assert math.hypot(res.x_m - t[0], res.y_m - t[1]) < 1e-3
    # The same frame with a looser contrast is split: the test does exercise deep lumps.
    loose = detect_spot(img, scene["reg"], options=DetectOptions(deblend_contrast=0.5), **kw)
    assert loose.n_candidates == 2
    assert math.hypot(loose.x_m - t[0], loose.y_m - t[1]) > 0.05
