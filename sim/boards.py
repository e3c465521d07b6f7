"""Synthetic views of a camera-calibration board through a camera with known intrinsics
and lens distortion: the ground truth for ``heliostat camera calibrate``.

Each output pixel is traced back through the lens: its distorted pixel position is
undistorted (OpenCV's iterative inverse of the distortion model) to a ray, the ray meets
the board plane, and the board's texture is sampled there. Every pixel is the mean of
``ss × ss`` sub-pixel rays (box anti-aliasing), so corners land where the model puts them
to a small fraction of a pixel.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

from heliostat.vision.intrinsics import Board

#: Texture resolution. [px per square]
_TEX_PX_PER_SQUARE = 64


def board_texture(board: Board) -> tuple[NDArray[np.uint8], float, tuple[float, float]]:
    """The board as an image: (texture, pixels per metre, board coordinates of the
    texture's pixel (0, 0) [m]). White margin of one square around the pattern."""
    s = board.square_m
    ppm = _TEX_PX_PER_SQUARE / s
    if board.kind == "chessboard":
        # cols × rows inner corners at (i·s, j·s): squares from -s to cols·s (x), one more
        # square of white margin each side
        nx, ny = board.cols + 1, board.rows + 1
        ix, iy = np.meshgrid(np.arange(nx), np.arange(ny))
        cells = np.where((ix + iy) % 2 == 0, 0, 255).astype(np.uint8)
        pattern = np.kron(cells, np.ones((_TEX_PX_PER_SQUARE,) * 2, np.uint8))
        tex = cv2.copyMakeBorder(
            pattern, *(4 * [_TEX_PX_PER_SQUARE]), cv2.BORDER_CONSTANT, value=255
        )
        return tex, ppm, (-2 * s, -2 * s)
    w = board.cols * _TEX_PX_PER_SQUARE
    h = board.rows * _TEX_PX_PER_SQUARE
    pattern = board.charuco().generateImage((w, h), marginSize=0)
    tex = cv2.copyMakeBorder(pattern, *(4 * [_TEX_PX_PER_SQUARE]), cv2.BORDER_CONSTANT, value=255)
    return tex, ppm, (-s, -s)


def pixel_rays(
    k_px: NDArray, dist_coeffs: NDArray, size_px: tuple[int, int], ss: int = 3
) -> NDArray[np.float64]:
    """Normalised undistorted ray directions (x, y) of ``ss × ss`` sub-pixel samples of
    every pixel, shape (h, w, ss·ss, 2). Independent of the board's pose: compute once."""
    w, h = size_px
    off = (np.arange(ss) + 0.5) / ss - 0.5
    ou, ov = np.meshgrid(off, off)
    u, v = np.meshgrid(np.arange(w, dtype=float), np.arange(h, dtype=float))
    pts = np.stack(
        [(u[..., None] + ou.ravel()).ravel(), (v[..., None] + ov.ravel()).ravel()], axis=1
    )
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
    xy = cv2.undistortPoints(pts.reshape(-1, 1, 2), k_px, dist_coeffs, criteria=crit)
    return xy.reshape(h, w, ss * ss, 2)


def render_view(
    board: Board,
    rays: NDArray,
    rvec: NDArray,
    tvec_m: NDArray,
    rng: np.random.Generator,
    black_dn: float = 30.0,
    white_dn: float = 220.0,
    noise_dn: float = 1.5,
) -> NDArray[np.uint8]:
    """One 8-bit view of the board at pose (``rvec``, ``tvec_m``: board → camera, OpenCV
    convention) through the rays of :func:`pixel_rays`; grey background off the board,
    Gaussian noise ``noise_dn`` [DN] from ``rng``."""
    tex, ppm, (x0, y0) = board_texture(board)
    r, _ = cv2.Rodrigues(np.asarray(rvec, float))
    t = np.asarray(tvec_m, float).ravel()
    n = r[:, 2]  # board normal in the camera frame
    d = np.concatenate([rays, np.ones(rays.shape[:-1] + (1,))], axis=-1)
    s = (n @ t) / (d @ n)  # ray parameter where it meets the board plane
    p_cam = d * s[..., None]
    p_board = (p_cam - t) @ r  # R^T (p - t), row vectors
    tu = ((p_board[..., 0] - x0) * ppm - 0.5).astype(np.float32)
    tv = ((p_board[..., 1] - y0) * ppm - 0.5).astype(np.float32)
    h, w, m = tu.shape
    val = cv2.remap(
        tex,
        tu.reshape(h, w * m),
        tv.reshape(h, w * m),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=128,
    ).astype(float)
    val[(s <= 0).reshape(h, w * m)] = 128  # behind the camera
    img = val.reshape(h, w, m).mean(axis=2)
    img = black_dn + (white_dn - black_dn) * img / 255.0
    img = img + rng.normal(0.0, noise_dn, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def random_poses(
    board: Board,
    k_px: NDArray,
    dist_coeffs: NDArray,
    size_px: tuple[int, int],
    n: int,
    rng: np.random.Generator,
    distance_m: tuple[float, float] = (0.45, 0.75),
    tilt_deg: float = 35.0,
) -> list[tuple[NDArray, NDArray]]:
    """``n`` board poses (rvec, tvec [m]) with the whole pattern inside the image (10 px
    margin), tilted up to ``tilt_deg`` about both in-plane axes and spread over the frame."""
    w, h = size_px
    s = board.square_m
    if board.kind == "chessboard":  # the outer squares and their white margin
        lo, hx, hy = -2 * s, (board.cols + 1) * s, (board.rows + 1) * s
        extent = np.array([[lo, lo, 0], [hx, lo, 0], [lo, hy, 0], [hx, hy, 0]], np.float32)
    else:
        extent = (
            np.array(
                [[0, 0, 0], [board.cols, 0, 0], [0, board.rows, 0], [board.cols, board.rows, 0]],
                np.float32,
            )
            * board.square_m
        )
    centre = extent.mean(axis=0)
    poses = []
    while len(poses) < n:
        ax, ay = np.radians(rng.uniform(-tilt_deg, tilt_deg, 2))
        az = np.radians(rng.uniform(-20, 20))
        r = (
            cv2.Rodrigues(np.array([ax, 0.0, 0.0]))[0]
            @ cv2.Rodrigues(np.array([0.0, ay, 0.0]))[0]
            @ cv2.Rodrigues(np.array([0.0, 0.0, az]))[0]
        )
        z = rng.uniform(*distance_m)
        aim = np.array([rng.uniform(-0.45, 0.45) * z, rng.uniform(-0.35, 0.35) * z, z])
        t = aim - r @ centre
        rvec = cv2.Rodrigues(r)[0].ravel()
        uv, _ = cv2.projectPoints(extent.astype(float), rvec, t, k_px, dist_coeffs)
        uv = uv.reshape(-1, 2)
        if np.all((uv > 10) & (uv < np.array([w - 10, h - 10]))):
            poses.append((rvec, t))
    return poses
