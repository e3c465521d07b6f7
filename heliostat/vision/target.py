"""Target registration: image pixels ↔ target-plane metres.

A registration holds the camera's intrinsics and lens distortion and the homography that
takes an *undistorted* pixel to the target plane (origin at the target centre, x right and
y up as the camera sees it). Two ways to build one:

* :func:`register_corners` — four surveyed target-corner pixels (UL, UR, LR, LL) and the
  target's width and height (a fixed camera on a target with its own painted marks);
* :func:`register_aruco` — the ArUco markers the target carries
  (:class:`heliostat.config.ArucoMarkers`), detected with sub-pixel corner refinement.

Both remove lens distortion before fitting the homography. The registration also
precomputes, over the target's bounding box in the image, the target-plane position and
the target-plane area of every pixel (:class:`PlaneMaps`), which the spot detector uses to
weight each pixel by the area it covers on the target: under perspective an image-plane
centroid is biased [1]_.

Pixel convention (OpenCV): pixel (u, v) = (column, row); the centre of the top-left pixel
is (0, 0).

References
----------
.. [1] R. Hartley and A. Zisserman, *Multiple View Geometry in Computer Vision*, 2nd ed.,
   Cambridge University Press, 2004, ch. 4 (homography estimation) and 7.
.. [2] S. Garrido-Jurado, R. Muñoz-Salinas, F. J. Madrid-Cuevas and M. J. Marín-Jiménez,
   "Automatic generation and detection of highly reliable fiducial markers under
   occlusion," Pattern Recognition 47(6), 2280-2292, 2014. doi:10.1016/j.patcog.2014.01.005
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray

from heliostat.config import ArucoMarkers
from heliostat.errors import InputError

__all__ = [
    "PlaneMaps",
    "TargetRegistration",
    "check_quadrilateral",
    "register_aruco",
    "register_corners",
    "to_gray_u8",
]

_UNDISTORT_POLISH = 8


@dataclass(frozen=True, slots=True)
class PlaneMaps:
    """Per-pixel target-plane geometry over the target's bounding box in the image.

    Attributes
    ----------
    roi : (u0, v0, u1, v1)
        Bounding box in the image, columns ``u0:u1`` and rows ``v0:v1``. [px]
    x_m, y_m : ndarray (v1 - v0, u1 - u0), float32
        Target-plane position of each pixel: its centre, or for a pixel cut by the target
        edge the centre of its part on the target. [m]
    area_m2 : ndarray (v1 - v0, u1 - u0), float32
        Target-plane area of the part of each pixel's footprint that lies on the target
        (0 for pixels entirely off it). [m^2]
    coverage : ndarray (v1 - v0, u1 - u0), float32
        Fraction of each pixel's footprint that lies on the target. [1]
    edge : ndarray (v1 - v0, u1 - u0), bool
        Pixels cut by the target edge (0 < coverage < 1).
    marker : ndarray (v1 - v0, u1 - u0), bool
        Pixels touching a registration marker's square (their albedo is not the board's).
    """

    roi: tuple[int, int, int, int]
    x_m: NDArray[np.float32]
    y_m: NDArray[np.float32]
    area_m2: NDArray[np.float32]
    coverage: NDArray[np.float32]
    edge: NDArray[np.bool_]
    marker: NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class TargetRegistration:
    """Mapping between image pixels and target-plane metres for one camera and target.

    Attributes
    ----------
    width_m, height_m : float
        Target extent along its x (right) and y (up) axes. [m]
    image_size_px : (int, int)
        Image width and height the registration belongs to. [px]
    k_px : ndarray (3, 3)
        Camera intrinsic matrix. [px]
    dist_coeffs : ndarray (5,)
        OpenCV distortion coefficients (k1, k2, p1, p2, k3). [1]
    h_plane_from_px : ndarray (3, 3)
        Homography from undistorted pixel (u, v, 1) to target plane (x, y, 1) [m].
    h_px_from_plane : ndarray (3, 3)
        Its inverse.
    corners_px : ndarray (4, 2)
        Target corners UL, UR, LR, LL in the (distorted) image. [px]
    method : str
        ``"corners"`` or ``"aruco"``.
    rms_px : float
        RMS reprojection residual of the registration points (0 for exact corners). [px]
    n_markers : int
        ArUco markers used (0 for corner registration).
    markers : ArucoMarkers or None
        The target's printed markers, when known (their squares are in ``maps.marker``).
    maps : PlaneMaps
        Precomputed per-pixel plane geometry over the target's bounding box.
    """

    width_m: float
    height_m: float
    image_size_px: tuple[int, int]
    k_px: NDArray[np.float64]
    dist_coeffs: NDArray[np.float64]
    h_plane_from_px: NDArray[np.float64]
    h_px_from_plane: NDArray[np.float64]
    corners_px: NDArray[np.float64]
    method: str
    rms_px: float
    n_markers: int
    markers: ArucoMarkers | None
    maps: PlaneMaps

    # ------------------------------------------------------------------ mappings
    def undistort_px(self, uv_px: ArrayLike) -> NDArray[np.float64]:
        """Distorted pixel coordinates to undistorted (ideal pinhole) pixels. (N, 2) [px]"""
        return _undistort(np.asarray(uv_px, dtype=float), self.k_px, self.dist_coeffs)

    def pixel_to_plane(self, uv_px: ArrayLike) -> NDArray[np.float64]:
        """Image pixels (u, v) to target-plane (x, y). Shape (N, 2) [m]."""
        return _apply_h(self.h_plane_from_px, self.undistort_px(uv_px))

    def plane_to_pixel(self, xy_m: ArrayLike) -> NDArray[np.float64]:
        """Target-plane (x, y) [m] to (distorted) image pixels (u, v). Shape (N, 2) [px]."""
        und = _apply_h(self.h_px_from_plane, np.asarray(xy_m, dtype=float))
        return _distort(und, self.k_px, self.dist_coeffs)

    def pixel_scale_m(self, xy_m: ArrayLike) -> NDArray[np.float64]:
        """Side of one pixel's footprint on the target at plane points: sqrt(area). [m]"""
        xy = np.atleast_2d(np.asarray(xy_m, dtype=float))
        uv = self.plane_to_pixel(xy)
        d = 0.5
        offs = np.array([[-d, -d], [d, -d], [d, d], [-d, d]])
        out = np.empty(len(uv))
        for i, p in enumerate(uv):
            q = self.pixel_to_plane(p + offs)
            out[i] = np.sqrt(abs(_shoelace(q)))
        return out


