"""Fit a heliostat's kinematic error parameters to its calibration observations.

Residual
--------
For observation i with sun vector s_i and motor steps q_i, the model (nominal kinematics
plus error parameters x) gives the mirror normal n_i(x) and centre c_i(x), and the
predicted beam r_i = 2(n_i·s_i)n_i − s_i. Two residuals are offered:

``"angle"`` (default)
    the angle between r_i and the measured ray d_i = (p_i − c_i)/|p_i − c_i| from the
    mirror centre to the measured spot p_i, as two components on a fixed basis
    perpendicular to the measured ray. [mrad]
``"plane"``
    the miss on the target plane between the predicted hit and p_i (target x, y),
    divided by the slant range |p_i − c_i|. [mrad]

Both are ≈ equal for small errors; ``"plane"`` is what a camera measures, ``"angle"`` is
independent of the target's tilt.

Estimator
---------
1. ``scipy.optimize.least_squares``, plain least squares from the nominal model, within
   the bounds the drive module declares per parameter group (the built-in drives: ±50 mrad
   on angles, ±0.5 m on translations, ±50 mm on strokes);
   ``dogbox`` method; residuals and central-difference Jacobian from one batched call
   (:mod:`heliostat.calibration.model`).
2. Robust noise scale s = 1.4826·MAD of the residual components; an observation is an
   outlier when its residual norm exceeds 4.3 s (for Gaussian noise, |r|²/s² is χ² with
   2 degrees of freedom and P(χ²₂ > 4.3²) = 1e-4). No outlier: done.
3. Otherwise a robust fit (``soft_l1`` loss, scale 1 mrad) from there, then ordinary least
   squares on the inliers (efficient for Gaussian noise), outliers re-tested with the new
   scale until the set is stable (at most 3 rounds).

Weights: rows with a ``sigma_m`` are weighted by w_i = median(σ)/σ_i (σ as an angle,
``sigma_m`` over the slant range; rows without one get w = 1) inside the least-squares
objective, the outlier test, the standard errors and the identifiability check only.
Every reported figure (RMS before/after, noise, per-row residuals, cross-validation) is
the unweighted beam-pointing residual in mrad.

Parameter standard errors: Cov = s² (JᵀJ)⁻¹ at the solution with the weighted Jacobian,
s² = RSS_w/(2n − rank J) of the weighted residuals. When the column-normalised Jacobian is
numerically singular (smallest singular value below :data:`SINGULAR_RTOL` × the largest),
the parameters with a component in its null space are not identifiable: their standard
error is NaN (``null`` in JSON), never a finite number from a pseudo-inverse.
Identifiability: the condition number of J with unit-norm columns; above
:data:`COND_WARN` (or with a sun-direction spread under :data:`SPREAD_WARN_DEG`) the
result carries a warning and a smaller parameter set, found by dropping the parameter with
the largest weight in the weakest singular direction until the condition is fine.

References
----------
.. [1] W. B. Stine and R. W. Harrigan, *Solar Energy Fundamentals and Design*, Wiley, 1985
   (beam reflection r = 2(n·s)n − s).
.. [2] P. J. Huber and E. M. Ronchetti, *Robust Statistics*, 2nd ed., Wiley, 2009.
   doi:10.1002/9780470434697 (MAD scale, 1.4826).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import least_squares

from heliostat.calibration.model import batched_pose
from heliostat.calibration.observations import Observations
from heliostat.errors import CalibrationError
from heliostat.frames import normalize
from heliostat.kinematics import (
    HeliostatKinematics,
    KinematicErrors,
    default_groups,
    names_for_groups,
)

#: Condition number (unit-norm Jacobian columns) above which the fit warns.
COND_WARN = 300.0
#: Relative singular value (to the largest, unit-norm Jacobian columns) below which a
#: direction of parameter space counts as not determined by the data (cond > 1e10).
SINGULAR_RTOL = 1e-10
#: Largest pairwise angle between sun directions below which the fit warns. [deg]
SPREAD_WARN_DEG = 20.0
#: Outlier threshold on the residual norm in robust standard deviations (P = 1e-4).
OUTLIER_K = math.sqrt(-2.0 * math.log(1e-4))
#: Smallest robust noise scale used for outlier tests (numerical floor). [mrad]
MIN_SCALE_MRAD = 1e-3
#: Robust-loss scale of the robust stage. [mrad]
ROBUST_SCALE_MRAD = 1.0
RESIDUALS = ("angle", "plane")


def resolve_names(drive: str, groups: Sequence[str] | None = None) -> tuple[str, ...]:
    """Parameter names for groups (default: the drive's :func:`default_groups`)."""
    return names_for_groups(drive, default_groups(drive) if groups is None else groups)


@dataclass(frozen=True, slots=True)
class FitResult:
    """Outcome of one heliostat's fit. Check ``success`` before using ``errors``.

    Attributes
    ----------
    heliostat_id, drive : str
    names : tuple of str
        Fitted parameters, in the order of ``std``.
    errors : KinematicErrors
        Fitted error set (parameters not fitted stay at their start value, zero).
    std : dict of str to float
        1-sigma standard error per fitted parameter (unit in the name); NaN for a parameter
        the data do not determine (singular Jacobian).
    success : bool
    reason : str
        Why the fit failed (empty on success).
    n_points, n_outliers : int
    outlier_rows : tuple of int
        Source rows judged gross outliers (not used in the final fit).
    rms_before_mrad, rms_after_mrad : float
        RMS beam-pointing residual of the inliers with the nominal and the fitted model.
    noise_mrad : float
        Estimated residual standard deviation per axis, sqrt(RSS/(2n − rank J)) of the
        unweighted inlier residuals. [mrad]
    residuals_mrad : ndarray of shape (N,)
        Residual norm per observation with the fitted model (outliers included). [mrad]
    condition : float
        Condition number of the column-normalised Jacobian.
    warnings : tuple of str
    suggested_names : tuple of str
        A smaller, identifiable parameter set when the chosen one is not; else empty.
    loo_rms_mrad, kfold_rms_mrad : float
        Cross-validated pointing error (NaN until computed).
    selection : dict or None
        How the parameter set was chosen, when it was
        (:func:`heliostat.calibration.selection.calibrate_heliostat`: chosen set, reason,
        nested cross-validated error, candidates' scores); None for a fixed set.
    """

    heliostat_id: str
    drive: str
    names: tuple[str, ...]
    errors: KinematicErrors
    std: dict[str, float]
    success: bool
    reason: str = ""
    n_points: int = 0
    n_outliers: int = 0
    outlier_rows: tuple[int, ...] = ()
    rms_before_mrad: float = math.nan
    rms_after_mrad: float = math.nan
    noise_mrad: float = math.nan
    residuals_mrad: NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    condition: float = math.nan
    warnings: tuple[str, ...] = ()
    suggested_names: tuple[str, ...] = ()
    loo_rms_mrad: float = math.nan
    kfold_rms_mrad: float = math.nan
    selection: dict | None = None

    def parameters(self) -> dict[str, float]:
        """Fitted values by name (unit in the name: rad or m)."""
        return {n: float(self.errors[n]) for n in self.names}

    def summary(self) -> dict:
        """A JSON-ready dictionary of the figures."""
        return {
            "heliostat": self.heliostat_id,
            "drive": self.drive,
            "success": self.success,
            "reason": self.reason,
            "n_points": self.n_points,
            "n_outliers": self.n_outliers,
            "outlier_rows": list(self.outlier_rows),
            "parameters": self.parameters(),
            "parameter_std": dict(self.std),
            "rms_before_mrad": self.rms_before_mrad,
            "rms_after_mrad": self.rms_after_mrad,
            "noise_mrad": self.noise_mrad,
            "loo_rms_mrad": self.loo_rms_mrad,
            "kfold_rms_mrad": self.kfold_rms_mrad,
            "condition": self.condition,
            "warnings": list(self.warnings),
            "suggested_parameters": list(self.suggested_names),
            "parameter_selection": self.selection,
        }


class Problem:
    """Residuals and Jacobian of one heliostat's fit (pure numerics, no I/O)."""

    def __init__(
        self,
        kin: HeliostatKinematics,
        obs: Observations,
        names: Sequence[str],
        base: KinematicErrors | None = None,
        residual: str = "angle",
    ) -> None:
        if residual not in RESIDUALS:
            raise ValueError(f"residual must be one of {RESIDUALS}, got {residual!r}")
        self.kin, self.obs, self.names = kin, obs, tuple(names)
        self.base = base if base is not None else KinematicErrors.zeros(kin.drive)
        self.residual = residual
        # Difference steps: 0.1 µrad for angles, 1 µm for lengths.
        self._h = np.array([1e-7 if n.endswith("_rad") else 1e-6 for n in self.names])
        self._cache: tuple[NDArray, NDArray, NDArray] | None = None
        self.steps = obs.steps.astype(float)
        self.sun = normalize(obs.u_sun_enu)
        # Fixed basis perpendicular to the measured ray from the nominal mirror centre.
        centre0 = kin.forward(self.steps).centre_enu_m
        d0 = normalize(obs.spot_enu_m - centre0)
        helper = np.where(np.abs(d0[:, 2:3]) < 0.9, [[0.0, 0.0, 1.0]], [[1.0, 0.0, 0.0]])
        self.ea = normalize(np.cross(d0, helper))
        self.eb = np.cross(d0, self.ea)
        sig = obs.sigma_m / np.linalg.norm(obs.spot_enu_m - centre0, axis=1)
        if np.any(np.isfinite(sig)):
            ref = np.nanmedian(sig)
            self.weight = np.where(np.isfinite(sig), ref / np.where(np.isfinite(sig), sig, 1), 1)
        else:
            self.weight = np.ones(len(obs))

    def residuals_batch(self, x: NDArray[np.float64], weighted: bool = True) -> NDArray[np.float64]:
        """Residuals (K, N, 2) for K parameter vectors. [mrad]

        ``weighted=True`` (the least-squares objective) multiplies row i by
        ``self.weight[i]``; ``weighted=False`` gives the beam-pointing residual in mrad.
        """
        normal, centre = batched_pose(
            self.kin, self.base, self.names, x, self.steps, self.obs.approach
        )
        s = self.sun[None]
        r = 2.0 * np.sum(normal * s, axis=-1, keepdims=True) * normal - s
        dvec = self.obs.spot_enu_m[None] - centre
        if self.residual == "angle":
            d = dvec / np.linalg.norm(dvec, axis=-1, keepdims=True)
            diff = r - d
        else:
            nrm = self.obs.target_normal_enu[None]
            t = np.sum(
                (self.obs.target_centre_enu_m[None] - centre) * nrm, axis=-1, keepdims=True
            ) / np.sum(r * nrm, axis=-1, keepdims=True)
            diff = (centre + t * r - self.obs.spot_enu_m[None]) / np.linalg.norm(
                dvec, axis=-1, keepdims=True
            )
        out = 1e3 * np.stack([np.sum(diff * self.ea, -1), np.sum(diff * self.eb, -1)], axis=-1)
        return out * self.weight[None, :, None] if weighted else out

    def _evaluate(self, x: NDArray[np.float64]) -> tuple[NDArray, NDArray]:
        """Residuals and central-difference Jacobian at x from one batched call of 2p + 1
        parameter sets (the optimiser asks for the Jacobian at the point it just
        evaluated, so computing both together halves the model calls)."""
        if self._cache is not None and np.array_equal(self._cache[0], x):
            return self._cache[1], self._cache[2]
        p = x.size
        xs = np.concatenate([x[None], x + np.diag(self._h), x - np.diag(self._h)])
        r = self.residuals_batch(xs).reshape(2 * p + 1, -1)
        jac = ((r[1 : p + 1] - r[p + 1 :]) / (2 * self._h[:, None])).T
        self._cache = (x.copy(), r[0], jac)
        return r[0], jac

    def fun(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """Weighted residuals (2N,), the least-squares objective. [mrad]"""
        if x.size == 0:
            return self.residuals_batch(x[None])[0].ravel()
        return self._evaluate(x)[0]

    def fun_mrad(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """Unweighted beam-pointing residuals (2N,), for every reported figure. [mrad]"""
        return self.residuals_batch(np.asarray(x, dtype=float)[None], weighted=False)[0].ravel()

    def jac(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """Jacobian (2N, p) of the weighted residuals by central differences.
        [mrad per unit]"""
        return self._evaluate(x)[1]

    def errors_for(self, x: NDArray[np.float64]) -> KinematicErrors:
        return self.base.with_vector(self.names, x)


def _norms(res: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.linalg.norm(res.reshape(-1, 2), axis=1)


def _rms(res_norm: NDArray[np.float64]) -> float:
    # RMS beam pointing error: sqrt(mean |r|²) over observations. [mrad]
    return float(np.sqrt(np.mean(res_norm**2))) if res_norm.size else math.nan


def identifiability(
    jac: NDArray[np.float64], names: Sequence[str], cond_limit: float = COND_WARN
) -> tuple[float, tuple[str, ...]]:
    """Condition number of the column-normalised Jacobian and, if above the limit, a
    reduced parameter set (greedy removal of the least identifiable parameter)."""
    names = list(names)
    j = np.array(jac, dtype=float)

    def cond(m: NDArray) -> tuple[float, NDArray]:
        nrm = np.linalg.norm(m, axis=0)
        if np.any(nrm == 0):
            v = (nrm == 0).astype(float)
            return math.inf, v
        _, sv, vt = np.linalg.svd(m / nrm, full_matrices=False)
        return (sv[0] / sv[-1] if sv[-1] > 0 else math.inf), vt[-1]

    c0, weak = cond(j)
    if c0 <= cond_limit:
        return c0, ()
    keep = list(range(len(names)))
    c = c0
    while c > cond_limit and len(keep) > 1:
        drop = keep[int(np.argmax(np.abs(weak)))]
        keep.remove(drop)
        c, weak = cond(j[:, keep])
    return c0, tuple(names[i] for i in keep)


def standard_errors(
    jac: NDArray[np.float64], names: Sequence[str]
) -> tuple[NDArray[np.float64], tuple[str, ...], int]:
    """Diagonal of (JᵀJ)⁻¹, the parameters the data do not determine, and the rank of J.

    The inverse is taken through the SVD of the column-normalised Jacobian J D⁻¹ = U S Vᵀ
    (D = column norms): (JᵀJ)⁻¹ = D⁻¹ V S⁻² Vᵀ D⁻¹, far better conditioned than inverting
    JᵀJ. Singular values below :data:`SINGULAR_RTOL` × the largest span the null space; a
    parameter with a component in it (|row of the null-space basis| > 1e-6, or a zero
    column) is not determined by the data and gets NaN. The other parameters are
    estimable, and their variance over the determined directions is exact (the same as in
    the fit without the redundant parameters). Multiply by s² for the covariance.

    Returns
    -------
    var : ndarray of shape (p,)
        Diagonal of (JᵀJ)⁻¹, NaN for the unidentifiable parameters. [unit²/mrad²]
    unidentifiable : tuple of str
    rank : int
        Number of determined directions (for the degrees of freedom 2n − rank).
    """
    names = tuple(names)
    j = np.asarray(jac, dtype=float)
    var = np.full(len(names), math.nan)
    nrm = np.linalg.norm(j, axis=0)
    live = np.flatnonzero(np.isfinite(nrm) & (nrm > 0))
    if live.size == 0:
        return var, names, 0
    _, sv, vt = np.linalg.svd(j[:, live] / nrm[live], full_matrices=False)
    small = ~(sv >= SINGULAR_RTOL * sv[0])
    # Row norms of the null-space basis: 1e-6 is far above round-off (1e-16 · cond of the
    # determined part) and far below any real mixing of a parameter into the null space.
    in_null = np.linalg.norm(vt[small], axis=0) > 1e-6
    v = vt[~small].T / sv[~small]  # V S⁻¹ over the determined directions
    var_live = np.sum(v**2, axis=1) / nrm[live] ** 2
    var[live[~in_null]] = var_live[~in_null]
    return (
        var,
        tuple(n for n, vv in zip(names, var, strict=True) if np.isnan(vv)),
        int(np.sum(~small)),
    )


def _solve(prob: Problem, x0, loss: str, f_scale: float, rows: NDArray[np.bool_]):
    mask = np.repeat(rows, 2)
    lb = np.array([-prob.kin.spec.fit_bound(n) for n in prob.names])
    ub = -lb
    x0 = np.clip(x0, lb * 0.999, ub * 0.999)
    return least_squares(
        lambda x: prob.fun(x)[mask],
        x0,
        jac=lambda x: prob.jac(x)[mask],
        bounds=(lb, ub),
        loss=loss,
        f_scale=f_scale,
        x_scale=np.full(len(prob.names), 1e-3),  # typical size: mrad, mm
        method="dogbox",
        xtol=1e-10,
        ftol=1e-10,
        gtol=1e-10,
        max_nfev=200,
    )


def fit_heliostat(
    kin: HeliostatKinematics,
    obs: Observations,
    names: Sequence[str] | None = None,
    residual: str = "angle",
    robust: bool = True,
    start: KinematicErrors | None = None,
) -> FitResult:
    """Fit the named error parameters of one heliostat to its observations.

    Parameters
    ----------
    kin : HeliostatKinematics
        Nominal kinematics.
    obs : Observations
        Valid observations of this heliostat.
    names : sequence of str, optional
        Parameters to fit (default: the drive's :func:`default_groups`).
    residual : {"angle", "plane"}
    robust : bool
        Robust first stage and outlier rejection (default); False fits plain least squares
        on every row.
    start : KinematicErrors, optional
        Start values (and values of the parameters not fitted). Default: zeros.

    Returns
    -------
    FitResult
        ``success=False`` with a ``reason`` when the data cannot support the fit or the
        optimiser fails; never a silent number.
    """
    names = tuple(names) if names is not None else resolve_names(kin.drive)
    base = start if start is not None else KinematicErrors.zeros(kin.drive)
    n, p = len(obs), len(names)

    def failed(reason: str, **kw) -> FitResult:
        return FitResult(
            obs.heliostat_id, kin.drive, names, base, {}, False, reason, n_points=n, **kw
        )

    if p == 0:
        return failed("no parameters to fit")
    if 2 * n < p + 1:
        return failed(f"{n} observations give {2 * n} residuals, too few for {p} parameters")
    try:
        prob = Problem(kin, obs, names, base, residual)
        x0 = base.to_vector(names)
        r_nom = _norms(prob.fun_mrad(x0))
        if not np.all(np.isfinite(r_nom)):
            bad = obs.rows[~np.isfinite(r_nom)].tolist()
            return failed(f"nominal model gives no beam for rows {bad} (spot behind mirror?)")
        inl = np.ones(n, dtype=bool)

        def outliers_at(x: NDArray[np.float64], used: NDArray[np.bool_]) -> NDArray[np.bool_]:
            r = prob.fun(x).reshape(-1, 2)
            # Robust σ per axis, floored at 1 µrad so noise-free data flags nothing.
            scale = max(1.4826 * np.median(np.abs(r[used])), MIN_SCALE_MRAD)
            return np.linalg.norm(r, axis=1) > OUTLIER_K * scale

        # Plain least squares first (the problem is nearly linear: few iterations). If no
        # residual is an outlier by the robust scale, that is the answer.
        sol = _solve(prob, x0, "linear", 1.0, inl)
        x = sol.x
        if robust and np.any(outliers_at(x, inl)):
            # Outliers pull least squares: robust loss from there, then least squares on
            # the inliers, re-testing the outliers with the new scale until stable.
            x = _solve(prob, x, "soft_l1", ROBUST_SCALE_MRAD, inl).x
            for round_ in range(3):
                new_inl = ~outliers_at(x, inl)
                if 2 * new_inl.sum() < p + 1:
                    return failed(
                        f"only {int(new_inl.sum())} of {n} observations agree with any "
                        "model; too few for the parameters"
                    )
                if round_ > 0 and np.array_equal(new_inl, inl):
                    break
                inl = new_inl
                sol = _solve(prob, x, "linear", 1.0, inl)
                x = sol.x
        if sol.status <= 0:
            cond, suggested = identifiability(prob.jac(sol.x)[np.repeat(inl, 2)], names)
            hint = (
                f"; the parameters are not identifiable from these sun positions (condition "
                f"number {cond:.3g}): fit fewer, e.g. {', '.join(suggested)}"
                if suggested
                else ""
            )
            return failed(
                f"least_squares did not converge: {sol.message}{hint}",
                condition=float(cond),
                suggested_names=tuple(suggested),
            )
    except (ValueError, np.linalg.LinAlgError) as exc:
        raise CalibrationError(f"fit of {obs.heliostat_id} failed: {exc}") from exc
    # Weighted residuals for the statistics of the estimator (s², Cov), unweighted
    # residuals for every reported figure in mrad.
    res = _norms(prob.fun_mrad(x))
    res_w = _norms(prob.fun(x))
    j = prob.jac(x)[np.repeat(inl, 2)]
    return _finish(kin, obs, names, x, prob.errors_for(x), inl, r_nom, res, res_w, j, prob.sun)


def _finish(
    kin: HeliostatKinematics,
    obs: Observations,
    names: tuple[str, ...],
    x: NDArray[np.float64],
    errors: KinematicErrors,
    inl: NDArray[np.bool_],
    r_nom: NDArray[np.float64],
    res: NDArray[np.float64],
    res_w: NDArray[np.float64],
    j: NDArray[np.float64],
    sun: NDArray[np.float64],
    ident: tuple[float, tuple[str, ...]] | None = None,
    se: tuple[NDArray[np.float64], tuple[str, ...], int] | None = None,
) -> FitResult:
    """The result of a converged fit: statistics, warnings and suggestions (shared with
    the batched fit, :mod:`heliostat.calibration.batch`, which passes ``ident`` =
    :func:`identifiability` and ``se`` = :func:`standard_errors` when it has computed
    them for many heliostats at once).

    ``x`` the fitted values of ``names``; ``inl`` the inlier mask; ``r_nom``, ``res``,
    ``res_w`` residual norms per row (nominal, fitted, fitted weighted) [mrad]; ``j`` the
    weighted Jacobian over the inlier rows; ``sun`` unit sun vectors per row.
    """
    n, p = len(obs), len(names)
    m = 2 * int(inl.sum())
    cond, suggested = ident if ident is not None else identifiability(j, names)
    warnings = []
    if se is not None:
        var, unidentifiable, rank = se
    else:
        try:
            var, unidentifiable, rank = standard_errors(j, names)
        except np.linalg.LinAlgError:
            var, unidentifiable, rank = np.full(p, math.nan), names, p
    # Degrees of freedom: residual components minus determined parameter directions.
    dof = max(m - rank, 1)
    s2 = float(np.sum(res_w[inl] ** 2)) / dof
    noise = math.sqrt(float(np.sum(res[inl] ** 2)) / dof)
    std = {nm: float(math.sqrt(s2 * v)) for nm, v in zip(names, var, strict=True)}
    sun = sun[inl]
    spread = float(np.degrees(np.arccos(np.clip(np.min(sun @ sun.T), -1, 1))))
    if cond > COND_WARN:
        warnings.append(
            f"parameters poorly identifiable from these sun positions (condition number "
            f"{cond:.3g} > {COND_WARN:g}); suggested set: {', '.join(suggested)}"
        )
    if unidentifiable:
        warnings.append(
            f"{', '.join(unidentifiable)} not determined by these observations (singular "
            "Jacobian): their values are arbitrary and their standard errors are NaN"
        )
    if spread < SPREAD_WARN_DEG:
        warnings.append(
            f"sun positions clustered (largest separation {spread:.1f}° < "
            f"{SPREAD_WARN_DEG:g}°): spread observations over more of the day and year"
        )
        if not suggested:
            suggested = identifiability(j, names, cond_limit=COND_WARN / 10)[1]
    at_bound = [nm for i, nm in enumerate(names) if abs(x[i]) >= 0.999 * kin.spec.fit_bound(nm)]
    if at_bound:
        warnings.append(
            f"{', '.join(at_bound)} reached the bound: the model or the data are wrong, or "
            "the parameter is not identifiable (fit fewer parameters)"
        )
    return FitResult(
        heliostat_id=obs.heliostat_id,
        drive=kin.drive,
        names=names,
        errors=errors,
        std=std,
        success=True,
        n_points=n,
        n_outliers=int((~inl).sum()),
        outlier_rows=tuple(int(r) for r in obs.rows[~inl]),
        rms_before_mrad=_rms(r_nom[inl]),
        rms_after_mrad=_rms(res[inl]),
        noise_mrad=float(noise),
        residuals_mrad=res,
        condition=float(cond),
        warnings=tuple(warnings),
        suggested_names=tuple(suggested) if suggested and len(suggested) < p else (),
    )


def inlier_mask(result: FitResult, obs: Observations) -> NDArray[np.bool_]:
    """Rows of ``obs`` the fit used (not flagged as outliers)."""
    return ~np.isin(obs.rows, np.asarray(result.outlier_rows, dtype=np.int64))


def pointing_residuals(
    kin: HeliostatKinematics,
    obs: Observations,
    errors: KinematicErrors,
    residual: str = "angle",
) -> NDArray[np.float64]:
    """Residual norm per observation for a given error set. Shape (N,) [mrad]"""
    prob = Problem(kin, obs, (), errors, residual)
    return _norms(prob.fun_mrad(np.empty(0)))
