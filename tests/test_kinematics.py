"""Kinematics: hand-worked poses, inverse∘forward round trips, error-model semantics."""

import numpy as np
import pytest

from heliostat.config import load_field
from heliostat.frames import angle_between, azel_to_enu, normalize, reflect, rot_x, rot_z
from heliostat.kinematics import (
    HeliostatKinematics,
    KinematicErrors,
    KinematicsError,
    LinearAxis,
    RotaryAxis,
    default_groups,
    error_names,
    group_names,
    names_for_groups,
)
from sim.observe import draw_true_errors

FIELD = load_field("tests/data/field_small.toml")
AZEL = FIELD.heliostats["H001"].kinematics
LINEAR = FIELD.heliostats["AA39"].kinematics
AIM = FIELD.targets["cal1"].centre_enu_m


def _random_errors(drive, rng):
    # Larger than realistic (up to 3 mrad, 1 cm, 2 mm stroke) so every term matters.
    return draw_true_errors(drive, rng, angular_mrad=(0.5, 3.0), translation_m=0.01)


def test_rotary_axis_by_hand():
    axis = RotaryAxis(steps_per_rad=1000.0, zero_rad=0.5, min_steps=-10, max_steps=10)
    assert axis.steps_to_angle(250.0) == pytest.approx(0.75)
    assert axis.angle_to_steps(0.75) == pytest.approx(250.0)
    assert axis.steps_to_angle(250.0, zero_error_rad=0.01) == pytest.approx(0.76)


def test_linear_axis_law_of_cosines_by_hand():
    # A 3-4-5 triangle: offset 0.3 m, lever 0.4 m, stroke 0.5 m -> right angle at the joint.
    axis = LinearAxis(
        increment_steps_per_m=1e4,
        initial_stroke_m=0.5,
        offset_m=0.3,
        pivot_radius_m=0.4,
        initial_angle_rad=0.0,
        clockwise=True,
        min_steps=-3000,
        max_steps=2000,
    )
    assert axis._psi(0.5) == pytest.approx(np.pi / 2, abs=1e-15)
    # Shrinking the stroke to sqrt(0.3² + 0.4² − 2·0.3·0.4·cos 60°) = sqrt(0.13) closes the
    # angle to 60°: the clockwise joint turns by +30°.
    steps = (np.sqrt(0.13) - 0.5) * 1e4
    assert axis.steps_to_angle(steps) == pytest.approx(np.radians(30.0), abs=1e-12)
    assert axis.angle_to_steps(np.radians(30.0)) == pytest.approx(steps, abs=1e-9)
    ccw = LinearAxis(1e4, 0.5, 0.3, 0.4, 0.0, False, -3000, 2000)
    assert ccw.steps_to_angle(steps) == pytest.approx(np.radians(-30.0), abs=1e-12)
    # A stroke that cannot close the triangle is NaN, not a number.
    assert np.isnan(axis.steps_to_angle(1e4 * 0.3))


def test_azel_pose_by_hand():
    # Azimuth 90° (east), elevation 30°: n = (cos 30°, 0, sin 30°).
    k = HeliostatKinematics(
        "azel", (0.0, 0.0, 0.0), RotaryAxis(1.0, 0.0, -10, 10), RotaryAxis(1.0, 0.0, -10, 10)
    )
    pose = k.forward_angles([[np.pi / 2, np.pi / 6]])
    np.testing.assert_allclose(pose.u_normal_enu[0], [np.sqrt(3) / 2, 0, 0.5], atol=1e-15)
    np.testing.assert_allclose(pose.centre_enu_m[0], 0.0, atol=1e-15)


