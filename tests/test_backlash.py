"""Backlash: the direction of the last move in the observations, the ``backlash``
parameter group in the kinematics, the fit, the selection and the setpoints.

The simulator's joint lags the reported angle by s·b/2 (``sim.effects.backlash_rad``), s
the sign of the last step change; the model's ``axis<i>_backlash_rad`` follows the same
convention, so a noise-free campaign gives the simulator's own draw back.
"""

from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest

from firmware_bridge import registers as R
from heliostat.calibration import calibrate_heliostat, fit_heliostat, observations_from_frame
from heliostat.calibration.corrections import (
    corrected_setpoints,
    move_directions,
    setpoints_in_order,
    tracking_approach,
)
from heliostat.calibration.fit import Problem, resolve_names
from heliostat.calibration.observations import APPROACH_COLUMNS, read_observations
from heliostat.calibration.selection import SkyCheck, candidate_sets
from heliostat.campaign.history import History, ObservationRecord
from heliostat.config import load_field
from heliostat.frames import normalize
from heliostat.kinematics import KinematicErrors, default_groups, error_names
from heliostat.kinematics.drives._base import BACKLASH
from heliostat.sun import sun_position
from sim.effects import Effects, approach_signs
from sim.floor import make_case
from sim.observe import draw_true_errors

FIELD = load_field("tests/data/field_small.toml")
DRIVES = {"azel": "H001", "linear": "AA39"}


def _case(hid: str, effects: Effects, seed: int, noise_mrad: float = 0.2):
    kin = FIELD.heliostats[hid].kinematics
    truth = draw_true_errors(kin.drive, np.random.default_rng(seed), translation_m=0.0)
    return make_case(FIELD, hid, truth, effects, seed, noise_mrad=noise_mrad)


# --------------------------------------------------------------------------- the columns
def test_campaign_writes_the_directions_and_the_csv_round_trips(tmp_path):
    case = _case("H001", Effects(encoder=True), 3)
    df = case.observations
    steps = df[["axis1_steps", "axis2_steps"]].to_numpy(float)
    # the campaign records the controller's last move: visit to visit, from stow (0, 0);
    # every visit of this one-heliostat campaign is kept, so the order is the visits'
    np.testing.assert_array_equal(df[list(APPROACH_COLUMNS)].to_numpy(), approach_signs(steps))
    path = tmp_path / "observations.csv"
    df.to_csv(path, index=False)
    obs, rejected = read_observations(path, FIELD)
    assert rejected == []
    np.testing.assert_array_equal(obs["H001"].approach, approach_signs(steps))
    assert obs["H001"].both_directions() == (True, True)
    # without the columns (PAINT, older files): not known, 0
    df.drop(columns=list(APPROACH_COLUMNS)).to_csv(path, index=False)
    obs, _ = read_observations(path, FIELD)
    assert np.all(obs["H001"].approach == 0) and obs["H001"].both_directions() == (False, False)


@pytest.mark.parametrize("bad", ["0", "2", "+", "up", "nan", "-1.5"])
def test_a_bad_direction_is_rejected_naming_line_and_column(tmp_path, bad):
    df = _case("H001", Effects(), 3).observations.iloc[:4].copy()
    df["axis2_approach"] = df["axis2_approach"].astype(object)
    df.loc[2, "axis2_approach"] = bad
    df.loc[3, "axis1_approach"] = None  # an empty cell: not known, kept
    path = tmp_path / "observations.csv"
    df.to_csv(path, index=False)
    obs, rejected = read_observations(path, FIELD)
    assert [r.row for r in rejected] == [4]  # header = line 1, row 2 of the frame = line 4
    assert f"axis2_approach {bad!r} must be +1 or -1" in rejected[0].reason
    assert len(obs["H001"]) == 3 and obs["H001"].approach[2, 0] == 0


