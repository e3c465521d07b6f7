"""Speed and energy of the learned spot detector against the classical one (same frames).

Prints one JSON document: per-frame wall time and energy (ledger EnergyMeter) of
``detect_spot`` (the baseline, measured in the same run) and ``detect_spot_onnx``, and
their ratio. Usage: ``.venv/bin/python bench/ml_inference.py [n_frames]``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace

from heliostat.ledger import EnergyMeter
from heliostat.ml.rectify import rectify_target
from heliostat.ml.registry import load_session
from heliostat.ml.spot_model import detect_spot_onnx
from heliostat.ml.training.data import DataSpec, make_scene, render_samples
from heliostat.vision.classical import detect_spot


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    spec = replace(DataSpec(), n=n, seed=31337)
    scene = make_scene(spec)
    frames = list(render_samples(spec, scene))
    load_session("spot_cnn")
    reg = scene.registration
    out = {"frames": n, "camera_px": [spec.width_px, spec.height_px]}
    meter = EnergyMeter(poll_interval_s=None)
    runs = {
        "classical": lambda s: detect_spot(s.image, reg, dark=s.dark, bit_depth=12),
        "onnx": lambda s: detect_spot_onnx(s.image, reg, dark=s.dark, bit_depth=12),
        "rectify_only": lambda s: rectify_target(s.image, reg, dark=s.dark),
    }
    for name, fn in runs.items():
        fn(frames[0])  # warm-up (caches, session)
        t0 = time.perf_counter()
        with meter:
            for s in frames:
                fn(s)
        m = meter.measurement
        out[name] = {
            "time_per_frame_ms": 1e3 * (time.perf_counter() - t0) / n,
            "energy_per_frame_j": m.energy.joules / n,
            "energy_source": m.source,
        }
    out["onnx_over_classical_time"] = (
        out["onnx"]["time_per_frame_ms"] / out["classical"]["time_per_frame_ms"]
    )
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
