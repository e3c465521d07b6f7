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

__all__ = ["DARK_SUFFIX", "MAX_PIXELS", "dark_path", "image_size_px", "load_image"]

#: Suffix of a sun-off frame next to its sun-on frame (``frames/H1/t.png`` →
#: ``frames/H1/t_dark.png``): the campaign's, the simulator's and the detector's one
#: spelling of the pairing.
DARK_SUFFIX = "_dark"


def dark_path(frame: str | Path, suffix: str = DARK_SUFFIX) -> Path:
    """The sun-off frame's path for a sun-on frame (``t.png`` → ``t_dark.png``)."""
    p = Path(frame)
    return p.with_name(p.stem + suffix + p.suffix)


_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: Largest frame :func:`load_image` decodes (100 Mpx: 8 times a 12 Mpx camera; a
#: 16-bit frame of this size is 200 MB, and the detector's float copies several times
#: that). Larger frames are refused from their header, before any pixel is decoded.
MAX_PIXELS = 100_000_000


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a TIFF's first image file directory, or None."""
    import struct

    e = "<" if data[:2] == b"II" else ">"
    try:
        (ifd,) = struct.unpack_from(e + "I", data, 4)
        (n,) = struct.unpack_from(e + "H", data, ifd)
        got: dict[int, int] = {}
        for i in range(n):
            tag, typ, _count = struct.unpack_from(e + "HHI", data, ifd + 2 + 12 * i)
            if tag in (256, 257):
                fmt = e + ("H" if typ == 3 else "I")
                got[tag] = struct.unpack_from(fmt, data, ifd + 2 + 12 * i + 8)[0]
    except struct.error:
        return None
    if 256 in got and 257 in got:
        return got[256], got[257]
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame marker, or None."""
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        seg = int.from_bytes(data[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h = int.from_bytes(data[i + 5 : i + 7], "big")
            w = int.from_bytes(data[i + 7 : i + 9], "big")
            return w, h
        i += 2 + seg
    return None


def image_size_px(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG, TIFF or JPEG from its header, without decoding it;
    None for another format (or a header too damaged to say)."""
    if data.startswith(_PNG_MAGIC) and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff_size(data)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data)
    return None


def _size_problem(
    size: tuple[int, int], expected_size_px: tuple[int, int] | None, max_pixels: int
) -> str | None:
    w, h = size
    if expected_size_px is not None and (w, h) != tuple(expected_size_px):
        ew, eh = expected_size_px
        return f"frame is {w} x {h} pixels, the camera's is {ew} x {eh} (camera.toml)"
    if w * h > max_pixels:
        return (
            f"frame is {w} x {h} pixels ({w * h / 1e6:.0f} Mpx), more than the limit of "
            f"{max_pixels / 1e6:g} Mpx (heliostat.vision.io.MAX_PIXELS); not decoded"
        )
    return None


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


def load_image(
    path: str | Path,
    *,
    expected_size_px: tuple[int, int] | None = None,
    max_pixels: int = MAX_PIXELS,
) -> NDArray:
    """Read one frame.

    The size is read from the file's header first (PNG, TIFF, JPEG, ``.npy``), so a
    frame of the wrong size or beyond ``max_pixels`` is refused before it is decoded
    (a 20000 x 20000 16-bit PNG would need 800 MB, and its processing many times that).
    For other formats OpenCV's own limit applies and the size is checked after decoding.

    Parameters
    ----------
    path : str or Path
        Image file (PNG, TIFF, JPEG, ... or ``.npy``).
    expected_size_px : (int, int), optional
        (width, height) the camera delivers (``camera.toml``); other sizes are refused.
    max_pixels : int
        Largest width x height decoded. [px]

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
            arr = np.load(p, allow_pickle=False, mmap_mode="r")  # header only, for now
        except (OSError, ValueError) as exc:
            raise InputError(f"{p}: cannot read NumPy array: {exc}") from None
        if not isinstance(arr, np.ndarray) or arr.ndim not in (2, 3):
            raise InputError(f"{p}: expected a 2-D or 3-D array, got shape {np.shape(arr)}")
        why = _size_problem((arr.shape[1], arr.shape[0]), expected_size_px, max_pixels)
        if why:
            raise InputError(f"{p}: {why}")
        return np.array(arr)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise InputError(f"{p}: cannot read: {exc}") from None
    if not data:
        raise InputError(f"{p}: empty file")
    why = _truncated(data)
    if why:
        raise InputError(f"{p}: {why}")
    size = image_size_px(data)
    why = _size_problem(size, expected_size_px, max_pixels) if size else None
    if why:
        raise InputError(f"{p}: {why}")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise InputError(f"{p}: not an image OpenCV can decode (corrupt or unsupported format)")
    why = _size_problem((img.shape[1], img.shape[0]), expected_size_px, max_pixels)
    if why:
        raise InputError(f"{p}: {why}")
    return img
