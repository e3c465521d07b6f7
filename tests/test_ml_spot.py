"""The learned spot detector: model integrity, ONNX/torch parity, training, accuracy."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import replace
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from heliostat.errors import InputError
from heliostat.ml.rectify import cell_centres_m, rectify_target
from heliostat.ml.registry import ModelError, load_card, load_session, model_bytes
from heliostat.ml.spot_model import detect_spot_onnx, predict_crops
from heliostat.ml.training.data import DataSpec, make_scene, render_samples

MODELS = Path(str(resources.files("heliostat.ml").joinpath("models")))

#: Accuracy the shipped model must reach on the first TEST_FRAMES frames of the card's
#: fixed seeded test set (DataSpec seed 777). Frames and model are deterministic; on the
#: reference machine this subset gives a median of 9.5 mm and a 95th percentile of 119 mm
#: (card, all 200 frames: 9.5 and 143 mm). The bounds (about 1.5x) allow for other BLAS /
#: onnxruntime builds changing the rendering's and the network's last bits, not for a
#: worse model: a model without the learned mask (plain centroid of the crop) misses them.
TEST_FRAMES = 60
MAX_MEDIAN_MM = 15.0
MAX_P95_MM = 180.0


@pytest.fixture(scope="module")
def scene():
    return make_scene(DataSpec())


@pytest.fixture(scope="module")
def test_frames(scene):
    spec = replace(DataSpec(), n=200, seed=777)
    return list(render_samples(spec, scene, 0, TEST_FRAMES))


# --------------------------------------------------------------------------- integrity
def test_shipped_model_matches_its_card():
    card = load_card("spot_cnn")
    data = (MODELS / card["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == card["sha256"]
    assert card["size_bytes"] == len(data) < 1_000_000  # the issue: < 1 MB
    # The card carries what the issue asks for.
    for key in ("training_data", "training", "test"):
        assert key in card
    assert card["training"]["energy_j"] > 0 and card["training"]["wall_time_s"] > 0
    assert card["training_data"]["spec"]["seed"] == card["training_data"]["spec"]["seed"]
    assert set(card["training"]["kg_co2e"]) == {"us", "california", "renewable-cloud"}


def test_altered_model_is_rejected(tmp_path):
    for f in MODELS.glob("spot_cnn*"):
        shutil.copy(f, tmp_path / f.name)
    model_bytes("spot_cnn", tmp_path)  # intact copy loads
    p = tmp_path / "spot_cnn.onnx"
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one flipped bit
    p.write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="does not match its model card"):
        model_bytes("spot_cnn", tmp_path)
    with pytest.raises(ModelError, match="does not match its model card"):
        load_session("spot_cnn", tmp_path)


def test_missing_model_or_card_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="model card .* is missing"):
        model_bytes("spot_cnn", tmp_path)
    shutil.copy(MODELS / "spot_cnn.card.json", tmp_path / "spot_cnn.card.json")
    with pytest.raises(ModelError, match="model file .* is missing"):
        model_bytes("spot_cnn", tmp_path)
    (tmp_path / "spot_cnn.card.json").write_text("{}")
    with pytest.raises(ModelError, match="no 'sha256'"):
        model_bytes("spot_cnn", tmp_path)


# --------------------------------------------------------------------------- rectify
def test_rectified_grid_lands_on_plane_coordinates(scene):
    """A frame whose pixel values are their own target-plane x (y) coordinate rectifies
    to the crop's cell-centre x (y): the crop grid is where its docstring says."""
    reg = scene.registration
    w, h = reg.image_size_px
    uu, vv = np.meshgrid(np.arange(w, dtype=float), np.arange(h, dtype=float))
    xy = reg.pixel_to_plane(np.c_[uu.ravel(), vv.ravel()]).reshape(h, w, 2)
    xs, ys = cell_centres_m(reg.width_m, reg.height_m)
    for k, want in ((0, xs[None, :]), (1, ys[:, None])):
        img = (xy[..., k] + 10.0).astype(np.float32)  # + 10: keep values positive
        crop = rectify_target(img, reg, dark=np.zeros_like(img))
        got = crop.data * crop.scale_dn
        # The border-median offset is subtracted; compare gradients (offset-free).
        # Bilinear interpolation of a near-linear field: error << one cell (0.094 m).
        off = float(np.median(got - (want + 10.0)))
        np.testing.assert_allclose(got - off, np.broadcast_to(want + 10.0, got.shape), atol=2e-3)


def test_rectify_rejects_wrong_size(scene):
    with pytest.raises(InputError, match="expected a 480x384 px frame"):
        rectify_target(np.zeros((10, 10), np.uint16), scene.registration)


