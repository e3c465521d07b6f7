"""Effects outside the fitted model (sim/effects.py) and the floor (sim/floor.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from heliostat.config import load_field
from heliostat.frames import angle_between, azel_to_enu, reflect
from heliostat.sun import sun_position
from sim.campaign import CampaignSettings, Seeds, simulate_campaign, write_campaign
from sim.effects import (
    EFFECT_NAMES,
    CampaignDraw,
    Effects,
    HeliostatDraw,
    approach_signs,
    backlash_rad,
    draw_visits,
    draws_from_dict,
    effective_normal,
    saemundsson_refraction_rad,
    sag_droop_rad,
    standard_pressure_pa,
    thermal_tilt_rad,
    true_sun,
    world_beam,
)
from sim.field import draw_truth, generate_field, load_truth
from sim.observe import draw_true_errors

REPO = Path(__file__).resolve().parents[1]
FIELD = load_field(REPO / "tests/data/field_small.toml")
SITE = FIELD.site


@pytest.fixture(scope="module")
def plant():
    seeds = Seeds.from_seed(4)
    field_cfg = generate_field(4, np.random.default_rng(seeds.layout), drives="mixed")
    return field_cfg, draw_truth(field_cfg, np.random.default_rng(seeds.truth))


def _elevation(u):
    return np.arcsin(np.clip(u[:, 2], -1, 1))


# ----------------------------------------------------------------------------- closed forms
def test_sag_is_amplitude_times_cos_elevation_of_the_normal():
    kin = FIELD.heliostats["H001"].kinematics
    errors = draw_true_errors("azel", np.random.default_rng(1))
    el = np.radians([5.0, 30.0, 60.0, 85.0])
    steps = np.stack([np.zeros(4), np.degrees(el) * 1000], axis=1)  # 1000 steps/deg
    hd = HeliostatDraw(sag_rad=0.7e-3)
    n0 = kin.forward(steps, errors).u_normal_enu
    sun = n0  # the sun in front of the mirror (the effective normal is the bisector)
    _, _, r = world_beam(kin, errors, steps, sun, Effects(sag=True), hd, CampaignDraw())
    n1 = effective_normal(r, sun)
    droop = _elevation(n0) - _elevation(n1)
    # exact rotation by a·cos(el): the normal's elevation falls by that angle; 1e-9 rad is
    # round-off of arcsin near 1 (the 85° row), far below the 0.06-0.7 mrad checked
    np.testing.assert_allclose(droop, 0.7e-3 * np.cos(_elevation(n0)), atol=1e-9)
    np.testing.assert_allclose(sag_droop_rad(n0, 0.7e-3), droop, atol=1e-9)


def test_thermal_tilt_is_alpha_dt_l_over_d_away_from_the_sun():
    # 4 K at zenith sun on a 4 m × 0.5 m steel pylon: 12e-6 · 4 · 4 / 0.5 = 0.384 mrad
    sun = azel_to_enu([180.0 * math.pi / 180], [math.pi / 2 - 1e-9])
    assert thermal_tilt_rad(sun, 4.0, 4.0, 0.5)[0] == pytest.approx(0.384e-3, rel=1e-9)
    # sun in the south at 30°: half the difference; a vertical normal leans north
    kin = FIELD.heliostats["H001"].kinematics
    sun = azel_to_enu([math.pi], [math.radians(30.0)])
    steps = np.array([[0.0, 90_000.0]])  # normal straight up
    hd = HeliostatDraw(thermal_side_dt_k=4.0)
    e = Effects(thermal=True)
    _, n0, _ = world_beam(kin, None, steps, sun, Effects.none(), hd, CampaignDraw())
    _, n1, r = world_beam(kin, None, steps, sun, e, hd, CampaignDraw())
    tilt_n = reflect(n1, sun)  # effective normal reflects the true sun into the beam
    np.testing.assert_allclose(tilt_n, r, atol=1e-12)  # (unit vectors: round-off)
    n_true = effective_normal(r, sun)
    d = n_true[0] - n0[0]
    # a 0.192 mrad tilt toward north (away from the southern sun); 1e-9 rad: round-off
    assert d[1] == pytest.approx(0.192e-3, abs=1e-9) and abs(d[0]) < 1e-9


def test_refraction_agrees_with_bennett_1982():
    """Sæmundsson (true → apparent) against Bennett (apparent → refraction), an
    independent formula: R_B(h + R_S(h)) = R_S(h). Meeus (Astronomical Algorithms, ch. 16)
    states the two are consistent to about 0.1′ (2.9e-5 rad) above the horizon."""
    for h_deg in (5.0, 10.0, 20.0, 45.0, 80.0):
        r_s = saemundsson_refraction_rad(math.radians(h_deg))
        h0 = h_deg + math.degrees(float(r_s))
        r_b = math.radians(1.0 / math.tan(math.radians(h0 + 7.31 / (h0 + 4.4))) / 60.0)
        assert float(r_s) == pytest.approx(r_b, abs=math.radians(0.1 / 60))
    # published anchor: about 1′ at 45° (Meeus, table 16.A)
    assert math.degrees(float(saemundsson_refraction_rad(math.radians(45.0)))) * 60 == (
        pytest.approx(1.0, abs=0.05)
    )


def test_refraction_effect_is_the_weather_against_the_standard_atmosphere():
    t = pd.date_range("2025-04-01T06:00Z", "2025-04-01T12:00Z", freq="1h")
    sp = sun_position(SITE, t)
    e = Effects(refraction=True)
    standard = CampaignDraw(pressure_pa=standard_pressure_pa(SITE), ambient_mean_c=12.0)
    # the plant's own atmosphere: the same sun (to the formula's inversion, 1e-7 rad)
    same = true_sun(SITE, t, sp.u_sun_enu, e, standard)
    assert angle_between(same, sp.u_sun_enu).max() < 1e-7
    # 3 % more pressure: 3 % more refraction, i.e. the elevation rises by 0.03 R
    heavy = CampaignDraw(pressure_pa=1.03 * standard_pressure_pa(SITE), ambient_mean_c=12.0)
    s = true_sun(SITE, t, sp.u_sun_enu, e, heavy)
    up = sp.elevation_rad > 0.05
    rise = _elevation(s)[up] - sp.elevation_rad[up]
    expected = 0.03 * saemundsson_refraction_rad(sp.elevation_rad[up], standard.pressure_pa, 12.0)
    # linear in the pressure factor; the geometric/apparent elevation mix-up is 1e-3 relative
    np.testing.assert_allclose(rise, expected, rtol=0.02)


def test_clock_offset_shifts_the_sun_by_the_hour_angle_rate():
    t = pd.date_range("2025-04-01T09:00Z", periods=4, freq="1h")
    sp = sun_position(SITE, t)
    e = Effects(clock=True)
    s = true_sun(SITE, t, sp.u_sun_enu, e, CampaignDraw(clock_offset_s=30.0))
    import pvlib

    decl = pvlib.solarposition.declination_spencer71(t.dayofyear)
    expected = 2 * math.pi / 86400 * 30.0 * np.cos(decl)
    # the sun's hour angle turns 2π per solar day; 0.5 % covers the equation of time's
    # rate (≤ 3.5e-4) and the change of refraction over 30 s at these elevations
    np.testing.assert_allclose(angle_between(s, sp.u_sun_enu), expected, rtol=5e-3)


def test_encoder_quantisation_uniform_within_half_a_count():
    e = Effects(encoder=True)
    v = draw_visits(e, 20000, np.random.default_rng(3)).encoder_rad
    q = 2 * math.pi / 2**16
    assert np.abs(v).max() <= q / 2
    # uniform: variance q²/12; sampling error of the variance at n = 20000 is 0.6 %: 3 %
    assert v.var() == pytest.approx(q**2 / 12, rel=0.03)
    # each quarter of the range holds a quarter of the draws (binomial σ 0.3 %: 2 %)
    frac = np.histogram(v[:, 0], bins=4, range=(-q / 2, q / 2))[0] / len(v)
    np.testing.assert_allclose(frac, 0.25, atol=0.02)


def test_backlash_lags_half_against_the_move():
    steps = np.array([[10.0, 5.0], [20.0, 3.0], [20.0, 1.0]])
    a = approach_signs(steps)
    np.testing.assert_array_equal(a, [[1, 1], [1, -1], [1, -1]])
    np.testing.assert_allclose(backlash_rad(a, (4e-4, 2e-4)), [[-2e-4, -1e-4], [-2e-4, 1e-4],
                                                                [-2e-4, 1e-4]])  # fmt: skip


def test_effects_parse_and_refuse_unknown():
    assert Effects.realistic().on == EFFECT_NAMES
    assert Effects.from_names(["sag", " clock"]).on == ("sag", "clock")
    with pytest.raises(ValueError, match="'gust'.*known: sag"):
        Effects.from_names(["gust"])


# ----------------------------------------------------------------------------- campaign
def test_effects_off_is_the_clean_campaign(plant):
    field_cfg, truth = plant
    s = CampaignSettings(days=1, frame_heliostats=0)
    a = simulate_campaign(field_cfg, truth, s, 9)
    b = simulate_campaign(field_cfg, truth, CampaignSettings(**{**_kw(s), "effects": Effects()}), 9)
    pd.testing.assert_frame_equal(a.observations, b.observations)
    assert a.effect_draws is None
    # the streams of earlier versions are unchanged by the new effects stream
    old = np.random.SeedSequence(9).spawn(5)
    new = Seeds.from_seed(9)
    for o, n in zip(old, (new.layout, new.truth, new.clouds, new.noise, new.frames), strict=True):
        assert o.spawn_key == n.spawn_key and o.entropy == n.entropy
    # and the truth column is the clean true model's beam (same sun, no effects)
    obs = a.observations
    t = pd.DatetimeIndex(pd.to_datetime(obs["time_utc"], utc=True))
    sun = sun_position(field_cfg.site, t).u_sun_enu
    tgt = field_cfg.targets[a.target_id]
    for i, row in enumerate(obs.itertuples(index=False)):
        kin = field_cfg.heliostats[row.heliostat_id].kinematics
        pose = kin.forward([[row.axis1_steps, row.axis2_steps]], truth[row.heliostat_id])
        r = reflect(pose.u_normal_enu, sun[i : i + 1])
        t_hit = np.dot(tgt.centre_enu_m - pose.centre_enu_m[0], tgt.u_normal_enu) / np.dot(
            r[0], tgt.u_normal_enu
        )
        xy = tgt.enu_to_plane((pose.centre_enu_m[0] + t_hit * r[0])[None])[0]
        # the CSV rounds to 1 µm: 2e-6 m
        np.testing.assert_allclose(xy, [row.true_spot_x_m, row.true_spot_y_m], atol=2e-6)


def _kw(s: CampaignSettings) -> dict:
    return {f: getattr(s, f) for f in s.__dataclass_fields__}


def test_all_effects_move_the_truth_and_keep_draws_independent(plant):
    field_cfg, truth = plant
    base = CampaignSettings(days=1, frame_heliostats=0, cloudiness=0.0)
    clean = simulate_campaign(field_cfg, truth, base, 9).observations
    full = simulate_campaign(
        field_cfg, truth, CampaignSettings(**{**_kw(base), "effects": Effects.realistic()}), 9
    )
    only = simulate_campaign(
        field_cfg, truth, CampaignSettings(**{**_kw(base), "effects": Effects(sag=True)}), 9
    )
    obs = full.observations
    assert len(obs) == len(clean)
    # same commands (the plant's model and sun did not change, except the clock moves
    # nothing the plant computes), different true spots: by mm to cm
    moved = np.hypot(
        obs.true_spot_x_m - clean.true_spot_x_m, obs.true_spot_y_m - clean.true_spot_y_m
    )
    assert 1e-3 < moved.median() < 0.1
    # the sag draw is the same whether the other effects are on or off
    d_full = full.effect_draws["heliostats"]
    d_only = only.effect_draws["heliostats"]
    for hid in d_full:
        assert d_full[hid]["sag_rad"] == d_only[hid]["sag_rad"] > 0
        assert d_only[hid]["backlash_rad"] == (0.0, 0.0)


def test_truth_json_round_trip(plant, tmp_path):
    field_cfg, truth = plant
    s = CampaignSettings(days=1, frame_heliostats=0, effects=Effects.realistic())
    res, _ = write_campaign(tmp_path, field_cfg, truth, s, 9)
    data = json.loads((tmp_path / "truth.json").read_text())
    assert load_truth(tmp_path / "truth.json", field_cfg) == truth
    effects, cdraw, hdraws = draws_from_dict(data["effects"])
    e0, c0, h0 = draws_from_dict(res.effect_draws)
    assert effects == e0 == Effects.realistic()
    assert cdraw == c0 and hdraws == h0
    # per-visit draws: one record per observation of each heliostat
    visits = data["effects"]["visits"]
    for hid, rec in visits.items():
        n = int((res.observations["heliostat_id"] == hid).sum())
        assert len(rec["time_utc"]) == len(rec["jitter_rad"]) == n
    with pytest.raises(ValueError, match="missing or bad key"):
        draws_from_dict({"settings": {}})


def test_frame_spot_is_the_effected_beam(plant, monkeypatch):
    """The campaign renders the spot from the effective normal: the flux spot's central
    ray lands on the true_spot columns."""
    import sim.optics
    from sim.camera import place_camera

    field_cfg, truth = plant
    s = CampaignSettings(days=1, frame_heliostats=1, frames_per_heliostat=2,
                         effects=Effects.realistic(), camera_width_px=320,
                         camera_height_px=256)  # fmt: skip
    cam = place_camera(field_cfg, field_cfg.targets["cal1"], width_px=320, height_px=256)
    orig, seen = sim.optics.flux_spot, []

    def spy(*a, **k):
        spot = orig(*a, **k)
        seen.append(spot.centre_xy_m)
        return spot

    monkeypatch.setattr(sim.optics, "flux_spot", spy)
    res = simulate_campaign(field_cfg, truth, s, 9, camera=cam, frame_sink=lambda f: None)
    framed = res.observations[res.observations["frame"] != ""]
    assert len(framed) == len(seen) == 2
    # 2e-6 m: the CSV's 1 µm rounding
    np.testing.assert_allclose(
        np.array(seen), framed[["true_spot_x_m", "true_spot_y_m"]].to_numpy(), atol=2e-6
    )


# ----------------------------------------------------------------------------- the floor
def test_effects_are_not_invisible_to_the_pipeline():
    """All effects on: the pipeline's held-out error rises above the effect-free one, and
    the oracle (which knows the effects' forms) is no worse than the pipeline."""
    from sim.floor import heldout_errors, make_case

    clean, full = [], []
    for seed in range(3):
        truth = draw_true_errors("azel", np.random.default_rng(70 + seed))
        clean.append(heldout_errors(make_case(FIELD, "H001", truth, Effects.none(), seed)))
        full.append(heldout_errors(make_case(FIELD, "H001", truth, Effects.realistic(), seed)))

    def rms(rows, key):
        return float(np.sqrt(np.mean([r[key] ** 2 for r in rows])))

    # measured: clean ≈ 0.1 mrad, all effects ≈ 0.4-0.7 mrad (wind jitter alone ≈ 0.4);
    # a factor 2 leaves room for the seeds' spread and still fails if the effects vanish
    assert rms(full, "pipeline_mrad") > 2 * rms(clean, "pipeline_mrad")
    assert rms(full, "pipeline_static_mrad") > rms(clean, "pipeline_static_mrad")
    # the oracle fits a superset of the pipeline's model with priors: 10 % slack for noise
    assert rms(full, "oracle_static_mrad") < 1.1 * rms(full, "pipeline_static_mrad")


# ----------------------------------------------------------------------------- CLI
def test_cli_effects_options(tmp_path, capsys):
    from heliostat.cli import main

    base = ["sim", "campaign", "--heliostats", "2", "--days", "1", "--frame-heliostats", "0"]
    assert main([*base, "--effects", "sag,gust", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert "'gust'" in err and "known: sag" in err and "\n" not in err
    assert main([*base, "--effects", "sag,clock", "--out", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b/truth.json").read_text())["effects"]["on"] == ["sag", "clock"]
    assert main([*base, "--no-effects", "--out", str(tmp_path / "c")]) == 0
    assert "effects" not in json.loads((tmp_path / "c/truth.json").read_text())
    # the default is realistic: every effect on
    assert main([*base, "--out", str(tmp_path / "d")]) == 0
    on = json.loads((tmp_path / "d/truth.json").read_text())["effects"]["on"]
    assert tuple(on) == EFFECT_NAMES
