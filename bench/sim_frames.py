"""Render speed of sim/camera.py: 1280x1024 12-bit frames (JSON).

Baseline (same run): one float32 exp over a full frame, the unit of elementwise work.
"""

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from heliostat.config import load_field
from heliostat.sun import sun_position
from sim.camera import camera_view, place_camera, render_frame
from sim.optics import flux_spot


def _median_s(fn, n=7):
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    field = load_field(root / "tests" / "data" / "field_small.toml")
    target = field.target("cal1")
    camera = place_camera(field, target)
    s = sun_position(field.site, pd.DatetimeIndex(["2025-06-21T10:00:00Z"])).u_sun_enu[0]
    h = field.heliostat("H001")
    pose = h.kinematics.forward(h.kinematics.inverse(target.centre_enu_m, s))
    x = np.random.default_rng(0).standard_normal((1024, 1280), dtype=np.float32)
    out = {"baseline_exp_full_frame_s": _median_s(lambda: np.exp(x))}
    t0 = time.perf_counter()
    camera_view(camera, target)
    out["view_build_once_s"] = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    for shape in ("round", "faceted", "streaky"):
        spot = flux_spot(h, pose, s, 900.0, target, shape=shape)
        out[f"render_{shape}_s"] = _median_s(
            lambda sp=spot: render_frame(camera, target, [sp], rng=rng)
        )
    out["render_dark_s"] = _median_s(lambda: render_frame(camera, target, [], rng=rng))
    base = out["baseline_exp_full_frame_s"]
    out.update(
        {k[:-2] + "_x_baseline": v / base for k, v in list(out.items()) if k.startswith("render_")}
    )
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
