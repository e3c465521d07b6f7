"""Spot detection on the real Jülich target: composites of real empty targets and flux images.

Every frame is :func:`sim.real_targets.composite` of an empty target from the TEST split
(by a hash of its file name, :func:`sim.real_targets.split_names`) and a flux image from
the test split of the flux images, with random contrast (added peak 0.2-1.5x the local
background), size, shape, rotation, position (partly off the target too), shadow,
exposure gain up to saturation, 8-bit quantisation and noise. The truth is the centroid
of the flux that lands on the target. The frames are the rectified 256 x 256 crops the
data comes as; the registration is the four crop corners (0,0 255,0 255,255 0,255) and a
1 m x 1 m target, as ``heliostat detect --corners ... --target-size 1 1`` would use.

Methods (same frames, same run):

* ``classical_dark_board``: :func:`heliostat.vision.detect_spot` (the dark-board detector,
  no sun-off frame) — the baseline of the issue;
* ``sunlit``: :func:`heliostat.vision.sunlit.detect_spot_sunlit` (its default: the
  centroid of the spot's core, the light above half its peak);
* ``sunlit_whole``: the same at the whole-flux level (``--centroid whole``);
* ``sunlit_empty_target``: the same given another empty target image of the SAME panel
  set (a different frame from the test split, i.e. another exposure/shadow state);
  ``n/a`` unless ``--with-empty``;
* ``ten_line``: smooth (sigma 3 px), threshold halfway between the median and the peak,
  moments of the blob holding the peak — the issue's ten-line script's recipe;
* ``onnx``: :func:`heliostat.ml.spot_model.detect_spot_onnx` (trained on simulated dark
  boards; it rectifies any registered frame to 64 x 64, so it runs here);
* ``onnx_real``: :func:`heliostat.ml.spot_real.detect_spot_onnx_real` (trained on
  TRAIN-split composites of the real targets, ``docs/ml.md``).

Errors are in pixels of the 256 px crop and as a fraction of the target width (255 px
between the corner pixels). ``no_spot``: the method returned no centroid. ``wrong_spot``:
a centroid more than ``--wrong-fraction`` (default 0.1) of the target width from the truth
(further than any plausible centroid error: the method measured something else). Errors
of frames without a centroid count as infinite in the percentiles. Two truths: the
centroid of the whole flux on the target (``all``) and of its core, the light above half
its peak (``all_vs_core_truth``); ``by_condition`` scores each method against the point
it measures (``measures``).

Time: per frame, best of repeats, as a ratio to one pass over the same frame
(``cv2.sumElems``), as ``bench/vision.py`` does.

"Simulator's conditions" (``sim_check``): the sunlit detector on ``bench/vision.py``'s
accuracy frames (simulated dark board + spot, no dark frame), against the dark-board
detector on the same frames, and what ``heliostat detect --background auto`` picks there.

Usage::

    .venv/bin/python bench/vision_real.py --real-dir /work/shared/real --frames 600 --seed 0
    .venv/bin/python bench/vision_real.py --split train --frames 300   # for tuning only
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from functools import partial
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from heliostat.bench.timing import best_time_s  # noqa: E402
from heliostat.vision import detect_spot, register_corners  # noqa: E402
from heliostat.vision.sunlit import (  # noqa: E402
    CENTROID_LEVELS,
    SunlitOptions,
    board_is_sunlit,
    detect_spot_sunlit,
)
from sim import real_targets as RT  # noqa: E402

#: Best mean time of 3 runs of 3 calls (bench.timing). [s]
_best = partial(best_time_s, n=3, repeats=3)


WIDTH_PX = 255.0  # between the corner pixels 0 and 255
WHOLE = CENTROID_LEVELS["whole"]
#: The point each method measures; its ``by_condition`` table is scored against that
#: truth (``all`` is against the whole flux, ``all_vs_core_truth`` against the core, for
#: every method). The threshold recipes measure a core; the learned models were trained
#: on the whole flux.
CORE_METHODS = {"sunlit", "sunlit_empty_target", "ten_line"}


def ten_line(img: np.ndarray) -> tuple[float, float] | None:
    """Rectified crop -> threshold halfway median..peak -> moments of the peak's blob."""
    return RT.threshold_centroid_px(img)


def _registration():
    return register_corners([[0, 0], [255, 0], [255, 255], [0, 255]], 1.0, 1.0, (256, 256))


