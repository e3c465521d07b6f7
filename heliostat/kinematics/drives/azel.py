"""Az-el heliostats: two slew drives with rotary encoders.

Axis 1 turns the whole mirror about the vertical (azimuth, clockwise from north), axis 2
tilts it about a horizontal axis (elevation); the mirror normal points north at zero joint
angles. In the chain of :mod:`heliostat.kinematics.model`:
R1 = R_u(−θ1), R2 = R_e(θ2), n0 = +N, A1 = R_e(axis1_tilt_e_rad) R_n(axis1_tilt_n_rad),
A2 = R_n(axis_nonorthogonality_rad), C = R_u(mirror_collimation_rad).

``field.toml``::

    [drives.slew]
    type = "azel"
    [drives.slew.axis1]          # azimuth
    steps_per_deg = 1000.0
    zero_deg = 180.0             # joint angle at 0 steps
    min_steps = -170000
    max_steps = 170000
    [drives.slew.axis2]          # elevation
    steps_per_deg = 1000.0
    min_steps = -5000
    max_steps = 92000

Controller ``DRIVE`` register: 1. Error parameters: 17 (the groups below, in order; the backlash
group last, so the older 15 keep their places in the parameter block).
"""

from __future__ import annotations

import math

from heliostat.kinematics.actuators import RotaryAxis
from heliostat.kinematics.drives._axes import ROTARY
from heliostat.kinematics.drives._base import (
    BACKLASH,
    BACKLASH_BOUND_RAD,
    TRANSLATIONS,
    Chain,
    Drive,
    ParamGroup,
    Typical,
)

#: Fit bounds: ±50 mrad on angles, ±0.5 m on translations.
ANGLE_BOUND_RAD = 0.05
TRANSLATION_BOUND_M = 0.5

DRIVE = Drive(
    name="azel",
    title="az-el slew drives",
    register_code=1,
    axes=(ROTARY, ROTARY),
    chain=Chain(
        joint1="u",
        joint1_sign=-1,
        joint2="e",
        joint2_sign=1,
        normal0="+n",
        tilt=("e", "n"),
        nonorthogonality="n",
        collimation="u",
    ),
    groups=(
        ParamGroup(
            "first_axis_tilt", ("axis1_tilt_e_rad", "axis1_tilt_n_rad"), ANGLE_BOUND_RAD, True
        ),
        ParamGroup("nonorthogonality", ("axis_nonorthogonality_rad",), ANGLE_BOUND_RAD, True),
        ParamGroup("zero_offsets", ("axis1_zero_rad", "axis2_zero_rad"), ANGLE_BOUND_RAD, True),
        ParamGroup("canting", ("mirror_collimation_rad",), ANGLE_BOUND_RAD, True),
        ParamGroup("joint_translations", TRANSLATIONS, TRANSLATION_BOUND_M, False),
        # Appended after the older groups: the controller's parameter block keeps the
        # older parameters at their registers (docs/controller-registers.md).
        ParamGroup("backlash", BACKLASH, BACKLASH_BOUND_RAD, False),
    ),
    axis1_full_turn=True,
    # 1000 steps per degree on both axes, azimuth zero facing south (the mirror of a
    # pole-side heliostat faces the tower), ±170° of azimuth travel.
    typical=Typical(
        axis1=RotaryAxis(1000.0 * 180.0 / math.pi, math.radians(180.0), -170_000, 170_000),
        axis2=RotaryAxis(1000.0 * 180.0 / math.pi, 0.0, -5_000, 92_000),
        mirror_offset_enu_m=(0.0, 0.1, 0.0),
        mirror_width_m=3.2,
        mirror_height_m=2.5,
    ),
)
