"""Train the real-background spot detector and write ``spot_real.onnx`` with its model card.

Usage (needs the ``train`` extra: torch, onnx, and the real data beside the repository)::

    python -m heliostat.ml.training.train_real --real-dir ../shared/real \\
        --data-cache /tmp/spot_real_data.npz

Steps, each metered with the ledger's :class:`~heliostat.ledger.EnergyMeter`:

1. build the composites (:mod:`heliostat.ml.training.real_data`): TRAIN split for
   training, VAL split for the per-epoch validation and the choice of epoch; the TEST
   split is scored once, at the end, for the card (``--data-cache`` reuses an earlier
   build of the same specs);
2. train (:mod:`heliostat.ml.training.spot_real`) on 2 CPU threads;
3. export ONNX, check onnxruntime against torch (1e-4), score the TEST composites, write
   the card (SHA-256, size, data specs and split, seed, epochs, history, wall time,
   energy and CO2e under each grid preset, test accuracy).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from heliostat.ml.training.real_data import (
    WIDTH_PX,
    RealDataSpec,
    build_arrays_parallel,
)
from heliostat.ml.training.train import _measurement_dict, models_dir, sha256_file
from sim.real_targets import default_real_dir

MODEL_NAME = "spot_real"
#: The card's TEST composites (and the test suite's): seed and count.
TEST_SEED = 4711
TEST_N = 400
ROOT = Path(__file__).resolve().parents[3]


def specs(n_train: int, n_val: int, seed: int) -> dict[str, RealDataSpec]:
    base = RealDataSpec(seed=seed)
    return {
        "train": replace(base, split="train", n=n_train),
        "val": replace(base, split="val", n=n_val, seed=seed + 1),
        "test": replace(base, split="test", n=TEST_N, seed=TEST_SEED),
    }


def test_errors_px(sess, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid errors [px] on samples with a spot, and the presence logits of all."""
    xy, logit = sess.run(None, {"crop": x})
    has = np.isfinite(y[:, 0])
    err = np.hypot(*((xy[has] - y[has]) * (WIDTH_PX / 2)).T)
    return err, logit[:, 0]


