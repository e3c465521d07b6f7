"""World frames and vector helpers.

The world frame is right-handed ENU (x = east, y = north, z = up) in metres, with its
origin at the plant reference point (WGS84 latitude, longitude, ellipsoidal height).
Azimuths at the edges are measured clockwise from north.

References
----------
.. [1] National Imagery and Mapping Agency, "Department of Defense World Geodetic
   System 1984," NIMA TR8350.2, 3rd ed., 2000.
.. [2] J. Zhu, "Conversion of Earth-centered Earth-fixed coordinates to geodetic
   coordinates," IEEE Trans. Aerosp. Electron. Syst. 30(3), 957-961, 1994.
   doi:10.1109/7.303772
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

# WGS84 defining constants [1].
WGS84_A_M = 6378137.0
WGS84_F = 1.0 / 298.257223563
WGS84_B_M = WGS84_A_M * (1.0 - WGS84_F)
WGS84_E2 = WGS84_F * (2.0 - WGS84_F)


def _as_float_array(x: ArrayLike, name: str) -> NDArray[np.float64]:
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {x!r}")
    return arr


def geodetic_to_ecef(lat_deg: ArrayLike, lon_deg: ArrayLike, h_m: ArrayLike) -> NDArray[np.float64]:
    """WGS84 geodetic coordinates to Earth-centred Earth-fixed.

    Parameters
    ----------
    lat_deg, lon_deg : array_like
        Geodetic latitude and longitude. [deg]
    h_m : array_like
        Height above the ellipsoid. [m]

    Returns
    -------
    ndarray of shape (..., 3)
        ECEF x, y, z. [m]
    """
    lat = np.radians(_as_float_array(lat_deg, "lat_deg"))
    lon = np.radians(_as_float_array(lon_deg, "lon_deg"))
    h = _as_float_array(h_m, "h_m")
    if np.any(np.abs(lat) > np.pi / 2):
        raise ValueError(f"lat_deg must lie in [-90, 90], got {lat_deg!r}")
    sin_lat = np.sin(lat)
    n = WGS84_A_M / np.sqrt(1.0 - WGS84_E2 * sin_lat**2)  # prime-vertical radius [1]
    x = (n + h) * np.cos(lat) * np.cos(lon)
    y = (n + h) * np.cos(lat) * np.sin(lon)
    z = (n * (1.0 - WGS84_E2) + h) * sin_lat
    return np.stack(np.broadcast_arrays(x, y, z), axis=-1)


def ecef_to_geodetic(xyz_m: ArrayLike) -> tuple[NDArray, NDArray, NDArray]:
    """ECEF to WGS84 geodetic coordinates (closed form of Zhu [2], exact to < 1 mm).

    Parameters
    ----------
    xyz_m : array_like of shape (..., 3)
        ECEF coordinates. [m]

    Returns
    -------
    lat_deg, lon_deg, h_m : ndarray
        Geodetic latitude, longitude [deg] and ellipsoidal height [m].
    """
    p_xyz = _as_float_array(xyz_m, "xyz_m")
    if p_xyz.shape[-1] != 3:
        raise ValueError(f"xyz_m must have shape (..., 3), got {p_xyz.shape}")
    x, y, z = p_xyz[..., 0], p_xyz[..., 1], p_xyz[..., 2]
    a, b, e2 = WGS84_A_M, WGS84_B_M, WGS84_E2
    ep2 = (a**2 - b**2) / b**2
    r = np.hypot(x, y)
    # Zhu (1994), Eqs. (B-1)..(B-13).
    f = 54.0 * b**2 * z**2
    g = r**2 + (1.0 - e2) * z**2 - e2 * (a**2 - b**2)
    c = e2**2 * f * r**2 / g**3
    s = np.cbrt(1.0 + c + np.sqrt(c**2 + 2.0 * c))
    p = f / (3.0 * (s + 1.0 / s + 1.0) ** 2 * g**2)
    q = np.sqrt(1.0 + 2.0 * e2**2 * p)
    r0 = -(p * e2 * r) / (1.0 + q) + np.sqrt(
        0.5 * a**2 * (1.0 + 1.0 / q) - p * (1.0 - e2) * z**2 / (q * (1.0 + q)) - 0.5 * p * r**2
    )
    u = np.sqrt((r - e2 * r0) ** 2 + z**2)
    v = np.sqrt((r - e2 * r0) ** 2 + (1.0 - e2) * z**2)
    z0 = b**2 * z / (a * v)
    h = u * (1.0 - b**2 / (a * v))
    lat = np.arctan2(z + ep2 * z0, r)
    lon = np.arctan2(y, x)
    return np.degrees(lat), np.degrees(lon), h


def _r_ecef_enu(lat_deg: float, lon_deg: float) -> NDArray[np.float64]:
    """Rotation whose rows are the E, N, U unit vectors expressed in ECEF."""
    lat, lon = np.radians(lat_deg), np.radians(lon_deg)
    sl, cl = np.sin(lat), np.cos(lat)
    so, co = np.sin(lon), np.cos(lon)
    return np.array(
        [
            [-so, co, 0.0],
            [-sl * co, -sl * so, cl],
            [cl * co, cl * so, sl],
        ]
    )


@dataclass(frozen=True, slots=True)
class Site:
    """Plant reference point: origin of the ENU frame.

    Attributes
    ----------
    latitude_deg, longitude_deg : float
        WGS84 geodetic coordinates. [deg]
    altitude_m : float
        Height above the WGS84 ellipsoid. [m]
    name : str
        Human-readable name.
    """

    latitude_deg: float
    longitude_deg: float
    altitude_m: float
    name: str = ""

    def __post_init__(self) -> None:
        if not -90.0 <= self.latitude_deg <= 90.0:
            raise ValueError(f"latitude_deg must lie in [-90, 90], got {self.latitude_deg!r}")
        if not -180.0 <= self.longitude_deg <= 360.0:
            raise ValueError(f"longitude_deg must lie in [-180, 360], got {self.longitude_deg!r}")
        if not np.isfinite(self.altitude_m):
            raise ValueError(f"altitude_m must be finite, got {self.altitude_m!r}")

    def wgs84_to_enu(
        self, lat_deg: ArrayLike, lon_deg: ArrayLike, h_m: ArrayLike
    ) -> NDArray[np.float64]:
        """WGS84 geodetic coordinates to ENU about this site. Returns shape (..., 3) [m]."""
        p_ecef = geodetic_to_ecef(lat_deg, lon_deg, h_m)
        p0 = geodetic_to_ecef(self.latitude_deg, self.longitude_deg, self.altitude_m)
        return (p_ecef - p0) @ _r_ecef_enu(self.latitude_deg, self.longitude_deg).T

    def enu_to_wgs84(self, p_enu_m: ArrayLike) -> tuple[NDArray, NDArray, NDArray]:
        """ENU about this site to WGS84 (lat_deg, lon_deg, h_m)."""
        p = _as_float_array(p_enu_m, "p_enu_m")
        if p.shape[-1] != 3:
            raise ValueError(f"p_enu_m must have shape (..., 3), got {p.shape}")
        p0 = geodetic_to_ecef(self.latitude_deg, self.longitude_deg, self.altitude_m)
        p_ecef = p @ _r_ecef_enu(self.latitude_deg, self.longitude_deg) + p0
        return ecef_to_geodetic(p_ecef)


def azel_to_enu(azimuth_rad: ArrayLike, elevation_rad: ArrayLike) -> NDArray[np.float64]:
    """Unit vector from azimuth (clockwise from north) and elevation.

    Returns
    -------
    ndarray of shape (..., 3)
        ENU unit vector.

    Examples
    --------
    >>> np.round(azel_to_enu(np.pi / 2, 0.0), 12)
    array([1., 0., 0.])
    """
    az = np.asarray(azimuth_rad, dtype=float)
    el = np.asarray(elevation_rad, dtype=float)
    ce = np.cos(el)
    return np.stack(np.broadcast_arrays(np.sin(az) * ce, np.cos(az) * ce, np.sin(el)), axis=-1)


def enu_to_azel(u_enu: ArrayLike) -> tuple[NDArray, NDArray]:
    """Azimuth (clockwise from north, in [0, 2π)) and elevation of ENU vectors. [rad]"""
    v = np.asarray(u_enu, dtype=float)
    if v.shape[-1] != 3:
        raise ValueError(f"u_enu must have shape (..., 3), got {v.shape}")
    az = np.mod(np.arctan2(v[..., 0], v[..., 1]), 2.0 * np.pi)
    el = np.arctan2(v[..., 2], np.hypot(v[..., 0], v[..., 1]))
    return az, el


def normalize(v: ArrayLike) -> NDArray[np.float64]:
    """Normalise vectors along the last axis; raises on zero-length or non-finite input."""
    a = np.asarray(v, dtype=float)
    n = np.linalg.norm(a, axis=-1, keepdims=True)
    if not np.all(np.isfinite(n)) or np.any(n == 0.0):
        raise ValueError("cannot normalise a zero-length or non-finite vector")
    return a / n


def reflect(u_normal: ArrayLike, u_sun: ArrayLike) -> NDArray[np.float64]:
    """Reflected direction r = 2(n·s)n − s for unit normal n and unit sun vector s.

    Both inputs point away from the mirror (s toward the sun); so does the result.
    """
    n = np.asarray(u_normal, dtype=float)
    s = np.asarray(u_sun, dtype=float)
    return 2.0 * np.sum(n * s, axis=-1, keepdims=True) * n - s


def bisector_normal(u_sun: ArrayLike, u_reflected: ArrayLike) -> NDArray[np.float64]:
    """Mirror normal that reflects the sun vector into the given direction."""
    return normalize(np.asarray(u_sun, dtype=float) + np.asarray(u_reflected, dtype=float))


def intersect_plane(
    origin_m: ArrayLike, direction: ArrayLike, plane_point_m: ArrayLike, plane_normal: ArrayLike
) -> NDArray[np.float64]:
    """Intersection of rays with a plane. Returns (..., 3) [m]; NaN where parallel or behind."""
    o = np.asarray(origin_m, dtype=float)
    d = np.asarray(direction, dtype=float)
    p0 = np.asarray(plane_point_m, dtype=float)
    nrm = np.asarray(plane_normal, dtype=float)
    denom = np.sum(d * nrm, axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.sum((p0 - o) * nrm, axis=-1, keepdims=True) / denom
    t = np.where((np.abs(denom) < 1e-12) | (t <= 0.0), np.nan, t)
    return o + t * d


def angle_between(u: ArrayLike, v: ArrayLike) -> NDArray[np.float64]:
    """Angle between vectors, accurate for tiny angles (atan2 of |u×v| and u·v). [rad]"""
    a = np.asarray(u, dtype=float)
    b = np.asarray(v, dtype=float)
    return np.arctan2(np.linalg.norm(np.cross(a, b), axis=-1), np.sum(a * b, axis=-1))


def _rot(axis: int, angle_rad: ArrayLike) -> NDArray[np.float64]:
    """Right-handed rotation about x (0), y (1) or z (2); shape ``angle.shape + (3, 3)``.

    Built by filling a zero array (no per-element stacking): this is the hot loop of the
    calibration's Jacobian.
    """
    a = np.asarray(angle_rad, dtype=float)
    c, s = np.cos(a), np.sin(a)
    m = np.zeros(a.shape + (3, 3))
    i, j = ((1, 2), (2, 0), (0, 1))[axis]
    m[..., axis, axis] = 1.0
    m[..., i, i] = c
    m[..., j, j] = c
    m[..., i, j] = -s
    m[..., j, i] = s
    return m


def rot_x(angle_rad: ArrayLike) -> NDArray[np.float64]:
    """Right-handed rotation about the x (east) axis; shape (..., 3, 3)."""
    return _rot(0, angle_rad)


def rot_y(angle_rad: ArrayLike) -> NDArray[np.float64]:
    """Right-handed rotation about the y (north) axis; shape (..., 3, 3)."""
    return _rot(1, angle_rad)


def rot_z(angle_rad: ArrayLike) -> NDArray[np.float64]:
    """Right-handed rotation about the z (up) axis; shape (..., 3, 3)."""
    return _rot(2, angle_rad)


def target_axes(u_normal_enu: ArrayLike) -> tuple[NDArray, NDArray]:
    """In-plane unit axes (x right, y up as a camera facing the target sees it).

    The camera looks against the target normal, so x = up × n and y = n × x.
    Raises for a horizontal target (normal parallel to up), which needs explicit axes.
    """
    n = normalize(u_normal_enu)
    x = np.cross(np.array([0.0, 0.0, 1.0]), n)
    if np.linalg.norm(x) < 1e-9:
        raise ValueError("target normal is vertical: give the target's x axis explicitly")
    x = normalize(x)
    return x, np.cross(n, x)
