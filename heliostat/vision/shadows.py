"""The sunlit board's shadows and dark structures, removed (the background model of
:func:`heliostat.vision.sunlit.detect_spot_sunlit`, steps 1-2).

In ``log I`` a shadow is an additive step of constant height along straight edges, even
across the spot; :func:`shadow_lines` finds those edges and :func:`board_model` removes
them by re-integrating the log-gradient with the edges' gradients replaced by their
neighbours' (a Poisson solve by DCT, as in shadow removal by gradient re-integration
[1]_). Dark structures (marks, seams, bolts) are filled from their neighbours first.

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
from numpy.typing import NDArray
from scipy import fft as _fft

__all__ = ["BoardModel", "band_mask", "board_model", "fill_holes", "shadow_lines"]


def _odd(n: float) -> int:
    k = max(3, int(round(n)))
    return k + 1 - k % 2


def fill_holes(
    values: NDArray[np.float32], ok: NDArray[np.bool_], sigma: float
) -> NDArray[np.float32]:
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


def _median(a: NDArray) -> float:
    """``np.median`` of a 1-d float array (the same value) by one partition, without its
    generic-reduction overhead (called hundreds of times per frame)."""
    n = a.size
    h = n // 2
    if n % 2:
        return float(np.partition(a, h)[h])
    p = np.partition(a, (h - 1, h))
    return float((p[h - 1] + p[h]) / 2.0)


def _sample(img: NDArray[np.float32], pts: NDArray[np.float32]) -> NDArray[np.float32]:
    """Bilinear samples of ``img`` at (u, v) points, by one ``cv2.remap`` on maps laid out
    512 wide (``cv2.remap`` takes at most 32767 rows)."""
    n = len(pts)
    k = -(-n // 512) * 512
    mu = np.zeros(k, np.float32)
    mv = np.zeros(k, np.float32)
    mu[:n], mv[:n] = pts[:, 0], pts[:, 1]
    out = cv2.remap(img, mu.reshape(-1, 512), mv.reshape(-1, 512), cv2.INTER_LINEAR)
    return out.ravel()[:n]


def _runs(good: NDArray[np.bool_], max_gap: int) -> list[tuple[int, int]]:
    """Index ranges [i0, i1] of ``good`` runs, bridging gaps up to ``max_gap``."""
    idx = np.flatnonzero(good)
    if idx.size == 0:
        return []
    cut = np.flatnonzero(np.diff(idx) > max_gap + 1)
    starts = np.r_[idx[0], idx[cut + 1]]
    ends = np.r_[idx[cut], idx[-1]]
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def shadow_lines(
    logi: NDArray[np.float32], ok: NDArray[np.bool_], size: float, min_step: float,
    min_line: float,
) -> list[tuple[float, float, float, float, float]]:  # fmt: skip
    """Straight shadow edges: segments (u0, v0, u1, v1, step) across which ``logi`` steps
    by at least ``min_step`` with the same sign along at least ``min_line`` of the
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
    edge = (mag > 0.1 * min_step) & inner
    min_len = min_line * size
    hl = cv2.HoughLines(edge.view(np.uint8), 1, np.pi / 180, int(0.5 * min_len))
    if hl is None or len(hl) == 0:  # OpenCV < 5.1 returns None without lines, 5.1 an empty array
        return []
    rows, cols = logi.shape
    diag = float(np.hypot(rows, cols))
    tpar = np.arange(-diag, diag, 1.0)
    gap = max(2, int(0.03 * size))
    cand: list[tuple[tuple[float, float, float, float, float], bool]] = []
    # the lines to try: the first 40 not within (4 px, 0.05 rad) of one tried before
    # (the lines accepted are among those tried, so they need no check of their own)
    tried: list[tuple[float, float]] = []
    for rho, theta in hl.reshape(-1, 2)[:200].astype(float).tolist():
        if len(tried) >= 40:
            break
        if any(abs(rho - r0) < 4 and abs(theta - t0) < 0.05 for r0, t0 in tried):
            continue
        tried.append((rho, theta))
    # their samples, all lines at once (one remap per side)
    nrm = np.array([[math.cos(th), math.sin(th)] for _, th in tried])  # (L, 2)
    tan = np.stack([-nrm[:, 1], nrm[:, 0]], axis=1)
    rho_a = np.array([r for r, _ in tried])
    p_all = rho_a[:, None, None] * nrm[:, None, :] + tpar[None, :, None] * tan[:, None, :]
    pa_all, pb_all = p_all + 3.0 * nrm[:, None, :], p_all - 3.0 * nrm[:, None, :]
    inside_all = (
        (np.minimum(pa_all[..., 0], pb_all[..., 0]) >= 0)
        & (np.maximum(pa_all[..., 0], pb_all[..., 0]) <= cols - 1)
        & (np.minimum(pa_all[..., 1], pb_all[..., 1]) >= 0)
        & (np.maximum(pa_all[..., 1], pb_all[..., 1]) <= rows - 1)
    )
    use = inside_all.sum(axis=1) >= min_len
    sel = inside_all & use[:, None]
    if not use.any():
        return []
    pa_s = pa_all[sel].astype(np.float32)
    pb_s = pb_all[sel].astype(np.float32)
    step_all = _sample(sm, pa_s) - _sample(sm, pb_s)
    ends = np.cumsum(sel.sum(axis=1))
    for li in np.flatnonzero(use).tolist():
        p = p_all[li][inside_all[li]]
        step = step_all[ends[li] - len(p) : ends[li]]

        def at_border(q: NDArray) -> bool:
            return bool(min(q[0], q[1], cols - 1 - q[0], rows - 1 - q[1]) < 4.0 + gap)

        for sign in (1.0, -1.0):
            runs = []
            for i0, i1 in _runs(sign * step > 0.5 * min_step, gap):
                if i1 - i0 + 1 < 0.1 * size:
                    continue
                if abs(_median(step[i0 : i1 + 1])) >= min_step:
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
                med = _median(step[a : b + 1])
                long_ = border and total >= min_len
                cand.append(((*p[a].tolist(), *p[b].tolist(), med), long_))
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


