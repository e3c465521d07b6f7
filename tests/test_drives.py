"""Drive types: the registry, each drive module's declarations, and the chain reading them."""

import dataclasses
import json
import re

import numpy as np
import pandas as pd
import pytest

import heliostat.kinematics.model as model
from firmware_bridge import registers as R
from heliostat.calibration import fit_heliostat, observations_from_frame, resolve_names
from heliostat.cli import main
from heliostat.config import ConfigError, load_field
from heliostat.kinematics import (
    DRIVES,
    Drive,
    HeliostatKinematics,
    KinematicErrors,
    RotaryAxis,
    drive,
    error_names,
    group_names,
    names_for_groups,
)
from heliostat.kinematics.drives import ParamGroup, registered
from heliostat.kinematics.model import nominal_angles
from sim.controllers import ControllerModel, EmulatedBus, specs_for_field
from sim.field import field_toml, generate_field
from sim.observe import draw_true_errors, simulate_observations

_LETTER = {"E": "e", "N": "n", "U": "u"}


def _table_rows() -> dict[str, list[str]]:
    """Rows of the chain table in heliostat/kinematics/model.py's docstring, by drive."""
    rows = {}
    for line in model.__doc__.splitlines():
        m = re.match(r"``([a-z0-9_-]+)``\s+(.*)", line)
        if m:
            rows[m.group(1)] = re.split(r"\s{2,}", m.group(2).strip())
    return rows


def test_registry_lists_the_built_in_drives():
    assert set(DRIVES) >= {"azel", "linear"}
    assert drive("azel") is DRIVES["azel"]
    codes = [d.register_code for d in DRIVES.values()]
    assert len(set(codes)) == len(codes)


def test_unknown_drive_names_the_known_ones():
    with pytest.raises(
        ValueError, match=r"unknown drive type 'carousel'; known drive types: azel, linear"
    ):
        drive("carousel")


@pytest.mark.parametrize("name", ["azel", "linear"])
def test_docstring_chain_table_matches_the_drive_modules(name):
    row = _table_rows()[name]
    k = drive(name).chain
    r1, r2, n0, a1, a2, c = row[:6]
    m1 = re.match(r"R_([enu])\((−?)θ1\)", r1)
    assert (m1.group(1), -1 if m1.group(2) else 1) == (k.joint1, k.joint1_sign)
    m2 = re.match(r"R_([enu])\((−?)θ2\)", r2)
    assert (m2.group(1), -1 if m2.group(2) else 1) == (k.joint2, k.joint2_sign)
    assert n0.replace("−", "-")[0] + _LETTER[n0[1]] == k.normal0
    tilts = re.findall(r"R_([enu])\(tilt_([enu])\)", a1)
    assert all(rot == name_ for rot, name_ in tilts)
    assert tuple(rot for rot, _ in tilts) == k.tilt
    assert a2 == f"R_{k.nonorthogonality}" and c == f"R_{k.collimation}"


@pytest.mark.parametrize("name", list(DRIVES))
def test_nominal_angles_invert_the_error_free_chain(name):
    # Random joint angles inside the analytic branch (θ2 within ±80°): the nominal normal
    # maps back to the same angles. Tolerance 1e-12 rad: arcsin/atan2 of unit vectors
    # lose a few ulp, nowhere near 1e-12 away from θ2 = ±90°.
    d = drive(name)
    kin = HeliostatKinematics(
        name, (0.0, 0.0, 0.0), d.typical.axis1, d.typical.axis2
    )  # axes only fix the type; forward_angles ignores steps
    rng = np.random.default_rng(20260101)
    theta = np.column_stack(
        [rng.uniform(-3.0, 3.0, 200), rng.uniform(-np.radians(80), np.radians(80), 200)]
    )
    n = kin.forward_angles(theta).u_normal_enu
    np.testing.assert_allclose(nominal_angles(d.chain, n), theta, atol=1e-12)


@pytest.mark.parametrize("name", list(DRIVES))
def test_every_declared_parameter_moves_the_beam(name):
    # A declared parameter the chain never read would be fitted as pure noise: 1 mrad
    # (or 1 cm, 1 mm of stroke) of each must move the normal or the centre.
    d = drive(name)
    t = d.typical
    kin = HeliostatKinematics(
        name,
        (0.0, 50.0, 0.0),
        t.axis1,
        t.axis2,
        t.axis1_offset_enu_m,
        t.axis2_offset_enu_m,
        t.mirror_offset_enu_m,
    )
    steps = [[0.5 * (kin.axis1.min_steps + kin.axis1.max_steps), 0.5 * kin.axis2.max_steps]]
    base = kin.forward(steps)
    for p in d.error_names:
        e = KinematicErrors.from_dict(name, {p: 1e-3})
        # the backlash acts with a known direction of the last move (+1 on both axes)
        pose = kin.forward(steps, e, approach=[[1.0, 1.0]])
        moved = max(
            np.linalg.norm(pose.u_normal_enu - base.u_normal_enu),
            np.linalg.norm(pose.centre_enu_m - base.centre_enu_m),
        )
        # 1e-3 of anything moves by ~1e-4 at least on these geometries; 1e-9 is far
        # above rounding (1e-15) and far below any real effect.
        assert moved > 1e-9, p


