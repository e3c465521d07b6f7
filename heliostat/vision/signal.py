"""Frame handling for the spot detector: validation, grey conversion, sparse sampling,
robust statistics and the flat field. Pure functions on arrays."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from heliostat.errors import InputError
from heliostat.vision.target import TargetRegistration

__all__ = ["FlatField", "prepare_flat", "validate_frame"]

_MAD_TO_SIGMA = 1.482602218505602  # 1 / Phi^-1(3/4): MAD -> sigma for Gaussian noise
_MIN_GAIN = 0.02  # flat-field gains below this (sky, deep shadow) are not divided by


@dataclass(frozen=True, slots=True)
class FlatField:
    """Relative pixel response x albedo over a registration's target box (1 = median board).

    Build with :func:`prepare_flat` once per camera; reuse for every frame.

    Attributes
    ----------
    gain_roi : ndarray (v1 - v0, u1 - u0) float32
        Relative gain per pixel of ``registration.maps.roi``. [1]
    roi : (u0, v0, u1, v1)
        The box it covers. [px]
    """

    gain_roi: NDArray[np.float32]
    roi: tuple[int, int, int, int]


# --------------------------------------------------------------------------- input checks
_OK_DTYPES = (np.uint8, np.uint16, np.int16, np.int32, np.float32, np.float64)


def validate_frame(
    image: object, name: str = "image", size_px: tuple[int, int] | None = None
) -> NDArray:
    """Check a frame: ndarray, (H, W) or (H, W, 1|3|4), a supported dtype, finite values.

    Returns the frame ((H, W, 1) squeezed to (H, W)).

    Raises
    ------
    InputError
        Naming ``name``, what was expected and what was received.
    """
    if not isinstance(image, np.ndarray):
        raise InputError(f"{name}: expected a numpy array, got {type(image).__name__}")
    if image.dtype.type not in _OK_DTYPES:
        raise InputError(
            f"{name}: expected dtype uint8, uint16, int16, int32, float32 or float64, "
            f"got {image.dtype}"
        )
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
        raise InputError(
            f"{name}: expected a grey (H, W) or colour (H, W, 3|4) image, got shape {image.shape}"
        )
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise InputError(f"{name}: image too small, shape {image.shape}")
    if size_px is not None and (image.shape[1], image.shape[0]) != tuple(size_px):
        raise InputError(
            f"{name}: image is {image.shape[1]}x{image.shape[0]} px but the target "
            f"registration is for {size_px[0]}x{size_px[1]} px"
        )
    if image.dtype.kind == "f" and not np.all(np.isfinite(image)):
        raise InputError(f"{name}: image contains NaN or infinite values")
    return image


def _gray_f32(a: NDArray) -> NDArray[np.float32]:
    """Grey float32 copy of a grey or BGR(A) block (BT.601 luma weights for colour)."""
    if a.ndim == 3:
        code = cv2.COLOR_BGR2GRAY if a.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
        if a.dtype not in (np.uint8, np.uint16, np.float32):
            a = a.astype(np.float32)
        return cv2.cvtColor(np.ascontiguousarray(a), code).astype(np.float32, copy=False)
    return a.astype(np.float32)


def _coarse(a: NDArray, s: int) -> NDArray:
    """Every s-th pixel starting at s // 2 (OpenCV nearest resize: fast for colour)."""
    if s == 1:
        return a
    o = s // 2
    if a.ndim == 2:
        # Grey: numpy's strided copy beats OpenCV's resize (no row/column tables to build).
        return np.ascontiguousarray(a[o::s, o::s])
    nv, nu = (a.shape[0] - o + s - 1) // s, (a.shape[1] - o + s - 1) // s
    exact = (a.shape[0] - o) % s == 0 and (a.shape[1] - o) % s == 0
    if not exact and a.dtype in (np.uint8, np.uint16, np.float32):
        # Pad by one sampled row/column through a strided copy of the remainder.
        nv_f, nu_f = (a.shape[0] - o) // s, (a.shape[1] - o) // s
        out = np.empty((nv, nu) + a.shape[2:], a.dtype)
        if nv_f and nu_f:
            src = a[o : o + nv_f * s, o : o + nu_f * s]
            out[:nv_f, :nu_f] = cv2.resize(src, (nu_f, nv_f), interpolation=cv2.INTER_NEAREST)
        out[nv_f:, :] = a[o + nv_f * s :: s, o::s][:, :nu]
        out[:, nu_f:] = a[o::s, o + nu_f * s :: s][:nv, :]
        return out
    if a.dtype in (np.uint8, np.uint16, np.float32):
        src = a[o : o + nv * s, o : o + nu * s]
        return cv2.resize(src, (nu, nv), interpolation=cv2.INTER_NEAREST)
    return np.ascontiguousarray(a[o::s, o::s])


def _saturation_level(dtype: np.dtype, bit_depth: int | None) -> float:
    if bit_depth is not None:
        if isinstance(bit_depth, bool) or int(bit_depth) not in range(1, 33):
            raise InputError(f"bit_depth: expected 1..32, got {bit_depth!r}")
        return float(2 ** int(bit_depth) - 1)
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    return math.inf


