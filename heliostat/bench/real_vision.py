"""Classical versus learned on the REAL Jülich target: composites and the real samples.

Two measurements (``heliostat bench compare --real DIR``; ``DIR`` the real-data folder,
``<repo>/../shared/real`` by convention):

* **held-out composites** — real empty targets and real flux images of the TEST split
  (:func:`sim.real_targets.split_names`, salt ``v1``; neither the classical detector's
  tuning nor the model's training saw them) composited by
  :func:`sim.real_targets.composite`; truth = the centroid of the flux on the target,
  of the whole flux or of its core (above half the peak), whichever the method measures
  (:data:`TRUTH_OF`).
  Per method: median / 95th percentile / maximum error in pixels of the 256 px image and
  as a fraction of the target width (255 px between the corner pixels), the no-spot rate
  (no centroid returned; its error counts as infinite in the percentiles), the
  wrong-spot rate (a centroid more than ``wrong_fraction`` of the width from the truth),
  the false-spot rate on composites with no spot (same shadows, gains and noise), and
  the time per frame (best of repeats);
* **the 9 real samples** (``utis/realSamples``) — no truth exists: each method's centre,
  the distance between the two whole-flux centres per sample [px and fraction of the
  width], their mean offset (onnx_real − sunlit_whole, u and v [px]), and a mosaic PNG
  with the centres marked. The composites' median signed errors (u, v) say whether such
  an offset is a known bias of either method.

Methods: ``sunlit`` = :func:`heliostat.vision.sunlit.detect_spot_sunlit` (the classical
sunlit-board detector; its default measures the spot's core), ``sunlit_whole`` = the same
at the whole-flux level, and ``onnx_real`` =
:func:`heliostat.ml.spot_real.detect_spot_onnx_real` (the model trained on TRAIN-split
composites, whose truth is the whole flux). The table's ``classical`` column is
``sunlit_whole``: the two measure the same point. All get the same frame and the
registration of the 256 x 256 rectified crop (corners at pixels 0 and 255, 1 m x 1 m), no
sun-off frame, no aim point.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from heliostat.bench.timing import best_time_s

__all__ = ["RealVisionSettings", "overlay_mosaic", "real_comparison", "real_rows"]

WIDTH_PX = 255.0
#: Marker colours (BGR) of the methods in the mosaic.
COLOURS = {"sunlit_whole": (0, 0, 255), "onnx_real": (0, 200, 0), "sunlit": (0, 200, 255)}


@dataclass(frozen=True, slots=True)
class RealVisionSettings:
    """What the real-background comparison runs.

    Attributes
    ----------
    frames : int
        TEST-split composites with a spot.
    empty_frames : int
        TEST-split composites with no spot (false-spot rate; the CLI uses a tenth of
        ``frames``).
    seed : int
        Seed of the composites (the model card's test set uses 4711).
    wrong_fraction : float
        A centroid further than this fraction of the target width is a wrong spot. [1]
    timing_frames : int
        Frames timed per method (best of 3 repeats each).
    """

    frames: int = 200
    empty_frames: int = 40
    seed: int = 4711
    wrong_fraction: float = 0.1
    timing_frames: int = 5


def _methods(reg) -> dict:
    from heliostat.ml.spot_real import detect_spot_onnx_real
    from heliostat.vision.sunlit import CENTROID_LEVELS, SunlitOptions, detect_spot_sunlit

    whole = SunlitOptions(rel_threshold=CENTROID_LEVELS["whole"])
    return {"sunlit": lambda img: detect_spot_sunlit(img, reg),
            "sunlit_whole": lambda img: detect_spot_sunlit(img, reg, options=whole),
            "onnx_real": lambda img: detect_spot_onnx_real(img, reg)}  # fmt: skip


#: The point each method measures, so each is scored against its own truth: the sunlit
#: detector's default is the spot's core (light above half its peak,
#: :data:`heliostat.vision.sunlit.CENTROID_LEVELS`); its ``whole`` level and the learned
#: model (trained on the composites' whole-flux centroid) measure the whole flux.
TRUTH_OF = {"sunlit": "core", "sunlit_whole": "whole", "onnx_real": "whole"}


def _truth_uv(t, kind: str) -> tuple[float, float]:
    return (t.u_core_px, t.v_core_px) if kind == "core" else (t.u_px, t.v_px)


def _stats(err: list[float], wrong_px: float) -> dict:
    a = np.asarray(err, float)
    fin = a[np.isfinite(a)]

    def pct(q):
        # an order statistic (no interpolation): a missed frame's infinite error stays inf
        return float(np.quantile(a, q / 100.0, method="inverted_cdf")) if a.size else math.nan

    med, p95 = pct(50), pct(95)
    mx = float(a.max()) if a.size else math.nan
    return {
        "frames": int(a.size),
        "median_px": med,
        "p95_px": p95,
        "max_px": mx,
        "median_frac_width": med / WIDTH_PX,
        "p95_frac_width": p95 / WIDTH_PX,
        "max_frac_width": mx / WIDTH_PX,
        "max_of_found_px": float(fin.max()) if fin.size else math.nan,
        "no_spot_rate": float(np.mean(~np.isfinite(a))) if a.size else math.nan,
        "wrong_spot_rate": float(np.mean(np.isfinite(a) & (a > wrong_px))) if a.size else math.nan,
    }


def _condition(t) -> dict[str, str]:
    """The composite's conditions, binned (as in ``bench/vision_real.py``)."""
    c = t.contrast
    return {
        "contrast": "0.2-0.5" if c < 0.5 else ("0.5-1.0" if c < 1.0 else "1.0-1.5"),
        "shadow": "none"
        if t.shadow == "none"
        else ("edge_on_spot" if t.shadow_on_spot else "off_spot"),
        "partly_off": "yes" if t.partly_off else "no",
        "saturated": "yes" if t.saturated_fraction > 0 else "no",
    }


def composite_comparison(real_dir: str | Path, s: RealVisionSettings, progress=None) -> dict:
    """The methods on TEST-split composites; each method's error against the composite's
    truth of the point it measures (:data:`TRUTH_OF`: the core or the whole flux)."""
    from heliostat.ml.training.real_data import RealDataSpec, draw_composites, registration_256

    reg = registration_256()
    methods = _methods(reg)
    err: dict[str, list[float]] = {k: [] for k in methods}
    signed: dict[str, list[tuple[float, float]]] = {k: [] for k in methods}
    false_spot = {k: 0 for k in methods}
    timing: dict[str, list[float]] = {k: [] for k in methods}
    conds: list[dict[str, str]] = []
    spec = RealDataSpec(split="test", n=s.frames, seed=s.seed, p_empty=0.0)
    for i, (frame, t, _, _) in enumerate(draw_composites(real_dir, spec)):
        if progress and i % 50 == 0:
            progress(f"real composites {i}/{s.frames} ...")
        conds.append(_condition(t))
        for k, fn in methods.items():
            r = fn(frame)
            tu, tv = _truth_uv(t, TRUTH_OF[k])
            err[k].append(math.hypot(r.u_px - tu, r.v_px - tv) if r.ok else math.inf)
            if r.ok:
                signed[k].append((r.u_px - tu, r.v_px - tv))
            if i < s.timing_frames:
                timing[k].append(best_time_s(lambda fn=fn, frame=frame: fn(frame)))
    spec0 = RealDataSpec(split="test", n=s.empty_frames, seed=s.seed + 1, p_empty=1.0)
    for frame, _, _, _ in draw_composites(real_dir, spec0):
        for k, fn in methods.items():
            false_spot[k] += bool(fn(frame).ok)
    wrong_px = s.wrong_fraction * WIDTH_PX
    out = {
        "split": "test (sha256('v1' + file name) >= 0.8)",
        "frames": s.frames,
        "empty_frames": s.empty_frames,
        "seed": s.seed,
        "wrong_spot": f"error > {s.wrong_fraction} target width ({wrong_px:.1f} px)",
        "methods": {},
    }
    for k in methods:
        out["methods"][k] = {
            "truth": TRUTH_OF[k],
            **_stats(err[k], wrong_px),
            "false_spot_rate_on_empty": false_spot[k] / s.empty_frames if s.empty_frames else None,
            "time_per_frame_ms": 1e3 * float(np.median(timing[k])) if timing[k] else math.nan,
            "median_signed_error_uv_px": (
                np.median(np.asarray(signed[k]), axis=0).tolist() if signed[k] else None
            ),
            "by_condition": {
                c: {
                    lv: {
                        key: v
                        for key, v in _stats(
                            [e for e, cd in zip(err[k], conds, strict=True) if cd[c] == lv],
                            wrong_px,
                        ).items()
                        if key
                        in ("frames", "median_px", "p95_px", "wrong_spot_rate", "no_spot_rate")
                    }
                    for lv in sorted({cd[c] for cd in conds})
                }
                for c in (conds[0] if conds else {})
            },
        }
    return out


def real_samples(real_dir: str | Path) -> tuple[list[str], list[np.ndarray], dict]:
    """Both methods on the real samples: centres per sample and their distances."""
    from heliostat.ml.training.real_data import registration_256
    from sim import real_targets as rt

    reg = registration_256()
    methods = _methods(reg)
    paths = rt.list_images(real_dir, "samples")
    names, images, per = [], [], []
    for p in paths:
        img = rt.load_gray(p)
        names.append(p.name)
        images.append(img)
        row: dict = {"sample": p.name}
        for k, fn in methods.items():
            r = fn(img)
            row[k] = [r.u_px, r.v_px] if r.ok else None
            row[f"{k}_flags"] = list(r.flags)
        # the two methods measuring the same point (the whole flux)
        a, b = row["sunlit_whole"], row["onnx_real"]
        d = math.hypot(a[0] - b[0], a[1] - b[1]) if a and b else math.nan
        row["distance_px"] = d
        row["distance_frac_width"] = d / WIDTH_PX
        c = row["sunlit"]
        row["onnx_real_to_sunlit_core_px"] = (
            math.hypot(c[0] - b[0], c[1] - b[1]) if c and b else math.nan
        )
        per.append(row)
    d = np.array([r["distance_px"] for r in per])
    fin = d[np.isfinite(d)]
    both = [r for r in per if r["sunlit_whole"] and r["onnx_real"]]
    offs = np.array([np.subtract(r["onnx_real"], r["sunlit_whole"]) for r in both]).reshape(-1, 2)
    summary = {
        "samples": len(per),
        "mean_offset_uv_px": offs.mean(axis=0).tolist() if len(offs) else None,
        "both_found": int(fin.size),
        "median_distance_px": float(np.median(fin)) if fin.size else math.nan,
        "max_distance_px": float(fin.max()) if fin.size else math.nan,
        "median_distance_frac_width": float(np.median(fin)) / WIDTH_PX if fin.size else math.nan,
        "max_distance_frac_width": float(fin.max()) / WIDTH_PX if fin.size else math.nan,
        "median_onnx_real_to_sunlit_core_px": float(
            np.nanmedian([r["onnx_real_to_sunlit_core_px"] for r in per])
        ),
        "per_sample": per,
        "note": "no truth exists for the real samples: this is how far the two methods' "
        "answers for the whole flux (sunlit_whole, onnx_real) lie from each other, not an "
        "error of either; 'sunlit' (the default, the spot's core) is another point",
    }
    return names, images, summary


def overlay_mosaic(images: list[np.ndarray], rows: list[dict], tile_px: int = 256):
    """A BGR mosaic (3 per row) of the samples with each method's centre marked:
    ``sunlit`` a red +, ``onnx_real`` a green circle; the distance in the corner."""
    import cv2

    tiles = []
    for img, row in zip(images, rows, strict=True):
        f = tile_px / img.shape[1]
        t = cv2.cvtColor(cv2.resize(img, (tile_px, tile_px), interpolation=cv2.INTER_AREA),
                         cv2.COLOR_GRAY2BGR)  # fmt: skip
        for k, col in COLOURS.items():
            c = row.get(k)
            if not c:
                continue
            p = (int(round(c[0] * f)), int(round(c[1] * f)))
            if k == "sunlit_whole":
                cv2.drawMarker(t, p, col, cv2.MARKER_CROSS, 22, 2)
            elif k == "sunlit":
                cv2.drawMarker(t, p, col, cv2.MARKER_TILTED_CROSS, 12, 2)
            else:
                cv2.circle(t, p, 9, col, 2)
        d = row["distance_px"]
        label = f"{row['sample']}  d={d:.1f}px" if math.isfinite(d) else f"{row['sample']}  d=n/a"
        cv2.putText(t, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 3)
        cv2.putText(t, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1)
        tiles.append(t)
    while len(tiles) % 3:
        tiles.append(np.zeros_like(tiles[0]))
    grid = np.vstack([np.hstack(tiles[i : i + 3]) for i in range(0, len(tiles), 3)])
    legend = np.full((22, grid.shape[1], 3), 255, np.uint8)
    cv2.putText(legend, "whole flux: + red sunlit (classical), o green onnx_real (learned);"
                "  x orange: sunlit core (default)", (6, 15),
                cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1)  # fmt: skip
    return np.vstack([legend, grid])


def real_comparison(
    real_dir: str | Path,
    settings: RealVisionSettings = RealVisionSettings(),  # noqa: B008 - frozen
    out_dir: str | Path | None = None,
    progress=None,
) -> dict:
    """Both measurements; with ``out_dir`` the overlay mosaic is written there as
    ``real_samples_overlay.png``. Returns one JSON-ready dict."""
    from heliostat.ml.registry import load_card

    real = Path(real_dir)
    if not (real / "utis").is_dir():
        from heliostat.errors import InputError

        raise InputError(f"--real {real}: expected the real-data folder (with utis/) there")
    t0 = time.perf_counter()
    comp = composite_comparison(real, settings, progress)
    names, images, agree = real_samples(real)
    out: dict = {"real_dir": str(real), "composites": comp, "real_samples": agree}
    if out_dir is not None:
        import cv2

        p = Path(out_dir) / "real_samples_overlay.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(p), overlay_mosaic(images, agree["per_sample"], 192),
                    [cv2.IMWRITE_PNG_COMPRESSION, 9])  # fmt: skip
        out["overlay_png"] = str(p)
    card = load_card("spot_real")
    out["model"] = {
        "name": "spot_real",
        "sha256": card["sha256"],
        "training_energy_j": card["training"]["energy_j"],
        "training_data_energy_j": card["training_data"]["generation"]["energy_j"],
        "training_wall_time_s": card["training"]["wall_time_s"],
    }
    out["wall_time_s"] = time.perf_counter() - t0
    return out