# --------------------------------------------------------------------------- a third drive
def _narrow_azel() -> Drive:
    """A throw-away third drive: az-el with ±90° of azimuth travel, its own register code
    and only the angular parameter groups (6 parameters instead of az-el's 17)."""
    base = drive("azel")
    ax1 = base.typical.axis1
    return dataclasses.replace(
        base,
        name="azel-narrow",
        title="az-el, ±90° azimuth (test only)",
        register_code=77,
        groups=tuple(g for g in base.groups if g.name not in ("joint_translations", "backlash")),
        typical=dataclasses.replace(
            base.typical, axis1=RotaryAxis(ax1.steps_per_rad, ax1.zero_rad, -90_000, 90_000)
        ),
    )


NARROW_NAMES = (
    "axis1_tilt_e_rad",
    "axis1_tilt_n_rad",
    "axis_nonorthogonality_rad",
    "axis1_zero_rad",
    "axis2_zero_rad",
    "mirror_collimation_rad",
)


def test_a_registered_third_drive_is_picked_up_everywhere(tmp_path, capsys):
    narrow = _narrow_azel()
    path = tmp_path / "field.toml"
    with registered(narrow):
        # the simulator generates it, the config writer writes it ...
        cfg0 = generate_field(3, np.random.default_rng(5), drives=narrow.name)
        path.write_text(field_toml(cfg0))
        # ... and the config loader reads it back with its axis limits
        cfg = load_field(path)
        assert cfg.heliostats == cfg0.heliostats
        h = cfg.heliostats["H001"]
        assert h.kinematics.drive == "azel-narrow"
        assert (h.kinematics.axis1.min_steps, h.kinematics.axis1.max_steps) == (-90_000, 90_000)

        # error model: names, groups, defaults come from the new declaration
        assert error_names(narrow.name) == NARROW_NAMES
        assert group_names(narrow.name) == (
            "first_axis_tilt",
            "nonorthogonality",
            "zero_offsets",
            "canting",
        )
        assert resolve_names(narrow.name) == NARROW_NAMES
        with pytest.raises(ValueError, match="unknown parameter group 'joint_translations'"):
            names_for_groups(narrow.name, ["joint_translations"])

        # register map, emulator and bridge: DRIVE = 77, MAX_PARAMS = 6
        assert R.drive_code(narrow.name) == 77 and R.drive_name(77) == narrow.name
        ctls = [ControllerModel(s, param_names=error_names(s.drive)) for s in specs_for_field(cfg)]
        assert [c.regs[R.REG_DRIVE] for c in ctls] == [77, 77, 77]
        bus = EmulatedBus(ctls, timing=False)
        bus.start()
        try:
            rc = main(["bridge", "ping", "--port", bus.port, "--field", str(path), "--json"])
            rows = json.loads(capsys.readouterr().out)
        finally:
            bus.stop()
        assert rc == 0
        assert [(r["drive"], r["n_params"]) for r in rows] == [("azel-narrow", 6)] * 3

        # calibration: noise-free observations give back the true errors. The simulated
        # beam is exact for the rounded steps, so the fit ends at the optimiser's
        # tolerance; 1e-9 rad is far below anything physical.
        rng = np.random.default_rng(17)
        truth = draw_true_errors(narrow.name, rng)
        days = pd.date_range("2025-03-01T00:00Z", periods=5, freq="1D")
        times = [d + pd.Timedelta(minutes=m) for d in days for m in np.linspace(420, 920, 6)]
        df = simulate_observations(h, truth, cfg.targets["cal1"], cfg.site, times, rng, 0.0)
        obs, rejected = observations_from_frame(df, cfg)
        assert rejected == []
        r = fit_heliostat(h.kinematics, obs["H001"])
        assert r.success and r.names == NARROW_NAMES
        np.testing.assert_allclose(r.errors.to_vector(r.names), truth.to_vector(r.names), atol=1e-9)

    # once it is gone, the same file is refused with the known types listed
    with pytest.raises(
        ConfigError, match=r"drives\.azel-narrow-1\.type.*known drive types: azel, linear"
    ):
        load_field(path)
    assert R.drive_name(77) is None


def test_a_drive_cannot_take_a_used_name_or_register_code():
    narrow = _narrow_azel()
    with pytest.raises(ValueError, match="'azel' is already registered"):
        with registered(dataclasses.replace(narrow, name="azel")):
            pass
    with pytest.raises(ValueError, match="register code 2 is already used by 'linear'"):
        with registered(dataclasses.replace(narrow, register_code=2)):
            pass
    assert "azel-narrow" not in DRIVES


def test_a_drive_declaring_a_parameter_the_chain_never_reads_is_refused():
    base = drive("azel")
    bogus = ParamGroup("first_axis_tilt", ("axis1_tilt_u_rad",), 0.05, True)
    with pytest.raises(ValueError, match="the chain never reads parameter.*axis1_tilt_u_rad"):
        dataclasses.replace(base, groups=(bogus, *base.groups[1:]))
    with pytest.raises(ValueError, match="normal0 must be"):
        dataclasses.replace(base.chain, normal0="+u")


@pytest.mark.parametrize("name", list(DRIVES))
def test_every_drive_fits_the_register_map(name):
    # The parameter block holds MAX_PARAMS float32 values; the DRIVE register is a u16.
    d = drive(name)
    assert len(d.error_names) <= R.MAX_PARAMS
    assert R.drive_name(R.drive_code(name)) == name