def score_px(err: np.ndarray, logit: np.ndarray, has: np.ndarray, wrong_px: float) -> dict:
    found = logit[has] > 0
    e = np.where(found, err, np.inf)
    fin = e[np.isfinite(e)]
    return {
        "n_with_spot": int(has.sum()),
        "n_without": int((~has).sum()),
        "median_px": float(np.median(fin)) if fin.size else None,
        "p95_px": float(np.quantile(e, 0.95, method="inverted_cdf")),
        "max_of_found_px": float(fin.max()) if fin.size else None,
        "median_px_all_outputs": float(np.median(err)),
        "p95_px_all_outputs": float(np.percentile(err, 95)),
        "no_spot_rate": float(np.mean(~found)),
        "wrong_spot_rate": float(np.mean(found & (err > wrong_px))),
        "false_spot_rate_on_empty": float(np.mean(logit[~has] > 0)) if (~has).any() else None,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m heliostat.ml.training.train_real")
    p.add_argument("--real-dir", default=str(default_real_dir(ROOT)))
    p.add_argument("--out", default=str(models_dir()))
    p.add_argument("--n-train", type=int, default=4000)
    p.add_argument("--n-val", type=int, default=500)
    p.add_argument("--seed", type=int, default=RealDataSpec().seed)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--channels", type=int, default=12)
    p.add_argument("--head-kernel", type=int, default=3, choices=(1, 3))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--processes", type=int, default=2, help="processes building composites")
    p.add_argument("--time-budget-s", type=float, default=1500.0)
    p.add_argument("--data-cache", default="")
    p.add_argument("--data-only", action="store_true", help="build the data cache and stop")
    args = p.parse_args(argv)

    from heliostat.ledger import EnergyMeter

    sp = specs(args.n_train, args.n_val, args.seed)
    spec_json = json.dumps({k: v.as_dict() for k, v in sp.items()}, sort_keys=True)
    cache = Path(args.data_cache) if args.data_cache else None
    meter = EnergyMeter()
    if cache is not None and cache.exists():
        d = np.load(cache, allow_pickle=False)
        if str(d["spec"]) != spec_json:
            sys.exit(f"{cache}: built for other data specs; delete it or drop --data-cache")
        arrays = {k: (d[f"x_{k}"], d[f"y_{k}"]) for k in sp}
        data_m = json.loads(str(d["measurement"]))
        print(f"data from {cache}", flush=True)
    else:
        t0 = time.perf_counter()
        with meter:
            arrays = {
                k: build_arrays_parallel(args.real_dir, s, args.processes) for k, s in sp.items()
            }
        data_m = _measurement_dict(meter.measurement)
        print(f"composites built in {time.perf_counter() - t0:.0f} s", flush=True)
        if cache is not None:
            np.savez_compressed(cache, spec=spec_json, measurement=json.dumps(data_m),
                                **{f"x_{k}": a[0] for k, a in arrays.items()},
                                **{f"y_{k}": a[1] for k, a in arrays.items()})  # fmt: skip
    if args.data_only:
        return 0
    import onnx
    import onnxruntime as ort
    import torch

    from heliostat.ml.training.spot_real import export_onnx, n_parameters, train

    (x, y), (xv, yv), (xt, yt) = arrays["train"], arrays["val"], arrays["test"]
    with meter:
        model, hist = train(x, y, xv, yv, epochs=args.epochs, seed=args.seed,
                            threads=args.threads, channels=args.channels,
                            head_kernel=args.head_kernel, half_px=WIDTH_PX / 2,
                            time_budget_s=args.time_budget_s)  # fmt: skip
    train_m = _measurement_dict(meter.measurement)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{MODEL_NAME}.onnx"
    export_onnx(model, path)
    onnx.checker.check_model(onnx.load(str(path)))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref_xy, ref_l = (a.numpy() for a in model(torch.from_numpy(xv[:64])))
    got_xy, got_l = sess.run(None, {"crop": xv[:64]})
    parity = float(max(np.max(np.abs(ref_xy - got_xy)), np.max(np.abs(ref_l - got_l))))
    if parity > 1e-4:
        sys.exit(f"ONNX and torch disagree by {parity:g} (> 1e-4)")
    err, logit = test_errors_px(sess, xt, yt)
    has = np.isfinite(yt[:, 0])
    test = score_px(err, logit, has, 0.1 * WIDTH_PX)
    from sim import real_targets as rt

    ranges = rt.CompositeRanges()
    card = {
        "schema": "heliostat-model-card/1",
        "name": MODEL_NAME,
        "file": path.name,
        "sha256": sha256_file(path),
        "size_bytes": path.stat().st_size,
        "task": "sun-spot centroid (and presence) on a SUNLIT calibration target with no "
        "sun-off frame, from a 64x64 board-normalised target grid",
        "inputs": {
            "crop": "float32 (N, 1, 64, 64), heliostat.ml.real_input.real_crop "
            "(cell / median - 1, clipped to [-1, 4])"
        },  # fmt: skip
        "outputs": {
            "xy": "float32 (N, 2): centroid x/(w/2), y/(h/2), target-plane axes",
            "spot_logit": "float32 (N, 1): > 0 means a spot is present",
        },
        "architecture": "U-Net (32-16-8-16-32) heatmap + soft-argmax, presence logit "
        "(heliostat/ml/training/spot_real.py)",
        "channels": args.channels,
        "head_kernel": args.head_kernel,
        "n_parameters": n_parameters(model),
        "opset": 17,
        "training_data": {
            "generator": "sim.real_targets.composite of real UTIS empty targets + flux "
            "images (heliostat.ml.training.real_data)",
            "source": "DLR-SF/UTIS-HeliostatBeamCharacterization (MIT): "
            "utis/emptyTargetImages, utis/fluxImages",
            "split": "sim.real_targets.split_names: sha256(salt + file name) -> "
            "train < 0.6 <= val < 0.8 <= test; salt recorded in each spec",
            "specs": {k: v.as_dict() for k, v in sp.items()},
            "n_files": {
                k: dict(zip(("empty", "flux"), map(len, _files(args.real_dir, s)), strict=True))
                for k, s in sp.items()
            },  # fmt: skip
            "composite_ranges": asdict(ranges),
            "label": "CompositeTruth.u_px, v_px (flux centroid on the target, after the "
            "shadow, before clipping) in half-extent units",
            "generation": data_m,
        },
        "training": {
            "seed": args.seed,
            "epochs": args.epochs,
            "epochs_run": len(hist["epoch"]),
            "batch": 64,
            "optimizer": "AdamW (wd 1e-4), one-cycle lr 3e-3; loss = mean Euclidean error "
            "[px of 256] + 5 x presence BCE; 8 square symmetries as augmentation",
            "threads": args.threads,
            "history": hist,
            **train_m,
        },
        "energy_note": "training energy is 'training.energy_j'; building the composites is "
        "'training_data.generation.energy_j'; both measured with heliostat.ledger.EnergyMeter",
        "test": {
            "spec": sp["test"].as_dict(),
            "wrong_spot": "error > 0.1 target width (25.5 px)",
            "width_px": WIDTH_PX,
            **test,
        },  # fmt: skip
        "onnx_torch_max_abs_diff": parity,
        "framework": {
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
        },  # fmt: skip
        "command": "python -m heliostat.ml.training.train_real --data-cache FILE",
    }
    (out / f"{MODEL_NAME}.card.json").write_text(json.dumps(card, indent=2) + "\n", "utf-8")
    print(json.dumps({k: card[k] for k in ("sha256", "size_bytes", "n_parameters", "test")},
                     indent=2))  # fmt: skip
    return 0


def _files(real_dir, spec: RealDataSpec):
    from heliostat.ml.training.real_data import split_files

    return split_files(real_dir, spec.split, spec.salt)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