def test_linear_pose_by_hand():
    # ARTIST chain: n = R_x(θ1) R_z(θ2) (0, −1, 0) = (sin θ2, −cos θ2 cos θ1, −cos θ2 sin θ1).
    k = LINEAR
    th = np.array([[-np.pi / 2, 0.0], [-np.pi / 4, np.pi / 6]])
    n = k.forward_angles(th).u_normal_enu
    np.testing.assert_allclose(n[0], [0, 0, 1], atol=1e-15)
    c2 = np.cos(np.pi / 6)
    np.testing.assert_allclose(n[1], [0.5, -c2 * np.sqrt(0.5), c2 * np.sqrt(0.5)], atol=1e-15)
    # Mirror centre: position + R_x(θ1) t2 + R_x(θ1) R_z(θ2) t_m (ARTIST applies the second
    # joint's translation after the first rotation). At θ = (−90°, 0): t2 = (0, 0, 0.315)
    # turns to (0, 0.315, 0) and t_m = (0, −0.17755, −0.4045) to (0, −0.4045, 0.17755).
    c = k.forward_angles(th[:1]).centre_enu_m[0]
    np.testing.assert_allclose(c, [5.0, 60.0 + 0.315 - 0.4045, 0.17755], atol=1e-12)


@pytest.mark.parametrize("kin", [AZEL, LINEAR], ids=["azel", "linear"])
def test_inverse_forward_round_trip_below_a_microradian(kin):
    rng = np.random.default_rng(4242)
    for _ in range(5):
        errors = _random_errors(kin.drive, rng)
        n = 300
        sun = azel_to_enu(
            rng.uniform(np.radians(60), np.radians(300), n),
            rng.uniform(np.radians(8), np.radians(80), n),
        )
        aim = AIM + rng.uniform(-2.5, 2.5, (n, 3)) * [1, 0, 1]
        steps = kin.inverse(aim, sun, errors)
        r, c = kin.reflected(steps, sun, errors)
        miss = angle_between(r, normalize(aim - c))
        assert miss.max() < 1e-6  # the bound; the solver reaches ~1e-12


@pytest.mark.parametrize("kin", [AZEL, LINEAR], ids=["azel", "linear"])
def test_steps_angles_round_trip(kin):
    rng = np.random.default_rng(11)
    errors = _random_errors(kin.drive, rng)
    lo = [a.min_steps for a in kin.axes]
    hi = [a.max_steps for a in kin.axes]
    steps = rng.uniform(lo, hi, size=(200, 2))
    angles = kin.steps_to_angles(steps, errors)
    ok = np.all(np.isfinite(angles), axis=1)
    assert ok.mean() > 0.9
    np.testing.assert_allclose(kin.angles_to_steps(angles[ok], errors), steps[ok], atol=1e-6)


@pytest.mark.parametrize("kin", [AZEL, LINEAR], ids=["azel", "linear"])
def test_zero_errors_equal_nominal_exactly(kin):
    steps = np.array([[1000.0, 30000.0], [20000.0, 40000.0]])
    a = kin.forward(steps)
    b = kin.forward(steps, KinematicErrors.zeros(kin.drive))
    assert np.array_equal(a.u_normal_enu, b.u_normal_enu)
    assert np.array_equal(a.centre_enu_m, b.centre_enu_m)


def test_azimuth_zero_offset_rotates_about_vertical():
    e = KinematicErrors.from_dict("azel", {"axis1_zero_rad": 2e-3})
    steps = np.array([[10000.0, 40000.0]])
    n0 = AZEL.forward(steps).u_normal_enu[0]
    n1 = AZEL.forward(steps, e).u_normal_enu[0]
    # Azimuth is clockwise from north: a positive offset is a rotation by −2 mrad about up.
    np.testing.assert_allclose(n1, rot_z(-2e-3) @ n0, atol=1e-15)


def test_first_axis_tilt_tilts_the_whole_heliostat():
    e = KinematicErrors.from_dict("azel", {"axis1_tilt_e_rad": 1e-3})
    steps = np.array([[0.0, 0.0], [50000.0, 70000.0]])
    n0 = AZEL.forward(steps).u_normal_enu
    n1 = AZEL.forward(steps, e).u_normal_enu
    np.testing.assert_allclose(n1, n0 @ rot_x(1e-3).T, atol=1e-15)  # A1 = R_x(tilt_e) R_y(...)


