"""Heliostat kinematics: steps ↔ angles ↔ mirror pose, with a named error model."""

from heliostat.kinematics.actuators import LinearAxis, RotaryAxis
from heliostat.kinematics.drives import DRIVES, Drive, drive, drive_names
from heliostat.kinematics.errors import (
    KinematicErrors,
    default_groups,
    error_names,
    group_names,
    names_for_groups,
)
from heliostat.kinematics.model import HeliostatKinematics, KinematicsError, Pose

__all__ = [
    "DRIVES",
    "Drive",
    "HeliostatKinematics",
    "KinematicErrors",
    "KinematicsError",
    "LinearAxis",
    "Pose",
    "RotaryAxis",
    "default_groups",
    "drive",
    "drive_names",
    "error_names",
    "group_names",
    "names_for_groups",
]
