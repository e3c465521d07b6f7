"""Batched model selection (heliostat.calibration.selection_batch) against
calibrate_heliostat, heliostat by heliostat.

The heliostats are simulated with every effect of the realistic simulator on (effects
outside the fitted model, so the candidate sets trade against each other and the choice
is not trivial), both drive types, some with gross outliers so the screening and the
robust final fit act.
"""

import dataclasses
import math

import numpy as np
import pytest

from heliostat.calibration import observations_from_frame
from heliostat.calibration import selection_batch as sb
from heliostat.calibration.field import calibrate_field, make_jobs
from heliostat.calibration.selection import (
    SKY_SIGMA_LIMIT_MRAD,
    CalibrationOptions,
    calibrate_heliostat,
)
from heliostat.config import load_field
from sim.effects import Effects
from sim.floor import make_case
from sim.observe import draw_true_errors

FIELD = load_field("tests/data/field_small.toml")
DRIVES = {"azel": "H001", "linear": "AA39"}


def _with_outliers(obs, rows, shift_m):
    spot = obs.spot_enu_m.copy()
    spot[rows] += shift_m
    return dataclasses.replace(obs, spot_enu_m=spot)


@pytest.fixture(scope="module", params=sorted(DRIVES))
def field(request):
    """(kinematics list, [Observations]) of 10 effect-laden campaigns of one drive type;
    every third with 2 gross outliers (0.5 m across the target, ≈ 7 mrad at this range),
    one shortened to 12 records (leave-one-out outer folds, padded in the batch)."""
    hid = DRIVES[request.param]
    kin = FIELD.heliostats[hid].kinematics
    rng = np.random.default_rng(2024)
    obs = []
    for i in range(10):
        truth = draw_true_errors(kin.drive, rng)
        case = make_case(FIELD, hid, truth, Effects.realistic(), 300 + i)
        got, rejected = observations_from_frame(case.observations, case.field)
        assert rejected == []
        o = dataclasses.replace(got[hid], heliostat_id=f"{hid}-{i}")
        if i == 4:
            o = o.subset(np.arange(12))
        if i % 3 == 0:
            o = _with_outliers(o, [1, 6], np.array([0.5, 0.0, 0.0]))
        obs.append(o)
    return [kin] * len(obs), obs


def test_batch_chooses_as_calibrate_heliostat(field, mocker):
    kins, obs = field
    spy = mocker.spy(sb, "calibrate_heliostat")
    batched = sb.calibrate_batch(kins, obs)
    # The batch decided (almost) every heliostat itself; else this test compares the
    # single path with itself.
    assert spy.call_count <= 1
    single = [calibrate_heliostat(k, o) for k, o in zip(kins, obs, strict=True)]
    assert any(c.fit.n_outliers for c in single)  # the robust stage ran
    assert len({c.names for c in single}) > 1  # the choice is not the same everywhere
    for b, s in zip(batched, single, strict=True):
        assert b.names == s.names, s.fit.heliostat_id
        assert b.screened_rows == s.screened_rows
        assert b.selection.fold_choices == s.selection.fold_choices
        assert b.selection.nested_folds == s.selection.nested_folds
        assert b.fit.success == s.fit.success
        assert b.fit.outlier_rows == s.fit.outlier_rows
        # Both optimisers stop at 1e-10-1e-12 tolerances on the same cost: the
        # parameters agree far below their standard errors (as tests/test_calibration_
        # batch.py), the standard errors and leave-one-out (smooth functions of them)
        # to 1e-3 relatively.
        names = s.names
        std = np.array([s.fit.std[n] for n in names])
        diff = np.abs(b.fit.errors.to_vector(names) - s.fit.errors.to_vector(names))
        fin = np.isfinite(std)
        assert np.all(diff[fin] <= 1e-3 * std[fin])
        np.testing.assert_allclose([b.fit.std[n] for n in names], std, rtol=1e-3)
        np.testing.assert_allclose(b.fit.loo_rms_mrad, s.fit.loo_rms_mrad, rtol=1e-3)
        # The nested error: the same folds refitted by the same two Gauss-Newton steps
        # from all-records fits that agree to 1e-3 standard errors; measured 3e-8.
        np.testing.assert_allclose(b.nested_rms_mrad, s.nested_rms_mrad, rtol=1e-5)
        for cb, cs in zip(b.selection.candidates, s.selection.candidates, strict=True):
            assert cb.names == cs.names
            assert cb.at_bound == cs.at_bound
            assert math.isnan(cb.loo_rms_mrad) == math.isnan(cs.loo_rms_mrad)
            if cs.sky_sigma_mrad > 2 * SKY_SIGMA_LIMIT_MRAD:
                # A set the sky check refuses by far is degenerate (with a backlash on
                # both axes of these az-el campaigns: 16-32 mrad against the 5 mrad
                # limit): its cost is flat along a valley, where the two optimisers
                # stop at different points within their tolerances (leave-one-out
                # measured 4e-4 apart, sky figure 4 %). Both refuse it all the same.
                assert cb.sky_sigma_mrad > SKY_SIGMA_LIMIT_MRAD
                np.testing.assert_allclose(cb.loo_rms_mrad, cs.loo_rms_mrad, rtol=1e-2)
                continue
            # the leave-one-out and sky figures of the candidates: measured 1.2e-7 and
            # 1.4e-6 relatively (the margins TIE_RTOL, SKY_RTOL are above these)
            np.testing.assert_allclose(cb.loo_rms_mrad, cs.loo_rms_mrad, rtol=1e-5)
            np.testing.assert_allclose(cb.sky_sigma_mrad, cs.sky_sigma_mrad, rtol=1e-4)
        assert b.reason.split(":")[0] == s.reason.split(":")[0]