def test_history_stores_the_directions_and_upgrades_a_v1_file(tmp_path):
    path = tmp_path / "history.sqlite"
    base = dict(
        heliostat_id="H001", time_utc="2025-03-01T10:00:00Z", sun_azimuth_deg=150.0,
        sun_elevation_deg=35.0, axis1_steps=1000, axis2_steps=2000, target_id="cal1",
        spot_x_m=0.1, spot_y_m=0.2, spot_e_m=1.0, spot_n_m=2.0, spot_u_m=3.0, sigma_m=0.01,
    )  # fmt: skip
    with History(path) as h:
        h.add_observation(
            ObservationRecord(slot_utc="s1", axis1_approach=-1, axis2_approach=1, **base)
        )
        h.add_observation(ObservationRecord(slot_utc="s2", **base))
        df = h.observations()
    assert df["axis1_approach"].tolist()[0] == -1 and df["axis2_approach"].tolist()[0] == 1
    assert df["axis1_approach"].isna().tolist() == [False, True]
    with pytest.raises(ValueError, match="axis1_approach must be"):
        ObservationRecord(slot_utc="s3", axis1_approach=0, **base)

    # a v1 file (no direction columns): read-only it reads them as NULL, opened for
    # writing it gains them
    old = tmp_path / "v1.sqlite"
    con = sqlite3.connect(old)
    con.executescript(_v1_ddl())
    con.execute(
        "INSERT INTO campaign_observations (heliostat_id, slot_utc, time_utc, "
        "sun_azimuth_deg, sun_elevation_deg, axis1_steps, axis2_steps, target_id) "
        "VALUES ('H001', 's1', '2025-03-01T10:00:00Z', 150, 35, 1, 2, 'cal1')"
    )
    con.commit()
    con.close()
    with History(old, readonly=True) as h:
        assert h.observations()["axis1_approach"].isna().all()
    with History(old) as h:
        h.add_observation(
            ObservationRecord(slot_utc="s2", axis1_approach=1, axis2_approach=-1, **base)
        )
        got = h.observations()
    assert got["axis1_approach"].isna().tolist() == [True, False]
    assert got["axis2_approach"].tolist()[1] == -1


def _v1_ddl() -> str:
    from heliostat.campaign import history

    ddl = history._DDL.replace("    axis1_approach INTEGER, axis2_approach INTEGER,\n", "")
    assert "approach" not in ddl
    return ddl


# --------------------------------------------------------------------------- the model
@pytest.mark.parametrize("drive", sorted(DRIVES))
def test_names_are_appended_and_fit_the_register_block(drive):
    names = error_names(drive)
    # the controller's parameter block keeps the older parameters at their registers
    assert names[-2:] == BACKLASH
    assert len(names) <= R.MAX_PARAMS
    assert "backlash" not in default_groups(drive)


@pytest.mark.parametrize("hid", sorted(DRIVES.values()))
def test_the_joint_lags_by_half_the_backlash_and_the_inverse_undoes_it(hid):
    kin = FIELD.heliostats[hid].kinematics
    e = KinematicErrors.from_dict(
        kin.drive, {"axis1_backlash_rad": 4e-4, "axis2_backlash_rad": 2e-4}
    )
    steps = np.array([[20000.0, 30000.0], [21000.0, 29000.0]])
    a = np.array([[1.0, -1.0], [-1.0, 1.0]])
    d = kin.steps_to_angles(steps, e, a) - kin.steps_to_angles(steps, e)
    # θ − s·b/2, exactly (a subtraction)
    np.testing.assert_allclose(d, -0.5 * a * [4e-4, 2e-4], rtol=1e-12, atol=1e-15)
    # unknown direction (0) or none given: the middle of the dead band
    np.testing.assert_array_equal(
        kin.steps_to_angles(steps, e, np.zeros((2, 2))), kin.steps_to_angles(steps, e)
    )
    # the inverse aims for the direction: its steps, arrived at that way, hit the aim
    aim = FIELD.targets["cal1"].centre_enu_m
    sun = sun_position(
        FIELD.site, pd.DatetimeIndex(["2025-03-01T10:00Z", "2025-03-01T13:00Z"])
    ).u_sun_enu
    st = kin.inverse(aim, sun, e, a)
    r, c = kin.reflected(st, sun, e, a)
    to_aim = (aim - c) / np.linalg.norm(aim - c, axis=1, keepdims=True)
    # the inverse converges to 1e-12 rad in the normal
    np.testing.assert_allclose(r, to_aim, atol=1e-9)
    assert np.all(np.abs(st - kin.inverse(aim, sun, e)) > 0.1)  # the backlash moved them


