"""Which sun positions calibrate a heliostat best: the design criterion of the planner.

A calibration fits p error parameters x to beam-pointing residuals. Near the nominal model
the residual of a visit at sun position s is linear in x: r = J(s) x + ε, with J(s) the
2 × p Jacobian the fit itself uses (:class:`heliostat.calibration.fit.Problem`, ``angle``
residual, mrad per unit) and ε the measurement noise, σ per axis. After visits s_1..s_n the
parameter covariance is (Bayesian least squares, prior covariance P) [1]_

    C = (P⁻¹ + Σ_i J(s_i)ᵀ J(s_i) / σ²)⁻¹                                         (1)

and the expected squared beam-pointing error of the fitted model at a held-out sun
position s is tr(J(s) C J(s)ᵀ). Averaged over an evaluation sky s_1..s_K (the sun
positions the heliostat will work at)

    E² = tr(C M),   M = (1/K) Σ_k J(s_k)ᵀ J(s_k)                                  (2)

is the expected held-out RMS beam error [mrad] that parameter noise leaves: an I-optimal
(integrated-variance) design criterion [2]_. Visits all at one sun position leave C
singular up to the prior, E stays at the prior's size; spread visits bring it down as
1/√n. Adding one visit at s updates C by the rank-2 Woodbury identity

    C' = C − C Jᵀ S⁻¹ J C,   S = σ² I + J C Jᵀ                                    (3)

so the gain of a candidate visit, E² − E'² = tr(S⁻¹ J C M C Jᵀ), costs a few 2 × 2 and
p × p products and is vectorised over heliostats and candidates.

The prior P is diagonal and wide (:data:`PRIOR_STD_RAD`, :data:`PRIOR_STD_M`): it keeps
(1) finite before a heliostat is identifiable and is negligible after. E is the part of
the held-out error a schedule can change; effects outside the fitted model add to it.

The Jacobian of many heliostats sharing one drive design (same constants, different
pivots) comes from one :class:`~heliostat.calibration.fit.Problem`: the chain depends on
the pivot only through a translation, so each heliostat's rows are evaluated with the
pivot at the origin and the aim point moved by minus the pivot (exact). The commanded
steps are the closed-form angles whose normal bisects the sun and the pivot-to-aim
direction (:meth:`~heliostat.kinematics.HeliostatKinematics.angles_for_normal`); that
neglects the mirror centre's offset from the pivot (≈ offset / range, a few mrad in the
steps), far below the scale on which J changes over the sky.

References
----------
.. [1] A. C. Atkinson, A. N. Donev and R. D. Tobias, *Optimum Experimental Designs, with
   SAS*, Oxford University Press, 2007, ch. 10 (D-, A- and I-optimality) and ch. 12
   (sequential and Bayesian designs).
.. [2] F. Pukelsheim, *Optimal Design of Experiments*, SIAM Classics, 2006.
   doi:10.1137/1.9780898719109
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from numpy.typing import ArrayLike, NDArray

from heliostat.calibration.fit import Problem
from heliostat.calibration.observations import Observations
from heliostat.frames import normalize
from heliostat.kinematics import HeliostatKinematics

#: Prior standard deviation of an angular error parameter before calibration (wide:
#: installation errors are 1-3 mrad). [rad]
PRIOR_STD_RAD = 10e-3
#: Prior standard deviation of a length error parameter (stroke, translation). [m]
PRIOR_STD_M = 10e-3
#: Rows per batched Jacobian evaluation (bounds the memory of one call).
CHUNK_ROWS = 20_000


def prior_precision(names: Sequence[str]) -> NDArray[np.float64]:
    """Diagonal of P⁻¹ of Eq. (1) for the named parameters. [1/unit²]"""
    std = np.array([PRIOR_STD_RAD if n.endswith("_rad") else PRIOR_STD_M for n in names])
    return 1.0 / std**2


def pointing_jacobians(
    kin: HeliostatKinematics,
    names: Sequence[str],
    aim_minus_pivot_enu_m: ArrayLike,
    u_sun_enu: ArrayLike,
) -> NDArray[np.float64]:
    """Jacobians J(s) of Eq. (1) for H heliostats of one drive design at T sun positions.

    Parameters
    ----------
    kin : HeliostatKinematics
        The drive design (its pivot is ignored: only the constants matter).
    names : sequence of str
        Fitted parameters (p).
    aim_minus_pivot_enu_m : array_like of shape (H, 3)
        Aim point minus each heliostat's pivot. [m]
    u_sun_enu : array_like of shape (T, 3)
        Unit vectors toward the sun.

    Returns
    -------
    ndarray of shape (H, T, 2, p)
        Beam-pointing residual per unit parameter [mrad/rad or mrad/m]; NaN where the aim
        is out of the actuators' reach at that sun position.
    """
    off = np.atleast_2d(np.asarray(aim_minus_pivot_enu_m, dtype=float))
    sun = normalize(np.atleast_2d(np.asarray(u_sun_enu, dtype=float)))
    if off.ndim != 2 or off.shape[1] != 3 or sun.ndim != 2 or sun.shape[1] != 3:
        raise ValueError(
            f"expected offsets (H, 3) and sun vectors (T, 3), got {off.shape} and {sun.shape}"
        )
    names = tuple(names)
    h, t, p = off.shape[0], sun.shape[0], len(names)
    out = np.full((h * t, 2, p), np.nan)
    kin0 = replace(kin, position_enu_m=(0.0, 0.0, 0.0))
    spot = np.repeat(off, t, axis=0)  # row = heliostat-major, sun-minor
    u_sun = np.tile(sun, (h, 1))
    steps = _aim_steps(kin0, spot, u_sun)
    rows = np.flatnonzero(np.all(np.isfinite(steps), axis=1))
    for a in range(0, rows.size, CHUNK_ROWS):
        r = rows[a : a + CHUNK_ROWS]
        n = r.size
        obs = Observations(
            "plan",
            u_sun[r],
            steps[r].astype(np.int64),
            spot[r],
            spot[r],
            -normalize(spot[r]),
            ("",) * n,
            np.full(n, np.nan),
            np.arange(n, dtype=np.int64),
            ("",) * n,
        )
        jac = Problem(kin0, obs, names).jac(np.zeros(p))  # (2n, p), rows x then y
        out[r] = jac.reshape(n, 2, p)
    return out.reshape(h, t, 2, p)


def _aim_steps(
    kin0: HeliostatKinematics, aim_minus_pivot_enu_m: NDArray, u_sun_enu: NDArray
) -> NDArray[np.float64]:
    """Integer steps of the closed-form aim (module docstring), NaN where out of reach."""
    normal = normalize(u_sun_enu + normalize(aim_minus_pivot_enu_m))
    with np.errstate(invalid="ignore"):
        steps = np.rint(kin0.angles_to_steps(kin0.angles_for_normal(normal)))
    ok = np.all(np.isfinite(steps), axis=1)
    ok[ok] &= kin0.within_limits(steps[ok])
    steps[~ok] = np.nan
    return steps


def reachable(
    kin: HeliostatKinematics, aim_minus_pivot_enu_m: ArrayLike, u_sun_enu: ArrayLike
) -> NDArray[np.bool_]:
    """Whether each of H heliostats of one drive design can put its beam on the aim point
    at each of T sun positions within its actuator travel. Shape (H, T)."""
    off = np.atleast_2d(np.asarray(aim_minus_pivot_enu_m, dtype=float))
    sun = normalize(np.atleast_2d(np.asarray(u_sun_enu, dtype=float)))
    h, t = off.shape[0], sun.shape[0]
    kin0 = replace(kin, position_enu_m=(0.0, 0.0, 0.0))
    steps = _aim_steps(kin0, np.repeat(off, t, axis=0), np.tile(sun, (h, 1)))
    return np.all(np.isfinite(steps), axis=1).reshape(h, t)


def sky_moment(jac: NDArray[np.float64]) -> NDArray[np.float64]:
    """M of Eq. (2): mean of JᵀJ over the reachable sun positions.

    Parameters
    ----------
    jac : ndarray of shape (H, K, 2, p)
        Jacobians at the evaluation sky (NaN rows = unreachable, left out).

    Returns
    -------
    ndarray of shape (H, p, p)
        [mrad²/unit²]; zero for a heliostat that reaches none of the sky.
    """
    ok = np.all(np.isfinite(jac), axis=(2, 3))
    j = np.where(ok[..., None, None], jac, 0.0)
    cnt = np.maximum(ok.sum(axis=1), 1)
    return np.einsum("hkap,hkaq->hpq", j, j) / cnt[:, None, None]


def posterior(jac: ArrayLike, noise_mrad: float, prior_prec: ArrayLike) -> NDArray[np.float64]:
    """C of Eq. (1) for visits with Jacobians ``jac`` (n, 2, p). [unit²]"""
    j = np.asarray(jac, dtype=float).reshape(-1, np.shape(prior_prec)[-1])
    info = np.diag(np.asarray(prior_prec, dtype=float)) + j.T @ j / noise_mrad**2
    return np.linalg.inv(info)


def expected_error_mrad(cov: ArrayLike, moment: ArrayLike) -> NDArray[np.float64]:
    """E of Eq. (2): √tr(C M), vectorised over leading axes. [mrad]"""
    c, m = np.asarray(cov, dtype=float), np.asarray(moment, dtype=float)
    return np.sqrt(np.maximum(np.einsum("...pq,...qp->...", c, m), 0.0))


def visit_gain(
    cov: NDArray[np.float64],
    jac: NDArray[np.float64],
    moment: NDArray[np.float64],
    noise_mrad: float,
) -> NDArray[np.float64]:
    """Decrease of E² by one more visit, E² − E'² = tr(S⁻¹ J C M C Jᵀ) (Eq. 3).

    Parameters
    ----------
    cov : ndarray of shape (..., p, p)
    jac : ndarray of shape (..., 2, p)
        Jacobian of the candidate visit (broadcasts against ``cov``).
    moment : ndarray of shape (..., p, p)
    noise_mrad : float
        σ per axis. [mrad]

    Returns
    -------
    ndarray of shape (...)
        [mrad²]; NaN where ``jac`` is NaN (unreachable).
    """
    a = jac @ cov  # J C, (..., 2, p)
    s = a @ np.swapaxes(jac, -1, -2) + noise_mrad**2 * np.eye(2)
    q = a @ moment @ np.swapaxes(a, -1, -2)
    return np.einsum("...ij,...ji->...", np.linalg.inv(s), q)


def add_visit(
    cov: NDArray[np.float64], jac: NDArray[np.float64], noise_mrad: float
) -> NDArray[np.float64]:
    """C' of Eq. (3), vectorised over leading axes."""
    a = jac @ cov
    s = a @ np.swapaxes(jac, -1, -2) + noise_mrad**2 * np.eye(2)
    return cov - np.swapaxes(a, -1, -2) @ np.linalg.solve(s, a)


