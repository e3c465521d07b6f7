"""Compiled inner loops of the classical spot detector (numba, single-threaded).

Each kernel replaces a chain of small numpy/OpenCV calls by one pass over the pixels it
needs, so a detection costs one pass over the coarse grid and **one** pass over the fine
window (``bench/vision.py``). The Python layer (:mod:`heliostat.vision.classical`) keeps
the logic that is not per pixel: geometry caches, the deblending's multi-level split,
the choice of candidate, flags.

Frames are passed whole (C-contiguous, so rows are read as contiguous slices and the
loops vectorise) with the target box's offset. Grey ``(H, W)`` and colour ``(H, W, 3|4)``
frames get their own compiled row readers (:func:`_grey_row`); colour is converted to
grey with the BT.601 luma weights (8/16-bit frames: OpenCV's fixed-point weights of
``cv2.COLOR_BGR2GRAY`` without its rounding to integers). Missing inputs (no dark frame,
no flat field) are passed as a stand-in with a flag (for a missing dark frame the frame
itself, so that each frame dtype compiles one set of kernels). Compiled code is cached on
disk (``cache=True``): the first call in a process that finds no cache compiles (10-20 s
per frame dtype on a 2-core machine), later processes load it (about 1 s with numba's
import).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba as nb
import numpy as np
from numba.extending import overload

from heliostat.vision.signal import _MAD_TO_SIGMA

__all__ = [
    "FineSums",
    "coarse_pass",
    "component_moments",
    "count_at_least",
    "dark_spot_light",
    "fine_sums",
    "label_components",
    "n_local_max5",
    "name_fine_sums",
    "others_in_box",
    "own_extent",
    "own_flags",
    "ring_plane",
]

# No NaN/inf assumptions (inputs are validated finite); reassociation lets LLVM vectorise
# the reductions.
_FLAGS = {"reassoc", "contract", "arcp", "nsz"}
_JIT = {"cache": True, "nogil": True, "fastmath": _FLAGS}

_QUANT_SIGMA = 1.0 / math.sqrt(12.0)

# BT.601 luma weights for B, G, R (OpenCV's BGR order).
_WB, _WG, _WR = 0.114, 0.587, 0.299


# The layout of :func:`fine_sums`' returned sums, defined once: the kernel writes through
# these offsets and :func:`name_fine_sums` reads them (single sums, or the start of a run).
FS_FLUX = 0  # Σw, then Σw x, Σw y (every window pixel)
FS_SECOND = 3  # 3: Σw, Σw dx², Σw dy² (every second row)
FS_Q_READ = 6  # 4: Σq, Σq dx, Σq dy, Σq d² with q = a² / gain² (every fourth row)
FS_PEAK = 10  # max signal (every second row)
FS_SIG_SUM = 11  # Σ signal (every pixel)
FS_N_ABOVE = 12  # pixels above the threshold (every second row)
FS_N_SAT = 13  # of them saturated
FS_Q_SHOT = 14  # 4: as FS_Q_READ with q = a² (max(signal, 0) + light) / gain
FS_Q_FLAT = 18  # 4: as FS_Q_READ with q = a² signal²
FS_FIT = 22  # 6: the noise fit's sums (_row_noise_fit)
FS_SIZE = 28


class FineSums(NamedTuple):
    """:func:`fine_sums`' output by name (see the ``FS_*`` offsets for what each holds)."""

    flux: float
    s_x: float
    s_y: float
    f2: float
    s_xx: float
    s_yy: float
    q_read: list[float]
    peak_dn: float
    sig_sum: float
    n_above: float
    n_sat: float
    q_shot: list[float]
    q_flat: list[float]
    fit: list[float]


def name_fine_sums(sums: np.ndarray) -> FineSums:
    """Name the sums :func:`fine_sums` returns (one ``tolist`` and slices: ~1 us)."""
    v = sums.tolist()
    f, s2 = FS_FLUX, FS_SECOND
    return FineSums(
        v[f], v[f + 1], v[f + 2], v[s2], v[s2 + 1], v[s2 + 2],
        v[FS_Q_READ : FS_Q_READ + 4], v[FS_PEAK], v[FS_SIG_SUM], v[FS_N_ABOVE], v[FS_N_SAT],
        v[FS_Q_SHOT : FS_Q_SHOT + 4], v[FS_Q_FLAT : FS_Q_FLAT + 4], v[FS_FIT : FS_FIT + 6],
    )  # fmt: skip


#: Stand-ins for a missing dark frame, flat field or mask.
EMPTY2_F32 = np.zeros((0, 0), np.float32)
EMPTY2_U8 = np.zeros((0, 0), np.uint8)


@nb.njit(inline="always", **_JIT)
def _luma_fixed(b, g, r):  # noqa: ANN001, ANN202
    """Grey of an 8/16-bit BGR pixel with OpenCV's fixed-point BT.601 weights (sum 2^14),
    without its rounding: integer arithmetic, and equal channels give their value."""
    acc = np.int32(b) * np.int32(1868) + np.int32(g) * np.int32(9617) + np.int32(r) * np.int32(4899)
    return np.float32(acc) * np.float32(1.0 / 16384.0)


def _grey_row(out, a, r, c0, n, step):  # noqa: ANN001, ANN202 - compiled via overload
    """``out[:n]`` = grey value of row ``r`` of ``a`` at columns ``c0 + step * j``."""
    raise NotImplementedError("compiled only (numba overload)")