@pytest.mark.parametrize("hid", sorted(DRIVES.values()))
def test_backlash_is_recovered_from_noise_free_observations(hid):
    # encoder effect with a negligible quantisation (2π/2⁴⁰ rad): the backlash alone
    eff = Effects(encoder=True, encoder_bits=40)
    case = _case(hid, eff, 11, noise_mrad=0.0)
    obs, rejected = observations_from_frame(case.observations, case.field)
    assert rejected == [] and obs[hid].both_directions() == (True, True)
    kin = case.field.heliostats[hid].kinematics
    names = resolve_names(kin.drive, [*default_groups(kin.drive), "backlash"])
    r = fit_heliostat(kin, obs[hid], names)
    assert r.success, r.reason
    # exact model, exact beams: the fit ends at the optimiser's tolerance; 1e-8 rad is
    # far below the draws (0.1-0.5 mrad) and far above the quantisation (6e-12 rad)
    np.testing.assert_allclose(
        r.errors.to_vector(BACKLASH), case.hdraw.backlash_rad, rtol=0, atol=1e-8
    )
    np.testing.assert_allclose(
        r.errors.to_vector(names[:-2]), case.truth.to_vector(names[:-2]), rtol=0, atol=1e-8
    )


# --------------------------------------------------------------------------- the choice
def test_candidates_have_backlash_only_with_both_directions():
    for drive in DRIVES:
        plain = candidate_sets(drive)
        assert not any(set(BACKLASH) & set(c) for c in plain)
        assert candidate_sets(drive, (False, False)) == plain
        one = candidate_sets(drive, (True, False))
        extra = [c for c in one if c not in plain]
        assert extra and all(
            "axis1_backlash_rad" in c and "axis2_backlash_rad" not in c for c in extra
        )
        # only from both zero offsets on: a backlash beside one offset alone is not offered
        assert all({"axis1_zero_rad", "axis2_zero_rad"} <= set(c) for c in extra)


@pytest.mark.parametrize("hid", sorted(DRIVES.values()))
def test_selection_chooses_backlash_when_present_and_not_when_absent(hid):
    # 1-1.5 mrad of backlash against 0.2 mrad of noise: plainly in the data
    big = _case(hid, Effects(encoder=True, backlash_mrad=(1.0, 1.5)), 21)
    none = _case(hid, Effects(), 21)
    kin = FIELD.heliostats[hid].kinematics
    chosen = {}
    for name, case in (("big", big), ("none", none)):
        obs, _ = observations_from_frame(case.observations, case.field)
        cal = calibrate_heliostat(kin, obs[hid])
        assert cal.fit.success, cal.reason
        # both cases were offered the backlash (moves in both directions on both axes)
        assert any(set(BACKLASH) <= set(c.names) for c in cal.selection.candidates)
        chosen[name] = cal.names
    assert set(BACKLASH) <= set(chosen["big"])
    assert not set(BACKLASH) & set(chosen["none"])


# --------------------------------------------------------------------------- setpoints
def test_tracking_setpoints_arrive_from_the_sun_s_direction():
    hel = FIELD.heliostats["H001"]
    kin, tgt = hel.kinematics, FIELD.targets["cal1"]
    e = KinematicErrors.from_dict(
        kin.drive, {"axis1_backlash_rad": 5e-4, "axis2_backlash_rad": 5e-4}
    )
    times = pd.date_range("2025-03-01T08:00Z", "2025-03-01T15:00Z", freq="10min")
    aim = np.broadcast_to(tgt.centre_enu_m, (len(times), 3))
    a = tracking_approach(kin, e, FIELD.site, times, aim)
    sp = corrected_setpoints(kin, e, FIELD.site, times, tgt)
    # the direction of d(steps)/dt is the direction from one 10-min setpoint to the next
    # wherever an axis moves by more than a few steps in 10 min
    d = np.diff(sp.steps.astype(float), axis=0)
    moving = np.abs(d) > 5
    np.testing.assert_array_equal(np.sign(d)[moving], a[1:][moving])
    # those setpoints, reached that way, hit the aim (rounded to a step: < 0.05 mrad)
    r, c = kin.reflected(sp.steps, sun_position(FIELD.site, times).u_sun_enu, e, a)
    to_aim = (aim - c) / np.linalg.norm(aim - c, axis=1, keepdims=True)
    err = np.arccos(np.clip(np.sum(r * to_aim, axis=1), -1, 1))
    assert np.max(err) < 5e-5
    # no backlash fitted: no direction needed, the setpoints are those of before
    assert tracking_approach(kin, KinematicErrors.zeros(kin.drive), FIELD.site, times, aim) is None