def greedy_design(
    jac: ArrayLike,
    moment: ArrayLike,
    noise_mrad: float,
    prior_prec: ArrayLike,
    target_error_mrad: float,
    max_visits: int,
) -> tuple[list[int], float]:
    """Candidate visits chosen one at a time, each the one that lowers E most, until
    E ≤ ``target_error_mrad`` or ``max_visits`` (a candidate may be chosen again).

    Parameters
    ----------
    jac : array_like of shape (N, 2, p)
        Jacobians of the candidate sun positions (NaN = unreachable, never chosen).
    moment : array_like of shape (p, p)
        M of Eq. (2).
    noise_mrad : float
    prior_prec : array_like of shape (p,)
    target_error_mrad : float
    max_visits : int

    Returns
    -------
    chosen : list of int
        Candidate indices in the order chosen.
    error_mrad : float
        E after them.
    """
    j = np.asarray(jac, dtype=float)
    m = np.asarray(moment, dtype=float)
    cov = np.diag(1.0 / np.asarray(prior_prec, dtype=float))
    live = np.all(np.isfinite(j), axis=(1, 2))
    chosen: list[int] = []
    err = float(expected_error_mrad(cov, m))
    while err > target_error_mrad and len(chosen) < max_visits and live.any():
        g = np.where(
            live, visit_gain(cov, np.where(live[:, None, None], j, 0.0), m, noise_mrad), -math.inf
        )
        k = int(np.argmax(g))
        chosen.append(k)
        cov = add_visit(cov, j[k], noise_mrad)
        err = float(expected_error_mrad(cov, m))
    return chosen, err