@overload(_grey_row, jit_options={"fastmath": _FLAGS})
def _grey_row_impl(out, a, r, c0, n, step):  # noqa: ANN001, ANN202
    if a.ndim == 2:

        def grey2(out, a, r, c0, n, step):  # noqa: ANN001, ANN202
            if step == 1:
                src = a[r, c0 : c0 + n]
                for j in range(n):
                    out[j] = src[j]
            else:
                for j in range(n):
                    out[j] = a[r, c0 + step * j]

        return grey2

    if isinstance(a.dtype, nb.types.Integer) and a.dtype.bitwidth <= 16:

        def grey3i(out, a, r, c0, n, step):  # noqa: ANN001, ANN202
            if step == 1:
                row = a[r, c0 : c0 + n]  # contiguous: the loads vectorise
                for j in range(n):
                    out[j] = _luma_fixed(row[j, 0], row[j, 1], row[j, 2])
            else:
                for j in range(n):
                    c = c0 + step * j
                    out[j] = _luma_fixed(a[r, c, 0], a[r, c, 1], a[r, c, 2])

        return grey3i

    def grey3(out, a, r, c0, n, step):  # noqa: ANN001, ANN202
        # float64, then rounded: equal channels give their value exactly.
        for j in range(n):
            c = c0 + step * j
            out[j] = _WB * float(a[r, c, 0]) + _WG * float(a[r, c, 1]) + _WR * float(a[r, c, 2])

    return grey3


def _hot(a, r, c, sat):  # noqa: ANN001, ANN202 - compiled via overload
    """Pixel ``(r, c)`` is at or above ``sat`` (colour: in any of B, G, R)."""
    raise NotImplementedError("compiled only (numba overload)")


@overload(_hot)
def _hot_impl(a, r, c, sat):  # noqa: ANN001, ANN202
    if a.ndim == 2:
        return lambda a, r, c, sat: a[r, c] >= sat
    return lambda a, r, c, sat: a[r, c, 0] >= sat or a[r, c, 1] >= sat or a[r, c, 2] >= sat


@nb.njit(**_JIT)
def _median(v):  # noqa: ANN001, ANN202
    """Median of a 1-D array (a copy is partially sorted)."""
    return np.median(v)


@nb.njit(**_JIT)
def coarse_pass(
    img, dark, has_dark, inv_gain, has_gain, black, u0, v0, s, nv, nu, full_idx, on, bg_idx,
    pair_idx, k_noise,
):  # noqa: ANN001, ANN201  # fmt: skip
    """The coarse pass up to the threshold, in one call.

    Samples the frame ``img`` (whole frame, grey or colour) at ``(v0 + s // 2 + s i,
    u0 + s // 2 + s j)`` on an ``(nv, nu)`` grid, makes it grey, subtracts the dark
    frame's sample (or ``black``) and divides by the flat field's gain (``inv_gain``:
    1 / gain on the coarse grid). Then the background (median of the signal at
    ``bg_idx``, flat indices into the grid); the per-pixel noise (MAD of the differences
    of horizontally adjacent board samples ``pair_idx`` → ``pair_idx + 1``, over sqrt 2;
    with fewer than 16 pairs the MAD of the board samples); the 3x3 Gaussian ([1 2 1]/4
    per axis, replicated border) of the background-free signal times ``on`` (float 0/1);
    its peak; and the detection threshold ``k_noise * 0.375 * noise`` (0.375: the
    smoothing's noise gain).

    Returns
    -------
    sig, sm : float32 (nv, nu)
        Signal and smoothed background-free signal. [DN]
    vmin, vmax : float
        Extremes of the raw grey samples on the board (flat indices ``full_idx``). [DN]
    bg, noise, peak, thr : float
        Background, per-pixel noise, peak of ``sm`` and threshold. [DN]
    """
    o = s // 2
    raw = np.empty((nv, nu), np.float32)
    sig = np.empty((nv, nu), np.float32)
    tmp = np.empty(nu, np.float32)
    b = np.float32(black)
    for i in range(nv):
        r = v0 + o + s * i
        rr = raw[i]
        sr = sig[i]
        _grey_row(rr, img, r, u0 + o, nu, s)
        if has_dark:
            _grey_row(tmp, dark, r, u0 + o, nu, s)
            for j in range(nu):
                sr[j] = rr[j] - tmp[j]
        else:
            for j in range(nu):
                sr[j] = rr[j] - b
        if has_gain:
            gr = inv_gain[i]
            for j in range(nu):
                sr[j] *= gr[j]
    # Extremes of the board samples (their flat indices: a gather from a small array).
    rawf = raw.ravel()
    raw_max = -np.inf
    raw_min = np.inf
    for q in full_idx:
        val = float(rawf[q])
        raw_max = max(raw_max, val)
        raw_min = min(raw_min, val)
    flat_sig = sig.ravel()
    bg = float(_median(flat_sig[bg_idx])) if bg_idx.size else 0.0
    if pair_idx.size >= 16:
        d = flat_sig[pair_idx + 1] - flat_sig[pair_idx]
        md = np.float32(_median(d))
        noise = float(_median(np.abs(d - md))) * _MAD_TO_SIGMA / math.sqrt(2.0)
    elif bg_idx.size:
        v = flat_sig[bg_idx]
        md = np.float32(_median(v))
        noise = float(_median(np.abs(v - md))) * _MAD_TO_SIGMA
    else:
        noise = 0.0
    noise = max(noise, _QUANT_SIGMA)
    thr = k_noise * 0.375 * noise
    # Separable [1 2 1] / 4 smoothing with replicated borders.
    hs = np.empty((nv, nu), np.float32)
    for i in range(nv):
        a = sig[i]
        h = hs[i]
        if nu == 1:
            h[0] = a[0]
            continue
        h[0] = np.float32(0.75) * a[0] + np.float32(0.25) * a[1]
        for j in range(1, nu - 1):
            h[j] = np.float32(0.25) * (a[j - 1] + a[j + 1]) + np.float32(0.5) * a[j]
        h[nu - 1] = np.float32(0.25) * a[nu - 2] + np.float32(0.75) * a[nu - 1]
    sm = np.empty((nv, nu), np.float32)
    bgf = np.float32(bg)
    for i in range(nv):
        up = hs[max(i - 1, 0)]
        mid = hs[i]
        dn = hs[min(i + 1, nv - 1)]
        out = sm[i]
        onr = on[i]
        for j in range(nu):
            out[j] = (np.float32(0.25) * (up[j] + dn[j]) + np.float32(0.5) * mid[j] - bgf) * onr[j]
    # Peak and threshold in loops of their own (a comparison stops vectorisation).
    smf = sm.ravel()
    peak = np.float32(0.0) if smf.size else np.float32(-np.inf)
    for q in range(smf.size):
        peak = max(peak, smf[q])
    return sig, sm, float(raw_min), float(raw_max), bg, noise, float(peak), thr


