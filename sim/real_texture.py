"""Real-looking targets: the board textured with a real empty-target image, sunlit.

The simulator's ``sunlit`` target style (:func:`sim.camera.render_frame` with ``board=``)
draws the calibration target as the plant's camera sees it: white panels in sunlight, at
half to two-thirds of full scale, with seams, bolts, black corner marks and shadows of the
tower structure, the spot only 1.2-2.5 times brighter than the board. The board comes from
an empty-target image (a plant's own folder, or the real Jülich set shipped in
``sim/data/targets/``, see its README and licence).

Mapping
-------
An empty-target image is rectified and cropped to the target's corner marks (the UTIS
crops: the crop's corners are the centres of the corner marks). Its extent is mapped onto
the target rectangle (``target.width_m`` × ``target.height_m``, so the mark centres sit on
the target's corners, where a registration by marks looks for them); row 0 is the top
edge, column 0 the left edge as the camera sees the target. The panels continue past the
marks: a band of ``extend`` × the side around the rectangle is the image mirrored at its
edges (which completes the cut-off marks), and the tower wall (:data:`WALL_ALBEDO`)
lies beyond, as for the ArUco board.

Light
-----
A grey level is albedo × illumination, and the two act differently on the spot: a seam,
a mark, soiling or the lens's fall-off are dark for the sun and for the beam alike, a
shadow of the tower structure only for the sun. The image is split accordingly
(:func:`board_image`): its large-scale level is the morphological closing of the image
with a disc of ~6 % of its side (fills seams, bolts and mark strokes, keeps shadows
larger than the disc with their sharp edges); a quadratic surface fitted (in log) to the
sunlit part of it is the smooth gradient, which acts on both lights; what the closing
falls below that surface is shade (shadows), which acts on the sunlight only. A pixel's
signal is then (Lambertian) ``BOARD_ALBEDO · (lit / shade) · E_spot + BOARD_ALBEDO · lit ·
E_ambient``, with ``lit`` the grey level relative to the sunlit board's typical level
(median of the image where the closing is within 15 % of its 95th percentile). Shadows
added by :class:`Shadow` (a sharp-edged polygon in the target plane) remove a share of
the ambient inside it (at most the direct sun, :data:`DIRECT_SHARE`; drawn from
:data:`SHADOW_DEPTH_RANGE`) and leave the spot's light alone (the structure is not
between heliostat and target).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

from heliostat.config import Target
from heliostat.errors import InputError
from sim.target_texture import BOARD_ALBEDO, WALL_ALBEDO, Texture, _overlap

#: The real Jülich empty-target images shipped with the package (MIT, UTIS; see README).
SHIPPED_TARGETS_DIR = Path(__file__).resolve().parent / "data" / "targets"

#: Image file types a target folder may hold.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

#: Target styles of the simulator: ArUco board on a dark wall, or a real sunlit board.
TARGET_STYLES = ("aruco", "sunlit")

#: Share of a sunlit board's ambient light that is direct sun (a shadow removes it). [1]
DIRECT_SHARE = 0.8

#: Depth of the drawn shadows (share of the ambient blocked). In the shipped real images
#: the darkest 3 % of the illumination lies at 81-91 % of its median: their shadows are
#: shallow (skylight and the field's light still reach the board); drawn a bit deeper. [1]
SHADOW_DEPTH_RANGE = (0.1, 0.35)

#: Range of the sunlit board's level in the real frames, as a fraction of full scale. [1]
BOARD_FRACTION_RANGE = (0.50, 0.62)

#: Range of the spot's noise-free peak over the board (the real samples: 1.4-1.9). [1]
CONTRAST_RANGE = (1.2, 2.5)

#: Relative change of the ambient between the sun-on and sun-off frame (clouds, exposure
#: drift): drawn from ±this. [1]
AMBIENT_DRIFT = 0.02


# --------------------------------------------------------------------------- images
@dataclass(frozen=True, slots=True)
class BoardImage:
    """An empty-target image split into reflectance and illumination.

    Attributes
    ----------
    name : str
        Where it came from (file name).
    reflectance : ndarray (H, W) float32
        What the spot's light sees relative to a typical sunlit panel: seams, bolts,
        marks and the smooth gradients, not the shadows (``lit / shade``). [1]
    lit : ndarray (H, W) float32
        Grey level relative to the sunlit board's typical level (shadows, gradients,
        exposure changes and the marks included). [1]
    digest : str
        SHA-256 of both arrays (memoising key of camera views).
    """

    name: str
    reflectance: NDArray[np.float32]
    lit: NDArray[np.float32]
    digest: str = field(default="", repr=False)


def board_image(grey: ArrayLike, name: str = "") -> BoardImage:
    """Split an empty-target image into reflectance and lit level (see module doc).

    Parameters
    ----------
    grey : array_like (H, W)
        Grey image, any non-negative scale (8- or 16-bit values or floats).
    name : str
        Named in errors and kept in the result.

    Raises
    ------
    InputError
        Not a 2-D image of at least 16 × 16 finite values with a lit board.
    """
    import cv2

    g = np.asarray(grey)
    where = name or "target image"
    if g.ndim != 2 or min(g.shape) < 16:
        raise InputError(f"{where}: expected a 2-D grey image of at least 16x16, got {g.shape}")
    g = g.astype(np.float32)
    if not np.all(np.isfinite(g)) or float(g.min()) < 0:
        raise InputError(f"{where}: grey levels must be finite and >= 0")
    k = max(3, 2 * int(round(0.03 * min(g.shape))) + 1)  # disc of ~6 % of the side
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    illum = cv2.morphologyEx(g, cv2.MORPH_CLOSE, disc, borderType=cv2.BORDER_REFLECT)
    sunlit = illum >= 0.85 * np.percentile(illum, 95)
    board = float(np.median(g[sunlit]))
    if not board > 0:
        raise InputError(f"{where}: the board is black (no lit pixels)")
    # smooth gradient: quadratic in log(level) over the sunlit part, twice, dropping the
    # pixels more than 5 % below the first fit (shadow edges the threshold let in)
    yy, xx = np.mgrid[0 : g.shape[0], 0 : g.shape[1]]
    u, v = xx / g.shape[1] - 0.5, yy / g.shape[0] - 0.5
    basis = np.stack([np.ones_like(u), u, v, u * u, u * v, v * v], axis=-1)
    log_il = np.log(np.maximum(illum, 1e-6))
    use = sunlit
    for _ in range(2):
        coef = np.linalg.lstsq(basis[use], log_il[use], rcond=None)[0]
        smooth = basis @ coef
        use = sunlit & (log_il > smooth + math.log(0.95))
    shade = np.clip(illum / np.exp(smooth), 1e-3, 1.0)
    lit = (g / board).astype(np.float32)
    refl = np.clip(lit / shade, 0.0, 1.5).astype(np.float32)
    h = hashlib.sha256(refl.tobytes() + lit.tobytes()).hexdigest()
    return BoardImage(name, refl, lit, h)


def load_board_image(path: str | Path) -> BoardImage:
    """Read an empty-target image file (8/16-bit grey or colour, converted to grey)."""
    import cv2

    p = Path(path)
    img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(f"{p}: not a readable image")
    if img.ndim == 3:
        img = cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2GRAY)
    return board_image(img, p.name)


def target_image_paths(folder: str | Path | None = None) -> list[Path]:
    """The image files of a target folder, sorted by name (None = the shipped set).

    Raises
    ------
    InputError
        The folder is missing or holds no image.
    """
    d = SHIPPED_TARGETS_DIR if folder in (None, "") else Path(folder)
    if not d.is_dir():
        raise InputError(f"--target-images {d}: not a folder")
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"--target-images {d}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


# --------------------------------------------------------------------------- textures
def board_textures(
    target: Target,
    texel_m: float,
    board: BoardImage,
    *,
    margin_m: float | None = None,
    extend: float = 0.06,
    board_albedo: float = BOARD_ALBEDO,
    wall_albedo: float = WALL_ALBEDO,
) -> tuple[Texture, Texture]:
    """Textures of the sunlit board on the texel grid of
    :func:`sim.target_texture.build_texture`: the albedo the spot sees and the albedo the
    ambient sees (``board_albedo`` × reflectance and × lit, see module doc).

    Parameters
    ----------
    target : heliostat.config.Target
    texel_m : float
        Texel side. [m]
    board : BoardImage
    margin_m : float, optional
        Wall shown around the board (default 10 % of the larger side, at least the band).
    extend : float
        Panels past the corner marks, as a fraction of each side (mirrored image). [1]

    Returns
    -------
    spot_albedo, ambient_albedo : sim.target_texture.Texture
    """
    import cv2

    if not (texel_m > 0 and math.isfinite(texel_m)):
        raise ValueError(f"texel_m must be positive, got {texel_m!r}")
    if not 0 <= extend < 0.5:
        raise ValueError(f"extend must lie in [0, 0.5), got {extend!r}")
    w, h = target.width_m, target.height_m
    ex_m, ey_m = extend * w, extend * h
    margin = max(0.1 * max(w, h), ex_m, ey_m) if margin_m is None else float(margin_m)
    cols = int(math.ceil((w + 2 * margin) / texel_m))
    rows = int(math.ceil((h + 2 * margin) / texel_m))
    if cols * rows > 40_000_000:
        raise ValueError(f"texture of {cols}x{rows} texels is too large; raise texel_m")
    x0, y0 = -cols * texel_m / 2, rows * texel_m / 2
    ex = x0 + texel_m * np.arange(cols + 1)
    ey_up = (y0 - texel_m * np.arange(rows + 1))[::-1]
    ox = _overlap(ex, np.array([-w / 2 - ex_m]), np.array([w / 2 + ex_m]))[:, 0]
    oy = _overlap(ey_up, np.array([-h / 2 - ey_m]), np.array([h / 2 + ey_m]))[::-1, 0]
    panel = np.outer(oy, ox).astype(np.float32)  # share of each texel on the panels
    # texel centres -> image coordinates (integer = pixel centre), mark centres at corners
    ih, iw = board.lit.shape
    xc = x0 + texel_m * (np.arange(cols) + 0.5)
    yc = y0 - texel_m * (np.arange(rows) + 0.5)
    mc = np.broadcast_to(((xc + w / 2) / w * iw - 0.5)[None, :], (rows, cols))
    mr = np.broadcast_to(((h / 2 - yc) / h * ih - 0.5)[:, None], (rows, cols))
    mc, mr = mc.astype(np.float32), mr.astype(np.float32)

    def sample(a: NDArray) -> NDArray[np.float32]:
        return cv2.remap(a, mc, mr, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)

    out = []
    for a in (board.reflectance, board.lit):
        alb = wall_albedo + (board_albedo * sample(a) - wall_albedo) * panel
        out.append(
            Texture(alb.astype(np.float32), float(x0), float(y0), float(texel_m), wall_albedo)
        )
    return out[0], out[1]


# --------------------------------------------------------------------------- shadows
@dataclass(frozen=True, slots=True)
class Shadow:
    """Shadow of the tower structure on the target: a sharp-edged polygon in the plane.

    Attributes
    ----------
    polygon_xy_m : ndarray (N, 2)
        Vertices in target-plane coordinates (x right, y up), in order. [m]
    blocked : float
        Share of the ambient the structure blocks inside the polygon (the direct sun).
        The spot's light is not blocked. [1]
    """

    polygon_xy_m: NDArray[np.float64]
    blocked: float = DIRECT_SHARE

    def __post_init__(self) -> None:
        p = np.asarray(self.polygon_xy_m, dtype=float)
        if p.ndim != 2 or p.shape[1] != 2 or p.shape[0] < 3 or not np.all(np.isfinite(p)):
            raise ValueError(f"shadow polygon must be (N >= 3, 2) finite [m], got {p.shape}")
        if not 0 <= self.blocked <= 1:
            raise ValueError(f"shadow blocked share must lie in [0, 1], got {self.blocked!r}")
        object.__setattr__(self, "polygon_xy_m", p)

    def shifted(self, d_xy_m: ArrayLike) -> Shadow:
        """The same shadow moved by ``d_xy_m`` in the plane (the sun moved). [m]"""
        return Shadow(self.polygon_xy_m + np.asarray(d_xy_m, dtype=float), self.blocked)


def shadow_factor(
    xy_m: NDArray, texture: Texture, shadow: Shadow | None
) -> NDArray[np.float32] | None:
    """Ambient multiplier per pixel: 1 - blocked × (share of the footprint in the shadow).

    The polygon is filled on the texture's texel grid (anti-aliased, 1/256-texel vertex
    precision) and sampled where each pixel looks (``xy_m``, (H, W, 2) plane points [m]);
    beyond the texture there is no shadow. None when ``shadow`` is None.
    """
    import cv2

    if shadow is None:
        return None
    rows, cols = texture.albedo.shape
    c, r = texture.to_texel(shadow.polygon_xy_m)
    shift = 8
    pts = np.rint(np.stack([c + 0.5, r + 0.5], axis=-1) * (1 << shift)).astype(np.int32)
    pts = np.clip(pts, -(1 << 28), 1 << 28)
    mask = np.zeros((rows, cols), np.uint8)
    cv2.fillPoly(mask, [pts.reshape(-1, 1, 2)], 255, lineType=cv2.LINE_AA, shift=shift)
    pc, pr = texture.to_texel(xy_m)
    cover = cv2.remap(
        mask.astype(np.float32) / 255.0,
        pc.astype(np.float32),
        pr.astype(np.float32),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0.0,
    )
    return (1.0 - np.float32(shadow.blocked) * cover).astype(np.float32)


def random_shadow(target: Target, rng: np.random.Generator) -> Shadow:
    """A shadow of the tower structure: a steep band across the board (a strut) or a
    block from a lower corner (a platform), sizes from the real images (5-20 % of the
    width; a corner block up to a third of each side), depth in
    :data:`SHADOW_DEPTH_RANGE`."""
    w, h = target.width_m, target.height_m
    big = 2.0 * max(w, h)
    if rng.random() < 0.5:
        ang = math.radians(rng.uniform(60.0, 120.0))  # from the horizontal
        half = 0.5 * rng.uniform(0.05, 0.2) * w
        x = rng.uniform(-0.5, 0.5) * w
        d = np.array([math.cos(ang), math.sin(ang)])  # along the band
        n = np.array([-d[1], d[0]])  # across it
        c = np.array([x, 0.0])
        poly = np.array([c - big * d - half * n, c + big * d - half * n,
                         c + big * d + half * n, c - big * d + half * n])  # fmt: skip
    else:
        sx = -1.0 if rng.random() < 0.5 else 1.0
        bw, bh = rng.uniform(0.1, 0.33) * w, rng.uniform(0.1, 0.33) * h
        xe, yb = sx * (w / 2 + big), -h / 2 - big
        xi, yt = sx * (w / 2 - bw), -h / 2 + bh
        poly = np.array([[xe, yb], [xi, yb], [xi, yt], [xe, yt]])
    return Shadow(poly, float(rng.uniform(*SHADOW_DEPTH_RANGE)))


# --------------------------------------------------------------------------- conditions
@dataclass(frozen=True, slots=True)
class SunlitConditions:
    """How one sun-on / sun-off frame pair on a sunlit target looks.

    Attributes
    ----------
    image : int
        Index of the empty-target image in the set.
    board_fraction : float
        Exposure: the sunlit board's median at this fraction of full scale. [1]
    contrast : float
        The spot's noise-free peak over the board on a clean panel. [1]
    shadow : Shadow or None
        Shadow of the tower structure in the sun-on frame.
    drift : float
        The sun-off frame's ambient is (1 + drift) × the sun-on frame's. [1]
    shadow_shift_xy_m : ndarray (2,)
        How far the shadow moved between the two frames. [m]
    """

    image: int
    board_fraction: float
    contrast: float
    shadow: Shadow | None
    drift: float
    shadow_shift_xy_m: NDArray[np.float64]

    @property
    def dark_shadow(self) -> Shadow | None:
        """The shadow in the sun-off frame."""
        return None if self.shadow is None else self.shadow.shifted(self.shadow_shift_xy_m)


def draw_conditions(
    rng: np.random.Generator,
    target: Target,
    n_images: int,
    *,
    shadow_probability: float = 0.5,
) -> SunlitConditions:
    """Draw a frame pair's conditions: an image of the set, the board's level in
    :data:`BOARD_FRACTION_RANGE`, the contrast in :data:`CONTRAST_RANGE`, a shadow with
    ``shadow_probability`` (moving up to 2 cm between the frames: a structure ~5 m in
    front of the target, the sun turning 0.25°/min, ~30 s between the frames), and the
    ambient drift within ±:data:`AMBIENT_DRIFT`."""
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images!r}")
    image = int(rng.integers(n_images))
    frac = float(rng.uniform(*BOARD_FRACTION_RANGE))
    contrast = float(rng.uniform(*CONTRAST_RANGE))
    shadow = random_shadow(target, rng) if rng.random() < shadow_probability else None
    drift = float(rng.uniform(-AMBIENT_DRIFT, AMBIENT_DRIFT))
    shift = rng.uniform(-0.02, 0.02, 2)
    return SunlitConditions(image, frac, contrast, shadow, drift, shift)
