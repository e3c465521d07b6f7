"""Hybrid pointing model: the geometric error model, then a learned residual regressor.

As in data-driven heliostat calibration (a physical kinematic model first, a data-driven
model on what it leaves, e.g. [1]_): the kinematic error model is fitted as usual
(:func:`heliostat.calibration.fit_heliostat`); its beam residuals on the calibration
points, two components in the target-plane axes divided by the slant range [mrad], are
then regressed on the sun position and the motor steps by a ridge regression on a fixed
9-term basis (:mod:`heliostat.ml.training.hybrid_graph`), evaluated by the shipped ONNX
graph ``pointing_residual.onnx`` with the heliostat's coefficients as inputs.

Small data (~30 points a heliostat) makes overfitting the main risk, so:

* the basis is small (9 terms) and the coefficients are ridge-penalised;
* the penalty is chosen by **internal k-fold cross-validation** on the calibration
  points only, and each fold refits the geometric model too (nested: the geometric fit
  of a fold never sees that fold's held-out points);
* the learned correction is **used only when it helps**: when its cross-validated RMS
  is not at least :data:`MIN_GAIN` (5 %) below the geometric model's, the hybrid falls
  back to the geometric model alone (``use_correction=False``, reason stated). The 5 %
  margin keeps a correction that wins by noise out.

Where the simulator's truth lies outside the fitted error model (pivot offsets, parameters
left out as poorly identifiable) there is a smooth residual to learn; where it does not,
the regressor can only fit noise and the fallback keeps the geometric model.

References
----------
.. [1] M. Pargmann et al., "Automatic heliostat learning for in situ concentrating solar
   power plant metrology with differentiable ray tracing," Nature Communications 15,
   2024 (learned corrections on top of a kinematic model, Jülich field data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from heliostat.calibration import FitResult, Observations, fit_heliostat
from heliostat.frames import enu_to_azel, intersect_plane, normalize, reflect
from heliostat.kinematics import HeliostatKinematics, KinematicErrors
from heliostat.ml.registry import load_session

__all__ = [
    "MIN_GAIN",
    "HybridModel",
    "basis",
    "beam_residuals_mrad",
    "features",
    "fit_hybrid",
    "hybrid_residuals_mrad",
]

MODEL_NAME = "pointing_residual"
#: Relative cross-validated improvement the correction must show to be used. [1]
MIN_GAIN = 0.05
#: Ridge penalties tried, per observation (λ = value × N). [1]
LAMBDAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
N_BASIS = 9


def features(obs: Observations) -> NDArray[np.float64]:
    """[sun_azimuth_rad, sun_elevation_rad, axis1_steps, axis2_steps], shape (N, 4)."""
    az, el = enu_to_azel(obs.u_sun_enu)
    return np.c_[az, el, obs.steps.astype(float)]


def basis(feat: NDArray, centre: NDArray, scale: NDArray) -> NDArray[np.float64]:
    """The regressor's basis (N, 9), the same as the ONNX graph's (numpy mirror)."""
    z = (np.asarray(feat, float) - centre) / scale
    a, s = z[:, :2], z[:, 2:]
    return np.c_[np.sin(a), np.cos(a), s, s * s, s[:, :1] * s[:, 1:]]


def beam_residuals_mrad(
    kin: HeliostatKinematics, obs: Observations, errors: KinematicErrors | None
) -> NDArray[np.float64]:
    """Measured minus predicted spot, target-plane axes, over the slant range. (N, 2) [mrad]

    The predicted spot is the model's beam (forward kinematics, r = 2(n·s)n − s)
    intersected with the observation's target plane.
    """
    pose = kin.forward(obs.steps.astype(float), errors)
    r = reflect(pose.u_normal_enu, normalize(obs.u_sun_enu))
    hit = intersect_plane(pose.centre_enu_m, r, obs.target_centre_enu_m, obs.target_normal_enu)
    d = obs.spot_enu_m - hit
    n = normalize(obs.target_normal_enu)
    ex = normalize(np.cross(np.array([0.0, 0.0, 1.0]), n))  # target x (frames.target_axes)
    ey = np.cross(n, ex)
    slant = np.linalg.norm(obs.spot_enu_m - pose.centre_enu_m, axis=1)
    return 1e3 * np.c_[np.sum(d * ex, 1), np.sum(d * ey, 1)] / slant[:, None]


def _rms(res: NDArray) -> float:
    res = np.asarray(res).reshape(-1, 2)
    return float(np.sqrt(np.mean(np.sum(res**2, axis=1)))) if len(res) else math.nan


def _norm_params(feat: NDArray) -> tuple[NDArray, NDArray]:
    c = np.zeros(4)
    s = np.ones(4)
    st = feat[:, 2:]
    c[2:] = 0.5 * (st.max(0) + st.min(0))
    s[2:] = np.maximum(0.5 * (st.max(0) - st.min(0)), 1.0)
    return c, s


def _ridge(b: NDArray, r: NDArray, lam: float) -> tuple[NDArray, NDArray]:
    """Ridge fit r ≈ b W + bias (bias not penalised). W (9, 2), bias (2,)."""
    mb, mr = b.mean(0), r.mean(0)
    bc, rc = b - mb, r - mr
    a = bc.T @ bc + lam * len(b) * np.eye(b.shape[1])
    w = np.linalg.solve(a, bc.T @ rc)
    return w, mr - mb @ w


@dataclass(frozen=True, slots=True)
class HybridModel:
    """A heliostat's hybrid pointing model.

    Attributes
    ----------
    heliostat_id : str
    geometric : FitResult
        The kinematic error-model fit on all calibration points.
    centre, scale : ndarray (4,)
        Feature normalisation (angles: 0 and 1; steps: mid-range and half-range).
    weights : ndarray (9, 2)
    bias : ndarray (2,)
        Ridge coefficients [mrad]; zeros when ``use_correction`` is False.
    lam : float
        Chosen ridge penalty per observation. [1]
    use_correction : bool
        The learned correction is applied (it beat the geometric model in the internal
        cross-validation by at least :data:`MIN_GAIN`).
    cv_geometric_mrad, cv_hybrid_mrad : float
        Internal k-fold RMS pointing error of the geometric model and of the best hybrid.
    reason : str
        Why the correction is or is not used.
    """

    heliostat_id: str
    geometric: FitResult
    centre: NDArray[np.float64]
    scale: NDArray[np.float64]
    weights: NDArray[np.float64]
    bias: NDArray[np.float64]
    lam: float
    use_correction: bool
    cv_geometric_mrad: float
    cv_hybrid_mrad: float
    reason: str

    def correction_mrad(self, feat: NDArray, models_dir=None) -> NDArray[np.float64]:
        """Predicted residual of the geometric model (N, 2) [mrad], by the ONNX graph."""
        if not self.use_correction:
            return np.zeros((len(feat), 2))
        return onnx_correction(feat, self.centre, self.scale, self.weights, self.bias, models_dir)

    def summary(self) -> dict:
        return {
            "heliostat": self.heliostat_id,
            "use_correction": self.use_correction,
            "lambda": self.lam,
            "cv_geometric_mrad": self.cv_geometric_mrad,
            "cv_hybrid_mrad": self.cv_hybrid_mrad,
            "reason": self.reason,
        }


def onnx_correction(feat, centre, scale, weights, bias, models_dir=None) -> NDArray[np.float64]:
    """Evaluate the shipped regressor graph. (N, 2) [mrad]"""
    sess, _ = load_session(MODEL_NAME, models_dir)
    f32 = np.float32
    out = sess.run(
        None,
        {
            "features": np.asarray(feat, f32).reshape(-1, 4),
            "centre": np.asarray(centre, f32),
            "scale": np.asarray(scale, f32),
            "weights": np.asarray(weights, f32),
            "bias": np.asarray(bias, f32),
        },
    )[0]
    return out.astype(np.float64)


def fit_hybrid(
    kin: HeliostatKinematics,
    obs: Observations,
    names=None,
    *,
    k: int = 5,
    seed: int = 0,
    geometric: FitResult | None = None,
) -> HybridModel:
    """Fit the geometric model, then the residual regressor with internal validation.

    Parameters
    ----------
    kin : HeliostatKinematics
    obs : Observations
        The heliostat's calibration points (not the held-out ones).
    names : sequence of str, optional
        Error parameters of the geometric fit (default: the drive's default groups).
    k : int
        Internal cross-validation folds.
    seed : int
        Seed of the fold partition.
    geometric : FitResult, optional
        An existing geometric fit on ``obs`` (else fitted here).
    """
    n = len(obs)
    geo = geometric if geometric is not None else fit_heliostat(kin, obs, names)
    zeros = np.zeros((N_BASIS, 2))

    def fallback(reason: str, cvg=math.nan, cvh=math.nan, lam=math.nan) -> HybridModel:
        c, s = _norm_params(features(obs)) if n else (np.zeros(4), np.ones(4))
        return HybridModel(obs.heliostat_id, geo, c, s, zeros, np.zeros(2), lam, False,
                           cvg, cvh, reason)  # fmt: skip

    if not geo.success:
        return fallback(f"geometric fit failed: {geo.reason}")
    if n < max(2 * k, N_BASIS + 3):
        return fallback(f"{n} points are too few to validate a learned correction")
    feat = features(obs)
    rng = np.random.default_rng(seed)
    folds = np.array_split(rng.permutation(n), k)
    e_geo, e_hyb = [], {lam: [] for lam in LAMBDAS}
    for test in folds:
        train = np.setdiff1d(np.arange(n), test)
        g = fit_heliostat(kin, obs.subset(train), geo.names, robust=False, start=geo.errors)
        if not g.success:
            return fallback(f"a cross-validation refit failed: {g.reason}")
        r_tr = beam_residuals_mrad(kin, obs.subset(train), g.errors)
        r_te = beam_residuals_mrad(kin, obs.subset(test), g.errors)
        c, s = _norm_params(feat[train])
        b_tr, b_te = basis(feat[train], c, s), basis(feat[test], c, s)
        e_geo.append(r_te)
        for lam in LAMBDAS:
            w, b0 = _ridge(b_tr, r_tr, lam)
            e_hyb[lam].append(r_te - (b_te @ w + b0))
    cv_geo = _rms(np.concatenate(e_geo))
    cv_h = {lam: _rms(np.concatenate(v)) for lam, v in e_hyb.items()}
    lam = min(cv_h, key=cv_h.get)
    if not cv_h[lam] < (1.0 - MIN_GAIN) * cv_geo:
        return fallback(
            f"learned correction does not help in {k}-fold validation "
            f"({cv_h[lam]:.3f} vs geometric {cv_geo:.3f} mrad): geometric model only",
            cv_geo,
            cv_h[lam],
            lam,
        )
    c, s = _norm_params(feat)
    w, b0 = _ridge(basis(feat, c, s), beam_residuals_mrad(kin, obs, geo.errors), lam)
    return HybridModel(
        obs.heliostat_id, geo, c, s, w, b0, lam, True, cv_geo, cv_h[lam],
        f"learned correction used: {k}-fold RMS {cv_h[lam]:.3f} vs geometric {cv_geo:.3f} mrad",
    )  # fmt: skip


def hybrid_residuals_mrad(
    kin: HeliostatKinematics, obs: Observations, model: HybridModel, models_dir=None
) -> NDArray[np.float64]:
    """Residual of the hybrid model on (held-out) observations. (N, 2) [mrad]"""
    r = beam_residuals_mrad(kin, obs, model.geometric.errors)
    return r - model.correction_mrad(features(obs), models_dir)
