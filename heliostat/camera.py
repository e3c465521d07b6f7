"""A fixed field camera: intrinsics, OpenCV lens distortion and its pose in the field.

A plain frozen record; :mod:`heliostat.config` reads it from ``camera.toml``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from heliostat.frames import normalize

__all__ = ["CameraConfig", "look_at"]


@dataclass(frozen=True, slots=True)
class CameraConfig:
    """A pinhole camera with OpenCV lens distortion, fixed on the field looking at a target.

    Attributes
    ----------
    width_px, height_px : int
        Sensor size. [px]
    k_px : ndarray (3, 3)
        Intrinsic matrix (fx, fy, cx, cy in pixels).
    dist_coeffs : ndarray (5,)
        OpenCV distortion (k1, k2, p1, p2, k3).
    bit_depth : int
        ADC bits (8, 10, 12, 14 or 16).
    position_enu_m : ndarray (3,) or None
        Camera centre in site ENU. [m]
    r_enu_cam : ndarray (3, 3) or None
        Rotation taking ENU vectors into the OpenCV camera frame (x right, y down, z ahead).
    target : str
        Id of the target the camera looks at.
    corners_px : ndarray (4, 2) or None
        Surveyed target-corner pixels UL, UR, LR, LL (registration without markers).
    black_level_dn : float
        Sensor offset: the raw value of a pixel that receives no light. [DN]
    """

    width_px: int
    height_px: int
    k_px: NDArray[np.float64]
    dist_coeffs: NDArray[np.float64]
    bit_depth: int = 12
    position_enu_m: NDArray[np.float64] | None = None
    r_enu_cam: NDArray[np.float64] | None = None
    target: str = ""
    corners_px: NDArray[np.float64] | None = None
    black_level_dn: float = 0.0

    @property
    def rvec_tvec(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """OpenCV (rvec, tvec) mapping ENU points into the camera frame."""
        import cv2

        if self.r_enu_cam is None or self.position_enu_m is None:
            raise ValueError("camera pose is not set (position_enu_m and look_at_enu_m)")
        rvec, _ = cv2.Rodrigues(self.r_enu_cam)
        return rvec.ravel(), -self.r_enu_cam @ self.position_enu_m

    def project(self, p_enu_m: ArrayLike) -> NDArray[np.float64]:
        """Project ENU points to distorted pixel coordinates (u, v). Shape (N, 2) [px]."""
        import cv2

        pts = np.atleast_2d(np.asarray(p_enu_m, dtype=float)).reshape(-1, 1, 3)
        rvec, tvec = self.rvec_tvec
        uv, _ = cv2.projectPoints(pts, rvec, tvec, self.k_px, self.dist_coeffs)
        return uv.reshape(-1, 2)


def look_at(
    position_enu_m: ArrayLike, look_at_enu_m: ArrayLike, roll_rad: float = 0.0
) -> NDArray[np.float64]:
    """Rotation ENU → OpenCV camera frame for a camera at ``position`` aimed at ``look_at``.

    The image's x axis stays horizontal (then rolled by ``roll_rad``), y points down.
    """
    z = normalize(np.asarray(look_at_enu_m, float) - np.asarray(position_enu_m, float))
    x = np.cross(z, [0.0, 0.0, 1.0])
    if np.linalg.norm(x) < 1e-9:
        raise ValueError("camera looks straight up or down: roll is undefined")
    x = normalize(x)
    y = np.cross(z, x)
    r = np.stack([x, y, z])
    c, s = math.cos(roll_rad), math.sin(roll_rad)
    return np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]]) @ r
