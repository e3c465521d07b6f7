"""Composite frames of the real Jülich target: an empty sunlit target plus a flux image.

This is how the plant's learned detector (UTIS, Kuhl, Pargmann et al. [1]_) was trained:
the concentrated flux *adds* light to the sunlit target, so a frame with a spot is the
empty target image plus a flux distribution. :func:`composite` draws one such frame with
random conditions (contrast, size, shape, rotation, position — partly off the target
too —, a sharp-edged shadow, exposure gain up to saturation, 8-bit quantisation, noise)
and returns the truth: the centroid of the flux that lands on the target.

Pure functions on arrays; the only I/O is :func:`list_images` / :func:`load_gray`, which
take the data folder as a parameter (``<repo>/../shared/real`` by convention:
:func:`default_real_dir`). :func:`split_names` splits file names into train / val / test
sets by a hash of the name, so no empty target (or flux image) is in two sets and the
split does not change when files are added.

Model of a composite (all images float, [DN]; ``S`` the shadow factor map, 1 outside the
shadow, ``g`` the exposure gain)::

    frame = clip(round(g * S * (empty + F) + noise), 0, 255)
    F     = c * b * warp(flux / max(flux))   # c: contrast, b: local background at the spot

The truth centroid is that of ``S * F`` over the target (the light the spot puts on the
target, before clipping), so it is what a detector of "image minus background" measures.

References
----------
.. [1] M. Kuhl, M. Pargmann, M. Cherti, J. Jitsev, D. Maldonado Quinto, R. Pitz-Paal,
   "Heliostat beam characterization using a UNet-based target image segmentation,"
   Solar Energy 2024, doi:10.1016/j.solener.2024.112811. Data: DLR-SF/UTIS-
   HeliostatBeamCharacterization (MIT licence).
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray

from heliostat.errors import InputError

__all__ = [
    "FOLDERS",
    "REAL_DIR_ENV",
    "CompositeRanges",
    "CompositeTruth",
    "composite",
    "default_real_dir",
    "flux_centroid_px",
    "list_images",
    "load_gray",
    "split_names",
    "threshold_centroid_px",
    "transform_flux",
]

#: Sub-folders of the real-data folder: empty targets, flux images, real samples.
FOLDERS = {
    "empty": "utis/emptyTargetImages",
    "flux": "utis/fluxImages",
    "samples": "utis/realSamples",
}


#: Environment variable naming the real-data folder when it is not beside the clone (a git
#: worktree, a copy elsewhere).
REAL_DIR_ENV = "HELIOSTAT_REAL_DIR"


def default_real_dir(repo_root: str | Path) -> Path:
    """Where the real Jülich data sits: ``$HELIOSTAT_REAL_DIR`` when set, else
    ``<repo>/../shared/real`` (beside a clone, as in CI)."""
    env = os.environ.get(REAL_DIR_ENV)
    return Path(env) if env else Path(repo_root).resolve().parent / "shared" / "real"


def list_images(real_dir: str | Path, kind: str) -> list[Path]:
    """The PNG files of one folder (``kind`` a key of :data:`FOLDERS`), sorted by name.

    Raises
    ------
    InputError
        An unknown kind, or a folder that is missing or holds no PNG.
    """
    if kind not in FOLDERS:
        raise InputError(f"kind: expected one of {sorted(FOLDERS)}, got {kind!r}")
    folder = Path(real_dir) / FOLDERS[kind]
    files = sorted(folder.glob("*.png"))
    if not files:
        raise InputError(f"{folder}: no PNG images (is the real-data folder there?)")
    return files


def load_gray(path: str | Path) -> NDArray[np.uint8]:
    """An 8-bit grey image (colour is converted).

    Raises
    ------
    InputError
        A file that is missing or not a readable image.
    """
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(f"{path}: not a readable image")
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY if img.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    if img.dtype != np.uint8:
        raise InputError(f"{path}: expected an 8-bit image, got {img.dtype}")
    return img


def split_names(
    names: list[str], fractions: tuple[float, float, float] = (0.6, 0.2, 0.2), salt: str = "v1"
) -> dict[str, list[str]]:
    """Split file names into ``train``, ``val`` and ``test`` by a hash of each name.

    A name's set depends on the name (and ``salt``) only — SHA-256 of ``salt + name``,
    its first 8 bytes as a fraction in [0, 1) — so the sets never overlap, are the same
    on every machine, and do not change when files are added or removed.

    Parameters
    ----------
    names : list of str
        File names (no folder), e.g. ``"115241.png"``.
    fractions : (float, float, float)
        Expected shares of train, val and test (they sum to 1). [1]
    salt : str
        Changes the split as a whole (record it with results).
    """
    f = np.asarray(fractions, dtype=float)
    if f.shape != (3,) or np.any(f < 0) or not math.isclose(f.sum(), 1.0, abs_tol=1e-9):
        raise InputError(f"fractions: expected three shares >= 0 summing to 1, got {fractions!r}")
    out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for name in sorted(set(names)):
        h = hashlib.sha256((salt + name).encode()).digest()
        u = int.from_bytes(h[:8], "big") / 2.0**64
        key = "train" if u < f[0] else ("val" if u < f[0] + f[1] else "test")
        out[key].append(name)
    return out


def flux_centroid_px(flux: NDArray) -> tuple[float, float]:
    """Intensity-weighted centroid (u, v) of an image (pixel centres at integers). [px]"""
    a = np.asarray(flux, dtype=np.float64)
    tot = a.sum()
    if not tot > 0:
        raise InputError("flux: the image holds no light (all zero)")
    v, u = np.indices(a.shape)
    return float((a * u).sum() / tot), float((a * v).sum() / tot)


def threshold_centroid_px(img: NDArray, sigma_px: float = 3.0) -> tuple[float, float] | None:
    """The "ten-line" reference on a rectified crop: smooth, threshold halfway between the
    median and the peak, intensity moments (above the median) of the blob holding the
    peak. (u, v) [px], or None for a flat image. A reference, not a product: it sees only
    the spot's core and takes a bright shadow-free area for the spot when the spot is
    faint."""
    g = cv2.GaussianBlur(np.asarray(img, dtype=np.float32), (0, 0), sigma_px)
    bg, pk = float(np.median(g)), float(g.max())
    if not pk > bg:
        return None
    m = (g > bg + 0.5 * (pk - bg)).astype(np.uint8)
    _, lab = cv2.connectedComponents(m)
    v, u = np.unravel_index(int(np.argmax(g)), g.shape)
    w = np.where(lab == lab[v, u], g - bg, 0.0).astype(np.float32)
    mo = cv2.moments(w)
    return (mo["m10"] / mo["m00"], mo["m01"] / mo["m00"]) if mo["m00"] > 0 else None


def rectified_threshold_centroid_m(
    frame: NDArray, corners_px: ArrayLike, width_m: float, height_m: float, n_px: int = 512
) -> tuple[float, float] | None:
    """The ten-line reference on a raw frame: warp the target (corners UL, UR, LR, LL
    [px]) to an ``n_px`` square as PAINT's crops are made, then
    :func:`threshold_centroid_px`; returned in target-plane metres (x right, y up, origin
    at the centre), or None for a flat target."""
    img = np.asarray(frame, dtype=np.float32)
    grey = img.mean(axis=2) if img.ndim == 3 else img
    n = int(n_px)
    hm = cv2.getPerspectiveTransform(
        np.asarray(corners_px, np.float32), np.float32([[0, 0], [n, 0], [n, n], [0, n]])
    )
    c = threshold_centroid_px(cv2.warpPerspective(grey, hm, (n, n)))
    if c is None:
        return None
    # pixel (i, j) covers [i, i + 1) of the n-px square whose edges are the corners
    return ((c[0] + 0.5) / n - 0.5) * width_m, (0.5 - (c[1] + 0.5) / n) * height_m


def _affine(
    centre_src: tuple[float, float],
    centre_dst: tuple[float, float],
    scale: float,
    aspect: float,
    rotation_rad: float,
) -> NDArray[np.float64]:
    """2x3 map src -> dst: anisotropic scale (scale*aspect along u, scale/aspect along v)
    about the source centre, then a rotation, then a move to the destination centre."""
    c, s = math.cos(rotation_rad), math.sin(rotation_rad)
    r = np.array([[c, -s], [s, c]])
    a = r @ np.diag([scale * aspect, scale / aspect])
    t = np.asarray(centre_dst) - a @ np.asarray(centre_src)
    return np.c_[a, t]


def transform_flux(
    flux: NDArray,
    shape: tuple[int, int],
    centre_dst_px: tuple[float, float],
    scale: float,
    aspect: float = 1.0,
    rotation_rad: float = 0.0,
    pad_px: int = 0,
) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
    """Scale, rotate and move a flux image so its centroid lands on ``centre_dst_px``.

    Parameters
    ----------
    flux : ndarray (h, w)
        Flux distribution on black (any scale).
    shape : (rows, cols)
        Output size (the target image's). [px]
    centre_dst_px : (u, v)
        Where the flux's centroid goes, in target-image pixels. [px]
    scale, aspect : float
        Size factor and anisotropy (u stretched by ``scale * aspect``, v by
        ``scale / aspect`` before the rotation). [1]
    rotation_rad : float
        Rotation (counter-clockwise as shown, image rows downwards). [rad]
    pad_px : int
        The canvas is the target grown by this margin on every side, so flux off the
        target is kept (the target is ``[pad:pad+rows, pad:pad+cols]``). [px]

    Returns
    -------
    canvas : ndarray (rows + 2 pad, cols + 2 pad) float32
        The transformed flux (bilinear; same units as ``flux``).
    m : ndarray (2, 3)
        The affine map from flux pixels to canvas pixels.
    """
    src = np.asarray(flux, dtype=np.float32)
    if src.ndim != 2:
        raise InputError(f"flux: expected a 2-D image, got shape {src.shape}")
    if not (scale > 0 and aspect > 0):
        raise InputError(f"scale, aspect: expected > 0, got {scale!r}, {aspect!r}")
    c0 = flux_centroid_px(src)
    dst = (centre_dst_px[0] + pad_px, centre_dst_px[1] + pad_px)
    m = _affine(c0, dst, scale, aspect, rotation_rad)
    rows, cols = shape
    canvas = cv2.warpAffine(
        src, m, (cols + 2 * pad_px, rows + 2 * pad_px), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=0.0,
    )  # fmt: skip
    return canvas, m


@dataclass(frozen=True, slots=True)
class CompositeRanges:
    """Ranges the random conditions of :func:`composite` are drawn from (uniform).

    Attributes
    ----------
    contrast : (lo, hi)
        Added flux peak over the local background at the spot (composite peak
        ``1 + contrast`` times the background). [1]
    scale : (lo, hi)
        Size factor applied to the flux image. [1]
    aspect : (lo, hi)
        Anisotropy: u by ``aspect``, v by ``1/aspect`` (drawn log-uniform). [1]
    offset_fraction : float
        With probability ``edge_probability`` the centroid's position is uniform over
        the target grown by this fraction of its size on each side (so the spot lies
        partly off the target), else uniform over the target shrunk by ``inner_margin``
        on each side (a spot aimed at the target). [1]
    edge_probability : float
        See ``offset_fraction``. [1]
    inner_margin : float
        See ``offset_fraction``. [1]
    shadow_probability : float
        Chance of a sharp-edged shadow (half-plane, band or wedge). [1]
    shadow_factor : (lo, hi)
        Light left in the shadow, background and flux alike. [1]
    gain : (lo, hi)
        Exposure gain on the whole frame before clipping at 255. [1]
    noise_dn : (lo, hi)
        Standard deviation of added Gaussian noise. [DN]
    """

    contrast: tuple[float, float] = (0.2, 1.5)
    scale: tuple[float, float] = (0.5, 1.5)
    aspect: tuple[float, float] = (0.7, 1.4)
    offset_fraction: float = 0.1
    edge_probability: float = 0.2
    inner_margin: float = 0.15
    shadow_probability: float = 0.4
    shadow_factor: tuple[float, float] = (0.3, 0.7)
    gain: tuple[float, float] = (0.8, 1.35)
    noise_dn: tuple[float, float] = (0.0, 2.0)


@dataclass(frozen=True, slots=True)
class CompositeTruth:
    """Truth and conditions of one composite.

    Attributes
    ----------
    u_px, v_px : float
        Centroid of the flux on the target (shadow applied, before clipping). [px]
    u_full_px, v_full_px : float
        Centroid of the whole transformed flux, on and off the target, no shadow. [px]
    on_target_fraction : float
        Share of the flux (after the shadow) that falls on the target. [1]
    partly_off : bool
        More than 1 % of the flux falls off the target.
    contrast : float
        Added flux peak over the local background (before gain and shadow). [1]
    background_dn : float
        That local background: median of the empty target under the spot's core. [DN]
    scale, aspect, rotation_rad : float
        The flux image's transform. [1, 1, rad]
    rms_px : float
        RMS radius of the transformed flux about its centroid (whole flux). [px]
    shadow : str
        ``"none"``, ``"half_plane"``, ``"band"`` or ``"wedge"``.
    shadow_factor : float
        Light left in the shadow (1 without one). [1]
    shadow_on_spot : bool
        The shadow's edge crosses the spot's core (flux above 20 % of its peak).
    gain : float
        Exposure gain. [1]
    saturated_fraction : float
        Share of the spot's core pixels clipped at 255. [1]
    noise_dn : float
        Added noise standard deviation. [DN]
    u_core_px, v_core_px : float
        Centroid of the spot's core: the light on the target above half its peak,
        weighted by that light (shadow applied). A threshold-and-moments measurement
        (as a plant's classical system makes) aims at this point; it differs from
        ``u_px, v_px`` by the halo's asymmetry. [px]
    """

    u_px: float
    v_px: float
    u_full_px: float
    v_full_px: float
    on_target_fraction: float
    partly_off: bool
    contrast: float
    background_dn: float
    scale: float
    aspect: float
    rotation_rad: float
    rms_px: float
    shadow: str
    shadow_factor: float
    shadow_on_spot: bool
    gain: float
    saturated_fraction: float
    noise_dn: float
    u_core_px: float = math.nan
    v_core_px: float = math.nan

    def as_dict(self) -> dict[str, object]:
        """Plain dict for JSON."""
        return asdict(self)


def _shadow_mask(rng: np.random.Generator, shape: tuple[int, int], centre: tuple[float, float]):
    """A sharp-edged shadow region over the image (bool) and its kind.

    Its edges are long straight lines (a tower structure's shadow is much larger than
    the target) placed so that they often pass near the spot's centre."""
    rows, cols = shape
    v, u = np.indices(shape, dtype=np.float64)
    size = float(max(rows, cols))

    def half_plane(through: NDArray, ang: float) -> NDArray[np.bool_]:
        n = np.array([math.cos(ang), math.sin(ang)])
        return (u - through[0]) * n[0] + (v - through[1]) * n[1] > 0

    # an edge through a point near the spot (half the time) or anywhere
    if rng.random() < 0.5:
        p = np.asarray(centre) + rng.normal(0.0, 0.1 * size, 2)
    else:
        p = rng.uniform(0.0, 1.0, 2) * [cols, rows]
    ang = rng.uniform(0.0, 2.0 * math.pi)
    kind = str(rng.choice(["half_plane", "band", "wedge"]))
    m = half_plane(p, ang)
    if kind == "band":
        w = rng.uniform(0.08, 0.4) * size
        p2 = p + w * np.array([math.cos(ang), math.sin(ang)])
        m &= ~half_plane(p2, ang)
    elif kind == "wedge":
        m &= half_plane(p, ang + rng.uniform(0.3, 1.3) * math.pi)
    return m, kind


def composite(
    empty: NDArray,
    flux: NDArray,
    rng: np.random.Generator,
    ranges: CompositeRanges = CompositeRanges(),  # noqa: B008 - frozen, immutable default
) -> tuple[NDArray[np.uint8], CompositeTruth]:
    """An 8-bit frame of the sunlit target with a focal spot, and its truth.

    Parameters
    ----------
    empty : ndarray (rows, cols) uint8
        An empty sunlit target (rectified), e.g. ``utis/emptyTargetImages``.
    flux : ndarray (h, w)
        A flux distribution on black, e.g. ``utis/fluxImages``.
    rng : numpy.random.Generator
        Source of every random condition (seed it for a reproducible frame).
    ranges : CompositeRanges
        Where the conditions are drawn from.

    Returns
    -------
    frame : ndarray (rows, cols) uint8
    truth : CompositeTruth
        The flux centroid on the target and the conditions.
    """
    e = np.asarray(empty)
    if e.ndim != 2 or e.dtype != np.uint8:
        raise InputError(f"empty: expected a 2-D uint8 image, got {e.dtype} {e.shape}")
    fl = np.asarray(flux, dtype=np.float32)
    if fl.ndim != 2:
        raise InputError(f"flux: expected a 2-D image, got shape {fl.shape}")
    fl = fl / max(float(fl.max()), 1e-12)
    rows, cols = e.shape
    r = ranges
    scale = rng.uniform(*r.scale) * cols / fl.shape[1]
    aspect = math.exp(rng.uniform(math.log(r.aspect[0]), math.log(r.aspect[1])))
    rot = rng.uniform(0.0, 2.0 * math.pi)
    lo = -r.offset_fraction if rng.random() < r.edge_probability else r.inner_margin
    cu = rng.uniform(lo, 1.0 - lo) * cols - 0.5
    cv = rng.uniform(lo, 1.0 - lo) * rows - 0.5
    pad = max(rows, cols)
    canvas, _ = transform_flux(fl, (rows, cols), (cu, cv), scale, aspect, rot, pad)
    tot = float(canvas.sum())
    vv, uu = np.indices(canvas.shape, dtype=np.float64)
    ufull = float((canvas * uu).sum() / tot) - pad
    vfull = float((canvas * vv).sum() / tot) - pad
    r2 = (uu - pad - ufull) ** 2 + (vv - pad - vfull) ** 2
    rms = math.sqrt(float((canvas * r2).sum()) / tot)
    f_t = canvas[pad : pad + rows, pad : pad + cols].astype(np.float64)
    peak = float(canvas.max())
    # local background: the empty target under the spot's core (on the target)
    core = f_t > 0.5 * peak
    eb = e.astype(np.float64)
    b = float(np.median(eb[core])) if core.sum() >= 5 else float(np.median(eb))
    contrast = float(rng.uniform(*r.contrast))
    add = f_t * (contrast * b / peak)
    shade = np.ones_like(eb)
    kind, factor, on_spot = "none", 1.0, False
    if rng.random() < r.shadow_probability:
        m, kind = _shadow_mask(rng, (rows, cols), (ufull, vfull))
        factor = float(rng.uniform(*r.shadow_factor))
        shade[m] = factor
        spot = f_t > 0.2 * peak
        on_spot = bool(spot.any() and m[spot].any() and (~m[spot]).any())
    gain = float(rng.uniform(*r.gain))
    noise = float(rng.uniform(*r.noise_dn))
    lit = shade * add
    tot_on = float(lit.sum())
    tot_all = float((canvas.astype(np.float64) * (contrast * b / peak)).sum())
    u_c = v_c = math.nan
    if tot_on > 0:
        vt, ut = np.indices(lit.shape, dtype=np.float64)
        u_t, v_t = float((lit * ut).sum() / tot_on), float((lit * vt).sum() / tot_on)
        lit_c = np.where(lit > 0.5 * float(lit.max()), lit, 0.0)
        tot_c = float(lit_c.sum())
        u_c, v_c = float((lit_c * ut).sum() / tot_c), float((lit_c * vt).sum() / tot_c)
    else:
        u_t = v_t = math.nan
    # fraction on target judged without the shadow (a shadow is not "off the target")
    frac = float((add.sum()) / tot_all) if tot_all > 0 else 0.0
    raw = gain * shade * (eb + add) + rng.normal(0.0, noise, eb.shape)
    q = np.rint(raw)
    spot_core = f_t > 0.2 * peak
    sat = float((q[spot_core] >= 255).mean()) if spot_core.any() else 0.0
    frame = np.clip(q, 0, 255).astype(np.uint8)
    truth = CompositeTruth(
        u_px=u_t, v_px=v_t, u_full_px=ufull, v_full_px=vfull, on_target_fraction=frac,
        partly_off=frac < 0.99, contrast=contrast, background_dn=b, scale=float(scale),
        aspect=float(aspect), rotation_rad=float(rot), rms_px=rms, shadow=kind,
        shadow_factor=factor, shadow_on_spot=on_spot, gain=gain, saturated_fraction=sat,
        noise_dn=noise, u_core_px=u_c, v_core_px=v_c,
    )  # fmt: skip
    return frame, truth