# --------------------------------------------------------------------------- helpers
def _apply_h(h: NDArray, pts: NDArray) -> NDArray[np.float64]:
    pts = np.atleast_2d(np.asarray(pts, dtype=np.float64))
    x, y = pts[:, 0], pts[:, 1]
    w = h[2, 0] * x + h[2, 1] * y + h[2, 2]
    return np.stack(
        [(h[0, 0] * x + h[0, 1] * y + h[0, 2]) / w, (h[1, 0] * x + h[1, 1] * y + h[1, 2]) / w],
        axis=1,
    )


def _undistort(uv: NDArray, k: NDArray, dist: NDArray) -> NDArray[np.float64]:
    uv = np.atleast_2d(uv).astype(np.float64)
    if not np.any(dist):
        return uv.copy()
    und = cv2.undistortPoints(uv.reshape(-1, 1, 2), k, dist, None, k).reshape(-1, 2)
    # OpenCV's default inversion stops after a few iterations; polish it with fixed-point
    # steps on the forward model until the re-distorted points match to ~1e-9 px.
    for _ in range(_UNDISTORT_POLISH):
        res = uv - _distort(und, k, dist)
        und = und + res
        if float(np.max(np.abs(res))) < 1e-9:
            break
    return und


def _distort(uv_und: NDArray, k: NDArray, dist: NDArray) -> NDArray[np.float64]:
    """Ideal pinhole pixels to distorted pixels (OpenCV model)."""
    uv_und = np.atleast_2d(uv_und).astype(np.float64)
    if not np.any(dist):
        return uv_und.copy()
    if dist.size > 5:
        n = np.linalg.solve(k, np.c_[uv_und, np.ones(len(uv_und))].T).T
        pts, _ = cv2.projectPoints(n.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), k, dist)
        return pts.reshape(-1, 2)
    d = np.zeros(5)
    d[: dist.size] = dist
    k1, k2, p1, p2, k3 = d
    fx, fy, cx, cy, skew = k[0, 0], k[1, 1], k[0, 2], k[1, 2], k[0, 1]
    y = (uv_und[:, 1] - cy) / fy
    x = (uv_und[:, 0] - cx - skew * y) / fx
    r2 = x * x + y * y
    rad = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * rad + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
    yd = y * rad + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
    return np.stack([fx * xd + skew * yd + cx, fy * yd + cy], axis=1)