def _methods(reg, with_onnx: bool):
    def classical(img, _ref):
        r = detect_spot(img, reg)
        return (r.u_px, r.v_px, r.flags) if r.ok else None

    def sunlit(img, _ref):
        r = detect_spot_sunlit(img, reg)
        return (r.u_px, r.v_px, r.flags) if r.ok else None

    def sunlit_whole(img, _ref):
        r = detect_spot_sunlit(img, reg, options=SunlitOptions(rel_threshold=WHOLE))
        return (r.u_px, r.v_px, r.flags) if r.ok else None

    def sunlit_ref(img, ref):
        r = detect_spot_sunlit(img, reg, empty_target=ref)
        return (r.u_px, r.v_px, r.flags) if r.ok else None

    def tenl(img, _ref):
        c = ten_line(img)
        return (c[0], c[1], ()) if c else None

    out = {
        "classical_dark_board": classical,
        "sunlit": sunlit,
        "sunlit_whole": sunlit_whole,
        "ten_line": tenl,
    }
    if with_onnx:
        from heliostat.ml.spot_model import detect_spot_onnx

        def onnx(img, _ref):
            r = detect_spot_onnx(img, reg)
            return (r.u_px, r.v_px, r.flags) if r.ok else None

        out["onnx"] = onnx
        from heliostat.ml.spot_real import detect_spot_onnx_real

        def onnx_real(img, _ref):
            r = detect_spot_onnx_real(img, reg)
            return (r.u_px, r.v_px, r.flags) if r.ok else None

        out["onnx_real"] = onnx_real
    out["sunlit_empty_target"] = sunlit_ref
    return out


def _bins(t: RT.CompositeTruth) -> dict[str, str]:
    c = t.contrast
    return {
        "contrast": "0.2-0.5" if c < 0.5 else ("0.5-1.0" if c < 1.0 else "1.0-1.5"),
        "shadow": (
            "none" if t.shadow == "none" else ("edge_on_spot" if t.shadow_on_spot else "off_spot")
        ),
        "partly_off": (
            "no" if not t.partly_off else ("<50%" if t.on_target_fraction >= 0.5 else ">=50%")
        ),
        "saturated": "yes" if t.saturated_fraction > 0 else "no",
        "size_rms_px": "<20" if t.rms_px < 20 else ("20-35" if t.rms_px < 35 else ">=35"),
    }


def _stats(err: list[float], wrong_px: float) -> dict:
    with np.errstate(invalid="ignore"):
        return _stats_(err, wrong_px)


def _num(x: float) -> float | str:
    """A JSON-safe number: "inf" for a percentile over frames without a centroid."""
    return float(x) if math.isfinite(x) else "inf"


def _stats_(err: list[float], wrong_px: float) -> dict:
    a = np.asarray(err, float)
    fin = a[np.isfinite(a)]
    if len(a) == 0:
        return {"frames": 0}
    med, p95, mx = float(np.median(a)), float(np.percentile(a, 95)), float(a.max())
    return {
        "frames": len(a),
        "median_px": _num(med),
        "p95_px": _num(p95),
        "max_px": _num(mx),
        "median_frac_width": _num(med / WIDTH_PX),
        "p95_frac_width": _num(p95 / WIDTH_PX),
        "median_of_found_px": float(np.median(fin)) if len(fin) else None,
        "max_of_found_px": float(fin.max()) if len(fin) else None,
        "no_spot_rate": float(np.mean(~np.isfinite(a))),
        "wrong_spot_rate": float(np.mean(np.isfinite(a) & (a > wrong_px))),
    }


def _flag_table(hits: list, facts: list[dict]) -> dict:
    """Per flag, over frames with a centroid: raised when the condition holds (hit),
    raised when it does not (false), not raised when it holds (missed). Conditions:
    shadow_edge = the shadow's edge crosses the spot's core; touches_edge = over 1 % of
    the flux off the target; saturated = a core pixel clipped; low_contrast = added peak
    under 0.3 of the background."""
    out = {}
    for f in ("shadow_edge", "touches_edge", "saturated", "low_contrast"):
        hit = false = missed = 0
        for h, fa in zip(hits, facts, strict=True):
            if h is None:
                continue
            raised = f in h
            hit += raised and fa[f]
            false += raised and not fa[f]
            missed += (not raised) and fa[f]
        out[f] = {"hit": hit, "false": false, "missed": missed}
    return out


