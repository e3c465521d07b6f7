"""Config validation: errors name the file and key; round trips are exact."""

import math

import numpy as np
import pytest

from heliostat.config import (
    ConfigError,
    dumps_toml,
    field_to_dict,
    load_camera,
    load_field,
    look_at,
)

SMALL = "tests/data/field_small.toml"


def _write(tmp_path, text, name="field.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def _mutate(tmp_path, old, new):
    text = open(SMALL).read()
    assert old in text
    return _write(tmp_path, text.replace(old, new, 1))


def test_small_field_loads():
    f = load_field(SMALL)
    assert set(f.heliostats) == {"H001", "H002", "AA39"}
    h = f.heliostats["H001"]
    assert h.kinematics.drive == "azel" and h.address == 1 and h.bus == "bus1"
    assert h.kinematics.axis1.steps_per_rad == pytest.approx(1000.0 * 180 / math.pi)
    assert f.heliostats["AA39"].mirror.height_m == 2.44  # per-heliostat override
    assert f.heliostats["AA39"].mirror.reflectivity == 0.93  # inherited from [mirror]
    t = f.targets["cal1"]
    np.testing.assert_allclose(t.corners_enu_m()[0], [2.5, 0, 52.5])  # UL is west & up
    np.testing.assert_allclose(t.enu_to_plane(t.plane_to_enu([[0.3, -1.2]])), [[0.3, -1.2]])
    assert f.by_address("bus1", 3).id == "AA39" and f.by_address("bus1", 9) is None


def test_field_round_trip_through_toml(tmp_path):
    f = load_field(SMALL)
    p = _write(tmp_path, dumps_toml(field_to_dict(f)))
    g = load_field(p)
    for hid, h in f.heliostats.items():
        assert g.heliostats[hid].kinematics == h.kinematics
        assert g.heliostats[hid].mirror == h.mirror
    assert g.targets["cal1"].markers == f.targets["cal1"].markers
    assert g.site == f.site and g.safety == f.safety and g.buses == f.buses


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("latitude_deg = 50.913296", "latitude_deg = 95.0", r"site\.latitude_deg.*\[-90"),
        ("latitude_deg = 50.913296", "", r"site\.latitude_deg': missing"),
        ('drive = "slew"', 'drive = "nope"', r"heliostats\[0\]\.drive.*no drive template 'nope'"),
        ("address = 2", "address = 1", r"heliostats\[1\]\.address.*already used by 'H001'"),
        ("address = 2", "address = 300", r"heliostats\[1\]\.address.*\[1, 247\]"),
        ("width_m = 5.0", "width_m = -5.0", r"targets\[0\]\.width_m"),
        ("steps_per_deg = 1000.0", "steps_per_deg = 'x'", r"drives\.slew\.axis1\.steps_per_deg"),
        ("clockwise = false", "clockwise = 0", r"drives\.juelich\.axis1\.clockwise.*true or false"),
        ("min_steps = 0", "min_steps = 80000", r"drives\.juelich\.axis1\.max_steps.*exceed"),
        ("max_correction_mrad = 20.0", "max_correction_mrad = 0.0", r"safety\.max_correction"),
        ("[site]", "[site]\ncolour = 1", r"site\.colour': unknown key"),
        ("offset_m = 0.34", "offset_m = 0.01", r"drives\.juelich\.axis1\.initial_stroke_m"),
    ],
)
def test_errors_name_file_and_key(tmp_path, old, new, message):
    p = _mutate(tmp_path, old, new)
    with pytest.raises(ConfigError, match=message) as info:
        load_field(p)
    assert str(p) in str(info.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_field(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_field(_write(tmp_path, "[site\nlat = 1"))


CAMERA = """
[camera]
width_px = 1280
height_px = 1024
fx_px = 3000.0
fy_px = 3000.0
dist_coeffs = [-0.1, 0.02, 0.0, 0.0, 0.0]
bit_depth = 12
position_enu_m = [0.0, 60.0, 1.5]
look_at_enu_m = [0.0, 0.0, 50.0]
target = "cal1"
"""


def test_camera_loads_and_projects(tmp_path):
    cam = load_camera(_write(tmp_path, CAMERA, "camera.toml"))
    assert cam.k_px[0, 2] == 640.0 and cam.bit_depth == 12
    # The look-at point projects to the principal point (distortion is zero on axis).
    np.testing.assert_allclose(cam.project([0.0, 0.0, 50.0]), [[640.0, 512.0]], atol=1e-9)
    # A point to the camera's right (west, the camera looks south) lands right of centre.
    assert cam.project([-1.0, 0.0, 50.0])[0, 0] > 640.0
    r = look_at([0, 0, 0], [0, 10, 0])
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-15)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("bit_depth = 12", "bit_depth = 11", r"camera\.bit_depth"),
        ("fx_px = 3000.0", "fx_px = 0.0", r"camera\.fx_px"),
        ('target = "cal1"', 'target = "cal1"\ncorners_px = [[1, 2], [3, 4]]', r"corners_px"),
        (
            "look_at_enu_m = [0.0, 0.0, 50.0]",
            "look_at_enu_m = [0.0, 60.0, 90.0]",
            r"look_at_enu_m.*straight up",
        ),
    ],
)
def test_camera_errors(tmp_path, old, new, message):
    with pytest.raises(ConfigError, match=message):
        load_camera(_write(tmp_path, CAMERA.replace(old, new), "camera.toml"))


def test_target_corner_marks_round_trip_and_errors(tmp_path):
    """[targets.corner_marks] (the painted L/T marks' shape) is read, written back and
    read again unchanged; a bad kind or an impossible shape names the key."""
    base = open(SMALL).read()
    marks = (
        'corner_marks = { kinds = ["L", "L", "T", "T"], bar_width_m = 0.1, '
        "arm_length_m = 0.6, t_half_length_m = 0.3 }\n"
    )
    i = base.index("[[targets]]")
    j = base.index("\n\n", i)
    p = tmp_path / "field.toml"
    p.write_text(base[:j] + "\n" + marks + base[j:])
    field = load_field(p)
    cm = next(iter(field.targets.values())).corner_marks
    assert cm.kinds == ("L", "L", "T", "T") and cm.bar_width_m == 0.1
    assert (cm.arm_length_m, cm.t_half_length_m) == (0.6, 0.3)
    q = _write(tmp_path, dumps_toml(field_to_dict(field)), "again.toml")
    assert next(iter(load_field(q).targets.values())).corner_marks == cm
    # without the table: None (the detector then uses the Jülich default)
    assert next(iter(load_field(SMALL).targets.values())).corner_marks is None
    for bad, key in (
        ('corner_marks = { kinds = ["L", "X", "T", "T"] }\n', "kinds"),
        ("corner_marks = { bar_width_m = 0.5, arm_length_m = 0.6 }\n", "arm_length_m"),
        ("corner_marks = { bar_width_m = -1 }\n", "bar_width_m"),
        ("corner_marks = { arms = 2 }\n", "arms"),
    ):
        p.write_text(base[:j] + "\n" + bad + base[j:])
        with pytest.raises(ValueError, match=key):
            load_field(p)