@nb.njit(**_JIT)
def count_at_least(img, u0, v0, s, nu, full_idx, level):  # noqa: ANN001, ANN201
    """Board samples (flat indices ``full_idx`` into the coarse grid of ``nu`` columns)
    whose grey value is at least ``level``."""
    n = 0
    o = s // 2
    px = np.empty(1, np.float32)
    for q in full_idx:
        i = q // nu
        j = q - i * nu
        _grey_row(px, img, v0 + o + s * i, u0 + o + s * j, 1, 1)
        if px[0] >= level:
            n += 1
    return n


@nb.njit(**_JIT)
def label_components(sm, thr, inv_gain, has_gain):  # noqa: ANN001, ANN201
    """Connected components of the coarse samples above ``thr``.

    Samples are connected through their 8 neighbours and across a one-sample gap in a
    row or column (what a 3x3 morphological closing before 8-connected labelling joins:
    the lumps of one faceted spot). Only the samples above ``thr`` are visited.

    Returns
    -------
    n_lab : int
        Labels including the background 0.
    labels : int32 (nv, nu)
    stats : int32 (n_lab, 5)
        Per label: box x, y, width, height and sample count (OpenCV's layout).
    moments : float64 (n_lab, 4)
        Per label: Σ sm, Σ sm column, Σ sm row, and Σ sm x gain (with a flat field,
        ``has_gain``, ``inv_gain`` on the coarse grid; else Σ sm): the signal before the
        division by the gain, which weighs dark paint's amplified noise (the markers)
        down to what it is.
    """
    nv, nu = sm.shape
    labels = np.zeros((nv, nu), np.int32)
    th = np.float32(thr)
    # The samples above the threshold (a tight loop of its own), then a flood fill from
    # each one not yet labelled.
    smf = sm.ravel()
    n_above = 0
    for q in range(smf.size):
        n_above += smf[q] > th
    seeds = np.empty(n_above, np.int64)
    t = 0
    for q in range(smf.size):
        if smf[q] > th:
            seeds[t] = q
            t += 1
    stack = np.empty(n_above, np.int64)
    st = np.zeros((n_above + 1, 5), np.int32)
    mom = np.zeros((n_above + 1, 4))
    di = (-1, -1, -1, 0, 0, 1, 1, 1, -2, 2, 0, 0)
    dj = (-1, 0, 1, -1, 1, -1, 0, 1, 0, 0, -2, 2)
    n_lab = 1
    for q0 in seeds:
        i0 = q0 // nu
        j0 = q0 - i0 * nu
        if labels[i0, j0] == 0:
            lab = n_lab
            n_lab += 1
            labels[i0, j0] = lab
            top = 0
            stack[top] = i0 * nu + j0
            top += 1
            x0 = x1 = j0
            y0 = y1 = i0
            cnt = 0
            s0 = s1 = s2 = s3 = 0.0
            while top > 0:
                top -= 1
                q = stack[top]
                i = q // nu
                j = q - i * nu
                cnt += 1
                w = float(sm[i, j])
                s0 += w
                s1 += w * j
                s2 += w * i
                s3 += w / inv_gain[i, j] if has_gain else w
                x0 = min(x0, j)
                x1 = max(x1, j)
                y0 = min(y0, i)
                y1 = max(y1, i)
                for t in range(12):
                    ii = i + di[t]
                    jj = j + dj[t]
                    if 0 <= ii < nv and 0 <= jj < nu and labels[ii, jj] == 0 and sm[ii, jj] > th:
                        labels[ii, jj] = lab
                        stack[top] = ii * nu + jj
                        top += 1
            st[lab, 0] = x0
            st[lab, 1] = y0
            st[lab, 2] = x1 - x0 + 1
            st[lab, 3] = y1 - y0 + 1
            st[lab, 4] = cnt
            mom[lab, 0] = s0
            mom[lab, 1] = s1
            mom[lab, 2] = s2
            mom[lab, 3] = s3
    st[0, 2] = nu
    st[0, 3] = nv
    st[0, 4] = nv * nu
    for q in range(1, n_lab):
        st[0, 4] -= st[q, 4]
    return n_lab, labels, st[:n_lab].copy(), mom[:n_lab].copy()


