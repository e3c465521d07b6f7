"""Safety checks and command planning: nothing unsafe ever reaches :mod:`delivery`.

Refused, with every problem named and nothing on the wire:

* a heliostat or address that is not in the field config;
* a setpoint outside the actuator's travel limits (``min_steps``..``max_steps``);
* a correction larger than ``safety.max_correction_mrad``: for a setpoint,
  |θ(setpoint) − θ(nominal)| per axis, converted from steps with the nominal kinematics;
  for a parameter set, the largest mirror rotation it commands toward the target over
  the sky (:func:`param_correction_mrad`);
* a parameter set for the wrong drive, with unknown names, with values that are not
  finite or do not fit a float32, with an angle beyond the firmware's sanity bound
  (``MAX_PARAM_ANGLE_RAD``; a whole turn is refused, not taken as 0) or a length beyond
  ``MAX_PARAM_LENGTH_M``;
* a parameter set whose correction cannot be checked: the setpoints name a target the
  field config does not have, or the field has no targets at all;
* a corrections file that is not shaped as documented (``setpoints`` not a list of
  objects, step counts that are not integers).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from firmware_bridge.delivery import ActuatorCommand
from firmware_bridge.errors import SafetyRefused
from firmware_bridge.registers import I32_MAX, I32_MIN
from heliostat.config import FieldConfig, Heliostat
from heliostat.corrections_format import record_shape_problem
from heliostat.kinematics import error_names
from heliostat.kinematics.drives._base import BACKLASH
from heliostat.kinematics.pointing import pointing_change

#: Largest translation / stroke error the bridge will upload (a sanity bound). [m]
MAX_PARAM_LENGTH_M = 0.5
#: Largest angular error parameter: the controller firmware's plausibility bound (it
#: rejects the set with PARAM_OUT_OF_RANGE beyond it; docs/controller-registers.md). [rad]
MAX_PARAM_ANGLE_RAD = 0.1


def heliostat_for_address(cfg: FieldConfig, address: int, bus: str | None = None) -> Heliostat:
    """The heliostat at an address (on a bus); SafetyRefused when there is none."""
    hits = [
        h for h in cfg.heliostats.values() if h.address == address and (bus is None or h.bus == bus)
    ]
    if len(hits) != 1:
        where = f" on bus {bus!r}" if bus else ""
        why = "is not in" if not hits else "is ambiguous (several buses) in"
        raise SafetyRefused(
            f"address {address}{where} {why} the field config {cfg.source}; refusing to send"
        )
    return hits[0]


def _heliostat(cfg: FieldConfig, heliostat_id: str) -> Heliostat:
    if heliostat_id not in cfg.heliostats:
        raise SafetyRefused(
            f"heliostat {heliostat_id!r} is not in the field config {cfg.source}; refusing to send"
        )
    return cfg.heliostats[heliostat_id]


def limit_problems(h: Heliostat, setpoints_steps: Iterable[int]) -> list[str]:
    """Problems with a setpoint against the travel limits (empty when fine)."""
    out = []
    for i, (axis, sp) in enumerate(zip(h.kinematics.axes, setpoints_steps, strict=True)):
        if not (isinstance(sp, int | np.integer) and I32_MIN <= sp <= I32_MAX):
            out.append(f"{h.id}: axis{i + 1} setpoint {sp!r} is not a 32-bit integer step count")
        elif not axis.min_steps <= sp <= axis.max_steps:
            out.append(
                f"{h.id}: axis{i + 1} setpoint {sp} steps is outside the actuator limits "
                f"[{axis.min_steps}, {axis.max_steps}]"
            )
    return out


def correction_problems(
    h: Heliostat,
    setpoints_steps,
    nominal_steps,
    max_correction_mrad: float,
    measured: dict | None = None,
) -> list[str]:
    """Problems with the joint-angle change from nominal to setpoint (empty when fine).
    With ``measured`` (a dict), its ``"setpoint_mrad"`` becomes the larger of the two axes'
    changes (NaN when one is outside the geometry). [mrad]"""
    ang = h.kinematics.steps_to_angles(np.array([setpoints_steps, nominal_steps], dtype=float))
    d_mrad = np.abs(ang[0] - ang[1]) * 1e3
    if measured is not None:
        measured["setpoint_mrad"] = float(np.max(d_mrad))
    out = []
    for i, d in enumerate(d_mrad):
        if not math.isfinite(d):
            out.append(f"{h.id}: axis{i + 1} setpoint or nominal is outside the actuator geometry")
        elif d > max_correction_mrad:
            out.append(
                f"{h.id}: axis{i + 1} correction {d:.3f} mrad exceeds the maximum "
                f"{max_correction_mrad:g} mrad (setpoint {setpoints_steps[i]}, nominal "
                f"{nominal_steps[i]} steps)"
            )
    return out


def param_correction_mrad(h: Heliostat, errors, aim_enu_m) -> float:
    """Largest mirror rotation an error-parameter set commands, over the sky. [mrad]

    The controller aims with ``nominal + errors``: this is the mirror turn of
    :func:`heliostat.kinematics.pointing.pointing_change` from the nominal model to
    ``errors`` over its sky grid (the suns the heliostat can serve within its travel
    limits): the largest angle between the mirror normals the nominal model gives for the
    steps aimed at ``aim_enu_m`` without and with the error set (the beam turns up to
    twice as far). NaN when no pose is reachable.

    A backlash b in the set moves each setpoint by up to b/2 in joint angle, in the
    direction of the axis's last move; the mirror turns by at most the sum of the two
    joint turns, so |b₁|/2 + |b₂|/2 is added to the geometric figure (a bound, not the
    exact worst case).
    """
    b = sum(abs(errors.get(n)) for n in BACKLASH) / 2.0
    return pointing_change(h.kinematics, None, errors, aim_enu_m).mirror_max_mrad + b * 1e3


def block_values(drive: str, values: tuple[float, ...]) -> tuple[float, ...]:
    """The values to upload for a set in canonical order: without the trailing backlash
    pair when both are zero, i.e. the block of a controller that predates the backlash
    terms (15 az-el, 17 linear values; ``docs/controller-registers.md``). [rad, m]
    """
    names = error_names(drive)
    if names[-len(BACKLASH) :] != BACKLASH:
        return values
    tail = values[-len(BACKLASH) :]
    return values[: -len(BACKLASH)] if all(v == 0.0 for v in tail) else values


def param_problems(
    h: Heliostat,
    drive: str | None,
    parameters: Mapping[str, Any],
    max_correction_mrad: float,
    aim_enu_m=None,
    measured: dict | None = None,
) -> tuple[list[str], tuple[float, ...]]:
    """Problems with a parameter set, and the values in canonical order.

    Checked: drive and names, finite values that survive float32 packing, angles within
    ``MAX_PARAM_ANGLE_RAD`` and translations within ``MAX_PARAM_LENGTH_M``, and the
    mirror rotation the set commands (:func:`param_correction_mrad`, toward each aim
    point of ``aim_enu_m``, shape (3,) or (n, 3)) within ``max_correction_mrad``. With
    ``aim_enu_m=None`` the rotation check is left to the caller (:func:`plan_corrections`
    always passes the aim points and refuses a set whose target it cannot resolve). With
    ``measured`` (a dict), its ``"params_mrad"`` becomes the checked rotation (the largest
    over the aim points) when it was computed. [mrad]
    """
    from heliostat.kinematics import KinematicErrors

    names = error_names(h.kinematics.drive)
    out = []
    if drive is not None and drive != h.kinematics.drive:
        out.append(
            f"{h.id}: corrections are for drive {drive!r}, the field has {h.kinematics.drive!r}"
        )
        return out, ()
    unknown = sorted(set(parameters) - set(names))
    if unknown:
        out.append(f"{h.id}: unknown {h.kinematics.drive} parameter(s) {', '.join(unknown)}")
    values = []
    for n in names:
        v = _param_value(parameters.get(n, 0.0))
        if v is None:
            out.append(
                f"{h.id}: parameter {n} must be a finite number that fits a float32, "
                f"got {_short(parameters.get(n))}"
            )
            values.append(0.0)
            continue
        if n.endswith("_m") and abs(v) > MAX_PARAM_LENGTH_M:
            out.append(f"{h.id}: parameter {n} = {v} m exceeds {MAX_PARAM_LENGTH_M} m")
        elif n.endswith("_rad") and abs(v) > MAX_PARAM_ANGLE_RAD:
            out.append(
                f"{h.id}: parameter {n} = {v} rad exceeds the firmware's sanity bound "
                f"{MAX_PARAM_ANGLE_RAD} rad (angles are not taken modulo a turn)"
            )
        values.append(v)
    if out or aim_enu_m is None:
        return out, tuple(values)
    aims = np.asarray(aim_enu_m, dtype=float).reshape(-1, 3)
    errors = KinematicErrors(h.kinematics.drive, tuple(values))
    ds = [param_correction_mrad(h, errors, a) for a in aims]
    if measured is not None:
        measured["params_mrad"] = max(ds)
    if not all(math.isfinite(d) for d in ds):
        out.append(f"{h.id}: the parameter set leaves no reachable pose toward the target")
    elif max(ds) > max_correction_mrad:
        out.append(
            f"{h.id}: parameter set turns the mirror by up to {max(ds):.3f} mrad, more than "
            f"the maximum correction {max_correction_mrad:g} mrad"
        )
    return out, tuple(values)


def _short(v: Any) -> str:
    """repr of a value for a message, cut short (a 400-digit integer is not helpful)."""
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def _param_value(v: Any) -> float | None:
    """A parameter as the float the controller will hold, or None when it is not a
    finite number or does not survive float32 packing (overflow to ±inf)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    try:
        f = float(v)  # OverflowError for an int beyond the float range
        f32 = struct.unpack(">f", struct.pack(">f", f))[0]  # OverflowError beyond float32
    except OverflowError:
        return None
    if not (math.isfinite(f) and math.isfinite(f32)):
        return None
    return f


