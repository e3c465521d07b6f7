"""Camera intrinsics and lens distortion from views of a calibration board (OpenCV).

Zhang's method as OpenCV implements it (``cv2.calibrateCameraExtended``): a planar board of
known geometry seen in several poses gives the pinhole matrix (fx, fy, cx, cy) [px], the
distortion (k1, k2, p1, p2, k3) and, per parameter, a standard deviation estimated from
the reprojection residuals. The boards:

* ``chessboard:COLSxROWS:SQUARE_M`` — COLS × ROWS *inner* corners (a 9x6 board has
  10 × 7 squares), squares SQUARE_M on a side [m];
* ``charuco:COLSxROWS:SQUARE_M:MARKER_M[:DICT]`` — COLS × ROWS *squares* with ArUco
  markers of side MARKER_M [m] (``DICT`` an OpenCV dictionary name, default
  ``DICT_5X5_100``); corners are found even when the board is partly out of view.

Pixel coordinates here are OpenCV's (x right, y down), as everywhere inside ``vision/``.

References
----------
.. [1] Z. Zhang, "A flexible new technique for camera calibration," IEEE Trans. Pattern
   Anal. Mach. Intell., vol. 22, no. 11, pp. 1330-1334, 2000, doi:10.1109/34.888718.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from heliostat.errors import InputError

#: Fewest views with a board found for a calibration (OpenCV needs 3 for 5 distortion
#: terms and a free principal point; a few more keep the fit away from degenerate poses).
MIN_VIEWS = 4


@dataclass(frozen=True, slots=True)
class Board:
    """A planar calibration board.

    Attributes
    ----------
    kind : {"chessboard", "charuco"}
    cols, rows : int
        Chessboard: inner corners per row and column. ChArUco: squares.
    square_m : float
        Side of a square. [m]
    marker_m : float
        ChArUco: side of a marker. [m] (0 for a chessboard)
    dictionary : str
        ChArUco: OpenCV ArUco dictionary name.
    """

    kind: str
    cols: int
    rows: int
    square_m: float
    marker_m: float = 0.0
    dictionary: str = "DICT_5X5_100"

    @classmethod
    def parse(cls, spec: str) -> Board:
        """A board from ``chessboard:9x6:0.025`` or ``charuco:7x5:0.04:0.03[:DICT]``."""
        parts = spec.split(":")
        kind = parts[0].lower()
        try:
            if kind == "chessboard" and len(parts) == 3:
                cols, rows = (int(v) for v in parts[1].lower().split("x"))
                board = cls(kind, cols, rows, float(parts[2]))
            elif kind == "charuco" and len(parts) in (4, 5):
                cols, rows = (int(v) for v in parts[1].lower().split("x"))
                d = parts[4] if len(parts) == 5 else "DICT_5X5_100"
                board = cls(kind, cols, rows, float(parts[2]), float(parts[3]), d)
            else:
                raise ValueError
        except ValueError:
            raise InputError(
                "--board: expected chessboard:COLSxROWS:SQUARE_M (inner corners, e.g. "
                "chessboard:9x6:0.025) or charuco:COLSxROWS:SQUARE_M:MARKER_M[:DICT], "
                f"got {spec!r}"
            ) from None
        board.check()
        return board

    def check(self) -> None:
        """Raise InputError for an impossible board."""
        least = 2 if self.kind == "chessboard" else 3
        if self.cols < least or self.rows < least:
            raise InputError(f"--board: at least {least}x{least}, got {self.cols}x{self.rows}")
        if not self.square_m > 0:
            raise InputError(f"--board: square size must be positive, got {self.square_m!r} m")
        if self.kind == "charuco":
            if not 0 < self.marker_m < self.square_m:
                raise InputError(
                    f"--board: marker size must be in (0, square size {self.square_m} m), "
                    f"got {self.marker_m!r} m"
                )
            if not hasattr(cv2, "aruco") or not hasattr(cv2.aruco, self.dictionary):
                raise InputError(f"--board: OpenCV has no ArUco dictionary {self.dictionary!r}")

    def object_points(self) -> NDArray[np.float32]:
        """Chessboard inner corners on the board plane (z = 0), row by row, in the order
        ``cv2.findChessboardCorners`` reports them. Shape (cols·rows, 3). [m]"""
        gx, gy = np.meshgrid(np.arange(self.cols), np.arange(self.rows))
        pts = np.zeros((self.cols * self.rows, 3), np.float32)
        pts[:, 0] = gx.ravel() * self.square_m
        pts[:, 1] = gy.ravel() * self.square_m
        return pts

    def charuco(self):  # noqa: ANN201 - cv2.aruco.CharucoBoard
        """The OpenCV ChArUco board."""
        d = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        return cv2.aruco.CharucoBoard((self.cols, self.rows), self.square_m, self.marker_m, d)


def grey8(image: NDArray) -> NDArray[np.uint8]:
    """A frame as 8-bit grey (colour converted, 16-bit scaled by its own maximum)."""
    img = np.asarray(image)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY if img.shape[2] == 3 else cv2.COLOR_BGRA2GRAY)
    if img.dtype != np.uint8:
        top = float(img.max()) or 1.0
        img = np.clip(img.astype(np.float64) * (255.0 / top), 0, 255).astype(np.uint8)
    return img


def find_board(image: NDArray, board: Board) -> tuple[NDArray, NDArray] | None:
    """The board's corners in one frame: (object points (N, 3) [m], image points (N, 2)
    [px, OpenCV x-y]), or None when the board is not found (fewer than 6 ChArUco
    corners count as not found)."""
    grey = grey8(image)
    if board.kind == "chessboard":
        size = (board.cols, board.rows)
        found, corners = cv2.findChessboardCornersSB(
            grey, size, flags=cv2.CALIB_CB_EXHAUSTIVE | cv2.CALIB_CB_ACCURACY
        )
        if not found:
            return None
        return board.object_points(), corners.reshape(-1, 2).astype(np.float64)
    cb = board.charuco()
    corners, ids, _, _ = cv2.aruco.CharucoDetector(cb).detectBoard(grey)
    if ids is None or len(ids) < 6:
        return None
    obj, img = cb.matchImagePoints(corners, ids)
    return obj.reshape(-1, 3), img.reshape(-1, 2).astype(np.float64)


@dataclass(frozen=True, slots=True)
class Intrinsics:
    """A calibration's result.

    Attributes
    ----------
    width_px, height_px : int
        Image size. [px]
    k_px : ndarray (3, 3)
        Pinhole matrix. [px]
    dist_coeffs : ndarray (5,)
        OpenCV k1, k2, p1, p2, k3.
    rms_px : float
        Reprojection error over all corners (root mean square). [px]
    per_view_rms_px : ndarray (n_views,)
        The same per view. [px]
    std_k_px : ndarray (4,)
        Standard deviations of fx, fy, cx, cy from the residuals. [px]
    std_dist : ndarray (5,)
        Standard deviations of the distortion coefficients.
    n_views, n_points : int
    """

    width_px: int
    height_px: int
    k_px: NDArray[np.float64]
    dist_coeffs: NDArray[np.float64]
    rms_px: float
    per_view_rms_px: NDArray[np.float64]
    std_k_px: NDArray[np.float64]
    std_dist: NDArray[np.float64]
    n_views: int
    n_points: int


def calibrate(views: list[tuple[NDArray, NDArray]], image_size_px: tuple[int, int]) -> Intrinsics:
    """Intrinsics and distortion from board views (:func:`find_board` outputs).

    Parameters
    ----------
    views : list of (object points (N, 3) [m], image points (N, 2) [px])
    image_size_px : (width, height)

    Raises
    ------
    InputError
        Fewer than :data:`MIN_VIEWS` views.
    """
    if len(views) < MIN_VIEWS:
        raise InputError(
            f"the board was found in {len(views)} image(s); at least {MIN_VIEWS} views "
            "in different poses are needed"
        )
    obj = [np.asarray(o, np.float32).reshape(-1, 1, 3) for o, _ in views]
    img = [np.asarray(i, np.float32).reshape(-1, 1, 2) for _, i in views]
    w, h = image_size_px
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-12)
    rms, k, dist, _, _, std_in, _, per_view = cv2.calibrateCameraExtended(
        obj, img, (int(w), int(h)), None, None, criteria=crit
    )
    std = np.asarray(std_in, float).ravel()
    return Intrinsics(
        int(w),
        int(h),
        np.asarray(k, float),
        np.asarray(dist, float).ravel()[:5],
        float(rms),
        np.asarray(per_view, float).ravel(),
        std[:4],
        std[4:9],
        len(views),
        sum(len(o) for o in obj),
    )