@nb.njit(**_JIT)
def n_local_max5(labels, sm, lab, x0, y0, w, h, level):  # noqa: ANN001, ANN201
    """Samples of label ``lab`` (box x0, y0, w, h) above ``level`` that are the maximum of
    their 5x5 neighbourhood, where samples of other labels count as 0 (stops at 2): the
    deblending's pre-check, without building the masked box."""
    n = 0
    for i in range(y0, y0 + h):
        for j in range(x0, x0 + w):
            if labels[i, j] != lab:
                continue
            v = sm[i, j]
            if not v > level:
                continue
            is_max = True
            for ii in range(max(i - 2, y0), min(i + 3, y0 + h)):
                for jj in range(max(j - 2, x0), min(j + 3, x0 + w)):
                    if labels[ii, jj] == lab and sm[ii, jj] > v:
                        is_max = False
                        break
                if not is_max:
                    break
            if is_max:
                n += 1
                if n >= 2:
                    return n
    return n


@nb.njit(**_JIT)
def own_extent(labels, sm, x0, y0, w, h, lab, rel):  # noqa: ANN001, ANN201
    """Peak of label ``lab``'s samples in its box, and the box (x, y, width, height) of
    its samples above ``rel`` x that peak (of all its samples when none is)."""
    peak = -np.inf
    for i in range(y0, y0 + h):
        for j in range(x0, x0 + w):
            if labels[i, j] == lab and sm[i, j] > peak:
                peak = float(sm[i, j])
    lim = rel * peak
    bx0 = by0 = 1 << 30
    bx1 = by1 = -1
    for i in range(y0, y0 + h):
        for j in range(x0, x0 + w):
            if labels[i, j] == lab and sm[i, j] > lim:
                bx0 = min(bx0, j)
                bx1 = max(bx1, j)
                by0 = min(by0, i)
                by1 = max(by1, i)
    if bx1 < 0:
        bx0, by0, bx1, by1 = x0, y0, x0 + w - 1, y0 + h - 1
    return peak, bx0, by0, bx1 - bx0 + 1, by1 - by0 + 1


@nb.njit(**_JIT)
def others_in_box(labels, v0, v1, u0, u1, lab, cand):  # noqa: ANN001, ANN201
    """Whether the box holds samples of labels other than ``lab``, and whether any of
    those is a candidate (``cand``: the candidates' labels - 1)."""
    other = is_cand = False
    for i in range(v0, v1):
        for j in range(u0, u1):
            q = labels[i, j]
            if q != 0 and q != lab:
                other = True
                if not is_cand:
                    for c in cand:
                        if c + 1 == q:
                            is_cand = True
    return other, is_cand


@nb.njit(**_JIT)
def own_flags(labels, lab, x0, y0, w, h, cov_lt1, marker_near, check_marker):  # noqa: ANN001, ANN201
    """For label ``lab`` (box x0, y0, w, h): does one of its samples lie on a partly
    covered cell (``cov_lt1``: the target edge), and (``check_marker``) on a cell of
    ``marker_near`` (the marker cells dilated by one cell: a marker within one cell)?"""
    edge = near = False
    for i in range(y0, y0 + h):
        for j in range(x0, x0 + w):
            if labels[i, j] == lab:
                edge |= cov_lt1[i, j]
                near |= marker_near[i, j]
    return edge, near and check_marker


@nb.njit(**_JIT)
def _solve3(g):  # noqa: ANN001, ANN202
    """Solve the 3x3 system g[:, :3] c = g[:, 3] by Cramer's rule (ok False: singular)."""
    a, b, c, r0 = g[0, 0], g[0, 1], g[0, 2], g[0, 3]
    d, e, f, r1 = g[1, 0], g[1, 1], g[1, 2], g[1, 3]
    h, i, j, r2 = g[2, 0], g[2, 1], g[2, 2], g[2, 3]
    det = a * (e * j - f * i) - b * (d * j - f * h) + c * (d * i - e * h)
    if det == 0.0 or not np.isfinite(det):
        return False, 0.0, 0.0, 0.0
    x0 = (r0 * (e * j - f * i) - b * (r1 * j - f * r2) + c * (r1 * i - e * r2)) / det
    x1 = (a * (r1 * j - f * r2) - r0 * (d * j - f * h) + c * (d * r2 - r1 * h)) / det
    x2 = (a * (e * r2 - r1 * i) - b * (d * r2 - r1 * h) + r0 * (d * i - e * h)) / det
    return True, x0, x1, x2