def band_mask(shape: tuple[int, int], lines, half_px: int) -> NDArray[np.bool_]:
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


@dataclass(frozen=True, slots=True)
class BoardModel:
    """The sunlit board's light on a working grid.

    Attributes
    ----------
    work : ndarray (rows, cols) float32
        The frame. [DN]
    base : ndarray (rows, cols) float32
        The texture divided out: an empty-target frame (marks filled), or ones. [DN or 1]
    x : ndarray (rows, cols) float32
        ``work / base`` without its shadows, dark structures filled. [1 or DN]
    log_s : ndarray (rows, cols) float32
        Natural log of the shadow factor (0 in full sun). [1]
    lines : list of (u0, v0, u1, v1, step)
        The shadow edges found. [px, px, px, px, 1]
    band : ndarray (rows, cols) bool
        Pixels along those edges.
    ok : ndarray (rows, cols) bool
        Board pixels usable for a background fit (not dark structures).
    """

    work: NDArray[np.float32]  # the frame on the working grid [DN]
    base: NDArray[np.float32]  # texture divided out (empty target, or ones)
    x: NDArray[np.float32]  # unshadowed, marks filled, texture divided out
    log_s: NDArray[np.float32]  # log shadow factor
    lines: list  # shadow edges
    band: NDArray[np.bool_]
    ok: NDArray[np.bool_]  # usable board pixels


def board_model(
    work: NDArray[np.float32], on: NDArray[np.bool_], ref: NDArray[np.float32] | None, *,
    dark_ratio: float, median_window: float, min_step: float, min_line: float,
) -> BoardModel:  # fmt: skip
    """Dark structures filled and shadows removed (see :mod:`heliostat.vision.sunlit`,
    steps 1-2).

    Parameters
    ----------
    work : ndarray (rows, cols) float32
        The frame's target box, black level removed. [DN]
    on : ndarray (rows, cols) bool
        Pixels fully on the target.
    ref : ndarray (rows, cols) float32, optional
        An empty-target frame on the same grid: its texture divides out first. [DN]
    dark_ratio, median_window, min_step, min_line : float
        As :class:`heliostat.vision.sunlit.SunlitOptions`.
    """
    rows, cols = work.shape
    size = float(max(rows, cols))
    k = _odd(median_window * size)

    def dark_of(a: NDArray[np.float32]) -> NDArray[np.bool_]:
        top = max(float(np.percentile(a[on], 99.5)) if on.any() else 1.0, 1e-6)
        a8 = np.clip(a * (255.0 / top), 0, 255).astype(np.uint8)
        med = cv2.medianBlur(a8, min(k, 255)).astype(np.float32) * (top / 255.0)
        return a < dark_ratio * med

    ok = on & (work > 0) & ~dark_of(work)
    base = np.ones_like(work)
    if ref is not None:
        ok &= (ref > 0) & ~dark_of(ref)
        base = fill_holes(np.maximum(ref, 1e-3), ok, 2.0)
    ok = cv2.erode(ok.view(np.uint8), np.ones((3, 3), np.uint8)).view(bool) & on
    logi = np.log(np.maximum(work, 1e-3)) - np.log(base)
    logi = fill_holes(logi.astype(np.float32), ok, 2.0)
    lines = shadow_lines(logi, ok, size, min_step, min_line)
    band = np.zeros_like(ok)
    log_s = np.zeros_like(logi)
    lx = logi
    if lines:
        band = band_mask(logi.shape, lines, 2)
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
        gx = fill_holes(gx, ~bx, 2.0)
        gy = fill_holes(gy, ~by, 2.0)
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
    return BoardModel(work, base, np.exp(lx).astype(np.float32), log_s, lines, band, ok)
