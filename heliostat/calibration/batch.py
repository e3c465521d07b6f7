"""Fit many heliostats of one drive type and parameter set together.

:func:`fit_heliostat` solves one small problem (≈30 observations, 6-8 parameters) at a
time through ``scipy.optimize.least_squares``; a field is 10,000 of them. Here the same
estimator runs on a batch: one compiled call (:mod:`heliostat.calibration._batch_kernels`)
gives every heliostat's residuals and finite-difference Jacobian, and a
Levenberg–Marquardt iteration [1]_ with per-heliostat damping λ_b and per-heliostat
convergence solves all the p×p normal equations at once:

    (JᵀJ + λ_b diag(JᵀJ)) δ = −Jᵀr,    accepted when the cost falls (λ_b /= 10), else
    λ_b *= 10; a heliostat stops when a step changes its cost by less than
    :data:`FTOL` relatively or its parameters by less than :data:`XTOL`.

The iterations use forward differences (half the model calls; the minimum is the
cost's, whatever the Jacobian), the statistics central ones as
:class:`~heliostat.calibration.fit.Problem`. Where the residuals' curvature makes
Gauss–Newton steps shrink by a constant ratio (weakly determined parameters with every
simulator effect on: 0.9 per step, 50+ steps), a depth-1 Anderson combination of the last
two steps [2]_ is tried beside the plain step and kept when it lowers the cost.

The stages are those of :func:`heliostat.calibration.fit.fit_heliostat`: least squares
from the start values; where the robust scale flags outliers, the ``soft_l1`` fit
(scale :data:`~heliostat.calibration.fit.ROBUST_SCALE_MRAD`, by iteratively reweighted
steps on the same cost, ρ(z) = 2(√(1+z) − 1) per residual component, as scipy applies it)
and least squares on the inliers, outliers re-tested until stable (at most 3 rounds). The
statistics (standard errors, condition number, warnings) go through the same code as the
single fit (``fit._finish``), with the SVDs batched; the hat-matrix leave-one-out is
:func:`heliostat.calibration.crossval.loo_hat` for a stack of Jacobians.

Both optimisers converge to the same minimum of the same cost, so the results agree to
the optimisers' stopping tolerances, far below the parameters' standard errors
(``tests/test_calibration_batch.py``). A heliostat the batch cannot treat like the rest
goes through :func:`fit_heliostat` instead, so its result (or its failure message) is
exactly the single fit's: a drive the kernel does not know, too few rows, a nominal model
with no beam, a parameter at its bound (scipy's ``dogbox`` handles bounds, projected
steps here do not), or no convergence in :data:`MAX_ITER` steps.

References
----------
.. [1] J. J. Moré, "The Levenberg-Marquardt algorithm: implementation and theory," in
   *Numerical Analysis*, Lecture Notes in Mathematics 630, Springer, 1978, pp. 105-116.
   doi:10.1007/BFb0067700
.. [2] H. F. Walker and P. Ni, "Anderson acceleration for fixed-point iterations," SIAM
   J. Numer. Anal. 49(4), 1715-1735, 2011. doi:10.1137/10078356X
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from heliostat.calibration.crossval import loo_hat
from heliostat.calibration.fit import (
    COND_WARN,
    MIN_SCALE_MRAD,
    OUTLIER_K,
    RESIDUALS,
    ROBUST_SCALE_MRAD,
    SINGULAR_RTOL,
    FitResult,
    _finish,
    fit_heliostat,
    identifiability,
    standard_errors,
)
from heliostat.calibration.observations import Observations
from heliostat.errors import CalibrationError
from heliostat.kinematics import HeliostatKinematics, KinematicErrors

#: Largest number of Levenberg–Marquardt steps per stage before the heliostat is handed
#: to the single fit.
MAX_ITER = 50
#: Relative cost change below which a heliostat has converged.
FTOL = 1e-12
#: Parameter step below which a heliostat has converged. [rad or m]
XTOL = 1e-12
#: Start and floor of the damping: the problems are nearly linear, so the first step is
#: almost Gauss–Newton's and the damping only grows where a step fails.
LAMBDA0 = 1e-6
LAMBDA_MIN = 1e-12
#: Damping from which a refused step that changes the cost by less than FTOL means
#: convergence.
LAMBDA_FLAT = 1e-2
#: Damping above which no step lowers the cost any more: at the minimum to round-off.
LAMBDA_MAX = 1e10
#: A step longer than this fraction of the last accepted one counts as creeping.
CREEP_RATIO = 0.3
#: Heliostats per compiled sweep (bounds the working arrays to a few tens of MB).
CHUNK = 2048


def _kernels():
    """:mod:`heliostat.calibration._batch_kernels`, imported on first use (numba costs
    ~0.3 s to import; a single fit or the CLI's help should not pay it)."""
    from heliostat.calibration import _batch_kernels

    return _batch_kernels


class _Batch:
    """Padded arrays of B heliostats of one drive and parameter set (no I/O)."""

    def __init__(
        self,
        kins: Sequence[HeliostatKinematics],
        obs: Sequence[Observations],
        names: tuple[str, ...],
        starts: Sequence[KinematicErrors],
        residual: str,
    ) -> None:
        b = len(kins)
        drive = kins[0].drive
        self.names, self.plane = names, residual == "plane"
        kern = self._kern = _kernels()
        self.codes, self.n0 = kern.chain_codes(kins[0])
        self.idx = np.array([kern.SLOTS.index(n) for n in names], dtype=np.int64)
        # Difference steps of Problem: 0.1 µrad for angles, 1 µm for lengths.
        self.h = np.array([1e-7 if n.endswith("_rad") else 1e-6 for n in names])
        self._spec = kins[0].spec
        self.lb = np.array([-kins[0].spec.fit_bound(n) for n in names])
        self.ub = -self.lb
        slots = {n: i for i, n in enumerate(kern.SLOTS)}
        self.vals0 = np.zeros((b, len(kern.SLOTS)))
        self.drive = drive
        self.order = np.array([slots[n] for n in KinematicErrors.zeros(drive).names])
        self.vals0[:, self.order] = np.array([s.values for s in starts], dtype=float)
        self.p0 = np.array([k.position_enu_m for k in kins], dtype=float)
        self.tnom = np.array(
            [[k.axis1_offset_enu_m, k.axis2_offset_enu_m, k.mirror_offset_enu_m] for k in kins],
            dtype=float,
        )
        self.axes = np.array([[kern.axis_row(a) for a in k.axes] for k in kins])
        self.nrows = np.array([len(o) for o in obs], dtype=np.int64)
        n = int(self.nrows.max())
        self.valid = np.arange(n)[None, :] < self.nrows[:, None]

        same = bool(np.all(self.nrows == n))

        def pad(get, width: int) -> NDArray[np.float64]:
            if same:
                return np.stack([np.asarray(get(o), dtype=float) for o in obs]).reshape(b, n, width)
            # Padded rows repeat the heliostat's last row: finite, and masked everywhere.
            out = np.empty((b, n, width))
            for i, o in enumerate(obs):
                a = np.asarray(get(o), dtype=float).reshape(len(o), width)
                out[i, : len(o)] = a
                out[i, len(o) :] = a[-1]
            return out

        self.steps = pad(lambda o: o.steps, 2)
        self.appr = pad(lambda o: o.approach, 2)
        sun = pad(lambda o: o.u_sun_enu, 3)
        self.sun = sun / np.linalg.norm(sun, axis=-1, keepdims=True)
        self.spot = pad(lambda o: o.spot_enu_m, 3)
        self.tc = pad(lambda o: o.target_centre_enu_m, 3)
        self.tn = pad(lambda o: o.target_normal_enu, 3)
        sigma = pad(lambda o: o.sigma_m, 1)[..., 0]
        self.ea = np.zeros((b, n, 3))
        self.eb = np.zeros((b, n, 3))
        # Fixed residual basis perpendicular to the measured ray from the nominal centre
        # (Problem.__init__): the nominal chain is zero error values.
        zeros = np.zeros_like(self.vals0)
        every = np.arange(b, dtype=np.int64)
        _, _, centre0 = self._call(every, np.zeros((b, 0)), 0, vals0=zeros)
        d0 = self.spot - centre0
        d0 /= np.linalg.norm(d0, axis=-1, keepdims=True)
        helper = np.where(np.abs(d0[..., 2:3]) < 0.9, [0.0, 0.0, 1.0], [1.0, 0.0, 0.0])
        ea = np.cross(d0, helper)
        self.ea = ea / np.linalg.norm(ea, axis=-1, keepdims=True)
        self.eb = np.cross(d0, self.ea)
        # Row weights median(σ)/σ_i, σ as an angle (Problem.__init__).
        sig = np.where(self.valid, sigma / np.linalg.norm(self.spot - centre0, axis=-1), np.nan)
        has = np.any(np.isfinite(sig), axis=1)
        ref = np.ones(b)
        if np.any(has):
            ref[has] = np.nanmedian(sig[has], axis=1)
        fin = np.isfinite(sig)
        self.weight = np.where(fin & has[:, None], ref[:, None] / np.where(fin, sig, 1.0), 1.0)

    def with_names(self, names: tuple[str, ...]) -> _Batch:
        """The same heliostats and rows for another parameter set (a shallow copy: the
        padded arrays are shared; the start values stay those given)."""
        out = copy.copy(self)
        out.names = names
        out.idx = np.array([self._kern.SLOTS.index(n) for n in names], dtype=np.int64)
        out.h = np.array([1e-7 if n.endswith("_rad") else 1e-6 for n in names])
        out.lb = np.array([-self._spec.fit_bound(n) for n in names])
        out.ub = -out.lb
        return out

    def _call(self, sel, x, want_jac: int, vals0=None):
        m, n, p = len(sel), self.steps.shape[1], len(self.idx)
        res = np.zeros((m, n, 2))
        jac = np.zeros((m, n, 2, p)) if want_jac else np.zeros((1, 1, 2, max(p, 1)))
        centres = np.zeros((m, n, 3))
        self._kern.residual_kernel(
            np.ascontiguousarray(sel, dtype=np.int64), np.ascontiguousarray(x, dtype=float),
            self.h, self.idx, self.vals0 if vals0 is None else vals0, self.p0, self.tnom,
            self.axes, self.codes, self.n0, self.steps, self.appr, self.sun, self.spot, self.tc,
            self.tn, self.ea, self.eb, self.nrows, self.plane, int(want_jac), res, jac, centres,
        )  # fmt: skip
        return res, jac, centres

    def evaluate(self, sel, x, want_jac: int = 2):
        """Unweighted residuals (M, N, 2) [mrad] and the weighted Jacobian
        (M, 2N, p) of heliostats ``sel`` at parameters x (M, p): by central differences
        (``want_jac=2``, as :class:`~heliostat.calibration.fit.Problem`; the statistics),
        forward differences (1: half the cost; the iterations, whose minimum is the
        cost's whatever the Jacobian) or none (0)."""
        res, jac, _ = self._call(sel, x, want_jac)
        if not want_jac:
            return res, None
        w = self.weight[sel][:, :, None, None]
        return res, (jac * w).reshape(len(sel), -1, len(self.idx))

    def weighted(self, sel, res: NDArray[np.float64]) -> NDArray[np.float64]:
        return res * self.weight[sel][:, :, None]


def _cost(r: NDArray[np.float64], robust: bool) -> NDArray[np.float64]:
    # 2·scipy's cost: Σ r² (linear) or Σ f²ρ((r/f)²), ρ(z) = 2(√(1+z) − 1) (soft_l1).
    if not robust:
        return np.sum(r * r, axis=1)
    f = ROBUST_SCALE_MRAD
    return np.sum(f * f * 2.0 * (np.sqrt(1.0 + (r / f) ** 2) - 1.0), axis=1)


def _lm(
    bt: _Batch,
    sel: NDArray[np.int64],
    x0: NDArray[np.float64],
    rows: NDArray[np.bool_],
    robust: bool,
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Levenberg–Marquardt over heliostats ``sel`` on their ``rows`` (M, N).

    Returns the parameters (M, p) and a convergence flag per heliostat.
    """
    m, p = x0.shape
    mask = np.repeat(rows, 2, axis=1)  # (M, 2N)
    x = np.clip(x0, bt.lb * 0.999, bt.ub * 0.999)

    def at(i, xi):
        res, jac = bt.evaluate(sel[i], xi, want_jac=1)
        r = bt.weighted(sel[i], res).reshape(len(i), -1) * mask[i]
        return r, jac * mask[i][:, :, None]

    def cost_at(i, xi):
        res, _ = bt.evaluate(sel[i], xi, want_jac=0)
        return _cost(bt.weighted(sel[i], res).reshape(len(i), -1) * mask[i], robust)

    every = np.arange(m)
    r, jac = at(every, x)
    cost = _cost(r, robust)
    lam = np.full(m, LAMBDA0)
    prev_x = np.full((m, p), np.nan)  # previous point and its step (Anderson)
    prev_f = np.zeros((m, p))
    last = np.full(m, np.inf)  # length of the last accepted Gauss-Newton step
    done = ~np.isfinite(cost)
    ok = np.zeros(m, dtype=bool)
    for _ in range(MAX_ITER):
        i = np.flatnonzero(~done)
        if i.size == 0:
            break
        ri, ji = r[i], jac[i]
        if robust:
            # IRLS: weights ρ'(z) on the components; the gradient of the robust cost is
            # Jᵀ W r, the step solves the damped system with JᵀWJ.
            w = np.sqrt(1.0 / np.sqrt(1.0 + (ri / ROBUST_SCALE_MRAD) ** 2))
            ri, ji = ri * w, ji * w[:, :, None]
        a = np.einsum("mip,miq->mpq", ji, ji)
        g = np.einsum("mip,mi->mp", ji, ri)
        d = np.maximum(np.einsum("mpp->mp", a), 1e-30)
        damped = a + (lam[i, None] * d)[:, :, None] * np.eye(p)
        try:
            step = -np.linalg.solve(damped, g[..., None])[..., 0]
        except np.linalg.LinAlgError:
            step = -np.stack(
                [np.linalg.lstsq(a_, g_, rcond=None)[0] for a_, g_ in zip(damped, g, strict=True)]
            )
        # At the model's minimum already (the step would lower the cost by less than
        # FTOL, predicted from the undamped model): converged without another call.
        pred = -2.0 * np.einsum("mp,mp->m", g, step) - np.einsum("mp,mpq,mq->m", step, a, step)
        flat = (pred <= FTOL * cost[i]) & (lam[i] <= LAMBDA0)
        if np.any(flat):
            ok[i[flat]] = True
            done[i[flat]] = True
            i, step, g, a = i[~flat], step[~flat], g[~flat], a[~flat]
            if i.size == 0:
                break
        xn = np.clip(x[i] + step, bt.lb, bt.ub)
        cn = cost_at(i, xn)
        better = np.isfinite(cn) & (cn <= cost[i])
        small = (np.abs(cost[i] - cn) <= FTOL * cost[i]) | (
            np.max(np.abs(xn - x[i]), axis=1) <= XTOL
        )
        # Anderson acceleration (depth 1) of the step map x → x + δ(x): in a weakly
        # determined, curved direction Gauss-Newton steps shrink by a constant ratio
        # (0.9 per step seen with every simulator effect on: 50+ steps); the secant
        # combination of the last two steps reaches the minimum in a few. Kept only
        # where it lowers the cost below the plain step's.
        # Only where the steps creep (the last one less than CREEP_RATIO shorter than
        # the one before): converging Gauss-Newton steps shrink by orders of magnitude.
        size = np.max(np.abs(step), axis=1)
        aa = np.flatnonzero(np.isfinite(prev_x[i, 0]) & (size > CREEP_RATIO * last[i]))
        if aa.size:
            ia = i[aa]
            df = step[aa] - prev_f[ia]
            den = np.einsum("cp,cp->c", df, df)
            gam = np.einsum("cp,cp->c", step[aa], df) / np.where(den > 0, den, 1.0)
            xa = x[ia] + step[aa] - gam[:, None] * (x[ia] - prev_x[ia] + df)
            xa = np.clip(xa, bt.lb, bt.ub)
            ca = cost_at(ia, xa)
            gain = np.isfinite(ca) & (ca < np.where(np.isfinite(cn[aa]), cn[aa], np.inf))
            xn[aa[gain]], cn[aa[gain]] = xa[gain], ca[gain]
            better = np.isfinite(cn) & (cn <= cost[i])
            small = (np.abs(cost[i] - cn) <= FTOL * cost[i]) | (
                np.max(np.abs(xn - x[i]), axis=1) <= XTOL
            )
        prev_x[i], prev_f[i] = x[i], step
        acc = i[better]
        last[acc] = size[better]
        x[acc], cost[acc] = xn[better], cn[better]
        if acc.size:
            r[acc], jac[acc] = at(acc, x[acc])
        lam[acc] = np.maximum(lam[acc] / 10.0, LAMBDA_MIN)
        lam[i[~better]] *= 10.0
        # Converged: a step that changes nothing, taken, or refused even when damped
        # toward gradient descent (the cost is flat to round-off).
        conv = (small & (better | (lam[i] >= LAMBDA_FLAT))) | (lam[i] > LAMBDA_MAX)
        ok[i[conv]] = True
        done[i[conv]] = True
    return x, ok & np.all(np.isfinite(x), axis=1)


def _outliers(
    r_w: NDArray[np.float64], used: NDArray[np.bool_], valid: NDArray[np.bool_]
) -> NDArray[np.bool_]:
    """fit_heliostat's ``outliers_at`` for a stack: r_w (M, N, 2) weighted residuals."""
    a = np.where(used[:, :, None], np.abs(r_w), np.nan).reshape(len(r_w), -1)
    scale = np.maximum(1.4826 * np.nanmedian(a, axis=1), MIN_SCALE_MRAD)
    return valid & (np.linalg.norm(r_w, axis=-1) > OUTLIER_K * scale[:, None])


def _cond_weak(jac: NDArray[np.float64]) -> tuple[NDArray, NDArray, NDArray, NDArray]:
    """``identifiability``'s ``cond`` for a stack (M, R, q) with no zero column: the
    condition number, the weakest right singular vector, and sv, vt, column norms."""
    nrm = np.linalg.norm(jac, axis=1)
    _, sv, vt = np.linalg.svd(jac / nrm[:, None, :], full_matrices=False)
    with np.errstate(divide="ignore"):
        cond = np.where(sv[:, -1] > 0, sv[:, 0] / sv[:, -1], math.inf)
    return cond, vt[:, -1], sv, vt, nrm


def _svd_stats(jac: NDArray[np.float64], names: tuple[str, ...]) -> tuple[list, list]:
    """:func:`identifiability` and :func:`standard_errors` for a stack of weighted
    Jacobians (M, R, p), batched; None where the single-fit function must decide (a zero
    or non-finite column; for the standard errors also a singular direction).

    The greedy reduction of :func:`identifiability` runs on groups of heliostats holding
    the same parameters, each group's SVDs in one call (the same LAPACK routine per
    matrix as the single fit's)."""
    m, p = len(jac), len(names)
    ident: list = [None] * m
    se: list = [None] * m
    nrm = np.linalg.norm(jac, axis=1)
    live = np.flatnonzero(np.all(np.isfinite(nrm) & (nrm > 0), axis=1))
    if live.size == 0:
        return ident, se
    cond, weak, sv, vt, nrm_l = _cond_weak(jac[live])
    full = sv[:, -1] >= SINGULAR_RTOL * sv[:, 0]
    var = np.sum((vt / sv[:, :, None]) ** 2, axis=1) / nrm_l**2
    pending: dict[tuple[int, ...], list[tuple[int, NDArray]]] = {}
    for j, b in enumerate(live):
        if full[j]:
            se[b] = (var[j], (), p)
        if cond[j] <= COND_WARN:
            ident[b] = (float(cond[j]), ())
        else:
            pending.setdefault(tuple(range(p)), []).append((int(b), weak[j]))
    c0 = dict(zip(live.tolist(), cond.tolist(), strict=True))
    while pending:
        nxt: dict[tuple[int, ...], list[tuple[int, NDArray]]] = {}
        for keep, items in pending.items():
            if len(keep) <= 1:
                for b, _ in items:
                    ident[b] = (c0[b], tuple(names[k] for k in keep))
                continue
            by_keep: dict[tuple[int, ...], list[int]] = {}
            for b, w in items:
                drop = keep[int(np.argmax(np.abs(w)))]
                by_keep.setdefault(tuple(k for k in keep if k != drop), []).append(b)
            for new, bs in by_keep.items():
                sub = jac[np.array(bs)][:, :, list(new)]
                c, w, *_ = _cond_weak(sub)
                for b, cb, wb in zip(bs, c, w, strict=True):
                    if cb > COND_WARN and len(new) > 1:
                        nxt.setdefault(new, []).append((b, wb))
                    else:
                        ident[b] = (c0[b], tuple(names[k] for k in new))
        pending = nxt
    return ident, se


def _loo_hat(
    jac: NDArray[np.float64], r_w: NDArray[np.float64], inl: NDArray[np.bool_], w
) -> NDArray[np.float64]:
    """crossval.loo_hat for a stack: jac (M, 2N, p) weighted, zero on outlier rows;
    r_w (M, N, 2) weighted residuals; w (M, N) row weights. [mrad]"""
    m, n = inl.shape
    cov = np.linalg.pinv(np.einsum("mip,miq->mpq", jac, jac))
    jb = jac.reshape(m, n, 2, -1)
    h = np.einsum("mnip,mpq,mnjq->mnij", jb, cov, jb)
    blk = np.eye(2) - h
    det = blk[..., 0, 0] * blk[..., 1, 1] - blk[..., 0, 1] * blk[..., 1, 0]
    e0, e1 = r_w[..., 0], r_w[..., 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        l0 = (blk[..., 1, 1] * e0 - blk[..., 0, 1] * e1) / det
        l1 = (blk[..., 0, 0] * e1 - blk[..., 1, 0] * e0) / det
    norm2 = (l0**2 + l1**2) / w**2
    bad = np.any(inl & ((det == 0) | ~np.isfinite(det)), axis=1)
    out = np.sqrt(np.sum(np.where(inl, norm2, 0.0), axis=1) / inl.sum(axis=1))
    return np.where(bad, math.nan, out)


def fit_batch(
    kinematics_list: Sequence[HeliostatKinematics],
    observations_list: Sequence[Observations],
    names: Sequence[str],
    residual: str = "angle",
    robust: bool = True,
    starts: Sequence[KinematicErrors] | None = None,
    loo: str = "none",
) -> list[FitResult]:
    """Fit the named parameters of many heliostats of one drive type.

    Parameters
    ----------
    kinematics_list : sequence of HeliostatKinematics
        Nominal kinematics, one per heliostat, all of one drive type.
    observations_list : sequence of Observations
        Each heliostat's valid observations, in the same order.
    names : sequence of str
        Parameters to fit (the same set for every heliostat).
    residual : {"angle", "plane"}
    robust : bool
        As in :func:`fit_heliostat`.
    starts : sequence of KinematicErrors, optional
        Start values per heliostat (default zeros).
    loo : {"none", "hat"}
        ``"hat"`` fills ``loo_rms_mrad`` as
        :func:`~heliostat.calibration.crossval.with_cross_validation` with ``loo="hat"``.

    Returns
    -------
    list of FitResult
        In input order, each as :func:`fit_heliostat` returns it (``loo_rms_mrad`` filled
        for ``loo="hat"``).

    Raises
    ------
    ValueError
        For lists of different lengths, mixed drive types or an unknown option.
    """
    kins, obs = list(kinematics_list), list(observations_list)
    names = tuple(names)
    if len(kins) != len(obs):
        raise ValueError(f"{len(kins)} kinematics for {len(obs)} observation sets")
    if residual not in RESIDUALS:
        raise ValueError(f"residual must be one of {RESIDUALS}, got {residual!r}")
    if loo not in ("none", "hat"):
        raise ValueError(f"loo must be 'none' or 'hat', got {loo!r}")
    if not kins:
        return []
    drives = {k.drive for k in kins}
    if len(drives) > 1:
        raise ValueError(f"fit_batch needs one drive type, got {sorted(drives)}")
    drive = kins[0].drive
    starts = list(starts) if starts is not None else [KinematicErrors.zeros(drive)] * len(kins)
    if len(starts) != len(kins):
        raise ValueError(f"{len(starts)} start values for {len(kins)} heliostats")
    out: list[FitResult | None] = [None] * len(kins)
    p = len(names)
    kern = _kernels()
    batchable = (
        p > 0
        and kern.supports(kins[0])
        and all(n in kern.SLOTS for n in names)
        and all(n in kins[0].spec.error_names for n in names)
    )
    todo = [i for i, o in enumerate(obs) if batchable and 2 * len(o) >= p + 1 and len(o) > 0]
    for lo in range(0, len(todo), CHUNK):
        part = todo[lo : lo + CHUNK]
        got = _fit_chunk(
            [kins[i] for i in part], [obs[i] for i in part], names,
            [starts[i] for i in part], residual, robust, loo,
        )  # fmt: skip
        for i, r in zip(part, got, strict=True):
            out[i] = r
    for i, r in enumerate(out):
        if r is None:  # the odd cases: the single fit decides
            r = fit_heliostat(kins[i], obs[i], names, residual, robust, starts[i])
            if loo == "hat" and r.success:
                r = _replace_loo(r, loo_hat(kins[i], obs[i], r, residual))
            out[i] = r
    return [r for r in out if r is not None]


def _replace_loo(r: FitResult, value: float) -> FitResult:
    return dataclasses.replace(r, loo_rms_mrad=float(value))


def _fit_chunk(kins, obs, names, starts, residual, robust, loo) -> list[FitResult | None]:
    """One chunk through the batched stages; None for the heliostats left to the single
    fit."""
    try:
        bt = _Batch(kins, obs, names, starts, residual)
    except (ValueError, FloatingPointError):
        return [None] * len(kins)
    b, p = len(kins), len(names)
    every = np.arange(b, dtype=np.int64)
    x0 = bt.vals0[:, bt.idx].copy()
    res0, _ = bt.evaluate(every, x0, want_jac=0)
    r_nom = np.linalg.norm(res0, axis=-1)
    live = np.all(np.isfinite(r_nom) | ~bt.valid, axis=1)
    valid = bt.valid
    x, ok = _lm(bt, every, x0, valid, robust=False)
    ok &= live
    inl = valid.copy()
    if robust:
        res, _ = bt.evaluate(every, x, want_jac=0)
        flagged = _outliers(bt.weighted(every, res), valid, valid)
        rob = np.flatnonzero(ok & np.any(flagged, axis=1))
        if rob.size:
            xr, okr = _lm(bt, rob, x[rob], valid[rob], robust=True)
            ok[rob] &= okr
            cur = valid[rob].copy()
            going = okr.copy()
            for round_ in range(3):
                g = np.flatnonzero(going)
                if g.size == 0:
                    break
                res, _ = bt.evaluate(rob[g], xr[g], want_jac=0)
                new = ~_outliers(bt.weighted(rob[g], res), cur[g], valid[rob[g]]) & valid[rob[g]]
                few = 2 * new.sum(axis=1) < p + 1
                ok[rob[g[few]]] = False  # the single fit gives the failure message
                same = np.all(new == cur[g], axis=1) & (round_ > 0)
                going[g[few | same]] = False
                g2 = g[~(few | same)]
                if g2.size == 0:
                    break
                cur[g2] = new[~(few | same)]
                xs, oks = _lm(bt, rob[g2], xr[g2], cur[g2], robust=False)
                xr[g2] = xs
                ok[rob[g2[~oks]]] = False
            x[rob], inl[rob] = xr, cur
    # Bounds: dogbox's handling differs from projected steps; leave those to the single fit.
    ok &= ~np.any(np.abs(x) >= 0.999 * bt.ub, axis=1)
    res, jac = bt.evaluate(every, x)
    ok &= np.all(np.isfinite(res) | ~valid[:, :, None], axis=(1, 2))
    r_w = bt.weighted(every, res)
    jac_in = jac * np.repeat(inl, 2, axis=1)[:, :, None]
    idents, ses = _svd_stats(np.where(ok[:, None, None], jac_in, 1.0), names)
    loo_v = _loo_hat(jac_in, r_w, inl, bt.weight) if loo == "hat" else None
    full = bt.vals0.copy()
    full[:, bt.idx] = x
    full = full[:, bt.order]  # every error value, in the drive's order
    out: list[FitResult | None] = []
    for i in range(b):
        if not ok[i]:
            out.append(None)
            continue
        n = bt.nrows[i]
        keep = np.repeat(inl[i, :n], 2)
        j = jac[i, : 2 * n][keep]
        ident, se = idents[i], ses[i]
        if se is None:
            try:
                se = standard_errors(j, names)
            except np.linalg.LinAlgError:
                se = (np.full(p, math.nan), names, p)
        if ident is None:
            ident = identifiability(j, names)
        try:
            r = _finish(
                kins[i], obs[i], names, x[i], KinematicErrors(bt.drive, tuple(full[i].tolist())),
                inl[i, :n],
                r_nom[i, :n], np.linalg.norm(res[i, :n], axis=-1),
                np.linalg.norm(r_w[i, :n], axis=-1), j, bt.sun[i, :n], ident, se,
            )  # fmt: skip
        except (ValueError, np.linalg.LinAlgError) as exc:
            raise CalibrationError(f"fit of {obs[i].heliostat_id} failed: {exc}") from exc
        if loo_v is not None:
            r = _replace_loo(r, loo_v[i])
        out.append(r)
    return out