@nb.njit(**_JIT)
def ring_plane(labels, full, sig, rv0, rv1, ru0, ru1, cv0, cv1, cu0, cu1, s, o, uc, vc, noise,
               fallback):  # noqa: ANN001, ANN201  # fmt: skip
    """Background plane ``bg0 + bgu (u − uc) + bgv (v − vc)`` (box pixel coordinates)
    through the coarse samples around a window.

    The samples are those of the ring box (grid rows ``rv0:rv1``, columns ``ru0:ru1``)
    fully on the board (``full``), at least three cells from any labelled sample (a 5x5
    dilation of ``labels > 0``) and outside the window's cells (rows ``cv0:cv1``, columns
    ``cu0:cu1``) — with the window's cells when that leaves fewer than 24. At most 2048
    of them (an even subset) go into a least-squares plane, refitted once without the
    samples more than 3 ``noise`` from the first fit (a level, their median, when the
    system is singular). Fewer than 6 samples: the level ``fallback``.

    Returns (bg0, bgu, bgv).
    """
    nv, nu = labels.shape
    hb = rv1 - rv0
    wb = ru1 - ru0
    # excl: a labelled sample within two cells (5x5 box): each row's runs of labelled
    # samples widened by two cells, then five rows or-ed together (uint8: vectorises).
    i0, i1 = max(rv0 - 2, 0), min(rv1 + 2, nv)
    j0, j1 = max(ru0 - 2, 0), min(ru1 + 2, nu)
    near_h = np.zeros((i1 - i0, wb), np.uint8)
    for i in range(i0, i1):
        hr = near_h[i - i0]
        j = j0
        while j < j1:
            if labels[i, j] > 0:
                a = j
                while j < j1 and labels[i, j] > 0:
                    j += 1
                hr[max(a - 2, ru0) - ru0 : max(min(j + 2, ru1) - ru0, 0)] = 1
            j += 1
    excl = np.zeros((hb, wb), np.uint8)
    for i in range(rv0, rv1):
        er = excl[i - rv0]
        for ii in range(max(i - 2, i0), min(i + 3, i1)):
            hr = near_h[ii - i0]
            for j in range(wb):
                er[j] |= hr[j]
    n_ring = 0
    n_box = 0
    for i in range(rv0, rv1):
        for j in range(ru0, ru1):
            if full[i, j] and not excl[i - rv0, j - ru0]:
                n_box += 1
                if not (cv0 <= i < cv1 and cu0 <= j < cu1):
                    n_ring += 1
    use_window = n_ring < 24
    n = n_box if use_window else n_ring
    if n < 6:
        return fallback, 0.0, 0.0
    step = n // 2048 + 1 if n > 2048 else 1
    m = (n + step - 1) // step
    pts = np.empty((m, 4))
    t = 0
    q = 0
    for i in range(rv0, rv1):
        for j in range(ru0, ru1):
            if full[i, j] and not excl[i - rv0, j - ru0]:
                if not use_window and cv0 <= i < cv1 and cu0 <= j < cu1:
                    continue
                if t % step == 0 and q < m:
                    pts[q, 0] = 1.0
                    pts[q, 1] = j * s + o - uc
                    pts[q, 2] = i * s + o - vc
                    pts[q, 3] = sig[i, j]
                    q += 1
                t += 1
    pts = pts[:q]
    coef = np.zeros(3)
    keep = np.ones(q, np.bool_)
    for it in range(2):
        # Normal equations of (1, u, v) -> z: nine sums over the kept samples, in
        # scalars (a loop that vectorises; the 3x4 array's nested loops did not).
        nk = 0
        n1 = su = sv = sz = suu = suv = suz = svv = svz = 0.0
        for r in range(q):
            kf = 1.0 if keep[r] else 0.0
            u = pts[r, 1]
            v = pts[r, 2]
            z = pts[r, 3]
            nk += keep[r]
            n1 += kf
            su += kf * u
            sv += kf * v
            sz += kf * z
            suu += kf * u * u
            suv += kf * u * v
            suz += kf * u * z
            svv += kf * v * v
            svz += kf * v * z
        if nk < 6:
            break
        g = np.empty((3, 4))
        g[0, 0], g[0, 1], g[0, 2], g[0, 3] = n1, su, sv, sz
        g[1, 0], g[1, 1], g[1, 2], g[1, 3] = su, suu, suv, suz
        g[2, 0], g[2, 1], g[2, 2], g[2, 3] = sv, suv, svv, svz
        ok, c0, c1, c2 = _solve3(g)
        if not ok:
            vals = np.empty(nk)
            t = 0
            for r in range(q):
                if keep[r]:
                    vals[t] = pts[r, 3]
                    t += 1
            coef[0] = _median(vals)
            coef[1] = 0.0
            coef[2] = 0.0
            break
        coef[0], coef[1], coef[2] = c0, c1, c2
        if it == 0:
            for r in range(q):
                res = pts[r, 3] - (c0 + c1 * pts[r, 1] + c2 * pts[r, 2])
                keep[r] = abs(res) < 3.0 * noise
    return coef[0], coef[1], coef[2]


@nb.njit(**_JIT)
def component_moments(sm, labels, n_lab, inv_gain, has_gain):  # noqa: ANN001, ANN201
    """Per label (row = label): sum of ``max(sm, 0)``, its first moments in grid column
    and row, and its sum x gain (as :func:`label_components`). float64 (n_lab, 4)."""
    out = np.zeros((n_lab, 4))
    nv, nu = sm.shape
    for i in range(nv):
        for j in range(nu):
            lab = labels[i, j]
            if lab > 0:
                w = sm[i, j]
                if w > 0:
                    out[lab, 0] += w
                    out[lab, 1] += w * j
                    out[lab, 2] += w * i
                    out[lab, 3] += w / inv_gain[i, j] if has_gain else w
    return out


