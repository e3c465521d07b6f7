"""The plant as configured: site, targets (with their registration markers), heliostats
(kinematics, mirror, controller address), RS-485 buses and safety limits.

Plain frozen records; :mod:`heliostat.config` reads them from ``field.toml`` and writes
them back. Frame: ENU metres about the site's reference point (:mod:`heliostat.frames`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from heliostat.errors import InputError
from heliostat.frames import Site, normalize, target_axes
from heliostat.kinematics import HeliostatKinematics

__all__ = [
    "MARK_KINDS",
    "ArucoMarkers",
    "Bus",
    "FieldConfig",
    "Heliostat",
    "MarkLayout",
    "Mirror",
    "Safety",
    "Target",
]

#: Kinds of painted corner marks: an L (two arms) or a T (a bar along the edge and a
#: short bar into the target).
MARK_KINDS = ("L", "T")


@dataclass(frozen=True, slots=True)
class ArucoMarkers:
    """ArUco registration markers printed on a target, one near each corner.

    Attributes
    ----------
    dictionary : str
        OpenCV predefined dictionary name, e.g. ``"DICT_4X4_50"``.
    ids : tuple of 4 int
        Marker ids at the upper-left, upper-right, lower-right, lower-left corners.
    size_m : float
        Marker side length (black border included). [m]
    inset_m : float
        Distance from each target edge to the marker's outer edge. [m]
    """

    dictionary: str
    ids: tuple[int, int, int, int]
    size_m: float
    inset_m: float

    def centres_xy_m(self, width_m: float, height_m: float) -> NDArray[np.float64]:
        """Marker centres in target-plane metres, order UL, UR, LR, LL. Shape (4, 2)."""
        dx = width_m / 2 - self.inset_m - self.size_m / 2
        dy = height_m / 2 - self.inset_m - self.size_m / 2
        return np.array([[-dx, dy], [dx, dy], [dx, -dy], [-dx, -dy]])

    def corners_xy_m(self, width_m: float, height_m: float) -> NDArray[np.float64]:
        """Each marker's four corners (ArUco order: its own UL, UR, LR, LL as printed)
        in target-plane metres. Shape (4 markers, 4 corners, 2)."""
        h = self.size_m / 2
        offs = np.array([[-h, h], [h, h], [h, -h], [-h, -h]])
        return self.centres_xy_m(width_m, height_m)[:, None, :] + offs[None, :, :]


@dataclass(frozen=True, slots=True)
class MarkLayout:
    """Shape of a target's corner marks (the defaults are the Jülich towers').

    Attributes
    ----------
    kinds : tuple of str, or None
        Mark kind at UL, UR, LR, LL, each ``"L"`` or ``"T"``. The kind of each mark is
        always found from the image (the template that matches better); when given,
        a mark found to be of the other kind is an error (an L's corner and a T's differ
        by half a bar width, so a wrong kind would silently shift the corner).
    bar_width_m : float
        Width of the painted bars. [m] (Jülich: about 0.12-0.14 on the solar tower's
        targets, 0.10 on the multi-focus tower's.)
    arm_length_m : float
        Length of an L's arms and of a T's short bar, from the corner point. [m]
        (Jülich: about 0.7.)
    t_half_length_m : float
        Half length of a T's long bar, from the corner point. [m] (Jülich: about 0.35.)
    """

    kinds: tuple[str, str, str, str] | None = None
    bar_width_m: float = 0.12
    arm_length_m: float = 0.7
    t_half_length_m: float = 0.35

    def __post_init__(self) -> None:
        if self.kinds is not None:
            kinds = tuple(self.kinds)
            if len(kinds) != 4 or any(k not in MARK_KINDS for k in kinds):
                raise InputError(
                    f"mark kinds: expected four of {MARK_KINDS} (UL, UR, LR, LL), got {kinds!r}"
                )
        for name in ("bar_width_m", "arm_length_m", "t_half_length_m"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise InputError(f"mark layout {name} must be a positive number, got {v!r}")
        if self.arm_length_m < 2 * self.bar_width_m:
            raise InputError(
                f"mark layout: arm_length_m ({self.arm_length_m}) must be at least twice "
                f"bar_width_m ({self.bar_width_m})"
            )


@dataclass(frozen=True, slots=True)
class Target:
    """A planar target on the tower.

    Attributes
    ----------
    id : str
    centre_enu_m : ndarray (3,)
        Target centre. [m]
    u_normal_enu : ndarray (3,)
        Unit normal, pointing toward the field (and the camera).
    width_m, height_m : float
        Extent along the target's x (right) and y (up) axes. [m]
    u_x_enu, u_y_enu : ndarray (3,)
        In-plane unit axes: x right and y up as the camera sees the target.
    markers : ArucoMarkers or None
        Registration markers, when the target carries them.
    corner_marks : MarkLayout or None
        The painted L/T corner marks' shape, when the target has such marks (registration
        by them: :func:`heliostat.vision.marks.register_marks`).
    """

    id: str
    centre_enu_m: NDArray[np.float64]
    u_normal_enu: NDArray[np.float64]
    width_m: float
    height_m: float
    u_x_enu: NDArray[np.float64]
    u_y_enu: NDArray[np.float64]
    markers: ArucoMarkers | None = None
    corner_marks: MarkLayout | None = None

    @classmethod
    def make(
        cls,
        id: str,
        centre_enu_m: ArrayLike,
        u_normal_enu: ArrayLike,
        width_m: float,
        height_m: float,
        markers: ArucoMarkers | None = None,
        corner_marks: MarkLayout | None = None,
    ) -> Target:
        """Build a target, deriving its in-plane axes from the normal."""
        n = normalize(u_normal_enu)
        x, y = target_axes(n)
        return cls(
            id,
            np.asarray(centre_enu_m, dtype=float),
            n,
            float(width_m),
            float(height_m),
            x,
            y,
            markers,
            corner_marks,
        )

    def enu_to_plane(self, p_enu_m: ArrayLike) -> NDArray[np.float64]:
        """ENU points to target-plane (x, y) [m]; shape (..., 2). Off-plane part dropped."""
        d = np.asarray(p_enu_m, dtype=float) - self.centre_enu_m
        return np.stack([d @ self.u_x_enu, d @ self.u_y_enu], axis=-1)

    def plane_to_enu(self, xy_m: ArrayLike) -> NDArray[np.float64]:
        """Target-plane (x, y) [m] to ENU points [m]; shape (..., 3)."""
        xy = np.asarray(xy_m, dtype=float)
        return self.centre_enu_m + xy[..., :1] * self.u_x_enu + xy[..., 1:2] * self.u_y_enu

    def corners_enu_m(self) -> NDArray[np.float64]:
        """Corners UL, UR, LR, LL in ENU. Shape (4, 3) [m]."""
        w, h = self.width_m / 2, self.height_m / 2
        return self.plane_to_enu(np.array([[-w, h], [w, h], [w, -h], [-w, -h]]))

    def contains(self, xy_m: ArrayLike) -> NDArray[np.bool_]:
        """True where target-plane points lie on the target."""
        xy = np.asarray(xy_m, dtype=float)
        return (np.abs(xy[..., 0]) <= self.width_m / 2) & (np.abs(xy[..., 1]) <= self.height_m / 2)


@dataclass(frozen=True, slots=True)
class Mirror:
    """Optical properties of a heliostat's concentrator.

    Attributes
    ----------
    width_m, height_m : float
        Reflective aperture. [m]
    reflectivity : float
        Solar-weighted specular reflectivity. [1]
    slope_error_mrad : float
        RMS surface slope error per axis (doubles on reflection). [mrad]
    focal_length_m : float or None
        Focal length of the canted/curved concentrator; None = focused at its slant range.
    """

    width_m: float = 4.0
    height_m: float = 4.0
    reflectivity: float = 0.93
    slope_error_mrad: float = 1.5
    focal_length_m: float | None = None

    @property
    def area_m2(self) -> float:
        return self.width_m * self.height_m


@dataclass(frozen=True, slots=True)
class Bus:
    """An RS-485 bus: a serial port (device path or pyserial URL) and its settings."""

    name: str
    port: str
    baudrate: int = 115200
    parity: str = "N"
    stopbits: int = 1
    timeout_s: float = 0.2


@dataclass(frozen=True, slots=True)
class Heliostat:
    """One heliostat: nominal kinematics, mirror and its controller on a bus."""

    id: str
    kinematics: HeliostatKinematics
    mirror: Mirror
    bus: str
    address: int

    @property
    def position_enu_m(self) -> NDArray[np.float64]:
        return np.asarray(self.kinematics.position_enu_m, dtype=float)


@dataclass(frozen=True, slots=True)
class Safety:
    """Limits the firmware bridge enforces before anything goes on the wire.

    Attributes
    ----------
    max_correction_mrad : float
        Largest joint-angle change a calibration correction may command, per axis. [mrad]
    require_confirmation : bool
        Real ports ask before sending unless ``--yes``.
    """

    max_correction_mrad: float = 20.0
    require_confirmation: bool = True


@dataclass(frozen=True, slots=True)
class FieldConfig:
    """A whole plant: site, targets, heliostats, buses, safety limits."""

    site: Site
    targets: dict[str, Target]
    heliostats: dict[str, Heliostat]
    buses: dict[str, Bus] = field(default_factory=dict)
    safety: Safety = field(default_factory=Safety)
    source: str = ""

    def heliostat(self, heliostat_id: str) -> Heliostat:
        try:
            return self.heliostats[heliostat_id]
        except KeyError:
            raise KeyError(
                f"heliostat {heliostat_id!r} is not in the field config "
                f"{self.source or ''}".rstrip()
            ) from None

    def target(self, target_id: str) -> Target:
        try:
            return self.targets[target_id]
        except KeyError:
            raise KeyError(
                f"target {target_id!r} is not in the field config {self.source or ''}".rstrip()
            ) from None

    def by_address(self, bus: str, address: int) -> Heliostat | None:
        for h in self.heliostats.values():
            if h.bus == bus and h.address == address:
                return h
        return None
