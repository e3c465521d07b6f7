"""Sun-spot detection on a sunlit target without a sun-off frame.

On a real plant the target is usually photographed in full sun: white panels at half of
full scale or more, grid seams, bolts, black corner marks, shadow edges of the tower
structure, and a spot whose smoothed peak is only 1.2-2.5x that background with a wide
halo. :func:`~heliostat.vision.classical.detect_spot` expects a dark board (or a sun-off
frame) and takes much of such a board as the spot. :func:`detect_spot_sunlit` models the
sunlit background instead. Pure: arrays in, the same
:class:`~heliostat.vision.classical.SpotResult` out.

Model. A pixel of the target box is ``I = S * (E + F)``: ``E`` the sunlit board, ``F``
the spot's added light, ``S`` a piecewise-constant shadow factor (1 in full sun) — the
flux adds light, a shadow multiplies all of it. In ``log I`` a shadow is an additive step
of constant height along straight edges, even across the spot. Steps (1-2 in
:mod:`heliostat.vision.shadows`):

1. **Dark structures** (marks, seams, bolts, the edge of the box): pixels darker than
   ``dark_ratio`` times the local median (window ``median_window`` of the target size)
   are masked and filled from their neighbours (normalised convolution in ``log I``).
2. **Shadow edges**: long straight lines (``cv2.HoughLinesP`` on the log-gradient) across
   which ``log I`` steps by at least ``min_step`` with a consistent sign along most of the
   line. Their gradients are replaced by their neighbours' (zeroing them, as in shadow
   removal by gradient re-integration [1]_, also drops the spot's slope there: 15 %
   larger median error on the train split) and ``log I`` re-integrated (a Poisson solve
   by DCT): ``log S`` is the difference, taken as 0 in the brightest region.
3. **Candidates**: the unshadowed image divided by a robust quadratic surface of the
   board (iterative clipping of bright residuals) gives the relative excess; its blobs
   above half the highest (smoothed) excess are the candidates, the ones holding the most
   excess first (the nearest the aim alone when one is given).
4. **Background around the spot**: for each of the first ``max_candidates``, a quadratic
   surface fitted to a ring outside its extent (excess above ``extent_fraction`` of the
   peak), with 2.5-sigma clipping, twice (the extent from the first fit refines the
   second). The candidate keeping the most excess over its own ring is the spot: a
   residue of the board (a corner, a shadow's missed side) fits into its ring.
5. **Centroid**: signal = image - background x shadow; the flux-weighted centroid of the
   spot's pixels whose smoothed signal exceeds ``rel_threshold`` of its peak, each
   weighted by its target-plane area and placed at its target-plane position
   (:class:`~heliostat.vision.target.PlaneMaps`), so it is in metres like the
   dark-board detector's.

With ``empty_target`` (the same target, sun on, spot absent, taken at another moment by
the same camera) the board's texture divides out first: the steps above run on the ratio
``image / empty_target`` (its exposure difference is a constant factor there, and any
shadow that moved is again a step), which leaves a near-flat background.

Flags (see :data:`~heliostat.vision.classical.FLAGS`): ``low_contrast`` (relative excess
below ``min_contrast``: a background error of a few % of the board moves the centroid),
``shadow_edge`` (a shadow edge crosses the spot: check the centroid), ``touches_edge``
(the spot reaches the target's edge: part may be off it), ``saturated`` (spot pixels at
the saturation level: the flux there is unknown), ``no_spot``.

References
----------
.. [1] G. D. Finlayson, S. D. Hordley and M. S. Drew, "Removing shadows from images,"
   ECCV 2002, LNCS 2353, pp. 823-836. doi:10.1007/3-540-47979-1_55
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray

from heliostat.config import Target
from heliostat.errors import InputError
from heliostat.vision.classical import SpotResult, _failed
from heliostat.vision.shadows import _median, board_model
from heliostat.vision.signal import _gray_f32, _saturation_level, validate_frame
from heliostat.vision.target import TargetRegistration

__all__ = ["CENTROID_LEVELS", "SunlitOptions", "board_is_sunlit", "detect_spot_sunlit"]

_MAD_TO_SIGMA = 1.482602218505602

#: Which part of the spot carries the reported centroid: the fraction of the smoothed
#: signal's peak above which pixels count (:attr:`SunlitOptions.rel_threshold`).
#:
#: ``"core"`` (0.5, the default): the light above half the peak, weighted by itself. On a
#: sunlit board the halo's signal is of the order of the background model's error (a few
#: % of a board that is as bright as the spot's added peak or brighter), so a centroid
#: that takes in the halo takes in that error; a coma-like tail of a canted mirror used
#: off-axis moves the whole-flux centroid away from the reflected central ray while the
#: core stays with it; and the plant's own classical measurement (HeliOS at Jülich) is a
#: threshold-and-moments centroid. On the raw Jülich frames (``paint/raw``) the core lies
#: 2.5-4 cm from a threshold-and-moments centroid, the whole flux 4-10 cm; on PAINT's two
#: records with a flux image HeliOS's point lies 4.4 and 5.9 cm from the image's core and
#: 2.4 and 14.9 cm from its whole flux (``bench/vision_real.py``: ``paint_raw_frames``,
#: ``helios_vs_flux_image``).
#: ``"whole"`` (0.1): the centroid of nearly all the light, halo included: the truth of
#: the UTIS composites and of a flux measurement (what UTIS's own ENU point is).
#: The two differ by the halo's asymmetry: 2.1 px median, 11 px p95 on 256 px
#: composites (``bench/vision_real.py`` reports both truths).
CENTROID_LEVELS: dict[str, float] = {"core": 0.5, "whole": 0.1}


@dataclass(frozen=True, slots=True)
class SunlitOptions:
    """Tuning of :func:`detect_spot_sunlit` (sizes as fractions of the target's size in
    the image, so they hold for any resolution). Tuned on the train split of
    ``bench/vision_real.py``'s composites only.

    Attributes
    ----------
    work_px : int
        The background model is computed on the target box resampled so its longer side
        is at most this. [px]
    dark_ratio : float
        Pixels below this fraction of the local median are dark structures. [1]
    median_window : float
        Local-median window for the dark structures, of the target size. [1]
    min_step : float
        Smallest shadow edge: its step in natural-log intensity (0.3: the light drops by
        26 %; a shadow of the direct sun leaves only the diffuse light, far less, while
        a spot's straight side or a panel's edge steps by 0.2 or less). [1]
    min_line : float
        Shortest shadow edge, of the target size. [1]
    extent_fraction : float
        The spot's extent for the background ring: smoothed excess above this fraction
        of its peak. [1]
    rel_threshold : float
        Pixels whose smoothed signal is above this fraction of its peak carry the
        centroid. [1] The default, 0.5 (:data:`CENTROID_LEVELS` ``"core"``), measures
        the spot's core; 0.1 (``"whole"``) nearly the whole flux with its halo. See
        :data:`CENTROID_LEVELS` for why the core is the default.
    min_contrast : float
        Below this relative excess (spot peak / board under it) the result is flagged
        ``low_contrast``. [1]
    min_detect : float
        Below this relative excess, or under 5 noise sigmas, there is no spot. [1]
    max_candidates : int
        Candidate blobs (above ``cand_fraction`` of the highest excess) given a ring fit
        each; the one keeping the most excess over its own ring is the spot. [1]
    cand_fraction : float
        See ``max_candidates``. [1]
    aim_fraction : float
        With an expected position, blobs above this fraction of the highest excess are
        candidates and the one nearest the aim is taken (a neighbour's spot may be
        brighter). [1]
    """

    work_px: int = 256
    dark_ratio: float = 0.8
    median_window: float = 0.07
    min_step: float = 0.3
    min_line: float = 0.3
    extent_fraction: float = 0.08
    rel_threshold: float = 0.5
    min_contrast: float = 0.25
    min_detect: float = 0.04
    max_candidates: int = 3
    cand_fraction: float = 0.5
    aim_fraction: float = 0.2


# --------------------------------------------------------------------------- helpers
def _median_not_positive(a: NDArray) -> bool:
    """``np.median(a) <= 0`` for a 1-d array, from a count (the median itself only when
    exactly half of the values are not positive)."""
    n = a.size
    k = int(np.count_nonzero(a <= 0))
    if 2 * k > n:
        return True
    if 2 * k < n:
        return False
    return bool(np.median(a) <= 0)


def _quad_design(u: NDArray, v: NDArray, uc: float, vc: float, s: float) -> NDArray:
    x = (u - uc) / s
    y = (v - vc) / s
    return np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=1)


def _robust_surface(
    img: NDArray, use: NDArray[np.bool_], upper_only: bool, iters: int = 6
) -> tuple[NDArray[np.float32], float]:
    """A quadratic surface fitted to ``img[use]`` with iterative clipping (of residuals
    above 2.5 sigma only, or both sides); returns it over the whole array and the robust
    sigma of the kept residuals."""
    rows, cols = img.shape
    idx = np.flatnonzero(use)  # row-major, as np.nonzero (which is ~8x slower in 2-d)
    if len(idx) > 2000:
        idx = idx[np.linspace(0, len(idx) - 1, 2000).astype(int)]
    vv, uu = np.divmod(idx, cols)
    z = img[vv, uu].astype(np.float64)
    uc, vc, s = cols / 2.0, rows / 2.0, float(max(rows, cols))
    a = _quad_design(uu.astype(float), vv.astype(float), uc, vc, s)
    if len(z) < 12:
        c = np.array([np.median(z) if len(z) else 0.0, 0, 0, 0, 0, 0], float)
        sig = 0.0
    else:
        keep = np.ones(len(z), bool)
        c = np.zeros(6)
        sig = 0.0
        for _ in range(iters):
            ak = a[keep]
            c = np.linalg.solve(ak.T @ ak + 1e-9 * np.eye(6), ak.T @ z[keep])
            r = z - a @ c
            rk = r[keep]
            sig = _MAD_TO_SIGMA * _median(np.abs(rk - _median(rk))) + 1e-9
            new = r < 2.5 * sig if upper_only else np.abs(r) < 2.5 * sig
            if new.sum() < 12 or np.array_equal(new, keep):
                break
            keep = new
    x = ((np.arange(cols) - uc) / s).astype(np.float32)[None, :]
    y = ((np.arange(rows) - vc) / s).astype(np.float32)[:, None]
    c = c.astype(np.float32)
    surf = (c[0] + c[2] * y + c[5] * y * y) + x * (c[1] + c[4] * y) + c[3] * x * x
    return surf.astype(np.float32), sig


def _component_at(mask: NDArray[np.bool_], v: int, u: int) -> NDArray[np.bool_]:
    n, lab = cv2.connectedComponents(mask.view(np.uint8), connectivity=8)
    if n < 2 or lab[v, u] == 0:
        out = np.zeros_like(mask)
        out[v, u] = True
        return out
    return lab == lab[v, u]


def _bbox(mask: NDArray[np.bool_]) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1) of the True pixels, end exclusive."""
    rr = np.flatnonzero(mask.any(axis=1))
    cc = np.flatnonzero(mask.any(axis=0))
    return int(rr[0]), int(rr[-1]) + 1, int(cc[0]), int(cc[-1]) + 1


