"""Cross-validated pointing error of a fitted heliostat.

Leave-one-out (LOO) and k-fold: refit without the held-out observations (plain least
squares on the fit's inliers, warm-started from the full fit) and measure the held-out
residual. The RMS over all held-out observations estimates the pointing error the
calibrated model will show at sun positions like these but not used in the fit.

:func:`loo_hat` is the closed form for a linear model, e_loo,i = (I − H_ii)⁻¹ e_i with
H = J (JᵀJ)⁻¹ Jᵀ and H_ii the 2×2 block of observation i [1]_; the kinematic model is
nearly linear over a few mrad, so it matches the refit LOO closely at a fraction of the
cost (used for field-scale batches). The fit's weights (``sigma_m``) enter the hat
matrix; the held-out residual is reported unweighted (divided by the row's weight), like
every other figure, in mrad.

k-fold partitions do not depend on the order of the rows: the rows are first put in a
canonical order (time, sun vector, steps, spot, target, sigma) and the seeded permutation
is drawn over that order.

References
----------
.. [1] D. A. Belsley, E. Kuh and R. E. Welsch, *Regression Diagnostics*, Wiley, 1980,
   ch. 2 (deletion formulas). doi:10.1002/0471725153
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from numpy.typing import NDArray

from heliostat.calibration.fit import (
    FitResult,
    Problem,
    _rms,
    fit_heliostat,
    inlier_mask,
    pointing_residuals,
)
from heliostat.calibration.observations import Observations
from heliostat.kinematics import HeliostatKinematics


def _heldout(
    kin: HeliostatKinematics,
    obs: Observations,
    result: FitResult,
    folds: list[NDArray[np.int64]],
    residual: str,
) -> NDArray[np.float64]:
    out = []
    for test in folds:
        train = np.setdiff1d(np.arange(len(obs)), test)
        r = fit_heliostat(
            kin, obs.subset(train), result.names, residual, robust=False, start=result.errors
        )
        if not r.success:
            return np.array([math.nan])
        out.append(pointing_residuals(kin, obs.subset(test), r.errors, residual))
    return np.concatenate(out)


def loo_rms(
    kin: HeliostatKinematics, obs: Observations, result: FitResult, residual: str = "angle"
) -> float:
    """Leave-one-out RMS pointing error over the fit's inliers (refit each time). [mrad]"""
    inl = obs.subset(inlier_mask(result, obs))
    folds = [np.array([i]) for i in range(len(inl))]
    return _rms(_heldout(kin, inl, result, folds, residual))


def canonical_order(obs: Observations) -> NDArray[np.int64]:
    """Indices that sort ``obs`` by (time_utc, sun vector, steps, spot, target, sigma).

    The same set of observations in any row order gives the same sequence of rows (rows
    equal in every key are interchangeable), so anything drawn over this order is
    independent of how the input file was sorted.
    """
    _, t_rank = np.unique(np.asarray(obs.times_utc, dtype=str), return_inverse=True)
    _, id_rank = np.unique(np.asarray(obs.target_ids, dtype=str), return_inverse=True)
    keys = [
        t_rank,
        *obs.u_sun_enu.T,
        *obs.steps.T,
        *obs.spot_enu_m.T,
        id_rank,
        obs.sigma_m,
    ]
    # np.lexsort sorts by the last key first.
    return np.lexsort(keys[::-1]).astype(np.int64)


def kfold_rms(
    kin: HeliostatKinematics,
    obs: Observations,
    result: FitResult,
    k: int = 5,
    rng: np.random.Generator | None = None,
    residual: str = "angle",
) -> float:
    """k-fold cross-validated RMS pointing error over the fit's inliers. [mrad]

    Folds are a random partition (seeded by ``rng``; default seed 0 for repeatability)
    of the rows in :func:`canonical_order`, so the result does not depend on row order.
    """
    if k < 2:
        raise ValueError(f"k must be at least 2, got {k}")
    inl = obs.subset(inlier_mask(result, obs))
    if len(inl) < k:
        raise ValueError(f"k-fold needs at least k={k} observations, got {len(inl)}")
    rng = rng if rng is not None else np.random.default_rng(0)
    inl = inl.subset(canonical_order(inl))
    folds = np.array_split(rng.permutation(len(inl)), k)
    return _rms(_heldout(kin, inl, result, folds, residual))


def loo_hat(
    kin: HeliostatKinematics, obs: Observations, result: FitResult, residual: str = "angle"
) -> float:
    """Leave-one-out RMS from the hat matrix of the linearised fit (no refits). [mrad]"""
    inl = obs.subset(inlier_mask(result, obs))
    prob = Problem(kin, inl, result.names, result.errors, residual)
    return loo_hat_at(prob, result.errors.to_vector(result.names))


def loo_hat_at(prob: Problem, x: NDArray[np.float64]) -> float:
    """:func:`loo_hat` of a problem at parameter vector ``x`` (every row of the
    problem; no refits). [mrad]"""
    return loo_hat_from(prob.fun(x), prob.jac(x), prob.weight)


def loo_hat_from(
    res_w: NDArray[np.float64], jac_w: NDArray[np.float64], weight: NDArray[np.float64]
) -> float:
    """Leave-one-out RMS from weighted residuals (2N,) and Jacobian (2N, p) at a
    least-squares solution: e_loo,i = (I − H_ii)⁻¹ e_i, H_ii = J_i (JᵀJ)⁺ J_iᵀ (the 2×2
    blocks of the hat matrix), divided by the row weights (N,) back to the unweighted
    beam-pointing residual. [mrad]"""
    e = res_w.reshape(-1, 2)
    j = jac_w.reshape(e.shape[0], 2, -1)
    cov = np.linalg.pinv(jac_w.T @ jac_w)
    blk = np.eye(2)[None] - np.einsum("nap,pq,nbq->nab", j, cov, j)
    try:
        loo = np.linalg.solve(blk, e[..., None])[..., 0]
    except np.linalg.LinAlgError:
        return math.nan
    return _rms(np.linalg.norm(loo, axis=1) / weight)


def with_cross_validation(
    kin: HeliostatKinematics,
    obs: Observations,
    result: FitResult,
    loo: str = "refit",
    k: int | None = 5,
    residual: str = "angle",
) -> FitResult:
    """The result with ``loo_rms_mrad`` (``"refit"``, ``"hat"`` or ``"none"``) and
    ``kfold_rms_mrad`` (``k=None`` skips it) filled in."""
    if not result.success:
        return result
    if loo not in ("refit", "hat", "none"):
        raise ValueError(f"loo must be 'refit', 'hat' or 'none', got {loo!r}")
    loo_v = (
        loo_rms(kin, obs, result, residual)
        if loo == "refit"
        else loo_hat(kin, obs, result, residual)
        if loo == "hat"
        else math.nan
    )
    n_in = len(obs) - result.n_outliers
    kf = kfold_rms(kin, obs, result, k, residual=residual) if k and n_in >= 2 * k else math.nan
    return dataclasses.replace(result, loo_rms_mrad=loo_v, kfold_rms_mrad=kf)