def plan_move(
    cfg: FieldConfig, heliostat_id: str, setpoints_steps: tuple[int, int]
) -> ActuatorCommand:
    """A checked absolute move (limits only: a manual move has no nominal)."""
    h = _heliostat(cfg, heliostat_id)
    problems = limit_problems(h, setpoints_steps)
    if problems:
        raise SafetyRefused("; ".join(problems) + "; nothing sent")
    return ActuatorCommand(
        h.id, h.address, "move", (int(setpoints_steps[0]), int(setpoints_steps[1]))
    )


def plan_stow(cfg: FieldConfig, heliostat_ids: Iterable[str]) -> list[ActuatorCommand]:
    return [
        ActuatorCommand(h.id, h.address, "stow")
        for h in map(lambda i: _heliostat(cfg, i), heliostat_ids)
    ]


def _aims(cfg: FieldConfig, rec: Mapping[str, Any]) -> tuple[np.ndarray | None, list[str]]:
    """Aim points (n, 3) for the parameter check and the problems resolving them.

    Every target the setpoints name (each must be in the field config); when they name
    none, the field's first target. A problem, never a skipped check, when a named target
    is unknown or the field has no targets.
    """
    hid = rec.get("heliostat")
    named = list(
        dict.fromkeys(sp["target"] for sp in rec.get("setpoints") or [] if sp.get("target"))
    )
    unknown = [t for t in named if t not in cfg.targets]
    if unknown:
        have = ", ".join(cfg.targets) or "none"
        return None, [
            f"{hid}: setpoints name target(s) {', '.join(map(repr, unknown))} that are not in "
            f"the field config {cfg.source} (targets: {have}); the parameter set's "
            "correction cannot be checked"
        ]
    if named:
        return np.array([cfg.targets[t].centre_enu_m for t in named], dtype=float), []
    if not cfg.targets:
        return None, [
            f"{hid}: the field config {cfg.source} has no targets; the parameter set's "
            "correction cannot be checked"
        ]
    first = next(iter(cfg.targets.values()))
    return np.array([first.centre_enu_m], dtype=float), []


