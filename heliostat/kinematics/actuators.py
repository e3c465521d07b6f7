"""Motor steps ↔ joint angle for one axis.

Two actuator types:

* :class:`RotaryAxis`, a slew drive with a rotary encoder: angle = zero + steps / ratio.
* :class:`LinearAxis`, a linear actuator pushing a lever, as on the Jülich heliostats
  (the parametrisation of the PAINT heliostat-properties files and of ARTIST [1]_):
  stroke L = L0 + steps / increment; the actuator, the lever of radius r and the fixed
  offset o form a triangle whose angle at the pivot is
  ψ(L) = arccos((o² + r² − L²) / (2 o r)) (law of cosines); the joint angle is
  θ = θ0 ± (ψ(L0) − ψ(L)), + for a clockwise axis.

References
----------
.. [1] M. Pargmann, J. Ebert, M. Götz, D. Maldonado Quinto, R. Pitz-Paal and S. Kesselheim,
   "Automatic heliostat learning for in situ concentrating solar power plant metrology
   with differentiable ray tracing," Nature Communications 15, 6997, 2024.
   doi:10.1038/s41467-024-51019-z
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray


@dataclass(frozen=True, slots=True)
class RotaryAxis:
    """Slew drive with a rotary encoder.

    Attributes
    ----------
    steps_per_rad : float
        Encoder steps per radian of joint rotation (sign gives the direction). [1/rad]
    zero_rad : float
        Joint angle at 0 steps. [rad]
    min_steps, max_steps : int
        Travel limits. [steps]
    """

    steps_per_rad: float
    zero_rad: float
    min_steps: int
    max_steps: int

    def __post_init__(self) -> None:
        if not np.isfinite(self.steps_per_rad) or self.steps_per_rad == 0:
            raise ValueError(
                f"steps_per_rad must be finite and non-zero, got {self.steps_per_rad!r}"
            )
        if self.min_steps >= self.max_steps:
            raise ValueError(f"min_steps {self.min_steps} must be below max_steps {self.max_steps}")

    def steps_to_angle(
        self, steps: ArrayLike, zero_error_rad: float = 0.0, stroke_error_m: float = 0.0
    ) -> NDArray[np.float64]:
        """Joint angle for motor steps. [rad] (``stroke_error_m`` is ignored: no stroke.)"""
        return self.zero_rad + zero_error_rad + np.asarray(steps, dtype=float) / self.steps_per_rad

    def angle_to_steps(
        self, angle_rad: ArrayLike, zero_error_rad: float = 0.0, stroke_error_m: float = 0.0
    ) -> NDArray[np.float64]:
        """Motor steps (real-valued) for a joint angle. [steps]"""
        return (np.asarray(angle_rad, dtype=float) - self.zero_rad - zero_error_rad) * (
            self.steps_per_rad
        )


@dataclass(frozen=True, slots=True)
class LinearAxis:
    """Linear actuator driving a lever (Jülich / PAINT parametrisation).

    Attributes
    ----------
    increment_steps_per_m : float
        Motor steps per metre of stroke (PAINT ``increment``). [1/m]
    initial_stroke_m : float
        Stroke length at 0 steps (nominal). [m]
    offset_m : float
        Distance from the actuator's fixed pivot to the joint axis. [m]
    pivot_radius_m : float
        Lever radius from the joint axis to the actuator's moving pivot. [m]
    initial_angle_rad : float
        Joint angle at 0 steps. [rad]
    clockwise : bool
        Sense of the joint rotation as the stroke grows.
    min_steps, max_steps : int
        Travel limits. [steps]
    """

    increment_steps_per_m: float
    initial_stroke_m: float
    offset_m: float
    pivot_radius_m: float
    initial_angle_rad: float
    clockwise: bool
    min_steps: int
    max_steps: int

    def __post_init__(self) -> None:
        for name in ("increment_steps_per_m", "offset_m", "pivot_radius_m"):
            v = getattr(self, name)
            if not np.isfinite(v) or v <= 0:
                raise ValueError(f"{name} must be positive, got {v!r}")
        if self.min_steps >= self.max_steps:
            raise ValueError(f"min_steps {self.min_steps} must be below max_steps {self.max_steps}")
        if not np.isfinite(self._psi(self.initial_stroke_m)):
            raise ValueError(
                f"initial_stroke_m {self.initial_stroke_m!r} does not close the actuator triangle "
                f"(offset {self.offset_m} m, pivot radius {self.pivot_radius_m} m)"
            )

    @property
    def _sign(self) -> float:
        return 1.0 if self.clockwise else -1.0

    def _psi(self, stroke_m: ArrayLike) -> NDArray[np.float64]:
        """Angle at the joint between offset and lever for a stroke (law of cosines). [rad]"""
        o, r = self.offset_m, self.pivot_radius_m
        cos_psi = (o**2 + r**2 - np.asarray(stroke_m, dtype=float) ** 2) / (2.0 * o * r)
        with np.errstate(invalid="ignore"):
            return np.where(np.abs(cos_psi) <= 1.0, np.arccos(np.clip(cos_psi, -1, 1)), np.nan)

    def steps_to_angle(
        self, steps: ArrayLike, zero_error_rad: float = 0.0, stroke_error_m: float = 0.0
    ) -> NDArray[np.float64]:
        """Joint angle for motor steps; NaN where the stroke cannot close the triangle. [rad]

        ``stroke_error_m`` shifts the true initial stroke; the angle reference stays the
        nominal geometry, so the error acts through the actuator's nonlinear lever.
        """
        stroke = (
            self.initial_stroke_m
            + stroke_error_m
            + np.asarray(steps, dtype=float) / (self.increment_steps_per_m)
        )
        delta = self._psi(self.initial_stroke_m) - self._psi(stroke)
        return self.initial_angle_rad + zero_error_rad + self._sign * delta

    def angle_to_steps(
        self, angle_rad: ArrayLike, zero_error_rad: float = 0.0, stroke_error_m: float = 0.0
    ) -> NDArray[np.float64]:
        """Motor steps (real-valued) for a joint angle; NaN where unreachable. [steps]"""
        delta = self._sign * (
            np.asarray(angle_rad, dtype=float) - self.initial_angle_rad - zero_error_rad
        )
        psi = self._psi(self.initial_stroke_m) - delta
        o, r = self.offset_m, self.pivot_radius_m
        psi = np.where((psi >= 0) & (psi <= np.pi), psi, np.nan)
        stroke = np.sqrt(o**2 + r**2 - 2.0 * o * r * np.cos(psi))
        return (stroke - self.initial_stroke_m - stroke_error_m) * self.increment_steps_per_m


Axis = RotaryAxis | LinearAxis
