"""``heliostat camera calibrate`` recovers a camera's intrinsics and distortion from board
images rendered through it (sim/boards.py: every pixel traced back through the lens)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from heliostat.cli import main
from heliostat.config import load_camera
from heliostat.errors import InputError
from heliostat.vision.intrinsics import Board
from sim.boards import pixel_rays, random_poses, render_view

SIZE = (512, 384)
K_TRUE = np.array([[480.0, 0.0, 258.3], [0.0, 478.5, 189.2], [0.0, 0.0, 1.0]])
DIST_TRUE = np.array([-0.21, 0.06, 0.0012, -0.0007, 0.0])


def _render(folder, spec, n, seed):
    board = Board.parse(spec)
    rng = np.random.default_rng(seed)
    rays = pixel_rays(K_TRUE, DIST_TRUE, SIZE, ss=2)
    paths = []
    for i, (rvec, tvec) in enumerate(
        random_poses(board, K_TRUE, DIST_TRUE, SIZE, n, rng, distance_m=(0.35, 0.6))
    ):
        p = folder / f"view{i:02d}.png"
        cv2.imwrite(str(p), render_view(board, rays, rvec, tvec, rng))
        paths.append(str(p))
    return paths


@pytest.fixture(scope="module")
def chessboard(tmp_path_factory):
    d = tmp_path_factory.mktemp("chessboard")
    paths = _render(d, "chessboard:9x6:0.025", 12, seed=2)
    blank = d / "blank.png"  # a frame without the board: reported, not fatal
    cv2.imwrite(str(blank), np.full(SIZE[::-1], 128, np.uint8))
    return d, [*paths, str(blank)]


def _check_recovery(doc):
    # Tolerances: the fit's own standard deviations (OpenCV's covariance from the
    # residuals, corner errors taken as independent). The detected corners' errors are
    # correlated within a view (about 0.05-0.1 px of bias per view against the rendered
    # truth), which that sigma does not see: recovered values were within 4.3 sigma over
    # seeds 1-3 of this setup, so 6 sigma. Focal lengths also within 0.5 % (seen: 0.4 %).
    got = np.array([doc["fx_px"], doc["fy_px"], doc["cx_px"], doc["cy_px"]])
    true = K_TRUE[[0, 1, 0, 1], [0, 1, 2, 2]]
    sigma = np.array(doc["std_fx_fy_cx_cy_px"])
    assert np.all(np.abs(got - true) < 6 * sigma), (got - true) / sigma
    assert np.all(np.abs(got[:2] / true[:2] - 1) < 5e-3)
    k1, sk1 = doc["dist_coeffs"][0], doc["std_dist_coeffs"][0]
    assert abs(k1 - DIST_TRUE[0]) < 6 * sk1
    # The corners' own scatter against the truth is 0.03-0.16 px RMS per view.
    assert doc["reprojection_rms_px"] < 0.2


def test_chessboard_recovers_the_rendering_camera(chessboard, tmp_path, capsys):
    d, paths = chessboard
    out = tmp_path / "camera.toml"
    argv = ["camera", "calibrate", *paths, "--board", "chessboard:9x6:0.025", "--out", str(out)]
    assert main([*argv, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["views"] == 12 and doc["not_found"] == [paths[-1]] and doc["corners"] == 12 * 54
    _check_recovery(doc)
    cam = load_camera(out)  # a valid camera.toml with what was printed
    assert cam.k_px[0, 0] == doc["fx_px"] and list(cam.dist_coeffs) == doc["dist_coeffs"]
    assert (cam.width_px, cam.height_px, cam.bit_depth) == (*SIZE, 8)
    assert f"{doc['reprojection_rms_px']:.3f} px RMS" in out.read_text()

    # Text output: values with their sigma, the error, where it went.
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert text.startswith("board chessboard:9x6:0.025: found in 12 of 13 image(s), 648 corners")
    assert f"fx {doc['fx_px']:.2f} ± " in text and "reprojection error" in text
    assert text.rstrip().endswith(f"written to {out}")


def test_an_existing_camera_toml_keeps_its_pose(chessboard, tmp_path, capsys):
    d, paths = chessboard
    out = tmp_path / "camera.toml"
    out.write_text(
        "[camera]\nwidth_px = 512\nheight_px = 384\nfx_px = 400.0\nfy_px = 400.0\n"
        "bit_depth = 12\nposition_enu_m = [0.0, 60.0, 1.5]\nlook_at_enu_m = [0.0, 0.0, 50.0]\n"
        'target = "cal1"\nblack_level_dn = 64.0\n'
    )
    before = load_camera(out)
    assert main(["camera", "calibrate", *paths[:12], "--board", "chessboard:9x6:0.025",
                 "--out", str(out), "--json"]) == 0  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    after = load_camera(out)
    assert after.k_px[0, 0] == doc["fx_px"] != 400.0
    assert after.target == "cal1" and after.bit_depth == 12 and after.black_level_dn == 64.0
    np.testing.assert_array_equal(after.r_enu_cam, before.r_enu_cam)


def test_charuco_recovers_the_rendering_camera(tmp_path, capsys):
    if not hasattr(cv2, "aruco") or not hasattr(cv2.aruco, "CharucoDetector"):
        pytest.skip("this OpenCV has no cv2.aruco.CharucoDetector")
    spec = "charuco:7x5:0.04:0.03"
    paths = _render(tmp_path, spec, 12, seed=3)
    assert main(["camera", "calibrate", *paths, "--board", spec, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["views"] == 12 and doc["out"] is None
    _check_recovery(doc)


@pytest.mark.parametrize(
    "spec", ["chessboard:9x6", "chessboard:9by6:0.025", "chessboard:1x6:0.025", "circles:4x4:1"]
)
def test_bad_board_spec_is_one_clear_error(spec):
    with pytest.raises(InputError, match="--board"):
        Board.parse(spec)


def test_too_few_views_and_mixed_sizes_are_refused(chessboard, tmp_path, capsys):
    d, paths = chessboard
    board = ["--board", "chessboard:9x6:0.025"]
    assert main(["camera", "calibrate", *paths[:2], paths[-1], *board]) == 2
    err = capsys.readouterr().err
    assert "found in 2 of 3 image(s)" in err and "blank.png" in err
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((100, 120), np.uint8))
    assert main(["camera", "calibrate", paths[0], str(small), *board]) == 2
    assert "120x100 px" in capsys.readouterr().err
