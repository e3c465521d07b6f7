"""Sun-spot detection on a sunlit target without a sun-off frame.

On a real plant the target is usually photographed in full sun: white panels at half of
full scale or more, grid seams, bolts, black corner marks, shadow edges of the tower
structure, and a spot whose smoothed peak is only 1.2-2.5x that background with a wide
halo. :func:`~heliostat.vision.classical.detect_spot` expects a dark board (or a sun-off
frame) and takes much of such a board as the spot. :func:`detect_spot_sunlit` models the
sunlit background instead. Pure: arrays in, the same
:class:`~heliostat.vision.classical.SpotResult` out.

Model. A pixel of the target box is ``I = S * (E + F)``: ``E`` the sunlit board, ``F`` the
spot's added light, ``S`` a piecewise-constant shadow factor (1 in full sun) — the flux
adds light, a shadow multiplies all of it. In ``log I`` a shadow is an additive step of
constant height along straight edges, even across the spot. Steps:

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
from scipy import fft as _fft

from heliostat.config import Target
from heliostat.errors import InputError
from heliostat.vision.classical import SpotResult, _failed
from heliostat.vision.signal import _gray_f32, _saturation_level, validate_frame
from heliostat.vision.target import TargetRegistration

__all__ = ["SunlitOptions", "board_is_sunlit", "detect_spot_sunlit"]

_MAD_TO_SIGMA = 1.482602218505602


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
        centroid. [1]
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
    """

    work_px: int = 256
    dark_ratio: float = 0.8
    median_window: float = 0.07
    min_step: float = 0.3
    min_line: float = 0.3
    extent_fraction: float = 0.08
    rel_threshold: float = 0.1
    min_contrast: float = 0.25
    min_detect: float = 0.04
    max_candidates: int = 3
    cand_fraction: float = 0.5


# --------------------------------------------------------------------------- helpers
def _odd(n: float) -> int:
    k = max(3, int(round(n)))
    return k + 1 - k % 2


def _fill(values: NDArray[np.float32], ok: NDArray[np.bool_], sigma: float) -> NDArray[np.float32]:
    """``values`` with the pixels not ``ok`` replaced by a normalised Gaussian average of
    the ``ok`` ones (growing the kernel until every hole is reached)."""
    out = values.copy()
    hole = ~ok
    if not hole.any():
        return out
    w = ok.astype(np.float32)
    vw = np.where(ok, values, 0.0).astype(np.float32)
    s = sigma
    for _ in range(6):
        num = cv2.GaussianBlur(vw, (0, 0), s)
        den = cv2.GaussianBlur(w, (0, 0), s)
        good = hole & (den > 1e-3)
        out[good] = num[good] / den[good]
        hole &= ~good
        if not hole.any():
            break
        s *= 3.0
    if hole.any():
        out[hole] = float(np.median(values[ok])) if ok.any() else 0.0
    return out


def _poisson(gx: NDArray, gy: NDArray) -> NDArray[np.float64]:
    """Least-squares integration of a gradient field (forward differences; ``gx[:, -1]``
    and ``gy[-1]`` unused) with Neumann boundaries, by the DCT [1]_. Mean zero."""
    gx = gx.astype(np.float64).copy()
    gy = gy.astype(np.float64).copy()
    gx[:, -1] = 0.0
    gy[-1, :] = 0.0
    div = gx.copy()
    div[:, 1:] -= gx[:, :-1]
    div += gy
    div[1:, :] -= gy[:-1, :]
    rows, cols = div.shape
    f = _fft.dctn(div, type=2, norm="ortho")
    ky = 2.0 * np.cos(np.pi * np.arange(rows) / rows) - 2.0
    kx = 2.0 * np.cos(np.pi * np.arange(cols) / cols) - 2.0
    den = ky[:, None] + kx[None, :]
    den[0, 0] = 1.0
    f /= den
    f[0, 0] = 0.0
    return _fft.idctn(f, type=2, norm="ortho")


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
    vv, uu = np.nonzero(use)
    if len(uu) > 2000:
        sel = np.linspace(0, len(uu) - 1, 2000).astype(int)
        vv, uu = vv[sel], uu[sel]
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
            sig = _MAD_TO_SIGMA * float(np.median(np.abs(r[keep] - np.median(r[keep])))) + 1e-9
            new = r < 2.5 * sig if upper_only else np.abs(r) < 2.5 * sig
            if new.sum() < 12 or np.array_equal(new, keep):
                break
            keep = new
    x = ((np.arange(cols) - uc) / s).astype(np.float32)[None, :]
    y = ((np.arange(rows) - vc) / s).astype(np.float32)[:, None]
    c = c.astype(np.float32)
    surf = (c[0] + c[2] * y + c[5] * y * y) + x * (c[1] + c[4] * y) + c[3] * x * x
    return surf.astype(np.float32), sig


