"""Target-plane crops: the learned detector's input.

A frame is resampled onto a regular grid over the whole target in the target plane
(origin at the centre, x right, y up as the camera sees it), through the target
registration (:class:`heliostat.vision.target.TargetRegistration`): every grid sample is
mapped plane → distorted pixel and read with bilinear interpolation (``cv2.remap``). The
grid is first sampled ``oversample`` times finer and then box-averaged, so each crop cell
integrates the pixels it covers (no aliasing of narrow streaks).

The signal is background-free and scale-free:

* with a dark (sun-off) frame at the same exposure: ``image − dark``;
* without: ``image − black level − median of the crop`` (the board's ambient level);

then divided by the crop's brightest cell (a 3×3 box-smoothed maximum, so one hot pixel
does not set the scale). Cell values are thus ~1 at the spot's peak, ~0 on the bare board.

Crop layout: row 0 is the target's top edge (y = +h/2), column 0 its left edge
(x = −w/2); cell (i, j) has its centre at
``x = −w/2 + (j + ½)·w/n``, ``y = +h/2 − (i + ½)·h/n``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from heliostat.errors import InputError

__all__ = ["CROP_SIZE", "Crop", "cell_centres_m", "rectify_target", "sample_target"]

#: Side of the learned detector's input crop. [cells]
CROP_SIZE = 64
#: Samples per crop cell and axis before box-averaging. [1]
OVERSAMPLE = 4


@dataclass(frozen=True, slots=True)
class Crop:
    """A rectified, normalised target-plane crop.

    Attributes
    ----------
    data : ndarray (n, n) float32
        Background-free signal divided by ``scale_dn``. [1]
    scale_dn : float
        The divisor: smoothed peak signal. [DN]
    noise_dn : float
        Robust per-cell noise of the background-free signal (MAD of the crop). [DN]
    width_m, height_m : float
        Target extent covered by the crop. [m]
    """

    data: NDArray[np.float32]
    scale_dn: float
    noise_dn: float
    width_m: float
    height_m: float


def cell_centres_m(width_m: float, height_m: float, n: int = CROP_SIZE) -> tuple[NDArray, NDArray]:
    """Target-plane x of each column and y of each row of an n x n crop. [m]"""
    j = np.arange(n, dtype=np.float64)
    x = -width_m / 2 + (j + 0.5) * width_m / n
    y = height_m / 2 - (j + 0.5) * height_m / n
    return x, y


_MAP_CACHE: dict[tuple, tuple[NDArray, NDArray]] = {}


def _remap_grids(registration, n: int, over: int) -> tuple[NDArray, NDArray]:
    """Distorted-pixel coordinates (float32 maps for cv2.remap) of the fine grid."""
    key = (
        registration.image_size_px,
        registration.h_plane_from_px.tobytes(),
        registration.k_px.tobytes(),
        registration.dist_coeffs.tobytes(),
        registration.width_m,
        registration.height_m,
        n,
        over,
    )
    hit = _MAP_CACHE.get(key)
    if hit is not None:
        return hit
    x, y = cell_centres_m(registration.width_m, registration.height_m, n * over)
    gx, gy = np.meshgrid(x, y)
    uv = registration.plane_to_pixel(np.c_[gx.ravel(), gy.ravel()])
    mu = uv[:, 0].reshape(gx.shape).astype(np.float32)
    mv = uv[:, 1].reshape(gx.shape).astype(np.float32)
    if len(_MAP_CACHE) > 8:
        _MAP_CACHE.clear()
    _MAP_CACHE[key] = (mu, mv)
    return mu, mv


def _grey(a: NDArray) -> NDArray[np.float32]:
    if a.ndim == 3:
        return a[..., :3].astype(np.float32).mean(axis=2)
    return a.astype(np.float32)


def sample_target(
    image: NDArray, registration, n: int, oversample: int
) -> tuple[NDArray[np.float32], tuple[NDArray, NDArray]]:
    """The frame's grey level read at ``n * oversample`` samples per side over the whole
    target (row 0 at its top edge), and the remap grids used.

    Raises
    ------
    InputError
        A frame not of the registration's image size.
    """
    w, h = registration.image_size_px
    if not isinstance(image, np.ndarray) or image.shape[:2] != (h, w):
        got = getattr(image, "shape", type(image).__name__)
        raise InputError(f"image: expected a {w}x{h} px frame for this registration, got {got}")
    mu, mv = _remap_grids(registration, n, oversample)
    fine = cv2.remap(_grey(image), mu, mv, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return fine, (mu, mv)


def rectify_target(
    image: NDArray,
    registration,
    *,
    dark: NDArray | None = None,
    black_level_dn: float = 0.0,
    n: int = CROP_SIZE,
    oversample: int = OVERSAMPLE,
) -> Crop:
    """Resample a frame onto an n x n target-plane grid and normalise it.

    Parameters
    ----------
    image : ndarray (H, W) or (H, W, 3|4)
        The frame (any integer or float dtype the classical detector accepts).
    registration : heliostat.vision.target.TargetRegistration
        Pixel ↔ target-plane mapping of this camera.
    dark : ndarray, optional
        Sun-off frame of the same shape and exposure.
    black_level_dn : float
        Sensor offset, used without a dark frame. [DN]
    n, oversample : int
        Crop side [cells] and samples per cell and axis.

    Returns
    -------
    Crop

    Raises
    ------
    InputError
        A frame or dark frame that does not match the registration's image size.
    """
    fine, (mu, mv) = sample_target(image, registration, n, oversample)
    if dark is not None:
        if not isinstance(dark, np.ndarray) or dark.shape != image.shape:
            got = getattr(dark, "shape", type(dark).__name__)
            raise InputError(f"dark: expected the image's shape {image.shape}, got {got}")
        fine -= cv2.remap(_grey(dark), mu, mv, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    else:
        fine -= np.float32(black_level_dn)
    cells = fine.reshape(n, oversample, n, oversample).mean(axis=(1, 3))
    if dark is None:
        cells -= np.float32(np.median(cells))
    else:
        # Residual ambient drift between the two frames: the median of the border cells.
        border = np.concatenate([cells[:4].ravel(), cells[-4:].ravel(), cells[:, :4].ravel(),
                                 cells[:, -4:].ravel()])  # fmt: skip
        cells -= np.float32(np.median(border))
    med = float(np.median(cells))
    noise = 1.482602218505602 * float(np.median(np.abs(cells - med)))
    peak = float(cv2.blur(cells, (3, 3), borderType=cv2.BORDER_REPLICATE).max())
    scale = max(peak, 1e-6, 3.0 * noise)
    data = np.clip(cells / np.float32(scale), -1.0, 2.0).astype(np.float32)
    if not math.isfinite(scale):
        raise InputError("image: the crop has no finite signal")
    return Crop(data, scale, noise, float(registration.width_m), float(registration.height_m))