def test_doubtful_heliostats_take_the_single_path(field, mocker):
    """With a margin that makes every leave-one-out comparison doubtful, each heliostat
    with a choice to make goes through calibrate_heliostat, whose result it returns."""
    kins, obs = field
    mocker.patch.object(sb, "TIE_RTOL", 10.0)
    spy = mocker.spy(sb, "calibrate_heliostat")
    batched = sb.calibrate_batch(kins[:4], obs[:4])
    assert spy.call_count == 4
    for b, k, o in zip(batched, kins[:4], obs[:4], strict=True):
        s = calibrate_heliostat(k, o)
        assert b.names == s.names
        assert b.nested_rms_mrad == s.nested_rms_mrad  # the same computation


def test_calibrate_field_selects_in_batches(field, mocker):
    kins, obs = field
    spy = mocker.spy(sb, "calibrate_batch")
    jobs = make_jobs({o.heliostat_id: k for k, o in zip(kins, obs, strict=True)},
                     {o.heliostat_id: o for o in obs}, select=True)  # fmt: skip
    res = calibrate_field(jobs, backend="sequential")
    assert spy.call_count == 1
    for o in obs:
        s = calibrate_heliostat(kins[0], o)
        assert res[o.heliostat_id].names == s.names
        assert res[o.heliostat_id].selection["chosen"] == list(s.names)


def test_options_pass_through(field):
    """k-fold of the final fit and the leave-one-out outer folds as options say."""
    kins, obs = field
    opt = CalibrationOptions(kfold=3, outer_k=None)
    b = sb.calibrate_batch(kins[:3], obs[:3], opt)
    for c, k, o in zip(b, kins[:3], obs[:3], strict=True):
        s = calibrate_heliostat(k, o, opt)
        assert c.names == s.names
        assert c.selection.nested_folds == "leave-one-out"
        np.testing.assert_allclose(c.fit.kfold_rms_mrad, s.fit.kfold_rms_mrad, rtol=1e-3)


def test_bad_input_is_a_clear_error(field):
    kins, obs = field
    with pytest.raises(ValueError, match="options.names must be None"):
        sb.calibrate_batch(kins, obs, CalibrationOptions(names=("axis1_zero_rad",)))
    with pytest.raises(ValueError, match="2 kinematics for 1"):
        sb.calibrate_batch(kins[:2], obs[:1])
    other = "AA39" if kins[0].drive != FIELD.heliostats["AA39"].kinematics.drive else "H001"
    with pytest.raises(ValueError, match="one drive type"):
        sb.calibrate_batch([kins[0], FIELD.heliostats[other].kinematics], obs[:2])
    assert sb.calibrate_batch([], []) == []
