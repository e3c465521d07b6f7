"""Registration by corner marks: accuracy on the real Jülich frames and on a drawn scene.

(a) Real raw frames (``../shared/real/paint/raw``). The rough guess is an operator's
clicks near each mark's corner (``ROUGH_CLICKS`` below, picked by eye on zoomed views of
the frames; PAINT's crops were not used), perturbed in every trial by a random offset of
up to ``--rough-frac`` (default 2 %) of the target's size in pixels, seeded. From each
guess :func:`heliostat.vision.marks.register_marks` finds the corners; the frame is
warped to 512 x 512 exactly as PAINT does (``cv2.getPerspectiveTransform`` of the marks
UL, UR, LL, LR onto (0, 0), (512, 0), (0, 512), (512, 512), ``cv2.warpPerspective`` with
bilinear interpolation) and compared with PAINT's own crop by normalised cross-correlation
(NCC) of the grey images, and of their gradient magnitudes (``ncc_edges``, which the
smooth board and spot do not dominate, so it shows misregistration more plainly). The
same for the unrefined guess. The ceiling: the corners that maximise the NCC directly
(``cv2.findTransformECC`` with a homography, started from our corners) — these are
PAINT's own marker points as far as its crop can tell, and we report our corners'
distance from them. ``102067-raw.png`` has no crop; it is the multi-focus tower camera
again, so with a fixed camera its marks should sit where they are in ``mft_image.png``.

(b) Simulator (:mod:`sim.marks_scene`): two stacked targets with L and T marks, random
perspective views, blur, noise, a saturating spot, a shadow band and dark rails near the
marks; board texture from a real empty-target image. Corner error of the found corners
against the rendered truth, from perturbed rough guesses (the drawn scene's marks are
ideal rectangles: a best case for the geometry, labelled so).

Usage (``HELIOSTAT_REAL_DIR`` points at the real data when it is not at
``<repo>/../shared/real``)::

    HELIOSTAT_REAL_DIR=/work/shared/real .venv/bin/python bench/vision_registration.py
    .venv/bin/python bench/vision_registration.py                 # JSON on stdout
    .venv/bin/python bench/vision_registration.py --trials 20 --sim-frames 12 --seed 1
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from heliostat.errors import InputError  # noqa: E402
from heliostat.vision.marks import refine_marks, register_marks  # noqa: E402
from sim import marks_scene  # noqa: E402
from sim.real_targets import default_real_dir  # noqa: E402

#: The real data: $HELIOSTAT_REAL_DIR, else <repo>/../shared/real (as in CI).
REAL = default_real_dir(ROOT)
RAW = REAL / "paint" / "raw"

#: An operator's rough clicks on each mark's corner point (UL, UR, LR, LL) [px], by eye
#: on 2x zoomed views of the frames; not from PAINT's crops.
ROUGH_CLICKS = {
    "stj_upper": [(128, 482), (1295.5, 445.5), (1326, 1411), (153, 1445)],
    "stj_lower": [(153, 1428), (1326, 1391), (1358, 2374), (180, 2407)],
    "mft": [(1102, 115), (2446, 96), (2481, 1482), (1091, 1501)],
}
#: Frame, PAINT crop and target size between the corner points [m] (from the tower
#: survey ``WRI1030197-tower-measurements.json``: upper 8.61 x 7.22, lower 8.63 x 7.21,
#: multi-focus 5.40 x 6.39).
CASES = {
    "stj_upper": ("stj_image.png", "stj_upper.png", (8.61, 7.22)),
    "stj_lower": ("stj_image.png", "stj_lower.png", (8.63, 7.21)),
    "mft": ("mft_image.png", "mft_crop.png", (5.40, 6.39)),
}
CROP_PX = 512
_DST = np.float32([[0, 0], [CROP_PX, 0], [CROP_PX, CROP_PX], [0, CROP_PX]])


def paint_warp(frame: np.ndarray, corners_px: np.ndarray) -> np.ndarray:
    """Warp as PAINT does: marks UL, UR, LR, LL onto the 512 x 512 crop's corners."""
    h = cv2.getPerspectiveTransform(np.float32(corners_px), _DST)
    return cv2.warpPerspective(frame, h, (CROP_PX, CROP_PX))


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64) - a.mean()
    b = b.astype(np.float64) - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def grad_mag(img: np.ndarray) -> np.ndarray:
    gx = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3)
    return np.hypot(gx, gy)


