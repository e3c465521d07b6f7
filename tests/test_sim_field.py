"""Simulated field, truth and sky (sim/field.py, sim/sky.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from heliostat.config import load_field
from heliostat.frames import Site
from heliostat.kinematics import error_names
from heliostat.kinematics.drives._base import BACKLASH
from sim.field import (
    AZEL_MIRROR,
    LINEAR_MIRROR,
    draw_truth,
    field_toml,
    generate_field,
    load_truth,
    radial_staggered_layout,
    truth_json,
)
from sim.sky import Sky, cloud_series, daylight_windows


def _positions(field_cfg):
    return np.array([h.position_enu_m for h in field_cfg.heliostats.values()])


@pytest.fixture(scope="module")
def field50():
    return generate_field(50, np.random.default_rng(20250401), drives="mixed")


def test_layout_count_spacing_and_side(field50):
    pos = _positions(field50)
    assert pos.shape == (50, 3)
    diag = max(math.hypot(m.width_m, m.height_m) for m in (AZEL_MIRROR, LINEAR_MIRROR))
    d = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)
    d[np.diag_indices(50)] = np.inf
    # mirrors rotate about their pivots: pivots closer than one diagonal could collide
    assert d.min() > diag
    # all north of the tower (northern site), inside the ±65° sector, at realistic range
    assert np.all(pos[:, 1] > 0)
    bearing = np.degrees(np.arctan2(pos[:, 0], pos[:, 1]))
    assert np.all(np.abs(bearing) <= 65.0 + 1e-9)
    r = np.hypot(pos[:, 0], pos[:, 1])
    assert 29.9 < r.min() and r.max() < 300.0
    # staggered: consecutive rows have different bearings (half-slot shift)
    rows = sorted(set(np.round(r, 1)))
    b0 = set(np.round(bearing[np.isclose(r, rows[0], atol=0.05)], 3))
    b1 = set(np.round(bearing[np.isclose(r, rows[1], atol=0.05)], 3))
    assert b0 and b1 and not (b0 & b1)


def test_layout_rejects_bad_input():
    with pytest.raises(ValueError, match="positive integer"):
        radial_staggered_layout(0, 4.0)
    with pytest.raises(ValueError, match="exceed one mirror diagonal"):
        radial_staggered_layout(10, 4.0, azimuthal_spacing=0.9)


def test_generated_field_round_trips_through_toml(field50, tmp_path):
    path = tmp_path / "field.toml"
    path.write_text(field_toml(field50))
    back = load_field(path)
    assert list(back.heliostats) == list(field50.heliostats)
    for hid, h in field50.heliostats.items():
        b = back.heliostats[hid]
        # positions are written rounded to 1 mm, so they read back exactly
        np.testing.assert_array_equal(b.position_enu_m, h.position_enu_m)
        assert b.kinematics == h.kinematics
        assert (b.bus, b.address, b.mirror) == (h.bus, h.address, h.mirror)
    assert set(back.targets) == {"cal1", "receiver"}
    cal = back.targets["cal1"]
    assert cal.markers is not None and cal.markers.ids == (0, 1, 2, 3)
    np.testing.assert_allclose(cal.u_normal_enu, [0.0, 1.0, 0.0])
    # the plant config never carries the true errors
    text = path.read_text()
    assert (
        "tilt" not in text
        and "collimation" not in text
        and "stroke_m =" not in text.replace("initial_stroke_m =", "")
    )


def test_mixed_drives_linear_in_central_sector(field50):
    drives = {h.kinematics.drive for h in field50.heliostats.values()}
    assert drives == {"azel", "linear"}
    for h in field50.heliostats.values():
        e, n, _ = h.position_enu_m
        central = abs(math.degrees(math.atan2(e, n))) <= 30.0 + 1e-9
        assert (h.kinematics.drive == "linear") == central
        assert h.mirror == (LINEAR_MIRROR if central else AZEL_MIRROR)


def test_buses_split_beyond_247_addresses(tmp_path):
    cfg = generate_field(300, np.random.default_rng(1), drives="azel")
    assert list(cfg.buses) == ["bus1", "bus2"]
    per_bus = {
        b: sorted(h.address for h in cfg.heliostats.values() if h.bus == b) for b in cfg.buses
    }
    assert per_bus["bus1"] == list(range(1, 248))
    assert per_bus["bus2"] == list(range(1, 54))
    path = tmp_path / "field.toml"
    path.write_text(field_toml(cfg))
    assert len(load_field(path).heliostats) == 300  # load_field checks (bus, address) unique


def test_southern_site_faces_north_and_refuses_linear():
    site = Site(-23.0, -70.0, 2000.0, "south")
    cfg = generate_field(12, np.random.default_rng(2), drives="azel", site=site)
    assert np.all(_positions(cfg)[:, 1] < 0)
    np.testing.assert_allclose(cfg.targets["cal1"].u_normal_enu, [0.0, -1.0, 0.0])
    with pytest.raises(ValueError, match="northern fields only"):
        generate_field(12, np.random.default_rng(2), drives="mixed", site=site)
    with pytest.raises(ValueError, match="drives must be one of"):
        generate_field(12, np.random.default_rng(2), drives="tilt-roll")


def test_generation_is_seeded(field50):
    again = generate_field(50, np.random.default_rng(20250401), drives="mixed")
    assert field_toml(again) == field_toml(field50)
    other = generate_field(50, np.random.default_rng(7), drives="mixed")
    assert field_toml(other) != field_toml(field50)


def test_truth_draw_ranges_and_round_trip(field50, tmp_path):
    truth = draw_truth(field50, np.random.default_rng(3))
    assert list(truth) == list(field50.heliostats)
    for hid, e in truth.items():
        assert e.drive == field50.heliostats[hid].kinematics.drive
        assert e.names == error_names(e.drive)
        for name, v in e.to_dict().items():
            if name in BACKLASH:
                assert v == 0.0, (hid, name, v)  # drawn by the encoder effect, not here
            elif name.endswith("_rad"):
                assert 1e-3 <= abs(v) <= 3e-3, (hid, name, v)  # uniform 1-3 mrad magnitude
            elif name.startswith("actuator"):
                assert abs(v) < 5 * 0.002, (hid, name, v)  # N(0, 2 mm): 5 sigma
            else:
                assert abs(v) < 5 * 0.01, (hid, name, v)  # N(0, 1 cm): 5 sigma
    path = tmp_path / "truth.json"
    path.write_text(truth_json(truth))
    assert load_truth(path, field50) == truth


def test_load_truth_errors_name_file_and_heliostat(field50, tmp_path):
    truth = draw_truth(field50, np.random.default_rng(3))
    data = json.loads(truth_json(truth))
    del data["heliostats"]["H007"]
    p = tmp_path / "t.json"
    p.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"t\.json: no true errors for heliostat 'H007'"):
        load_truth(p, field50)
    data = json.loads(truth_json(truth))
    data["heliostats"]["H001"]["drive"] = "linear"
    p.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="H001"):
        load_truth(p, field50)
    with pytest.raises(ValueError, match="file not found"):
        load_truth(tmp_path / "missing.json")


# ----------------------------------------------------------------------------- sky
SITE = Site(50.913296, 6.387514, 87.0)


def test_cloud_series_fraction_and_range():
    start = pd.Timestamp("2025-04-01T00:00Z")
    cs = cloud_series(start, start + pd.Timedelta(days=200), np.random.default_rng(4), 0.3)
    assert np.all((cs.factor >= 0) & (cs.factor <= 1))
    cloudy = cs.factor < 0.75  # clear steps are >= ~0.95 (1 % haze), cloudy ones <= 0.7
    # 57,600 steps with ~30-min spells: ~1,900 independent spells; the fraction's standard
    # error is ~0.01, so ±0.04 is 4 sigma
    assert abs(cloudy.mean() - 0.3) < 0.04
    again = cloud_series(start, start + pd.Timedelta(days=200), np.random.default_rng(4), 0.3)
    np.testing.assert_array_equal(again.factor, cs.factor)
    clear = cloud_series(start, start + pd.Timedelta(days=5), np.random.default_rng(4), 0.0)
    assert clear.factor.min() > 0.9  # haze only: 1 % sigma, 10 sigma margin
    with pytest.raises(ValueError, match="cloudiness"):
        cloud_series(start, start + pd.Timedelta(days=1), np.random.default_rng(4), 1.0)


def test_cloud_series_lookup():
    start = pd.Timestamp("2025-04-01T00:00Z")
    cs = cloud_series(start, start + pd.Timedelta(hours=2), np.random.default_rng(5), 0.5)
    t = [start + pd.Timedelta(seconds=s) for s in (0, 299, 300, 7199, 7300)]
    got = cs.at(t)
    np.testing.assert_array_equal(got[:4], cs.factor[[0, 0, 1, 23]])
    assert got[4] == 1.0  # outside the series: no clouds
    sky = Sky(SITE, cs)
    np.testing.assert_allclose(sky.dni_w_m2(t), sky.clear_dni_w_m2(t) * got)


def test_daylight_windows_bracket_threshold():
    wins = daylight_windows(SITE, "2025-04-01", 2, 10.0)
    assert len(wins) == 2
    sky = Sky(SITE)
    for a, b in wins:
        el = np.degrees(
            sky.sun([a - pd.Timedelta(minutes=1), a, b, b + pd.Timedelta(minutes=1)]).elevation_rad
        )
        assert el[0] <= 10.0 < el[1] and el[2] > 10.0 >= el[3]
        # Jülich, 1 April: sun above 10° from ~06:20 to ~16:50 UTC
        assert 5.5 < a.hour + a.minute / 60 < 7.0 and 16.0 < b.hour + b.minute / 60 < 17.5
    noon = pd.Timestamp("2025-04-01T11:35Z")
    dni = sky.clear_dni_w_m2([noon])[0]
    assert 700.0 < dni < 1000.0  # clear-sky DNI at 45° sun elevation, Ineichen-Perez
    with pytest.raises(ValueError, match="days must be a positive integer"):
        daylight_windows(SITE, "2025-04-01", 0)
    with pytest.raises(ValueError, match="start date"):
        daylight_windows(SITE, "April first", 1)
