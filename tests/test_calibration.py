"""Calibration core: observation validation, batched model, fit recovery, outliers,
identifiability warnings, cross-validation and corrections, against simulator truth."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from heliostat.calibration import (
    corrected_setpoints,
    corrections_document,
    fit_heliostat,
    heliostat_entry,
    kfold_rms,
    loo_hat,
    loo_rms,
    observations_from_frame,
    read_corrections,
    read_observations,
    resolve_names,
    write_corrections,
)
from heliostat.calibration.fit import Problem, identifiability
from heliostat.calibration.model import batched_pose
from heliostat.config import load_field
from heliostat.errors import CalibrationError
from heliostat.frames import angle_between, reflect
from heliostat.kinematics import KinematicErrors, error_names
from sim.observe import draw_true_errors, simulate_observations

FIELD = load_field("tests/data/field_small.toml")
TARGET = FIELD.targets["cal1"]
DAYS = pd.date_range("2025-03-01T00:00Z", periods=5, freq="1D")
CAMPAIGN = [d + pd.Timedelta(minutes=m) for d in DAYS for m in np.linspace(420, 920, 6)]
NOISE_MRAD = 0.2


def _campaign(hid, seed, times=CAMPAIGN, translation_m=0.0, noise=NOISE_MRAD):
    rng = np.random.default_rng(seed)
    hel = FIELD.heliostats[hid]
    truth = draw_true_errors(hel.kinematics.drive, rng, translation_m=translation_m)
    df = simulate_observations(hel, truth, TARGET, FIELD.site, times, rng, noise)
    return truth, df


def _obs(df):
    obs, rejected = observations_from_frame(df, FIELD)
    assert rejected == []
    return obs


# --------------------------------------------------------------------------- observations
def test_reader_rejects_bad_rows_with_line_and_reason(tmp_path):
    _, df = _campaign("H001", 1)
    df = df.astype(object)
    df.loc[0, "spot_x_m"] = "nan"
    df.loc[0, "spot_e_m"] = ""  # no spot at all -> rejected
    df.loc[1, "heliostat_id"] = "H999"
    df.loc[2, "target_id"] = "nowhere"
    df.loc[3, "axis1_steps"] = 10**9
    df.loc[4, "time_utc"] = ""
    df.loc[4, "sun_elevation_deg"] = -2.0  # angles only, below the horizon
    df.loc[5, "sun_azimuth_deg"] = float(df.loc[5, "sun_azimuth_deg"]) + 1.0  # disagrees
    df.loc[6, "time_utc"] = "2025-03-01T10:00:00"  # naive
    df.loc[7, "axis2_steps"] = 12.5
    path = tmp_path / "obs.csv"
    df.to_csv(path, index=False)
    obs, rejected = read_observations(path, FIELD)
    lines = {r.row: r.reason for r in rejected}
    # Line numbers: header is line 1, data row i is line i + 2.
    assert sorted(lines) == [2, 3, 4, 5, 6, 7, 8, 9]
    assert "no spot" in lines[2]
    assert "H999" in lines[3] and "not in the field" in lines[3]
    assert "nowhere" in lines[4]
    assert "outside the actuator travel" in lines[5]
    assert "below the horizon" in lines[6]
    # 1° of azimuth at elevation el is an angle of ≈ cos(el) degrees on the sky.
    expect = math.cos(math.radians(float(df.loc[5, "sun_elevation_deg"])))
    assert "disagree" in lines[7] and f"{expect:.2f}" in lines[7]
    assert "timezone" in lines[8]
    assert "integers" in lines[9]
    assert len(obs["H001"]) == len(df) - 8


def test_reader_uses_angles_when_no_time_and_plane_when_no_enu():
    _, df = _campaign("H001", 2)
    full = _obs(df)["H001"]
    d2 = df.copy()
    d2["time_utc"] = ""
    d2[["spot_e_m", "spot_n_m", "spot_u_m"]] = np.nan
    part = _obs(d2)["H001"]
    # Same sun (the simulator wrote SPA's angles) and the same spot via the target plane.
    assert np.max(angle_between(full.u_sun_enu, part.u_sun_enu)) < 1e-12
    np.testing.assert_allclose(part.spot_enu_m, full.spot_enu_m, atol=1e-9)


def test_reader_missing_column_is_an_error(tmp_path):
    p = tmp_path / "obs.csv"
    p.write_text("heliostat_id,time_utc\nH001,2025-03-01T10:00:00Z\n")
    with pytest.raises(ValueError, match="axis1_steps"):
        read_observations(p, FIELD)


# --------------------------------------------------------------------------- model
@pytest.mark.parametrize("hid", ["H001", "AA39"])
def test_batched_pose_equals_forward(hid):
    kin = FIELD.heliostats[hid].kinematics
    rng = np.random.default_rng(5)
    errs = [draw_true_errors(kin.drive, rng, translation_m=0.02) for _ in range(3)]
    names = error_names(kin.drive)
    _, df = _campaign(hid, 6)
    steps = df[["axis1_steps", "axis2_steps"]].to_numpy(float)
    n, c = batched_pose(kin, errs[0], names, np.stack([e.to_vector(names) for e in errs]), steps)
    for k, e in enumerate(errs):
        pose = kin.forward(steps, e)
        # Same chain, same floating-point operations up to association: 1e-12.
        np.testing.assert_allclose(n[k], pose.u_normal_enu, atol=1e-12)
        np.testing.assert_allclose(c[k], pose.centre_enu_m, atol=1e-12)


def test_jacobian_matches_one_sided_differences():
    kin = FIELD.heliostats["AA39"].kinematics
    truth, df = _campaign("AA39", 7)
    names = resolve_names("linear")
    prob = Problem(kin, _obs(df)["AA39"], names)
    x = truth.to_vector(names)
    j = prob.jac(x)
    for k in range(len(names)):
        h = 1e-5
        num = (prob.fun(x + h * np.eye(len(names))[k]) - prob.fun(x)) / h
        # One-sided difference error O(h·f'') with f'' ~ 1 mrad/mrad² -> 1e-2 relative.
        np.testing.assert_allclose(j[:, k], num, rtol=2e-2, atol=2e-2 * np.abs(num).max())


# --------------------------------------------------------------------------- fit
@pytest.mark.parametrize("hid", ["H001", "AA39"])
def test_noise_free_data_recovers_truth_exactly(hid):
    # The simulator's beam is exact for the rounded steps, so with zero noise the fit must
    # return the true parameters to the optimiser's tolerance (1e-10 relative on the
    # cost); 1e-9 rad / 1e-9 m is far below anything physical.
    truth, df = _campaign(hid, 3, noise=0.0)
    r = fit_heliostat(FIELD.heliostats[hid].kinematics, _obs(df)[hid])
    assert r.success and r.n_outliers == 0
    np.testing.assert_allclose(r.errors.to_vector(r.names), truth.to_vector(r.names), atol=1e-9)
    assert r.rms_after_mrad < 1e-6


def test_recovers_truth_within_standard_errors():
    # A year of observations makes every parameter identifiable (condition < 300).
    days = pd.date_range("2025-01-10T00:00Z", periods=12, freq="30D")
    times = [d + pd.Timedelta(hours=h) for d in days for h in (8.5, 11.0, 13.5)]
    truth, df = _campaign("AA39", 11, times)
    kin = FIELD.heliostats["AA39"].kinematics
    r = fit_heliostat(kin, _obs(df)["AA39"])
    assert r.success and r.warnings == ()
    for name in r.names:
        # Gaussian noise, correct model: |error| < 4 σ fails with probability 6e-5 each.
        assert abs(r.errors[name] - truth[name]) < 4 * r.std[name], name
    # Residual norm² / σ² is χ²₂ per point: RMS of the norm ≈ √2 σ = 0.28 mrad; with 36
    # points and 8 parameters it lies in [0.2, 0.36] mrad with > 99.9 % probability.
    assert 0.2 < r.rms_after_mrad < 0.36
    assert r.rms_before_mrad > 5.0  # mrad-level true errors, uncorrected


def test_plane_residual_gives_the_same_fit():
    truth, df = _campaign("H001", 12)
    kin = FIELD.heliostats["H001"].kinematics
    obs = _obs(df)["H001"]
    a = fit_heliostat(kin, obs, residual="angle")
    b = fit_heliostat(kin, obs, residual="plane")
    # Both residuals are the same angle to first order (target nearly facing the beam):
    # the fitted beams agree far below the 0.2 mrad noise.
    ra = reflect(kin.forward(obs.steps, a.errors).u_normal_enu, obs.u_sun_enu)
    rb = reflect(kin.forward(obs.steps, b.errors).u_normal_enu, obs.u_sun_enu)
    assert np.max(angle_between(ra, rb)) < 0.02e-3


def test_gross_outliers_are_flagged_and_do_not_bias_the_fit():
    truth, df = _campaign("H001", 13)
    kin = FIELD.heliostats["H001"].kinematics
    clean = fit_heliostat(kin, _obs(df)["H001"])
    bad = df.copy()
    bad.loc[[4, 17], "spot_x_m"] += 1.5  # 1.5 m at ~85 m: ~18 mrad gross errors
    bad[["spot_e_m", "spot_n_m", "spot_u_m"]] = np.nan
    dirty = fit_heliostat(kin, _obs(bad)["H001"])
    assert dirty.success
    assert dirty.outlier_rows == (6, 19)  # CSV line numbers of data rows 4 and 17
    plain = fit_heliostat(kin, _obs(bad)["H001"], robust=False)
    # The robust fit predicts the clean fit's beams to within the noise; plain least
    # squares is pulled by mrad.
    obs = _obs(df)["H001"]

    def beams(e):
        return reflect(kin.forward(obs.steps, e).u_normal_enu, obs.u_sun_enu)

    assert np.sqrt(np.mean(angle_between(beams(dirty.errors), beams(clean.errors)) ** 2)) < 0.1e-3
    assert np.sqrt(np.mean(angle_between(beams(plain.errors), beams(clean.errors)) ** 2)) > 0.5e-3


def test_clustered_sun_positions_warn_and_suggest_fewer_parameters():
    day = pd.Timestamp("2025-03-01T11:00Z")
    times = [day + pd.Timedelta(minutes=10 * i) for i in range(12)]  # 2 h of one day
    _, df = _campaign("H001", 14, times)
    kin = FIELD.heliostats["H001"].kinematics
    r = fit_heliostat(kin, _obs(df)["H001"])
    # Either a fit with a warning or a failure whose reason says why; both suggest a
    # smaller set, and that set fits without complaint about conditioning.
    if r.success:
        assert any("clustered" in w for w in r.warnings)
    else:
        assert "not identifiable" in r.reason
    assert 0 < len(r.suggested_names) < len(r.names)
    r2 = fit_heliostat(kin, _obs(df)["H001"], r.suggested_names)
    assert r2.success and r2.condition < 300


def test_identifiability_drops_a_duplicated_column():
    rng = np.random.default_rng(15)
    j = rng.normal(size=(40, 3))
    j = np.column_stack([j, j[:, 0] + 1e-9 * rng.normal(size=40)])
    cond, keep = identifiability(j, ["a", "b", "c", "d"])
    assert cond > 1e6 and len(keep) == 3 and ("a" in keep) != ("d" in keep)


def test_failed_fit_says_why():
    _, df = _campaign("AA39", 16)
    r = fit_heliostat(FIELD.heliostats["AA39"].kinematics, _obs(df.iloc[:3])["AA39"])
    assert not r.success and "too few" in r.reason
    with pytest.raises(CalibrationError, match="failed"):
        heliostat_entry(r)


# --------------------------------------------------------------------------- cross-validation
def test_loo_and_kfold_near_noise_and_hat_matches_refit():
    _, df = _campaign("AA39", 17)
    kin = FIELD.heliostats["AA39"].kinematics
    obs = _obs(df)["AA39"]
    r = fit_heliostat(kin, obs)
    loo = loo_rms(kin, obs, r)
    # Held-out residual: noise (√2·0.2 = 0.28 mrad RMS norm) plus prediction error; it
    # exceeds the in-sample RMS and stays well under 2× noise for 30 points, 8 params.
    assert r.rms_after_mrad < loo < 0.45
    assert abs(loo_hat(kin, obs, r) - loo) < 0.05 * loo  # nearly linear model
    assert 0.25 < kfold_rms(kin, obs, r, k=5) < 0.5


# --------------------------------------------------------------------------- corrections
def test_corrected_setpoints_point_the_true_beam_at_the_aim(tmp_path):
    truth, df = _campaign("H001", 18)
    kin = FIELD.heliostats["H001"].kinematics
    r = fit_heliostat(kin, _obs(df)["H001"])
    times = ["2025-03-03T09:10:00Z", "2025-03-03T12:30:00Z"]
    sp = corrected_setpoints(kin, r.errors, FIELD.site, times, TARGET, (0.5, -0.5))
    assert sp.steps.dtype == np.int64 and sp.nominal_steps.dtype == np.int64
    from heliostat.sun import sun_position

    sun = sun_position(FIELD.site, times).u_sun_enu
    aim = TARGET.plane_to_enu(np.array([0.5, -0.5]))

    def miss(steps):
        pose = kin.forward(steps, truth)
        return angle_between(reflect(pose.u_normal_enu, sun), aim - pose.centre_enu_m)

    # Corrected: within noise-limited prediction error + step rounding (1/1000 deg =
    # 0.017 mrad) of the aim; nominal: off by the mrad-level true errors.
    assert np.max(miss(sp.steps)) < 0.3e-3
    assert np.min(miss(sp.nominal_steps)) > 2e-3
    assert np.any(sp.difference_steps != 0)

    doc = corrections_document([heliostat_entry(r, sp)], "tests/data/field_small.toml")
    path = tmp_path / "corr.json"
    write_corrections(path, doc)
    back = read_corrections(path)
    assert back["format"] == "heliostat-corrections/1"
    h = back["heliostats"][0]
    assert h["heliostat"] == "H001" and h["drive"] == "azel"
    assert set(h["parameters"]) == set(resolve_names("azel"))
    assert h["setpoints"][1]["axis1_steps"] == int(sp.steps[1, 0])
    assert KinematicErrors.from_dict("azel", h["parameters"]) == r.errors
    assert json.loads(path.read_text())["heliostats"][0]["rms_after_mrad"] == r.rms_after_mrad


def test_setpoint_below_horizon_is_refused():
    kin = FIELD.heliostats["H001"].kinematics
    with pytest.raises(CalibrationError, match="below the horizon"):
        corrected_setpoints(
            kin, KinematicErrors.zeros("azel"), FIELD.site, ["2025-03-03T23:00:00Z"], TARGET
        )


def test_read_corrections_rejects_float_steps(tmp_path):
    doc = corrections_document([], "f.toml", "2025-01-01T00:00:00Z")
    doc["heliostats"] = [
        {
            "heliostat": "H001",
            "drive": "azel",
            "parameters": {},
            "setpoints": [
                {
                    "axis1_steps": 1.5,
                    "axis2_steps": 2,
                    "nominal_axis1_steps": 1,
                    "nominal_axis2_steps": 2,
                }
            ],
        }
    ]
    p = tmp_path / "c.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="key 'axis1_steps': expected a 32-bit integer"):
        read_corrections(p)


def test_quality_against_oracle_floor():
    """Held-out pointing error within 10 % of the oracle floor, clean and with outliers.

    Floor: plain least squares over exactly the true parameter set on the clean campaign
    (perfect knowledge of which parameters matter). Pipeline: default robust fit. Paired
    over 6 seeds (RMS over seeds); bench/calibration.py runs 40 seeds.
    """
    from heliostat.sun import sun_position

    kin = FIELD.heliostats["H001"].kinematics
    held = [d + pd.Timedelta(minutes=m) for d in DAYS for m in range(430, 900, 40)]
    sp = sun_position(FIELD.site, held)
    sun = sp.u_sun_enu[sp.elevation_rad > np.radians(10)]
    aim = np.broadcast_to(TARGET.centre_enu_m, sun.shape)

    def err(truth, fitted):
        pose = kin.forward(kin.inverse(aim, sun, fitted), truth)
        return np.mean(angle_between(reflect(pose.u_normal_enu, sun), aim - pose.centre_enu_m) ** 2)

    floor, clean, dirty = [], [], []
    for seed in range(6):
        truth, df = _campaign("H001", 100 + seed)
        obs = _obs(df)["H001"]
        floor.append(err(truth, fit_heliostat(kin, obs, robust=False).errors))
        clean.append(err(truth, fit_heliostat(kin, obs).errors))
        bad = df.copy()
        rows = np.random.default_rng(seed).choice(len(df), 2, replace=False)  # 5 % of 30
        bad.loc[rows, "spot_y_m"] += np.random.default_rng(seed).uniform(0.5, 2.5, 2)
        bad[["spot_e_m", "spot_n_m", "spot_u_m"]] = np.nan
        dirty.append(err(truth, fit_heliostat(kin, _obs(bad)["H001"]).errors))
    f, c, d = (math.sqrt(np.mean(v)) for v in (floor, clean, dirty))
    assert c < 1.10 * f
    assert d < 1.10 * f


# --------------------------------------------------------------------------- regressions
def _true_beam_misses(kin, obs, errors):
    """Angle between the model beam and the measured ray, per row, computed directly from
    the kinematics (independent of the fit's residual code). [mrad]"""
    pose = kin.forward(obs.steps, errors)
    beam = reflect(pose.u_normal_enu, obs.u_sun_enu)
    return 1e3 * angle_between(beam, obs.spot_enu_m - pose.centre_enu_m)


def test_reported_figures_are_unweighted_mrad_with_mixed_sigma():
    # Half the rows at 0.1 mrad noise, half at 2.0 mrad, each with its matching sigma_m:
    # the weights (median σ / σ_i) differ by 20× between the halves. Weights belong in the
    # objective only; every reported figure must be the plain beam error in mrad.
    rng = np.random.default_rng(31)
    hel = FIELD.heliostats["H001"]
    kin = hel.kinematics
    truth = draw_true_errors(kin.drive, rng, translation_m=0.0)
    parts = [
        simulate_observations(hel, truth, TARGET, FIELD.site, CAMPAIGN[0::2], rng, 0.1),
        simulate_observations(hel, truth, TARGET, FIELD.site, CAMPAIGN[1::2], rng, 2.0),
    ]
    df = pd.concat(parts, ignore_index=True)
    obs = _obs(df)["H001"]
    r = fit_heliostat(kin, obs)
    assert r.success and r.n_outliers == 0
    inl = ~np.isin(obs.rows, r.outlier_rows)
    after = _true_beam_misses(kin, obs, r.errors)
    before = _true_beam_misses(kin, obs, KinematicErrors.zeros(kin.drive))
    # The fit's residual is |r − d| projected perpendicular to d, the direct one the angle
    # between them: equal up to O(θ²) ≈ 1e-5 relative at mrad angles -> rtol 1e-4.
    np.testing.assert_allclose(r.residuals_mrad, after, rtol=1e-4)
    assert r.rms_after_mrad == pytest.approx(np.sqrt(np.mean(after[inl] ** 2)), rel=1e-4)
    assert r.rms_before_mrad == pytest.approx(np.sqrt(np.mean(before[inl] ** 2)), rel=1e-4)
    # Per-axis noise: 30 components at 2.0 mrad and 30 at 0.1 mrad over 60 − 7 degrees of
    # freedom -> ≈ 1.5 mrad; χ² with 30 dof keeps it in [1.0, 2.0] at > 3σ. The weighted
    # number (the bug) was ≈ 0.1 mrad.
    assert 1.0 < r.noise_mrad < 2.0
    # Cross-validation in the same units: the refit LOO measures unweighted held-out
    # residuals, and the hat-matrix LOO (weighted internally) must agree with it.
    loo = loo_rms(kin, obs, r)
    assert loo > r.rms_after_mrad
    assert abs(loo_hat(kin, obs, r) - loo) < 0.05 * loo  # nearly linear model
    assert r.rms_after_mrad < kfold_rms(kin, obs, r) < 2 * loo
    # The weights still act inside the fit: dropping sigma_m changes the solution.
    d2 = df.copy()
    d2["sigma_m"] = np.nan
    plain = fit_heliostat(kin, _obs(d2)["H001"])
    diff = plain.errors.to_vector(r.names) - r.errors.to_vector(r.names)
    assert np.max(np.abs(diff)) > 1e-6


def test_unidentifiable_parameters_get_nan_standard_errors():
    # On an az-el drive a vertical offset of axis 1 and one of axis 2 move the mirror
    # identically: the two Jacobian columns are equal, JᵀJ is exactly singular and no
    # finite standard error exists for either offset.
    from heliostat.commands._common import print_json

    rng = np.random.default_rng(32)
    hel = FIELD.heliostats["H001"]
    kin = hel.kinematics
    truth = KinematicErrors.from_dict(
        kin.drive, {"axis1_zero_rad": 2e-3, "axis2_zero_rad": -1e-3, "axis1_offset_u_m": 0.05}
    )
    df = simulate_observations(hel, truth, TARGET, FIELD.site, CAMPAIGN, rng, 0.2)
    obs = _obs(df)["H001"]
    names = ("axis1_zero_rad", "axis2_zero_rad", "axis1_offset_u_m", "axis2_offset_u_m")
    r = fit_heliostat(kin, obs, names)
    assert r.success
    assert math.isnan(r.std["axis1_offset_u_m"]) and math.isnan(r.std["axis2_offset_u_m"])
    assert any("condition number" in w for w in r.warnings)
    assert any("axis1_offset_u_m, axis2_offset_u_m not determined" in w for w in r.warnings)
    # The zero offsets are estimable: their standard errors equal those of the fit with
    # the redundant offset removed (same determined directions, same RSS and degrees of
    # freedom). Both fits converge to 1e-10 of the optimum -> rtol 1e-6.
    reduced = fit_heliostat(kin, obs, names[:2] + names[3:])
    for name in names[:2]:
        assert r.std[name] == pytest.approx(reduced.std[name], rel=1e-6), name
    # The sum of the two offsets is what the data determine: it matches the reduced fit.
    total = r.errors["axis1_offset_u_m"] + r.errors["axis2_offset_u_m"]
    assert total == pytest.approx(reduced.errors["axis2_offset_u_m"], abs=1e-6)
    # Written as null in the JSON output, never as a finite number.
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        print_json(r.summary())
    std = json.loads(buf.getvalue())["parameter_std"]
    assert std["axis1_offset_u_m"] is None and std["axis2_offset_u_m"] is None
    assert std["axis1_zero_rad"] == pytest.approx(r.std["axis1_zero_rad"])


def test_kfold_does_not_depend_on_row_order():
    _, df = _campaign("AA39", 33)
    kin = FIELD.heliostats["AA39"].kinematics
    values = []
    for seed in range(3):
        perm = np.random.default_rng(seed).permutation(len(df))
        obs = _obs(df.iloc[perm].reset_index(drop=True))["AA39"]
        values.append(kfold_rms(kin, obs, fit_heliostat(kin, obs), k=5))
    # Same folds in canonical order; only the warm start (the full fit on permuted rows,
    # differing in summation order at ~1e-12) differs. Each fold's fit then stops where
    # least_squares' 1e-10 tolerances are met, which along this model's poorly identified
    # directions leaves the k-fold RMS up to 1.2e-7 apart (measured over 6 permutations;
    # another CPU's BLAS gave 1.2e-7 too): rel 1e-5 keeps a margin of ~100 and still
    # catches folds drawn over row positions, which gave differences of percent.
    assert values[1] == pytest.approx(values[0], rel=1e-5)
    assert values[2] == pytest.approx(values[0], rel=1e-5)


# --------------------------------------------------------------------------- bad rows, part 2
def test_duplicate_rows_are_counted_once_and_named(tmp_path):
    _, df = _campaign("H001", 3)
    dup = pd.concat([df, df.iloc[[2, 4]]], ignore_index=True)
    path = tmp_path / "obs.csv"
    dup.to_csv(path, index=False)
    obs, rejected = read_observations(path, FIELD)
    n = len(df)
    # Lines: header 1, data row i on line i + 2; the copies are the last two lines.
    assert [(r.row, r.reason.split(" (")[0]) for r in rejected] == [
        (n + 2, "duplicate of line 4"),
        (n + 3, "duplicate of line 6"),
    ]
    assert len(obs["H001"]) == n  # each measurement weighs once


@pytest.mark.parametrize("col", ["spot_x_m", "spot_e_m", "sigma_m"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "abc"])
def test_non_finite_spot_or_sigma_is_a_named_rejection(tmp_path, col, value):
    _, df = _campaign("H001", 4)
    df["sigma_m"] = 0.002
    df = df.astype(object)
    df.loc[3, col] = value
    path = tmp_path / "obs.csv"
    df.to_csv(path, index=False)
    obs, rejected = read_observations(path, FIELD)
    assert [(r.row, r.reason) for r in rejected] == [(5, f"{col} {value!r} is not a finite number")]
    assert len(obs["H001"]) == len(df) - 1


def test_a_vanishing_sigma_is_refused_not_used_as_a_weight(tmp_path):
    # sigma 1e-300 m made the weights 1e300 and the fit's SVD fail to converge.
    truth, df = _campaign("H001", 5)
    df["sigma_m"] = 0.002
    df.loc[1, "sigma_m"] = 1e-300
    path = tmp_path / "obs.csv"
    df.to_csv(path, index=False)
    obs, rejected = read_observations(path, FIELD)
    assert len(rejected) == 1 and rejected[0].row == 3
    assert "sigma_m 1e-300 m is below 1e-06 m" in rejected[0].reason
    res = fit_heliostat(FIELD.heliostats["H001"].kinematics, obs["H001"])
    assert res.success


def test_a_header_only_file_is_a_clear_error(tmp_path, capsys):
    from heliostat.cli import main

    _, df = _campaign("H001", 6)
    path = tmp_path / "obs.csv"
    df.iloc[:0].to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"obs.csv: no observation rows \(only a header\)"):
        read_observations(path, FIELD)
    rc = main(["calibrate", str(path), "--field", "tests/data/field_small.toml"])
    assert rc == 2 and "no observation rows" in capsys.readouterr().err