def run(args) -> dict:
    real = Path(args.real_dir)
    empties = RT.list_images(real, "empty")
    fluxes = RT.list_images(real, "flux")
    split_e = RT.split_names([p.name for p in empties])
    split_f = RT.split_names([p.name for p in fluxes])
    e_names = split_e[args.split]
    f_names = split_f[args.split]
    e_dir, f_dir = empties[0].parent, fluxes[0].parent
    reg = _registration()
    methods = _methods(reg, with_onnx=not args.no_onnx)
    if not args.with_empty:
        methods.pop("sunlit_empty_target")
    rng = np.random.default_rng(args.seed)
    per: dict[str, list] = {k: [] for k in methods}
    per_core: dict[str, list] = {k: [] for k in methods}
    truths: list[dict] = []
    facts: list[dict] = []
    flag_hits: dict[str, list] = {k: [] for k in methods}
    flags_hit: dict[str, dict[str, int]] = {k: {} for k in methods}
    timing_frames = []
    for i in range(args.frames):
        en = e_names[int(rng.integers(len(e_names)))]
        fn = f_names[int(rng.integers(len(f_names)))]
        e = RT.load_gray(e_dir / en)
        fl = RT.load_gray(f_dir / fn)
        img, t = RT.composite(e, fl, rng)
        ref = None
        if args.with_empty:
            rn = e_names[int(rng.integers(len(e_names)))]
            ref = RT.load_gray(e_dir / rn)
        b = _bins(t)
        truths.append(b)
        facts.append(
            {
                "shadow_edge": t.shadow_on_spot,
                "touches_edge": t.partly_off,
                "saturated": t.saturated_fraction > 0,
                "low_contrast": t.contrast < 0.3,
            }
        )
        if i < args.timing_frames:
            timing_frames.append((img, ref))
        for k, fn_ in methods.items():
            r = fn_(img, ref)
            if r is None:
                per[k].append(math.inf)
                per_core[k].append(math.inf)
                flag_hits[k].append(None)
                continue
            per[k].append(math.hypot(r[0] - t.u_px, r[1] - t.v_px))
            per_core[k].append(math.hypot(r[0] - t.u_core_px, r[1] - t.v_core_px))
            flag_hits[k].append(set(r[2]))
            for fl_ in r[2]:
                flags_hit[k][fl_] = flags_hit[k].get(fl_, 0) + 1
    wrong_px = args.wrong_fraction * WIDTH_PX
    out: dict = {
        "frames": args.frames,
        "seed": args.seed,
        "split": args.split,
        "split_rule": "sha256('v1' + file name) -> train < 0.6 <= val < 0.8 <= test",
        "n_empty_in_split": len(e_names),
        "n_flux_in_split": len(f_names),
        "frame": "256x256 8-bit rectified crop; target width 255 px (corner pixels 0..255)",
        "truth": "centroid of the flux on the target (after the shadow, before clipping)",
        "truth_core": "centroid of the flux above half its peak (the spot's core; "
        "'all_vs_core_truth')",
        "wrong_spot": f"error > {args.wrong_fraction} target width ({wrong_px:.1f} px)",
        "no_spot": "the method returned no centroid (error counted as inf)",
        "methods": {},
    }
    conds = list(truths[0]) if truths else []
    for k in methods:
        own = per_core[k] if k in CORE_METHODS else per[k]
        d = {
            "measures": "core" if k in CORE_METHODS else "whole",
            "all": _stats(per[k], wrong_px),
            "all_vs_core_truth": _stats(per_core[k], wrong_px),
            "by_condition": {},
            "flags": flags_hit[k],
        }
        for c in conds:
            levels = sorted({tb[c] for tb in truths})
            d["by_condition"][c] = {
                lv: _stats([e for e, tb in zip(own, truths, strict=True) if tb[c] == lv], wrong_px)
                for lv in levels
            }
        d["flag_vs_truth"] = _flag_table(flag_hits[k], facts)
        out["methods"][k] = d
    # time, as a ratio to one pass over the same frame
    tm: dict[str, list[float]] = {k: [] for k in methods}
    base = []
    for img, ref in timing_frames:
        b0 = _best(lambda img=img: cv2.sumElems(img), n=200)
        base.append(b0)
        for k, fn_ in methods.items():
            tm[k].append(_best(lambda fn_=fn_, img=img, ref=ref: fn_(img, ref)))
    if timing_frames:
        out["time"] = {
            "frames_timed": len(timing_frames),
            "one_pass_cv2_sumElems_us": 1e6 * float(np.median(base)),
            **{
                k: {
                    "median_ms": 1e3 * float(np.median(v)),
                    "ratio_to_one_pass": float(np.median(np.asarray(v) / np.asarray(base))),
                }
                for k, v in tm.items()
            },
        }
    if args.sim_check:
        out["sim_check"] = sim_check(args.sim_frames, args.seed)
    out["real_samples"] = real_samples(real, reg)
    out["paint_raw_frames"] = paint_raw_frames(real)
    out["helios_vs_flux_image"] = helios_vs_flux_image(real)
    return out


