"""Albedo texture of a target and the tower wall around it, in target-plane coordinates.

The target is a white Lambertian board with ArUco markers near its corners
(:class:`heliostat.config.ArucoMarkers`), mounted on a darker tower wall. The texture is
sampled on a regular grid of texels (row 0 at the top, +y up; column 0 at the left, +x
right as the camera sees the target). Each texel holds the exact *area average* of the
albedo over its square: board, wall and marker cells are axis-aligned rectangles, so the
coverage of a texel factorises into 1-D overlaps along x and y. This is box-filtered
(anti-aliased) by construction and needs no supersampling; sampling it bilinearly at a
texel size of half a camera pixel gives marker edges without aliasing bias.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from heliostat.config import Target

#: Albedo of the white board, the printed black, and the tower wall (concrete). [1]
BOARD_ALBEDO = 0.85
INK_ALBEDO = 0.05
WALL_ALBEDO = 0.30


@dataclass(frozen=True, slots=True)
class Texture:
    """Albedo on a texel grid in the target plane.

    Attributes
    ----------
    albedo : ndarray (rows, cols) float32
        Area-averaged albedo per texel. [1]
    x0_m, y0_m : float
        Plane coordinates of the texture's left and top edges. [m]
    texel_m : float
        Texel side. [m]
    outside_albedo : float
        Albedo beyond the texture (tower wall). [1]
    """

    albedo: NDArray[np.float32]
    x0_m: float
    y0_m: float
    texel_m: float
    outside_albedo: float

    def to_texel(self, xy_m: NDArray) -> tuple[NDArray, NDArray]:
        """Plane points (..., 2) [m] to texel coordinates (col, row) for ``cv2.remap``,
        whose integer coordinates are texel centres."""
        col = (xy_m[..., 0] - self.x0_m) / self.texel_m - 0.5
        row = (self.y0_m - xy_m[..., 1]) / self.texel_m - 0.5
        return col, row


def _overlap(edges_texel: NDArray, lo: NDArray, hi: NDArray) -> NDArray[np.float64]:
    """Fraction of each texel interval [e_k, e_k+1] covered by each interval [lo_j, hi_j].
    Shape (texels, intervals)."""
    a = edges_texel[:-1, None]
    b = edges_texel[1:, None]
    ov = np.clip(np.minimum(b, hi[None, :]) - np.maximum(a, lo[None, :]), 0.0, None)
    return ov / (b - a)


def marker_cells(dictionary: str, marker_id: int) -> NDArray[np.bool_]:
    """Black cells of an ArUco marker including its one-cell black border (True = black),
    row 0 at the top as printed. Uses ``cv2.aruco.generateImageMarker``."""
    import cv2

    try:
        dict_id = getattr(cv2.aruco, dictionary)
    except AttributeError:
        raise ValueError(f"unknown ArUco dictionary {dictionary!r} (e.g. DICT_4X4_50)") from None
    d = cv2.aruco.getPredefinedDictionary(dict_id)
    n = d.markerSize + 2
    img = cv2.aruco.generateImageMarker(d, int(marker_id), n, borderBits=1)
    return img < 128


def build_texture(
    target: Target,
    texel_m: float,
    *,
    margin_m: float | None = None,
    board_albedo: float = BOARD_ALBEDO,
    ink_albedo: float = INK_ALBEDO,
    wall_albedo: float = WALL_ALBEDO,
    albedo_variation: float = 0.02,
) -> Texture:
    """Albedo texture of ``target`` (board + markers) and a margin of wall around it.

    Parameters
    ----------
    target : heliostat.config.Target
    texel_m : float
        Texel side; about half the camera pixel footprint is a good choice. [m]
    margin_m : float, optional
        Wall shown around the board inside the texture (default 10 % of the larger side).
    albedo_variation : float
        Relative amplitude of smooth, low-frequency albedo non-uniformity (soiling,
        paint), seeded from the target id so it is the same in every frame. [1]
    """
    if not (texel_m > 0 and math.isfinite(texel_m)):
        raise ValueError(f"texel_m must be positive, got {texel_m!r}")
    w, h = target.width_m, target.height_m
    margin = 0.1 * max(w, h) if margin_m is None else float(margin_m)
    cols = int(math.ceil((w + 2 * margin) / texel_m))
    rows = int(math.ceil((h + 2 * margin) / texel_m))
    if cols * rows > 40_000_000:
        raise ValueError(f"texture of {cols}x{rows} texels is too large; raise texel_m")
    x0 = -cols * texel_m / 2
    y0 = rows * texel_m / 2
    ex = x0 + texel_m * np.arange(cols + 1)  # texel edges along x (left to right)
    ey = y0 - texel_m * np.arange(rows + 1)  # along y (top to bottom, decreasing)
    ey_up = ey[::-1]  # increasing, for _overlap; flip rows back afterwards

    def cover(xlo, xhi, ylo, yhi) -> tuple[NDArray, NDArray]:
        ox = _overlap(ex, np.atleast_1d(xlo), np.atleast_1d(xhi))
        oy = _overlap(ey_up, np.atleast_1d(ylo), np.atleast_1d(yhi))[::-1]
        return oy, ox

    oy, ox = cover(-w / 2, w / 2, -h / 2, h / 2)
    board = oy @ ox.T  # fraction of each texel on the board
    alb = wall_albedo + (board_albedo - wall_albedo) * board
    if target.markers is not None:
        mk = target.markers
        for centre, mid in zip(mk.centres_xy_m(w, h), mk.ids, strict=True):
            cells = marker_cells(mk.dictionary, mid).astype(float)
            n = cells.shape[0]
            cs = mk.size_m / n
            left = centre[0] - mk.size_m / 2 + cs * np.arange(n)
            top = centre[1] + mk.size_m / 2 - cs * np.arange(n)
            oy, ox = cover(left, left + cs, top - cs, top)
            # cells row 0 is the top row: oy columns follow 'top' order (top first).
            alb += (ink_albedo - board_albedo) * (oy @ cells @ ox.T)
    if albedo_variation > 0:
        import cv2

        g = np.random.default_rng(zlib.crc32(target.id.encode()))
        coarse = g.uniform(-1.0, 1.0, (6, 6)).astype(np.float32)
        smooth = cv2.resize(coarse, (cols, rows), interpolation=cv2.INTER_CUBIC)
        alb = alb * (1.0 + albedo_variation * smooth * board)  # on the board only
    return Texture(alb.astype(np.float32), float(x0), float(y0), float(texel_m), wall_albedo)
