"""Jülich-type heliostats: two linear actuators pushing levers (PAINT / ARTIST).

Axis 1 turns the mirror about a horizontal east–west axis, axis 2 about the local up axis
of the turned frame; the normal points south at zero joint angles. This is ARTIST's
rigid-body kinematic (east rotation, then up rotation, normal (0, −1, 0)), so PAINT joint
angles carry over. In the chain of :mod:`heliostat.kinematics.model`:
R1 = R_e(θ1), R2 = R_u(θ2), n0 = −N, A1 = R_n(axis1_tilt_n_rad) R_u(axis1_tilt_u_rad),
A2 = R_n(axis_nonorthogonality_rad), C = R_e(mirror_collimation_rad).

``field.toml``::

    [drives.juelich]
    type = "linear"
    axis2_offset_enu_m = [0.0, 0.0, 0.315]
    mirror_offset_enu_m = [0.0, -0.17755, -0.4045]
    [drives.juelich.axis1]
    increment_steps_per_m = 154166.666
    initial_stroke_m = 0.075
    offset_m = 0.34
    pivot_radius_m = 0.3204
    initial_angle_deg = -90.0
    clockwise = false
    min_steps = 0
    max_steps = 70000
    # [drives.juelich.axis2] likewise

Controller ``DRIVE`` register: 2. Error parameters: 19 (the groups below, in order; the backlash
group last, so the older 17 keep their places in the parameter block).
"""

from __future__ import annotations

import math

from heliostat.kinematics.actuators import LinearAxis
from heliostat.kinematics.drives._axes import LINEAR
from heliostat.kinematics.drives._base import (
    BACKLASH,
    BACKLASH_BOUND_RAD,
    TRANSLATIONS,
    Chain,
    Drive,
    ParamGroup,
    Typical,
)

#: Fit bounds: ±50 mrad on angles, ±0.5 m on translations, ±50 mm on initial strokes.
ANGLE_BOUND_RAD = 0.05
TRANSLATION_BOUND_M = 0.5
STROKE_BOUND_M = 0.05

DRIVE = Drive(
    name="linear",
    title="linear actuators (Jülich / PAINT)",
    register_code=2,
    axes=(LINEAR, LINEAR),
    chain=Chain(
        joint1="e",
        joint1_sign=1,
        joint2="u",
        joint2_sign=1,
        normal0="-n",
        tilt=("n", "u"),
        nonorthogonality="n",
        collimation="e",
    ),
    groups=(
        ParamGroup(
            "first_axis_tilt", ("axis1_tilt_n_rad", "axis1_tilt_u_rad"), ANGLE_BOUND_RAD, True
        ),
        ParamGroup("nonorthogonality", ("axis_nonorthogonality_rad",), ANGLE_BOUND_RAD, True),
        ParamGroup("zero_offsets", ("axis1_zero_rad", "axis2_zero_rad"), ANGLE_BOUND_RAD, True),
        ParamGroup("canting", ("mirror_collimation_rad",), ANGLE_BOUND_RAD, True),
        ParamGroup("joint_translations", TRANSLATIONS, TRANSLATION_BOUND_M, False),
        ParamGroup(
            "actuator_stroke", ("actuator1_stroke_m", "actuator2_stroke_m"), STROKE_BOUND_M, True
        ),
        # Appended after the older groups: the controller's parameter block keeps the
        # older parameters at their registers (docs/controller-registers.md).
        ParamGroup("backlash", BACKLASH, BACKLASH_BOUND_RAD, False),
    ),
    axis1_full_turn=False,
    # The actuator numbers of the PAINT heliostat-properties files (as in
    # tests/data/field_small.toml); the mirror faces south over the whole travel.
    typical=Typical(
        axis1=LinearAxis(154166.666, 0.075, 0.34, 0.3204, math.radians(-90.0), False, 0, 70_000),
        axis2=LinearAxis(154166.666, 0.075, 0.3479, 0.309, math.radians(55.0), True, 0, 70_000),
        axis2_offset_enu_m=(0.0, 0.0, 0.315),
        mirror_offset_enu_m=(0.0, -0.17755, -0.4045),
        mirror_width_m=3.2,
        mirror_height_m=2.44,
        northern_fields_only=True,
    ),
)