#: The raw PAINT frames: file, the target's corner-mark points (UL, UR, LR, LL) [px] as
#: ``register_marks`` finds them (tests/test_vision_marks.py), the surveyed size [m].
PAINT_RAW = {
    "stj_upper": ("stj_image.png", [(127.02, 484.09), (1296.04, 446.03), (1323.0, 1405.06),
                                    (155.99, 1441.85)], (8.61, 7.22)),
    "stj_lower": ("stj_image.png", [(155.99, 1441.85), (1323.0, 1405.06), (1360.96, 2374.93),
                                    (179.6, 2409.08)], (8.63, 7.21)),
    "mft": ("mft_image.png", [(1103.96, 122.01), (2444.97, 98.02), (2479.0, 1481.99),
                              (1093.44, 1507.98)], (5.40, 6.39)),
}  # fmt: skip


def paint_raw_frames(real: Path) -> dict:
    """Raw camera frames of the Jülich towers (colour, the target in perspective), as
    ``heliostat detect FRAME --corners ... --target-size W H`` sees them: the sunlit
    detector's centroid (core and whole) against the ten-line recipe on the rectified
    target (512 x 512 warp), in target-plane metres. No truth: the plant's own measurement
    of these frames is not published."""
    raw = real / "paint" / "raw"
    out = {}
    for name, (fname, corners, (w_m, h_m)) in PAINT_RAW.items():
        if not (raw / fname).is_file():
            continue
        colour = cv2.imread(str(raw / fname))
        reg = register_corners(corners, w_m, h_m, colour.shape[1::-1])
        ten = RT.rectified_threshold_centroid_m(colour, corners, w_m, h_m)
        row = {"ten_line_xy_m": None if ten is None else [round(v, 4) for v in ten]}
        for lvl, thr in CENTROID_LEVELS.items():
            r = detect_spot_sunlit(colour, reg, options=SunlitOptions(rel_threshold=thr))
            row[f"sunlit_{lvl}_xy_m"] = [round(r.x_m, 4), round(r.y_m, 4)] if r.ok else None
            row[f"sunlit_{lvl}_flags"] = list(r.flags)
            if r.ok and ten is not None:
                row[f"sunlit_{lvl}_minus_ten_line_m"] = round(
                    math.hypot(r.x_m - ten[0], r.y_m - ten[1]), 4
                )
        out[name] = row
    return out


def helios_vs_flux_image(real: Path) -> dict:
    """Which centroid the plant's classical measurement (HeliOS) reports: PAINT's records
    give HeliOS's spot (WGS84) and UTIS's flux image of the same frame (256 x 256, the
    target's corner marks at the image corners). The flux image's centroid of the whole
    light and of its core (above half the peak) are mapped onto the target plane through
    the tower file's surveyed corners and compared with HeliOS's point. [m]"""
    import json as _json

    from heliostat.calibration.paint import load_tower

    root = real / "paint"
    towers = sorted(root.glob("*-tower-measurements.json"))
    if not towers:
        return {}
    site, targets = load_tower(towers[0])
    out = {}
    for rec in sorted(root.glob("*/*-calibration-properties.json")):
        flux_png = rec.with_name(rec.name.replace("-calibration-properties.json", "-flux.png"))
        if not flux_png.is_file():
            continue
        d = _json.loads(rec.read_text())
        tgt = targets[d["target_name"]]
        f = RT.load_gray(flux_png).astype(np.float64)
        rows, cols = f.shape
        reg = register_corners(
            [[0, 0], [cols, 0], [cols, rows], [0, rows]], tgt.width_m, tgt.height_m, (cols, rows)
        )
        vv, uu = np.indices(f.shape, dtype=np.float64)
        pts = {}
        for lvl, w in (("whole", f), ("core", np.where(f > 0.5 * f.max(), f, 0.0))):
            uv = [[(w * uu).sum() / w.sum() + 0.5, (w * vv).sum() / w.sum() + 0.5]]
            pts[lvl] = reg.pixel_to_plane(uv)[0]
        lat, lon, alt = d["focal_spot"]["HeliOS"]
        helios = tgt.enu_to_plane(site.wgs84_to_enu(lat, lon, alt))
        out[rec.name.split("-")[0]] = {
            "target": d["target_name"],
            "helios_xy_m": [round(float(v), 4) for v in helios],
            **{
                f"flux_{lvl}_minus_helios_m": round(float(np.hypot(*(p - helios[:2]))), 4)
                for lvl, p in pts.items()
            },
        }
    return out


