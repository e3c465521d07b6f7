"""Input of the real-background spot detector: the sunlit target on a 64 x 64 grid.

The frame is resampled onto the same target-plane grid as the simulator-trained model's
(:mod:`heliostat.ml.rectify`: every cell the box average of 4 x 4 bilinear samples
placed through the target registration; row 0 the target's top edge, column 0 its left
edge) but normalised for a sunlit board with no sun-off frame: each cell is divided by
the median of all cells (the board's level, which the spot — a minority of the target —
barely moves) and 1 is subtracted, so the bare board is ~0, its dark marks and seams are
negative, shadows about −0.3 to −0.7 and a spot +0.2 to +2.5. Nothing of the board is
modelled or subtracted: telling the spot from the texture, the shadows and the seams is
the network's job. Values are clipped to [−1, 4].
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from heliostat.errors import InputError
from heliostat.ml.rectify import OVERSAMPLE, sample_target

__all__ = ["REAL_CROP_SIZE", "real_crop"]

#: Side of the real-background model's input. [cells]
REAL_CROP_SIZE = 64


def real_crop(
    image: NDArray,
    registration,
    *,
    black_level_dn: float = 0.0,
    n: int = REAL_CROP_SIZE,
) -> tuple[NDArray[np.float32], float]:
    """Resample a frame onto the n x n target grid and normalise by the board's median.

    Parameters
    ----------
    image : ndarray (H, W) or (H, W, 3|4)
        The frame (integer or float, grey or BGR).
    registration : heliostat.vision.target.TargetRegistration
        Pixel ↔ target-plane mapping of this camera (same image size).
    black_level_dn : float
        Sensor offset, subtracted first. [DN]
    n : int
        Grid side. [cells]

    Returns
    -------
    crop : ndarray (n, n) float32
        ``cell / median(cells) − 1``, clipped to [−1, 4]. [1]
    median_dn : float
        The board's median level. [DN]

    Raises
    ------
    InputError
        A frame not of the registration's size, or a board with no light (median <= 0).
    """
    fine, _ = sample_target(image, registration, n, OVERSAMPLE)
    cells = fine.reshape(n, OVERSAMPLE, n, OVERSAMPLE).mean(axis=(1, 3)) - np.float32(
        black_level_dn
    )
    med = float(np.median(cells))
    if not med > 0:
        raise InputError(f"image: the target holds no light (median {med:g} DN over the target)")
    crop = np.clip(cells / np.float32(med) - 1.0, -1.0, 4.0).astype(np.float32)
    return crop, med
