"""The learned spot detector at run time (onnxruntime only).

:func:`detect_spot_onnx` has the classical detector's signature (the arguments it does
not use are accepted and ignored, so callers can switch methods) and returns the same
:class:`heliostat.vision.classical.SpotResult`; it is registered as the ``"onnx"`` method
in :mod:`heliostat.vision.methods`:

1. the frame is rectified to a 64 x 64 target-plane crop
   (:func:`~heliostat.ml.rectify.rectify_target`, minus the dark frame when given);
2. a no-spot check: the crop's smoothed peak must stand ``k_noise`` noise sigmas above
   the background (as in the classical coarse pass), else ``ok=False, flags=("no_spot",)``;
3. the shipped CNN (``spot_cnn.onnx``, hash-checked against its model card) returns the
   centroid in the target plane.

What the network does not estimate is NaN in the result (``sigma_m``, sizes, flux);
``saturated`` is flagged from the raw pixels over the target, and ``touches_edge`` when
the centroid lies within one crop cell of the edge.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray

from heliostat.errors import InputError
from heliostat.ml.rectify import Crop, rectify_target
from heliostat.ml.registry import load_session

__all__ = ["MODEL_NAME", "detect_spot_onnx", "predict_crops"]

MODEL_NAME = "spot_cnn"
#: No-spot threshold on the crop's smoothed peak, in background noise sigmas. [1]
K_NOISE = 6.0


def predict_crops(crops: NDArray[np.float32], models_dir=None) -> NDArray[np.float64]:
    """Run the shipped CNN on crops (N, 1, 64, 64) or (N, 64, 64).

    Returns
    -------
    ndarray (N, 2)
        Centroid in half-extent units (x / (w/2), y / (h/2)). [1]
    """
    x = np.asarray(crops, dtype=np.float32)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1:] != (1, 64, 64):
        raise InputError(f"crops: expected shape (N, 1, 64, 64), got {x.shape}")
    sess, _ = load_session(MODEL_NAME, models_dir)
    return sess.run(None, {"crop": np.ascontiguousarray(x)})[0].astype(np.float64)


def _result(**kw):
    from heliostat.vision.classical import SpotResult

    nan = math.nan
    base = dict(
        ok=False, x_m=nan, y_m=nan, u_px=nan, v_px=nan, e_m=nan, n_m=nan, u_m=nan,
        sigma_m=nan, size_x_m=nan, size_y_m=nan, peak_dn=nan, integrated_dn=nan,
        flux_dn_m2=nan, snr=nan, n_pixels=0, saturated_fraction=nan, touches_edge=False,
        n_candidates=0, background_dn=nan, noise_dn=nan, flags=(),
    )  # fmt: skip
    base.update(kw)
    return SpotResult(**base)


def _border_noise(crop: Crop) -> float:
    d = crop.data
    border = np.concatenate([d[:6].ravel(), d[-6:].ravel(), d[:, :6].ravel(), d[:, -6:].ravel()])
    med = float(np.median(border))
    return 1.482602218505602 * float(np.median(np.abs(border - med))) * crop.scale_dn


def detect_spot_onnx(
    image: NDArray,
    registration,
    *,
    dark: NDArray | None = None,
    flat=None,
    black_level_dn: float = 0.0,
    bit_depth: int | None = None,
    expected_xy_m: ArrayLike | None = None,
    target=None,
    options=None,
    models_dir=None,
):
    """Find the sun spot with the learned detector; same call and result as
    :func:`heliostat.vision.classical.detect_spot`.

    Parameters
    ----------
    image, registration, dark, black_level_dn, bit_depth, target
        As for the classical detector.
    flat, expected_xy_m, options
        Accepted for a drop-in switch and not used: the network was trained without a
        flat field and picks the dominant spot itself.
    models_dir : path, optional
        Load the model from this folder instead of the package.

    Returns
    -------
    heliostat.vision.classical.SpotResult
        ``sigma_m``, sizes and fluxes are NaN (not estimated by the network).

    Raises
    ------
    InputError
        Frame or dark frame of the wrong size.
    heliostat.ml.registry.ModelError
        The shipped model is missing or altered.
    """
    from heliostat.vision.classical import validate_frame

    img = validate_frame(image, "image", registration.image_size_px)
    drk = None if dark is None else validate_frame(dark, "dark", registration.image_size_px)
    crop = rectify_target(img, registration, dark=drk, black_level_dn=black_level_dn)
    noise = _border_noise(crop)
    sm = cv2.GaussianBlur(crop.data, (3, 3), 0) * np.float32(crop.scale_dn)
    peak = float(sm.max())
    if noise > 0:
        snr = peak / noise
    else:  # a noise-free crop: a spot only if there is any signal at all
        snr = math.inf if peak > 0 else 0.0
    u0, v0, u1, v1 = registration.maps.roi
    sat_frac = 0.0
    if bit_depth is not None or img.dtype in (np.uint8, np.uint16):
        sat = (
            float(2 ** int(bit_depth) - 1)
            if bit_depth is not None
            else float(np.iinfo(img.dtype).max)
        )
        roi = img[v0:v1, u0:u1]
        lit = roi.astype(np.float32) > np.float32(0.5 * sat)
        if np.any(lit):
            sat_frac = float(np.count_nonzero(roi >= sat)) / float(np.count_nonzero(lit))
    if not snr >= K_NOISE:
        return _result(flags=("no_spot",), snr=snr, noise_dn=noise, peak_dn=peak,
                       saturated_fraction=sat_frac)  # fmt: skip
    xy_n = predict_crops(crop.data[None], models_dir)[0]
    xc = float(xy_n[0]) * crop.width_m / 2
    yc = float(xy_n[1]) * crop.height_m / 2
    cell = crop.width_m / crop.data.shape[1]
    touches = abs(xc) > crop.width_m / 2 - cell or abs(yc) > crop.height_m / 2 - cell
    flags = []
    if sat_frac > 0:
        flags.append("saturated")
    if touches:
        flags.append("touches_edge")
    uv = registration.plane_to_pixel([[xc, yc]])[0]
    e_m = n_m = up_m = math.nan
    if target is not None:
        e_m, n_m, up_m = (float(v) for v in target.plane_to_enu(np.array([xc, yc])))
    return _result(
        ok=True, x_m=xc, y_m=yc, u_px=float(uv[0]), v_px=float(uv[1]), e_m=e_m, n_m=n_m,
        u_m=up_m, peak_dn=peak, snr=snr, saturated_fraction=sat_frac, touches_edge=touches,
        n_candidates=1, background_dn=0.0, noise_dn=noise, flags=tuple(flags),
    )  # fmt: skip