def _step_count(v: Any) -> bool:
    """True for a 32-bit integer step count."""
    return isinstance(v, int | np.integer) and not isinstance(v, bool) and I32_MIN <= v <= I32_MAX


def _time_ordered(hid: str, sps: list) -> tuple[list, list[str]]:
    """Setpoints sorted by the instant of their ``time_utc`` (not its text: offsets may
    differ) and the problems found. Every time must carry an offset; a setpoint may lack
    ``time_utc`` only when it is the heliostat's only one (nothing to order)."""
    from heliostat.sun import to_utc_index  # pandas: imported only when there is a time

    problems: list[str] = []
    keys: list[int] = []
    for k, sp in enumerate(sps):
        t = sp.get("time_utc")
        if t is None:
            if len(sps) > 1:
                problems.append(
                    f"{hid}: setpoints[{k}] key 'time_utc': missing; needed to order the "
                    f"{len(sps)} setpoints"
                )
            keys.append(0)
            continue
        if not isinstance(t, str):
            problems.append(
                f"{hid}: setpoints[{k}] key 'time_utc': expected an ISO 8601 time with an "
                f"offset, got {_short(t)}"
            )
            continue
        try:
            keys.append(int(to_utc_index([t])[0].value))
        except ValueError as exc:
            problems.append(f"{hid}: setpoints[{k}] key 'time_utc': {exc}")
    if problems:
        return sps, problems
    order = sorted(range(len(sps)), key=keys.__getitem__)  # stable for equal instants
    return [sps[i] for i in order], []


