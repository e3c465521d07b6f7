"""Batched fit (heliostat.calibration.batch) against the single fit, heliostat by heliostat.

The heliostats are simulated with every effect of the realistic simulator on (sag,
thermal tilt, backlash, refraction, clock error, ...: effects outside the fitted model),
both drive types, some with gross outliers so the robust stage runs.
"""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from heliostat.calibration import batch as batch_module
from heliostat.calibration import fit_heliostat, loo_hat, observations_from_frame
from heliostat.calibration.batch import _Batch, fit_batch
from heliostat.calibration.fit import Problem, resolve_names
from heliostat.config import load_field
from heliostat.kinematics import KinematicErrors, default_groups
from sim.effects import Effects
from sim.floor import make_case
from sim.observe import draw_true_errors, simulate_field_observations

FIELD = load_field("tests/data/field_small.toml")
DRIVES = {"azel": "H001", "linear": "AA39"}
#: Parameter groups per drive for the agreement test. With every effect on, the az-el
#: default set's canting runs to its ±50 mrad bound in most campaigns (the fit's own
#: suggestion drops it), and a fit at a bound is handed to the single fit; the set the
#: fit suggests keeps the test on the batched path.
GROUPS = {
    "azel": ("first_axis_tilt", "nonorthogonality", "zero_offsets"),
    "linear": None,
}


def _with_outliers(obs, rows, shift_m, name):
    spot = obs.spot_enu_m.copy()
    spot[rows] += shift_m
    return dataclasses.replace(obs, heliostat_id=name, spot_enu_m=spot)


@pytest.fixture(scope="module", params=sorted(DRIVES))
def campaigns(request):
    """(kinematics, [Observations]) of 8 effect-laden campaigns of one drive type; every
    other one with 2 gross outliers (0.5 m across the target, ≈ 7 mrad at this range)."""
    hid = DRIVES[request.param]
    kin = FIELD.heliostats[hid].kinematics
    rng = np.random.default_rng(4711)
    out = []
    for i in range(8):
        truth = draw_true_errors(kin.drive, rng)
        case = make_case(FIELD, hid, truth, Effects.realistic(), 100 + i)
        obs, rejected = observations_from_frame(case.observations, case.field)
        assert rejected == []
        o = dataclasses.replace(obs[hid], heliostat_id=f"{hid}-{i}")
        if i == 2:
            o = o.subset(np.arange(len(o) - 5))  # a shorter campaign: padded in the batch
        if i % 2:
            o = _with_outliers(o, [2, 7], np.array([0.5, 0.0, 0.0]), o.heliostat_id)
        out.append(o)
    return kin, out


def test_kernel_matches_problem(campaigns):
    """The compiled chain gives Problem's residuals and Jacobian (numpy chain)."""
    kin, obs = campaigns
    rng = np.random.default_rng(5)
    # A start with every error (translations, backlash too) non-zero, so every slot is
    # exercised; the backlash with the campaigns' directions of the last move (both
    # signs on both axes), once fixed in the base values and once fitted.
    n_all = len(KinematicErrors.zeros(kin.drive).values)
    base = KinematicErrors(kin.drive, tuple(rng.normal(0, 2e-3, n_all)))
    assert all(all(o.both_directions()) for o in obs)
    default = resolve_names(kin.drive, None)
    for residual, names in (
        ("angle", default),
        ("plane", default),
        ("angle", resolve_names(kin.drive, [*default_groups(kin.drive), "backlash"])),
    ):
        bt = _Batch([kin] * len(obs), obs, names, [base] * len(obs), residual)
        x = base.to_vector(names)[None] + rng.normal(0, 1e-3, (len(obs), len(names)))
        res, jac = bt.evaluate(np.arange(len(obs)), x)
        for b, o in enumerate(obs):
            prob = Problem(kin, o, names, base, residual)
            n = len(o)
            # Same formulas, other summation order: residuals of a few mrad agree to
            # round-off of unit vectors (1e-16) times 1e3 and the slant-range division.
            np.testing.assert_allclose(res[b, :n].ravel(), prob.fun_mrad(x[b]), rtol=0, atol=1e-9)
            # Central differences of those residuals over 2h = 2e-7: round-off 1e-12 mrad
            # / 2e-7 ≈ 5e-6 mrad/rad on entries of 1e2..1e4 mrad/rad.
            np.testing.assert_allclose(jac[b, : 2 * n], prob.jac(x[b]), rtol=1e-7, atol=1e-4)
            w = bt.weight[b, :n]
            np.testing.assert_allclose(w, prob.weight, rtol=1e-12)


