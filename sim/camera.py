"""Simulated camera: placement in the field and frames of a target with flux spots.

Rendering
---------
The target and the tower wall are Lambertian, so a pixel's signal is proportional to
albedo(xy) · (E_spot(xy) + E_ambient), with xy the target-plane point the pixel sees
(radiance, hence pixel value, does not depend on distance or viewing angle). For each
camera and target a :class:`CameraView` is computed once and memoised: every pixel centre
is undistorted (OpenCV model, iterated to 1e-12), cast as a ray and intersected with the
target plane; the albedo texture (:mod:`sim.target_texture`, area-averaged texels of half
a pixel) is sampled there with ``cv2.remap``. Pixels that miss the tower wall see sky.

A pixel integrates the irradiance over its footprint. The spot's Gaussians are wide
(tens of pixels) compared with a footprint, and for any Gaussian the footprint average is,
to second order, the same Gaussian with its covariance widened by the footprint's box
variance (F diag(1/12, 1/12) Fᵀ, F = d(xy)/d(u, v) at the spot): this keeps centroid and
power exact and costs nothing. The Gaussians are evaluated on a pixel sub-grid (step
<= σ/6, inside the union of their ±6σ boxes) and interpolated linearly to every pixel,
which keeps a 1280×1024 frame near 0.1 s.

Sensor: electrons = exposure · albedo · E (exposure in e⁻ per W/m² of albedo-weighted
irradiance, clipped at the full well); shot noise (Gaussian with variance = signal, the
Poisson limit, accurate above ~10 e⁻ where read noise no longer dominates) and read noise;
DN = black level + e⁻ / gain, gain = full well / (max DN − black level), rounded and
clipped to the ADC range. Automatic exposure puts the brightest noise-free pixel at
``SensorModel.auto_fraction`` of full scale.

Sunlit targets (``board=``, :mod:`sim.real_texture`): the board is a real empty-target
image; the spot sees its reflectance, the ambient its grey levels (shadows included),
``shadow=`` darkens the ambient only, ``board_fraction=`` exposes for the board and
``contrast=`` sets the ambient from the spot's peak; :func:`render_sunlit_pair`.

Truth: :class:`FrameTruth` per spot, the flux centroid of the part on the target (exact
quadrature, :func:`sim.optics.on_target_flux`) in plane, ENU and distorted-pixel
coordinates. :func:`render_pair` gives a sun-on frame and its dark frame at one exposure.

Pixel coordinates follow OpenCV: (u, v) = (column, row), integer values at pixel centres.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from heliostat.config import CameraConfig, FieldConfig, Target, look_at
from heliostat.frames import normalize
from sim.optics import FluxSpot, on_target_flux
from sim.real_texture import BoardImage, Shadow, SunlitConditions, board_textures, shadow_factor
from sim.target_texture import Texture, build_texture

#: Albedo-equivalent of clear sky seen above the tower (signal = SKY · E_ambient). [1]
SKY_ALBEDO = 0.6


# --------------------------------------------------------------------------- placement
def place_camera(
    field: FieldConfig,
    target: Target,
    *,
    width_px: int = 1280,
    height_px: int = 1024,
    bit_depth: int = 12,
    fill: float = 0.8,
    height_m: float = 1.5,
    view_angle_rad: float = math.radians(25.0),
    yaw_rad: float = math.radians(8.0),
    distance_m: float | None = None,
    distortion_px: float = 2.0,
    roll_rad: float = 0.0,
) -> CameraConfig:
    """A camera in front of the target, looking at its centre, the target filling the frame.

    Parameters
    ----------
    field : heliostat.config.FieldConfig
        The plant: the camera keeps a mirror diagonal + 1 m away from every heliostat
        (the yaw is nudged by up to ±30° to find room).
    target : heliostat.config.Target
    width_px, height_px, bit_depth : int
        Sensor size [px] and ADC bits.
    fill : float
        Fraction of the frame (limiting dimension) the target spans. [1]
    height_m : float
        Camera height: ENU up coordinate (ground or mast). [m]
    view_angle_rad : float
        Elevation of the line of sight above the horizontal, used to set the distance
        when ``distance_m`` is None (perspective, yet not too oblique). [rad]
    yaw_rad : float
        Horizontal offset of the camera from the target normal (off-axis). [rad]
    distance_m : float, optional
        Horizontal distance from the target centre. [m]
    distortion_px : float
        Radial (barrel) distortion displacement at the frame corner; sets k1. [px]
    roll_rad : float
        Camera roll about its optical axis. [rad]
    """
    if width_px < 16 or height_px < 16:
        raise ValueError(f"sensor must be at least 16x16 px, got {width_px}x{height_px}")
    if bit_depth not in (8, 10, 12, 14, 16):
        raise ValueError(f"bit_depth must be 8, 10, 12, 14 or 16, got {bit_depth!r}")
    if not 0 < fill <= 1:
        raise ValueError(f"fill must lie in (0, 1], got {fill!r}")
    c = target.centre_enu_m
    n_h = np.array([target.u_normal_enu[0], target.u_normal_enu[1], 0.0])
    if np.linalg.norm(n_h) < 1e-6:
        raise ValueError(f"target {target.id} faces straight up: place the camera by hand")
    n_h = normalize(n_h)
    if distance_m is None:
        rise = c[2] - height_m
        distance_m = max(abs(rise) / math.tan(view_angle_rad), 4.0 * max(target.width_m, 1.0))
    helio = np.array([h.position_enu_m[:2] for h in field.heliostats.values()]).reshape(-1, 2)
    # Keep clear of heliostats (a mirror diagonal + 1 m), nudging the yaw 1° at a time.
    pos = None
    for k in range(61):
        yaw = yaw_rad + math.radians((k + 1) // 2) * (1 if k % 2 else -1) * (k > 0)
        cy, sy = math.cos(yaw), math.sin(yaw)
        bearing = np.array([cy * n_h[0] - sy * n_h[1], sy * n_h[0] + cy * n_h[1], 0.0])
        cand = np.array([c[0], c[1], 0.0]) + distance_m * bearing
        gaps = np.linalg.norm(helio - cand[:2], axis=1) if helio.size else np.array([np.inf])
        reach = [
            math.hypot(h.mirror.width_m, h.mirror.height_m) + 1.0 for h in field.heliostats.values()
        ] or [0.0]
        if np.all(gaps > np.asarray(reach)):
            pos = cand
            break
    if pos is None:
        raise ValueError(
            f"no free spot for the camera within ±30° of yaw_rad at {distance_m:.0f} m from "
            f"target {target.id}; give distance_m or yaw_rad"
        )
    pos[2] = height_m
    r = look_at(pos, c, roll_rad)
    # Focal length: project the corners with f = 1 and scale to the requested fill.
    pc = (target.corners_enu_m() - pos) @ r.T
    xn, yn = pc[:, 0] / pc[:, 2], pc[:, 1] / pc[:, 2]
    ext_x = 2 * np.max(np.abs(xn))
    ext_y = 2 * np.max(np.abs(yn))
    f = fill * min(width_px / ext_x, height_px / ext_y)
    k = np.array([[f, 0.0, (width_px - 1) / 2], [0.0, f, (height_px - 1) / 2], [0.0, 0.0, 1.0]])
    r_corner = math.hypot(width_px / 2, height_px / 2) / f  # normalised corner radius
    k1 = -distortion_px / (f * r_corner**3)  # displacement ≈ f k1 r³
    dist = np.array([k1, 0.0, 0.0, 0.0, 0.0])
    return CameraConfig(
        width_px,
        height_px,
        k,
        dist,
        bit_depth,
        pos,
        r,
        target.id,
        None,
        SensorModel().black_dn(bit_depth),
    )


def camera_to_dict(camera: CameraConfig) -> dict:
    """A camera as plain data in the ``camera.toml`` schema (``dumps_toml`` writes it;
    ``heliostat.config.load_camera`` reads it back with the same projection)."""
    c: dict = dict(
        width_px=int(camera.width_px),
        height_px=int(camera.height_px),
        fx_px=float(camera.k_px[0, 0]),
        fy_px=float(camera.k_px[1, 1]),
        cx_px=float(camera.k_px[0, 2]),
        cy_px=float(camera.k_px[1, 2]),
        dist_coeffs=[float(v) for v in np.asarray(camera.dist_coeffs).ravel()[:5]],
        bit_depth=int(camera.bit_depth),
        black_level_dn=float(camera.black_level_dn),
    )
    if camera.position_enu_m is not None and camera.r_enu_cam is not None:
        r = np.asarray(camera.r_enu_cam, dtype=float)
        pos = np.asarray(camera.position_enu_m, dtype=float)
        z = r[2]
        x0 = normalize(np.cross(z, [0.0, 0.0, 1.0]))
        y0 = np.cross(z, x0)
        roll = math.atan2(float(r[0] @ y0), float(r[0] @ x0))
        c["position_enu_m"] = [float(v) for v in pos]
        c["look_at_enu_m"] = [float(v) for v in pos + 100.0 * z]
        c["roll_deg"] = math.degrees(roll)
    if camera.target:
        c["target"] = camera.target
    if camera.corners_px is not None:
        c["corners_px"] = [[float(a), float(b)] for a, b in np.asarray(camera.corners_px)]
    return {"camera": c}


# --------------------------------------------------------------------------- sensor
@dataclass(frozen=True, slots=True)
class SensorModel:
    """Radiometric sensor parameters.

    Attributes
    ----------
    full_well_e : float
        Electrons at saturation (= full scale). [e-]
    read_noise_e : float
        RMS read noise. [e-]
    black_level_dn : float or None
        Offset added to every pixel; None = 64 DN at 12 bit, scaled with bit depth. [DN]
    auto_fraction : float
        Auto exposure puts the brightest noise-free pixel at this fraction of full scale.
    """

    full_well_e: float = 10_000.0
    read_noise_e: float = 5.0
    black_level_dn: float | None = None
    auto_fraction: float = 0.7

    def black_dn(self, bit_depth: int) -> float:
        if self.black_level_dn is not None:
            return float(self.black_level_dn)
        return float(round(64 * 2.0 ** (bit_depth - 12), 3)) if bit_depth >= 8 else 0.0

    def gain_e_per_dn(self, bit_depth: int) -> float:
        return self.full_well_e / ((2**bit_depth - 1) - self.black_dn(bit_depth))


# --------------------------------------------------------------------------- view
@dataclass(frozen=True, slots=True)
class CameraView:
    """What each pixel of a camera sees of one target's plane (computed once per camera).

    Attributes
    ----------
    xy_m : ndarray (H, W, 2) float32
        Target-plane point at each pixel centre (sky pixels: far away, 1e6 m). [m]
    on_wall : ndarray (H, W) bool
        True where the pixel sees the tower wall or the target (False: sky).
    pixel_area_m2 : ndarray (H, W) float32
        Plane area of each pixel's footprint (0 on sky). [m^2]
    albedo : ndarray (H, W) float32
        Footprint-averaged albedo (sky: :data:`SKY_ALBEDO`), the one the spot sees. [1]
    texture : sim.target_texture.Texture
    ambient_albedo : ndarray (H, W) float32 or None
        Albedo the ambient light sees, when it differs from ``albedo`` (a sunlit board:
        its image's shadows and exposure, :mod:`sim.real_texture`). [1]
    on_board : ndarray (H, W) bool or None
        True where the pixel centre lies on the target rectangle.
    """

    xy_m: NDArray[np.float32]
    on_wall: NDArray[np.bool_]
    pixel_area_m2: NDArray[np.float32]
    albedo: NDArray[np.float32]
    texture: Texture
    ambient_albedo: NDArray[np.float32] | None = None
    on_board: NDArray[np.bool_] | None = None

    def footprint_jacobian(self, u: float, v: float) -> NDArray[np.float64]:
        """d(xy)/d(u, v) at a pixel (nearest, clipped into the frame). Shape (2, 2) [m/px]."""
        h, w = self.on_wall.shape
        j = int(np.clip(round(u), 1, w - 2))
        i = int(np.clip(round(v), 1, h - 2))
        xy = self.xy_m[i - 1 : i + 2, j - 1 : j + 2].astype(np.float64)
        du = (xy[1, 2] - xy[1, 0]) / 2.0
        dv = (xy[2, 1] - xy[0, 1]) / 2.0
        return np.column_stack([du, dv])


def undistort_normalised(camera: CameraConfig, uv_px: NDArray) -> NDArray[np.float64]:
    """Distorted pixels (..., 2) to ideal normalised image coordinates (..., 2).

    Fixed-point inversion of the OpenCV (k1, k2, p1, p2, k3) model, iterated until the
    re-distorted point matches to 1e-9 of a focal length (ValueError if it does not)."""
    k = np.asarray(camera.k_px, float)
    d = np.zeros(5)
    dc = np.asarray(camera.dist_coeffs, float).ravel()[:5]
    d[: dc.size] = dc
    k1, k2, p1, p2, k3 = d
    xd = (uv_px[..., 0] - k[0, 2]) / k[0, 0]
    yd = (uv_px[..., 1] - k[1, 2]) / k[1, 1]

    def distort(x, y):
        r2 = x * x + y * y
        rad = 1 + k1 * r2 + k2 * r2 * r2 + k3 * r2 * r2 * r2
        return (
            x * rad + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
            y * rad + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y,
        )

    x, y = xd.copy(), yd.copy()
    for _ in range(100):
        dx, dy = distort(x, y)
        ex, ey = dx - xd, dy - yd
        x -= ex
        y -= ey
        if max(np.max(np.abs(ex)), np.max(np.abs(ey))) < 1e-12:
            break
    dx, dy = distort(x, y)
    if max(np.max(np.abs(dx - xd)), np.max(np.abs(dy - yd))) > 1e-9:
        raise ValueError("lens distortion too strong to invert over the frame")
    return np.stack([x, y], axis=-1)


def _pixel_rays_to_plane(camera: CameraConfig, target: Target) -> NDArray[np.float64]:
    if camera.r_enu_cam is None or camera.position_enu_m is None:
        raise ValueError("camera pose is not set (position_enu_m and look_at_enu_m)")
    h, w = camera.height_px, camera.width_px
    uu, vv = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    und = undistort_normalised(camera, np.stack([uu, vv], axis=-1))
    d_cam = np.concatenate([und, np.ones((h, w, 1))], axis=-1)
    d_enu = d_cam @ np.asarray(camera.r_enu_cam, float)  # R^T d for row vectors
    o = np.asarray(camera.position_enu_m, float)
    nrm = target.u_normal_enu
    denom = d_enu @ nrm
    with np.errstate(divide="ignore", invalid="ignore"):
        t = ((target.centre_enu_m - o) @ nrm) / denom
    t = np.where((np.abs(denom) < 1e-12) | (t <= 0), np.nan, t)
    p = o + t[..., None] * d_enu
    return target.enu_to_plane(p)


def _wall_box(target: Target) -> tuple[float, float]:
    """Half-width and top (plane y) of the tower wall around the target. [m]"""
    return max(1.5 * target.width_m, 6.0), target.height_m / 2 + max(0.5 * target.height_m, 2.0)


def build_view(
    camera: CameraConfig,
    target: Target,
    albedo_variation: float = 0.02,
    board: BoardImage | None = None,
) -> CameraView:
    """Compute the pixel → target-plane map, footprint areas and albedo (see module doc).
    ``albedo_variation``: smooth relative non-uniformity of the board's albedo (soiling),
    see :func:`sim.target_texture.build_texture`. [1] ``board``: a real empty-target
    image to draw instead of the ArUco board (:mod:`sim.real_texture`; its own
    non-uniformity replaces ``albedo_variation``)."""
    import cv2

    xy_safe, on_wall, area, on_board, texel = _geometry(camera, target)
    if board is None:
        tex, amb_tex = build_texture(target, texel, albedo_variation=albedo_variation), None
    else:
        tex, amb_tex = board_textures(target, texel, board)
    col, row = (c.astype(np.float32) for c in tex.to_texel(xy_safe))

    def sample(t: Texture) -> NDArray[np.float32]:
        a = cv2.remap(
            t.albedo,
            col,
            row,
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=float(t.outside_albedo),
        )
        return np.where(on_wall, a, SKY_ALBEDO).astype(np.float32)

    alb = sample(tex)
    amb = None if amb_tex is None else sample(amb_tex)
    return CameraView(xy_safe.astype(np.float32), on_wall, area, alb, tex, amb, on_board)


_GEOMETRY: OrderedDict[bytes, tuple] = OrderedDict()


def _geometry(camera: CameraConfig, target: Target) -> tuple:
    """Pixel → plane map (sky far away), wall and board masks, footprint areas and the
    texel side of a view; memoised for the last two (camera, target) pairs, so views of
    several board images share the ray casting."""
    key = _view_key(camera, target, 0.0, None)
    if key in _GEOMETRY:
        _GEOMETRY.move_to_end(key)
        return _GEOMETRY[key]
    xy = _pixel_rays_to_plane(camera, target)
    half_w, top = _wall_box(target)
    finite = np.all(np.isfinite(xy), axis=-1)
    on_wall = finite & (np.abs(np.nan_to_num(xy[..., 0])) <= half_w)
    on_wall &= np.nan_to_num(xy[..., 1], nan=np.inf) <= top
    # Footprint area = |det d(xy)/d(u,v)|, central differences (one-sided at the border).
    gx = np.gradient(np.where(finite[..., None], xy, 0.0), axis=1)
    gy = np.gradient(np.where(finite[..., None], xy, 0.0), axis=0)
    area = np.abs(gx[..., 0] * gy[..., 1] - gx[..., 1] * gy[..., 0])
    area = np.where(on_wall, area, 0.0)
    # Texel = half the footprint at the target centre (or the smallest on the board).
    on_board = on_wall & target.contains(np.nan_to_num(xy))
    ref = area[on_board] if np.any(on_board) else area[on_wall]
    if ref.size == 0:
        raise ValueError(f"camera does not see target {target.id}'s tower wall at all")
    texel = 0.5 * math.sqrt(float(np.min(ref[ref > 0])))
    xy_safe = np.where(on_wall[..., None], xy, 1e6)  # float64: texture lookups
    geom = (xy_safe, on_wall, area.astype(np.float32), on_board, texel)
    _GEOMETRY[key] = geom
    while len(_GEOMETRY) > 2:
        _GEOMETRY.popitem(last=False)
    return geom


_VIEWS: OrderedDict[bytes, CameraView] = OrderedDict()
_VIEWS_MAX = 4


def _view_key(
    camera: CameraConfig, target: Target, albedo_variation: float, board: BoardImage | None
) -> bytes:
    parts = [
        np.array([camera.width_px, camera.height_px], dtype=np.float64),
        np.asarray(camera.k_px, np.float64),
        np.asarray(camera.dist_coeffs, np.float64),
        np.asarray(camera.position_enu_m, np.float64),
        np.asarray(camera.r_enu_cam, np.float64),
        target.centre_enu_m,
        target.u_normal_enu,
        target.u_x_enu,
        np.array([target.width_m, target.height_m, albedo_variation]),
    ]
    key = b"".join(np.ascontiguousarray(p).tobytes() for p in parts)
    return key + repr((target.id, target.markers, board and board.digest)).encode()


def camera_view(
    camera: CameraConfig,
    target: Target,
    albedo_variation: float = 0.02,
    board: BoardImage | None = None,
) -> CameraView:
    """:func:`build_view`, memoised for the last few (camera, target) pairs (a pure cache:
    same inputs, same view)."""
    key = _view_key(camera, target, albedo_variation, board)
    view = _VIEWS.get(key)
    if view is None:
        view = build_view(camera, target, albedo_variation, board)
        _VIEWS[key] = view
        while len(_VIEWS) > _VIEWS_MAX:
            _VIEWS.popitem(last=False)
    else:
        _VIEWS.move_to_end(key)
    return view


def metres_per_pixel(camera: CameraConfig, target: Target, xy_m=(0.0, 0.0)) -> float:
    """Side of a pixel's footprint (sqrt of its area) at a target-plane point, e.g. to
    size a spot in pixels for :func:`sim.optics.spot_with_sigma`. [m/px]"""
    uv = camera.project(target.plane_to_enu(np.asarray(xy_m, dtype=float)))[0]
    f = camera_view(camera, target).footprint_jacobian(uv[0], uv[1])
    return math.sqrt(abs(float(np.linalg.det(f))))


# --------------------------------------------------------------------------- frames
@dataclass(frozen=True, slots=True)
class FrameTruth:
    """Ground truth of one spot in a rendered frame.

    Attributes
    ----------
    centroid_xy_m : ndarray (2,)
        Flux centroid of the part of the spot on the target (NaN if none). [m]
    centroid_px : ndarray (2,)
        That point projected into the distorted image (u, v). [px]
    centroid_enu_m : ndarray (3,)
        That point in ENU. [m]
    beam_xy_m : ndarray (2,)
        Central-ray hit (``FluxSpot.centre_xy_m``). [m]
    fraction_on_target : float
        Share of the spot's power landing on the target. [1]
    peak_dn : float
        Noise-free value at the spot's brightest pixel, before clipping (> max = clipped).
    saturated_fraction : float
        Share of the spot's half-maximum pixels at the ADC maximum in the frame. [1]
    power_on_target_w : float
        Power on the target (cloud factor applied). [W]
    exposure : float
        Exposure used: electrons per W/m² of albedo-weighted irradiance. [e- m^2/W]
    ambient_w_m2 : float
        Ambient irradiance used (set by ``contrast`` on a sunlit target). [W/m^2]
    """

    centroid_xy_m: NDArray[np.float64]
    centroid_px: NDArray[np.float64]
    centroid_enu_m: NDArray[np.float64]
    beam_xy_m: NDArray[np.float64]
    fraction_on_target: float
    peak_dn: float
    saturated_fraction: float
    power_on_target_w: float = float("nan")
    exposure: float = float("nan")
    ambient_w_m2: float = float("nan")


def _pixel_box(camera: CameraConfig, target: Target, mean, cov, nsig: float = 6.0):
    """Pixel bounding box (v0, v1, u0, u1) of a Gaussian's ±nsig box, or None if outside."""
    sd = np.sqrt(np.diag(cov))
    corners = mean + nsig * sd * np.array([[-1, -1], [1, -1], [1, 1], [-1, 1], [0, 0]])
    uv = camera.project(target.plane_to_enu(corners))
    if not np.all(np.isfinite(uv)):
        return 0, camera.height_px, 0, camera.width_px
    u0 = max(int(np.floor(uv[:, 0].min())) - 2, 0)
    u1 = min(int(np.ceil(uv[:, 0].max())) + 3, camera.width_px)
    v0 = max(int(np.floor(uv[:, 1].min())) - 2, 0)
    v1 = min(int(np.ceil(uv[:, 1].max())) + 3, camera.height_px)
    if u0 >= u1 or v0 >= v1:
        return None
    return v0, v1, u0, u1


def _interp_matrix(coarse: NDArray, out: NDArray) -> NDArray[np.float32]:
    """Linear-interpolation weights (len(coarse), len(out)) from samples at increasing
    positions ``coarse`` to positions ``out`` (inside their range)."""
    eye = np.eye(coarse.size)
    return np.stack([np.interp(out, coarse, row) for row in eye]).astype(np.float32)


def spot_irradiance_image(
    camera: CameraConfig, target: Target, spot: FluxSpot, view: CameraView | None = None
) -> NDArray[np.float32]:
    """Footprint-averaged irradiance of one spot at every pixel (0 on sky). [W/m^2]

    The Gaussians are evaluated exactly on a pixel sub-grid of step s (s <= σ/6 of the
    narrowest Gaussian in pixels, s = 1 for small spots) inside the union of their ±6σ
    boxes, and linearly interpolated to every pixel with two small matrix products.
    Linear interpolation of a Gaussian sampled at σ/6 changes neither its integral nor
    its centroid to leading order (both moments of f'' vanish); the residual is < 0.3 %
    of the peak pointwise.
    """
    view = camera_view(camera, target) if view is None else view
    out = np.zeros(view.on_wall.shape, dtype=np.float32)
    gs = []
    box = None
    step = 8
    for mean, cov, p in spot.gaussians():
        if p <= 0:
            continue
        uv = camera.project(target.plane_to_enu(mean))[0]
        f = view.footprint_jacobian(uv[0], uv[1])
        cov_eff = cov + f @ np.diag([1 / 12, 1 / 12]) @ f.T  # pixel box, see module doc
        b = _pixel_box(camera, target, mean, cov_eff)
        if b is None:
            continue
        box = (
            b
            if box is None
            else (min(box[0], b[0]), max(box[1], b[1]), min(box[2], b[2]), max(box[3], b[3]))
        )
        sig_px = math.sqrt(float(np.linalg.eigvalsh(cov_eff)[0])) / float(
            np.linalg.svd(f, compute_uv=False)[0]
        )
        step = min(step, max(1, int(sig_px / 6.0)))
        gs.append((mean, cov_eff, p))
    if box is None:
        return out
    v0, v1, u0, u1 = box
    rows = np.unique(np.minimum(np.arange(v0, v1 - 1 + step, step), v1 - 1))
    cols = np.unique(np.minimum(np.arange(u0, u1 - 1 + step, step), u1 - 1))
    xy = view.xy_m[np.ix_(rows, cols)]
    coarse = np.zeros(xy.shape[:2], dtype=np.float32)
    for mean, cov_eff, p in gs:
        inv = np.linalg.inv(cov_eff).astype(np.float32)
        norm = np.float32(p / (2 * math.pi * math.sqrt(np.linalg.det(cov_eff))))
        dx = xy[..., 0] - np.float32(mean[0])
        dy = xy[..., 1] - np.float32(mean[1])
        q = inv[0, 0] * dx * dx + (2 * inv[0, 1]) * dx * dy + inv[1, 1] * dy * dy
        coarse += norm * np.exp(np.float32(-0.5) * q)
    if step == 1:
        out[v0:v1, u0:u1] = coarse
    else:
        wy = _interp_matrix(rows.astype(float), np.arange(v0, v1, dtype=float))
        wx = _interp_matrix(cols.astype(float), np.arange(u0, u1, dtype=float))
        out[v0:v1, u0:u1] = wy.T @ coarse @ wx
    out[~view.on_wall] = 0.0
    return out


def render_frame(
    camera: CameraConfig,
    target: Target,
    spots: Sequence[FluxSpot],
    *,
    rng: np.random.Generator,
    ambient_w_m2: float = 150.0,
    exposure: float | None = None,
    noise: bool = True,
    cloud_factor: float | Sequence[float] = 1.0,
    sensor: SensorModel | None = None,
    albedo_variation: float = 0.02,
    board: BoardImage | None = None,
    shadow: Shadow | None = None,
    board_fraction: float | None = None,
    contrast: float | None = None,
) -> tuple[NDArray, list[FrameTruth]]:
    """Render a raw camera frame of a target with flux spots, and each spot's truth.

    Parameters
    ----------
    camera : heliostat.config.CameraConfig
        With a pose (``position_enu_m``, ``r_enu_cam``).
    target : heliostat.config.Target
    spots : sequence of sim.optics.FluxSpot
        Spots on the target plane (several heliostats at once is allowed); ``[]`` gives
        the dark (sun-off) frame.
    rng : numpy.random.Generator
        Noise source (seeded by the caller; same seed, same bytes).
    ambient_w_m2 : float
        Diffuse irradiance on the target and wall. [W/m^2]
    exposure : float, optional
        Electrons per W/m² of albedo-weighted irradiance [e- m^2/W]. None = auto: the
        brightest noise-free pixel at ``sensor.auto_fraction`` of full scale (a dark frame
        is then exposed for the ambient-lit target; pass the sun-on frame's
        ``FrameTruth.exposure`` to get a matching dark frame).
    noise : bool
        Shot and read noise on/off (quantisation, black level and clipping stay).
    cloud_factor : float or sequence of float
        Transmission of a cloud in front of the sun, for all spots or per spot. [1]
    sensor : SensorModel, optional
    albedo_variation : float
        Smooth relative albedo non-uniformity of the board (0 = uniform). A centroid
        taken on (on - dark) without dividing by the dark frame is biased by it. [1]
    board : sim.real_texture.BoardImage, optional
        Draw this real empty-target image as the board (the ``sunlit`` style) instead of
        the ArUco board; the spot sees its reflectance, the ambient its grey levels.
    shadow : sim.real_texture.Shadow, optional
        Shadow of the tower structure: removes ``shadow.blocked`` of the ambient inside
        its polygon, not the spot's light.
    board_fraction : float, optional
        Auto exposure (``exposure`` None) puts the median of the board's noise-free
        ambient level at this fraction of full scale (a camera exposed for the sunlit
        target) instead of the brightest pixel at ``sensor.auto_fraction``. [1]
    contrast : float, optional
        Sets the ambient instead of ``ambient_w_m2``: the spots' brightest point on the
        board is ``contrast`` × the ambient level on a clean panel, i.e.
        E_ambient = E_spot,max / (contrast - 1) (the sun lights board and beam alike,
        so the ratio does not depend on the DNI or the clouds). Must be > 1. [1]

    Returns
    -------
    image : ndarray (H, W)
        uint16 raw values 0..2**bit_depth-1 (uint8 for 8-bit cameras).
    truths : list of FrameTruth
        One per spot, same order.
    """
    sensor = SensorModel() if sensor is None else sensor
    if not (math.isfinite(ambient_w_m2) and ambient_w_m2 >= 0):
        raise ValueError(f"ambient_w_m2 must be finite and >= 0, got {ambient_w_m2!r}")
    cf = np.broadcast_to(np.asarray(cloud_factor, dtype=float), (len(spots),))
    if np.any(~np.isfinite(cf)) or np.any(cf < 0):
        raise ValueError(f"cloud_factor must be >= 0, got {cloud_factor!r}")
    if exposure is not None and not (math.isfinite(exposure) and exposure > 0):
        raise ValueError(f"exposure must be positive, got {exposure!r}")
    if not (math.isfinite(albedo_variation) and 0 <= albedo_variation < 0.5):
        raise ValueError(f"albedo_variation must lie in [0, 0.5), got {albedo_variation!r}")
    if board_fraction is not None and not 0 < board_fraction <= 1:
        raise ValueError(f"board_fraction must lie in (0, 1], got {board_fraction!r}")
    if contrast is not None and not (math.isfinite(contrast) and contrast > 1):
        raise ValueError(f"contrast must be > 1, got {contrast!r}")
    view = camera_view(camera, target, albedo_variation, board)
    per_spot = [
        spot_irradiance_image(camera, target, spot.scaled(float(k)), view)
        for spot, k in zip(spots, cf, strict=True)
    ]
    on_board = view.on_board if view.on_board is not None else view.on_wall
    if contrast is not None and per_spot:
        e_max = float(np.max(np.sum(per_spot, axis=0)[on_board], initial=0.0))
        if e_max > 0:
            ambient_w_m2 = e_max / (contrast - 1.0)
    if view.ambient_albedo is None and shadow is None:
        irr = np.full(view.on_wall.shape, np.float32(ambient_w_m2), dtype=np.float32)
        for e in per_spot:
            irr += e
        signal = view.albedo * irr  # albedo-weighted irradiance [W/m^2]
        ambient = None
    else:
        amb_alb = view.albedo if view.ambient_albedo is None else view.ambient_albedo
        ambient = amb_alb * np.float32(ambient_w_m2)
        f = shadow_factor(view.xy_m, view.texture, shadow)
        if f is not None:
            ambient = ambient * f
        signal = ambient.copy()
        for e in per_spot:
            signal += view.albedo * e
    bits = camera.bit_depth
    max_dn = float(2**bits - 1)
    black = sensor.black_dn(bits)
    gain = sensor.gain_e_per_dn(bits)
    if exposure is None and board_fraction is not None:
        amb = view.albedo * np.float32(ambient_w_m2) if ambient is None else ambient
        level = float(np.median(amb[on_board])) if np.any(on_board) else 0.0
        if level <= 0:
            raise ValueError("the board is dark (ambient 0): give an exposure")
        exposure = (board_fraction * max_dn - black) * gain / level
    elif exposure is None:
        peak = float(signal.max())
        if peak <= 0:
            raise ValueError("nothing lit (ambient 0 and no spot): give an exposure")
        exposure = (sensor.auto_fraction * max_dn - black) * gain / peak
    electrons = signal * np.float32(exposure)
    if noise:
        sd = np.sqrt(electrons + np.float32(sensor.read_noise_e**2))
        electrons = electrons + sd * rng.standard_normal(electrons.shape, dtype=np.float32)
    electrons = np.minimum(electrons, np.float32(sensor.full_well_e))
    dn = np.clip(np.rint(black + electrons / np.float32(gain)), 0, max_dn)
    image = dn.astype(np.uint8 if bits <= 8 else np.uint16)

    truths = []
    for spot, k, e in zip(spots, cf, per_spot, strict=True):
        p_on, cen = on_target_flux(spot, target)
        if np.all(np.isfinite(cen)):
            enu = target.plane_to_enu(cen)
            px = camera.project(enu)[0]
        else:
            enu, px = np.full(3, np.nan), np.full(2, np.nan)
        imax = int(np.argmax(e))
        emax = float(e.flat[imax])
        peak_dn = black + exposure * float(signal.flat[imax]) / gain if emax > 0 else math.nan
        half = e >= 0.5 * emax if emax > 0 else np.zeros(e.shape, bool)
        sat = float(np.mean(image[half] >= max_dn)) if np.any(half) else 0.0
        truths.append(
            FrameTruth(
                centroid_xy_m=cen,
                centroid_px=px,
                centroid_enu_m=enu,
                beam_xy_m=np.asarray(spot.centre_xy_m, dtype=float),
                fraction_on_target=p_on / spot.power_w if spot.power_w > 0 else 0.0,
                peak_dn=peak_dn,
                saturated_fraction=sat,
                power_on_target_w=p_on * float(k),
                exposure=float(exposure),
                ambient_w_m2=float(ambient_w_m2),
            )
        )
    return image, truths


def render_pair(
    camera: CameraConfig,
    target: Target,
    spots: Sequence[FluxSpot],
    *,
    rng: np.random.Generator,
    exposure: float | None = None,
    **kwargs,
) -> tuple[NDArray, NDArray, list[FrameTruth]]:
    """A sun-on frame and its dark (sun-off) frame at the *same* exposure, as a plant
    takes them for dark-frame subtraction. Keyword arguments go to :func:`render_frame`.

    Returns
    -------
    on_image, dark_image : ndarray (H, W)
    truths : list of FrameTruth
        For the sun-on frame (``truths[i].exposure`` is the shared exposure).
    """
    on, truths = render_frame(camera, target, spots, rng=rng, exposure=exposure, **kwargs)
    if exposure is None and truths:
        exposure = truths[0].exposure
    dark, _ = render_frame(camera, target, [], rng=rng, exposure=exposure, **kwargs)
    return on, dark, truths


def render_sunlit_pair(
    camera: CameraConfig,
    target: Target,
    spots: Sequence[FluxSpot],
    *,
    rng: np.random.Generator,
    board: BoardImage,
    conditions: SunlitConditions,
    **kwargs,
) -> tuple[NDArray, NDArray, list[FrameTruth]]:
    """A sun-on frame of a sunlit target and its sun-off frame, as a plant takes them.

    The sun-on frame is exposed for the board (``conditions.board_fraction``), its
    ambient set by ``conditions.contrast`` and shadowed by ``conditions.shadow``. The
    sun-off frame is the same board with the heliostat moved off, at the same exposure,
    but the ambient changed by ``conditions.drift`` (clouds, exposure drift) and the
    shadow moved (``conditions.dark_shadow``): on - off is not a perfect spot image.
    Keyword arguments (``cloud_factor``, ``noise``, ``sensor``) go to :func:`render_frame`.

    Returns
    -------
    on_image, dark_image : ndarray (H, W)
    truths : list of FrameTruth
        For the sun-on frame.
    """
    if not spots:
        raise ValueError("render_sunlit_pair needs at least one spot (it sets the contrast)")
    on, truths = render_frame(
        camera,
        target,
        spots,
        rng=rng,
        board=board,
        shadow=conditions.shadow,
        board_fraction=conditions.board_fraction,
        contrast=conditions.contrast,
        **kwargs,
    )
    kwargs.pop("cloud_factor", None)
    dark, _ = render_frame(
        camera,
        target,
        [],
        rng=rng,
        board=board,
        shadow=conditions.dark_shadow,
        exposure=truths[0].exposure,
        ambient_w_m2=truths[0].ambient_w_m2 * (1.0 + conditions.drift),
        **kwargs,
    )
    return on, dark, truths
