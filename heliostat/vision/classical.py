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
   threshold of ``k_noise`` noise sigmas, and connected components (8-neighbours, and
   across a one-sample gap in a row or column: the lumps of one faceted spot stay
   together, as a 3x3 closing would join them). A component with two peaks separated by a deep
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
   lumpy spot's wings would move its centroid; noise adds variance there, not bias. The
   centroid's noise (``sigma_m``) propagates each pixel's variance: read + shot noise
   (its signal-dependent part fitted to third differences along the window's rows, so no
   camera constant is needed), divided by the flat field's gain.

Cost (``bench/vision.py``): the per-pixel work runs in compiled kernels
(:mod:`heliostat.vision._kernels`, numba): one pass over the coarse samples (1/64 of the
target box at the default stride), a labelling that visits only the samples above the
threshold, and one pass over the fine window. Per-registration sampling masks, index sets
and the area-weighted position maps are cached (keyed on the registration's own arrays).
What is left in Python is a few dozen calls of fixed cost (the window, masks, choice,
flags and the result).
"""

from __future__ import annotations

import math
import operator as op
from dataclasses import dataclass, replace

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray

from heliostat.config import Target
from heliostat.errors import InputError
from heliostat.vision import _kernels as _K
from heliostat.vision.signal import (
    FlatField,
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

_K3 = np.ones((3, 3), np.uint8)
_K5 = np.ones((5, 5), np.uint8)

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
    "flux_mismatch",
    "on_marker",
    "multiple_peaks",
    "spot_in_dark",
    "low_contrast",
    "shadow_edge",
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
    flux_tolerance : float
        With an expected flux: a measured flux within a factor ``1 + flux_tolerance`` of
        it agrees (the prediction's uncertainty: DNI, soiling, attenuation, radiometric
        factor; 0.35 takes a 10 % prediction error at 3 sigma, and still catches a spot
        merged with a neighbour of a third of its power or more). [1]
    deblend_contrast : float
        Two peaks of one component count as separate spots when the saddle between
        them lies below this fraction of each peak (the weaker one's sets it). [1]
        Measured on the coarse samples (``bench/vision.py`` scenes, spot sigma 10-40 px,
        aspect 0.4-1): a single faceted spot is split at 0.2 in 1 of 2500 frames, at 0.3
        in 2, at 0.4 in 13 (its centroid then off by decimetres); a faceted spot and a
        round neighbour 1.3-1.6 (rms_a + rms_b) apart are parted in 3, 6, 8 of 11 frames,
        1.6-2 apart in 35, 40, 42 of 45. Pairs closer than ~1.1 show no second peak and
        are never parted. Raising it trades single spots for pairs at about that rate.
    deblend_min_fraction : float
        ... and, once every pixel of the component is given to the nearest piece, each
        part holds at least this fraction of the component's signal (a lone facet's
        lump is smaller; a neighbour 0.3x as strong holds ~23 %). [1]
    peaks_contrast : float
        Separate peaks whose saddle lies below this fraction of each peak, but which are
        not split, raise the ``multiple_peaks`` flag. [1]
    dark_offset : bool
        With a dark frame, also subtract a residual offset (median of the board away from
        the spots) — for ambient light that drifted between the two frames. Off by
        default: a large spot's wings reach most of the board and bias the estimate.
    dark_spot_fraction : float
        With a dark frame: when the sun-off frame's own spot light (a neighbour's spot,
        more than ``k_noise`` noise sigmas above its ambient level) inside the window
        exceeds this fraction of the window's signal, the result is flagged
        ``spot_in_dark``. On the bench's sun-off scene (a faceted spot and a round
        neighbour of 0.3-3x its power anywhere on the target, the neighbour's beam
        wandering by 0.2-0.5 mrad between the frames; 600 frames, seed 3): at 0.1 %
        every unflagged centroid lay within 3.6 of its ``sigma_m`` of the truth; at
        0.3 % four did not (up to 16 sigma, 3.6 mm), for a flag rate of 18 % instead of
        19 %. [1]
    fine_step_px : int
        The fine window measures every ``fine_step_px``-th pixel in each direction (1:
        all). A step of 2 costs about half the fine pass on a large spot and keeps the
        centroid of a spot much wider than the step unbiased, but it uses a quarter of
        the photons, so the noise part of the error (``sigma_m``) doubles: on the
        accuracy bench (spots of sigma 10-40 px) it doubles the median error and takes a
        streaky spot's worst case past 1 mm. Off by default. [px]
    """

    stride_px: int = 8
    k_noise: float = 6.0
    rel_threshold: float = 0.05
    min_candidate_fraction: float = 0.02
    margin: float = 0.8
    min_snr: float = 10.0
    max_offset_m: float | None = None
    flux_tolerance: float = 0.35
    deblend_contrast: float = 0.2
    deblend_min_fraction: float = 0.2
    peaks_contrast: float = 0.7
    dark_offset: bool = False
    dark_spot_fraction: float = 0.001
    fine_step_px: int = 1


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
        1-sigma uncertainty of the centroid per axis from the pixel noise: read and
        ambient noise (measured on the board), the spot's own shot noise and the flat
        field's noise (fitted to the window's pixel-to-pixel scatter), each through the
        flat field, so a spot on a marker's dark ink is less sure. Noise only: not the
        bias of a neighbour's residue or of a spot cut by the edge (see the flags). [m]
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
        ``flux_mismatch``: with an expected flux, no candidate near the aim carries it
        (the spot merged with another, or the prediction is off).
        ``spot_in_dark``: the sun-off frame has a bright spot (a neighbour's) inside the
        window. It cancels in (on - off) only if it stood still between the two frames;
        its tracking jitter leaves a residue that biases the centroid (by centimetres
        when it overlaps the spot: ``bench/vision.py --accuracy``).
        ``low_contrast`` and ``shadow_edge`` come from the sunlit-target detector
        (:func:`heliostat.vision.sunlit.detect_spot_sunlit`): the spot stands little above
        the lit board, or a shadow edge crosses it.
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
        ok=False, x_m=nan, y_m=nan, u_px=nan, v_px=nan, e_m=nan, n_m=nan, u_m=nan,
        sigma_m=nan, size_x_m=nan, size_y_m=nan, peak_dn=peak, integrated_dn=nan,
        flux_dn_m2=nan, snr=nan, n_pixels=0, saturated_fraction=sat, touches_edge=False,
        n_candidates=n_candidates, background_dn=bg, noise_dn=noise, flags=flags,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Coarse:
    """Result of the coarse pass (internal)."""

    sig: NDArray[np.float32]  # coarse signal (dark-/black-subtracted, flat-divided)
    sm: NDArray[np.float32]  # smoothed, background-free
    on: NDArray[np.bool_]  # samples usable for the spot (on target, not masked)
    full: NDArray[np.bool_]  # samples fully on the board (background statistics)
    labels: NDArray[np.integer]  # uint16 or int32
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


@dataclass(frozen=True, slots=True)
class _Geom:
    """Per-registration sampling geometry of the coarse pass (cached, internal)."""

    on: NDArray[np.bool_]  # samples usable for the spot (on target, not masked)
    full: NDArray[np.bool_]  # samples fully on the board (background statistics)
    on_f32: NDArray[np.float32]  # `on` as 0/1
    n_full: int
    full_idx: NDArray[np.intp]  # flat indices of the `full` samples
    any_on: bool
    cov_lt1: NDArray[np.bool_]  # samples not fully on the board
    marker_near: NDArray[np.bool_]  # samples on or next to (8-neighbours) a marker sample
    bg_idx: NDArray[np.intp]  # flat indices of the `full` samples used for the median
    pair_idx_arr: NDArray[np.intp]  # left samples of horizontal `full` pairs (noise; may be empty)
    marker_boxes: tuple[tuple[int, int, int, int], ...]  # marker pixels' boxes (v0,v1,u0,u1)
    edge_sum: NDArray[np.int32]  # integral image of maps.edge: edge pixels in any box


# Per-registration (and per-flat-field) arrays, computed once: key -> (the source arrays,
# value). The sources are held, so their ids cannot be reused while the entry lives, and
# an entry counts only if they are the very arrays asked about.
_CACHE: dict[tuple, tuple[tuple[NDArray, ...], object]] = {}
_CACHE_MAX = 24


def _cached(key: tuple, sources: tuple[NDArray, ...], make):  # noqa: ANN001, ANN202
    """``make()``, computed once per ``key`` and the identity of ``sources``."""
    hit = _CACHE.get(key)
    if hit is not None and len(hit[0]) == len(sources) and all(map(op.is_, hit[0], sources)):
        return hit[1]
    value = make()
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.clear()
    _CACHE[key] = (sources, value)
    return value


# Samples for the coarse background median and noise MAD: an even subset of at most this
# many (the median's scatter is then 4 % of the noise sigma, the MAD's about 5 %).
_ROBUST_MAX_N = 1024


def _strided_subset(idx: NDArray[np.intp]) -> NDArray[np.intp]:
    """An evenly strided subset of at most ``_ROBUST_MAX_N`` indices."""
    if idx.size > _ROBUST_MAX_N:
        return idx[:: idx.size // _ROBUST_MAX_N + 1]
    return idx


def _geom(maps, s: int, mask_markers: bool) -> _Geom:
    """Sampled masks and index sets of a registration for stride ``s`` (computed once)."""
    key = ("geom", id(maps.coverage), id(maps.marker), s, mask_markers)
    return _cached(key, (maps.coverage, maps.marker), lambda: _make_geom(maps, s, mask_markers))


def _make_geom(maps, s: int, mask_markers: bool) -> _Geom:  # noqa: ANN001
    o = s // 2
    rh, rw = maps.coverage.shape
    nv, nu = (rh - o + s - 1) // s, (rw - o + s - 1) // s
    cov_c = maps.coverage[o::s, o::s][:nv, :nu]
    mk_c = np.ascontiguousarray(maps.marker[o::s, o::s][:nv, :nu])
    on = cov_c > 0
    full = cov_c >= 1
    if mask_markers:
        on = on & ~mk_c
        full = full & ~mk_c
    if not np.any(full):
        full = on
    pair = full[:, 1:] & full[:, :-1]
    rr, cc = np.nonzero(pair)
    pair_idx = _strided_subset(rr * nu + cc) if rr.size >= 16 else np.zeros(0, np.intp)
    n_mk, _, st, _ = cv2.connectedComponentsWithStats(maps.marker.view(np.uint8), connectivity=8)
    boxes = tuple((int(y), int(y + h), int(x), int(x + w)) for x, y, w, h, _ in st[1:n_mk].tolist())
    return _Geom(
        on=on,
        full=full,
        on_f32=on.astype(np.float32),
        n_full=int(np.count_nonzero(full)),
        full_idx=np.flatnonzero(full),
        any_on=bool(np.any(on)),
        cov_lt1=cov_c < 1,
        marker_near=cv2.dilate(mk_c.view(np.uint8), _K3).view(np.bool_),
        bg_idx=_strided_subset(np.flatnonzero(full)),
        pair_idx_arr=pair_idx,
        marker_boxes=boxes,
        edge_sum=cv2.integral(maps.edge.astype(np.uint8)),
    )


def _inv_gain(flat: FlatField, s: int = 1) -> NDArray[np.float32]:
    """1 / the flat field's gain, over the target box (``s = 1``) or at the coarse samples
    of stride ``s`` (contiguous; computed once per flat field): the kernels multiply."""
    o = s // 2
    src = flat.gain_roi if s == 1 else flat.gain_roi[o::s, o::s]
    return _cached(
        ("inv_gain", id(flat.gain_roi), s),
        (flat.gain_roi,),
        lambda: np.ascontiguousarray(np.float32(1.0) / src, dtype=np.float32),
    )


#: A window whose flux is below this many of its noise sigmas is no measurement. [1]
_MIN_FLUX_SNR = 5.0


def _area_moments(maps) -> tuple[NDArray[np.float32], NDArray[np.float32]]:  # noqa: ANN001
    """``area x x`` and ``area x y`` over the target box (float32; computed once per
    registration): the fine pass's first moments are then two products per pixel."""

    def make() -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        a = maps.area_m2.astype(np.float64)
        return (a * maps.x_m).astype(np.float32), (a * maps.y_m).astype(np.float32)

    key = ("area_moments", id(maps.area_m2), id(maps.x_m), id(maps.y_m))
    return _cached(key, (maps.area_m2, maps.x_m, maps.y_m), make)


def _coarse_stage(
    img: NDArray,
    drk: NDArray | None,
    flat: FlatField | None,
    registration: TargetRegistration,
    black_level_dn: float,
    sat: float,
    options: DetectOptions,
) -> _Coarse | SpotResult:
    s = int(options.stride_px)
    g = _geom(registration.maps, s, flat is None)
    on, full = g.on, g.full
    if not g.any_on:
        raise InputError("the registered target covers no sampled pixel: lower stride_px")
    nv, nu = on.shape
    u0, v0 = registration.maps.roi[:2]
    inv_gain_c = _inv_gain(flat, s) if flat is not None else _K.EMPTY2_F32
    sig, sm, vmin, vmax, bg, noise, peak, thr = _K.coarse_pass(
        img, drk if drk is not None else img, drk is not None,
        inv_gain_c, flat is not None, float(black_level_dn), u0, v0, s, nv, nu, g.full_idx,
        g.on_f32, g.bg_idx, g.pair_idx_arr, float(options.k_noise),
    )  # fmt: skip
    if vmax <= 0.0:
        return _failed(("all_black", "no_spot"), bg=0.0, noise=0.0)
    if (
        math.isfinite(sat)
        and vmax >= sat
        and _K.count_at_least(img, u0, v0, s, nu, g.full_idx, sat) > 0.5 * g.n_full
    ):
        return _failed(("all_white", "saturated", "no_spot"), bg=sat, noise=0.0, sat=1.0)
    if vmax - vmin <= 0.0:
        return _failed(("flat_frame", "no_spot"), bg=bg, noise=0.0)
    if peak < thr:
        return _failed(("no_spot",), bg=bg, noise=noise, peak=peak)
    # Segment at the noise threshold only: a faint spot next to a bright one keeps its
    # full extent (the relative threshold sets each spot's window later).
    n_lab, labels, stats, mom = _K.label_components(sm, thr, inv_gain_c, flat is not None)
    if n_lab <= 1:
        return _failed(("no_spot",), bg=bg, noise=noise, peak=peak)
    integ = mom[1:, 3]  # before the flat field's division: markers' noise weighs little
    # Two spots close together merge at the low threshold: split components whose
    # brightness has two well-separated peaks (a deep saddle between them).
    n_new = n_lab
    new_boxes = []
    multi_peak: set[int] = set()
    for j in _candidates(integ.tolist(), options.min_candidate_fraction):
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
        mom = _K.component_moments(sm, labels, n_lab, inv_gain_c, flat is not None)
        integ = mom[1:, 3]
    cand = np.array(_candidates(integ.tolist(), options.min_candidate_fraction), np.intp)
    tot = np.maximum(mom[1:, 0], 1e-30)
    cu = mom[1:, 1] / tot
    cv = mom[1:, 2] / tot
    return _Coarse(
        sig, sm, on, full, labels, stats, integ, cu, cv, cand, bg, noise, peak, thr, multi_peak
    )


def _candidates(integ: list[float], fraction: float) -> list[int]:
    """Indices of the components whose integrated signal is at least ``fraction`` of the
    largest one's (plain lists: a frame has a few components)."""
    lim = fraction * max(integ)
    return [j for j, v in enumerate(integ) if v >= lim]


def _deblend(
    sm: NDArray[np.float32],
    labels: NDArray[np.int32],
    lab: int,
    box_stats: NDArray,
    thr: float,
    options: DetectOptions,
) -> tuple[list[tuple[NDArray, NDArray]] | None, bool]:
    """Split one component with several well-separated peaks (multi-level thresholding).

    Thresholds rise geometrically (32 levels) from ``thr`` to the component's peak; at the
    first level where the component falls apart into two or more pieces, each holding at
    least ``options.min_candidate_fraction`` of the component's signal above the level
    and peaking at least 1 / ``options.deblend_contrast`` times above it, every pixel of
    the component goes to the nearest such piece (:func:`_partition`); the component is
    split when at least two parts then hold ``options.deblend_min_fraction`` of its
    signal each (smaller parts are dropped and the rest re-partitioned). The lumps of one
    faceted spot overlap (shallow saddles) and stay together; a lone facet's lump with a
    deep saddle holds too little flux to be split off. Returns index arrays (rows, cols)
    per piece (None: not split) and whether the component shows separate peaks that were
    not split (saddle below ``options.peaks_contrast`` of each peak): two spots too close
    to part, or a stray facet's image.

    Each piece's peak is one of the component's 3x3 local maxima (its neighbours outside
    the piece lie at or below the level), so each piece's peak is read from the labels at
    those few maxima, the fluxes are summed only at levels where two pieces could count,
    and the levels stop once fewer than two maxima reach ``level / contrast`` (the same
    result as testing every level; ``tests/test_vision.py`` checks it against the plain
    version).
    """
    x0, y0, w0, h0 = box_stats[:4].tolist()
    # Cheap pre-check (compiled; most components have one peak): two or more 5x5 local
    # maxima well above the threshold.
    if w0 * h0 < 4 or _K.n_local_max5(labels, sm, lab, x0, y0, w0, h0, 2.0 * thr) < 2:
        return None, False
    box = (slice(y0, y0 + h0), slice(x0, x0 + w0))
    comp = labels[box] == lab
    vals = sm[box] * comp
    peak = cv2.minMaxLoc(vals)[1]
    mr, mc = np.nonzero((vals >= cv2.dilate(vals, _K3)) & comp)
    mv = vals[mr, mc]
    order = np.argsort(-mv, kind="stable")
    mr, mc, mv = mr[order], mc[order], mv[order]
    if len(mv) < 2:
        return None, False
    total = float(cv2.sumElems(vals)[0])
    n_levels = 32
    multi = False
    c_seen, c_keep = options.peaks_contrast, options.deblend_contrast
    levels = thr * (peak / thr) ** (np.arange(1, n_levels) / n_levels)
    # A piece whose peak qualifies holds a local maximum >= level / contrast: how many
    # maxima could qualify at each level (non-increasing with the level).
    n_could_see = np.searchsorted(-mv, -levels / c_seen, side="right").tolist()
    n_could_keep = np.searchsorted(-mv, -levels / c_keep, side="right").tolist()
    mv_l = mv.tolist()
    for t, ns, nk in zip(levels.tolist(), n_could_see, n_could_keep, strict=True):
        if nk < 2 and (multi or ns < 2):
            break  # neither a split nor (new) separate peaks at this level or above
        sub = cv2.compare(vals, t, cv2.CMP_GT)
        n, sl = cv2.connectedComponents(sub, connectivity=8)
        if n <= 2:
            continue
        # Peak of each piece: its highest local maximum.
        pk = [0.0] * n
        for lab_k, v in zip(sl[mr, mc].tolist(), mv_l, strict=True):
            if v > pk[lab_k]:
                pk[lab_k] = v
        n_seen = sum(t <= c_seen * p for p in pk[1:])
        n_keep = sum(t <= c_keep * p for p in pk[1:])
        if n_keep < 2 and (multi or n_seen < 2):
            continue
        flux = np.bincount(sl.ravel(), weights=vals.ravel(), minlength=n).tolist()
        seen = [
            k for k in range(1, n)
            if flux[k] >= options.min_candidate_fraction * total and t <= c_seen * pk[k]
        ]  # fmt: skip
        multi = multi or len(seen) >= 2
        keep = [
            k
            for k in range(1, n)
            if flux[k] >= options.min_candidate_fraction * total and t <= c_keep * pk[k]
        ]
        if len(keep) < 2:
            continue
        parts = _partition(sl, keep, comp, vals, total, options.deblend_min_fraction)
        if parts is None:
            continue  # one piece holds nearly everything: lumps of one spot
        return [(rr + y0, cc + x0) for rr, cc in parts], False
    return None, multi


def _partition(
    sl: NDArray[np.int32],
    keep: list[int],
    comp: NDArray[np.bool_],
    vals: NDArray[np.float32],
    total: float,
    min_fraction: float,
) -> list[tuple[NDArray, NDArray]] | None:
    """Give every pixel of the component to the nearest of the ``keep`` pieces of ``sl``
    and return each part's (rows, cols) in the box, or None when fewer than two parts
    hold ``min_fraction`` of ``total`` (the weakest part is dropped and the rest
    re-partitioned until every part holds that much)."""
    keep = list(keep)
    while len(keep) >= 2:
        dists = [cv2.distanceTransform((sl != k).view(np.uint8), cv2.DIST_L2, 3) for k in keep]
        owner = np.argmin(np.stack(dists), axis=0)
        owner[~comp] = -1
        flux = np.bincount(owner.ravel() + 1, weights=vals.ravel(), minlength=len(keep) + 1)[1:]
        weakest = int(np.argmin(flux))
        if flux[weakest] >= min_fraction * total:
            return [tuple(np.nonzero(owner == i)) for i in range(len(keep))]
        del keep[weakest]
    return None


def _choose(
    c: _Coarse,
    registration: TargetRegistration,
    expected_xy_m: NDArray | None,
    options: DetectOptions,
) -> tuple[list[int], list[float] | None, list[str]]:
    """The candidates (label - 1) in order of preference, their distances from the
    expected position (None without one) [m], and the flags the choice raises."""
    flags: list[str] = []
    if len(c.cand) > 1:
        flags.append("multiple_candidates")
    if expected_xy_m is None:
        if len(c.cand) == 1:
            return c.cand.tolist(), None, flags
        order = np.argsort(-c.integ[c.cand], kind="stable")
        return c.cand[order].tolist(), None, flags
    s, o = int(options.stride_px), int(options.stride_px) // 2
    u0, v0 = registration.maps.roi[:2]
    uv = np.c_[u0 + o + s * c.cu[c.cand], v0 + o + s * c.cv[c.cand]]
    xy = registration.pixel_to_plane(uv)
    dist = np.hypot(xy[:, 0] - expected_xy_m[0], xy[:, 1] - expected_xy_m[1])
    order = np.argsort(dist, kind="stable")
    return c.cand[order].tolist(), dist[order].tolist(), flags


#: Candidates nearest the aim measured at most before giving up (the first normally
#: succeeds; the next ones only when a nearer one holds no measurable flux).
_MAX_TRIES = 3


def detect_spot(
    image: NDArray,
    registration: TargetRegistration,
    *,
    dark: NDArray | None = None,
    flat: FlatField | NDArray | None = None,
    black_level_dn: float = 0.0,
    bit_depth: int | None = None,
    expected_xy_m: ArrayLike | None = None,
    expected_flux_dn_m2: float | None = None,
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
    expected_flux_dn_m2 : float, optional
        The flux the heliostat's whole spot should carry in this frame (``flux_dn_m2``
        units: its predicted power, DNI x mirror area x cosine x reflectivity x
        attenuation, times the camera's radiometric factor). With an expected position,
        a candidate whose measured flux differs from it by more than
        ``options.flux_tolerance`` is passed over for the next nearest one that agrees
        (a neighbour's spot nearer the aim); when none agrees the nearest is returned
        flagged ``flux_mismatch`` — also when it is two spots merged into one blob,
        which no single frame can part. [DN m^2]
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
    if expected_flux_dn_m2 is not None and not (
        math.isfinite(expected_flux_dn_m2) and expected_flux_dn_m2 > 0
    ):
        raise InputError(
            f"expected_flux_dn_m2: expected a positive number, got {expected_flux_dn_m2!r}"
        )
    if int(options.stride_px) < 1:
        raise InputError(f"options.stride_px: expected >= 1, got {options.stride_px!r}")
    if int(options.fine_step_px) < 1:
        raise InputError(f"options.fine_step_px: expected >= 1, got {options.fine_step_px!r}")
    if not math.isfinite(black_level_dn):
        raise InputError(f"black_level_dn: expected a finite number, got {black_level_dn!r}")
    sat = _saturation_level(img.dtype, bit_depth)
    c = _coarse_stage(img, drk, flat, registration, black_level_dn, sat, options)
    if isinstance(c, SpotResult):
        return c
    order, dist, flags = _choose(c, registration, exp, options)
    # Chosen by the aim, a candidate may be a faint residue with no measurable flux, or
    # (with an expected flux) a neighbour's spot: then the next nearest. Chosen by signal,
    # the strongest failing leaves nothing better.
    first = first_ok = None
    for rank, pick in enumerate(order[: _MAX_TRIES if exp is not None else 1]):
        f = list(flags)
        if dist is not None and options.max_offset_m is not None:
            if dist[rank] > options.max_offset_m:
                f.append("far_from_expected")
        res = _fine_stage(
            img, drk, flat, registration, black_level_dn, sat, c, pick, f, target, options
        )
        if not res.ok:
            first = first or res
            continue
        if expected_flux_dn_m2 is None:
            return res
        ratio = res.flux_dn_m2 / expected_flux_dn_m2
        if 1.0 / (1.0 + options.flux_tolerance) <= ratio <= 1.0 + options.flux_tolerance:
            return res
        first_ok = first_ok or replace(res, flags=res.flags + ("flux_mismatch",))
    return first_ok or first


def _fine_stage(
    img: NDArray,
    drk: NDArray | None,
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
    g = _geom(maps, s, flat is None)
    nv, nu = c.labels.shape
    lab = pick + 1
    n_cand = int(len(c.cand))
    # Window: the box of the chosen piece's samples above `rel_threshold` of its own peak,
    # widened by `margin` of its half-size plus one stride.
    sx, sy, sw, sh = c.stats[lab, :4].tolist()
    own_peak, bx, by, bw, bh = _K.own_extent(
        c.labels, c.sm, sx, sy, sw, sh, lab, float(options.rel_threshold)
    )
    mu = int(math.ceil(options.margin * 0.5 * s * bw + s))
    mv = int(math.ceil(options.margin * 0.5 * s * bh + s))
    u0, v0, u1, v1 = maps.roi
    rh, rw = v1 - v0, u1 - u0
    wu0, wu1 = max(o + s * bx - mu, 0), min(o + s * (bx + bw - 1) + mu + 1, rw)
    wv0, wv1 = max(o + s * by - mv, 0), min(o + s * (by + bh - 1) + mv + 1, rh)
    # Coarse cells covering the window.
    cu0, cu1 = max((wu0 - o) // s, 0), min((wu1 - 1 - o) // s + 1, nu)
    cv0, cv1 = max((wv0 - o) // s, 0), min((wv1 - 1 - o) // s + 1, nv)
    # Pixels measured: all, or every k-th in each direction (options.fine_step_px).
    k = int(options.fine_step_px)
    others_d = None
    any_other, other_cand = _K.others_in_box(c.labels, cv0, cv1, cu0, cu1, lab, c.cand)
    if any_other:
        lab_w = c.labels[cv0:cv1, cu0:cu1]
        own_w = lab_w == lab
        others = (lab_w > 0) & ~own_w
        others_d = (cv2.dilate(others.view(np.uint8), _K3) > 0) & ~own_w
        if other_cand:
            # Another candidate inside the window: its wings may reach into ours.
            flags.append("overlapping_spots")

    noise = c.noise
    # A ring of cells around the window (its background plane, or the sun-off frame's
    # ambient level).
    pu, pv = max(cu1 - cu0, 8), max(cv1 - cv0, 8)
    ru0, ru1 = max(cu0 - pu // 2, 0), min(cu1 + pu // 2, nu)
    rv0, rv1 = max(cv0 - pv // 2, 0), min(cv1 + pv // 2, nv)
    dark_light, ambient = 0.0, math.nan
    if drk is not None:
        # The sun-off frame's own spot light in the window (a neighbour's spot), and its
        # ambient level.
        dark_light, ambient = _K.dark_spot_light(
            drk, float(black_level_dn), u0, v0, s, c.full, rv0, rv1, ru0, ru1, cv0, cv1, cu0,
            cu1, options.k_noise * noise,
        )  # fmt: skip
    # Background: with a dark frame it is already removed (a residual offset only when
    # asked for); without one, a plane through the board samples around the window.
    bg0 = bgu = bgv = 0.0
    uc, vc = 0.5 * (wu0 + wu1), 0.5 * (wv0 + wv1)
    if drk is not None:
        # A residual offset is subtracted only when asked for (ambient drift between the
        # two frames), since a big spot's faint wings bias any estimate of it; it is the
        # median of the board samples away from every component (dilated by two cells).
        if options.dark_offset:
            excl = cv2.dilate((c.labels > 0).view(np.uint8), _K5) > 0
            bgmask = c.full & ~excl
            bg0 = _robust_stats(c.sig[bgmask])[0] if bgmask.sum() >= 24 else c.bg
    else:
        # A plane through the samples in a ring around the window, on the board and
        # outside every component (dilated by two cells).
        bg0, bgu, bgv = _K.ring_plane(
            c.labels, c.full, c.sig, rv0, rv1, ru0, ru1, cv0, cv1, cu0, cu1, s, o,
            uc, vc, noise, c.bg,
        )  # fmt: skip
    use_marker = flat is None and any(
        a0 < wv1 and wv0 < a1 and b0 < wu1 and wu0 < b1 for a0, a1, b0, b1 in g.marker_boxes
    )
    es = g.edge_sum  # edge pixels in the window at all? (most spots lie inside)
    n_edge = int(es[wv1, wu1]) - int(es[wv0, wu1]) - int(es[wv1, wu0]) + int(es[wv0, wu0])
    thr_px = max(options.k_noise * noise, options.rel_threshold * own_peak)
    # Reference point of the moments (near the window's centre: no cancellation).
    iv, iu = wv0 + k * ((wv1 - wv0) // (2 * k)), wu0 + k * ((wu1 - wu0) // (2 * k))
    xref, yref = float(maps.x_m[iv, iu]), float(maps.y_m[iv, iu])
    ax, ay = _area_moments(maps)
    # The other light's share of the noise is shot noise (it scales with the gain, like
    # the spot's): with a sun-off frame, per pixel both frames' (fine_sums reads it,
    # a neighbour's spot too), on the board twice the ambient level; without one, the
    # sun-on frame's background plane [DN].
    if drk is not None:
        amb_shot = 2.0 * ambient if ambient > 0.0 else 0.0
    else:
        amb_shot = max(bg0, 0.0)
    free_c = (~others_d).view(np.uint8) if others_d is not None else _K.EMPTY2_U8
    sums, edge_hit = _K.fine_sums(
        img, drk if drk is not None else img, drk is not None,
        _inv_gain(flat) if flat is not None else _K.EMPTY2_F32, flat is not None,
        float(black_level_dn), u0, v0, wu0, wu1, wv0, wv1, k, bg0, bgu, bgv, uc, vc,
        maps.area_m2, ax, ay, maps.x_m, maps.y_m, xref, yref, maps.marker, use_marker,
        free_c, others_d is not None, o, s, nv, nu, cv0, cu0, maps.edge, n_edge > 0,
        float(sat), float(thr_px), amb_shot,
    )  # fmt: skip
    fs = _K.name_fine_sums(sums)
    flux, s_x, s_y, f2, s_xx, s_yy = fs.flux, fs.s_x, fs.s_y, fs.f2, fs.s_xx, fs.s_yy
    q_read, q_shot, q_flat, fit = fs.q_read, fs.q_shot, fs.q_flat, fs.fit
    peak_dn, sig_sum, n_above, n_sat = fs.peak_dn, fs.sig_sum, fs.n_above, fs.n_sat
    bg_level = bg0
    # The window's flux must stand out of its own noise (sum over a quarter of the rows:
    # x4), and a flux-weighted centroid of on-target pixels lies on the target — unless
    # noise and background residue dominate the weights (a faint residue chosen by the
    # aim).
    flux_sigma = noise * math.sqrt(4.0 * max(q_read[0], 0.0))
    xc = s_x / flux if flux else math.nan
    yc = s_y / flux if flux else math.nan
    half_w = 0.5 * registration.width_m * (1.0 + 1e-6)
    half_h = 0.5 * registration.height_m * (1.0 + 1e-6)
    if not (flux > _MIN_FLUX_SNR * flux_sigma and abs(xc) <= half_w and abs(yc) <= half_h):
        fl = ("no_spot",) if not flux > 0.0 else ("low_snr", "no_spot")
        return _failed(fl, bg=bg_level, noise=noise, n_candidates=n_cand, peak=c.peak)
    ex, ey = xc - xref, yc - yref
    f2 = max(f2, 1e-300)
    sxx = max(s_xx / f2 - ex * ex, 0.0)
    syy = max(s_yy / f2 - ey * ey, 0.0)
    # var(xc) = sum((A (x - xc))^2 var_i) / flux^2 per axis (mean of the two; the sums
    # are over a quarter of the rows: x4 / 2), with var_i = read^2 / gain_i^2 (read noise
    # through the flat field) + k_shot (signal_i + ambient) / gain_i (shot noise) +
    # k_flat signal_i^2 (the flat field's own noise, relative); k_shot, k_flat fitted to
    # the window.
    k_shot, k_flat = _signal_noise(noise, *fit)
    # of the board's noise^2, k_shot amb_shot is the ambient's shot noise; the rest is read
    read2 = max(noise * noise - k_shot * amb_shot, 0.0)
    var_sum = (
        read2 * _about(ex, ey, *q_read)
        + k_shot * _about(ex, ey, *q_shot)
        + k_flat * _about(ex, ey, *q_flat)
    )
    sigma_m = math.sqrt(2.0 * var_sum) / flux
    n_pix = 2 * k * k * int(n_above)  # counted on every second row
    sat_frac = n_sat / n_above if n_above else 0.0
    # The chosen component's samples: on a cell cut by the target edge? next to a marker?
    on_cut, near_marker = _K.own_flags(
        c.labels, lab, sx, sy, sw, sh, g.cov_lt1, g.marker_near, registration.markers is not None
    )
    touches = edge_hit or on_cut
    if near_marker:
        flags.append("on_marker")
    snr = own_peak / noise
    if lab in c.multi_peak:
        flags.append("multiple_peaks")
    if dark_light > options.dark_spot_fraction * k * k * sig_sum:
        flags.append("spot_in_dark")
    if snr < options.min_snr:
        flags.append("low_snr")
    if sat_frac > 0:
        flags.append("saturated")
    if touches:
        flags.append("touches_edge")
    u_px, v_px = _plane_to_pixel_1(registration, xc, yc)
    e_m = n_m = up_m = math.nan
    if target is not None:
        e_m, n_m, up_m = (float(v) for v in target.plane_to_enu(np.array([xc, yc])))
    return SpotResult(
        ok=True, x_m=xc, y_m=yc, u_px=float(u_px), v_px=float(v_px), e_m=e_m, n_m=n_m,
        u_m=up_m, sigma_m=float(sigma_m), size_x_m=math.sqrt(sxx), size_y_m=math.sqrt(syy),
        peak_dn=peak_dn, integrated_dn=k * k * sig_sum, flux_dn_m2=k * k * flux, snr=snr,
        n_pixels=n_pix, saturated_fraction=sat_frac, touches_edge=touches,
        n_candidates=n_cand, background_dn=float(bg_level), noise_dn=float(noise),
        flags=tuple(flags),
    )  # fmt: skip


def _about(ex: float, ey: float, q: float, qx: float, qy: float, qr: float) -> float:
    """Σ q |p − c|² from Σ q, Σ q dx, Σ q dy, Σ q |d|² about a reference point, for the
    point c at offset (ex, ey) from it (clipped at 0 against rounding)."""
    return max(qr - 2.0 * (ex * qx + ey * qy) + (ex * ex + ey * ey) * q, 0.0)


def _signal_noise(
    noise: float, sy1: float, sy2: float, s1: float, s2: float, s3: float, s4: float
) -> tuple[float, float]:
    """Signal-dependent pixel variance var = noise² + c1 S + c2 S² fitted to the sums of
    ``_kernels._row_noise_fit`` (least squares, c1 and c2 >= 0). [DN, 1]"""
    b1 = sy1 - noise * noise * s1  # Σ S (y − noise²)
    b2 = sy2 - noise * noise * s2  # Σ S² (y − noise²)
    det = s2 * s4 - s3 * s3
    if det > 1e-12 * s2 * s4:
        c1 = (b1 * s4 - b2 * s3) / det
        c2 = (s2 * b2 - s3 * b1) / det
        if c1 >= 0.0 and c2 >= 0.0:
            return c1, c2
    # on the boundary: one term alone (the better of the two)
    cand = []
    if s2 > 0.0:
        k1 = max(b1 / s2, 0.0)
        cand.append((-(2.0 * k1 * b1 - k1 * k1 * s2), (k1, 0.0)))
    if s4 > 0.0:
        k2 = max(b2 / s4, 0.0)
        cand.append((-(2.0 * k2 * b2 - k2 * k2 * s4), (0.0, k2)))
    return min(cand)[1] if cand else (0.0, 0.0)


def _plane_to_pixel_1(registration: TargetRegistration, x: float, y: float) -> tuple[float, float]:
    """``registration.plane_to_pixel`` for one point in plain floats (same formulas as
    ``target._apply_h`` and ``target._distort``; the array version costs ~50 us for one
    point)."""
    h_r, k_r, d_r = registration.h_px_from_plane, registration.k_px, registration.dist_coeffs
    d, h, kk = _cached(
        ("p2p", id(h_r), id(k_r), id(d_r)), (h_r, k_r, d_r),
        lambda: (np.ravel(d_r).tolist(), h_r.tolist(), k_r.tolist()),
    )  # fmt: skip
    if len(d) > 5:
        u, v = registration.plane_to_pixel([[x, y]])[0]
        return float(u), float(v)
    (h00, h01, h02), (h10, h11, h12), (h20, h21, h22) = h
    w = h20 * x + h21 * y + h22
    uu = (h00 * x + h01 * y + h02) / w
    vu = (h10 * x + h11 * y + h12) / w
    if not any(d):
        return uu, vu
    k1, k2, p1, p2, k3 = (d + [0.0] * 5)[:5]
    (fx, skew, cx), (_, fy, cy), _ = kk
    yn = (vu - cy) / fy
    xn = (uu - cx - skew * yn) / fx
    r2 = xn * xn + yn * yn
    rad = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = xn * rad + 2.0 * p1 * xn * yn + p2 * (r2 + 2.0 * xn * xn)
    yd = yn * rad + p1 * (r2 + 2.0 * yn * yn) + 2.0 * p2 * xn * yn
    return fx * xd + skew * yd + cx, fy * yd + cy
