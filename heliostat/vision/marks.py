"""Registration of a Jülich-style target by its own painted corner marks (no ArUco).

The calibration targets of the Jülich towers carry black marks at their corners: an **L**
(two bars meeting at the target's corner) or, where two targets are stacked, a side
**T** (a bar along the target's side, with a short bar pointing into the target from its
middle, i.e. a ⊢ or ⊣ shared by the targets above and below). From a rough guess of the
four corners (an operator's clicks, or the camera pose's projection of the surveyed
corners) each mark is found in a search window and its corner point refined to sub-pixel;
the four points register the target (:func:`heliostat.vision.target.register_corners`).

Corner point of a mark (the definition used everywhere here)
------------------------------------------------------------
Call a bar's *outer* edge the one that faces away from the target's interior.

* **L mark**: the intersection of the outer edges of its two bars — the mark's outer
  corner.
* **T mark**: the intersection of the outer edge of its long bar (along the target's
  side) with the *centre line* of its short bar. A side mark shared by two stacked
  targets thus gives both targets the same point, as the tower survey does (the upper
  target's lower-left corner is the lower target's upper-left).

PAINT's crops of the Jülich frames (``stj_upper.png``, ``stj_lower.png``,
``mft_crop.png``) were cut with marker points 0.7-6.4 px from these, scattered without a
common offset (PAINT matches a 31 px template per mark to integer pixels); it too uses one
point for a shared side mark. ``bench/vision_registration.py`` measures how closely
warping with our points reproduces PAINT's crops (docs/vision.md).

How a mark is found and refined
-------------------------------
1. The rough corners give a homography ``H0`` from the target plane to the image. Around
   each corner, a patch is resampled in the corner's own frame (a along the target's
   edge into the target, b along its side into the target, metres) with ``H0``.
2. A drawn template of an L and of a T mark (dark bars on white) is matched by
   zero-mean normalised cross-correlation over the patch; the kind with the better
   score is the mark's kind (checked against the layout's kinds when given), its peak
   the coarse corner.
3. Sub-pixel: across each reference edge, intensity profiles are sampled in the image
   (bilinear, about one per pixel along the bar, along lines that ``H`` maps from the
   plane, so a rough ``H`` only tilts the profiles); the edge is where a profile crosses
   halfway between the board just outside the bar and the bar next to that edge
   (:func:`_crossings`). Straight lines are fitted to the edge points (total least
   squares in undistorted pixels, Tukey-weighted against outliers) and intersected. For
   a T's short bar both its edges are located on each profile and the line runs
   through their midpoints.
4. Step 3 repeats with the homography of the previous pass's corners (half way to them
   from the third pass on) until no corner moves by 0.01 px, at most 10 passes: the
   profiles then run square to the edges and sample the bars where they are, so the
   result hardly depends on the rough guess (real edges are ragged: a pass that samples
   another stretch of a bar moves its line by up to a few tenths of a pixel).

Pixel convention (OpenCV): pixel (u, v) = (column, row); the centre of the top-left pixel
is (0, 0). Corner order UL, UR, LR, LL.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray

from heliostat.errors import InputError
from heliostat.plant import MARK_KINDS, MarkLayout
from heliostat.vision.target import (
    TargetRegistration,
    _apply_h,
    _check_camera,
    _distort,
    _homography_4pt,
    _plane_corners,
    _undistort,
    check_quadrilateral,
    register_corners,
)

__all__ = [
    "CORNER_NAMES",
    "MARK_KINDS",
    "CornerMarkFit",
    "MarkLayout",
    "MarkRegistration",
    "refine_marks",
    "register_marks",
]

#: Corner names in the order used everywhere.
CORNER_NAMES = ("upper-left", "upper-right", "lower-right", "lower-left")
#: Mark kinds: ``"L"`` (bars meet at the corner), ``"T"`` (side mark, short bar inward).

#: Refinement passes stop when no corner moves by more than this. [px]
_CONVERGED_PX = 0.01

# Inward directions (x, y) in the target plane (x right, y up) for UL, UR, LR, LL.
_INWARD = np.array([[1.0, -1.0], [-1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]])


@dataclass(frozen=True, slots=True)
class CornerMarkFit:
    """How one corner mark was found.

    Attributes
    ----------
    corner : str
        ``"upper-left"`` ... ``"lower-left"``.
    kind : str
        ``"L"`` or ``"T"``.
    uv_px : ndarray (2,)
        Refined corner point in the (distorted) image. [px]
    rough_uv_px : ndarray (2,)
        The rough guess it started from. [px]
    match_score : float
        Zero-mean normalised cross-correlation of the drawn mark template at the coarse
        position, -1..1 (about 0.9 for a clearly visible mark). [1]
    residual_px : float
        RMS distance of the kept edge points from their fitted lines. [px]
    n_edge_points : int
        Edge points kept for the two lines.
    bar_width_px : float
        Median measured width of the bar(s) across the fitted edges (where both edges of
        a bar were seen), for checking the layout. [px]
    """

    corner: str
    kind: str
    uv_px: NDArray[np.float64]
    rough_uv_px: NDArray[np.float64]
    match_score: float
    residual_px: float
    n_edge_points: int
    bar_width_px: float

    @property
    def shift_px(self) -> float:
        """Distance from the rough guess to the refined point. [px]"""
        return float(np.hypot(*(self.uv_px - self.rough_uv_px)))


@dataclass(frozen=True, slots=True)
class MarkRegistration:
    """A target registered by its corner marks.

    Attributes
    ----------
    registration : TargetRegistration
        Built by :func:`register_corners` from the refined corners.
    corners : tuple of CornerMarkFit
        One per corner, UL, UR, LR, LL.
    """

    registration: TargetRegistration
    corners: tuple[CornerMarkFit, ...]

    @property
    def corners_px(self) -> NDArray[np.float64]:
        """Refined corners UL, UR, LR, LL in the (distorted) image. (4, 2) [px]"""
        return np.array([c.uv_px for c in self.corners])


# --------------------------------------------------------------------------- geometry
def _to_gray(frame: NDArray) -> NDArray[np.float32]:
    img = np.asarray(frame)
    if img.ndim == 3 and img.shape[2] in (1, 3, 4):
        img = img[..., :3].astype(np.float32).mean(axis=2)
    if img.ndim != 2 or min(img.shape) < 8:
        raise InputError(f"frame: expected a (H, W) or (H, W, C) image, got shape {img.shape}")
    return np.ascontiguousarray(img, dtype=np.float32)


class _Mapper:
    """Corner-local coordinates (a, b) [m] -> distorted image pixels through a homography."""

    def __init__(self, h_px_from_plane, k, dist, width_m, height_m):
        self.h = h_px_from_plane
        self.k = k
        self.dist = dist
        self.origin = _plane_corners(width_m, height_m)

    def plane(self, i: int, ab: NDArray) -> NDArray[np.float64]:
        return self.origin[i] + ab * _INWARD[i]

    def image(self, i: int, ab: NDArray) -> NDArray[np.float64]:
        shape = ab.shape
        und = _apply_h(self.h, self.plane(i, ab.reshape(-1, 2)))
        return _distort(und, self.k, self.dist).reshape(shape)

    def m_per_px(self, i: int) -> float:
        """Local plane metres per image pixel at corner i (geometric mean)."""
        d = 0.05
        uv = self.image(i, np.array([[0.0, 0.0], [d, 0.0], [0.0, d]]))
        sx = np.hypot(*(uv[1] - uv[0])) / d
        sy = np.hypot(*(uv[2] - uv[0])) / d
        return float(1.0 / np.sqrt(max(sx * sy, 1e-12)))


def _sample(gray: NDArray, uv: NDArray) -> NDArray[np.float32]:
    """Bilinear samples of ``gray`` at pixel positions uv (..., 2); NaN outside."""
    mx = np.ascontiguousarray(uv[..., 0], dtype=np.float32)
    my = np.ascontiguousarray(uv[..., 1], dtype=np.float32)
    out = cv2.remap(
        gray, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=np.nan
    )
    return out


def _template(kind: str, layout: MarkLayout, res_m: float, margin_m: float):
    """Drawn mark (0 = ink, 1 = board) in corner-local coordinates, and the (a, b) of its
    top-left sample. Rows run along b, columns along a."""
    w, arm = layout.bar_width_m, layout.arm_length_m
    a0 = -margin_m
    b0 = -margin_m if kind == "L" else -(layout.t_half_length_m + margin_m)
    a1 = arm + margin_m
    b1 = arm + margin_m if kind == "L" else layout.t_half_length_m + margin_m
    na = int(round((a1 - a0) / res_m)) + 1
    nb = int(round((b1 - b0) / res_m)) + 1
    # Supersample 4x4 and average: area-weighted ink coverage per template pixel.
    ss = 4
    a = a0 + (np.arange(na * ss) + 0.5) / ss * res_m - 0.5 * res_m
    b = b0 + (np.arange(nb * ss) + 0.5) / ss * res_m - 0.5 * res_m
    aa, bb = np.meshgrid(a, b)
    if kind == "L":
        ink = ((aa >= 0) & (aa <= w) & (bb >= 0) & (bb <= arm)) | (
            (bb >= 0) & (bb <= w) & (aa >= 0) & (aa <= arm)
        )
    else:
        th = layout.t_half_length_m
        ink = ((aa >= 0) & (aa <= w) & (bb >= -th) & (bb <= th)) | (
            (bb >= -w / 2) & (bb <= w / 2) & (aa >= 0) & (aa <= arm)
        )
    tpl = 1.0 - ink.reshape(nb, ss, na, ss).mean(axis=(1, 3))
    return tpl.astype(np.float32), a0, b0


def _line_tls(p: NDArray) -> tuple[NDArray, NDArray]:
    c = p.mean(axis=0)
    _, _, vt = np.linalg.svd(p - c, full_matrices=False)
    return c, vt[0]


def _robust_line(p: NDArray) -> tuple[tuple[NDArray, NDArray], NDArray]:
    """Robust total-least-squares line: Tukey biweight (c = 4.685 sigma, sigma from the
    median absolute residual) by iteratively reweighted TLS. Weights change smoothly
    with the points, so the line does too (a hard 3-sigma cut flips points in and out
    between refinement passes). Returns (line, residuals of the points with weight > 0)."""
    c, d = _line_tls(p)
    wts = np.ones(len(p))
    for _ in range(10):
        n = np.array([-d[1], d[0]])
        r = (p - c) @ n
        sig = 1.4826 * np.median(np.abs(r - np.median(r))) + 0.02
        u = r / (4.685 * sig)
        wts = np.where(np.abs(u) < 1, (1 - u * u) ** 2, 0.0)
        if wts.sum() < 4:
            break
        c = (wts[:, None] * p).sum(0) / wts.sum()
        q = (p - c) * np.sqrt(wts)[:, None]
        _, _, vt = np.linalg.svd(q, full_matrices=False)
        d = vt[0]
    n = np.array([-d[1], d[0]])
    return (c, d), ((p - c) @ n)[wts > 0]


def _intersect(l1, l2) -> NDArray[np.float64]:
    (p1, d1), (p2, d2) = l1, l2
    a = np.array([[d1[0], -d2[0]], [d1[1], -d2[1]]])
    if abs(np.linalg.det(a)) < 1e-6:
        raise InputError("corner marks: the fitted edges of a mark are parallel")
    t = np.linalg.solve(a, p2 - p1)
    return p1 + t[0] * d1


def _crossings(prof: NDArray, s: NDArray, w: float) -> NDArray[np.float64]:
    """Edge position along each profile (rows), sampled at increasing ``s`` [m] from the
    bright board outside a bar (s < 0) into the bar (0 < s < w).

    The edge is where the intensity crosses halfway between the bright level (median
    over -0.8 w..-0.35 w: near enough that a shadow's edge or the board's border further
    out does not enter, far enough to miss the blur) and the bar's level next to this
    edge (median over 0.2 w..0.6 w: real bars are shaded across). The crossing is the
    one nearest to s = 0.2 w, inside the bar: searched outward from there when the
    profile is dark at 0.2 w, inward otherwise. (Some marks have a light relief band
    along an edge; a search that started outside the bar would find the band's outer or
    inner step depending on where it started, and the refinement passes would flip
    between the two.) NaN where there is no such crossing.
    """
    out_sel = (s >= -0.8 * w) & (s <= -0.35 * w)
    in_sel = (s >= 0.2 * w) & (s <= 0.6 * w)
    with np.errstate(all="ignore"):
        bright = np.nanmedian(prof[:, out_sel], axis=1)
        dark = np.nanmedian(prof[:, in_sel], axis=1)
    half = 0.5 * (bright + dark)
    good = np.isfinite(half) & (bright - dark > 0)
    j0 = int(np.searchsorted(s, 0.2 * w))
    lo = int(np.flatnonzero(out_sel).min())
    n = prof.shape[1]
    above = prof > half[:, None]  # NaN samples count as not above
    below = prof <= half[:, None]
    out = np.full(len(prof), np.nan)
    # Dark at j0: walk outward to the first sample above half (index ja), edge in ja..ja+1.
    seg = above[:, lo : j0 + 1][:, ::-1]
    has_out = seg.any(axis=1) & below[:, j0] & good
    ja = j0 - np.argmax(seg, axis=1)
    # Bright at j0: walk inward to the first sample at or below half (jb), edge in jb-1..jb.
    seg = below[:, j0:n]
    has_in = seg.any(axis=1) & above[:, j0] & good
    jb = j0 + np.argmax(seg, axis=1)
    for rows, j_hi in ((np.flatnonzero(has_out), ja), (np.flatnonzero(has_in), jb - 1)):
        if rows.size == 0:
            continue
        jj = j_hi[rows]
        p0, p1 = prof[rows, jj], prof[rows, jj + 1]
        # Linear interpolation between sample jj (above half) and jj + 1 (at or below).
        f = np.clip((p0 - half[rows]) / np.maximum(p0 - p1, 1e-9), 0.0, 1.0)
        out[rows] = s[jj] + f * (s[jj + 1] - s[jj])
    return out


# --------------------------------------------------------------------------- steps
def _coarse(gray, mapper, i, layout, kinds_try, search_m, res_m):
    """Template match in the corner-local patch: (a, b) of the corner point, score, kind."""
    margin = 1.5 * layout.bar_width_m
    best = None
    for kind in kinds_try:
        tpl, ta0, tb0 = _template(kind, layout, res_m, margin)
        # Patch: the template's extent grown by the search radius on every side.
        pa0, pb0 = ta0 - search_m, tb0 - search_m
        npa = tpl.shape[1] + 2 * int(np.ceil(search_m / res_m))
        npb = tpl.shape[0] + 2 * int(np.ceil(search_m / res_m))
        aa, bb = np.meshgrid(pa0 + res_m * np.arange(npa), pb0 + res_m * np.arange(npb))
        uv = mapper.image(i, np.stack([aa, bb], axis=-1))
        patch = _sample(gray, uv)
        valid = np.isfinite(patch)
        if valid.mean() < 0.5:
            continue
        patch = np.where(valid, patch, np.nanmedian(patch)).astype(np.float32)
        score = cv2.matchTemplate(patch, tpl, cv2.TM_CCOEFF_NORMED)
        score = np.nan_to_num(score, nan=-1.0)
        _, smax, _, (jx, jy) = cv2.minMaxLoc(score)
        # Parabolic sub-sample peak (the edges refine it further).
        dx = dy = 0.0
        if 0 < jx < score.shape[1] - 1:
            l, c, r = score[jy, jx - 1], score[jy, jx], score[jy, jx + 1]
            den = l - 2 * c + r
            dx = 0.5 * (l - r) / den if den < 0 else 0.0
        if 0 < jy < score.shape[0] - 1:
            l, c, r = score[jy - 1, jx], score[jy, jx], score[jy + 1, jx]
            den = l - 2 * c + r
            dy = 0.5 * (l - r) / den if den < 0 else 0.0
        # Template sample (0, 0) sits at patch sample (jx, jy); the corner point (0, 0)
        # of the template is -ta0/res_m, -tb0/res_m samples in.
        a = pa0 + res_m * (jx + dx) - ta0
        b = pb0 + res_m * (jy + dy) - tb0
        if best is None or smax > best[2]:
            best = (a, b, float(smax), kind)
    return best


def _edge_points(gray, mapper, i, kind, layout, res_m):
    """Edge points (distorted px) of a corner's two reference lines, and the bar width.

    The current homography puts the corner point at local (0, 0). Returns
    ``(points on the line along a, points on the line along b, bar width [m])``: the
    line along b is the outer edge of the bar at a = 0 (L and T); the line along a is the
    outer edge of an L's bar at b = 0, or the centre line of a T's short bar.
    """
    w, arm = layout.bar_width_m, layout.arm_length_m
    ds = min(res_m, w / 12)
    s = np.arange(-1.6 * w, 2.6 * w + ds / 2, ds)  # across a bar, from outside (s < 0)
    # About one profile per image pixel along a bar (at least 20, at most 200): a real
    # edge is ragged at the pixel scale, and sparse profiles that shift with the
    # homography between passes would each time catch another part of it.
    n_along = int(np.clip((arm - 2.0 * w) / mapper.m_per_px(i), 20, 200))

    def cross(t, ab_of):
        """Edge position per t; ab_of(t, s) -> (a, b) grids."""
        tt, ss = np.meshgrid(t, s, indexing="ij")
        prof = _sample(gray, mapper.image(i, ab_of(tt, ss))).astype(np.float64)
        return _crossings(prof, s, w)

    def px(a, b):
        ok = np.isfinite(a) & np.isfinite(b)
        return mapper.image(i, np.stack([a[ok], b[ok]], -1)) if ok.any() else np.zeros((0, 2))

    # The line along b: outer edge of the bar at a = 0 (a = s), and its inner edge
    # (a = w - s) for the width check.
    if kind == "L":
        tb = np.linspace(1.4 * w, arm - 0.6 * w, n_along)
    else:
        th = layout.t_half_length_m
        half_n = n_along // 2
        tb = np.concatenate(
            [np.linspace(-th + 0.5 * w, -w, half_n), np.linspace(w, th - 0.5 * w, half_n)]
        )
    a_out = cross(tb, lambda t, s_: np.stack([s_, t], -1))
    a_in = w - cross(tb, lambda t, s_: np.stack([w - s_, t], -1))
    pts_b = px(a_out, tb)
    widths = [a_in - a_out]

    ta = np.linspace(1.4 * w, arm - 0.6 * w, n_along)
    if kind == "L":
        b_out = cross(ta, lambda t, s_: np.stack([t, s_], -1))
        b_in = w - cross(ta, lambda t, s_: np.stack([t, w - s_], -1))
        pts_a = px(ta, b_out)
        widths.append(b_in - b_out)
    else:
        # A T's short bar is centred on b = 0: its edge at -w/2 (b = s - w/2) and at
        # +w/2 (b = w/2 - s); the reference line runs through their midpoints.
        lo = cross(ta, lambda t, s_: np.stack([t, s_ - w / 2], -1)) - w / 2
        hi = w / 2 - cross(ta, lambda t, s_: np.stack([t, w / 2 - s_], -1))
        width = hi - lo
        mid = np.where((width > 0.3 * w) & (width < 2.5 * w), 0.5 * (lo + hi), np.nan)
        pts_a = px(ta, mid)
        widths.append(width)
    wv = np.concatenate(widths)
    wv = wv[np.isfinite(wv)]
    return pts_a, pts_b, (float(np.median(wv)) if wv.size else float("nan"))


def _fit_corner(gray, mapper, i, kind, layout, res_m, k, dist):
    """Refined corner (distorted px), RMS residual [px], points kept, bar width [m]."""
    pts_a, pts_b, bar_m = _edge_points(gray, mapper, i, kind, layout, res_m)
    name = CORNER_NAMES[i]
    for label, pts in (("along the target's edge", pts_a), ("along its side", pts_b)):
        if len(pts) < 8:
            raise InputError(
                f"corner marks: the {name} {kind} mark's bar {label} was not found "
                f"(only {len(pts)} edge points); is the rough guess within the search "
                f"window and the mark visible?"
            )
    line_a, res_a = _robust_line(_undistort(pts_a, k, dist))
    line_b, res_b = _robust_line(_undistort(pts_b, k, dist))
    w_nom = layout.bar_width_m
    if np.isfinite(bar_m) and not (0.4 * w_nom <= bar_m <= 2.5 * w_nom):
        raise InputError(
            f"corner marks: the {name} {kind} mark's bar measures {bar_m:.3f} m wide, "
            f"expected about {w_nom} m (MarkLayout.bar_width_m): not a corner mark, or the "
            f"target size or layout is wrong"
        )
    corner = _distort(_intersect(line_a, line_b)[None], k, dist)[0]
    res = np.concatenate([res_a, res_b])
    return corner, float(np.sqrt(np.mean(res**2))), len(res), bar_m


def refine_marks(
    frame: ArrayLike,
    rough_corners_px: ArrayLike,
    width_m: float,
    height_m: float,
    *,
    layout: MarkLayout | None = None,
    k_px: ArrayLike | None = None,
    dist_coeffs: ArrayLike | None = None,
    search_frac: float = 0.06,
    min_score: float = 0.7,
    iterations: int = 10,
) -> tuple[CornerMarkFit, ...]:
    """Find a target's four corner marks near a rough guess and refine them to sub-pixel.

    Parameters
    ----------
    frame : ndarray (H, W) or (H, W, C)
        The camera frame (any dtype; colour is averaged to grey).
    rough_corners_px : array_like (4, 2)
        Rough corners UL, UR, LR, LL in the (distorted) image. [px]
    width_m, height_m : float
        Distance between the target's corner points along x and y. [m]
    layout : MarkLayout, optional
        The marks' kinds and sizes (default: Jülich marks, kinds found from the image).
    k_px, dist_coeffs : array_like, optional
        Camera intrinsics and distortion; edges are straight lines after undistortion.
    search_frac : float
        Half size of each mark's search window, as a fraction of the target's larger
        side. [1] (0.06: a guess up to ~6 % of the target size off is found.)
    min_score : float
        Smallest accepted template correlation of a mark. [1] (The Jülich frames' marks
        score 0.89-0.93, the drawn scene's 0.88-0.96; with the guess 100-300 px off, seam
        crossings and rails score up to 0.6.)
    iterations : int
        Most edge-fit passes; each after the first runs with the homography of the
        previous pass's corners (profiles square to the edges, samples where the bars
        are). They stop when no corner moves by 0.01 px.

    Returns
    -------
    tuple of CornerMarkFit
        UL, UR, LR, LL.

    Raises
    ------
    InputError
        Bad corners or image, a mark that is not found in its window (its template
        correlation below ``min_score``, or too few edge points), or refined corners that
        are not a convex quadrilateral.
    """
    layout = MarkLayout() if layout is None else layout
    gray = _to_gray(np.asarray(frame))
    size = (gray.shape[1], gray.shape[0])
    rough = check_quadrilateral(rough_corners_px, "rough_corners_px")
    for n, v in (("width_m", width_m), ("height_m", height_m)):
        if not (np.isfinite(v) and v > 0):
            raise InputError(f"target {n} must be a positive number, got {v!r}")
    if not (0 < search_frac < 0.5):
        raise InputError(f"search_frac must be in (0, 0.5), got {search_frac!r}")
    k, d = _check_camera(k_px, dist_coeffs, size)
    plane = _plane_corners(width_m, height_m)
    h0 = _homography_4pt(plane, _undistort(rough, k, d))
    mapper = _Mapper(h0, k, d, width_m, height_m)
    search_m = search_frac * max(width_m, height_m)
    corners = np.empty((4, 2))
    kinds: list[str] = []
    scores: list[float] = []
    for i in range(4):
        # The coarse match needs a fifth of a bar, not the image's full resolution.
        res_m = max(mapper.m_per_px(i), layout.bar_width_m / 5)
        best = _coarse(gray, mapper, i, layout, MARK_KINDS, search_m, res_m)
        if best is None:
            raise InputError(
                f"corner marks: the {CORNER_NAMES[i]} mark's search window lies outside "
                f"the {size[0]}x{size[1]} image (rough corner {rough[i].round(1).tolist()})"
            )
        a, b, score, kind = best
        if score < min_score:
            raise InputError(
                f"corner marks: no L/T mark found near the "
                f"{CORNER_NAMES[i]} rough corner {rough[i].round(1).tolist()} px "
                f"(best template correlation {score:.2f} < {min_score}); check the rough "
                f"corners (order UL, UR, LR, LL) and the target size"
            )
        if layout.kinds is not None and kind != layout.kinds[i]:
            raise InputError(
                f"corner marks: the {CORNER_NAMES[i]} mark near "
                f"{rough[i].round(1).tolist()} px looks like a {kind} mark (template "
                f"correlation {score:.2f}), the layout says {layout.kinds[i]}"
            )
        corners[i] = mapper.image(i, np.array([[a, b]]))[0]
        kinds.append(kind)
        scores.append(score)
    fits: list[tuple] = []
    for n_pass in range(max(1, int(iterations))):
        check_quadrilateral(corners, "corner marks (before refinement)")
        h = _homography_4pt(plane, _undistort(corners, k, d))
        mapper = _Mapper(h, k, d, width_m, height_m)
        fits = []
        for i in range(4):
            res_m = min(mapper.m_per_px(i), layout.bar_width_m / 4)
            fits.append(_fit_corner(gray, mapper, i, kinds[i], layout, res_m, k, d))
        new = np.array([f[0] for f in fits])
        moved = float(np.max(np.abs(new - corners)))
        if moved < _CONVERGED_PX:
            break
        # From the third pass on, go half way: a ragged edge can make the undamped
        # passes cycle by a tenth of a pixel (the next pass samples another stretch).
        corners = new if n_pass < 2 else 0.5 * (corners + new)
    corners = new
    check_quadrilateral(corners, "refined corner marks")
    out = []
    for i, (uv, rms, n, width) in enumerate(fits):
        m_px = _Mapper(
            _homography_4pt(plane, _undistort(corners, k, d)), k, d, width_m, height_m
        ).m_per_px(i)
        out.append(
            CornerMarkFit(
                corner=CORNER_NAMES[i],
                kind=kinds[i],
                uv_px=np.asarray(uv, dtype=np.float64),
                rough_uv_px=rough[i].copy(),
                match_score=scores[i],
                residual_px=rms,
                n_edge_points=n,
                bar_width_px=float(width / m_px) if np.isfinite(width) else float("nan"),
            )
        )
    return tuple(out)


def register_marks(
    frame: ArrayLike,
    rough_corners_px: ArrayLike,
    width_m: float,
    height_m: float,
    *,
    layout: MarkLayout | None = None,
    k_px: ArrayLike | None = None,
    dist_coeffs: ArrayLike | None = None,
    search_frac: float = 0.06,
    min_score: float = 0.7,
) -> MarkRegistration:
    """Register a target by its corner marks, starting from rough corners.

    A frame showing several targets (the Jülich solar tower has two, stacked): pass the
    rough corners of the target wanted; each mark is searched only near its own rough
    corner. See :func:`refine_marks` for the parameters and the module docstring for the
    definition of a mark's corner point.

    Returns
    -------
    MarkRegistration
        The registration and each corner's fit.

    Examples
    --------
    >>> import numpy as np
    >>> from heliostat.vision.marks import MarkLayout, register_marks
    >>> img = np.full((400, 500), 200, np.uint8)
    >>> for (u, v), (du, dv) in zip([(100, 80), (400, 80), (400, 320), (100, 320)],
    ...                             [(1, 1), (-1, 1), (-1, -1), (1, -1)]):
    ...     # L marks, bars 6 px wide and 35 long; pixels u..u+5 end at u - 0.5 + 6
    ...     u0, u1 = sorted((u, u + 35 * du)); v0, v1 = sorted((v, v + 6 * dv))
    ...     img[v0:v1, u0:u1] = 20
    ...     u0, u1 = sorted((u, u + 6 * du)); v0, v1 = sorted((v, v + 35 * dv))
    ...     img[v0:v1, u0:u1] = 20
    >>> rough = [(104, 77), (396, 84), (403, 317), (97, 323)]
    >>> reg = register_marks(img, rough, 3.0, 2.4, layout=MarkLayout(("L",) * 4, 0.06, 0.35))
    >>> np.round(reg.corners_px, 2).tolist()  # pixel edges lie half-way between centres
    [[99.5, 79.5], [399.5, 79.5], [399.5, 319.5], [99.5, 319.5]]
    """
    fits = refine_marks(
        frame,
        rough_corners_px,
        width_m,
        height_m,
        layout=layout,
        k_px=k_px,
        dist_coeffs=dist_coeffs,
        search_frac=search_frac,
        min_score=min_score,
    )
    gray_shape = np.asarray(frame).shape
    size = (int(gray_shape[1]), int(gray_shape[0]))
    reg = register_corners(
        np.array([f.uv_px for f in fits]),
        width_m,
        height_m,
        size,
        k_px=k_px,
        dist_coeffs=dist_coeffs,
    )
    return MarkRegistration(reg, fits)
