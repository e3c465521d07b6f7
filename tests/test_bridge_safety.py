"""Safety planning of corrections files: unresolved aims, firmware bounds on parameter
values, malformed files, and controller addresses — all refused before the wire."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from firmware_bridge.delivery import ActuatorCommand
from firmware_bridge.errors import SafetyRefused
from firmware_bridge.safety import MAX_PARAM_ANGLE_RAD, plan_corrections
from heliostat.cli import main
from heliostat.config import load_field
from heliostat.corrections_format import FORMAT as FMT
from heliostat.corrections_format import read_corrections
from heliostat.kinematics import error_names
from sim.controller_fixtures import field_toml
from sim.controllers import ControllerModel, EmulatedBus, specs_for_field


def _field(tmp_path, n=1, max_correction_mrad=20.0):
    p = tmp_path / "field.toml"
    p.write_text(field_toml(n, max_correction_mrad=max_correction_mrad))
    return p, load_field(p)


def _doc(parameters, target="cal1", setpoints=True):
    rec = {"heliostat": "H001", "drive": "azel", "parameters": parameters}
    if setpoints:
        rec["setpoints"] = [
            {
                "time_utc": "2026-06-21T10:00:00Z",
                "target": target,
                "aim_xy_m": [0.0, 0.0],
                "axis1_steps": 1000,
                "axis2_steps": 45000,
                "nominal_axis1_steps": 1000,
                "nominal_axis2_steps": 45000,
            }
        ]
    return {"format": FMT, "heliostats": [rec]}


# --------------------------------------------------------------------------- aim target
def test_unknown_target_refuses_the_parameter_set_instead_of_skipping_the_check(tmp_path):
    _, cfg = _field(tmp_path)
    # The elevation zero offset turns the mirror by the same angle (the elevation axis is
    # perpendicular to the normal): 80 mrad, four times the 20 mrad maximum.
    with pytest.raises(SafetyRefused, match="80.000 mrad"):
        plan_corrections(cfg, _doc({"axis2_zero_rad": 0.08}, target="cal1"))
    # The same set with a misspelt target must not slip through unchecked ...
    with pytest.raises(SafetyRefused, match=r"target\(s\) 'CAL1-typo' that are not in the field"):
        plan_corrections(cfg, _doc({"axis2_zero_rad": 0.08}, target="CAL1-typo"))
    # ... and neither does a harmless one: the check cannot be made, so nothing is sent.
    with pytest.raises(SafetyRefused, match="correction cannot be checked"):
        plan_corrections(cfg, _doc({"axis2_zero_rad": 1e-4}, target="CAL1-typo"))
    # Moves alone (--no-params) do not depend on the target and still go.
    cmds = plan_corrections(cfg, _doc({"axis2_zero_rad": 1e-4}, target="x"), params=False)
    assert [c.kind for c in cmds] == ["move"]


def test_field_without_targets_refuses_a_parameter_set(tmp_path):
    _, cfg = _field(tmp_path)
    bare = dataclasses.replace(cfg, targets={})
    with pytest.raises(SafetyRefused, match="has no targets"):
        plan_corrections(bare, _doc({"axis2_zero_rad": 1e-4}, setpoints=False))


def test_every_named_target_is_checked(tmp_path):
    _, cfg = _field(tmp_path)
    doc = _doc({"axis2_zero_rad": 0.01})
    sp2 = dict(doc["heliostats"][0]["setpoints"][0], target="nope", time_utc="2026-06-21T11:00Z")
    doc["heliostats"][0]["setpoints"].append(sp2)
    with pytest.raises(SafetyRefused, match="'nope'"):
        plan_corrections(cfg, doc)


def test_unknown_target_on_the_cli_sends_nothing(tmp_path, capsys):
    p, cfg = _field(tmp_path)
    ctls = [ControllerModel(s, param_names=error_names(s.drive)) for s in specs_for_field(cfg)]
    c = tmp_path / "c.json"
    c.write_text(json.dumps(_doc({"axis2_zero_rad": 0.08}, target="CAL1-typo")))
    with EmulatedBus(ctls, timing=False) as bus:
        rc = main(
            ["bridge", "apply", str(c), "--field", str(p), "--port", bus.port]
            + ["--journal", str(tmp_path / "j.sqlite"), "--setpoints", "none"]
        )
        assert rc == 2 and "CAL1-typo" in capsys.readouterr().err
        assert bus.stats.frames_in == 0 and ctls[0].param_set_id == 0


# --------------------------------------------------------------------------- value bounds
@pytest.mark.parametrize(
    "name",
    [
        "axis1_tilt_e_rad",
        "axis1_tilt_n_rad",
        "axis_nonorthogonality_rad",
        "axis1_zero_rad",
        "axis2_zero_rad",
        "mirror_collimation_rad",
    ],
)
def test_a_whole_turn_is_refused_not_taken_as_zero(tmp_path, name):
    # With a lax maximum correction the geometric check alone lets 2π through for the
    # tilts, collimation and non-orthogonality (a whole turn leaves the mirror where it
    # was); the firmware's 0.1 rad plausibility bound must refuse it.
    _, cfg = _field(tmp_path, max_correction_mrad=1e6)
    with pytest.raises(SafetyRefused, match=rf"{name} = 6.28318\d* rad exceeds .* 0.1 rad"):
        plan_corrections(cfg, _doc({name: 2 * math.pi}))


def test_angle_bound_is_the_firmware_one(tmp_path):
    _, cfg = _field(tmp_path, max_correction_mrad=1e6)
    assert MAX_PARAM_ANGLE_RAD == 0.1  # sim/controllers.py _PARAM_ANGLE_MAX_RAD
    (cmd,) = plan_corrections(cfg, _doc({"axis1_tilt_e_rad": 0.0999}, setpoints=False))
    assert cmd.params[0] == 0.0999
    with pytest.raises(SafetyRefused, match="axis1_tilt_e_rad = -0.1001 rad"):
        plan_corrections(cfg, _doc({"axis1_tilt_e_rad": -0.1001}, setpoints=False))


def test_accepted_sets_are_accepted_by_the_emulated_firmware(tmp_path):
    # What the bridge lets through the controller must not reject as out of range: the
    # sets at ± the bound pass both (max correction lax so only the bounds matter).
    from firmware_bridge.delivery import Bridge
    from firmware_bridge.transport import ModbusLink

    _, cfg = _field(tmp_path, max_correction_mrad=1e6)
    ctls = [ControllerModel(s, param_names=error_names(s.drive)) for s in specs_for_field(cfg)]
    doc = _doc({"axis1_tilt_e_rad": 0.0999, "axis1_offset_e_m": -0.5}, setpoints=False)
    cmds = plan_corrections(cfg, doc)
    with EmulatedBus(ctls, timing=False) as bus:
        with ModbusLink(bus.port, timeout_s=0.05, inter_frame_s=0.0) as link:
            (out,) = Bridge(link).run("k", "t", cmds)
    assert out.state == "confirmed"


def test_a_set_without_backlash_goes_as_the_older_firmware_block(tmp_path):
    """The backlash pair was appended to the parameter block (issue 17): a set without
    backlash is sent without it, so a controller predating the pair (15 az-el values)
    takes it; one with backlash needs the whole block, which such a controller rejects
    (a reject the bridge reports, nothing applied); a current controller takes both."""
    from dataclasses import replace

    from firmware_bridge.delivery import Bridge
    from firmware_bridge.transport import ModbusLink

    _, cfg = _field(tmp_path, max_correction_mrad=1e6)
    names = error_names("azel")
    assert names[-2:] == ("axis1_backlash_rad", "axis2_backlash_rad") and len(names) == 17
    (plain,) = plan_corrections(cfg, _doc({"axis1_zero_rad": 0.002}, setpoints=False))
    assert len(plain.params) == 15 and plain.params[names.index("axis1_zero_rad")] == 0.002
    doc = _doc({"axis1_zero_rad": 0.002, "axis2_backlash_rad": 0.0004}, setpoints=False)
    (full,) = plan_corrections(cfg, doc)
    assert len(full.params) == 17 and full.params[-1] == 0.0004
    (spec,) = specs_for_field(cfg)
    old = replace(spec, n_params=15)
    for ctl_spec, names_known, want in (
        (spec, names, {15: "confirmed", 17: "confirmed"}),
        (old, names[:15], {15: "confirmed", 17: "rejected"}),
    ):
        for cmd in (plain, full):
            ctl = ControllerModel(ctl_spec, param_names=names_known)
            with EmulatedBus([ctl], timing=False) as bus:
                with ModbusLink(bus.port, timeout_s=0.05, inter_frame_s=0.0) as link:
                    (out,) = Bridge(link).run("k", "t", [cmd])
            assert out.state == want[len(cmd.params)], (ctl_spec.n_params, len(cmd.params))


def test_the_correction_check_counts_the_backlash(tmp_path):
    """A backlash b moves a setpoint by b/2 per axis in the direction of the last move:
    the checked mirror turn grows by (|b1| + |b2|)/2 over the same set without it."""
    from firmware_bridge.safety import param_correction_mrad
    from heliostat.kinematics import KinematicErrors

    _, cfg = _field(tmp_path)
    h = cfg.heliostats["H001"]
    aim = cfg.targets["cal1"].centre_enu_m
    base = {"axis2_zero_rad": 0.002}
    without = param_correction_mrad(h, KinematicErrors.from_dict("azel", base), aim)
    with_b = param_correction_mrad(
        h,
        KinematicErrors.from_dict(
            "azel", {**base, "axis1_backlash_rad": 0.004, "axis2_backlash_rad": -0.002}
        ),
        aim,
    )
    # the elevation axis is perpendicular to the normal: the offset turns it by as much
    assert without == pytest.approx(2.0, rel=1e-6)
    assert with_b == pytest.approx(without + 3.0, rel=1e-9)
    # and a backlash alone over the limit is refused
    _, tight = _field(tmp_path, max_correction_mrad=2.0)
    with pytest.raises(SafetyRefused, match="turns the mirror by up to 2.500 mrad"):
        plan_corrections(tight, _doc({"axis2_backlash_rad": 0.005}, setpoints=False))


@pytest.mark.parametrize("value", [1e39, -3.5e38, 10**400, float("nan"), "0.01", True])
def test_values_that_are_not_finite_float32_are_refused(tmp_path, value):
    # float32 tops out at 3.4028235e38: 1e39 and -3.5e38 overflow when packed (they used
    # to reach the packing and end in an internal error); 10**400 does not even convert
    # to a float64.
    _, cfg = _field(tmp_path, max_correction_mrad=1e6)
    with pytest.raises(SafetyRefused, match="must be a finite number that fits a float32"):
        plan_corrections(cfg, _doc({"axis1_tilt_e_rad": value}, setpoints=False))


# --------------------------------------------------------------------------- malformed files
@pytest.mark.parametrize(
    "rec, where",
    [
        (
            {"heliostat": "H001", "setpoints": ["x"]},
            r"\(H001\): setpoints\[0\]: expected an object",
        ),
        (
            {"heliostat": "H001", "setpoints": {"a": 1}},
            r"\(H001\): key 'setpoints': expected a list",
        ),
        ({"heliostat": "H001", "parameters": [0.1]}, r"\(H001\): key 'parameters': expected an"),
        (
            {"heliostat": "H001", "setpoints": [{"target": 3}]},
            r"\(H001\): setpoints\[0\]: key 'target'",
        ),
    ],
)
def test_malformed_records_are_named_errors(tmp_path, capsys, rec, where):
    p, cfg = _field(tmp_path)
    c = tmp_path / "c.json"
    c.write_text(json.dumps({"format": FMT, "heliostats": [rec]}))
    with pytest.raises(ValueError, match=rf"c.json: heliostats\[0\] {where}"):
        read_corrections(c)
    with pytest.raises(SafetyRefused, match="H001: "):  # also without read_corrections
        plan_corrections(cfg, {"format": FMT, "heliostats": [rec]})
    rc = main(["bridge", "apply", str(c), "--field", str(p), "--port", "loop://", "--dry-run"])
    assert rc == 2 and "H001" in capsys.readouterr().err


@pytest.mark.parametrize("nominal", ["x", [1], 1.5, 2**40, None])
def test_nominal_steps_must_be_integers(tmp_path, capsys, nominal):
    p, cfg = _field(tmp_path)
    doc = _doc({}, setpoints=True)
    doc["heliostats"][0]["setpoints"][0]["nominal_axis1_steps"] = nominal
    with pytest.raises(SafetyRefused, match="'nominal_axis1_steps': expected a 32-bit integer"):
        plan_corrections(cfg, doc)
    c = tmp_path / "c.json"
    c.write_text(json.dumps(doc))
    rc = main(["bridge", "apply", str(c), "--field", str(p), "--port", "loop://", "--dry-run"])
    # The file's reader refuses it first (planning a document refuses it too, above).
    msg = "heliostats[0] (H001): setpoints[0] key 'nominal_axis1_steps'"
    assert rc == 2 and msg in capsys.readouterr().err


def test_huge_integer_parameter_is_exit_2_not_an_internal_error(tmp_path, capsys):
    p, _ = _field(tmp_path)
    c = tmp_path / "c.json"
    c.write_text(json.dumps(_doc({"axis1_zero_rad": 10**400}, setpoints=False)))
    rc = main(["bridge", "apply", str(c), "--field", str(p), "--port", "loop://", "--dry-run"])
    err = capsys.readouterr().err
    assert rc == 2 and "H001: parameter axis1_zero_rad must be a finite number" in err


# --------------------------------------------------------------------------- addresses
@pytest.mark.parametrize("address", [0, -1, 248, 300, True, 1.0])
def test_command_address_must_be_unicast(address):
    with pytest.raises(ValueError, match=r"address must be an integer 1\.\.247"):
        ActuatorCommand("H001", address, "stow")
    assert ActuatorCommand("H001", 247, "stow").address == 247


# --------------------------------------------------------------------------- setpoint order
def _two_setpoints(t_a, t_b):
    doc = _doc({}, target="cal1")
    sp = doc["heliostats"][0]["setpoints"][0]
    a = dict(sp, time_utc=t_a, axis1_steps=1001, nominal_axis1_steps=1001)
    b = dict(sp, time_utc=t_b, axis1_steps=1002, nominal_axis1_steps=1002)
    doc["heliostats"][0]["setpoints"] = [a, b]
    return doc


def test_latest_setpoint_is_the_latest_instant_not_the_latest_text(tmp_path):
    _, cfg = _field(tmp_path)
    # 14:00+02:00 is 12:00Z, half an hour before 12:30Z, though its text sorts after it.
    doc = _two_setpoints("2025-06-21T14:00:00+02:00", "2025-06-21T12:30:00Z")
    moves = [c for c in plan_corrections(cfg, doc, setpoints="latest") if c.kind == "move"]
    assert [m.setpoints_steps[0] for m in moves] == [1002]
    every = [c for c in plan_corrections(cfg, doc, setpoints="all") if c.kind == "move"]
    assert [m.setpoints_steps[0] for m in every] == [1001, 1002]


@pytest.mark.parametrize("bad", ["2025-06-21T12:30:00", "not a time", None])
def test_setpoint_times_must_be_aware_to_be_ordered(tmp_path, bad):
    _, cfg = _field(tmp_path)
    doc = _two_setpoints("2025-06-21T14:00:00+02:00", bad)
    with pytest.raises(SafetyRefused, match=r"H001: setpoints\[1\] key 'time_utc'"):
        plan_corrections(cfg, doc, setpoints="latest")
