"""What a drive-type module declares: :class:`Drive` and its parts.

A drive type is the one kinematic chain of :mod:`heliostat.kinematics.model` with its
constants filled in (:class:`Chain`), two axis kinds (steps ↔ joint angle, with their
``field.toml`` keys: :class:`AxisKind`), the error parameters a calibration may fit
(:class:`ParamGroup`), the integer the controller's ``DRIVE`` register holds, and a typical
nominal geometry the simulator builds fields from (:class:`Typical`).

This module imports nothing from the rest of the kinematics package but the axis classes,
so :mod:`~heliostat.kinematics.errors` and :mod:`~heliostat.kinematics.model` can read the
registry without an import cycle.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from heliostat.kinematics.actuators import LinearAxis, RotaryAxis

Axis = RotaryAxis | LinearAxis

#: Unit rotation axes of the chain, by the ENU component they rotate about.
ENU_AXES = ("e", "n", "u")

#: The nine joint-translation error parameters every chain reads. [m]
TRANSLATIONS = tuple(
    f"{part}_offset_{c}_m" for part in ("axis1", "axis2", "mirror") for c in ENU_AXES
)

#: Full backlash of each axis, as a joint angle: after a move in direction s = ±1 (the
#: sign of the step change) the joint stands at the reported angle − s·b/2 (the load lags
#: the motor; :meth:`heliostat.kinematics.HeliostatKinematics.steps_to_angles`). [rad]
BACKLASH = ("axis1_backlash_rad", "axis2_backlash_rad")
#: Fit bound of the backlash: ±10 mrad, 0.57°, far above a working drive's. [rad]
BACKLASH_BOUND_RAD = 0.01


class ConfigTable(Protocol):
    """The part of a ``field.toml`` table reader an :class:`AxisKind` uses
    (:class:`heliostat.config._Table` implements it; every error names file and key)."""

    def num(
        self,
        key: str,
        default: Any = ...,
        lo: float = ...,
        hi: float = ...,
        lo_open: bool = False,
    ) -> float: ...

    def int_(
        self, key: str, default: Any = ..., lo: int | None = None, hi: int | None = None
    ) -> int: ...

    def bool_(self, key: str, default: Any = ...) -> bool: ...

    def check_unknown(self, allowed: set[str]) -> None: ...

    def err(self, key: str, msg: str) -> Exception: ...


@dataclass(frozen=True, slots=True)
class AxisKind:
    """One kind of axis: its model class, its ``field.toml`` keys and their codec.

    Attributes
    ----------
    name : str
        Short name for messages and docs (``"rotary"``, ``"linear"``).
    type : type
        :class:`~heliostat.kinematics.actuators.RotaryAxis` or
        :class:`~heliostat.kinematics.actuators.LinearAxis`.
    keys : frozenset of str
        Keys of a ``[drives.NAME.axisN]`` table (anything else is an error).
    read : callable
        ``read(table)`` → axis, validating every key (errors name file and key).
    write : callable
        ``write(axis)`` → dict of the same keys (``read(write(a)) == a``).
    stroke : bool
        The axis has an initial-stroke error parameter ``actuatorN_stroke_m``.
    """

    name: str
    type: type
    keys: frozenset[str]
    read: Callable[[ConfigTable], Axis]
    write: Callable[[Axis], dict[str, Any]]
    stroke: bool = False

    def error_params(self, i: int) -> tuple[str, ...]:
        """Error parameters axis ``i`` (1 or 2) reads in ``steps_to_angle`` (the backlash
        acts there too, with the direction of the axis's last move)."""
        return (
            (f"axis{i}_zero_rad",)
            + ((f"actuator{i}_stroke_m",) if self.stroke else ())
            + (f"axis{i}_backlash_rad",)
        )


@dataclass(frozen=True, slots=True)
class Chain:
    """Constants of the kinematic chain (module docstring of
    :mod:`heliostat.kinematics.model`), each rotation named by the ENU axis it turns
    about (``"e"`` = R_x, ``"n"`` = R_y, ``"u"`` = R_z).

    Attributes
    ----------
    joint1, joint2 : str
        Rotation axis of R1 and R2 at zero error.
    joint1_sign, joint2_sign : int
        ±1: R1 = R_joint1(joint1_sign · θ1), likewise R2.
    normal0 : str
        Mirror normal at zero joint angles, ``"+n"`` or ``"-n"`` etc. It must be
        perpendicular to both joints (the nominal inverse relies on it).
    tilt : tuple of str
        A1 = R_tilt[0](axis1_tilt_<tilt[0]>_rad) · R_tilt[1](…): the first-axis tilt.
    nonorthogonality : str
        A2 = R_nonorthogonality(axis_nonorthogonality_rad).
    collimation : str
        C = R_collimation(mirror_collimation_rad).
    """

    joint1: str
    joint1_sign: int
    joint2: str
    joint2_sign: int
    normal0: str
    tilt: tuple[str, ...]
    nonorthogonality: str
    collimation: str

    def __post_init__(self) -> None:
        for name in ("joint1", "joint2", "nonorthogonality", "collimation"):
            if getattr(self, name) not in ENU_AXES:
                raise ValueError(
                    f"chain {name} must be one of e, n, u, got {getattr(self, name)!r}"
                )
        if any(t not in ENU_AXES for t in self.tilt) or len(set(self.tilt)) != len(self.tilt):
            raise ValueError(f"chain tilt must be distinct axes of e, n, u, got {self.tilt!r}")
        for name in ("joint1_sign", "joint2_sign"):
            if getattr(self, name) not in (1, -1):
                raise ValueError(f"chain {name} must be +1 or -1, got {getattr(self, name)!r}")
        if self.joint1 == self.joint2:
            raise ValueError(f"chain joints must be different axes, got {self.joint1!r} twice")
        if (
            len(self.normal0) != 2
            or self.normal0[0] not in "+-"
            or self.normal0[1] in (self.joint1, self.joint2)
            or self.normal0[1] not in ENU_AXES
        ):
            raise ValueError(
                f"chain normal0 must be '+' or '-' and the ENU axis that is neither joint "
                f"({self.joint1}, {self.joint2}), got {self.normal0!r}"
            )

    @property
    def params(self) -> tuple[str, ...]:
        """The angular error parameters the chain reads (translations aside)."""
        return (
            *(f"axis1_tilt_{t}_rad" for t in self.tilt),
            "axis_nonorthogonality_rad",
            "mirror_collimation_rad",
        )


@dataclass(frozen=True, slots=True)
class ParamGroup:
    """A group of error parameters fitted (or not) together.

    Attributes
    ----------
    name : str
        Group name (``--params``, ``campaign.toml`` ``groups``).
    params : tuple of str
        Parameter names; the unit is in the name (``*_rad`` rad, ``*_m`` m).
    fit_bound : float
        The fit keeps every parameter of the group within ±fit_bound (a parameter at the
        bound is reported as a failed fit). [rad or m, as the names say]
    default : bool
        Fitted when the user names no group.
    """

    name: str
    params: tuple[str, ...]
    fit_bound: float
    default: bool

    def __post_init__(self) -> None:
        if not self.params:
            raise ValueError(f"parameter group {self.name!r} is empty")
        if not self.fit_bound > 0:
            raise ValueError(f"group {self.name!r}: fit_bound must be > 0, got {self.fit_bound!r}")


@dataclass(frozen=True, slots=True)
class Typical:
    """A typical nominal heliostat of a drive type, as the simulator builds it.

    Attributes
    ----------
    axis1, axis2 : RotaryAxis or LinearAxis
        Nominal axes.
    axis1_offset_enu_m, axis2_offset_enu_m, mirror_offset_enu_m : tuple of 3 float
        Nominal joint and concentrator translations. [m]
    mirror_width_m, mirror_height_m : float
        Mirror aperture. [m]
    northern_fields_only : bool
        The mirror faces south over its whole travel, so it serves only a field north of
        the tower (northern hemisphere).
    """

    axis1: Axis
    axis2: Axis
    axis1_offset_enu_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    axis2_offset_enu_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    mirror_offset_enu_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    mirror_width_m: float = 3.2
    mirror_height_m: float = 2.5
    northern_fields_only: bool = False


_NAME = re.compile(r"[a-z][a-z0-9_-]*\Z")


@dataclass(frozen=True, slots=True)
class Drive:
    """Everything the code knows about one drive type.

    Attributes
    ----------
    name : str
        The type's name in ``field.toml`` (``type = "azel"``), corrections and history.
    title : str
        A few words for people (``"az-el slew drives"``).
    register_code : int
        Value of the controller's ``DRIVE`` register (1..65535, unique).
    axes : tuple of 2 AxisKind
        Axis 1 and axis 2.
    chain : Chain
        Constants of the kinematic chain.
    groups : tuple of ParamGroup
        Error-parameter groups; their order is the canonical parameter order (the order
        of the controller's parameter block).
    axis1_full_turn : bool
        Axis 1 turns through full circles: the inverse keeps θ1 within ±π of mid-travel
        and |θ2| ≤ 90° (the other branch reaches the same normal).
    typical : Typical
        A typical nominal heliostat (simulator, docs).
    """

    name: str
    title: str
    register_code: int
    axes: tuple[AxisKind, AxisKind]
    chain: Chain
    groups: tuple[ParamGroup, ...]
    axis1_full_turn: bool
    typical: Typical

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(
                f"drive name must be lower-case letters, digits, - or _, got {self.name!r}"
            )
        if not 1 <= self.register_code <= 0xFFFF:
            raise ValueError(
                f"drive {self.name!r}: register_code must be in 1..65535, "
                f"got {self.register_code!r}"
            )
        if len(self.axes) != 2:
            raise ValueError(f"drive {self.name!r}: needs 2 axes, got {len(self.axes)}")
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise ValueError(f"drive {self.name!r}: duplicate parameter group names {names}")
        params = self.error_names
        if len(set(params)) != len(params):
            raise ValueError(f"drive {self.name!r}: a parameter is in two groups")
        readable = set(self.chain.params) | set(TRANSLATIONS)
        for i, kind in enumerate(self.axes, start=1):
            readable |= set(kind.error_params(i))
        unread = [p for p in params if p not in readable]
        if unread:
            raise ValueError(
                f"drive {self.name!r}: the chain never reads parameter(s) {', '.join(unread)}"
            )
        typical = (self.typical.axis1, self.typical.axis2)
        for i, (kind, ax) in enumerate(zip(self.axes, typical, strict=True), start=1):
            if not isinstance(ax, kind.type):
                raise ValueError(
                    f"drive {self.name!r}: typical axis{i} is a {type(ax).__name__}, "
                    f"the drive's axis{i} is {kind.type.__name__}"
                )

    @property
    def error_names(self) -> tuple[str, ...]:
        """All error-parameter names, in canonical order."""
        return tuple(p for g in self.groups for p in g.params)

    @property
    def group_names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.groups)

    @property
    def default_groups(self) -> tuple[str, ...]:
        """Groups fitted when the user names none."""
        return tuple(g.name for g in self.groups if g.default)

    def group(self, name: str) -> ParamGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise ValueError(
            f"unknown parameter group {name!r} for drive {self.name!r}; "
            f"choose from {', '.join(self.group_names)}"
        )

    def fit_bound(self, param: str) -> float:
        """The fit's bound on a parameter. [rad or m]"""
        for g in self.groups:
            if param in g.params:
                return g.fit_bound
        raise KeyError(f"{self.name} drive has no error parameter {param!r}")
