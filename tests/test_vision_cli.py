"""``heliostat detect`` end to end on simulated frames written to disk."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from heliostat.cli import main
from heliostat.config import dumps_toml, load_field

camera_mod = pytest.importorskip("sim.camera")
optics = pytest.importorskip("sim.optics")

DATA = Path(__file__).parent / "data"
FIELD = DATA / "field_small.toml"


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    d = tmp_path_factory.mktemp("detect")
    field = load_field(FIELD)
    tgt = field.target("cal1")
    cam = camera_mod.place_camera(field, tgt)
    (d / "camera.toml").write_text(dumps_toml(camera_mod.camera_to_dict(cam)))
    rng = np.random.default_rng(31)
    spot = optics.spot_with_sigma([0.6, -0.4], 0.12, 1000.0, shape="faceted")
    img, (truth,) = camera_mod.render_frame(cam, tgt, [spot], rng=rng)
    dark, _ = camera_mod.render_frame(cam, tgt, [], rng=rng, exposure=truth.exposure)
    flat, _ = camera_mod.render_frame(cam, tgt, [], rng=rng)
    cv2.imwrite(str(d / "on.png"), img)
    cv2.imwrite(str(d / "on_dark.png"), dark)
    cv2.imwrite(str(d / "flat.png"), flat)
    (d / "broken.png").write_bytes((d / "on.png").read_bytes()[:4000])
    corners = " ".join(f"{u:.4f},{v:.4f}" for u, v in cam.project(tgt.corners_enu_m()))
    return dict(dir=d, truth=truth, corners=corners, target=tgt)


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_detect_json_with_camera_and_field(frames, capsys):
    d = frames["dir"]
    rc = main(
        [
            "detect", str(d / "on.png"), str(d / "broken.png"), str(d / "missing.png"),
            "--camera", str(d / "camera.toml"), "--field", str(FIELD),
            "--dark", str(d / "on_dark.png"), "--flat", str(d / "flat.png"),
            "--black-level", "64", "--json",
        ]
    )  # fmt: skip
    out = _json_lines(capsys.readouterr().out)
    assert rc == 1  # one image failed; the others still ran
    assert [r["image"] for r in out] == [
        str(d / n) for n in ("on.png", "broken.png", "missing.png")
    ]
    good, broken, missing = out
    for key in ("x_m", "y_m", "u_px", "v_px", "flags", "e_m", "n_m", "u_m"):
        assert key in good
    t = frames["truth"]
    # ArUco registration (field target has markers) + dark + flat: within 1 mm.
    assert math.hypot(good["x_m"] - t.centroid_xy_m[0], good["y_m"] - t.centroid_xy_m[1]) < 1e-3
    np.testing.assert_allclose([good["e_m"], good["n_m"], good["u_m"]], t.centroid_enu_m, atol=1e-3)
    assert "truncated" in broken["error"] and "not found" in missing["error"]


def test_detect_with_surveyed_corners(frames, capsys):
    d = frames["dir"]
    rc = main(
        [
            "detect", str(d / "on.png"), "--corners", frames["corners"],
            "--target-size", "5", "5", "--camera", str(d / "camera.toml"), "--json",
        ]
    )  # fmt: skip
    (row,) = _json_lines(capsys.readouterr().out)
    assert rc == 0 and row["flags"] == []
    t = frames["truth"].centroid_xy_m
    # No dark or flat frame: the board's 2 % paint non-uniformity biases the centroid by
    # up to ~0.5 pixel (3 mm); still far below a spot's size.
    assert math.hypot(row["x_m"] - t[0], row["y_m"] - t[1]) < 5e-3
    assert row["e_m"] is None  # no target pose without --field: NaN -> null


def test_detect_rejects_a_non_convex_corner_set(frames, capsys):
    d = frames["dir"]
    rc = main(
        ["detect", str(d / "on.png"), "--corners", "0,0 10,10 0,10 10,0",
         "--target-size", "5", "5", "--json"]
    )  # fmt: skip
    (row,) = _json_lines(capsys.readouterr().out)
    assert rc == 1 and "convex" in row["error"]


def test_detect_without_registration_is_a_clear_error(frames, capsys):
    rc = main(["detect", str(frames["dir"] / "on.png")])
    err = capsys.readouterr().err
    assert rc == 2 and "no registration" in err


def test_detect_fills_observations(frames, tmp_path, capsys):
    d = frames["dir"]
    obs = pd.DataFrame(
        {
            "heliostat_id": ["H001", "H001"],
            "frame": ["on.png", ""],  # relative to the CSV's folder (docs/observations.md)
            "spot_x_m": [9.0, 1.0],
            "spot_y_m": [9.0, 1.0],
            "quality_flags": ["", ""],
        }
    )
    p = d / "obs.csv"
    obs.to_csv(p, index=False)
    out_p = tmp_path / "out.csv"
    rc = main(
        [
            "detect", "--observations", str(p), "--camera", str(d / "camera.toml"),
            "--field", str(FIELD), "--black-level", "64", "--out", str(out_p),
        ]
    )  # fmt: skip
    assert rc == 0
    out = pd.read_csv(out_p)
    t = frames["truth"].centroid_xy_m
    # Flat from the single sun-on-exposure dark frame: noisy, so 1.5 mm.
    assert math.hypot(out.spot_x_m[0] - t[0], out.spot_y_m[0] - t[1]) < 1.5e-3
    assert out.spot_x_m[1] == 1.0


def test_detect_observations_json_is_one_document_not_csv(frames, tmp_path, capsys):
    d = frames["dir"]
    p = d / "obs_json.csv"
    pd.DataFrame({"heliostat_id": ["H001"], "frame": ["on.png"], "quality_flags": [""]}).to_csv(
        p, index=False
    )
    argv = ["detect", "--observations", str(p), "--camera", str(d / "camera.toml")]
    argv += ["--field", str(FIELD), "--black-level", "64"]
    assert main([*argv, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)  # stdout is JSON only, the rows inside
    assert (doc["frames"], doc["spots"], doc["failed"], doc["out"]) == (1, 1, 0, None)
    (row,) = doc["observations"]
    t = frames["truth"].centroid_xy_m
    assert math.hypot(row["spot_x_m"] - t[0], row["spot_y_m"] - t[1]) < 1.5e-3  # as above
    out_p = tmp_path / "o.csv"
    assert main([*argv, "--out", str(out_p)]) == 0
    cap = capsys.readouterr()
    assert cap.out == "" and len(pd.read_csv(out_p)) == 1
    assert f"1 frame(s): 1 spot(s), 0 without a spot, 0 failed; written to {out_p}" in cap.err


def test_the_compile_note_only_when_numba_has_no_current_cache():
    from types import SimpleNamespace

    from heliostat.vision.methods import compiled_on_disk, first_use_note

    def kernel(index):
        return SimpleNamespace(_cache=SimpleNamespace(_cache_file=SimpleNamespace(
            _load_index=lambda: index)))  # fmt: skip

    fresh = SimpleNamespace(coarse_pass=kernel({"sig": 1}), fine_sums=kernel({"sig": 1}),
                            _inlined=kernel({}))  # fmt: skip
    assert compiled_on_disk(fresh) is True  # helpers inlined into others have no cache
    stale = SimpleNamespace(coarse_pass=kernel({"sig": 1}), fine_sums=kernel({}))
    assert compiled_on_disk(stale) is False and compiled_on_disk(SimpleNamespace()) is None
    assert first_use_note("onnx") == ""  # nothing compiled on first use
    from heliostat.vision import _kernels

    expected = "" if compiled_on_disk(_kernels) else "compiles the detector's kernels"
    assert expected in first_use_note("classical")