def _ring_fit(x, rel_s, seed, m, on, size, o):  # noqa: ANN001, ANN202
    """Background around one candidate: a quadratic fitted to a ring outside its extent,
    twice. Returns (integrated relative excess over its core, extent mask, background,
    ring scatter, peak row, peak column).

    Speed (the same result): the ring's distance transform and the smoothed excess are
    computed in a box around the candidate only, with margins that make them equal to
    the full-image ones there (a 3x3 chamfer distance path stays in the bounding box of
    its ends; a Gaussian reaches 4 sigma); when the ring or the new extent would reach
    the box's edge the full image is used."""
    rows, cols = x.shape
    pv, pu = seed
    spot = _component_at(rel_s > o.extent_fraction * rel_s[pv, pu], pv, pu)
    bg = np.ones_like(x)
    sig_b = 0.0
    sigma = max(1.0, 0.02 * size)
    k_rad = int(round(sigma * 8 + 1)) // 2 + 1  # cv2's kernel radius for float, +1
    for _ in range(2):
        area = float(spot.sum())
        r_spot = math.sqrt(area / math.pi)
        r1 = int(round(0.15 * r_spot + 2))
        r2 = int(round(r1 + max(0.06 * size, 0.6 * r_spot)))
        a0, a1, b0, b1 = _bbox(spot)
        # the chamfer distance (a = 0.955) is at least 0.955 x the Euclidean one
        d_m = int(math.ceil(r2 / 0.95)) + 2
        ra0, ra1, rb0, rb1 = (
            max(0, a0 - d_m),
            min(rows, a1 + d_m),
            max(0, b0 - d_m),
            min(cols, b1 + d_m),
        )
        sub = (slice(ra0, ra1), slice(rb0, rb1))
        dist = cv2.distanceTransform((~spot[sub]).view(np.uint8), cv2.DIST_L2, 3)
        ring_b = (dist > r1) & (dist <= r2) & m.ok[sub] & ~m.band[sub]
        if ring_b.sum() < 30:
            dist = cv2.distanceTransform((~spot).view(np.uint8), cv2.DIST_L2, 3)
            ring = (dist > r1) & m.ok & ~m.band
        else:
            ring = np.zeros_like(spot)
            ring[sub] = ring_b
        bg, sig_b = _robust_surface(x, ring, upper_only=False)
        # the smoothed excess, in a box around the extent (+ the kernel's reach where
        # the box is not at the image's edge)
        rel_s, box = _smoothed_excess(x, bg, on, sigma, spot, k_rad)
        peak_rel = float(rel_s[spot].max())
        if not peak_rel > 0:
            return -math.inf, spot, bg, sig_b, pv, pu
        i = int(np.argmax(np.where(spot, rel_s, -np.inf)))
        pv, pu = divmod(i, cols)
        spot = _component_at(rel_s > o.extent_fraction * peak_rel, pv, pu)
        if box is not None and _reaches_box_edge(spot, box, rows, cols):
            rel_s = _excess_blur(x, bg, on, sigma)  # the extent may go on: full image
            spot = _component_at(rel_s > o.extent_fraction * peak_rel, pv, pu)
    core = spot & (rel_s > o.rel_threshold * float(rel_s[pv, pu]))
    return float(rel_s[core].sum()), spot, bg, sig_b, pv, pu


