"""Drive types: the registry, each drive module's declarations, and the chain reading them."""

import re

import numpy as np
import pytest

import heliostat.kinematics.model as model
from heliostat.kinematics import DRIVES, HeliostatKinematics, KinematicErrors, drive
from heliostat.kinematics.model import nominal_angles

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
        pose = kin.forward(steps, e)
        moved = max(
            np.linalg.norm(pose.u_normal_enu - base.u_normal_enu),
            np.linalg.norm(pose.centre_enu_m - base.centre_enu_m),
        )
        # 1e-3 of anything moves by ~1e-4 at least on these geometries; 1e-9 is far
        # above rounding (1e-15) and far below any real effect.
        assert moved > 1e-9, p
