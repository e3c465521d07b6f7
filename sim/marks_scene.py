"""A camera frame of Jülich-style targets with painted corner marks, with known truth.

Two targets stacked on a tower wall, as on the Jülich solar tower: the upper one has L
marks at its upper corners, the lower one at its lower corners, and the side T marks
(⊢, ⊣) between them belong to both. The board carries panel seams and a smooth albedo
non-uniformity; optionally its texture is taken from a real rectified empty-target image
(UTIS ``emptyTargetImages``, with its own marks painted over). Around the boards: a wall
with dark vertical rails close to the board edges and louvres above and below. A bright,
saturating focal spot, a soft shadow band, a Gaussian blur, shot and read noise and 8-bit
quantisation complete the frame.

The frame is rendered through the exact homography: 2x2 point samples per pixel for the
wall, board and spot, and for the marks each pixel's ink coverage from 8x8 point samples
(the marks are rectangles evaluated analytically, so their edges are exact to 1/64 of a
pixel's area). The true corner points follow the definition of
:mod:`heliostat.vision.marks` (outer corner of an L; outer edge of a T's long bar crossed
with its short bar's centre line).

This scene is drawn by us: it tests the geometry of the method (perspective, blur,
noise, clutter near the marks), not how real marks look (their 3-D relief, soiling, JPEG
artefacts); the real frames in ``../shared/real/paint/raw`` do that.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

#: Jülich solar-tower targets: width, height of each (between corner points). [m]
TARGET_W_M = 8.6
TARGET_H_M = 7.2
#: Mark bars and arms. [m]
BAR_M = 0.13
ARM_M = 0.75
T_HALF_M = 0.37
#: Board beyond the marks' outer edges (white border). [m]
BOARD_MARGIN_M = 0.25
#: Albedo of the marks' paint. [1]
INK_ALBEDO = 0.08


@dataclass(frozen=True, slots=True)
class MarksScene:
    """A rendered frame and its truth.

    Attributes
    ----------
    frame : ndarray (H, W) uint8
    corners_px : dict
        ``"upper"`` / ``"lower"`` -> true corners UL, UR, LR, LL, shape (4, 2). [px]
    h_px_from_plane : ndarray (3, 3)
        Homography from tower-plane metres (x right, y up, origin at the shared side
        marks' midpoint between the two targets) to pixels.
    spot_xy_m : ndarray (2,) or None
        Centre of the (round Gaussian) focal spot in tower-plane metres. [m]
    """

    frame: NDArray[np.uint8]
    corners_px: dict[str, NDArray[np.float64]]
    h_px_from_plane: NDArray[np.float64]
    spot_xy_m: NDArray[np.float64] | None = None


def _rects() -> NDArray[np.float64]:
    """Ink rectangles (x0, x1, y0, y1) in tower-plane metres."""
    w2, h, b, a, th = TARGET_W_M / 2, TARGET_H_M, BAR_M, ARM_M, T_HALF_M
    r = []

    def span(p, q):
        return min(p, q), max(p, q)

    for sx in (-1, 1):
        # L marks: upper target's top corners (y = +h), lower target's bottom (y = -h).
        for y0, sy in ((h, -1), (-h, 1)):
            xo = sx * w2
            r.append((*span(xo, xo - sx * a), *span(y0, y0 + sy * b)))
            r.append((*span(xo, xo - sx * b), *span(y0, y0 + sy * a)))
        # Side T marks at y = 0: long bar along the side, short bar pointing inward.
        xo = sx * w2
        r.append((min(xo, xo - sx * b), max(xo, xo - sx * b), -th, th))
        r.append((min(xo, xo - sx * a), max(xo, xo - sx * a), -b / 2, b / 2))
    # Middle T marks on the top and bottom edges (not used for registration).
    for y0, sy in ((h, -1), (-h, 1)):
        r.append((-a / 2, a / 2, min(y0, y0 + sy * b), max(y0, y0 + sy * b)))
        r.append((-b / 2, b / 2, min(y0, y0 + sy * a), max(y0, y0 + sy * a)))
    return np.array(r)


def true_corners_plane() -> dict[str, NDArray[np.float64]]:
    """Corner points (UL, UR, LR, LL) of both targets in tower-plane metres."""
    w2, h = TARGET_W_M / 2, TARGET_H_M
    return {
        "upper": np.array([[-w2, h], [w2, h], [w2, 0.0], [-w2, 0.0]]),
        "lower": np.array([[-w2, 0.0], [w2, 0.0], [w2, -h], [-w2, -h]]),
    }


def random_view(
    rng: np.random.Generator, size_px: tuple[int, int] = (1000, 1600), fill: float = 0.7
) -> NDArray[np.float64]:
    """A random homography plane -> pixels: the two targets fill about ``fill`` of the
    frame's width, seen from below and a little to the side (keystone), rolled a little."""
    w_px, h_px = size_px
    scale = fill * w_px / TARGET_W_M
    # Plane corners of the tower region and their perspective images.
    src = np.array(
        [
            [-TARGET_W_M / 2, TARGET_H_M],
            [TARGET_W_M / 2, TARGET_H_M],
            [TARGET_W_M / 2, -TARGET_H_M],
            [-TARGET_W_M / 2, -TARGET_H_M],
        ]
    )
    cx, cy = w_px / 2 + rng.uniform(-0.03, 0.03) * w_px, h_px / 2 + rng.uniform(-0.03, 0.03) * h_px
    dst = np.c_[cx + src[:, 0] * scale, cy - src[:, 1] * scale]
    # Keystone: the top narrower (camera below), a side nearer (yaw), and a roll.
    top = rng.uniform(0.03, 0.10)
    side = rng.uniform(-0.05, 0.05)
    dst[:2, 0] = cx + (dst[:2, 0] - cx) * (1 - top)
    dst[[1, 2], 1] = cy + (dst[[1, 2], 1] - cy) * (1 + side)
    dst[[0, 3], 1] = cy + (dst[[0, 3], 1] - cy) * (1 - side)
    roll = rng.uniform(-0.03, 0.03)
    c, s = np.cos(roll), np.sin(roll)
    dst = (dst - [cx, cy]) @ np.array([[c, s], [-s, c]]) + [cx, cy]
    dst += rng.normal(0, 0.004 * w_px, dst.shape)
    return cv2.getPerspectiveTransform(src.astype(np.float32), dst.astype(np.float32)).astype(
        np.float64
    )


def _board_texture(rng: np.random.Generator, empty: NDArray | None) -> NDArray[np.float32]:
    """Board albedo over both targets (rows from the top, 1 texel = 2 cm), 0..1."""
    tex_m = 0.02
    nx, ny = int(TARGET_W_M / tex_m), int(2 * TARGET_H_M / tex_m)
    if empty is not None:
        e = empty.astype(np.float32)
        e = e / np.percentile(e, 90)
        # Paint over the image's own marks (near its borders) with the local median.
        m = 14
        med = float(np.median(e[m:-m, m:-m]))
        e[:m, :] = med
        e[-m:, :] = med
        e[:, :m] = med
        e[:, -m:] = med
        half = cv2.resize(e, (nx, ny // 2), interpolation=cv2.INTER_CUBIC)
        tex = np.vstack([half, half[::-1]])
    else:
        coarse = rng.uniform(-1, 1, (8, 6)).astype(np.float32)
        tex = 1 + 0.04 * cv2.resize(coarse, (nx, ny), interpolation=cv2.INTER_CUBIC)
        # Panel seams every 1.08 m x 1.2 m.
        for x in np.arange(0, TARGET_W_M, 1.075):
            tex[:, int(x / tex_m)] *= 0.85
        for y in np.arange(0, 2 * TARGET_H_M, 1.2):
            tex[int(y / tex_m), :] *= 0.85
    return np.clip(tex, 0, 1.5).astype(np.float32)


def render(
    rng: np.random.Generator,
    h_px_from_plane: NDArray,
    size_px: tuple[int, int] = (1000, 1600),
    *,
    empty_target: NDArray | None = None,
    blur_px: float = 0.8,
    noise_dn: float = 2.0,
    spot: bool = True,
    spot_peak: float = 1.4,
) -> MarksScene:
    """Render the two-target scene through ``h_px_from_plane`` (see :func:`random_view`).

    ``spot_peak`` is the spot's peak irradiance relative to full sun on white (1.4
    saturates the 8-bit frame's core; below ~0.3 nothing saturates)."""
    w_px, h_px = size_px
    h_inv = np.linalg.inv(h_px_from_plane)
    tex = _board_texture(rng, empty_target)
    w2, hh = TARGET_W_M / 2, TARGET_H_M
    rail_x = w2 + BOARD_MARGIN_M + 0.2  # dark rails outside the board edges
    sun = rng.uniform(0.75, 1.0)
    shadow_x = rng.uniform(-w2, w2)
    spot_xy = (rng.uniform(-w2 / 2, w2 / 2), rng.uniform(-hh / 1.5, hh / 1.5))
    spot_sig = rng.uniform(0.6, 1.2)

    def plane(u, v):
        wq = h_inv[2, 0] * u + h_inv[2, 1] * v + h_inv[2, 2]
        x = (h_inv[0, 0] * u + h_inv[0, 1] * v + h_inv[0, 2]) / wq
        y = (h_inv[1, 0] * u + h_inv[1, 1] * v + h_inv[1, 2]) / wq
        return x, y

    def light(x, y):
        return sun * (1 - 0.35 * (np.abs(x - shadow_x) < 0.6))

    # Everything but the marks: 2x2 samples per pixel (no edge here is measured).
    uu, vv = np.meshgrid(np.arange(w_px, dtype=np.float64), np.arange(h_px, dtype=np.float64))
    acc = np.zeros((h_px, w_px), np.float64)
    for dx in (-0.25, 0.25):
        for dy in (-0.25, 0.25):
            x, y = plane(uu + dx, vv + dy)
            on_board = (np.abs(x) <= w2 + BOARD_MARGIN_M) & (np.abs(y) <= hh + BOARD_MARGIN_M)
            # Wall: grey, with dark rails beside the board and louvres above/below.
            alb = np.full(x.shape, 0.55)
            alb[np.abs(np.abs(x) - rail_x) < 0.05] = 0.2
            alb[(np.abs(y) > hh + BOARD_MARGIN_M + 0.1) & (np.mod(y, 0.3) < 0.08)] = 0.25
            col = ((x + w2) / TARGET_W_M * (tex.shape[1] - 1)).astype(np.float32)
            row = ((hh - y) / (2 * hh) * (tex.shape[0] - 1)).astype(np.float32)
            bt = cv2.remap(tex, col, row, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            alb = np.where(on_board, 0.85 * bt, alb)
            img = alb * light(x, y)
            if spot:
                r2 = ((x - spot_xy[0]) ** 2 + (y - spot_xy[1]) ** 2) / spot_sig**2
                img = img + on_board * spot_peak * np.exp(-0.5 * r2)
            acc += 0.25 * img
    # Marks: the ink coverage of each pixel from 8x8 point samples, over each mark's
    # pixel bounding box only; the ink reflects INK_ALBEDO of the local light.
    ss = 8
    off = (np.arange(ss) + 0.5) / ss - 0.5
    for x0, x1, y0, y1 in _rects():
        box = cv2.perspectiveTransform(
            np.array([[[x0, y0], [x1, y0], [x1, y1], [x0, y1]]], np.float64), h_px_from_plane
        )[0]
        u0, v0 = np.floor(box.min(axis=0)).astype(int) - 1
        u1, v1 = np.ceil(box.max(axis=0)).astype(int) + 2
        u0, v0, u1, v1 = max(u0, 0), max(v0, 0), min(u1, w_px), min(v1, h_px)
        if u1 <= u0 or v1 <= v0:
            continue
        bu, bv = np.meshgrid(np.arange(u0, u1, dtype=float), np.arange(v0, v1, dtype=float))
        cov = np.zeros(bu.shape)
        for dx in off:
            for dy in off:
                x, y = plane(bu + dx, bv + dy)
                cov += (x >= x0) & (x < x1) & (y >= y0) & (y < y1)
        cov /= ss * ss
        x, y = plane(bu, bv)
        sub = acc[v0:v1, u0:u1]
        acc[v0:v1, u0:u1] = sub * (1 - cov) + cov * INK_ALBEDO * light(x, y)
    if blur_px > 0:
        acc = cv2.GaussianBlur(acc, (0, 0), blur_px)
    dn = 230.0 * acc
    dn = rng.poisson(np.clip(dn, 0, None) * 4.0) / 4.0 + rng.normal(0, noise_dn, dn.shape)
    frame = np.clip(np.round(dn), 0, 255).astype(np.uint8)
    corners = {
        k: cv2.perspectiveTransform(c[None].astype(np.float64), h_px_from_plane)[0]
        for k, c in true_corners_plane().items()
    }
    return MarksScene(
        frame,
        corners,
        np.asarray(h_px_from_plane, dtype=np.float64),
        np.array(spot_xy) if spot else None,
    )
