"""The two axis kinds and their ``field.toml`` keys (``[drives.NAME.axis1]``, ``axis2``).

Degrees appear only here, at the edge (``*_deg`` keys); the axes hold radians.
"""

from __future__ import annotations

import math
from typing import Any

from heliostat.kinematics.actuators import LinearAxis, RotaryAxis
from heliostat.kinematics.drives._base import Axis, AxisKind, ConfigTable


def _limits(t: ConfigTable) -> dict[str, int]:
    lim = dict(min_steps=t.int_("min_steps"), max_steps=t.int_("max_steps"))
    if lim["min_steps"] >= lim["max_steps"]:
        raise t.err("max_steps", f"must exceed min_steps ({lim['min_steps']})")
    return lim


# --------------------------------------------------------------------------- rotary
_ROTARY_KEYS = frozenset({"steps_per_deg", "zero_deg", "min_steps", "max_steps"})


def _read_rotary(t: ConfigTable) -> RotaryAxis:
    lim = _limits(t)
    t.check_unknown(set(_ROTARY_KEYS))
    spd = t.num("steps_per_deg")
    if spd == 0:
        raise t.err("steps_per_deg", "must be non-zero")
    return RotaryAxis(
        steps_per_rad=spd * 180.0 / math.pi,
        zero_rad=math.radians(t.num("zero_deg", 0.0)),
        **lim,
    )


def _write_rotary(axis: Axis) -> dict[str, Any]:
    if not isinstance(axis, RotaryAxis):
        raise TypeError(f"expected a RotaryAxis, got {type(axis).__name__}")
    return dict(
        steps_per_deg=axis.steps_per_rad * math.pi / 180.0,
        zero_deg=math.degrees(axis.zero_rad),
        min_steps=axis.min_steps,
        max_steps=axis.max_steps,
    )


#: Slew drive with a rotary encoder: ``steps_per_deg``, ``zero_deg`` (joint angle at 0
#: steps, default 0), ``min_steps``, ``max_steps``.
ROTARY = AxisKind("rotary", RotaryAxis, _ROTARY_KEYS, _read_rotary, _write_rotary)


# --------------------------------------------------------------------------- linear
_LINEAR_KEYS = frozenset(
    {
        "increment_steps_per_m",
        "initial_stroke_m",
        "offset_m",
        "pivot_radius_m",
        "initial_angle_deg",
        "clockwise",
        "min_steps",
        "max_steps",
    }
)


def _read_linear(t: ConfigTable) -> LinearAxis:
    lim = _limits(t)
    t.check_unknown(set(_LINEAR_KEYS))
    values = dict(
        increment_steps_per_m=t.num("increment_steps_per_m", lo=0, lo_open=True),
        initial_stroke_m=t.num("initial_stroke_m"),
        offset_m=t.num("offset_m", lo=0, lo_open=True),
        pivot_radius_m=t.num("pivot_radius_m", lo=0, lo_open=True),
        initial_angle_rad=math.radians(t.num("initial_angle_deg")),
        clockwise=t.bool_("clockwise"),
    )
    try:
        return LinearAxis(**values, **lim)
    except ValueError as exc:
        raise t.err("initial_stroke_m", str(exc)) from None


def _write_linear(axis: Axis) -> dict[str, Any]:
    if not isinstance(axis, LinearAxis):
        raise TypeError(f"expected a LinearAxis, got {type(axis).__name__}")
    return dict(
        increment_steps_per_m=axis.increment_steps_per_m,
        initial_stroke_m=axis.initial_stroke_m,
        offset_m=axis.offset_m,
        pivot_radius_m=axis.pivot_radius_m,
        initial_angle_deg=math.degrees(axis.initial_angle_rad),
        clockwise=axis.clockwise,
        min_steps=axis.min_steps,
        max_steps=axis.max_steps,
    )


#: Linear actuator on a lever (PAINT/ARTIST parametrisation): ``increment_steps_per_m``,
#: ``initial_stroke_m``, ``offset_m``, ``pivot_radius_m``, ``initial_angle_deg``,
#: ``clockwise``, ``min_steps``, ``max_steps``; its initial stroke is an error parameter.
LINEAR = AxisKind("linear", LinearAxis, _LINEAR_KEYS, _read_linear, _write_linear, stroke=True)