def _smoothed_excess(x, bg, on, sigma, spot, k_rad):  # noqa: ANN001, ANN202
    """``GaussianBlur(x / bg - 1 on the target, sigma)`` in a box around ``spot`` (its
    extent grown by its size on each side), -inf outside, and the box (None: the full
    image). Inside the box it equals the full-image blur: the blurred part reaches
    ``k_rad`` further wherever the box is not at the image's edge."""
    rows, cols = x.shape
    a0, a1, b0, b1 = _bbox(spot)
    pad = max(a1 - a0, b1 - b0)  # room for the new extent to grow
    c0, c1, d0, d1 = max(0, a0 - pad), min(rows, a1 + pad), max(0, b0 - pad), min(cols, b1 + pad)
    if c0 == 0 and d0 == 0 and c1 == rows and d1 == cols:
        return _excess_blur(x, bg, on, sigma), None
    e0, e1 = max(0, c0 - k_rad), min(rows, c1 + k_rad)
    f0, f1 = max(0, d0 - k_rad), min(cols, d1 + k_rad)
    sb = _excess_blur(x[e0:e1, f0:f1], bg[e0:e1, f0:f1], on[e0:e1, f0:f1], sigma)
    out = np.full_like(x, -np.inf)
    out[c0:c1, d0:d1] = sb[c0 - e0 : c1 - e0, d0 - f0 : d1 - f0]
    return out, (c0, c1, d0, d1)