def test_beam_error_is_twice_normal_error_at_normal_incidence():
    # A 1 mrad normal error moves the reflected beam by 2 mrad (the reflection doubling).
    n = np.array([0.0, 0.0, 1.0])
    n_err = np.array([np.sin(1e-3), 0.0, np.cos(1e-3)])
    s = np.array([0.0, 0.0, 1.0])
    assert angle_between(reflect(n, s), reflect(n_err, s)) == pytest.approx(2e-3, rel=1e-9)


def test_error_groups():
    assert names_for_groups("azel", default_groups("azel")) == (
        "axis1_tilt_e_rad",
        "axis1_tilt_n_rad",
        "axis_nonorthogonality_rad",
        "axis1_zero_rad",
        "axis2_zero_rad",
        "mirror_collimation_rad",
    )
    assert len(names_for_groups("linear", default_groups("linear"))) == 8
    assert "actuator_stroke" in group_names("linear") and "actuator_stroke" not in group_names(
        "azel"
    )
    assert len(error_names("linear")) == len(set(error_names("linear")))
    with pytest.raises(ValueError, match="unknown parameter group 'tilt'"):
        names_for_groups("azel", ["tilt"])
    e = KinematicErrors.zeros("linear").with_vector(["axis1_zero_rad"], [0.5])
    assert e["axis1_zero_rad"] == 0.5 and e.to_vector(["axis1_zero_rad", "axis2_zero_rad"])[1] == 0
    with pytest.raises(ValueError, match="unknown linear error"):
        KinematicErrors.from_dict("linear", {"axis1_tilt_e_rad": 1.0})
    with pytest.raises(ValueError, match="finite"):
        KinematicErrors("azel", (np.nan,) + (0.0,) * (len(error_names("azel")) - 1))


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="shape"):
        AZEL.forward(np.zeros((3, 3)))
    with pytest.raises(KinematicsError, match="finite"):
        AZEL.forward([[np.nan, 0.0]])
    with pytest.raises(KinematicsError, match="finite"):
        AZEL.inverse([np.nan, 0, 0], [0, 0, 1.0])
    with pytest.raises(KinematicsError, match="actuator geometry"):
        LINEAR.forward([[0.0, 1e7]])
    with pytest.raises(ValueError, match="drive"):
        AZEL.forward([[0.0, 0.0]], KinematicErrors.zeros("linear"))
    # a scalar pose works and gives shape (1, 3)
    assert AZEL.forward([0.0, 0.0]).u_normal_enu.shape == (1, 3)


def test_within_limits():
    ok = LINEAR.within_limits([[0, 0], [70000, 70000], [-1, 5], [5, 70001]])
    assert ok.tolist() == [True, True, False, False]


def test_azel_inverse_near_zenith_stays_on_the_usual_branch():
    # Sun at 60° elevation due south, aim straight back toward it: the normal is ~0.01-1°
    # from the zenith, where azimuth is ill-conditioned. The solution must keep the
    # azimuth near mid-travel and the elevation at most 90°, i.e. inside the actuator
    # travel (the plain solve wound axis 1 to −487° here).
    from sim.field import azel_drive

    kin = azel_drive((0.0, 50.0, 0.0))
    s = azel_to_enu(np.radians(180.0), np.radians(60.0))
    c = kin.forward_angles([[np.pi, np.pi / 2]]).centre_enu_m[0]
    d = np.array([-s[0], -s[1], s[2]])
    e = KinematicErrors.from_dict(
        "azel", {"axis1_tilt_e_rad": 2e-3, "axis_nonorthogonality_rad": 2e-3}
    )
    for errors in (None, e):
        for eps_m in (0.01, 0.1, 1.0):
            aim = c + 50 * d + np.array([eps_m, eps_m, 0.0])
            theta = kin.inverse_angles(aim, s, errors)
            assert theta[0, 1] <= np.pi / 2
            steps = kin.inverse(aim, s, errors)
            assert kin.within_limits(steps)[0]
            r, cc = kin.reflected(steps, s, errors)
            assert angle_between(r, normalize(aim - cc))[0] < 1e-9