# --------------------------------------------------------------------------- detector
def test_onnx_detector_finds_the_spot_and_flags_dark_frames(scene, test_frames):
    s = test_frames[0]
    r = detect_spot_onnx(s.image, scene.registration, dark=s.dark, bit_depth=12,
                         target=scene.target)  # fmt: skip
    assert r.ok
    assert math.hypot(r.x_m - s.xy_m[0], r.y_m - s.xy_m[1]) < 0.2  # 2 crop cells
    enu = scene.target.plane_to_enu(np.array([r.x_m, r.y_m]))
    np.testing.assert_allclose([r.e_m, r.n_m, r.u_m], enu, atol=1e-9)
    nothing = detect_spot_onnx(s.dark, scene.registration, dark=s.dark, bit_depth=12)
    assert not nothing.ok and nothing.flags == ("no_spot",) and math.isnan(nothing.x_m)


def test_shipped_model_accuracy_on_fixed_seeded_frames(scene, test_frames):
    crops = np.stack([rectify_target(s.image, scene.registration, dark=s.dark).data
                      for s in test_frames])  # fmt: skip
    xy = predict_crops(crops) * np.array([scene.target.width_m / 2, scene.target.height_m / 2])
    truth = np.array([s.xy_m for s in test_frames])
    err_mm = 1e3 * np.hypot(*(xy - truth).T)
    assert np.median(err_mm) < MAX_MEDIAN_MM
    assert np.percentile(err_mm, 95) < MAX_P95_MM


def test_detector_for_gives_interchangeable_detectors(scene, test_frames):
    from heliostat.ml.spot_model import detect_spot_onnx
    from heliostat.vision.auto import detect_spot_auto
    from heliostat.vision.classical import SpotResult
    from heliostat.vision.methods import detector_for

    assert detector_for("classical") is detect_spot_auto
    assert detector_for("onnx") is detect_spot_onnx
    s = test_frames[1]
    kw = dict(dark=s.dark, flat=None, black_level_dn=0.0, bit_depth=12, expected_xy_m=None,
              target=scene.target)  # fmt: skip
    results = [detector_for(m)(s.image, scene.registration, **kw) for m in ("classical", "onnx")]
    assert all(isinstance(r, SpotResult) and r.ok for r in results)
    with pytest.raises(InputError, match="--method: expected one of classical, onnx, onnx-real"):
        detector_for("cnn")


def test_predict_crops_checks_shape():
    with pytest.raises(InputError, match=r"expected shape \(N, 1, 64, 64\)"):
        predict_crops(np.zeros((2, 32, 32), np.float32))


# --------------------------------------------------------------------------- torch side
def test_shipped_onnx_matches_torch_within_1e5():
    """Load the shipped ONNX weights into the training code's torch module: both
    frameworks give the same centroids on fixed inputs (float32 round-off, 1e-5)."""
    torch = pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    from heliostat.ml.training.spot_cnn import build_model

    card = load_card("spot_cnn")
    model = build_model(card["channels"])
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(MODELS / "spot_cnn.onnx"))
             .graph.initializer}  # fmt: skip
    params = dict(model.named_parameters())  # buffers (the cell grids) follow from the size
    missing = [k for k in params if k not in inits]
    assert not missing, f"ONNX initializers lack {missing}"
    model.load_state_dict({k: torch.from_numpy(np.array(inits[k])) for k in params}, strict=False)
    model.eval()
    x = np.random.default_rng(5).normal(0.0, 0.3, (8, 1, 64, 64)).astype(np.float32)
    x[:, 0, 20:30, 35:45] += 1.0  # a bright patch, so the soft-argmax has a peak
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(predict_crops(x), ref, atol=1e-5)


def test_tiny_training_runs_and_exports(tmp_path):
    """A few optimiser steps on synthetic blobs; the exported ONNX reproduces torch."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    import onnxruntime as ort

    from heliostat.ml.training.spot_cnn import export_onnx, train

    rng = np.random.default_rng(3)
    n = 48
    y = rng.uniform(-0.7, 0.7, (n, 2)).astype(np.float32)
    g = (np.arange(64) + 0.5) / 32 - 1
    gx, gy = np.meshgrid(g, -g)
    x = np.exp(-((gx[None] - y[:, :1, None]) ** 2 + (gy[None] - y[:, 1:, None]) ** 2) / 0.02)
    x = (x + rng.normal(0, 0.02, x.shape))[:, None].astype(np.float32)
    model, hist = train(x, y, epochs=2, batch=16, channels=2, threads=1, log=lambda s: None)
    assert hist["epoch"] == [1, 2] and np.all(np.isfinite(hist["val_mm"]))
    path = tmp_path / "tiny.onnx"
    export_onnx(model, path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = model(torch.from_numpy(x[:4])).numpy()
    np.testing.assert_allclose(sess.run(None, {"crop": x[:4]})[0], ref, atol=1e-5)
    # Clean Gaussian blobs: the masked centroid is close to exact even after two epochs;
    # 60 mm is 1 % of the 6 m target (half extent 3 m), far above the blobs' noise.
    assert hist["val_mm"][-1] < 60.0


def test_card_is_json_with_units_in_keys():
    card = json.loads((MODELS / "spot_cnn.card.json").read_text())
    assert "energy_j" in card["training"] and "wall_time_s" in card["training"]