@nb.njit(**_JIT)
def _row_first(g, tmp, has_dark, black, inv_gain, has_gain, rowbg, bgc, m, ar, axr, ayr):  # noqa: ANN001, ANN202, E501
    """One row of the fine pass, fused: turns the grey row ``g`` into the background-free
    signal in place (− ``tmp`` (dark) or ``black``, x ``inv_gain``, − ``rowbg + bgc``)
    and returns Σ w a, Σ w ax, Σ w ay and Σ g with w = g m. No comparisons inside (they
    would stop LLVM from vectorising the loop)."""
    f = sx = sy = ssum = np.float32(0.0)
    b = np.float32(black)
    for j in range(g.size):
        gj = g[j] - (tmp[j] if has_dark else b)
        if has_gain:
            gj = gj * inv_gain[j]
        gj -= rowbg + bgc[j]
        g[j] = gj
        wj = gj * m[j]
        f += wj * ar[j]
        sx += wj * axr[j]
        sy += wj * ayr[j]
        ssum += gj
    return f, sx, sy, ssum


@nb.njit(**_JIT)
def _row_second(g, m, ar, xr, yr, x0, y0, out):  # noqa: ANN001, ANN202
    """Adds one row's Σ w, Σ w dx², Σ w dy² to ``out[0:3]``, with w = g a m,
    dx = xr − x0, dy = yr − y0 (vectorised)."""
    f2 = sxx = syy = np.float32(0.0)
    for j in range(g.size):
        dx = xr[j] - x0
        dy = yr[j] - y0
        wj = g[j] * ar[j] * m[j]
        f2 += wj
        sxx += wj * dx * dx
        syy += wj * dy * dy
    out[0] += f2
    out[1] += sxx
    out[2] += syy


@nb.njit(**_JIT)
def _row_noise(g, m, ar, ig, xr, yr, x0, y0, dk, has_dk, black, amb, out):  # noqa: ANN001, ANN202
    """Adds one row's Σ q, Σ q dx, Σ q dy, Σ q (dx² + dy²) to ``out[0:12]`` for
    q = am² ig² (read noise through the flat field), for q = am² (g⁺ + l) ig (shot
    noise of the spot and of the other light in the frames: l = 2 (dk − black) ig with a
    sun-off frame row ``dk`` — the light of both frames, a neighbour's spot too — else
    ``amb``) and for q = am² g² (noise of the flat field itself), with am = a m,
    g⁺ = max(g, 0), dx = xr − x0, dy = yr − y0 (vectorised: scalar accumulators)."""
    a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = c0 = c1 = c2 = c3 = np.float32(0.0)
    zero = np.float32(0.0)
    two = np.float32(2.0)
    b = np.float32(black)
    for j in range(g.size):
        lj = two * max(dk[j] - b, zero) * ig[j] if has_dk else amb
        dx = xr[j] - x0
        dy = yr[j] - y0
        gj = g[j]
        am = ar[j] * m[j]
        d2 = dx * dx + dy * dy
        aa = am * am
        qa = aa * ig[j] * ig[j]
        qb = aa * (max(gj, zero) + lj) * ig[j]
        qc = aa * gj * gj
        a0 += qa
        a1 += qa * dx
        a2 += qa * dy
        a3 += qa * d2
        b0 += qb
        b1 += qb * dx
        b2 += qb * dy
        b3 += qb * d2
        c0 += qc
        c1 += qc * dx
        c2 += qc * dy
        c3 += qc * d2
    out[0] += a0
    out[1] += a1
    out[2] += a2
    out[3] += a3
    out[4] += b0
    out[5] += b1
    out[6] += b2
    out[7] += b3
    out[8] += c0
    out[9] += c1
    out[10] += c2
    out[11] += c3


@nb.njit(**_JIT)
def _row_noise_fit(g, m, ar, ig, ok, out):  # noqa: ANN001, ANN202
    """Adds one row's sums for the fit of the signal-dependent noise to ``out[0:6]``.

    Over runs of four pixels that are all measured (``m ar > 0``) and not on dark ink
    (``ig <= 2``: gain >= 0.5), with t the third difference g0 − 3 g1 + 3 g2 − g3 (var t
    = 20 var g; a smooth spot's shape adds little) and S > 0 the run's mean signal:
    Σ S y, Σ S² y with y = t² / 20, and Σ S, Σ S², Σ S³, Σ S⁴ (for the normal equations
    of y = noise² + c1 S + c2 S²). ``ok``: a float32 row buffer. Branch-free loops."""
    n = g.size
    two = np.float32(2.0)
    zero = np.float32(0.0)
    for j in range(n):
        ok[j] = np.float32((m[j] * ar[j] > zero) & (ig[j] <= two))
    sy1 = sy2 = s1 = s2 = s3 = s4 = np.float32(0.0)
    for j in range(n - 3):
        sb = np.float32(0.25) * (g[j] + g[j + 1] + g[j + 2] + g[j + 3])
        w = ok[j] * ok[j + 1] * ok[j + 2] * ok[j + 3] * np.float32(sb > zero)
        t = g[j] - np.float32(3.0) * (g[j + 1] - g[j + 2]) - g[j + 3]
        y = np.float32(0.05) * t * t
        ws = w * sb
        wss = ws * sb
        sy1 += ws * y
        sy2 += wss * y
        s1 += ws
        s2 += wss
        s3 += wss * sb
        s4 += wss * sb * sb
    out[0] += sy1
    out[1] += sy2
    out[2] += s1
    out[3] += s2
    out[4] += s3
    out[5] += s4