def test_batch_equals_single_fit(campaigns, mocker):
    kin, obs = campaigns
    names = resolve_names(kin.drive, GROUPS[kin.drive])
    single = mocker.spy(batch_module, "fit_heliostat")
    batch = fit_batch([kin] * len(obs), obs, names, loo="hat")
    handed = {c.args[1].heliostat_id for c in single.call_args_list}
    assert [r.heliostat_id for r in batch] == [o.heliostat_id for o in obs]
    n_robust = 0
    for r, o in zip(batch, obs, strict=True):
        s = fit_heliostat(kin, o, names)
        assert r.success == s.success and r.reason == s.reason
        if o.heliostat_id in handed:
            # Handed to the single fit: only where it ends at a bound or fails.
            assert not s.success or any("reached the bound" in w for w in s.warnings)
            continue
        assert s.success
        # Same estimator, same minimum: the inliers, warnings and suggestions agree exactly.
        assert r.outlier_rows == s.outlier_rows
        assert r.warnings == s.warnings and r.suggested_names == s.suggested_names
        n_robust += bool(s.n_outliers)
        # Both optimisers stop near the one minimum: scipy's ftol = 1e-10 leaves at most
        # sqrt(2·ftol·cost)/s ≈ sqrt(1e-10·(2n − p)) ≈ 1e-4 standard errors between its
        # stop and the minimum (the batch stops at FTOL = 1e-12). 1e-3 standard errors is
        # far below anything physical and 10× that.
        std = np.array([s.std[n] for n in names])
        diff = np.abs(r.errors.to_vector(names) - s.errors.to_vector(names))
        assert np.all(diff <= 1e-3 * std), diff / std
        # Standard errors, RMS, noise and LOO are smooth in x: a 1e-3-σ shift moves them
        # by far less than 1e-4 relative.
        for nm in names:
            assert r.std[nm] == pytest.approx(s.std[nm], rel=1e-4)
        for f in ("rms_before_mrad", "rms_after_mrad", "noise_mrad", "condition"):
            assert getattr(r, f) == pytest.approx(getattr(s, f), rel=1e-4), f
        # Each residual moves by J_i·Δx: at most 1e-3 σ per parameter times p ≤ 8
        # parameters, each σ_k·|J_ik| at most the noise (leverage ≤ 1): < 1e-2 noise.
        np.testing.assert_allclose(
            r.residuals_mrad, s.residuals_mrad, rtol=0, atol=1e-2 * s.noise_mrad
        )
        assert r.loo_rms_mrad == pytest.approx(loo_hat(kin, o, s), rel=1e-4)
    assert n_robust >= 1  # injected outliers went through the batched robust stage
    assert len(handed) <= len(obs) // 2


def test_odd_cases_go_to_the_single_fit(campaigns):
    kin, obs = campaigns
    names = resolve_names(kin.drive, None)
    short = obs[0].subset(np.arange(3))  # 6 residuals for 6-8 parameters: too few
    got = fit_batch([kin, kin], [short, obs[1]], names)
    want = fit_heliostat(kin, short, names)
    assert not got[0].success and got[0].reason == want.reason
    assert got[1].success
    assert fit_batch([], [], names) == []


def test_bad_input_is_a_clear_error():
    a, b = (FIELD.heliostats[h].kinematics for h in ("H001", "AA39"))
    with pytest.raises(ValueError, match="one drive type"):
        fit_batch([a, b], [None, None], ("axis1_zero_rad",))
    with pytest.raises(ValueError, match="2 kinematics for 1"):
        fit_batch([a, a], [None], ("axis1_zero_rad",))
    with pytest.raises(ValueError, match="loo"):
        fit_batch([a], [None], ("axis1_zero_rad",), loo="refit")


@pytest.mark.parametrize("hid", ["H001", "AA39"])
def test_noise_free_field_recovers_the_truth(hid):
    """Vectorised field generator + batch: without noise the fit returns the truth."""
    rng = np.random.default_rng(99)
    hel = FIELD.heliostats[hid]
    times = pd.date_range("2025-03-01T07:00Z", periods=6, freq="80min")
    times = [t + pd.Timedelta(days=d) for d in range(5) for t in times]
    kins, truths, obs = simulate_field_observations(
        hel, 12, FIELD.targets["cal1"], FIELD.site, times, rng, noise_mrad=0.0
    )
    assert len(obs) >= 10 and len({k.position_enu_m for k in kins}) == len(kins)
    names = resolve_names(hel.kinematics.drive)
    got = fit_batch(kins, obs, names)
    cols = [KinematicErrors.zeros(hel.kinematics.drive).names.index(n) for n in names]
    for r, t in zip(got, truths, strict=True):
        assert r.success and r.n_outliers == 0
        # Exact data, exact model: the minimum is the truth; the fit stops within 1e-9 of
        # it (µrad-level effects of 1e-12 convergence tolerances through cond ≈ 1e3).
        np.testing.assert_allclose(r.errors.to_vector(names), t[cols], rtol=0, atol=1e-9)
        assert r.rms_after_mrad < 1e-6
