"""Named kinematic error parameters, switchable in groups.

Every drive type declares a fixed, ordered tuple of error-parameter names in groups (its
module in :mod:`heliostat.kinematics.drives`); an error set is a value per name (angles
in rad, lengths in m, the unit is in the name). All zeros give the nominal model exactly.
Groups select what a calibration fits:

========================  ==================================================================
group                     parameters
========================  ==================================================================
``first_axis_tilt``       tilt of the first rotation axis (az-el: about E and N; linear: N, U)
``nonorthogonality``      second axis not perpendicular to the first (rotation about N)
``zero_offsets``          additive joint-angle offsets per axis (for linear actuators this is
                          the deviation of the actuator's *initial angle*)
``canting``               mirror-normal collimation: tilt of the normal about the in-mirror
                          axis perpendicular to axis 2 (the other in-mirror component is
                          indistinguishable from the axis-2 zero offset, so it is not a
                          separate parameter)
``joint_translations``    first-joint, second-joint and concentrator translations [m]
``actuator_stroke``       linear actuators only: deviation of the initial stroke length [m]
``backlash``              full backlash b per axis (``axis1_backlash_rad``,
                          ``axis2_backlash_rad``): after a move in direction s = ±1 (sign of
                          the step change) the joint stands at the reported angle − s·b/2;
                          it acts only where the direction is given (``approach``
                          arguments, the observations' ``axis<i>_approach`` columns), not a
                          default group, and appended last so the older parameters keep
                          their places in the controller's parameter block
========================  ==================================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from heliostat.kinematics.drives import drive as _drive


def error_names(drive: str) -> tuple[str, ...]:
    """All error-parameter names of a drive type, in canonical order."""
    return _drive(drive).error_names


def group_names(drive: str) -> tuple[str, ...]:
    """Names of the parameter groups available for a drive type."""
    return _drive(drive).group_names


def default_groups(drive: str) -> tuple[str, ...]:
    """Groups fitted when the user names none: all angular terms (and, for linear
    actuators, the initial strokes)."""
    return _drive(drive).default_groups


def names_for_groups(drive: str, groups: Iterable[str]) -> tuple[str, ...]:
    """Parameter names of the given groups, in canonical order.

    Raises
    ------
    ValueError
        For a group the drive type does not have.
    """
    d = _drive(drive)
    wanted = {n for g in tuple(groups) for n in d.group(g).params}
    return tuple(n for n in d.error_names if n in wanted)


@dataclass(frozen=True, slots=True)
class KinematicErrors:
    """Error-parameter values of one heliostat.

    Attributes
    ----------
    drive : str
        Name of a registered drive type (:mod:`heliostat.kinematics.drives`).
    values : tuple of float
        One value per name of :func:`error_names` (rad for ``*_rad``, m for ``*_m``).
    """

    drive: str
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        n = len(error_names(self.drive))
        if len(self.values) != n:
            raise ValueError(f"{self.drive} error set needs {n} values, got {len(self.values)}")
        if not all(np.isfinite(v) for v in self.values):
            raise ValueError(f"error values must be finite, got {self.values!r}")

    @classmethod
    def zeros(cls, drive: str) -> KinematicErrors:
        """The nominal model: every error zero."""
        return cls(drive, (0.0,) * len(error_names(drive)))

    @classmethod
    def from_dict(cls, drive: str, values: Mapping[str, float]) -> KinematicErrors:
        """From a name → value mapping; missing names are zero, unknown names an error."""
        names = error_names(drive)
        unknown = set(values) - set(names)
        if unknown:
            raise ValueError(f"unknown {drive} error parameter(s): {', '.join(sorted(unknown))}")
        return cls(drive, tuple(float(values.get(n, 0.0)) for n in names))

    @property
    def names(self) -> tuple[str, ...]:
        return error_names(self.drive)

    def to_dict(self) -> dict[str, float]:
        return dict(zip(self.names, self.values, strict=True))

    def __getitem__(self, name: str) -> float:
        try:
            return self.values[self.names.index(name)]
        except ValueError:
            raise KeyError(f"{self.drive} drive has no error parameter {name!r}") from None

    def get(self, name: str, default: float = 0.0) -> float:
        names = self.names
        return self.values[names.index(name)] if name in names else default

    def to_vector(self, names: Sequence[str]) -> NDArray[np.float64]:
        """Values of the named parameters, in the given order (for optimisers)."""
        return np.array([self[n] for n in names], dtype=float)

    def with_vector(self, names: Sequence[str], vector: ArrayLike) -> KinematicErrors:
        """A copy with the named parameters replaced by ``vector``."""
        vec = np.asarray(vector, dtype=float).ravel()
        if vec.size != len(names):
            raise ValueError(f"vector has {vec.size} values for {len(names)} names")
        d = self.to_dict()
        for n, v in zip(names, vec, strict=True):
            if n not in d:
                raise KeyError(f"{self.drive} drive has no error parameter {n!r}")
            d[n] = float(v)
        return KinematicErrors.from_dict(self.drive, d)
