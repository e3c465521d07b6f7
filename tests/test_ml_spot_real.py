"""The real-background learned spot detector (spot_real): card integrity, ONNX/torch
parity, accuracy on held-out real-target composites, the bench's real comparison."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from conftest import REAL_DIR

from heliostat.errors import InputError
from heliostat.ml.real_input import real_crop
from heliostat.ml.registry import ModelError, load_card, model_bytes
from heliostat.ml.spot_real import detect_spot_onnx_real, predict_real

MODELS = Path(str(resources.files("heliostat.ml").joinpath("models")))
#: The real data beside the clone (``<repo>/../shared/real``, as in CI); a checkout
#: elsewhere (a git worktree) points to it with HELIOSTAT_REAL_DIR.
REAL = REAL_DIR
needs_real = pytest.mark.skipif(
    not (REAL / "utis").is_dir(), reason=f"real Jülich data not found at {REAL}"
)

#: Accuracy the shipped model must reach on the first TEST_FRAMES composites of the
#: card's TEST set (split test, seed 4711; the card scores all 400). Composites and model
#: are deterministic; on the reference machine these frames give MEASURED. The median
#: bound (1.5x) allows for another BLAS / OpenCV / onnxruntime build changing the last
#: bits of the composites and the network, not for a worse model; the count of bad
#: frames (error above 0.1 of the target width, 25.5 px, or no spot) is allowed two more
#: than measured, as a frame near the 25.5 px line may cross it.
TEST_FRAMES = 40
MEASURED = {"frames_with_spot": 38, "median_px": 3.48, "bad_frames": 3}
MAX_MEDIAN_PX = 1.5 * MEASURED["median_px"]
MAX_BAD_FRAMES = MEASURED["bad_frames"] + 2


def _reg():
    from heliostat.ml.training.real_data import registration_256

    return registration_256()


# --------------------------------------------------------------------------- integrity
def test_shipped_model_matches_its_card():
    card = load_card("spot_real")
    data = (MODELS / card["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == card["sha256"]
    assert card["size_bytes"] == len(data) < 1_000_000
    tr, td = card["training"], card["training_data"]
    assert tr["energy_j"] > 0 and tr["wall_time_s"] > 0 and td["generation"]["energy_j"] > 0
    assert set(tr["kg_co2e"]) == {"us", "california", "renewable-cloud"}
    assert len(tr["history"]["epoch"]) == tr["epochs_run"] >= 1
    # the split is recorded with its salt, one per set, and the sets are the hash split's
    assert {s["split"] for s in td["specs"].values()} == {"train", "val", "test"}
    assert {s["salt"] for s in td["specs"].values()} == {"v1"}
    assert card["test"]["spec"]["split"] == "test"


def test_altered_model_is_rejected(tmp_path):
    for f in MODELS.glob("spot_real*"):
        shutil.copy(f, tmp_path / f.name)
    model_bytes("spot_real", tmp_path)  # the intact copy loads
    p = tmp_path / "spot_real.onnx"
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    p.write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="does not match its model card"):
        model_bytes("spot_real", tmp_path)


@needs_real
def test_splits_do_not_share_files():
    from heliostat.ml.training.real_data import split_files

    sets = {s: split_files(REAL, s) for s in ("train", "val", "test")}
    for i in (0, 1):  # empty targets, flux images
        names = [{p.name for p in sets[s][i]} for s in sets]
        assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
        assert all(len(n) > 50 for n in names)


# --------------------------------------------------------------------------- input
def test_real_crop_normalises_by_the_board_median():
    reg = _reg()
    img = np.full((256, 256), 120, np.uint8)
    img[100:140, 60:100] = 240  # a bright patch: 2x the board
    crop, med = real_crop(img, reg)
    assert med == pytest.approx(120.0)
    # the bare board is 0 and the patch's interior cells +1 (box averages of constant
    # pixels are exact; cells straddling the patch edge are in between)
    assert np.median(crop) == pytest.approx(0.0, abs=1e-6)
    assert crop[30, 20] == pytest.approx(1.0, abs=1e-5)
    assert crop.min() >= 0.0 and crop.max() <= 1.0 + 1e-5


def test_real_crop_rejects_bad_frames():
    reg = _reg()
    with pytest.raises(InputError, match="expected a 256x256 px frame"):
        real_crop(np.zeros((100, 256), np.uint8), reg)
    with pytest.raises(InputError, match="holds no light"):
        real_crop(np.zeros((256, 256), np.uint8), reg)
    with pytest.raises(InputError, match="crops: expected shape"):
        predict_real(np.zeros((2, 32, 32), np.float32))


# --------------------------------------------------------------------------- torch side
def test_shipped_onnx_matches_torch():
    """The shipped ONNX weights loaded into the training code's torch module give the
    same centroids and presence logits (float32 round-off through softmax: 1e-4)."""
    torch = pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    from heliostat.ml.training.spot_real import build_model

    card = load_card("spot_real")
    model = build_model(card["channels"], head_kernel=card.get("head_kernel", 1))
    graph = onnx.load(str(MODELS / "spot_real.onnx")).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    params = dict(model.named_parameters())
    missing = [k for k in params if k not in inits]
    assert not missing, f"ONNX initializers lack {missing}"
    model.load_state_dict({k: torch.from_numpy(np.array(inits[k])) for k in params}, strict=False)
    model.eval()
    x = np.random.default_rng(5).normal(0.0, 0.05, (6, 1, 64, 64)).astype(np.float32)
    x[:, 0, 20:30, 35:45] += 0.8  # a bright patch, so the heatmap has a peak
    with torch.no_grad():
        ref_xy, ref_logit = (a.numpy() for a in model(torch.from_numpy(x)))
    xy, logit = predict_real(x)
    np.testing.assert_allclose(xy, ref_xy, atol=1e-4)
    np.testing.assert_allclose(logit, ref_logit[:, 0], atol=1e-4)


def test_tiny_training_runs_and_exports(tmp_path):
    """Two epochs on synthetic blobs over a textured board; ONNX reproduces torch."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    import onnxruntime as ort

    from heliostat.ml.training.spot_real import export_onnx, train

    rng = np.random.default_rng(3)
    n = 40
    y = rng.uniform(-0.6, 0.6, (n, 2)).astype(np.float32)
    y[:4] = np.nan  # no spot
    g = (np.arange(64) + 0.5) / 32 - 1
    gx, gy = np.meshgrid(g, -g)
    b = np.exp(-((gx[None] - y[:, :1, None]) ** 2 + (gy[None] - y[:, 1:, None]) ** 2) / 0.02)
    x = (np.nan_to_num(b) + rng.normal(0, 0.03, b.shape))[:, None].astype(np.float32)
    model, hist = train(x[:32], y[:32], x[32:], y[32:], epochs=2, batch=16, channels=2,
                        log=lambda s: None)  # fmt: skip
    assert hist["epoch"] == [1, 2] and np.all(np.isfinite(hist["val_mean_px"]))
    path = tmp_path / "tiny.onnx"
    export_onnx(model, path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref_xy, ref_l = (a.numpy() for a in model(torch.from_numpy(x[:4])))
    got_xy, got_l = sess.run(None, {"crop": x[:4]})
    np.testing.assert_allclose(got_xy, ref_xy, atol=1e-5)
    np.testing.assert_allclose(got_l, ref_l, atol=1e-5)


# --------------------------------------------------------------------------- accuracy
@needs_real
def test_accuracy_on_held_out_real_composites():
    from heliostat.ml.training.real_data import RealDataSpec, draw_composites
    from heliostat.ml.training.train_real import TEST_SEED

    card = load_card("spot_real")
    spec = RealDataSpec(**card["test"]["spec"])
    assert spec.seed == TEST_SEED and spec.split == "test"
    reg = _reg()
    err = []
    for frame, t, _, _ in draw_composites(REAL, spec, 0, TEST_FRAMES):
        if t is None:  # the presence output is scored in the card and the bench
            continue
        r = detect_spot_onnx_real(frame, reg)
        err.append(math.hypot(r.u_px - t.u_px, r.v_px - t.v_px) if r.ok else math.inf)
    e = np.asarray(err)
    assert len(e) == MEASURED["frames_with_spot"]
    assert np.median(e) <= MAX_MEDIAN_PX
    assert np.count_nonzero(~(e <= 25.5)) <= MAX_BAD_FRAMES


@needs_real
def test_detector_result_is_consistent():
    """The SpotResult's pixel and plane positions are one point through the registration,
    and a frame of the wrong size is a clear error."""
    from heliostat.ml.training.real_data import RealDataSpec, draw_composites

    reg = _reg()
    spec = RealDataSpec(split="test", n=1, seed=99, p_empty=0.0)
    frame, _, _, _ = next(draw_composites(REAL, spec))
    r = detect_spot_onnx_real(frame, reg)
    assert r.ok and r.n_candidates == 1
    np.testing.assert_allclose(
        reg.pixel_to_plane([[r.u_px, r.v_px]])[0], [r.x_m, r.y_m], atol=1e-9
    )  # fmt: skip  (one homography, float64 round-off)
    with pytest.raises(InputError):
        detect_spot_onnx_real(frame[:200], reg)


# --------------------------------------------------------------------------- bench
@needs_real
def test_bench_compare_real_option(tmp_path, capsys):
    from heliostat.commands.bench import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["bench", "compare", "--real", str(REAL), "--real-only", "--real-frames", "3",
         "--out", str(tmp_path), "--json"]
    )  # fmt: skip
    assert args.func(args) == 0
    doc = json.loads(capsys.readouterr().out)
    comp, samples = doc["real"]["composites"], doc["real"]["real_samples"]
    for m in ("sunlit", "sunlit_whole", "onnx_real"):
        assert comp["methods"][m]["frames"] == 3
        assert comp["methods"][m]["time_per_frame_ms"] > 0
    assert samples["samples"] == len(samples["per_sample"]) == 9
    for row in samples["per_sample"]:  # the distance is that of the two reported centres
        a, b = row["sunlit_whole"], row["onnx_real"]
        if a and b:
            assert row["distance_px"] == pytest.approx(math.hypot(a[0] - b[0], a[1] - b[1]))
    rows = {r["metric"]: r for r in doc["table"]}
    key = "real composites (3, test split): error median"
    assert rows[key]["classical"] == comp["methods"]["sunlit_whole"]["median_px"]
    assert rows[key]["ml"] == comp["methods"]["onnx_real"]["median_px"]
    assert (tmp_path / "real_samples_overlay.png").stat().st_size > 1000
    assert (tmp_path / "compare.json").exists()


def test_bench_compare_real_only_needs_real(tmp_path):
    from heliostat.commands.bench import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", "compare", "--real-only", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--real-only: needs --real DIR"):
        args.func(args)
