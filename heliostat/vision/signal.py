"""Frame handling for the spot detector: validation, grey conversion, robust statistics and
the flat field. Pure functions on arrays (the per-pixel passes are in ``_kernels``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from heliostat.errors import InputError
from heliostat.vision.target import TargetRegistration

__all__ = ["FlatField", "SpotInFlatError", "prepare_flat", "validate_frame"]

_MAD_TO_SIGMA = 1.482602218505602  # 1 / Phi^-1(3/4): MAD -> sigma for Gaussian noise
_MIN_GAIN = 0.02  # flat-field gains below this (sky, deep shadow) are not divided by
#: A flat whose board, smoothed over 5x5 px, is brighter than this many times its median
#: holds a spot or a glint: paint and pixel response vary by tens of percent, while a
#: heliostat's spot is 10-100x the ambient light.
MAX_FLAT_GAIN = 2.0


class SpotInFlatError(InputError):
    """A flat-field frame with a bright patch on the target (a neighbour's spot, a glint)."""


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
    SpotInFlatError
        A patch of the board more than :data:`MAX_FLAT_GAIN` times its median (a spot in
        the frame): dividing by it would suppress the spot measured there.
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
    smooth = cv2.blur(gain, (5, 5))
    bright = board & (smooth > np.float32(MAX_FLAT_GAIN))
    if np.any(bright):
        vv, uu = np.nonzero(bright)
        raise SpotInFlatError(
            f"flat: a patch of the target around pixel ({u0 + int(np.median(uu))}, "
            f"{v0 + int(np.median(vv))}) is {float(smooth[bright].max()):.1f}x its median "
            "brightness (a sun spot or a glint in the sun-off frame?); take the flat from "
            "a frame without one"
        )
    return FlatField(np.maximum(gain, np.float32(_MIN_GAIN)).astype(np.float32), m.roi)
