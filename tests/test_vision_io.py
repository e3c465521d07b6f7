"""Frame files: the size is read from the header and checked before anything is decoded."""

from __future__ import annotations

import resource
import struct
import zlib

import cv2
import numpy as np
import pytest

from heliostat.cli import main
from heliostat.errors import InputError
from heliostat.vision.io import MAX_PIXELS, image_size_px, load_image


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _big_png(path, width: int, height: int) -> None:
    """A real, decodable 16-bit grey PNG of zeros, written row by row (the zeros
    compress to a few hundred kB, so the file is small; its pixels are not)."""
    comp = zlib.compressobj(1)
    rows = b"\x00" * (1 + 2 * width) * 100  # 100 rows: filter byte + 16-bit samples
    idat = b"".join(comp.compress(rows) for _ in range(height // 100))
    idat += comp.compress(b"\x00" * (1 + 2 * width) * (height % 100)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat)
    path.write_bytes(png + _chunk(b"IEND", b""))


def test_header_sizes_of_png_tiff_and_jpeg(tmp_path):
    img = np.zeros((48, 64), np.uint16)  # (height, width)
    for ext in (".png", ".tif"):
        p = tmp_path / f"a{ext}"
        assert cv2.imwrite(str(p), img)
        assert image_size_px(p.read_bytes()) == (64, 48)
    p = tmp_path / "a.jpg"
    assert cv2.imwrite(str(p), img.astype(np.uint8))
    assert image_size_px(p.read_bytes()) == (64, 48)
    assert image_size_px(b"not an image") is None


def test_a_huge_png_is_refused_from_its_header_not_decoded(tmp_path):
    # The report's frame was 20000 x 20000 16-bit (800 MB decoded, > 7 GB in the
    # detector); 10240 x 10240 (105 Mpx, just over the limit) makes the same point in a
    # second. The file is small; the refusal must come before decoding: address space is
    # capped at 1 GB for the call, so decoding (210 MB, then copies) would not pass.
    p = tmp_path / "huge.png"
    _big_png(p, 10240, 10240)
    assert p.stat().st_size < 2_000_000
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (1_000_000_000 + _vm_bytes(), hard))
    try:
        with pytest.raises(
            InputError, match=r"huge.png: frame is 10240 x 10240 pixels \(105 Mpx\)"
        ):
            load_image(p)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    assert 10240 * 10240 > MAX_PIXELS


def _vm_bytes() -> int:
    """This process's current virtual size (the address-space cap is on top of it)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * resource.getpagesize()


def test_a_frame_of_another_size_than_the_camera_is_refused(tmp_path):
    p = tmp_path / "f.png"
    assert cv2.imwrite(str(p), np.zeros((48, 64), np.uint16))
    assert load_image(p, expected_size_px=(64, 48)).shape == (48, 64)
    with pytest.raises(
        InputError, match=r"f.png: frame is 64 x 48 pixels, the camera's is 640 x 512"
    ):
        load_image(p, expected_size_px=(640, 512))
    n = tmp_path / "f.npy"
    np.save(n, np.zeros((48, 64)))
    with pytest.raises(InputError, match=r"f.npy: frame is 64 x 48 pixels"):
        load_image(n, expected_size_px=(640, 512))
    with pytest.raises(InputError, match="more than the limit of 0.001 Mpx"):
        load_image(n, max_pixels=1000)


def test_detect_cli_names_the_frame_of_the_wrong_size(tmp_path, capsys):
    cam = tmp_path / "camera.toml"
    cam.write_text(
        "[camera]\nwidth_px = 640\nheight_px = 512\nfx_px = 3000.0\nfy_px = 3000.0\n"
        "dist_coeffs = [0.0, 0.0, 0.0, 0.0, 0.0]\nbit_depth = 12\n"
        "corners_px = [[100, 100], [500, 100], [500, 400], [100, 400]]\n"
    )
    p = tmp_path / "big.png"
    _big_png(p, 1000, 800)
    rc = main(["detect", str(p), "--camera", str(cam), "--target-size", "5", "5"])
    err = capsys.readouterr()
    assert rc != 0
    assert "big.png: frame is 1000 x 800 pixels, the camera's is 640 x 512" in err.out + err.err