def plan_corrections(
    cfg: FieldConfig,
    corrections: Mapping[str, Any],
    params: bool = True,
    setpoints: str = "all",
    corrections_mrad: dict[str, dict[str, float]] | None = None,
) -> list[ActuatorCommand]:
    """Checked commands for a corrections file: per heliostat, the parameter set first,
    then its setpoints in time order (``setpoints``: ``"all"``, ``"latest"`` or
    ``"none"``). Raises SafetyRefused listing *every* problem; then nothing is sent.

    With ``corrections_mrad`` (a dict), the corrections the checks measured are put in it
    by heliostat id: ``"params_mrad"``, the largest mirror rotation the parameter set
    commands (:func:`param_correction_mrad`), and ``"setpoints_mrad"``, the largest
    joint-angle change of a sent setpoint from its nominal (either key absent when not
    checked), to be compared with ``cfg.safety.max_correction_mrad``. [mrad]"""
    if setpoints not in ("all", "latest", "none"):
        raise ValueError(f"setpoints must be all, latest or none, got {setpoints!r}")
    max_mrad = cfg.safety.max_correction_mrad
    problems: list[str] = []
    out: list[ActuatorCommand] = []
    for i, rec in enumerate(corrections["heliostats"]):
        hid = rec["heliostat"]
        if hid not in cfg.heliostats:
            problems.append(f"heliostats[{i}]: heliostat {hid!r} is not in the field config")
            continue
        h = cfg.heliostats[hid]
        shape = record_shape_problem(rec)
        if shape:
            problems.append(f"{hid}: {shape}")
            continue
        if params and rec.get("parameters") is not None:
            # An unresolved aim is a problem of its own, never a skipped check.
            aims, pp = _aims(cfg, rec)
            got: dict = {}
            vp, values = param_problems(
                h, rec.get("drive"), rec["parameters"], max_mrad, aims, measured=got
            )
            if corrections_mrad is not None and "params_mrad" in got:
                corrections_mrad.setdefault(hid, {})["params_mrad"] = got["params_mrad"]
            pp += vp
            problems += pp
            if not pp:
                block = block_values(h.kinematics.drive, values)
                out.append(ActuatorCommand(hid, h.address, "params", params=block))
        sps = rec.get("setpoints") or []
        if setpoints == "none" or not sps:
            continue
        sps, tp = _time_ordered(hid, sps)
        if tp:
            problems += tp
            continue
        if setpoints == "latest":
            sps = sps[-1:]
        for k, sp in enumerate(sps):
            try:
                st = (sp["axis1_steps"], sp["axis2_steps"])
                nom = (sp["nominal_axis1_steps"], sp["nominal_axis2_steps"])
            except (KeyError, TypeError):
                problems.append(
                    f"{hid}: setpoints[{k}] needs axis1_steps, axis2_steps, nominal_axis1_steps "
                    "and nominal_axis2_steps"
                )
                continue
            bad = [
                f"{hid}: setpoints[{k}] key {key!r}: expected a 32-bit integer step count, got "
                f"{_short(v)}"
                for key, v in zip(("nominal_axis1_steps", "nominal_axis2_steps"), nom, strict=True)
                if not _step_count(v)
            ]
            if bad:
                problems += bad
                continue
            pr = limit_problems(h, st)
            if not pr:
                got = {}
                pr = correction_problems(h, st, nom, max_mrad, measured=got)
                if corrections_mrad is not None:
                    mine = corrections_mrad.setdefault(hid, {})
                    d = got["setpoint_mrad"]
                    mine["setpoints_mrad"] = max(mine.get("setpoints_mrad", d), d)
            problems += [f"{p} (setpoint at {sp.get('time_utc', '?')})" for p in pr]
            if not pr:
                out.append(ActuatorCommand(hid, h.address, "move", (int(st[0]), int(st[1]))))
    if problems:
        n = len(problems)
        raise SafetyRefused(
            f"refusing the corrections ({n} problem{'s' if n > 1 else ''}); nothing sent: "
            + "; ".join(problems)
        )
    return out