def _runs(good: NDArray[np.bool_], max_gap: int) -> list[tuple[int, int]]:
    """Index ranges [i0, i1] of ``good`` runs, bridging gaps up to ``max_gap``."""
    idx = np.flatnonzero(good)
    if idx.size == 0:
        return []
    cut = np.flatnonzero(np.diff(idx) > max_gap + 1)
    starts = np.r_[idx[0], idx[cut + 1]]
    ends = np.r_[idx[cut], idx[-1]]
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def _shadow_lines(
    logi: NDArray[np.float32], ok: NDArray[np.bool_], size: float, o: SunlitOptions
) -> list[tuple[float, float, float, float, float]]:
    """Straight shadow edges: segments (u0, v0, u1, v1, step) across which ``logi`` steps
    by at least ``o.min_step`` with the same sign along at least ``o.min_line`` of the
    target size.

    Candidate lines come from a Hough transform of the log-gradient at a 2 px scale
    (a thin seam's gradient is weak there, a step's is not); along each, the step
    ``logi(p + 3 n) - logi(p - 3 n)`` is measured at every pixel and the edge is the
    longest run of one sign (gaps up to 3 % of the size bridged)."""
    sm = cv2.GaussianBlur(logi, (0, 0), 1.0)
    sm2 = cv2.GaussianBlur(logi, (0, 0), 2.0)
    gx = cv2.Sobel(sm2, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(sm2, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    mag = np.hypot(gx, gy)
    # a step h smoothed by sigma = 2 px has a peak gradient h / (2 sqrt(2 pi)) ~ 0.2 h
    inner = cv2.erode(ok.view(np.uint8), np.ones((5, 5), np.uint8)).view(bool)
    edge = (mag > 0.1 * o.min_step) & inner
    min_len = o.min_line * size
    hl = cv2.HoughLines(edge.view(np.uint8), 1, np.pi / 180, int(0.5 * min_len))
    if hl is None:
        return []
    rows, cols = logi.shape
    diag = float(np.hypot(rows, cols))
    tpar = np.arange(-diag, diag, 1.0)
    gap = max(2, int(0.03 * size))
    cand: list[tuple[tuple[float, float, float, float, float], bool]] = []
    taken: list[tuple[float, float]] = []
    tried: list[tuple[float, float]] = []
    for rho, theta in hl.reshape(-1, 2)[:200].astype(float):
        if len(tried) >= 40:
            break
        if any(abs(rho - r0) < 4 and abs(theta - t0) < 0.05 for r0, t0 in tried + taken):
            continue
        tried.append((rho, theta))
        n = np.array([math.cos(theta), math.sin(theta)])
        t = np.array([-n[1], n[0]])
        p = rho * n + tpar[:, None] * t
        pa, pb = p + 3.0 * n, p - 3.0 * n
        inside = (
            (np.minimum(pa[:, 0], pb[:, 0]) >= 0) & (np.maximum(pa[:, 0], pb[:, 0]) <= cols - 1)
            & (np.minimum(pa[:, 1], pb[:, 1]) >= 0) & (np.maximum(pa[:, 1], pb[:, 1]) <= rows - 1)
        )  # fmt: skip
        if inside.sum() < min_len:
            continue
        p, pa, pb = p[inside], pa[inside].astype(np.float32), pb[inside].astype(np.float32)
        la = cv2.remap(sm, pa[:, 0:1], pa[:, 1:2], cv2.INTER_LINEAR)[:, 0]
        lb = cv2.remap(sm, pb[:, 0:1], pb[:, 1:2], cv2.INTER_LINEAR)[:, 0]
        step = la - lb

        def at_border(q: NDArray) -> bool:
            return bool(min(q[0], q[1], cols - 1 - q[0], rows - 1 - q[1]) < 4.0 + gap)

        for sign in (1.0, -1.0):
            runs = []
            for i0, i1 in _runs(sign * step > 0.5 * o.min_step, gap):
                if i1 - i0 + 1 < 0.1 * size:
                    continue
                if abs(float(np.median(step[i0 : i1 + 1]))) >= o.min_step:
                    runs.append((i0, i1))
            if not runs:
                continue
            # a shadow edge comes in from the target's border (a structure's shadow is
            # larger than the target); a spot's straight side does not. Runs of one line
            # (cut where the edge crosses a saturated spot) count together.
            j0, j1 = runs[0][0], runs[-1][1]
            total = sum(b - a + 1 for a, b in runs)
            border = at_border(p[j0]) or at_border(p[j1])
            for a, b in runs:
                med = float(np.median(step[a : b + 1]))
                long_ = border and total >= min_len
                cand.append(((*p[a].tolist(), *p[b].tolist(), med), long_))
                if long_:
                    taken.append((rho, theta))
    out = [c for c, long_ in cand if long_]
    # a polygon's shorter sides: runs that start or end on an accepted edge (a shadow's
    # corner), added until none is left
    short = [c for c, long_ in cand if not long_]
    grew = True
    while grew and short and out:
        grew = False
        for c in list(short):
            if any(_near_segment(c[0:2], e) or _near_segment(c[2:4], e) for e in out):
                out.append(c)
                short.remove(c)
                grew = True
    return out


def _near_segment(pt, seg, tol_px: float = 6.0) -> bool:
    a = np.array(seg[0:2])
    d = np.array(seg[2:4]) - a
    t = float(np.clip(np.dot(np.asarray(pt) - a, d) / max(float(d @ d), 1e-9), 0.0, 1.0))
    return float(np.hypot(*(a + t * d - np.asarray(pt)))) < tol_px


def _band(shape: tuple[int, int], lines, half_px: int) -> NDArray[np.bool_]:
    """The shadow edges drawn ``2 half_px + 1`` wide, each made longer at both ends by
    5 % of the size (the step is not measured within 3 px of the border, and a band that
    stops short of it lets the re-integration leak round its end)."""
    m = np.zeros(shape, np.uint8)
    ext = max(3.0 * half_px + 2.0, 0.05 * max(shape))
    for u0, v0, u1, v1, _ in lines:
        d = np.array([u1 - u0, v1 - v0])
        d = d / max(np.hypot(*d), 1e-9)
        a = np.array([u0, v0]) - ext * d
        b = np.array([u1, v1]) + ext * d
        cv2.line(m, (int(round(a[0])), int(round(a[1]))), (int(round(b[0])), int(round(b[1]))), 1,
                 2 * half_px + 1)  # fmt: skip
    return m.view(bool)


def _component_at(mask: NDArray[np.bool_], v: int, u: int) -> NDArray[np.bool_]:
    n, lab = cv2.connectedComponents(mask.view(np.uint8), connectivity=8)
    if n < 2 or lab[v, u] == 0:
        out = np.zeros_like(mask)
        out[v, u] = True
        return out
    return lab == lab[v, u]


def _ring_fit(x, rel_s, seed, m, on, size, o):  # noqa: ANN001, ANN202
    """Background around one candidate: a quadratic fitted to a ring outside its extent,
    twice. Returns (integrated relative excess over its core, extent mask, background,
    ring scatter, peak row, peak column)."""
    pv, pu = seed
    spot = _component_at(rel_s > o.extent_fraction * rel_s[pv, pu], pv, pu)
    bg = np.ones_like(x)
    sig_b = 0.0
    for _ in range(2):
        area = float(spot.sum())
        r_spot = math.sqrt(area / math.pi)
        r1 = int(round(0.15 * r_spot + 2))
        r2 = int(round(r1 + max(0.06 * size, 0.6 * r_spot)))
        dist = cv2.distanceTransform((~spot).view(np.uint8), cv2.DIST_L2, 3)
        ring = (dist > r1) & (dist <= r2) & m.ok & ~m.band
        if ring.sum() < 30:
            ring = (dist > r1) & m.ok & ~m.band
        bg, sig_b = _robust_surface(x, ring, upper_only=False)
        rel = np.where(on, x / np.maximum(bg, 1e-6) - 1.0, 0.0).astype(np.float32)
        rel_s = cv2.GaussianBlur(rel, (0, 0), max(1.0, 0.02 * size))
        peak_rel = float(rel_s[spot].max())
        if not peak_rel > 0:
            return -math.inf, spot, bg, sig_b, pv, pu
        vmax = np.nonzero(spot)
        i = int(np.argmax(rel_s[vmax]))
        pv, pu = int(vmax[0][i]), int(vmax[1][i])
        spot = _component_at(rel_s > o.extent_fraction * peak_rel, pv, pu)
    core = spot & (rel_s > o.rel_threshold * float(rel_s[pv, pu]))
    return float(rel_s[core].sum()), spot, bg, sig_b, pv, pu


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
@dataclass(frozen=True, slots=True)
class _Model:
    """Background model on the working grid (internal)."""

    work: NDArray[np.float32]  # the frame on the working grid [DN]
    base: NDArray[np.float32]  # texture divided out (empty target, or ones)
    x: NDArray[np.float32]  # unshadowed, marks filled, texture divided out
    log_s: NDArray[np.float32]  # log shadow factor
    lines: list  # shadow edges
    band: NDArray[np.bool_]
    ok: NDArray[np.bool_]  # usable board pixels


def _model(
    work: NDArray[np.float32], on: NDArray[np.bool_], ref: NDArray[np.float32] | None,
    o: SunlitOptions,
) -> _Model:  # fmt: skip
    rows, cols = work.shape
    size = float(max(rows, cols))
    k = _odd(o.median_window * size)

    def dark_of(a: NDArray[np.float32]) -> NDArray[np.bool_]:
        top = max(float(np.percentile(a[on], 99.5)) if on.any() else 1.0, 1e-6)
        a8 = np.clip(a * (255.0 / top), 0, 255).astype(np.uint8)
        med = cv2.medianBlur(a8, min(k, 255)).astype(np.float32) * (top / 255.0)
        return a < o.dark_ratio * med

    ok = on & (work > 0) & ~dark_of(work)
    base = np.ones_like(work)
    if ref is not None:
        ok &= (ref > 0) & ~dark_of(ref)
        base = _fill(np.maximum(ref, 1e-3), ok, 2.0)
    ok = cv2.erode(ok.view(np.uint8), np.ones((3, 3), np.uint8)).view(bool) & on
    logi = np.log(np.maximum(work, 1e-3)) - np.log(base)
    logi = _fill(logi.astype(np.float32), ok, 2.0)
    lines = _shadow_lines(logi, ok, size, o)
    band = np.zeros_like(ok)
    log_s = np.zeros_like(logi)
    lx = logi
    if lines:
        band = _band(logi.shape, lines, 2)
        gx = np.zeros_like(logi)
        gy = np.zeros_like(logi)
        gx[:, :-1] = logi[:, 1:] - logi[:, :-1]
        gy[:-1, :] = logi[1:, :] - logi[:-1, :]
        # the gradients in the band (and into it) hold the step: replace them by their
        # neighbours' (the spot's own slope goes on across a shadow edge)
        bx = band.copy()
        bx[:, :-1] |= band[:, 1:]
        by = band.copy()
        by[:-1, :] |= band[1:, :]
        gx = _fill(gx, ~bx, 2.0)
        gy = _fill(gy, ~by, 2.0)
        rec = _poisson(gx, gy).astype(np.float32)
        diff = logi - rec
        use = ok & ~band
        # (log I - re-integrated) is constant in each region the edges bound; the sunlit
        # level is the highest region's (regions of at least 0.5 % of the board)
        n_reg, lab = cv2.connectedComponents(use.view(np.uint8), connectivity=4)
        lit = -math.inf
        d_flat, l_flat = diff.ravel(), lab.ravel()
        for r_ in range(1, n_reg):
            sel = l_flat == r_
            if sel.sum() >= 0.005 * use.size:
                lit = max(lit, float(np.median(d_flat[sel])))
        if not math.isfinite(lit):
            lit = float(np.percentile(diff[use], 90)) if use.any() else 0.0
        log_s = np.minimum(diff - lit, 0.0).astype(np.float32)
        # a shadow factor is piecewise constant: smooth the residue inside each region
        lx = logi - log_s
    return _Model(work, base, np.exp(lx).astype(np.float32), log_s, lines, band, ok)


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
    if float(np.median(work[on])) <= 0:
        return _failed(("all_black", "no_spot"))
    m = _model(work, on, ref, o)
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
        (rel_s > o.cand_fraction * top).view(np.uint8), connectivity=8
    )
    ids = [i for i in range(1, n_lab) if stats[i, cv2.CC_STAT_AREA] >= 4]
    if not ids:
        ids = list(range(1, n_lab))
    sums = np.bincount(lab.ravel(), weights=rel_s.ravel(), minlength=n_lab)
    peaks = []
    for i in sorted(ids, key=lambda i: -sums[i]):
        vv, uu = np.nonzero(lab == i)
        k = int(np.argmax(rel_s[vv, uu]))
        peaks.append((int(vv[k]), int(uu[k])))
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
    back_w = bg * m.base * np.exp(m.log_s)
    sig_w = (x - bg) * m.base * np.exp(m.log_s)  # signal with marks filled [DN]
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
    iv, iu = np.nonzero(spot_f)
    j = int(np.argmax(smooth[iv, iu]))
    core = _component_at(smooth > o.rel_threshold * peak_sig, int(iv[j]), int(iu[j]))
    w = np.where(core, signal, 0.0).astype(np.float64) * maps.area_m2
    flux = float(w.sum())
    if not flux > 0:
        return _failed(("no_spot",), n_candidates=n_cand)
    xm, ym = maps.x_m.astype(np.float64), maps.y_m.astype(np.float64)
    xc = float((w * xm).sum() / flux)
    yc = float((w * ym).sum() / flux)
    sxx = max(float((w * (xm - xc) ** 2).sum() / flux), 0.0)
    syy = max(float((w * (ym - yc) ** 2).sum() / flux), 0.0)
    a2 = maps.area_m2.astype(np.float64) ** 2 * core
    var = noise * noise * float((a2 * ((xm - xc) ** 2 + (ym - yc) ** 2)).sum()) / 2.0
    sigma_m = math.sqrt(var) / flux
    # --- flags
    flags: list[str] = []
    bv, bu = int(iv[j]), int(iu[j])
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
