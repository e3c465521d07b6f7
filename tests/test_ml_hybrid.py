"""The hybrid pointing model: ONNX graph, internal validation, fallback."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from heliostat.calibration import observations_from_frame
from heliostat.ml.hybrid import (
    MIN_GAIN,
    basis,
    beam_residuals_mrad,
    features,
    fit_hybrid,
    hybrid_residuals_mrad,
    onnx_correction,
)
from heliostat.ml.registry import load_card, model_bytes


@pytest.fixture(scope="module")
def campaign():
    from sim.campaign import CampaignSettings, simulate_campaign
    from sim.field import draw_truth, generate_field

    field = generate_field(3, np.random.default_rng(21))
    truth = draw_truth(field, np.random.default_rng(22))
    res = simulate_campaign(field, truth, CampaignSettings(days=6, frame_heliostats=0), 23)
    obs, rejected = observations_from_frame(res.observations.astype(str), field)
    assert not rejected
    return field, obs


def _rms(r):
    return float(np.sqrt(np.mean(np.sum(r**2, axis=1))))


def test_onnx_graph_equals_numpy_basis(campaign):
    field, obs = campaign
    o = next(iter(obs.values()))
    feat = features(o)
    c = np.array([0.0, 0.0, *np.median(feat[:, 2:], axis=0)])
    s = np.array([1.0, 1.0, *np.ptp(feat[:, 2:], axis=0) / 2])
    w = np.random.default_rng(1).normal(0.0, 1.0, (9, 2))
    b = np.array([0.3, -0.2])
    # float32 graph vs float64 numpy: |basis| <= ~1, 9 terms -> ~1e-6 relative.
    np.testing.assert_allclose(onnx_correction(feat, c, s, w, b), basis(feat, c, s) @ w + b,
                               atol=1e-4)  # fmt: skip


def test_residuals_vanish_for_a_perfect_model(campaign):
    """With the truth's spot as the measurement, the nominal model's residual is the
    truth/nominal difference and is finite; residual of measured vs itself is ~0."""
    field, obs = campaign
    hid, o = next(iter(obs.items()))
    kin = field.heliostats[hid].kinematics
    r = beam_residuals_mrad(kin, o, None)
    assert r.shape == (len(o), 2) and np.all(np.isfinite(r))
    pose = kin.forward(o.steps.astype(float))
    from heliostat.frames import intersect_plane, normalize, reflect

    hit = intersect_plane(pose.centre_enu_m, reflect(pose.u_normal_enu, normalize(o.u_sun_enu)),
                          o.target_centre_enu_m, o.target_normal_enu)  # fmt: skip
    exact = dataclasses.replace(o, spot_enu_m=hit)
    np.testing.assert_allclose(beam_residuals_mrad(kin, exact, None), 0.0, atol=1e-9)


def test_learned_correction_removes_a_smooth_unmodelled_error(campaign):
    """A smooth error outside the kinematic model (a 3 mrad sin(3 elevation) cos(azimuth) sag on the
    target's y axis) is learned: the hybrid beats the geometric model on held-out rows."""
    field, obs = campaign
    hid, o = next(iter(obs.items()))
    kin = field.heliostats[hid].kinematics
    az, el = features(o)[:, 0], features(o)[:, 1]
    pose = kin.forward(o.steps.astype(float))
    slant = np.linalg.norm(o.spot_enu_m - pose.centre_enu_m, axis=1)
    sag = 3e-3 * np.sin(3 * el) * np.cos(az) * slant
    ey = np.array([0.0, 0.0, 1.0])  # vertical target: its y axis is up
    bent = dataclasses.replace(o, spot_enu_m=o.spot_enu_m + sag[:, None] * ey)
    n_tr = 30
    tr, te = bent.subset(np.arange(n_tr)), bent.subset(np.arange(n_tr, len(bent)))
    model = fit_hybrid(kin, tr)
    assert model.use_correction, model.reason
    geo = _rms(beam_residuals_mrad(kin, te, model.geometric.errors))
    hyb = _rms(hybrid_residuals_mrad(kin, te, model))
    assert hyb < 0.8 * geo  # clearly better, not by noise


def test_falls_back_to_geometric_when_nothing_to_learn(campaign):
    """Campaign noise only (0.2 mrad, white): the correction must not be used, and the
    hybrid's held-out residual is then exactly the geometric model's."""
    field, obs = campaign
    fell_back = 0
    for hid, o in obs.items():
        kin = field.heliostats[hid].kinematics
        tr, te = o.subset(np.arange(30)), o.subset(np.arange(30, len(o)))
        m = fit_hybrid(kin, tr)
        if not m.use_correction:
            fell_back += 1
            assert "does not help" in m.reason
            assert m.cv_hybrid_mrad > (1 - MIN_GAIN) * m.cv_geometric_mrad
            np.testing.assert_array_equal(
                hybrid_residuals_mrad(kin, te, m), beam_residuals_mrad(kin, te, m.geometric.errors)
            )
    assert fell_back >= 1


def test_too_few_points_fall_back(campaign):
    field, obs = campaign
    hid, o = next(iter(obs.items()))
    m = fit_hybrid(field.heliostats[hid].kinematics, o.subset(np.arange(9)))
    assert not m.use_correction and "too few" in m.reason


def test_residual_graph_is_hash_checked():
    card = load_card("pointing_residual")
    data, _ = model_bytes("pointing_residual")
    assert len(data) == card["size_bytes"]