@nb.njit(**_JIT)
def _row_count(g, thr):  # noqa: ANN001, ANN202
    """Values of a row above ``thr`` (counted in float32: exact below 2^24, and unlike an
    integer count the loop vectorises)."""
    n = np.float32(0.0)
    for j in range(g.size):
        n += np.float32(1.0) if g[j] > thr else np.float32(0.0)
    return int(n)


@nb.njit(**_JIT)
def _row_count_hot(g, raw, thr, sat):  # noqa: ANN001, ANN202
    """Values of a row above ``thr`` whose raw grey value ``raw`` is at least ``sat``
    (float64: as the frame's dtype compares; float32 count, vectorised)."""
    n = np.float32(0.0)
    for j in range(g.size):
        n += np.float32(1.0) if g[j] > thr and raw[j] >= sat else np.float32(0.0)
    return int(n)


@nb.njit(**_JIT)
def _row_max(g):  # noqa: ANN001, ANN202
    """Largest value of a row."""
    rmax = np.float32(-np.inf)
    for j in range(g.size):
        rmax = max(rmax, g[j])
    return rmax


@nb.njit(**_JIT)
def fine_sums(
    img, dark, has_dark, inv_gain, has_gain, black, u0, v0,
    wu0, wu1, wv0, wv1, k, bg0, bgu, bgv, uc, vc,
    area, ax, ay, xm, ym, xref, yref,
    marker, use_marker,
    free_c, use_free, o, s, nv, nu, cv0, cu0,
    edge, use_edge, sat, thr_px, amb,
):  # noqa: ANN001, ANN201  # fmt: skip
    """Every sum the fine pass needs, in one pass over the window.

    The window is rows ``wv0:wv1`` and columns ``wu0:wu1`` of the target box (every
    ``k``-th), i.e. frame pixels offset by ``(v0, u0)``; ``inv_gain`` (1 / flat-field
    gain), ``area``, ``ax`` (area x x), ``ay``, ``xm``, ``ym``, ``marker`` and ``edge``
    cover the target box. Per pixel: signal = grey − dark (or ``black``), / gain, −
    background plane ``bg0 + bgu (u − uc) + bgv (v − vc)`` (box pixel coordinates);
    weight = signal x target-plane area, zeroed on markers (``use_marker``) and where
    the pixel's nearest coarse cell (grid ``(o, s)`` clipped to ``nv x nu``, then to
    ``free_c`` offset by ``(cv0, cu0)``) is 0 in ``free_c`` (``use_free``: another
    candidate's cells).

    The first moments and the signal's sum use every window pixel; the second moments,
    the pixel counts and the peak, estimates, every second row; the noise sums every
    fourth, the noise fit every eighth. Sums run in float32 along a row and in float64
    over rows.

    Returns
    -------
    sums : float64 (FS_SIZE,)
        At the ``FS_*`` offsets (:func:`name_fine_sums` names them): Σw (flux), Σw x,
        Σw y over all window pixels; on every second row Σw, Σw dx²,
        Σw dy²; on every fourth Σq, Σq dx, Σq dy, Σq (dx² + dy²) with q = a² / gain² (a:
        area with the masks; dx = x − xref, dy = y − yref); max signal (every second
        row); Σ signal (all); on every second row the pixels above ``thr_px`` and those
        of them saturated (any of the first three channels >= ``sat``); then on every
        fourth row the same four sums with q = a² (max(signal, 0) + light) / gain
        (light: twice the dark frame's, flat-fielded, for the shot noise of both frames'
        other light; without a dark frame ``amb``) and with q = a² signal²; on every
        eighth row the six sums of the noise fit (:func:`_row_noise_fit`).
    edge_hit : bool
        An edge pixel (``edge``, read only with ``use_edge``) on those rows is above
        ``thr_px``.
    """
    nu_w = (wu1 - wu0 + k - 1) // k
    nv_w = (wv1 - wv0 + k - 1) // k
    fh, fw = free_c.shape
    masked = use_marker or use_free
    g = np.empty(nu_w, np.float32)
    tmp = np.empty(nu_w, np.float32)
    m = np.ones(nu_w, np.float32)
    bgc = np.empty(nu_w, np.float32)
    cj = np.zeros(nu_w, np.int64)
    # Row buffers for a strided window (k > 1); with k = 1 the rows are slices.
    gb = np.ones(nu_w, np.float32)
    ab = np.empty(nu_w, np.float32)
    axb = np.empty(nu_w, np.float32)
    ayb = np.empty(nu_w, np.float32)
    xb = np.empty(nu_w, np.float32)
    yb = np.empty(nu_w, np.float32)
    for j in range(nu_w):
        bgc[j] = bgu * (wu0 + k * j - uc)
        if use_free:
            c = min(max((wu0 + j * k - o + s // 2) // s, 0), nu - 1) - cu0
            cj[j] = min(max(c, 0), fw - 1)
    out = np.zeros(FS_SIZE)  # at the FS_* offsets
    sec = np.zeros(3)  # second moments (_row_second)
    noi = np.zeros(12)  # noise sums (_row_noise)
    fit = np.zeros(6)  # the noise fit's sums (_row_noise_fit)
    okb = np.empty(nu_w, np.float32)
    smax = -np.inf
    n_above = 0
    n_sat = 0
    edge_hit = False
    xr = np.float32(xref)
    yr = np.float32(yref)
    thr = np.float32(thr_px)
    ambf = np.float32(amb)
    c1 = wu0 + k * nu_w
    # Grey frame read pixel by pixel: the saturation count is a vectorised loop.
    grey_rows = img.ndim == 2 and k == 1
    for ii in range(nv_w):
        r = wv0 + k * ii
        _grey_row(g, img, v0 + r, u0 + wu0, nu_w, k)
        if has_dark:
            _grey_row(tmp, dark, v0 + r, u0 + wu0, nu_w, k)
        if masked:
            ci = min(max((r - o + s // 2) // s, 0), nv - 1) - cv0
            ci = min(max(ci, 0), fh - 1)
            for j in range(nu_w):
                keep = not (use_marker and marker[r, wu0 + k * j])
                if use_free and free_c[ci, cj[j]] == 0:
                    keep = False
                m[j] = 1.0 if keep else 0.0
        rowbg = np.float32(bg0 + bgv * (r - vc))
        if k == 1:
            gr = inv_gain[r, wu0:c1] if has_gain else gb
            ar = area[r, wu0:c1]
            f, sx, sy, ssum = _row_first(g, tmp, has_dark, black, gr, has_gain, rowbg, bgc, m,
                                         ar, ax[r, wu0:c1], ay[r, wu0:c1])  # fmt: skip
        else:
            if has_gain:
                gb[:] = inv_gain[r, wu0:c1:k]
            ab[:] = area[r, wu0:c1:k]
            axb[:] = ax[r, wu0:c1:k]
            ayb[:] = ay[r, wu0:c1:k]
            ar = ab
            f, sx, sy, ssum = _row_first(g, tmp, has_dark, black, gb, has_gain, rowbg, bgc, m,
                                         ab, axb, ayb)  # fmt: skip
        out[FS_FLUX] += f
        out[FS_FLUX + 1] += sx
        out[FS_FLUX + 2] += sy
        out[FS_SIG_SUM] += ssum
        if ii % 2 == 0:
            if k == 1:
                xrow = xm[r, wu0:c1]
                yrow = ym[r, wu0:c1]
            else:
                xb[:] = xm[r, wu0:c1:k]
                yb[:] = ym[r, wu0:c1:k]
                xrow = xb
                yrow = yb
            _row_second(g, m, ar, xrow, yrow, xr, yr, sec)
            if ii % 4 == 0:
                igr = gr if k == 1 else gb
                _row_noise(g, m, ar, igr, xrow, yrow, xr, yr, tmp, has_dark, black, ambf, noi)
                if ii % 8 == 0:
                    _row_noise_fit(g, m, ar, igr, okb, fit)
            na = _row_count(g, thr)
            # The peak: a row without values above the threshold cannot hold it once
            # another row has one; such rows are skipped unless none has (yet).
            if na or not n_above:
                smax = max(smax, float(_row_max(g)))
            if na:
                n_above += na
                if grey_rows:
                    n_sat += _row_count_hot(g, img[v0 + r, u0 + wu0 : u0 + c1], thr, sat)
                if use_edge or not grey_rows:
                    for j in range(nu_w):
                        if g[j] > thr:
                            c = wu0 + k * j
                            if not grey_rows and _hot(img, v0 + r, u0 + c, sat):
                                n_sat += 1
                            if use_edge and edge[r, c]:
                                edge_hit = True
    out[FS_SECOND : FS_SECOND + 3] = sec
    out[FS_Q_READ : FS_Q_READ + 4] = noi[0:4]
    out[FS_PEAK] = smax
    out[FS_N_ABOVE] = n_above
    out[FS_N_SAT] = n_sat
    out[FS_Q_SHOT : FS_Q_SHOT + 8] = noi[4:12]  # FS_Q_FLAT follows FS_Q_SHOT
    out[FS_FIT : FS_FIT + 6] = fit
    return out, edge_hit


@nb.njit(**_JIT)
def dark_spot_light(
    dark, black, u0, v0, s, full, rv0, rv1, ru0, ru1, cv0, cv1, cu0, cu1, thr,
):  # noqa: ANN001, ANN201  # fmt: skip
    """Light of a spot in the sun-off frame ``dark`` inside a box of coarse cells. [DN px]

    The dark frame's samples on the coarse grid (as :func:`coarse_pass` takes them: grey,
    less ``black``; not flat-fielded, which would amplify the noise of the dark marker
    cells past any threshold) on the board (``full``) over the ring box ``[rv0, rv1) x
    [ru0, ru1)`` give the ambient level (their median); the excess of the samples in the
    inner box ``[cv0, cv1) x [cu0, cu1)`` that stand more than ``thr`` above it, summed
    and times ``s * s`` (the pixels a sample stands for), and the ambient level [DN].
    (0, NaN) when the ring has fewer than 8 board samples.
    """
    o = s // 2
    nw = ru1 - ru0
    d = np.empty((rv1 - rv0, nw), np.float32)
    vals = np.empty((rv1 - rv0) * nw, np.float32)
    b = np.float32(black)
    m = 0
    for i in range(rv0, rv1):
        row = d[i - rv0]
        _grey_row(row, dark, v0 + o + s * i, u0 + o + s * ru0, nw, s)
        for j in range(nw):
            row[j] -= b
            if full[i, ru0 + j]:
                vals[m] = row[j]
                m += 1
    if m < 8:
        return 0.0, math.nan
    ambient = np.float32(_median(vals[:m]))
    light = 0.0
    for i in range(cv0, cv1):
        for j in range(cu0, cu1):
            x = d[i - rv0, j - ru0] - ambient
            if full[i, j] and x > thr:
                light += x
    return light * s * s, float(ambient)
