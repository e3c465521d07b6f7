"""Classical sun-spot detection on a registered target.

Pipeline (pure: arrays in, a :class:`SpotResult` out):

1. **Signal.** A pixel's value is black level + response x albedo x (E_spot + E_ambient)
   on the Lambertian target, so ``image - dark`` (a sun-off frame at the same exposure)
   is response x albedo x E_spot. Dividing by a flat field (:class:`FlatField`, the
   relative response x albedo, from a sun-off frame exposed for the lit target) leaves a
   signal proportional to the spot's irradiance; without a flat field the board's paint
   non-uniformity and the printed markers weight the spot (pixels on markers are then
   left out and the result flagged ``on_marker``). Without a dark frame the ambient
   background is removed by a robust plane fitted around the spot.
2. **Coarse pass** over the target's bounding box sampled every ``stride_px`` pixels
   (1/64 of them at the default stride 8): background by median, noise by the MAD of
   neighbour differences (immune to a big spot's wings), a 3x3 Gaussian smoothing, a
   threshold of ``k_noise`` noise sigmas, a closing that joins the lumps of one faceted
   spot, and connected components. A component with two peaks separated by a deep
   saddle (multi-level thresholding) is split in two — two spots that touch; shallower
   double peaks only raise ``multiple_peaks``. The pieces are the candidate spots.
3. **Choice** of one candidate: nearest the expected position when one is given (the
   commanded aim point), else the largest integrated signal (see :func:`detect_spot`).
4. **Fine pass** at full resolution over a window around the chosen candidate (the box of
   its samples above ``rel_threshold`` of its own peak, widened by ``margin``), other
   candidates masked out: the flux-weighted centroid **in
   the target plane**. Each pixel weighs its signal times its footprint area on the
   target and sits at its target-plane position (:class:`~heliostat.vision.target.PlaneMaps`):
   signal x area is the flux the pixel sees, whereas an image-plane centroid is biased
   under perspective. No threshold is applied inside the window: truncating a streaky or
   lumpy spot's wings would move its centroid; noise adds variance there, not bias.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray

from heliostat.config import Target
from heliostat.errors import InputError
from heliostat.vision.signal import (
    FlatField,
    _coarse,
    _gray_f32,
    _pixel_noise,
    _plane_bg,
    _robust_stats,
    _saturation_level,
    prepare_flat,
    validate_frame,
)
from heliostat.vision.target import TargetRegistration

__all__ = [
    "FLAGS",
    "DetectOptions",
    "FlatField",
    "SpotResult",
    "detect_spot",
    "prepare_flat",
    "validate_frame",
]

#: Noise-amplitude gain of the coarse 3x3 Gaussian ([1 2 1]/4 per axis): sqrt(sum k^2).
_SMOOTH_NOISE_GAIN = 0.375

#: Every flag a :class:`SpotResult` may carry.
FLAGS: tuple[str, ...] = (
    "no_spot",
    "all_black",
    "all_white",
    "flat_frame",
    "low_snr",
    "saturated",
    "touches_edge",
    "multiple_candidates",
    "overlapping_spots",
    "far_from_expected",
    "on_marker",
    "multiple_peaks",
)


@dataclass(frozen=True, slots=True)
class DetectOptions:
    """Tuning of :func:`detect_spot` (defaults fit 1-4 Mpx frames, spot sigma 4-60 px).

    Attributes
    ----------
    stride_px : int
        Sampling step of the coarse pass. The smallest spot found reliably has a
        sigma of about ``stride_px / 2``. [px]
    k_noise : float
        Coarse threshold in smoothed-noise standard deviations. [1]
    rel_threshold : float
        The fine window spans the chosen spot's samples above this fraction of its own
        smoothed peak (then widened by ``margin``). [1]
    min_candidate_fraction : float
        A component counts as a candidate spot when its integrated signal is at least this
        fraction of the largest component's. [1]
    margin : float
        The fine window is the chosen component's box widened on each side by this
        fraction of its half-size plus one stride. [1]
    min_snr : float
        Below this peak SNR the result carries the ``low_snr`` flag. [1]
    max_offset_m : float or None
        With an expected position: a chosen spot farther away is flagged
        ``far_from_expected``. [m]
    deblend_contrast : float
        Two peaks of one component count as separate spots when the saddle between
        them lies below this fraction of each peak. [1]
    deblend_min_fraction : float
        ... and each holds at least this fraction of the component's signal. [1]
    peaks_contrast : float
        Separate peaks whose saddle lies below this fraction of each peak, but which are
        not split, raise the ``multiple_peaks`` flag. [1]
    dark_offset : bool
        With a dark frame, also subtract a residual offset (median of the board away from
        the spots) — for ambient light that drifted between the two frames. Off by
        default: a large spot's wings reach most of the board and bias the estimate.
    """

    stride_px: int = 8
    k_noise: float = 6.0
    rel_threshold: float = 0.05
    min_candidate_fraction: float = 0.02
    margin: float = 0.8
    min_snr: float = 10.0
    max_offset_m: float | None = None
    deblend_contrast: float = 0.2
    deblend_min_fraction: float = 0.2
    peaks_contrast: float = 0.7
    dark_offset: bool = False


@dataclass(frozen=True, slots=True)
class SpotResult:
    """The detected sun spot and its quality.

    Positions are NaN when ``ok`` is False; ``flags`` then says why.

    Attributes
    ----------
    ok : bool
        A centroid was measured (it may still carry warning flags).
    x_m, y_m : float
        Flux-weighted centroid of the spot's part on the target, target plane. [m]
    u_px, v_px : float
        That point in the (distorted) image. [px]
    e_m, n_m, u_m : float
        That point in site ENU when the target's pose is known, else NaN. [m]
    sigma_m : float
        1-sigma uncertainty of the centroid per axis from the measured pixel noise. [m]
    size_x_m, size_y_m : float
        RMS width of the spot's flux along the target's x and y axes. [m]
    peak_dn : float
        Highest background-free pixel signal in the window. [DN]
    integrated_dn : float
        Sum of background-free pixel signals over the window. [DN px]
    flux_dn_m2 : float
        Sum of background-free signal x target-plane pixel area. [DN m^2]
    snr : float
        Smoothed peak signal over the background noise of one pixel. [1]
    n_pixels : int
        Window pixels above the detection threshold. [px]
    saturated_fraction : float
        Fraction of those pixels at the saturation level. [1]
    touches_edge : bool
        Spot signal above the threshold reaches the target's edge (part may be off it).
    n_candidates : int
        Candidate spots found on the target (1 when unambiguous).
    background_dn, noise_dn : float
        Background level (after a dark frame: the residual offset) and per-pixel noise.
    flags : tuple of str
        Subset of :data:`FLAGS`. ``on_marker``: the spot reaches a printed marker; without
        a flat field the marker's pixels are left out (the centroid is biased away from
        it), with one they are measured but the dark ink makes them noisy.
        ``multiple_peaks``: the spot has separate bright parts that were not split into
        candidates (two spots too close to part, or a stray facet's image): check it.
    """

    ok: bool
    x_m: float
    y_m: float
    u_px: float
    v_px: float
    e_m: float
    n_m: float
    u_m: float
    sigma_m: float
    size_x_m: float
    size_y_m: float
    peak_dn: float
    integrated_dn: float
    flux_dn_m2: float
    snr: float
    n_pixels: int
    saturated_fraction: float
    touches_edge: bool
    n_candidates: int
    background_dn: float
    noise_dn: float
    flags: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        """Plain dict (flags as a list) for JSON."""
        return {
            f: (list(self.flags) if f == "flags" else getattr(self, f))
            for f in SpotResult.__slots__  # type: ignore[attr-defined]
        }


def _failed(
    flags: tuple[str, ...],
    *,
    bg: float = math.nan,
    noise: float = math.nan,
    n_candidates: int = 0,
    sat: float = math.nan,
    peak: float = math.nan,
) -> SpotResult:
    nan = math.nan
    return SpotResult(
        False, nan, nan, nan, nan, nan, nan, nan, nan, nan, nan, peak, nan, nan, nan, 0, sat,
        False, n_candidates, bg, noise, flags,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Coarse:
    """Result of the coarse pass (internal)."""

    sig: NDArray[np.float32]  # coarse signal (dark-/black-subtracted, flat-divided)
    sm: NDArray[np.float32]  # smoothed, background-free
    on: NDArray[np.bool_]  # samples usable for the spot (on target, not masked)
    full: NDArray[np.bool_]  # samples fully on the board (background statistics)
    labels: NDArray[np.int32]
    stats: NDArray[np.int32]
    integ: NDArray[np.float64]  # per component (label - 1)
    cu: NDArray[np.float64]  # coarse centroid column per component
    cv: NDArray[np.float64]
    cand: NDArray[np.intp]  # candidate component indices (label - 1)
    bg: float
    noise: float
    peak: float
    thr: float
    multi_peak: set[int]  # labels with separate peaks that were not split


def _signal(
    block: NDArray,
    dark_block: NDArray | None,
    gain_block: NDArray | None,
    black_level_dn: float,
) -> NDArray[np.float32]:
    sig = _gray_f32(block)
    if dark_block is not None:
        sig -= _gray_f32(dark_block)
    elif black_level_dn:
        sig -= np.float32(black_level_dn)
    if gain_block is not None:
        sig /= gain_block
    return sig


def _coarse_stage(
    roi: NDArray,
    droi: NDArray | None,
    flat: FlatField | None,
    registration: TargetRegistration,
    black_level_dn: float,
    sat: float,
    options: DetectOptions,
) -> _Coarse | SpotResult:
    s = int(options.stride_px)
    o = s // 2
    maps = registration.maps
    raw_c = _coarse(roi, s)
    nv, nu = raw_c.shape[:2]
    cov_c = maps.coverage[o::s, o::s][:nv, :nu]
    mask_markers = flat is None
    mk_c = maps.marker[o::s, o::s][:nv, :nu] if mask_markers else None
    on = cov_c > 0
    full = cov_c >= 1
    if mk_c is not None:
        on = on & ~mk_c
        full = full & ~mk_c
    if not np.any(full):
        full = on
    if not np.any(on):
        raise InputError("the registered target covers no sampled pixel: lower stride_px")
    raw_g = _gray_f32(raw_c)
    vals_raw = raw_g[full]
    if float(vals_raw.max()) <= 0.0:
        return _failed(("all_black", "no_spot"), bg=0.0, noise=0.0)
    if np.isfinite(sat) and float(np.mean(vals_raw >= sat)) > 0.5:
        return _failed(("all_white", "saturated", "no_spot"), bg=sat, noise=0.0, sat=1.0)
    gain_c = flat.gain_roi[o::s, o::s][:nv, :nu] if flat is not None else None
    dark_c = _coarse(droi, s) if droi is not None else None
    sig = _signal(raw_c, dark_c, gain_c, black_level_dn)
    bg, _ = _robust_stats(sig[full])
    noise = _pixel_noise(sig, full)
    if float(vals_raw.max() - vals_raw.min()) <= 0.0:
        return _failed(("flat_frame", "no_spot"), bg=bg, noise=0.0)
    sm = cv2.GaussianBlur(sig - np.float32(bg), (3, 3), 0, borderType=cv2.BORDER_REPLICATE)
    sm[~on] = 0.0
    noise_sm = noise * _SMOOTH_NOISE_GAIN
    peak = float(sm.max())
    if peak < options.k_noise * noise_sm:
        return _failed(("no_spot",), bg=bg, noise=noise, peak=peak)
    # Segment at the noise threshold only: a faint spot next to a bright one keeps its
    # full extent (the relative threshold sets each spot's window later).
    thr = options.k_noise * noise_sm
    binary = (sm > thr).astype(np.uint8)
    binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    binary &= on.view(np.uint8)
    n_lab, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if n_lab <= 1:
        return _failed(("no_spot",), bg=bg, noise=noise, peak=peak)
    w_pos = np.maximum(sm, 0.0)
    integ = np.bincount(labels.ravel(), weights=w_pos.ravel(), minlength=n_lab)[1:]
    # Two spots close together merge at the low threshold: split components whose
    # brightness has two well-separated peaks (a deep saddle between them).
    n_new = n_lab
    new_boxes = []
    multi_peak: set[int] = set()
    for j in np.flatnonzero(integ >= options.min_candidate_fraction * integ.max()):
        parts, multi = _deblend(sm, labels, j + 1, stats[j + 1], thr, options)
        if multi:
            multi_peak.add(j + 1)
        if parts is None:
            continue
        for k, part in enumerate(parts):
            lab_k = j + 1 if k == 0 else n_new
            if k:
                n_new += 1
            labels[part] = lab_k
            new_boxes.append(lab_k)
    if n_new > n_lab or new_boxes:
        stats = np.vstack([stats, np.zeros((n_new - n_lab, 5), stats.dtype)])
        for lab_k in new_boxes:
            rr, cc = np.nonzero(labels == lab_k)
            stats[lab_k] = [cc.min(), rr.min(), cc.max() - cc.min() + 1, rr.max() - rr.min() + 1,
                            len(rr)]  # fmt: skip
        n_lab = n_new
        integ = np.bincount(labels.ravel(), weights=w_pos.ravel(), minlength=n_lab)[1:]
    cand = np.flatnonzero(integ >= options.min_candidate_fraction * integ.max())
    cu = np.full(n_lab - 1, np.nan)
    cv = np.full(n_lab - 1, np.nan)
    for j in cand:
        x0, y0, w0, h0 = (int(t) for t in stats[j + 1, :4])
        box = (slice(y0, y0 + h0), slice(x0, x0 + w0))
        wb = np.where(labels[box] == j + 1, w_pos[box], 0.0)
        tot = max(float(wb.sum()), 1e-30)
        cu[j] = x0 + float(wb.sum(axis=0) @ np.arange(w0)) / tot
        cv[j] = y0 + float(wb.sum(axis=1) @ np.arange(h0)) / tot
    return _Coarse(
        sig, sm, on, full, labels, stats, integ, cu, cv, cand, bg, noise, peak, thr, multi_peak
    )


def _deblend(
    sm: NDArray[np.float32],
    labels: NDArray[np.int32],
    lab: int,
    box_stats: NDArray,
    thr: float,
    options: DetectOptions,
) -> tuple[list[tuple[NDArray, NDArray]] | None, bool]:
    """Split one component with several well-separated peaks (multi-level thresholding).

    Thresholds rise geometrically from ``thr`` to the component's peak; at the first level
    where the component falls apart into two or more pieces, each holding at least
    ``options.deblend_min_fraction`` of the component's signal and peaking at least
    1 / ``options.deblend_contrast`` times above that level, the component is split:
    every pixel goes to the nearest piece. The lumps of one faceted spot overlap (shallow
    saddles) and stay together. Returns index arrays (rows, cols) per piece (None: not
    split) and whether the component shows separate peaks that were not split (saddle
    below ``options.peaks_contrast`` of each peak): two spots too close to part, or a
    stray facet's image.
    """
    x0, y0, w0, h0 = (int(t) for t in box_stats[:4])
    if w0 * h0 < 4:
        return None, False
    box = (slice(y0, y0 + h0), slice(x0, x0 + w0))
    comp = labels[box] == lab
    vals = np.where(comp, sm[box], 0.0).astype(np.float32)
    peak = float(vals.max())
    if peak <= thr * 1.5:
        return None, False
    # Cheap pre-check: two or more 5x5 local maxima well above the threshold.
    lm = (vals >= cv2.dilate(vals, np.ones((5, 5), np.uint8))) & (vals > 2.0 * thr)
    if np.count_nonzero(lm) < 2:
        return None, False
    total = float(vals.sum())
    n_levels = 16
    multi = False
    for t in thr * (peak / thr) ** (np.arange(1, n_levels) / n_levels):
        sub = (vals > t).astype(np.uint8)
        n, sl = cv2.connectedComponents(sub, connectivity=8)
        if n <= 2:
            continue
        idx = sl.ravel()
        flux = np.bincount(idx, weights=vals.ravel(), minlength=n)[1:]
        pk = np.zeros(n)
        np.maximum.at(pk, idx, vals.ravel())
        pk = pk[1:]
        seen = [
            k for k in range(n - 1)
            if flux[k] >= options.min_candidate_fraction * total
            and t <= options.peaks_contrast * pk[k]
        ]  # fmt: skip
        multi = multi or len(seen) >= 2
        keep = [
            k + 1
            for k in range(n - 1)
            if flux[k] >= options.deblend_min_fraction * total
            and t <= options.deblend_contrast * pk[k]
        ]
        if len(keep) < 2:
            continue
        # Nearest piece for every pixel of the component (distance to each seed).
        dists = []
        for k in keep:
            seed = (sl != k).astype(np.uint8)
            dists.append(cv2.distanceTransform(seed, cv2.DIST_L2, 3))
        owner = np.argmin(np.stack(dists), axis=0)
        out = []
        for i in range(len(keep)):
            rr, cc = np.nonzero(comp & (owner == i))
            out.append((rr + y0, cc + x0))
        return out, False
    return None, multi


def _choose(
    c: _Coarse,
    registration: TargetRegistration,
    expected_xy_m: NDArray | None,
    options: DetectOptions,
) -> tuple[int, list[str]]:
    """Index (label - 1) of the chosen candidate and the flags the choice raises."""
    flags: list[str] = []
    if len(c.cand) > 1:
        flags.append("multiple_candidates")
    if expected_xy_m is None:
        return int(c.cand[int(np.argmax(c.integ[c.cand]))]), flags
    s, o = int(options.stride_px), int(options.stride_px) // 2
    u0, v0 = registration.maps.roi[:2]
    uv = np.c_[u0 + o + s * c.cu[c.cand], v0 + o + s * c.cv[c.cand]]
    xy = registration.pixel_to_plane(uv)
    dist = np.hypot(xy[:, 0] - expected_xy_m[0], xy[:, 1] - expected_xy_m[1])
    k = int(np.argmin(dist))
    if options.max_offset_m is not None and float(dist[k]) > options.max_offset_m:
        flags.append("far_from_expected")
    return int(c.cand[k]), flags


def detect_spot(
    image: NDArray,
    registration: TargetRegistration,
    *,
    dark: NDArray | None = None,
    flat: FlatField | NDArray | None = None,
    black_level_dn: float = 0.0,
    bit_depth: int | None = None,
    expected_xy_m: ArrayLike | None = None,
    target: Target | None = None,
    options: DetectOptions = DetectOptions(),  # noqa: B008 - frozen, immutable default
) -> SpotResult:
    """Find the sun spot on a registered target and measure its centroid.

    Parameters
    ----------
    image : ndarray (H, W) or (H, W, 3|4)
        The frame: 8/16-bit integer or float, grey or BGR(A) colour.
    registration : TargetRegistration
        Pixel ↔ target-plane mapping for this camera (same image size).
    dark : ndarray, optional
        A sun-off frame of the same scene, shape and exposure; subtracted pixel by pixel.
        Without it the background is a plane fitted robustly around the spot.
    flat : FlatField or ndarray, optional
        Flat field (:func:`prepare_flat`; an array is prepared on the fly, which costs a
        pass over the target): removes albedo and response non-uniformity, which would
        otherwise shift the centroid toward brighter paint, and lets spots on the
        markers be measured.
    black_level_dn : float
        Sensor offset (used without a dark frame, and for the flat field). [DN]
    bit_depth : int, optional
        ADC bits, for the saturation level (default: the dtype's range).
    expected_xy_m : array_like (2,), optional
        Where the spot should be: the commanded aim point in the target plane [m]. The
        candidate nearest to it is chosen — the heliostat under test is the one whose aim
        is known, while a neighbour's spot or a glint may be brighter. Without it the
        candidate with the largest integrated signal is chosen: a heliostat's whole spot
        carries far more flux than a reflection or a streak.
    target : Target, optional
        The target's pose, to report the centroid in ENU.
    options : DetectOptions
        Thresholds and window sizes.

    Returns
    -------
    SpotResult
        ``ok`` False with NaN positions and a flag when there is no usable spot.

    Raises
    ------
    InputError
        A frame that is not an image of the registered size, a dark or flat frame of
        another shape, a bad expected position.
    """
    img = validate_frame(image, "image", registration.image_size_px)
    drk = None
    if dark is not None:
        drk = validate_frame(dark, "dark", registration.image_size_px)
        if drk.shape != img.shape:
            raise InputError(f"dark: shape {drk.shape} differs from the image's {img.shape}")
    if flat is not None and not isinstance(flat, FlatField):
        flat = prepare_flat(flat, registration, black_level_dn=black_level_dn)
    if flat is not None and flat.roi != registration.maps.roi:
        raise InputError("flat: prepared for another registration (target box differs)")
    exp = None
    if expected_xy_m is not None:
        exp = np.asarray(expected_xy_m, dtype=float).ravel()
        if exp.shape != (2,) or not np.all(np.isfinite(exp)):
            raise InputError(f"expected_xy_m: expected 2 finite numbers, got {expected_xy_m!r}")
    if int(options.stride_px) < 1:
        raise InputError(f"options.stride_px: expected >= 1, got {options.stride_px!r}")
    if not math.isfinite(black_level_dn):
        raise InputError(f"black_level_dn: expected a finite number, got {black_level_dn!r}")
    sat = _saturation_level(img.dtype, bit_depth)
    u0, v0, u1, v1 = registration.maps.roi
    roi = img[v0:v1, u0:u1]
    droi = drk[v0:v1, u0:u1] if drk is not None else None
    c = _coarse_stage(roi, droi, flat, registration, black_level_dn, sat, options)
    if isinstance(c, SpotResult):
        return c
    pick, flags = _choose(c, registration, exp, options)
    return _fine_stage(
        roi, droi, flat, registration, black_level_dn, sat, c, pick, flags, target, options
    )


def _fine_stage(
    roi: NDArray,
    droi: NDArray | None,
    flat: FlatField | None,
    registration: TargetRegistration,
    black_level_dn: float,
    sat: float,
    c: _Coarse,
    pick: int,
    flags: list[str],
    target: Target | None,
    options: DetectOptions,
) -> SpotResult:
    maps = registration.maps
    s = int(options.stride_px)
    o = s // 2
    nv, nu = c.labels.shape
    lab = pick + 1
    n_cand = int(len(c.cand))
    # Window: the box of the chosen piece's samples above `rel_threshold` of its own peak,
    # widened by `margin` of its half-size plus one stride.
    sx, sy, sw, sh = (int(x) for x in c.stats[lab, :4])
    piece = c.labels[sy : sy + sh, sx : sx + sw] == lab
    vals_p = np.where(piece, c.sm[sy : sy + sh, sx : sx + sw], 0.0)
    own_peak = float(vals_p.max())
    rr, cc = np.nonzero(vals_p > options.rel_threshold * own_peak)
    if len(rr) == 0:
        rr, cc = np.nonzero(piece)
    bx, by = sx + int(cc.min()), sy + int(rr.min())
    bw, bh = int(cc.max() - cc.min()) + 1, int(rr.max() - rr.min()) + 1
    mu = int(math.ceil(options.margin * 0.5 * s * bw + s))
    mv = int(math.ceil(options.margin * 0.5 * s * bh + s))
    rh, rw = roi.shape[:2]
    wu0, wu1 = max(o + s * bx - mu, 0), min(o + s * (bx + bw - 1) + mu + 1, rw)
    wv0, wv1 = max(o + s * by - mv, 0), min(o + s * (by + bh - 1) + mv + 1, rh)
    # Coarse cells covering the window.
    cu0, cu1 = max((wu0 - o) // s, 0), min((wu1 - 1 - o) // s + 1, nu)
    cv0, cv1 = max((wv0 - o) // s, 0), min((wv1 - 1 - o) // s + 1, nv)
    kernel = np.ones((3, 3), np.uint8)
    lab_w = c.labels[cv0:cv1, cu0:cu1]
    own_w = lab_w == lab
    others = (lab_w > 0) & ~own_w
    others_d = None
    if np.any(others):
        others_d = (cv2.dilate(others.view(np.uint8), kernel) > 0) & ~own_w
        # Another candidate inside the window: its wings may reach into ours.
        cand_labels = set((c.cand + 1).tolist())
        if any(int(j) in cand_labels for j in np.unique(lab_w[others])):
            flags.append("overlapping_spots")

    gain_w = None
    if flat is not None:
        gain_w = flat.gain_roi[wv0:wv1, wu0:wu1]
    win_raw = roi[wv0:wv1, wu0:wu1]
    sig = _signal(win_raw, droi[wv0:wv1, wu0:wu1] if droi is not None else None, gain_w,
                  black_level_dn)  # fmt: skip

    # Background samples: on the board, outside every component (dilated by two cells).
    excl = cv2.dilate((c.labels > 0).view(np.uint8), np.ones((5, 5), np.uint8)) > 0
    bgmask = c.full & ~excl
    noise = c.noise
    if droi is not None:
        # Dark frame: it is the background. Its noise is measured away from the spots; a
        # residual offset is subtracted only when asked for (ambient drift between the
        # two frames), since a big spot's faint wings bias any estimate of it.
        bg = _robust_stats(c.sig[bgmask])[0] if bgmask.sum() >= 24 else c.bg
        bg_level = bg if options.dark_offset else 0.0
        if bg_level:
            sig -= np.float32(bg_level)
    else:
        # No dark frame: a plane through the samples in a ring around the window.
        pu, pv = max(cu1 - cu0, 8), max(cv1 - cv0, 8)
        ru0, ru1 = max(cu0 - pu // 2, 0), min(cu1 + pu // 2, nu)
        rv0, rv1 = max(cv0 - pv // 2, 0), min(cv1 + pv // 2, nv)
        ring = bgmask[rv0:rv1, ru0:ru1].copy()
        ring[cv0 - rv0 : cv1 - rv0, cu0 - ru0 : cu1 - ru0] = False
        if ring.sum() < 24:
            ring = bgmask[rv0:rv1, ru0:ru1]
        if ring.sum() >= 6:
            ii, jj = np.nonzero(ring)
            if len(ii) > 2048:  # an even subset is plenty for three coefficients
                ii, jj = ii[:: len(ii) // 2048 + 1], jj[:: len(jj) // 2048 + 1]
            vals = c.sig[ii + rv0, jj + ru0].astype(np.float64)
            uc, vc = 0.5 * (wu0 + wu1), 0.5 * (wv0 + wv1)
            coef = _plane_bg((jj + ru0) * s + o - uc, (ii + rv0) * s + o - vc, vals, noise)
            sig -= (coef[0] + coef[1] * (np.arange(wu0, wu1) - uc)).astype(np.float32)[None, :]
            sig -= (coef[2] * (np.arange(wv0, wv1) - vc)).astype(np.float32)[:, None]
            bg_level = float(coef[0])
        else:
            sig -= np.float32(c.bg)
            bg_level = c.bg
    weight_area = maps.area_m2[wv0:wv1, wu0:wu1]
    if flat is None and np.any(maps.marker[wv0:wv1, wu0:wu1]):
        weight_area = np.where(maps.marker[wv0:wv1, wu0:wu1], np.float32(0), weight_area)
    if others_d is not None:
        ci = np.clip((np.arange(wv0, wv1) - o + s // 2) // s, 0, nv - 1) - cv0
        cj = np.clip((np.arange(wu0, wu1) - o + s // 2) // s, 0, nu - 1) - cu0
        ci = np.clip(ci, 0, others_d.shape[0] - 1)
        cj = np.clip(cj, 0, others_d.shape[1] - 1)
        block = others_d[ci[:, None], cj[None, :]]
        weight_area = np.where(block, np.float32(0), weight_area)
    wa = sig * weight_area
    flux = float(cv2.sumElems(wa)[0])
    if not flux > 0.0:
        return _failed(("no_spot",), bg=bg_level, noise=noise, n_candidates=n_cand, peak=c.peak)
    # First moments (float32 dot products: relative error ~1e-7 of the coordinates).
    xm = maps.x_m[wv0:wv1, wu0:wu1]
    ym = maps.y_m[wv0:wv1, wu0:wu1]
    xc = float(np.vdot(wa, xm)) / flux
    yc = float(np.vdot(wa, ym)) / flux
    # Second moments, noise propagation and quality figures from every second pixel in
    # each direction (they are estimates; a quarter of the work).
    wa2, sg2 = wa[::2, ::2], sig[::2, ::2]
    a2 = weight_area[::2, ::2]
    dx2 = xm[::2, ::2] - np.float32(xc)
    dy2 = ym[::2, ::2] - np.float32(yc)
    f2 = max(float(wa2.sum(dtype=np.float64)), 1e-300)
    sxx = max(float(np.vdot(wa2 * dx2, dx2)) / f2, 0.0)
    syy = max(float(np.vdot(wa2 * dy2, dy2)) / f2, 0.0)
    # var(xc) = noise^2 sum((A (x - xc))^2) / flux^2 (per-axis mean; x4 for the subsample).
    ax, ay = a2 * dx2, a2 * dy2
    sigma_m = noise * math.sqrt(2.0 * (float(np.vdot(ax, ax)) + float(np.vdot(ay, ay)))) / flux

    # Quality figures.
    thr_px = np.float32(max(options.k_noise * noise, options.rel_threshold * own_peak))
    above = sg2 > thr_px
    n_pix = 4 * int(np.count_nonzero(above))
    sat_frac = 0.0
    if np.isfinite(sat) and n_pix and float(win_raw.max()) >= sat:
        hot = win_raw[::2, ::2] >= sat
        if hot.ndim == 3:
            hot = np.any(hot[..., :3], axis=2)
        sat_frac = 4.0 * float(np.count_nonzero(hot & above)) / n_pix
    cov_c = maps.coverage[o::s, o::s][:nv, :nu]
    own_c = c.labels == lab
    touches = bool(np.any(own_c & (cov_c < 1))) or bool(
        np.any(above & maps.edge[wv0:wv1:2, wu0:wu1:2])
    )
    if registration.markers is not None:
        mk_c = maps.marker[o::s, o::s][:nv, :nu]
        own_d = cv2.dilate(own_c.view(np.uint8), kernel) > 0
        if np.any(own_d & mk_c):
            flags.append("on_marker")
    snr = own_peak / noise
    if lab in c.multi_peak:
        flags.append("multiple_peaks")
    if snr < options.min_snr:
        flags.append("low_snr")
    if sat_frac > 0:
        flags.append("saturated")
    if touches:
        flags.append("touches_edge")
    uv = registration.plane_to_pixel([[xc, yc]])[0]
    e_m = n_m = up_m = math.nan
    if target is not None:
        e_m, n_m, up_m = (float(v) for v in target.plane_to_enu(np.array([xc, yc])))
    return SpotResult(
        ok=True,
        x_m=xc,
        y_m=yc,
        u_px=float(uv[0]),
        v_px=float(uv[1]),
        e_m=e_m,
        n_m=n_m,
        u_m=up_m,
        sigma_m=float(sigma_m),
        size_x_m=math.sqrt(sxx),
        size_y_m=math.sqrt(syy),
        peak_dn=float(sig.max()),
        integrated_dn=float(cv2.sumElems(sig)[0]),
        flux_dn_m2=flux,
        snr=snr,
        n_pixels=n_pix,
        saturated_fraction=sat_frac,
        touches_edge=touches,
        n_candidates=n_cand,
        background_dn=float(bg_level),
        noise_dn=float(noise),
        flags=tuple(flags),
    )
