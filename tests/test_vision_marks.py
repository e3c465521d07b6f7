"""Registration by a target's own corner marks (heliostat.vision.marks).

Ground truth from the drawn two-target scene (sim.marks_scene), and the real Jülich frames
with PAINT's own crops of them (skipped when ../shared/real is absent). The figures the
bounds come from: ``bench/vision_registration.py`` (see docs/vision.md).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import REAL_DIR

from heliostat.errors import InputError
from heliostat.vision.marks import MarkLayout, register_marks
from sim import marks_scene

REAL = REAL_DIR
RAW = REAL / "paint" / "raw"
needs_real = pytest.mark.skipif(
    not RAW.is_dir(), reason=f"real Jülich frames not found at {RAW} (../shared/real)"
)

W_M, H_M = marks_scene.TARGET_W_M, marks_scene.TARGET_H_M


def _perturb(rng, corners, frac):
    """Offsets up to ``frac`` of the mean side length, uniform over a disc."""
    c = np.asarray(corners, float)
    size = np.mean(np.hypot(*(np.roll(c, -1, 0) - c).T))
    r = frac * size * np.sqrt(rng.uniform(0, 1, 4))
    t = rng.uniform(0, 2 * np.pi, 4)
    return c + np.c_[r * np.cos(t), r * np.sin(t)]


@pytest.fixture(scope="module")
def scenes():
    rng = np.random.default_rng(20261202)
    size = (640, 1000)
    out = []
    for _ in range(2):
        h = marks_scene.random_view(rng, size)
        out.append((marks_scene.render(rng, h, size), rng))
    return out


# --------------------------------------------------------------------------- simulator
def test_drawn_scene_corners_to_a_fraction_of_a_pixel(scenes):
    """Rough guesses up to 2 % of the target size off: found corners within 0.25 px.

    The bench (12 frames of 1000 x 1600, 96 corners) measures a median 0.04 px, p95 0.11
    and maximum 0.16 px on this scene (ideal rectangular marks, 0.8 px blur, 2 DN noise,
    shadow band, spot); at this test's frame size (bars about 7 px instead of 10) 48
    corners gave median 0.06, maximum 0.16 px. 0.25 px keeps a margin of 1.6 over that
    maximum, and is 50x below the rough guesses' offsets (up to ~13 px).
    """
    for sc, rng in scenes:
        for key, kinds in (("upper", "LLTT"), ("lower", "TTLL")):
            truth = sc.corners_px[key]
            rough = _perturb(rng, truth, 0.02)
            m = register_marks(sc.frame, rough, W_M, H_M)
            err = np.hypot(*(m.corners_px - truth).T)
            assert err.max() < 0.25, (key, err)
            assert "".join(c.kind for c in m.corners) == kinds
            assert all(c.match_score > 0.8 for c in m.corners)
            # The registration maps the true corners to the target's plane corners.
            xy = m.registration.pixel_to_plane(truth)
            assert np.allclose(np.abs(xy), [W_M / 2, H_M / 2], atol=0.25 * 8.6 / 450)


def test_two_targets_each_registers_the_one_asked_for(scenes):
    """Upper and lower targets share the side T marks: same points, different targets."""
    sc, _ = scenes[0]
    up = register_marks(sc.frame, sc.corners_px["upper"], W_M, H_M)
    lo = register_marks(sc.frame, sc.corners_px["lower"], W_M, H_M)
    # The shared T marks: the upper's LL/LR are the lower's UL/UR (same mark, same
    # definition); the drawn truth says so too, within the 0.25 px bound above.
    assert np.allclose(up.corners_px[[3, 2]], lo.corners_px[[0, 1]], atol=0.25)
    # A point at the upper target's centre lies 1 target height above the lower's.
    centre_up = up.registration.plane_to_pixel([[0.0, 0.0]])
    xy_lo = lo.registration.pixel_to_plane(centre_up)[0]
    assert xy_lo[1] == pytest.approx(H_M, abs=0.02)  # 0.02 m ~ 1 px here
    assert xy_lo[0] == pytest.approx(0.0, abs=0.02)


def test_fixed_kinds_and_layout_checks(scenes):
    sc, rng = scenes[1]
    truth = sc.corners_px["upper"]
    m = register_marks(sc.frame, truth, W_M, H_M, layout=MarkLayout(kinds=("L", "L", "T", "T")))
    assert np.hypot(*(m.corners_px - truth).T).max() < 0.25
    with pytest.raises(InputError, match="mark kinds"):
        MarkLayout(kinds=("L", "L", "X", "T"))
    with pytest.raises(InputError, match="bar_width_m"):
        MarkLayout(bar_width_m=-0.1)


def test_missing_marks_give_a_clear_error(scenes):
    sc, _ = scenes[0]
    truth = sc.corners_px["upper"]
    blank = np.full_like(sc.frame, 180)
    with pytest.raises(InputError, match="no L/T mark found near the upper-left"):
        register_marks(blank, truth, W_M, H_M)
    # A guess a quarter of the target height off: the search window (6 %) misses the marks.
    far = truth + [0.0, 0.25 * np.ptp(truth[:, 1])]
    with pytest.raises(InputError, match="no L/T mark found"):
        register_marks(sc.frame, far, W_M, H_M)
    with pytest.raises(InputError, match="counter-clockwise"):
        register_marks(sc.frame, truth[::-1], W_M, H_M)
    with pytest.raises(InputError, match="frame"):
        register_marks(sc.frame[0], truth, W_M, H_M)
    with pytest.raises(InputError, match="width_m"):
        register_marks(sc.frame, truth, float("nan"), H_M)


# --------------------------------------------------------------------------- real frames
#: An operator's rough clicks (the bench's ROUGH_CLICKS), target sizes from the tower
#: survey, and PAINT's own marker points as its crops tell them (ECC fit of the crop to
#: the frame, bench/vision_registration.py "paint_px").
REAL_CASES = {
    "stj_upper": (
        "stj_image.png",
        "stj_upper.png",
        (8.61, 7.22),
        [(128, 482), (1295.5, 445.5), (1326, 1411), (153, 1445)],
        [(127.02, 484.09), (1296.04, 446.03), (1323.0, 1405.06), (155.99, 1441.85)],
    ),
    "stj_lower": (
        "stj_image.png",
        "stj_lower.png",
        (8.63, 7.21),
        [(153, 1428), (1326, 1391), (1358, 2374), (180, 2407)],
        [(155.99, 1441.85), (1323.0, 1405.06), (1360.96, 2374.93), (179.6, 2409.08)],
    ),
    "mft": (
        "mft_image.png",
        "mft_crop.png",
        (5.40, 6.39),
        [(1102, 115), (2446, 96), (2481, 1482), (1091, 1501)],
        [(1103.96, 122.01), (2444.97, 98.02), (2479.0, 1481.99), (1093.44, 1507.98)],
    ),
}
_DST = np.float32([[0, 0], [512, 0], [512, 512], [0, 512]])


def _paint_warp(frame, corners):
    h = cv2.getPerspectiveTransform(np.float32(corners), _DST)
    return cv2.warpPerspective(frame, h, (512, 512))


def _ncc(a, b):
    a = a.astype(np.float64) - a.mean()
    b = b.astype(np.float64) - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


@needs_real
@pytest.mark.parametrize("case", sorted(REAL_CASES))
def test_real_frame_reproduces_paints_crop(case):
    """Warping with the found corners reproduces PAINT's crop: NCC > 0.99.

    Measured (bench, 20 guesses each, up to 2 % off): refined 0.9922 / 0.9935 / 0.9951
    (upper, lower, multi-focus; the same to 1e-5 for every guess), the perturbed guesses
    themselves 0.939-0.978 (median 0.958-0.975), PAINT's own points 0.99996. 0.99 lies
    between the two. Our points lie 0.7-6.4 px from PAINT's, which scatter about the
    marks' corners (PAINT matches 31 px templates to integer pixels); 7 px bounds that.
    """
    frame_file, crop_file, (w_m, h_m), clicks, paint_pts = REAL_CASES[case]
    colour = cv2.imread(str(RAW / frame_file))
    grey = colour.astype(np.float32).mean(axis=2)
    crop = cv2.imread(str(RAW / crop_file)).astype(np.float32).mean(axis=2)
    rng = np.random.default_rng([7, len(case)])
    found = []
    for k in range(2):
        rough = np.array(clicks, float) if k == 0 else _perturb(rng, clicks, 0.02)
        assert _ncc(_paint_warp(grey, rough), crop) < 0.999
        m = register_marks(colour, rough, w_m, h_m)
        assert _ncc(_paint_warp(grey, m.corners_px), crop) > 0.99
        assert np.hypot(*(m.corners_px - np.array(paint_pts)).T).max() < 7.0
        # Scores 0.89-0.93 and edge residuals 0.1-0.6 px on these frames.
        assert all(c.match_score > 0.8 and c.residual_px < 0.8 for c in m.corners)
        found.append(m.corners_px)
    # Repeatable from different guesses: the bench's largest spread over 20 guesses is
    # 0.008 px on these frames (0.06 px on 102067-raw); 0.1 px leaves room for BLAS.
    assert np.abs(found[0] - found[1]).max() < 0.1


@needs_real
def test_real_two_targets_register_the_one_asked_for():
    """stj_image shows both Jülich targets, each with a spot: each guess registers its own."""
    colour = cv2.imread(str(RAW / "stj_image.png"))
    up = register_marks(colour, REAL_CASES["stj_upper"][3], 8.61, 7.22)
    lo = register_marks(colour, REAL_CASES["stj_lower"][3], 8.63, 7.21)
    assert [c.kind for c in up.corners] == ["L", "L", "T", "T"]
    assert [c.kind for c in lo.corners] == ["T", "T", "L", "L"]
    # The side T marks are shared: the same points from two different guesses.
    assert np.allclose(up.corners_px[[3, 2]], lo.corners_px[[0, 1]], atol=0.3)
    # The two focal spots (by eye, about (693, 916) and (605, 1830) px) each lie on
    # their own target only.
    spots = np.array([[693.0, 916.0], [605.0, 1830.0]])
    on_up = np.all(np.abs(up.registration.pixel_to_plane(spots)) < [4.3, 3.6], axis=1)
    on_lo = np.all(np.abs(lo.registration.pixel_to_plane(spots)) < [4.3, 3.6], axis=1)
    assert on_up.tolist() == [True, False]
    assert on_lo.tolist() == [False, True]


# --------------------------------------------------------------------------- CLI
def _two_target_plant(tmp_path: Path):
    """field.toml with the drawn scene's two stacked targets, a camera.toml whose pose is
    off by about 1 mrad, and a frame (and its sun-off frame ``frame_dark.png``) rendered
    through the true pose. Returns the frame path, the scene (truth), the pose's rough
    corners per target and the two config paths."""
    from heliostat.config import CameraConfig, dumps_toml, load_field, look_at
    from sim.camera import camera_to_dict

    base = (Path(__file__).parent / "data" / "field_small.toml").read_text()
    start = base.index("[[targets]]")
    end = base.index("[drives.slew]")
    mid_z = 47.0
    targets = "".join(
        f'[[targets]]\nid = "{tid}"\ncentre_enu_m = [0.0, 0.0, {mid_z + dz}]\n'
        f"normal_enu = [0.0, 1.0, 0.0]\nwidth_m = {W_M}\nheight_m = {H_M}\n\n"
        for tid, dz in (("upper", H_M / 2), ("lower", -H_M / 2))
    )
    field_path = tmp_path / "field.toml"
    field_path.write_text(base[:start] + targets + base[end:])
    field = load_field(field_path)
    up = field.target("upper")
    size = (800, 1300)
    f_px = 0.7 * size[0] * 150.0 / W_M

    def camera(pos, aim):
        k = np.array([[f_px, 0, (size[0] - 1) / 2], [0, f_px, (size[1] - 1) / 2], [0, 0, 1.0]])
        return CameraConfig(
            width_px=size[0],
            height_px=size[1],
            k_px=k,
            dist_coeffs=np.zeros(5),
            bit_depth=8,
            position_enu_m=np.array(pos, float),
            r_enu_cam=look_at(pos, aim),
        )

    mid = np.array([0.0, 0.0, mid_z])
    true_cam = camera([4.0, 150.0, 8.0], mid)
    # Tower plane (the scene's x right, y up, origin between the targets) -> pixels.
    sq = np.array([[-5.0, 5.0], [5.0, 5.0], [5.0, -5.0], [-5.0, -5.0]])
    enu = mid + sq[:, :1] * up.u_x_enu + sq[:, 1:] * up.u_y_enu
    h = cv2.getPerspectiveTransform(sq.astype(np.float32), true_cam.project(enu).astype(np.float32))
    # The sun-off frame: the same draws (light, shadow, noise) without the spot.
    # A spot that does not saturate (a clipped core over the shadow band's edge biases
    # any centroid; that is the detector's business, not the registration's).
    sc = marks_scene.render(np.random.default_rng(99), h.astype(np.float64), size, spot_peak=0.25)
    dark = marks_scene.render(np.random.default_rng(99), h.astype(np.float64), size, spot=False)
    frame_path = tmp_path / "frame.png"
    cv2.imwrite(str(frame_path), sc.frame)
    cv2.imwrite(str(tmp_path / "frame_dark.png"), dark.frame)
    # The surveyed pose is off: 0.3 m in position and 0.15 m in aim at 150 m (~1 mrad).
    cam = camera([4.3, 150.0, 8.0], mid + [0.15, 0.0, -0.1])
    cam_path = tmp_path / "camera.toml"
    cam_path.write_text(dumps_toml(camera_to_dict(cam)))
    rough = {t: cam.project(field.target(t).corners_enu_m()) for t in ("upper", "lower")}
    return frame_path, sc, rough, cam_path, field_path


def test_cli_marks_from_the_camera_pose_measure_the_target_asked_for(tmp_path, capsys):
    from heliostat.cli import main

    frame, sc, rough, cam, field = _two_target_plant(tmp_path)
    dark = frame.with_name("frame_dark.png")
    rows = {}
    for tid in ("upper", "lower"):
        # The pose's projection is the rough guess: several pixels off, not sub-pixel.
        assert np.hypot(*(rough[tid] - sc.corners_px[tid]).T).max() > 3.0
        main(
            [
                "detect", str(frame), "--camera", str(cam), "--field", str(field),
                "--target", tid, "--marks", "--dark", str(dark), "--json",
            ]
        )  # fmt: skip
        (row,) = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.strip()]
        assert "error" not in row, row
        rows[tid] = row
        found = np.array(row["mark_corners_px"])
        # Same bound as the drawn-scene test above.
        assert np.hypot(*(found - sc.corners_px[tid]).T).max() < 0.25
        assert row["mark_kinds"] == (["L", "L", "T", "T"] if tid == "upper" else list("TTLL"))
    # The spot lies on the upper target (tower plane y > 0): measured there in the
    # upper target's own coordinates (centre 3.6 m above the tower plane's origin) ...
    sx, sy = sc.spot_xy_m
    assert sy > 0.5
    up = rows["upper"]
    assert up["ok"]
    # ... to 0.03 m (~2 px here; measured 0.014 m: the detector's own error on this
    # frame, which is not under test; the lower target's centre is 7.2 m away).
    assert math.hypot(up["x_m"] - sx, up["y_m"] - (sy - H_M / 2)) < 0.03
    # and the lower target, asked for, reports no spot of its own.
    assert not rows["lower"]["ok"]


def test_cli_marks_take_the_mark_shape_from_field_toml(tmp_path, capsys):
    """The field's [targets.corner_marks] reaches the registration: kinds declared there
    that do not match the painted marks are refused, naming the corner; the right ones
    register as without them."""
    from heliostat.cli import main

    frame, sc, _, cam, field = _two_target_plant(tmp_path)
    text = field.read_text()
    args = ["detect", str(frame), "--camera", str(cam), "--field", str(field), "--target",
            "upper", "--marks", "--json"]  # fmt: skip
    for kinds, ok in (('["T", "T", "L", "L"]', False), ('["L", "L", "T", "T"]', True)):
        field.write_text(
            text.replace('id = "upper"\n', f'id = "upper"\ncorner_marks = {{ kinds = {kinds} }}\n')
        )
        rc = main(args)
        (row,) = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.strip()]
        if ok:
            assert "error" not in row, row
            found = np.array(row["mark_corners_px"])
            assert np.hypot(*(found - sc.corners_px["upper"]).T).max() < 0.25
        else:
            assert rc == 1 and "upper-left mark" in row["error"], row


def test_cli_marks_with_rough_corners_and_errors(tmp_path, capsys):
    from heliostat.cli import main

    frame, sc, rough, _, _ = _two_target_plant(tmp_path)
    truth = sc.corners_px
    text = " ".join(f"{u + 4:.1f},{v - 3:.1f}" for u, v in truth["lower"])
    rc = main(
        ["detect", str(frame), "--corners", text, "--target-size", str(W_M), str(H_M),
         "--marks", "--mark-kinds", "T,T,L,L", "--json"]
    )  # fmt: skip
    (row,) = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.strip()]
    assert rc == 0
    assert np.hypot(*(np.array(row["mark_corners_px"]) - truth["lower"]).T).max() < 0.25
    # Kinds that do not match the marks: the error names the corner.
    rc = main(
        ["detect", str(frame), "--corners", text, "--target-size", str(W_M), str(H_M),
         "--marks", "--mark-kinds", "L,L,L,L", "--json"]
    )  # fmt: skip
    (row,) = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.strip()]
    assert rc == 1 and "upper-left mark" in row["error"] and "looks like a T" in row["error"]
    # --marks with nothing to start from.
    rc = main(["detect", str(frame), "--target-size", "8.6", "7.2", "--marks"])
    assert rc == 2 and "--marks needs a rough guess" in capsys.readouterr().err


def test_lens_distortion_is_removed_before_the_lines_are_fitted():
    """A barrel-distorted frame (k1 = -0.2): the outer marks sit up to 36 px from their
    pinhole positions. With the camera's intrinsics and distortion the corners are found
    where the distortion put them, to the same bound as without distortion, and the
    registration maps them onto the plane's corners. (Along one 70 px arm the edge bows
    by only ~0.1 px here, so the line fits hardly notice; the plane mapping needs it.)"""
    from heliostat.vision.target import _distort, _undistort

    rng = np.random.default_rng(4242)
    size = (640, 1000)
    h = marks_scene.random_view(rng, size, fill=0.85)
    sc = marks_scene.render(rng, h, size)
    f = 900.0
    k = np.array([[f, 0, (size[0] - 1) / 2], [0, f, (size[1] - 1) / 2], [0, 0, 1.0]])
    dist = np.array([-0.2, 0.05, 0.0, 0.0, 0.0])
    # The distorted frame samples the ideal one where each pixel's ray lands.
    uu, vv = np.meshgrid(np.arange(size[0], dtype=float), np.arange(size[1], dtype=float))
    ideal = _undistort(np.c_[uu.ravel(), vv.ravel()], k, dist).astype(np.float32)
    frame = cv2.remap(
        sc.frame,
        ideal[:, 0].reshape(uu.shape),
        ideal[:, 1].reshape(uu.shape),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    for key in ("upper", "lower"):
        truth = _distort(sc.corners_px[key], k, dist)
        rough = _perturb(rng, truth, 0.02)
        m = register_marks(frame, rough, W_M, H_M, k_px=k, dist_coeffs=dist)
        assert np.hypot(*(m.corners_px - truth).T).max() < 0.25
        # The registration maps the distorted corner pixels back onto the plane corners.
        xy = m.registration.pixel_to_plane(truth)
        assert np.allclose(np.abs(xy), [W_M / 2, H_M / 2], atol=0.02)  # 0.02 m ~ 1 px
