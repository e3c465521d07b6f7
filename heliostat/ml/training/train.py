"""Train the learned spot detector and write the shipped ONNX files with their model cards.

Usage (needs the ``train`` extra: torch, onnx)::

    python -m heliostat.ml.training.train                # spot detector + hybrid graph
    python -m heliostat.ml.training.train --hybrid-only  # only the pointing-residual graph

Steps, each metered with the ledger's :class:`~heliostat.ledger.EnergyMeter`:

1. render the training frames (:mod:`heliostat.ml.training.data`, spec and seed in the
   card); ``--data-cache FILE`` reuses an earlier rendering of the same spec;
2. train (:mod:`heliostat.ml.training.spot_cnn`) on 2 CPU threads;
3. export ONNX, check onnxruntime against torch on the validation crops (1e-5), score the
   model on the fixed seeded test set, and write ``spot_cnn.onnx`` and
   ``spot_cnn.card.json`` (SHA-256, size, spec, seed, epochs, wall time, energy, CO2e
   under each grid preset, test accuracy).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from heliostat.ml.training.data import DataSpec, build_arrays, make_scene

#: Seed and size of the fixed test set the card's accuracy (and the test suite) uses.
TEST_SEED = 777
TEST_N = 200


def models_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "models"


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _measurement_dict(m) -> dict:
    from heliostat.ledger import GRID_PRESETS

    e = m.energy
    return {
        "energy_j": e.joules,
        "wall_time_s": m.duration_s,
        "cpu_time_s": m.cpu_time_s,
        "source": m.source,
        "rel_uncertainty": m.rel_uncertainty,
        "pue": m.pue,
        "notes": list(m.notes),
        "kg_co2e": {k: g.emissions(e).kg_co2e for k, g in GRID_PRESETS.items()},
    }


def test_spec() -> DataSpec:
    """The fixed seeded test set: the training draw's distribution, another seed."""
    return replace(DataSpec(), n=TEST_N, seed=TEST_SEED)


def score(errors_m: np.ndarray) -> dict:
    e = np.asarray(errors_m) * 1e3
    return {
        "n": int(e.size),
        "mean_mm": float(np.mean(e)),
        "median_mm": float(np.median(e)),
        "p95_mm": float(np.percentile(e, 95)),
        "rms_mm": float(np.sqrt(np.mean(e**2))),
    }


def train_spot(args) -> dict:
    import onnx
    import onnxruntime as ort
    import torch

    from heliostat.ledger import EnergyMeter
    from heliostat.ml.training.spot_cnn import export_onnx, n_parameters, train

    spec = replace(DataSpec(), n=args.n, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meter = EnergyMeter()
    cache = Path(args.data_cache) if args.data_cache else None
    if cache is not None and cache.exists():
        d = np.load(cache, allow_pickle=False)
        if json.loads(str(d["spec"])) != json.loads(json.dumps(spec.as_dict())):
            sys.exit(f"{cache}: rendered for another data spec; delete it or drop --data-cache")
        x, y = d["x"], d["y"]
        data_m = json.loads(str(d["measurement"]))
        print(f"data: {len(x)} crops from {cache}", flush=True)
    else:
        print(f"rendering {spec.n} frames ...", flush=True)
        with meter:
            x, y, _, _ = build_arrays(spec)
        data_m = _measurement_dict(meter.measurement)
        if cache is not None:
            np.savez_compressed(cache, x=x, y=y, spec=json.dumps(spec.as_dict()),
                                measurement=json.dumps(data_m))  # fmt: skip
    scene = make_scene(spec)
    half = scene.target.width_m / 2
    with meter:
        model, hist = train(x, y, epochs=args.epochs, seed=args.seed, threads=args.threads,
                            channels=args.channels, half_extent_m=half)  # fmt: skip
    train_m = _measurement_dict(meter.measurement)
    path = out / "spot_cnn.onnx"
    export_onnx(model, path)
    onnx.checker.check_model(onnx.load(str(path)))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = model(torch.from_numpy(x[:64])).numpy()
    got = sess.run(None, {"crop": x[:64]})[0]
    parity = float(np.max(np.abs(ref - got)))
    if parity > 1e-5:
        sys.exit(f"ONNX and torch disagree by {parity:g} (> 1e-5)")
    tspec = test_spec()
    xt, _, xy_t, cases = build_arrays(tspec, scene)
    pred = sess.run(None, {"crop": xt})[0].astype(np.float64) * half
    err = np.hypot(*(pred - xy_t).T)
    by_case = {}
    for c in ("round", "faceted", "streaky", "edge", "cloud", "second_spot", "saturated"):
        m = np.array([c in k for k in cases])
        if m.any():
            by_case[c] = score(err[m])
    card = {
        "schema": "heliostat-model-card/1",
        "name": "spot_cnn",
        "file": path.name,
        "sha256": sha256_file(path),
        "size_bytes": path.stat().st_size,
        "task": "sun-spot centroid on the calibration target from a 64x64 target-plane crop",
        "inputs": {"crop": "float32 (N, 1, 64, 64), heliostat.ml.rectify.rectify_target"},
        "outputs": {"xy": "float32 (N, 2): centroid x/(w/2), y/(h/2), target-plane axes"},
        "architecture": "CNN spot mask + signal-weighted centroid "
        "(heliostat/ml/training/spot_cnn.py)",
        "channels": args.channels,
        "n_parameters": n_parameters(model),
        "opset": 17,
        "training_data": {
            "generator": "heliostat.ml.training.data.render_samples (sim.camera.render_frame)",
            "spec": spec.as_dict(),
            "n_train": int(round(len(x) * 0.9)),
            "n_val": len(x) - int(round(len(x) * 0.9)),
            "label": "FrameTruth.centroid_xy_m (flux centroid of the on-target part)",
            "generation": data_m,
        },
        "training": {
            "seed": args.seed,
            "epochs": args.epochs,
            "batch": 64,
            "optimizer": "Adam, one-cycle lr 3e-3, loss = mean Euclidean error [m]",
            "threads": args.threads,
            "history": hist,
            **train_m,
        },
        "energy_note": "training energy is 'training.energy_j'; rendering the data is "
        "'training_data.generation.energy_j'; both measured with heliostat.ledger.EnergyMeter",
        "test": {"spec": tspec.as_dict(), **score(err), "by_case": by_case},
        "onnx_torch_max_abs_diff": parity,
        "framework": {
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
        },  # fmt: skip
        "command": "python -m heliostat.ml.training.train --data-cache FILE",
    }
    (out / "spot_cnn.card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: card[k] for k in ("sha256", "size_bytes", "n_parameters", "test")},
                     indent=2))  # fmt: skip
    return card


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m heliostat.ml.training.train")
    p.add_argument("--out", default=str(models_dir()))
    p.add_argument("--n", type=int, default=DataSpec().n)
    p.add_argument("--seed", type=int, default=DataSpec().seed)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-cache", default="")
    p.add_argument("--hybrid-only", action="store_true")
    args = p.parse_args(argv)
    from heliostat.ml.training.hybrid_graph import write_hybrid_graph

    t0 = time.perf_counter()
    write_hybrid_graph(Path(args.out))
    if not args.hybrid_only:
        train_spot(args)
    print(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
