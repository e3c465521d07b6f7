"""Reading frames from files: the only place in :mod:`heliostat.vision` that touches disk.

PNG (8- or 16-bit, grey or colour), TIFF, JPEG and anything else OpenCV decodes, plus
NumPy ``.npy`` arrays. Colour comes back in OpenCV's BGR(A) order; 16-bit values are
returned unscaled (a 12-bit camera's raw 0..4095).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from heliostat.errors import InputError

__all__ = ["DARK_SUFFIX", "dark_path", "load_image"]

#: Suffix of a sun-off frame next to its sun-on frame (``frames/H1/t.png`` →
#: ``frames/H1/t_dark.png``): the campaign's, the simulator's and the detector's one
#: spelling of the pairing.
DARK_SUFFIX = "_dark"


def dark_path(frame: str | Path, suffix: str = DARK_SUFFIX) -> Path:
    """The sun-off frame's path for a sun-on frame (``t.png`` → ``t_dark.png``)."""
    p = Path(frame)
    return p.with_name(p.stem + suffix + p.suffix)


_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _truncated(data: bytes) -> str | None:
    """A reason if the bytes are a visibly truncated PNG or JPEG, else None."""
    if data.startswith(_PNG_MAGIC):
        # Every PNG ends with the 12-byte IEND chunk.
        if b"IEND" not in data[-16:]:
            return "PNG without its IEND chunk (truncated file)"
    elif data.startswith(b"\xff\xd8"):
        if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
            return "JPEG without its end-of-image marker (truncated file)"
    return None


def load_image(path: str | Path) -> NDArray:
    """Read one frame.

    Parameters
    ----------
    path : str or Path
        Image file (PNG, TIFF, JPEG, ... or ``.npy``).

    Returns
    -------
    ndarray (H, W) or (H, W, 3|4)
        uint8 or uint16 (float for ``.npy`` files holding floats), values unscaled.

    Raises
    ------
    InputError
        Missing, unreadable, truncated or undecodable file, naming the path.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: image file not found")
    if p.suffix.lower() == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"{p}: cannot read NumPy array: {exc}") from None
        if not isinstance(arr, np.ndarray) or arr.ndim not in (2, 3):
            raise InputError(f"{p}: expected a 2-D or 3-D array, got shape {np.shape(arr)}")
        return arr
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise InputError(f"{p}: cannot read: {exc}") from None
    if not data:
        raise InputError(f"{p}: empty file")
    why = _truncated(data)
    if why:
        raise InputError(f"{p}: {why}")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise InputError(f"{p}: not an image OpenCV can decode (corrupt or unsupported format)")
    return img
