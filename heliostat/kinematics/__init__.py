"""Heliostat kinematics: steps ↔ angles ↔ mirror pose, with a named error model."""

from heliostat.kinematics.actuators import LinearAxis, RotaryAxis
from heliostat.kinematics.errors import (
    DEFAULT_GROUPS,
    DRIVE_TYPES,
    KinematicErrors,
    error_names,
    group_names,
    names_for_groups,
)
from heliostat.kinematics.model import HeliostatKinematics, KinematicsError, Pose

__all__ = [
    "DEFAULT_GROUPS",
    "DRIVE_TYPES",
    "HeliostatKinematics",
    "KinematicErrors",
    "KinematicsError",
    "LinearAxis",
    "Pose",
    "RotaryAxis",
    "error_names",
    "group_names",
    "names_for_groups",
]
