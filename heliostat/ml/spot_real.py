"""The real-background learned spot detector at run time (onnxruntime only).

For a SUNLIT target with no sun-off frame (the real plant's usual case). Trained on
composites of real Jülich empty targets and real flux images (``docs/ml.md``, "The
real-background model"). :func:`detect_spot_onnx_real` has the classical detector's
call (arguments it does not use are accepted and ignored) and returns the same
:class:`heliostat.vision.classical.SpotResult`:

1. the frame is resampled onto a 64 x 64 target grid through the registration and
   divided by the board's median (:func:`heliostat.ml.real_input.real_crop`);
2. the shipped network (``spot_real.onnx``, hash-checked against its model card) returns
   the spot centroid (soft-argmax of a heatmap) and a presence logit; a logit <= 0 is
   ``ok=False, flags=("no_spot",)``.

What the network does not estimate is NaN (``sigma_m``, sizes, fluxes). ``saturated`` is
flagged from the raw pixels of the target's box, ``touches_edge`` when the centroid lies
within one grid cell of the target's edge.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from heliostat.errors import InputError
from heliostat.ml.real_input import REAL_CROP_SIZE, real_crop
from heliostat.ml.registry import load_session

__all__ = ["MODEL_NAME", "detect_spot_onnx_real", "predict_real"]

MODEL_NAME = "spot_real"


def predict_real(
    crops: NDArray[np.float32], models_dir=None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Run the shipped real-background model on inputs (N, 1, 64, 64) or (N, 64, 64).

    Returns
    -------
    xy : ndarray (N, 2)
        Centroid in half-extent units (x / (w/2), y / (h/2)), target-plane axes. [1]
    spot_logit : ndarray (N,)
        Presence logit: > 0 means a spot. [1]
    """
    x = np.asarray(crops, dtype=np.float32)
    if x.ndim == 3:
        x = x[:, None]
    n = REAL_CROP_SIZE
    if x.ndim != 4 or x.shape[1:] != (1, n, n):
        raise InputError(f"crops: expected shape (N, 1, {n}, {n}), got {x.shape}")
    sess, _ = load_session(MODEL_NAME, models_dir)
    xy, logit = sess.run(None, {"crop": np.ascontiguousarray(x)})
    return xy.astype(np.float64), logit[:, 0].astype(np.float64)


def detect_spot_onnx_real(
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
    """Find the sun spot on a sunlit target with the real-background learned model; same
    call and result as :func:`heliostat.vision.classical.detect_spot`.

    Parameters
    ----------
    image, registration, black_level_dn, bit_depth, target
        As for the classical detector.
    dark, flat, expected_xy_m, options
        Accepted for a drop-in switch and not used: the model was trained on sunlit
        frames without a sun-off frame and picks the spot itself.
    models_dir : path, optional
        Load the model from this folder instead of the package.

    Returns
    -------
    heliostat.vision.classical.SpotResult
        ``x_m, y_m`` the centroid [m], ``u_px, v_px`` its pixel; ``snr`` holds the
        presence logit; ``background_dn`` the board's median [DN]; ``sigma_m``, sizes and
        fluxes are NaN (not estimated).

    Raises
    ------
    InputError
        A frame of the wrong size, or a target with no light.
    heliostat.ml.registry.ModelError
        The shipped model is missing or altered.
    """
    from heliostat.ml.spot_model import _result
    from heliostat.vision.classical import validate_frame

    img = validate_frame(image, "image", registration.image_size_px)
    crop, med = real_crop(img, registration, black_level_dn=black_level_dn)
    u0, v0, u1, v1 = registration.maps.roi
    sat_frac = 0.0
    if bit_depth is not None or img.dtype in (np.uint8, np.uint16):
        sat = (
            float(2 ** int(bit_depth) - 1)
            if bit_depth is not None
            else float(np.iinfo(img.dtype).max)
        )
        roi = img[v0:v1, u0:u1]
        sat_frac = float(np.count_nonzero(roi >= sat)) / max(roi.size, 1)
    xy_n, logit = predict_real(crop[None], models_dir)
    lg = float(logit[0])
    if not lg > 0:
        return _result(flags=("no_spot",), snr=lg, background_dn=med, saturated_fraction=sat_frac)
    w, h = float(registration.width_m), float(registration.height_m)
    xc, yc = float(xy_n[0, 0]) * w / 2, float(xy_n[0, 1]) * h / 2
    cell = w / crop.shape[1]
    touches = abs(xc) > w / 2 - cell or abs(yc) > h / 2 - cell
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
        u_m=up_m, snr=lg, saturated_fraction=sat_frac, touches_edge=touches, n_candidates=1,
        background_dn=med, flags=tuple(flags),
    )  # fmt: skip