def _median(v: NDArray) -> float:
    """Median by partial sort (upper median for even sizes): np.median costs 10x more on
    small arrays and its averaging of the two middle values is irrelevant here.

    Integer-valued samples (8-bit frames, differences of DN) have few distinct values;
    numpy's introselect slows down ~8x on such ties while a full sort does not, so those
    are sorted (same element either way)."""
    v = v.ravel()
    k = v.size // 2
    if v.dtype.kind == "f" and v.size > 256 and np.array_equal(v, np.rint(v)):
        return float(np.sort(v)[k])
    return float(np.partition(v, k)[k])


def _robust_stats(v: NDArray, max_n: int = 4096) -> tuple[float, float]:
    """Median and MAD-based sigma (floor: 1/sqrt(12) DN quantisation) of samples, from an
    evenly strided subset of at most ``max_n`` (the median's own scatter is then below
    2 % of the noise sigma)."""
    if v.size > max_n:
        v = v[:: v.size // max_n + 1]
    med = _median(v)
    mad = _median(np.abs(v - np.float32(med))) * _MAD_TO_SIGMA
    return med, max(mad, 1.0 / math.sqrt(12.0))


def _pixel_noise(sig: NDArray, mask: NDArray) -> float:
    """Per-pixel noise sigma from differences of horizontally adjacent samples (MAD / sqrt 2).

    Differencing removes anything smooth (a spot's wings, ambient gradients, albedo), so a
    large spot covering much of the board does not inflate the estimate as the spread of
    the samples themselves would.
    """
    d = sig[:, 1:] - sig[:, :-1]
    m = mask[:, 1:] & mask[:, :-1]
    v = d[m]
    if v.size < 16:
        return _robust_stats(sig[mask])[1] if np.any(mask) else 1.0 / math.sqrt(12.0)
    if v.size > 4096:
        v = v[:: v.size // 4096 + 1]
    mad = _median(np.abs(v - np.float32(_median(v)))) * _MAD_TO_SIGMA / math.sqrt(2.0)
    return max(mad, 1.0 / math.sqrt(12.0))


def _solve3(g: list[list[float]]) -> tuple[float, float, float] | None:
    """Solve the 3x3 system g[:3][:3] c = g[:3][3] by Cramer's rule (None: singular).

    np.linalg.solve costs ~20-60 us per call on a 3x3 system; this costs ~2 us.
    """
    (a, b, c, r0), (d, e, f, r1), (h, i, j, r2) = g[0], g[1], g[2]
    det = a * (e * j - f * i) - b * (d * j - f * h) + c * (d * i - e * h)
    if det == 0.0 or not math.isfinite(det):
        return None
    x0 = (r0 * (e * j - f * i) - b * (r1 * j - f * r2) + c * (r1 * i - e * r2)) / det
    x1 = (a * (r1 * j - f * r2) - r0 * (d * j - f * h) + c * (d * r2 - r1 * h)) / det
    x2 = (a * (e * r2 - r1 * i) - b * (d * r2 - r1 * h) + r0 * (d * i - e * h)) / det
    return x0, x1, x2


def _plane_bg(u: NDArray, v: NDArray, val: NDArray, noise: float) -> NDArray[np.float64]:
    """Robust least-squares plane a + b u + c v (normal equations, one 3-sigma clip).

    The sums of the normal equations come from one small matrix product ([1 u v z]^T
    [1 u v z] over the kept samples) rather than a dozen separate reductions.
    """
    n_all = len(val)
    a = np.empty((n_all, 4))
    a[:, 0], a[:, 1], a[:, 2], a[:, 3] = 1.0, u, v, val
    keep: NDArray | None = None
    coef = None
    for _ in range(2):
        ak = a if keep is None else a[keep]
        if len(ak) < 6:
            break
        sol = _solve3((ak.T @ ak).tolist())
        if sol is None:
            coef = np.array([_median(ak[:, 3]), 0.0, 0.0])
            break
        coef = np.array(sol)
        keep = np.abs(a[:, 3] - a[:, :3] @ coef) < 3.0 * noise
    if coef is None:  # too few samples for a plane: a level
        coef = np.array([_median(val), 0.0, 0.0])
    return coef


def prepare_flat(
    flat: NDArray, registration: TargetRegistration, *, black_level_dn: float = 0.0
) -> FlatField:
    """Relative gain map (response x albedo) from a sun-off frame exposed for the target.

    Parameters
    ----------
    flat : ndarray (H, W) or (H, W, C)
        Ambient-lit target, no spot, well exposed (board well above the black level).
    registration : TargetRegistration
    black_level_dn : float
        Sensor offset subtracted first. [DN]

    Raises
    ------
    InputError
        Wrong shape, or a flat frame with no signal on the board.
    """
    f = validate_frame(flat, "flat", registration.image_size_px)
    u0, v0, u1, v1 = registration.maps.roi
    g = _gray_f32(f[v0:v1, u0:u1]) - np.float32(black_level_dn)
    m = registration.maps
    board = (m.coverage >= 1) & ~m.marker
    if not np.any(board):
        board = m.coverage > 0
    ref = float(np.median(g[board]))
    if not ref > 0:
        raise InputError(
            f"flat: no signal above the black level ({black_level_dn} DN) on the target "
            f"(median {ref + black_level_dn:.1f} DN)"
        )
    gain = g / np.float32(ref)
    return FlatField(np.maximum(gain, np.float32(_MIN_GAIN)).astype(np.float32), m.roi)


# --------------------------------------------------------------------------- stages