def real_rows(real: dict) -> list[dict]:
    """Table rows (columns ``classical`` = sunlit, ``ml`` = onnx_real)."""
    c = real["composites"]["methods"]
    rows = []

    def val(v, scale):
        # an infinite percentile means missed frames reach it: say so, not "nan"
        return "inf" if v == math.inf else v * scale

    def add(metric, unit, key, scale=1.0):
        rows.append({"metric": metric, "unit": unit,
                     "classical": val(c["sunlit_whole"][key], scale),
                     "ml": val(c["onnx_real"][key], scale)})  # fmt: skip

    n = real["composites"]["frames"]
    add(f"real composites ({n}, test split): error median", "px", "median_px")
    add("  error p95", "px", "p95_px")
    add("  error max", "px", "max_px")
    add("  error median", "% width", "median_frac_width", 100.0)
    add("  error p95", "% width", "p95_frac_width", 100.0)
    add("  no-spot rate", "%", "no_spot_rate", 100.0)
    add("  wrong-spot rate", "%", "wrong_spot_rate", 100.0)
    add("  false spot on empty targets", "%", "false_spot_rate_on_empty", 100.0)
    add("  time per frame", "ms", "time_per_frame_ms")
    core = c["sunlit"]
    rows.append({"metric": "  classical default (the spot's core) vs the core's truth: median",
                 "unit": "px", "classical": val(core["median_px"], 1.0), "ml": ""})  # fmt: skip
    rows.append({"metric": "  classical default vs the core's truth: p95", "unit": "px",
                 "classical": val(core["p95_px"], 1.0), "ml": ""})  # fmt: skip
    a = real["real_samples"]
    n = a["samples"]
    rows.append({"metric": f"real samples ({n}): distance between the methods, median",
                 "unit": "px", "classical": "", "ml": a["median_distance_px"]})  # fmt: skip
    rows.append({"metric": "  distance between the methods, max", "unit": "px",
                 "classical": "", "ml": a["max_distance_px"]})  # fmt: skip
    rows.append({"metric": "  learned vs the classical core (default), median", "unit": "px",
                 "classical": "", "ml": a["median_onnx_real_to_sunlit_core_px"]})  # fmt: skip
    m = real["model"]
    energy = m["training_energy_j"] + m["training_data_energy_j"]
    rows.append({"metric": "spot_real training energy (data + training)", "unit": "J",
                 "classical": 0.0, "ml": energy})  # fmt: skip
    return rows