def test_visits_in_order_aim_for_the_direction_they_arrive_from():
    # the demo's held-out visits and the floor's: each setpoint aimed for the direction of
    # the move onto it, the simulator's rule (sim.effects.approach_signs, from stow)
    kin = FIELD.heliostats["AA39"].kinematics
    e = KinematicErrors.from_dict(
        kin.drive, {"axis1_backlash_rad": 6e-4, "axis2_backlash_rad": 3e-4}
    )
    times = pd.date_range("2025-03-05T07:00Z", "2025-03-05T16:00Z", freq="20min")
    sun = sun_position(FIELD.site, times).u_sun_enu
    aim = np.broadcast_to(FIELD.targets["cal1"].centre_enu_m, sun.shape)
    st = setpoints_in_order(kin, e, aim, sun)
    a = move_directions(st)
    np.testing.assert_array_equal(a, approach_signs(st))
    assert np.any(a < 0) and np.any(a > 0)  # the elevation axis turns back after noon
    r, c = kin.reflected(st, sun, e, a)
    to_aim = (aim - c) / np.linalg.norm(aim - c, axis=1, keepdims=True)
    # on the aim to the rounding of the steps (a step is ≈ 0.03 mrad of joint here)
    assert np.max(np.arccos(np.clip(np.sum(r * to_aim, axis=1), -1, 1))) < 1e-4
    # aimed without the directions the same visits miss by about half the backlash
    r0, c0 = kin.reflected(np.rint(kin.inverse(aim, sun, e)), sun, e, a)
    miss0 = np.arccos(np.clip(np.sum(r0 * normalize(aim - c0), axis=1), -1, 1))
    assert np.median(miss0) > 2e-4
    # no backlash: the plain inverse, rounded
    np.testing.assert_array_equal(
        setpoints_in_order(kin, None, aim, sun), np.rint(kin.inverse(aim, sun))
    )


def test_sky_check_counts_the_backlash_uncertainty(monkeypatch):
    case = _case("H001", Effects(encoder=True), 21)
    obs, _ = observations_from_frame(case.observations, case.field)
    o = obs["H001"]
    kin = FIELD.heliostats["H001"].kinematics
    sky = SkyCheck.for_records(kin, o)
    names = resolve_names(kin.drive, ["zero_offsets", "first_axis_tilt", "backlash"])
    r = fit_heliostat(kin, o, names, robust=False)
    prob = Problem(kin, o, names)
    x = r.errors.to_vector(names)
    with_directions = sky.sigma_mrad(names, x, prob.fun(x), prob.jac(x))
    # the same check blind to the backlash (the grid without directions: its derivative 0)
    from heliostat.calibration import selection

    blind = selection.batched_pose
    monkeypatch.setattr(
        selection,
        "batched_pose",
        lambda *a, **k: blind(*a[:5]),  # approach dropped
    )
    without = sky.sigma_mrad(names, x, prob.fun(x), prob.jac(x))
    # the grid approached from both sides adds the backlash's own share, var(b)/4 per
    # axis (the zero offsets' share, inflated by their correlation with b, is in both):
    # measured 0.203 against 0.190 mrad; blind to it the two would be equal
    assert np.isfinite(with_directions) and with_directions > 1.03 * without