def scores(frame: np.ndarray, crop: np.ndarray, corners: np.ndarray) -> tuple[float, float]:
    w = paint_warp(frame, corners)
    return ncc(w, crop), ncc(grad_mag(w), grad_mag(crop))


def ceiling(frame: np.ndarray, crop: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Corners maximising the correlation of the warped frame with the crop (ECC)."""
    h0 = np.linalg.inv(cv2.getPerspectiveTransform(np.float32(start), _DST)).astype(np.float32)
    crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 300, 1e-8)
    _, w = cv2.findTransformECC(crop, frame, h0, cv2.MOTION_HOMOGRAPHY, crit, None, 1)
    return cv2.perspectiveTransform(_DST[None], w)[0].astype(np.float64)


def perturb(rng, corners, frac):
    c = np.asarray(corners, float)
    size = np.mean(np.hypot(*(np.roll(c, -1, 0) - c).T))
    r = frac * size * np.sqrt(rng.uniform(0, 1, 4))
    t = rng.uniform(0, 2 * np.pi, 4)
    return c + np.c_[r * np.cos(t), r * np.sin(t)]


def _stats(x) -> dict:
    x = np.asarray(x, float)
    return {
        "median": round(float(np.median(x)), 5),
        "min": round(float(np.min(x)), 5),
        "max": round(float(np.max(x)), 5),
    }


def _err_stats(e) -> dict:
    e = np.asarray(e, float)
    return {
        "median": round(float(np.median(e)), 3),
        "p95": round(float(np.percentile(e, 95)), 3),
        "max": round(float(np.max(e)), 3),
        "n": int(e.size),
    }


def bench_real(trials: int, seed: int, rough_frac: float) -> dict:
    if not RAW.is_dir():
        return {"skipped": f"{RAW} not found"}
    out: dict = {}
    found_mft = None
    for name, (frame_file, crop_file, (w_m, h_m)) in CASES.items():
        colour = cv2.imread(str(RAW / frame_file))
        frame = colour.astype(np.float32).mean(axis=2)
        crop = cv2.imread(str(RAW / crop_file)).astype(np.float32).mean(axis=2)
        rng = np.random.default_rng([seed, len(name)])
        clicks = np.array(ROUGH_CLICKS[name], float)
        # Fixed seed per case: the trials of one case are reproducible on their own.
        rough_ncc, rough_edge, ref_ncc, ref_edge, found, dt = [], [], [], [], [], []
        failures = []
        for k in range(trials):
            rough = clicks if k == 0 else perturb(rng, clicks, rough_frac)
            a, b = scores(frame, crop, rough)
            rough_ncc.append(a)
            rough_edge.append(b)
            t0 = time.perf_counter()
            try:
                fits = refine_marks(colour, rough, w_m, h_m)
            except InputError as exc:
                failures.append(str(exc))
                continue
            dt.append(time.perf_counter() - t0)
            m = register_marks(colour, rough, w_m, h_m)  # the public path, same corners
            assert np.allclose(m.corners_px, [f.uv_px for f in fits])
            c = m.corners_px
            found.append(c)
            a, b = scores(frame, crop, c)
            ref_ncc.append(a)
            ref_edge.append(b)
        found = np.array(found)
        mean_c = found.mean(axis=0)
        ceil_c = ceiling(frame, crop, mean_c)
        dist = np.hypot(*(found - ceil_c[None]).transpose(2, 0, 1))
        spread = np.hypot(*(found - mean_c[None]).transpose(2, 0, 1))
        c_ncc, c_edge = scores(frame, crop, ceil_c)
        out[name] = {
            "trials": trials,
            "failures": len(failures),
            "rough_offset_frac": rough_frac,
            "ncc_rough": _stats(rough_ncc),
            "ncc_refined": _stats(ref_ncc),
            "ncc_ceiling": round(c_ncc, 5),
            "ncc_edges_rough": _stats(rough_edge),
            "ncc_edges_refined": _stats(ref_edge),
            "ncc_edges_ceiling": round(c_edge, 5),
            "corner_to_paint_px": _err_stats(dist),
            "corner_to_paint_mean_px_by_corner": np.round(
                np.hypot(*(mean_c - ceil_c).T), 2
            ).tolist(),
            "repeatability_px": _err_stats(spread),
            "found_mean_px": np.round(mean_c, 2).tolist(),
            "paint_px": np.round(ceil_c, 2).tolist(),
            "seconds_per_refinement": round(float(np.median(dt)), 3),
        }
        if name == "mft":
            found_mft = mean_c
    # 102067-raw: the multi-focus tower camera again, no crop.
    colour = cv2.imread(str(RAW / "102067-raw.png"))
    rng = np.random.default_rng([seed, 102067])
    found = []
    for k in range(trials):
        rough = (
            np.array(ROUGH_CLICKS["mft"])
            if k == 0
            else perturb(rng, ROUGH_CLICKS["mft"], rough_frac)
        )
        found.append(register_marks(colour, rough, *CASES["mft"][2]).corners_px)
    found = np.array(found)
    out["102067_raw"] = {
        "trials": trials,
        "repeatability_px": _err_stats(np.hypot(*(found - found.mean(0)[None]).transpose(2, 0, 1))),
        "shift_from_mft_image_px_by_corner": np.round(
            np.hypot(*(found.mean(0) - found_mft).T), 2
        ).tolist(),
    }
    return out


def bench_sim(frames: int, seed: int, rough_frac: float) -> dict:
    empties = sorted(glob.glob(str(REAL / "utis" / "emptyTargetImages" / "*.png")))
    errs, shifts, fails, kinds_ok = [], [], 0, 0
    rng = np.random.default_rng(seed)
    t_render = 0.0
    for _ in range(frames):
        h = marks_scene.random_view(rng)
        empty = cv2.imread(empties[rng.integers(len(empties))], 0) if empties else None
        t0 = time.perf_counter()
        sc = marks_scene.render(rng, h, empty_target=empty)
        t_render += time.perf_counter() - t0
        for key, want in (("upper", "LLTT"), ("lower", "TTLL")):
            truth = sc.corners_px[key]
            rough = perturb(rng, truth, rough_frac)
            try:
                m = register_marks(sc.frame, rough, marks_scene.TARGET_W_M, marks_scene.TARGET_H_M)
            except InputError:
                fails += 1
                continue
            errs.extend(np.hypot(*(m.corners_px - truth).T))
            shifts.extend(np.hypot(*(rough - truth).T))
            kinds_ok += "".join(c.kind for c in m.corners) == want
    return {
        "frames": frames,
        "targets": 2 * frames,
        "failures": fails,
        "mark_kinds_right": kinds_ok,
        "rough_error_px": _err_stats(shifts),
        "corner_error_px": _err_stats(errs),
        "render_seconds_per_frame": round(t_render / max(frames, 1), 2),
        "note": "drawn marks (ideal rectangles), texture from real empty targets: best case",
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=20, help="rough guesses per real crop")
    p.add_argument("--sim-frames", type=int, default=12, help="simulated frames (2 targets each)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--rough-frac", type=float, default=0.02, help="largest rough-guess offset / target size"
    )
    a = p.parse_args(argv)
    cv2.setNumThreads(1)
    res = {
        "real": bench_real(a.trials, a.seed, a.rough_frac),
        "sim": bench_sim(a.sim_frames, a.seed, a.rough_frac),
    }
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