def real_samples(real: Path, reg) -> dict:
    """The 9 real samples (no truth): each method's centroid, and the sunlit detector's
    distance from the ten-line reference."""
    rows = {}
    for p in RT.list_images(real, "samples"):
        img = RT.load_gray(p)
        s = detect_spot_sunlit(img, reg)
        c = detect_spot(img, reg)
        t = ten_line(img)
        rows[p.name] = {
            "sunlit_uv_px": [round(s.u_px, 2), round(s.v_px, 2)] if s.ok else None,
            "sunlit_flags": list(s.flags),
            "sunlit_n_pixels": s.n_pixels,
            "ten_line_uv_px": [round(t[0], 2), round(t[1], 2)] if t else None,
            "sunlit_minus_ten_line_px": (
                round(math.hypot(s.u_px - t[0], s.v_px - t[1]), 2) if s.ok and t else None
            ),
            "classical_dark_board_ok": c.ok,
            "classical_dark_board_n_pixels": c.n_pixels,
        }
    return rows


def sim_check(frames: int, seed: int) -> dict:
    """The sunlit detector on the simulator's dark-board frames (no dark frame)."""
    sys.path.insert(0, str(ROOT / "bench"))
    import vision as bv  # bench/vision.py

    from sim import camera as simcam

    _field, tgt, cam, reg, _, black = bv._scene(1280, 1024, 12)
    rng = np.random.default_rng([seed, 7])
    ps0 = float(reg.pixel_scale_m([[0.0, 0.0]])[0])
    res: dict[str, list[float]] = {"classical_dark_board": [], "sunlit": []}
    auto_sunlit = 0
    for i in range(frames):
        shape = ("round", "streaky", "faceted")[i % 3]
        spot = bv._random_spot(rng, ps0, shape, 2.4)
        img, (truth,) = simcam.render_frame(cam, tgt, [spot], rng=rng)
        tx, ty = truth.centroid_xy_m
        for k, fn in (("classical_dark_board", detect_spot), ("sunlit", detect_spot_sunlit)):
            r = fn(img, reg, black_level_dn=black, bit_depth=12)
            e = math.hypot(r.x_m - tx, r.y_m - ty) / ps0 if r.ok else math.inf
            res[k].append(e)
        auto_sunlit += board_is_sunlit(img, reg, black_level_dn=black, bit_depth=12)
    return {
        "frames": frames,
        "scene": "bench/vision.py accuracy scene (1280x1024 12-bit, dark board, no dark frame)",
        "error_unit": "px equivalent at the target centre",
        **{
            k: {
                "median_px": float(np.median(v)),
                "p95_px": float(np.percentile(v, 95)),
                "no_spot_rate": float(np.mean(~np.isfinite(np.asarray(v)))),
            }
            for k, v in res.items()
        },
        "auto_picks_sunlit_fraction": auto_sunlit / max(frames, 1),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--real-dir", default=str(RT.default_real_dir(ROOT)))
    p.add_argument("--frames", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.add_argument("--wrong-fraction", type=float, default=0.1)
    p.add_argument("--timing-frames", type=int, default=10)
    p.add_argument("--no-onnx", action="store_true")
    p.add_argument("--with-empty", action="store_true", help="also run with an empty-target frame")
    p.add_argument("--sim-check", action="store_true")
    p.add_argument("--sim-frames", type=int, default=60)
    args = p.parse_args(argv)
    print(json.dumps(run(args), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