def _homography_4pt(src: NDArray, dst: NDArray) -> NDArray[np.float64]:
    """Exact homography through four point pairs (8x8 linear solve in float64, h33 = 1)."""
    a = np.zeros((8, 8))
    b = np.zeros(8)
    for i, ((x, y), (u, v)) in enumerate(zip(src, dst, strict=True)):
        a[2 * i] = [x, y, 1, 0, 0, 0, -u * x, -u * y]
        a[2 * i + 1] = [0, 0, 0, x, y, 1, -v * x, -v * y]
        b[2 * i], b[2 * i + 1] = u, v
    return np.append(np.linalg.solve(a, b), 1.0).reshape(3, 3)


def _shoelace(q: NDArray) -> float:
    x, y = q[:, 0], q[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _plane_corners(width_m: float, height_m: float) -> NDArray[np.float64]:
    w, h = width_m / 2, height_m / 2
    return np.array([[-w, h], [w, h], [w, -h], [-w, -h]])


def check_quadrilateral(corners_px: ArrayLike, name: str = "corners_px") -> NDArray[np.float64]:
    """Validate four image corners UL, UR, LR, LL: finite, convex, clockwise on screen.

    Returns the corners as a float (4, 2) array.

    Raises
    ------
    InputError
        Wrong shape, non-finite values, repeated points, a non-convex or self-crossing
        quadrilateral, or the wrong winding order.
    """
    try:
        c = np.asarray(corners_px, dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"{name}: expected 4 (u, v) pairs, got {corners_px!r}") from None
    if c.shape != (4, 2):
        raise InputError(f"{name}: expected shape (4, 2) (UL, UR, LR, LL), got {c.shape}")
    if not np.all(np.isfinite(c)):
        raise InputError(f"{name}: corners must be finite, got {c.tolist()}")
    edges = np.roll(c, -1, axis=0) - c
    if np.any(np.hypot(edges[:, 0], edges[:, 1]) < 1.0):
        raise InputError(f"{name}: two corners coincide (closer than 1 px): {c.tolist()}")
    cross = (
        edges[:, 0] * np.roll(edges, -1, axis=0)[:, 1]
        - edges[:, 1] * np.roll(edges, -1, axis=0)[:, 0]
    )
    area = _shoelace(c)
    # In image coordinates (v down) UL -> UR -> LR -> LL turns clockwise on screen, which is
    # a positive cross product at every vertex of a convex quadrilateral.
    if not (np.all(cross > 0) or np.all(cross < 0)) or abs(area) < 1.0:
        raise InputError(
            f"{name}: the four corners do not form a convex quadrilateral: {c.tolist()}"
        )
    if np.all(cross < 0):
        raise InputError(
            f"{name}: corners run counter-clockwise on screen; expected the order upper-left, "
            f"upper-right, lower-right, lower-left, got {c.tolist()}"
        )
    return c


def _check_camera(
    k_px: ArrayLike | None, dist_coeffs: ArrayLike | None, image_size_px: tuple[int, int]
) -> tuple[NDArray, NDArray]:
    w, h = image_size_px
    if k_px is None:
        f = float(max(w, h))
        k = np.array([[f, 0.0, (w - 1) / 2], [0.0, f, (h - 1) / 2], [0.0, 0.0, 1.0]])
    else:
        k = np.asarray(k_px, dtype=float)
        if k.shape != (3, 3) or not np.all(np.isfinite(k)) or k[0, 0] <= 0 or k[1, 1] <= 0:
            raise InputError(f"k_px: expected a 3x3 intrinsic matrix, got {k.tolist()}")
    d = np.zeros(5) if dist_coeffs is None else np.asarray(dist_coeffs, dtype=float).ravel()
    if d.size not in (4, 5, 8, 12, 14) or not np.all(np.isfinite(d)):
        raise InputError(f"dist_coeffs: expected 5 finite OpenCV coefficients, got {d.tolist()}")
    return k, d


def _check_size(width_m: float, height_m: float, image_size_px: tuple[int, int]) -> None:
    for n, v in (("width_m", width_m), ("height_m", height_m)):
        if not (np.isfinite(v) and v > 0):
            raise InputError(f"target {n} must be a positive number, got {v!r}")
    w, h = image_size_px
    if int(w) < 8 or int(h) < 8:
        raise InputError(f"image_size_px: expected at least 8x8 pixels, got {image_size_px!r}")


# --------------------------------------------------------------------------- plane maps
def _plane_maps(
    h_plane_from_px: NDArray,
    k: NDArray,
    dist: NDArray,
    corners_px: NDArray,
    width_m: float,
    height_m: float,
    image_size_px: tuple[int, int],
    markers: ArucoMarkers | None = None,
) -> PlaneMaps:
    w_img, h_img = image_size_px
    # Bounding box of the target outline, densely sampled (distortion bends the edges).
    t = np.linspace(0.0, 1.0, 257)[:-1, None]
    pc = _plane_corners(width_m, height_m)
    outline = np.concatenate([pc[i] + t * (pc[(i + 1) % 4] - pc[i]) for i in range(4)])
    und = _apply_h(np.linalg.inv(h_plane_from_px), outline)
    uv = _distort(und, k, dist)
    u0 = int(np.clip(np.floor(uv[:, 0].min()) - 1, 0, w_img))
    v0 = int(np.clip(np.floor(uv[:, 1].min()) - 1, 0, h_img))
    u1 = int(np.clip(np.ceil(uv[:, 0].max()) + 2, 0, w_img))
    v1 = int(np.clip(np.ceil(uv[:, 1].max()) + 2, 0, h_img))
    if u1 - u0 < 2 or v1 - v0 < 2:
        raise InputError(
            f"the registered target lies outside the {w_img}x{h_img} image "
            f"(corners {np.round(corners_px, 1).tolist()})"
        )
    # Plane coordinates of every pixel corner (half-integer grid) of the box.
    gu, gv = np.meshgrid(
        np.arange(u0, u1 + 1, dtype=np.float64) - 0.5, np.arange(v0, v1 + 1, dtype=np.float64) - 0.5
    )
    pts = np.stack([gu.ravel(), gv.ravel()], axis=1)
    xy = _apply_h(h_plane_from_px, _undistort(pts, k, dist))
    gx = xy[:, 0].reshape(gu.shape)
    gy = xy[:, 1].reshape(gu.shape)
    # Each pixel's footprint on the plane is the quadrilateral of its four corner points.
    x00, x10, x11, x01 = gx[:-1, :-1], gx[:-1, 1:], gx[1:, 1:], gx[1:, :-1]
    y00, y10, y11, y01 = gy[:-1, :-1], gy[:-1, 1:], gy[1:, 1:], gy[1:, :-1]
    area = 0.5 * np.abs((x11 - x00) * (y01 - y10) - (x01 - x10) * (y11 - y00))
    xmin = np.minimum(np.minimum(x00, x10), np.minimum(x11, x01))
    xmax = np.maximum(np.maximum(x00, x10), np.maximum(x11, x01))
    ymin = np.minimum(np.minimum(y00, y10), np.minimum(y11, y01))
    ymax = np.maximum(np.maximum(y00, y10), np.maximum(y11, y01))
    xc = 0.25 * (x00 + x10 + x11 + x01)
    yc = 0.25 * (y00 + y10 + y11 + y01)
    hw, hh = width_m / 2, height_m / 2
    # Coverage of the target rectangle: overlap of the footprint's x and y extents with
    # the target's (exact for footprints aligned with the target axes, close otherwise).
    lo_x, hi_x = np.maximum(xmin, -hw), np.minimum(xmax, hw)
    lo_y, hi_y = np.maximum(ymin, -hh), np.minimum(ymax, hh)
    cov_x = np.clip((hi_x - lo_x) / np.maximum(xmax - xmin, 1e-300), 0.0, 1.0)
    cov_y = np.clip((hi_y - lo_y) / np.maximum(ymax - ymin, 1e-300), 0.0, 1.0)
    coverage = cov_x * cov_y
    edge = (coverage > 0) & (coverage < 1)
    # For a pixel cut by the edge, its flux on the target sits at the centre of the part
    # on the target: shift the position by the clipped interval's midpoint.
    x_pos = np.where(cov_x < 1, xc + 0.5 * (lo_x + hi_x) - 0.5 * (xmin + xmax), xc)
    y_pos = np.where(cov_y < 1, yc + 0.5 * (lo_y + hi_y) - 0.5 * (ymin + ymax), yc)
    on = coverage > 0
    marker = np.zeros(on.shape, bool)
    if markers is not None:
        for sq in markers.corners_xy_m(width_m, height_m):
            mx0, my0 = sq.min(axis=0)
            mx1, my1 = sq.max(axis=0)
            marker |= (xmax > mx0) & (xmin < mx1) & (ymax > my0) & (ymin < my1)
    return PlaneMaps(
        roi=(u0, v0, u1, v1),
        x_m=np.where(on, x_pos, 0.0).astype(np.float32),
        y_m=np.where(on, y_pos, 0.0).astype(np.float32),
        area_m2=np.where(on, area * coverage, 0.0).astype(np.float32),
        coverage=coverage.astype(np.float32),
        edge=edge,
        marker=marker & on,
    )


def _build(
    h_plane_from_px: NDArray,
    k: NDArray,
    dist: NDArray,
    width_m: float,
    height_m: float,
    image_size_px: tuple[int, int],
    method: str,
    rms_px: float,
    n_markers: int,
    markers: ArucoMarkers | None,
) -> TargetRegistration:
    und_corners = _apply_h(np.linalg.inv(h_plane_from_px), _plane_corners(width_m, height_m))
    corners_px = _distort(und_corners, k, dist)
    maps = _plane_maps(
        h_plane_from_px, k, dist, corners_px, width_m, height_m, image_size_px, markers
    )
    return TargetRegistration(
        float(width_m),
        float(height_m),
        (int(image_size_px[0]), int(image_size_px[1])),
        k,
        dist,
        h_plane_from_px,
        np.linalg.inv(h_plane_from_px),
        corners_px,
        method,
        float(rms_px),
        int(n_markers),
        markers,
        maps,
    )


# --------------------------------------------------------------------------- public
def register_corners(
    corners_px: ArrayLike,
    width_m: float,
    height_m: float,
    image_size_px: tuple[int, int],
    *,
    k_px: ArrayLike | None = None,
    dist_coeffs: ArrayLike | None = None,
    markers: ArucoMarkers | None = None,
) -> TargetRegistration:
    """Register a target from four surveyed corner pixels.

    Parameters
    ----------
    corners_px : array_like (4, 2)
        Target corners in the (distorted) image, order upper-left, upper-right,
        lower-right, lower-left. [px]
    width_m, height_m : float
        Target extent along its x (right) and y (up) axes. [m]
    image_size_px : (int, int)
        Image width and height. [px]
    k_px, dist_coeffs : array_like, optional
        Camera intrinsics and OpenCV distortion; without them the image is taken as
        distortion-free (the intrinsics then only matter through the distortion).
    markers : ArucoMarkers, optional
        Markers printed on the target (not used for the fit; the detector needs to know
        where the board's albedo differs).

    Returns
    -------
    TargetRegistration

    Raises
    ------
    InputError
        Corners that are not a convex quadrilateral in the stated order, a non-positive
        target size, bad intrinsics.
    """
    c = check_quadrilateral(corners_px)
    _check_size(width_m, height_m, image_size_px)
    k, d = _check_camera(k_px, dist_coeffs, image_size_px)
    und = _undistort(c, k, d)
    check_quadrilateral(und, "corners_px (after removing lens distortion)")
    h = _homography_4pt(und, _plane_corners(width_m, height_m))
    return _build(h, k, d, width_m, height_m, image_size_px, "corners", 0.0, 0, markers)


def to_gray_u8(image: NDArray, lo_pct: float = 0.5, hi_pct: float = 99.5) -> NDArray[np.uint8]:
    """A grey 8-bit view of any 8/16-bit or float grey/colour image, contrast-stretched
    between two percentiles (for marker detection; not for photometry)."""
    img = np.asarray(image)
    if img.ndim == 3:
        img = img[..., :3].astype(np.float32).mean(axis=2)
    sub = img[::4, ::4]
    lo, hi = np.percentile(sub, [lo_pct, hi_pct])
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        return np.zeros(img.shape[:2], np.uint8)
    out = (img.astype(np.float32) - lo) * (255.0 / (hi - lo))
    return np.clip(out, 0, 255).astype(np.uint8)


def _aruco_dictionary(name: str):
    if not hasattr(cv2, "aruco"):  # pragma: no cover - opencv without contrib aruco
        raise InputError("this OpenCV build has no cv2.aruco module")
    code = getattr(cv2.aruco, name, None)
    if not isinstance(code, int) or not name.startswith("DICT_"):
        raise InputError(f"markers.dictionary: unknown ArUco dictionary {name!r}")
    return cv2.aruco.getPredefinedDictionary(code)


#: Upper percentiles of the 8-bit stretches tried for marker detection, in order.
_STRETCH_PERCENTILES = (99.5, 95.0, 85.0, 70.0)


def detect_markers(
    image: NDArray, markers: ArucoMarkers
) -> tuple[dict[int, NDArray[np.float64]], int]:
    """Detect a target's ArUco markers with sub-pixel corner refinement.

    The frame is contrast-stretched to 8 bits up to its 99.5th percentile; when that finds
    fewer than all markers, lower percentiles are tried (a sun spot on the target, a
    neighbour's in a sun-off frame, can fill the top percent and leave the board dark)
    and the stretch that finds the most is kept.

    Returns
    -------
    found : dict
        Marker position in ``markers.ids`` (0 = UL ... 3 = LR order) -> its four corners in
        the (distorted) image, ArUco order, shape (4, 2). [px]
    n_other : int
        Markers detected whose ids do not belong to this target.
    """
    params = cv2.aruco.DetectorParameters()
    params.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
    params.cornerRefinementWinSize = 5
    params.cornerRefinementMaxIterations = 100
    params.cornerRefinementMinAccuracy = 0.001
    det = cv2.aruco.ArucoDetector(_aruco_dictionary(markers.dictionary), params)
    want = list(markers.ids)
    best: tuple[dict[int, NDArray[np.float64]], int] = ({}, 0)
    for hi_pct in _STRETCH_PERCENTILES:
        corners, ids, _ = det.detectMarkers(to_gray_u8(image, hi_pct=hi_pct))
        found: dict[int, NDArray[np.float64]] = {}
        n_other = 0
        for c, i in zip(corners, () if ids is None else ids.ravel(), strict=True):
            if int(i) in want and want.index(int(i)) not in found:
                found[want.index(int(i))] = c.reshape(4, 2).astype(np.float64)
            else:
                n_other += 1
        if len(found) > len(best[0]):
            best = (found, n_other)
        if len(found) == len(want):
            break
    return best


def _line_tls(p: NDArray) -> tuple[NDArray, NDArray]:
    """Total-least-squares line through points: (point on line, unit direction)."""
    c = p.mean(axis=0)
    _, _, vt = np.linalg.svd(p - c, full_matrices=False)
    return c, vt[0]


def _intersect(l1: tuple[NDArray, NDArray], l2: tuple[NDArray, NDArray]) -> NDArray:
    (p1, d1), (p2, d2) = l1, l2
    a = np.array([[d1[0], -d2[0]], [d1[1], -d2[1]]])
    t = np.linalg.solve(a, p2 - p1)
    return p1 + t[0] * d1


def refine_marker_corners(
    gray: NDArray, corners_px: NDArray, k: NDArray, dist: NDArray, half_px: float = 3.0
) -> NDArray[np.float64] | None:
    """Refine one marker's outer corners by fitting straight lines to its four edges.

    Along each side, between 15 % and 85 % of its length, the intensity profile across
    the edge is sampled (bilinear, 0.25 px steps, +-``half_px``); the edge point is the
    centroid of the profile's gradient magnitude. The points are undistorted, a line is
    fitted to each side by total least squares, and adjacent lines are intersected. Edges
    are straight only without lens distortion, so the result is returned in
    **undistorted** pixels. None when a side has too few usable points.
    """
    c = np.asarray(corners_px, dtype=np.float64)
    centre = c.mean(axis=0)
    steps = np.arange(-half_px, half_px + 1e-9, 0.25)
    lines = []
    for i in range(4):
        a, b = c[i], c[(i + 1) % 4]
        d = b - a
        length = float(np.hypot(*d))
        if length < 8:
            return None
        d = d / length
        n = np.array([-d[1], d[0]])
        if np.dot(n, 0.5 * (a + b) - centre) < 0:
            n = -n  # outward
        t = np.linspace(0.15, 0.85, max(int(0.7 * length), 6))
        pts = a + t[:, None] * (b - a)
        samp = pts[:, None, :] + steps[None, :, None] * n[None, None, :]
        prof = cv2.remap(
            gray,
            samp[..., 0].astype(np.float32),
            samp[..., 1].astype(np.float32),
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        ).astype(np.float64)
        grad = np.diff(prof, axis=1)  # dark (inside) -> bright (outside): positive
        grad = np.clip(grad, 0.0, None)
        mid = 0.5 * (steps[1:] + steps[:-1])
        wsum = grad.sum(axis=1)
        ok = wsum > 0.25 * np.median(wsum) if np.any(wsum > 0) else np.zeros(len(wsum), bool)
        if ok.sum() < 4:
            return None
        off = (grad[ok] * mid).sum(axis=1) / wsum[ok]
        edge_pts = pts[ok] + off[:, None] * n
        lines.append(_line_tls(_undistort(edge_pts, k, dist)))
    return np.array([_intersect(lines[(i - 1) % 4], lines[i]) for i in range(4)])


def register_aruco(
    image: NDArray,
    markers: ArucoMarkers,
    width_m: float,
    height_m: float,
    *,
    k_px: ArrayLike | None = None,
    dist_coeffs: ArrayLike | None = None,
    min_markers: int = 2,
) -> TargetRegistration:
    """Register a target from the ArUco markers printed on it.

    Each detected marker gives four corners (sub-pixel refined [2]_); the corners are
    undistorted and a homography to their known target-plane positions
    (:meth:`ArucoMarkers.corners_xy_m`) is fitted by least squares over all of them.

    Parameters
    ----------
    image : ndarray (H, W) or (H, W, C)
        A frame showing the target (preferably a sun-off frame). 8/16-bit or float.
    markers : ArucoMarkers
        The target's marker layout.
    width_m, height_m : float
        Target extent. [m]
    k_px, dist_coeffs : array_like, optional
        Camera intrinsics and distortion.
    min_markers : int
        Fewest markers accepted (2 gives 8 points, enough for a well-conditioned fit).

    Raises
    ------
    InputError
        Fewer than ``min_markers`` of the target's markers found, or a bad image.
    """
    img = np.asarray(image)
    if img.ndim not in (2, 3) or img.size == 0:
        raise InputError(f"image: expected a (H, W) or (H, W, C) array, got shape {img.shape}")
    size = (img.shape[1], img.shape[0])
    _check_size(width_m, height_m, size)
    k, d = _check_camera(k_px, dist_coeffs, size)
    found, _ = detect_markers(img, markers)
    if len(found) < max(1, int(min_markers)):
        raise InputError(
            f"ArUco registration: found {len(found)} of the target's 4 markers "
            f"(ids {list(markers.ids)}, {markers.dictionary}); need at least {min_markers}"
        )
    xy_all = markers.corners_xy_m(width_m, height_m)
    idx = sorted(found)
    plane_pts = np.concatenate([xy_all[i] for i in idx])
    gray = np.asarray(img, dtype=np.float32)
    if gray.ndim == 3:
        gray = gray[..., :3].mean(axis=2)
    refined = [refine_marker_corners(gray, found[i], k, d) for i in idx]
    und = np.concatenate(
        [
            r if r is not None else _undistort(found[i], k, d)
            for r, i in zip(refined, idx, strict=True)
        ]
    )
    h, _ = cv2.findHomography(und, plane_pts, 0)
    if h is None or not np.all(np.isfinite(h)):
        raise InputError("ArUco registration: the homography fit failed (degenerate markers)")
    # Residuals in pixels: project the plane points back through the fitted homography.
    back = _apply_h(np.linalg.inv(h), plane_pts)
    rms = float(np.sqrt(np.mean(np.sum((back - und) ** 2, axis=1))))
    reg = _build(h, k, d, width_m, height_m, size, "aruco", rms, len(found), markers)
    check_quadrilateral(reg.corners_px, "ArUco-registered target corners")
    return reg