def _reaches_box_edge(mask, box, rows, cols) -> bool:  # noqa: ANN001
    """True when ``mask`` touches a side of ``box`` that is not the image's edge."""
    c0, c1, d0, d1 = box
    return bool(
        (c0 > 0 and mask[c0, d0:d1].any()) or (c1 < rows and mask[c1 - 1, d0:d1].any())
        or (d0 > 0 and mask[c0:c1, d0].any()) or (d1 < cols and mask[c0:c1, d1 - 1].any())
    )  # fmt: skip


def _excess_blur(x, bg, on, sigma):  # noqa: ANN001, ANN202
    rel = np.where(on, x / np.maximum(bg, 1e-6) - 1.0, 0.0).astype(np.float32)
    return cv2.GaussianBlur(rel, (0, 0), sigma)


def board_is_sunlit(
    image: NDArray, registration: TargetRegistration, black_level_dn: float = 0.0,
    bit_depth: int | None = None,
) -> bool:  # fmt: skip
    """True when the board itself is lit: the median of the target's pixels (above the
    black level) is above 15 % of full scale (a dark board with a spot has its median near
    the black level). Full scale is ``2**bit_depth - 1``, 255 for 8-bit frames, and for
    other frames without a bit depth (12-bit data in 16-bit files) the target's 99.9th
    percentile.

    ``heliostat detect --background auto`` uses the sunlit detector when this holds and
    there is no sun-off frame."""
    img = validate_frame(image, "image", registration.image_size_px)
    u0, v0, u1, v1 = registration.maps.roi
    box = _gray_f32(img[v0:v1, u0:u1]) - np.float32(black_level_dn)
    on = registration.maps.coverage >= 0.999
    vals = box[on] if on.any() else box.ravel()
    vals = vals[:: max(1, vals.size // 20000)]
    if bit_depth is not None or img.dtype == np.uint8:
        top = _saturation_level(img.dtype, bit_depth) - black_level_dn
    else:
        top = float(np.percentile(vals, 99.9))
    return top > 0 and float(np.median(vals)) > 0.15 * top


# --------------------------------------------------------------------------- detector
def detect_spot_sunlit(
    image: NDArray,
    registration: TargetRegistration,
    *,
    empty_target: NDArray | None = None,
    empty_registration: TargetRegistration | None = None,
    dark: NDArray | None = None,
    flat: object | None = None,
    black_level_dn: float = 0.0,
    bit_depth: int | None = None,
    expected_xy_m: ArrayLike | None = None,
    expected_flux_dn_m2: float | None = None,
    target: Target | None = None,
    options: SunlitOptions | None = None,
) -> SpotResult:
    """Find the sun spot on a sunlit target (no sun-off frame) and measure its centroid.

    Parameters
    ----------
    image : ndarray (H, W) or (H, W, 3|4)
        The frame (8/16-bit or float, grey or BGR(A)).
    registration : TargetRegistration
        Pixel ↔ target-plane mapping for this camera (same image size).
    empty_target : ndarray, optional
        The same target with the sun on and no spot, taken by the same camera at another
        moment (same size and registration; exposure and shadows may differ): the board's
        texture (seams, marks, panels) divides out. Its exposure may differ: the ratio
        ``image / empty_target`` is fitted around the spot like the board itself.
    empty_registration : TargetRegistration, optional
        The empty target's own registration when the camera was re-registered between
        the two (same camera, same image size): the empty target is resampled onto this
        frame's pixels through the target plane. Default: the same registration.
    dark, flat, expected_flux_dn_m2
        Accepted for a drop-in switch with the dark-board detector; a dark frame is not
        used here (with one, use :func:`~heliostat.vision.classical.detect_spot`).
    black_level_dn : float
        Sensor offset, subtracted first. [DN]
    bit_depth : int, optional
        ADC bits, for the saturation level (default: the dtype's range).
    expected_xy_m : array_like (2,), optional
        The commanded aim point [m]: among bright candidates the one nearest it is taken.
    target : Target, optional
        The target's pose, to report the centroid in ENU.
    options : SunlitOptions, optional
        Thresholds and sizes.

    Returns
    -------
    SpotResult
        As :func:`~heliostat.vision.classical.detect_spot`'s; ``background_dn`` is the
        background under the centroid, ``noise_dn`` the scatter of the board around the
        fitted background (texture included), and ``sigma_m`` propagates that scatter.

    Raises
    ------
    InputError
        A frame or empty-target image not of the registered size, a bad expected position.
    """
    o = options or SunlitOptions()
    img = validate_frame(image, "image", registration.image_size_px)
    ref_img = None
    if empty_target is not None:
        ref_img = validate_frame(empty_target, "empty_target", registration.image_size_px)
    exp = None
    if expected_xy_m is not None:
        exp = np.asarray(expected_xy_m, dtype=float).ravel()
        if exp.shape != (2,) or not np.all(np.isfinite(exp)):
            raise InputError(f"expected_xy_m: expected 2 finite numbers, got {expected_xy_m!r}")
    if not math.isfinite(black_level_dn):
        raise InputError(f"black_level_dn: expected a finite number, got {black_level_dn!r}")
    sat = _saturation_level(img.dtype, bit_depth)
    maps = registration.maps
    u0, v0, u1, v1 = maps.roi
    box = _gray_f32(img[v0:v1, u0:u1]) - np.float32(black_level_dn)
    rh, rw = box.shape
    cover = maps.coverage
    on_full = cover >= 0.999
    if not on_full.any():
        return _failed(("no_spot",))
    # working grid
    f = min(1.0, o.work_px / float(max(rh, rw)))
    wsz = (max(8, int(round(rw * f))), max(8, int(round(rh * f))))

    def down(a: NDArray) -> NDArray[np.float32]:
        if f == 1.0:
            return a.astype(np.float32)
        return cv2.resize(a.astype(np.float32), wsz, interpolation=cv2.INTER_AREA)

    work = down(box)
    on = down(on_full.astype(np.float32)) >= 0.999
    ref = None
    if ref_img is not None:
        ref_g = _gray_f32(ref_img) - np.float32(black_level_dn)
        if empty_registration is not None and empty_registration is not registration:
            # this frame's pixels -> target plane -> the empty target's pixels
            xy = np.stack([maps.x_m.ravel(), maps.y_m.ravel()], axis=1)
            uv = empty_registration.plane_to_pixel(xy).astype(np.float32)
            ref_box = cv2.remap(
                ref_g, uv[:, 0].reshape(rh, rw), uv[:, 1].reshape(rh, rw), cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REPLICATE,
            )  # fmt: skip
        else:
            ref_box = ref_g[v0:v1, u0:u1]
        ref = down(ref_box)
    if _median_not_positive(work[on]):
        return _failed(("all_black", "no_spot"))
    m = board_model(
        work, on, ref, dark_ratio=o.dark_ratio, median_window=o.median_window,
        min_step=o.min_step, min_line=o.min_line,
    )  # fmt: skip
    rows, cols = work.shape
    size = float(max(rows, cols))
    # --- seed: relative excess over a robust surface of the whole board
    x = m.x
    surf, _ = _robust_surface(x, m.ok & ~m.band, upper_only=True)
    rel = np.where(on, x / np.maximum(surf, 1e-6) - 1.0, 0.0).astype(np.float32)
    rel_s = cv2.GaussianBlur(rel, (0, 0), max(1.0, 0.02 * size))
    top = float(rel_s[on].max()) if on.any() else 0.0
    if not top >= o.min_detect:
        return _failed(("low_contrast", "no_spot"), peak=top)
    # candidates: the blobs above half the highest excess; the one holding the most
    # excess (a spot is a broad bump; a residue along a shadow edge is thin)
    n_lab, lab, stats, _ = cv2.connectedComponentsWithStats(
        (rel_s > (o.cand_fraction if exp is None else o.aim_fraction) * top).view(np.uint8),
        connectivity=8,
    )
    ids = [i for i in range(1, n_lab) if stats[i, cv2.CC_STAT_AREA] >= 4]
    if not ids:
        ids = list(range(1, n_lab))
    sums = np.bincount(lab.ravel(), weights=rel_s.ravel(), minlength=n_lab)
    peaks = []
    for i in sorted(ids, key=lambda i: -sums[i]):
        # the blob's first highest pixel (row-major), searched in its bounding box
        bu, bv, bw, bh = (int(t) for t in stats[i, :4])
        sub = np.where(
            lab[bv : bv + bh, bu : bu + bw] == i, rel_s[bv : bv + bh, bu : bu + bw], -np.inf
        )
        kv, ku = divmod(int(np.argmax(sub)), bw)
        peaks.append((bv + kv, bu + ku))
    n_cand = len(peaks)
    if exp is not None and n_cand > 1:
        uv = np.array([[u0 + (u + 0.5) / f - 0.5, v0 + (v + 0.5) / f - 0.5] for v, u in peaks])
        xy = registration.pixel_to_plane(uv)
        tries = [peaks[int(np.argmin(np.hypot(xy[:, 0] - exp[0], xy[:, 1] - exp[1])))]]
    else:
        tries = peaks[: o.max_candidates]
    # --- local background in a ring around each candidate; the one that keeps the most
    # excess over its own ring wins (a residue of the board fits into its ring, a spot
    # does not)
    best = None
    for seed in tries:
        r_ = _ring_fit(x, rel_s, seed, m, on, size, o)
        if best is None or r_[0] > best[0]:
            best = r_
    _, spot, bg, sig_b, pv, pu = best
    # background in image DN on the working grid, then the full-resolution box
    shade = np.exp(m.log_s)
    back_w = bg * m.base * shade
    sig_w = (x - bg) * m.base * shade  # signal with marks filled [DN]
    if f == 1.0:
        back = back_w
        sig_fill = sig_w
    else:
        back = cv2.resize(back_w, (rw, rh), interpolation=cv2.INTER_LINEAR)
        sig_fill = cv2.resize(sig_w, (rw, rh), interpolation=cv2.INTER_LINEAR)
    ok_full = m.ok if f == 1.0 else cv2.resize(
        m.ok.astype(np.float32), (rw, rh), interpolation=cv2.INTER_NEAREST) > 0.5  # fmt: skip
    signal = np.where(ok_full, box - back, sig_fill)
    signal[cover <= 0] = 0.0
    smooth = cv2.GaussianBlur(signal, (0, 0), max(1.0, 0.01 * max(rh, rw)))
    spot_f = spot if f == 1.0 else cv2.resize(
        spot.astype(np.uint8), (rw, rh), interpolation=cv2.INTER_NEAREST).view(bool)  # fmt: skip
    if not spot_f.any():
        return _failed(("no_spot",), n_candidates=n_cand)
    peak_sig = float(smooth[spot_f].max())
    # the ring's scatter, in frame DN at the spot (through the texture and the shadow)
    noise = float(sig_b * m.base[pv, pu] * math.exp(float(m.log_s[pv, pu])))
    if not peak_sig > max(5.0 * noise, 0.0):
        return _failed(("low_snr", "no_spot"), bg=float(np.median(back)), noise=noise,
                       n_candidates=n_cand, peak=peak_sig)  # fmt: skip
    bv, bu = divmod(int(np.argmax(np.where(spot_f, smooth, -np.inf))), rw)  # first highest
    core = _component_at(smooth > o.rel_threshold * peak_sig, bv, bu)
    # the moments over the core's bounding box only (the weights are zero outside it)
    c0, c1, d0, d1 = _bbox(core)
    cb = (slice(c0, c1), slice(d0, d1))
    core_b = core[cb]
    w = np.where(core_b, signal[cb], 0.0).astype(np.float64) * maps.area_m2[cb]
    flux = float(w.sum())
    if not flux > 0:
        return _failed(("no_spot",), n_candidates=n_cand)
    xm, ym = maps.x_m[cb].astype(np.float64), maps.y_m[cb].astype(np.float64)
    xc = float((w * xm).sum() / flux)
    yc = float((w * ym).sum() / flux)
    sxx = max(float((w * (xm - xc) ** 2).sum() / flux), 0.0)
    syy = max(float((w * (ym - yc) ** 2).sum() / flux), 0.0)
    a2 = maps.area_m2[cb].astype(np.float64) ** 2 * core_b
    var = noise * noise * float((a2 * ((xm - xc) ** 2 + (ym - yc) ** 2)).sum()) / 2.0
    sigma_m = math.sqrt(var) / flux
    # --- flags
    flags: list[str] = []
    back_pk = float(back[bv, bu])
    contrast = peak_sig / back_pk if back_pk > 0 else math.inf
    if contrast < o.min_contrast:
        flags.append("low_contrast")
    # the spot's extent (for touches_edge): above the extent fraction and the noise
    ext_f = smooth > max(o.extent_fraction * peak_sig, 3.0 * noise)
    ext_f = _component_at(ext_f, bv, bu)
    raw = img[v0:v1, u0:u1]
    raw_g = raw if raw.ndim == 2 else raw.max(axis=2)
    n_sat = int(np.count_nonzero((raw_g >= sat) & core))
    n_core = int(core.sum())
    sat_frac = n_sat / n_core if n_core else 0.0
    if sat_frac > 0:
        flags.append("saturated")
    edge_px = (cover < 0.999) & (cover > 0)
    border = np.zeros_like(edge_px)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    touches = bool(np.any(ext_f & (edge_px | border)))
    if touches:
        flags.append("touches_edge")
    if m.lines:
        band_f = m.band
        if f != 1.0:
            band_f = cv2.resize(m.band.view(np.uint8), (rw, rh), interpolation=cv2.INTER_NEAREST)
            band_f = band_f.view(bool)
        if np.any(band_f & core):
            flags.append("shadow_edge")
    if n_cand > 1:
        flags.append("multiple_candidates")
    u_px, v_px = (float(t) for t in registration.plane_to_pixel([[xc, yc]])[0])
    e_m = n_m = up_m = math.nan
    if target is not None:
        e_m, n_m, up_m = (float(t) for t in target.plane_to_enu(np.array([xc, yc])))
    peak_dn = float(signal[core].max())
    integ = float(signal[core].sum())
    return SpotResult(
        True, xc, yc, u_px, v_px, e_m, n_m, up_m, float(sigma_m), math.sqrt(sxx),
        math.sqrt(syy), peak_dn, integ, flux, float(peak_sig / noise) if noise > 0 else math.inf,
        n_core, float(sat_frac), touches, n_cand, back_pk, noise, tuple(flags),
    )  # fmt: skip
