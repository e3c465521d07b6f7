"""Choose the parameter sets of many heliostats of one drive at once.

:func:`calibrate_batch` is :func:`~heliostat.calibration.selection.calibrate_heliostat`
(the module rules of :mod:`heliostat.calibration.selection`) run on a batch, stage by
stage, each stage one vectorised computation over the heliostats:

0. screening: the robust fit of the reference candidate
   (:func:`~heliostat.calibration.batch.fit_batch`, one batch per reference set);
1. every candidate of :func:`~heliostat.calibration.selection.candidate_sets` (and the
   identifiable subsets the fits suggest) fitted for the whole batch by the batched
   Levenberg–Marquardt (:func:`heliostat.calibration.batch._lm`) and scored: the
   hat-matrix leave-one-out, the bound check and the sky check;
2. the nested cross-validation: every (heliostat, outer fold, candidate) refitted by the
   same two Gauss–Newton steps from the all-records fit as
   :func:`~heliostat.calibration.selection._refit_score` (stacked SVD least squares, the
   compiled residuals and Jacobian), the inner choices and the held-out residuals;
3. the final robust fit of each chosen set (:func:`~heliostat.calibration.batch.fit_batch`,
   one batch per chosen set).

The sky check's derivatives of the reflected beam come from the same compiled chain
(:mod:`heliostat.calibration._batch_kernels`): the beam's derivative by the parameters
is the derivative of the angle residual against a fixed ray, so each heliostat's sky grid
(:class:`~heliostat.calibration.selection.SkyCheck`: the nominal steps toward its aim
point) becomes a batch of pseudo-observations whose spot lies :data:`SKY_FAR_M` along the
nominal beam (the ray's own direction then does not move with the mirror centre). The
kernel gives the two components across the nominal beam; the third follows from the beam
being a unit vector (:meth:`_Sky.derivatives`); the sky figures then equal
:meth:`SkyCheck.sigma_mrad`'s to 1e-9 relatively at the same parameters. In the outer
folds the derivatives are first those at the candidate's all-records fit (the single
path takes them at each fold's refit; a degenerate set moves far along its weak
direction in a fold: up to 4 % in the figure); where that figure lies within
:data:`SKY_RECHECK` of the limit, the fold's own derivatives replace them.

The per-heliostat path decides where the batch is not sure to decide alike
(:func:`calibrate_heliostat` for that heliostat): a candidate's batched fit that does not
converge or ends near a bound is scored by the single fit
(:func:`~heliostat.calibration.selection.score`); a heliostat whose choice, in the
all-records selection or in any outer fold, rests on a comparison within
:data:`TIE_RTOL` (leave-one-out against the required gain, a parameter against its
bound) or :data:`SKY_RTOL` (the sky figure against its limit), whose sun positions are
clustered (the single fit then changes its suggestion), or whose batch failed as a whole
goes through :func:`calibrate_heliostat`. So the chosen sets are the single path's, and
the figures agree to the optimisers' tolerances (``tests/test_selection_batch.py``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from heliostat.calibration.batch import (
    CHUNK,
    _Batch,
    _kernels,
    _lm,
    _loo_hat,
    _svd_stats,
    fit_batch,
)
from heliostat.calibration.crossval_batch import cross_validate_batch
from heliostat.calibration.fit import SINGULAR_RTOL, SPREAD_WARN_DEG, FitResult, inlier_mask
from heliostat.calibration.observations import Observations
from heliostat.calibration.selection import (
    MIN_GAIN,
    MIN_RECORDS_TO_SCREEN,
    REFIT_ITERATIONS,
    REFIT_TOL,
    SKY_SIGMA_LIMIT_MRAD,
    Calibration,
    CalibrationOptions,
    Candidate,
    Selection,
    SkyCheck,
    _candidate,
    _conclude,
    _feasible,
    _none_reason,
    _selection,
    _unchosen,
    calibrate_heliostat,
    ladder,
    outer_folds,
    score,
    screen_reference,
)
from heliostat.errors import CalibrationError
from heliostat.kinematics import HeliostatKinematics, KinematicErrors, KinematicsError
from heliostat.kinematics.drives._base import BACKLASH

#: Relative margin of a leave-one-out comparison inside which the batch leaves the
#: heliostat to the single path (the batched and single leave-one-out figures differed
#: by at most 1.2e-7 relatively over 8,000 fold refits of 150 heliostats).
TIE_RTOL = 2e-6
#: Relative margin of the sky figure against :data:`SKY_SIGMA_LIMIT_MRAD` inside which the
#: batch leaves the heliostat to the single path (batched and single figures differed by
#: at most 1.4e-6 relatively over 150 heliostats' candidates and fold refits).
SKY_RTOL = 2e-5
#: A batched fit ending within this fraction of a parameter's bound (0.999 × the bound,
#: where a candidate counts as on it) is scored by the single fit (dogbox's bounds).
NEAR_BOUND = 0.98
#: Range of the sky figure, as fractions of the limit, in which a fold's refit gets its
#: own beam derivatives (elsewhere those of the all-records fit; they differed by up to
#: 7 % on degenerate sets, measured on 150 linear-drive heliostats).
SKY_RECHECK = (0.5, 2.0)
#: Relative margin of a fold's refitted parameter against its bound (0.999 × the bound)
#: inside which the batch leaves the heliostat to the single path (the batched and single
#: values differ by ~1e-3 standard errors, ~1e-6 of a bound).
BOUND_RTOL = 1e-5
#: Heliostats per stacked nominal inverse of the sky check (:func:`_sky_checks`).
SKY_GROUP = 64
#: Distance of the sky check's pseudo-spots along the nominal beam. [m]
SKY_FAR_M = 1e9


@dataclass
class _Scored:
    """One candidate set fitted on all the records of some heliostats (module stage 1):
    the batch, the fits and what the folds start from."""

    names: tuple[str, ...]
    heliostats: NDArray[np.int64]  # chunk indices
    bt: _Batch
    x: NDArray[np.float64]  # (m, p)
    fitted: NDArray[np.bool_]  # (m,) a fit to start the folds from
    res_w: NDArray[np.float64]  # (m, N, 2) weighted, zero past the rows
    jac_w: NDArray[np.float64]  # (m, 2N, p) weighted, zero past the rows
    d_sky: tuple[NDArray[np.float64], NDArray[np.int64]] | None  # _Sky.derivatives
    sky: _Sky
    row_of: dict[int, int]


class _Sky:
    """The sky checks of a chunk's heliostats as batches of pseudo-observations (module
    docstring), one per parameter set asked for."""

    def __init__(
        self,
        kins: Sequence[HeliostatKinematics],
        checks: Sequence[SkyCheck | None],
        aims: Sequence[NDArray[np.float64] | None],
    ) -> None:
        self.has = np.array([c is not None and len(c.steps) > 0 for c in checks])
        self.row = np.cumsum(self.has) - 1
        live = np.flatnonzero(self.has)
        self.kins = [kins[i] for i in live]
        # per heliostat: the grid (no backlash term), and the grid approached from
        # either side (a set with a backlash: SkyCheck's mean over both)
        self.obs: dict[bool, list[Observations]] = {False: [], True: []}
        for i in live:
            c, m = checks[i], len(checks[i].steps)
            for both in (False, True):
                k = 2 if both else 1
                aim = np.broadcast_to(aims[i], (k * m, 3))
                appr = np.repeat([[1.0, 1.0], [-1.0, -1.0]], m, axis=0) if both else None
                # Real-valued steps (the nominal inverse's), as SkyCheck evaluates them.
                self.obs[both].append(
                    Observations(
                        "sky", np.tile(c.sun, (k, 1)), np.tile(c.steps.astype(float), (k, 1)),
                        aim.copy(), aim.copy(), np.tile([0.0, 0.0, 1.0], (k * m, 1)),
                        ("",) * (k * m), np.full(k * m, math.nan), np.arange(k * m),
                        ("",) * (k * m), appr,
                    )
                )  # fmt: skip
        self._base: dict[bool, _Batch] = {}

    def _batch(self, names: tuple[str, ...]) -> _Batch:
        both = bool(set(names) & set(BACKLASH))
        if both not in self._base:
            zeros = KinematicErrors.zeros(self.kins[0].drive)
            bt = _Batch(self.kins, self.obs[both], names, [zeros] * len(self.kins), "angle")
            every = np.arange(len(self.kins), dtype=np.int64)
            _, _, centre = bt._call(every, np.zeros((len(self.kins), len(names))), 0)
            d0 = bt.spot - centre
            d0 /= np.linalg.norm(d0, axis=-1, keepdims=True)
            bt.spot = centre + SKY_FAR_M * d0  # the residual basis (⊥ d0) stays
            self._base[both] = bt
        return self._base[both].with_names(names)

    def derivatives(
        self, heliostats: NDArray[np.int64], names: tuple[str, ...], x: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], NDArray[np.int64]] | None:
        """Beam derivatives (m, M, 3, p) at x (m, p) [mrad per unit], zero past each
        heliostat's grid, and the grid sizes (m,); None when no heliostat of the chunk
        has a servable sun."""
        if not self.kins:
            return None
        bt = self._batch(names)
        m = len(heliostats)
        d = np.zeros((m, bt.steps.shape[1], 3, len(names)))
        cnt = np.zeros(m, dtype=np.int64)
        ok = self.has[heliostats]
        if np.any(ok):
            sel = self.row[heliostats[ok]]
            res, jac, _ = bt._call(sel, x[ok], 2)
            # The kernel gives the components along ea, eb (⊥ the nominal beam d0); the
            # third follows from the beam staying a unit vector: with the beam at x
            # u = (ua, ub, uc) in (ea, eb, d0) (ua, ub: the residual, as d ≈ d0),
            # D·u = 0, so D_c = −(D_a ua + D_b ub) / uc.
            u = res / 1e3
            uc = np.sqrt(np.maximum(1.0 - np.sum(u * u, axis=-1), 0.0))
            dc = -(jac[:, :, 0] * u[..., 0:1] + jac[:, :, 1] * u[..., 1:2]) / uc[..., None]
            valid = bt.valid[sel][:, :, None]
            out = np.zeros((len(sel), bt.steps.shape[1], 3, len(names)))
            out[:, :, :2] = jac * valid[..., None]
            out[:, :, 2] = np.where(valid, dc, 0.0)
            d[ok] = out
            cnt[ok] = bt.nrows[sel]
        return d, cnt


def _sigma(
    sky: tuple[NDArray[np.float64], NDArray[np.int64]] | None,
    res_w: NDArray[np.float64],
    jac_w: NDArray[np.float64],
    n_rows: NDArray[np.int64],
    sv: NDArray[np.float64] | None = None,
) -> NDArray[np.float64]:
    """:meth:`SkyCheck.sigma_mrad` for a stack: ``sky`` the derivatives and grid sizes
    (:meth:`_Sky.derivatives`), ``res_w`` (m, R) and ``jac_w`` (m, R, p) zero outside the
    used rows, ``n_rows`` (m,) the used rows, ``sv`` the singular values of ``jac_w`` if
    known. [mrad]"""
    m, p = jac_w.shape[0], jac_w.shape[2]
    if sky is None:
        return np.full(m, math.nan)
    d, cnt = sky
    if sv is None:
        sv = np.linalg.svd(jac_w, compute_uv=False)
    rank = np.sum(sv >= SINGULAR_RTOL * sv[:, :1], axis=1) * (sv[:, 0] > 0)
    s2 = np.sum(res_w**2, axis=1) / np.maximum(2 * n_rows - rank, 1)  # [mrad²]
    cov = s2[:, None, None] * np.linalg.pinv(np.matmul(jac_w.transpose(0, 2, 1), jac_w))
    var = np.sum(np.matmul(d, cov[:, None]) * d, axis=(2, 3))  # [mrad²]
    with np.errstate(invalid="ignore", divide="ignore"):
        sig = np.sqrt(np.sum(var, axis=1) / cnt)
    sig = np.where(rank < p, math.inf, sig)
    return np.where(cnt > 0, sig, math.nan)


def _lstsq(j: NDArray[np.float64], r: NDArray[np.float64], rows: NDArray[np.int64]):
    """``np.linalg.lstsq(j, r)`` for a stack (m, R, p) with zero rows past ``rows``
    (m,) used rows: the SVD solution with lstsq's default cut-off (eps × max(R, p)).
    Returns the solution (m, p) and the singular values."""
    u, s, vt = np.linalg.svd(j, full_matrices=False)
    cut = np.finfo(float).eps * np.maximum(rows, j.shape[2])[:, None] * s[:, :1]
    inv = np.where(s > cut, 1.0 / np.where(s > 0, s, 1.0), 0.0)
    utr = np.matmul(r[:, None, :], u)[:, 0]  # (m, k)
    return np.matmul(vt.transpose(0, 2, 1), (inv * utr)[..., None])[..., 0], s


def _choose(entries: Sequence[tuple[float, float, bool, float]]) -> tuple[int | None, bool]:
    """:func:`~heliostat.calibration.selection._choose` on (loo, sky sigma, at bound,
    largest |x| / bound) in ascending size, and whether any comparison on the way lies
    within the margins (:data:`TIE_RTOL`, :data:`SKY_RTOL`)."""
    best: int | None = None
    doubt = False
    for k, (loo, sig, at_bound, ratio) in enumerate(entries):
        if abs(ratio - 0.999) <= BOUND_RTOL:
            doubt = True
        if (
            math.isfinite(sig)
            and abs(sig - SKY_SIGMA_LIMIT_MRAD) <= SKY_RTOL * SKY_SIGMA_LIMIT_MRAD
        ):
            doubt = True
        if at_bound or sig > SKY_SIGMA_LIMIT_MRAD or not math.isfinite(loo):
            continue
        if best is None:
            best = k
            continue
        ref = (1.0 - MIN_GAIN) * entries[best][0]
        if abs(loo - ref) <= TIE_RTOL * ref:
            doubt = True
        if loo < ref:
            best = k
    return best, doubt


def calibrate_batch(
    kinematics_list: Sequence[HeliostatKinematics],
    observations_list: Sequence[Observations],
    options: CalibrationOptions | None = None,
) -> list[Calibration]:
    """:func:`~heliostat.calibration.selection.calibrate_heliostat` of many heliostats
    of one drive type, batched (module docstring).

    Parameters
    ----------
    kinematics_list : sequence of HeliostatKinematics
        Nominal kinematics, all of one drive type.
    observations_list : sequence of Observations
        Each heliostat's valid observations, in the same order.
    options : CalibrationOptions, optional
        As for :func:`calibrate_heliostat`; ``names`` must be None (a fixed set is
        :func:`~heliostat.calibration.batch.fit_batch`'s).

    Returns
    -------
    list of Calibration
        In input order; the same sets as :func:`calibrate_heliostat` chooses, the
        figures equal to its to the optimisers' tolerances.

    Raises
    ------
    ValueError
        For lists of different lengths, mixed drive types or a fixed set.
    """
    kins, obs = list(kinematics_list), list(observations_list)
    opt = options if options is not None else CalibrationOptions()
    if opt.names is not None:
        raise ValueError("calibrate_batch chooses the parameter set: options.names must be None")
    if len(kins) != len(obs):
        raise ValueError(f"{len(kins)} kinematics for {len(obs)} observation sets")
    if not kins:
        return []
    drives = {k.drive for k in kins}
    if len(drives) > 1:
        raise ValueError(f"calibrate_batch needs one drive type, got {sorted(drives)}")
    # The ladder depends on the records: a backlash joins it on an axis the records
    # approach from both sides (calibrate_heliostat's rule), so heliostats are grouped by
    # their ladder.
    by_ladder: dict[tuple[tuple[str, ...], ...], list[int]] = {}
    for i, o in enumerate(obs):
        by_ladder.setdefault(ladder(kins[0].drive, o, opt.candidates), []).append(i)
    kern = _kernels()
    out: list[Calibration | None] = [None] * len(kins)
    for cands, members in by_ladder.items():
        names = {n for c in cands for n in c}
        if not (kern.supports(kins[0]) and names <= set(kern.SLOTS) and cands):
            continue
        for lo in range(0, len(members), CHUNK):
            part = members[lo : lo + CHUNK]
            try:
                got = _chunk([kins[i] for i in part], [obs[i] for i in part], opt, cands)
            except (CalibrationError, ValueError, ArithmeticError, np.linalg.LinAlgError):
                continue  # the chunk as a whole failed: each heliostat alone
            for i, c in zip(part, got, strict=True):
                out[i] = c
    return [
        c if c is not None else calibrate_heliostat(k, o, opt)
        for k, o, c in zip(kins, obs, out, strict=True)
    ]


def _chunk(kins, obs, opt: CalibrationOptions, cands) -> list[Calibration | None]:
    """One chunk through the batched stages; None for the heliostats left to the single
    path."""
    b = len(kins)
    single = np.zeros(b, dtype=bool)
    clean, screened = _screen(kins, obs, cands, opt.residual, single)
    n = np.array([len(o) for o in clean])
    for i, o in enumerate(clean):
        s = o.u_sun_enu / np.linalg.norm(o.u_sun_enu, axis=1, keepdims=True)
        if len(o) and np.degrees(np.arccos(np.clip(np.min(s @ s.T), -1, 1))) < SPREAD_WARN_DEG:
            single[i] = True  # clustered suns: the single fit's suggestions differ
    checks = _sky_checks(kins, clean)
    aims = [np.mean(o.target_centre_enu_m, axis=0) if len(o) else None for o in clean]
    single |= np.array([c is None for c in checks])
    sky = _Sky(kins, checks, aims)
    # Stage 1: every ladder candidate on the heliostats it is feasible for.
    scored: list[list[tuple[Candidate, _Scored | None]]] = [[] for _ in range(b)]
    live, batches = np.flatnonzero(~single), {}
    for c in cands:
        _score_all(kins, clean, c, live, n, opt.residual, sky, checks, scored, single, batches)
    extras: dict[tuple[str, ...], list[int]] = {}
    for i in np.flatnonzero(~single):
        if not scored[i]:
            continue
        got = [cd.suggested for cd, _ in scored[i] if cd.suggested and cd.suggested not in cands]
        for s in dict.fromkeys(got):
            extras.setdefault(s, []).append(int(i))
    for c, idx in extras.items():
        idx = np.array(idx)
        _score_all(kins, clean, c, idx, n, opt.residual, sky, checks, scored, single, batches)
    best: list[int | None] = [None] * b
    for i in np.flatnonzero(~single):
        scored[i].sort(key=lambda e: len(e[0].names))  # stable: ladder order kept
        # (a batched fit near a bound was scored by the single fit: no bound doubt here)
        entries = [
            (cd.loo_rms_mrad, cd.sky_sigma_mrad, bool(cd.at_bound), 0.0) for cd, _ in scored[i]
        ]
        best[i], doubt = _choose(entries)
        single[i] |= doubt
    # Stage 2: the nested cross-validation.
    nested = {}
    if opt.nested:
        want = [i for i in np.flatnonzero(~single) if best[i] is not None]
        nested = _nested(clean, [int(i) for i in want], scored, opt, single)
    # Stage 3: the selections and the final robust fits.
    sels: dict[int, Selection] = {}
    for i in np.flatnonzero(~single):
        cds = tuple(cd for cd, _ in scored[i])
        if best[i] is None:
            sels[i] = Selection((), cds, math.nan, _none_reason(int(n[i]), cds))
            continue
        rms, chosen, how = nested.get(int(i), (math.nan, (), ""))
        sels[i] = _selection(cds[best[i]], cds, rms, chosen, how)
    out: list[Calibration | None] = [None] * b
    by_set: dict[tuple[str, ...], list[int]] = {}
    for i, s in sels.items():
        if single[i]:
            continue
        if not s.names:
            out[i] = _unchosen(kins[i], obs[i], opt, s, screened[i], int(n[i]))
        else:
            by_set.setdefault(s.names, []).append(i)
    for names, idx in by_set.items():
        fits = _final(kins, obs, names, idx, opt)
        for i, r in zip(idx, fits, strict=True):
            out[i] = _conclude(r, sels[i], screened[i], int(n[i]))
    return out


def _sky_checks(kins, clean) -> list[SkyCheck | None]:
    """:meth:`SkyCheck.for_records` of each heliostat (None without records), the nominal
    inverse solved for :data:`SKY_GROUP` heliostats at once where their kinematics differ
    only in the pivot: heliostat i's steps toward aim a are those of the group's first
    heliostat toward a − p_i + p_0 (the chain is translation-invariant; the stacked
    Gauss–Newton stops when every row has converged, to 1e-12 rad). A stack with a sun no
    inverse reaches is solved heliostat by heliostat, as ``reachable_steps`` would."""
    from heliostat.kinematics.pointing import sky_grid

    sun = sky_grid()
    out: list[SkyCheck | None] = [None] * len(kins)
    groups: dict[HeliostatKinematics, list[int]] = {}
    for i, (k, o) in enumerate(zip(kins, clean, strict=True)):
        if len(o):
            groups.setdefault(dataclasses.replace(k, position_enu_m=(0.0, 0.0, 0.0)), []).append(i)
    for idx in groups.values():
        for lo in range(0, len(idx), SKY_GROUP):
            part = idx[lo : lo + SKY_GROUP]
            k0 = kins[part[0]]
            p0 = np.asarray(k0.position_enu_m, dtype=float)
            aims = [np.mean(clean[i].target_centre_enu_m, axis=0) for i in part]
            shifted = np.concatenate(
                [np.broadcast_to(a - np.asarray(kins[i].position_enu_m) + p0, sun.shape)
                 for i, a in zip(part, aims, strict=True)]
            )  # fmt: skip
            try:
                th = k0.inverse_angles(shifted, np.tile(sun, (len(part), 1)))
            except KinematicsError:
                for i in part:
                    out[i] = SkyCheck.for_records(kins[i], clean[i])
                continue
            # reachable_steps' tail: steps, finite and within the travel limits
            with np.errstate(invalid="ignore"):
                st = k0.angles_to_steps(th)
            ok = np.all(np.isfinite(st), axis=1)
            ok[ok] &= k0.within_limits(st[ok])
            st[~ok] = np.nan
            for q, i in enumerate(part):
                out[i] = SkyCheck(kins[i], st[q * len(sun) : (q + 1) * len(sun)], sun)
    return out


def _screen(kins, obs, cands, residual: str, single: NDArray[np.bool_]):
    """Module rule 0 of :mod:`~heliostat.calibration.selection` (``_screen``) for a
    chunk: one robust batched fit per reference set."""
    clean, screened = list(obs), [()] * len(obs)
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, o in enumerate(obs):
        k = len(o)
        if k >= MIN_RECORDS_TO_SCREEN:
            groups.setdefault(screen_reference(cands, k), []).append(i)
    for ref, idx in groups.items():
        try:
            fits = fit_batch([kins[i] for i in idx], [obs[i] for i in idx], ref, residual)
        except CalibrationError:
            single[idx] = True
            continue
        for i, r in zip(idx, fits, strict=True):
            if r.success and r.n_outliers:
                clean[i] = obs[i].subset(inlier_mask(r, obs[i]))
                screened[i] = r.outlier_rows
    return clean, screened


def _score_all(
    kins, clean, names, idx, n, residual, sky: _Sky, checks, scored, single, batches: dict
) -> None:
    """Module stage 1 for one candidate set on the chunk's heliostats ``idx``: appends a
    (Candidate, _Scored) to ``scored[i]`` of each. ``batches``: the padded batches made
    so far, by heliostats (a set of the same heliostats shares one)."""
    p = len(names)
    feas = np.array([_feasible(int(n[i]), p) for i in idx], dtype=bool)
    for i in idx[~feas]:
        k = int(n[i])
        scored[i].append(
            (Candidate(names, math.nan, (), f"{k} records: too few for a check of {p}"), None)
        )
    idx = idx[feas]
    if idx.size == 0:
        return
    drive = kins[0].drive
    zeros = KinematicErrors.zeros(drive)
    m = len(idx)
    bt = batches.get(tuple(idx.tolist()))
    if bt is None:
        bt = _Batch([kins[i] for i in idx], [clean[i] for i in idx], names, [zeros] * m, residual)
        batches[tuple(idx.tolist())] = bt
    bt = bt.with_names(names)
    every = np.arange(m, dtype=np.int64)
    x0 = np.zeros((m, p))
    res0, _ = bt.evaluate(every, x0, want_jac=0)
    live = np.all(np.isfinite(res0) | ~bt.valid[:, :, None], axis=(1, 2))
    x, ok = _lm(bt, every, x0, bt.valid, robust=False)
    ok &= live & ~np.any(np.abs(x) >= NEAR_BOUND * 0.999 * bt.ub, axis=1)
    # The odd ones: the single score decides (its value is the start of the folds).
    singles: dict[int, Candidate] = {}
    for r in np.flatnonzero(~ok):
        i = int(idx[r])
        cd = score(kins[i], clean[i], names, residual, sky=checks[i])
        singles[r] = cd
        x[r] = cd.errors.to_vector(names) if cd.errors is not None else 0.0
    fitted = np.array([r not in singles or singles[r].errors is not None for r in range(m)])
    res, jac = bt.evaluate(every, x, want_jac=2)
    fin = np.all(np.isfinite(res) | ~bt.valid[:, :, None], axis=(1, 2))
    fin &= np.all(np.isfinite(jac) | ~np.repeat(bt.valid, 2, axis=1)[:, :, None], axis=(1, 2))
    for r in np.flatnonzero(~fin & fitted):
        single[idx[r]] = True
    fitted &= fin
    mask = np.repeat(bt.valid, 2, axis=1)
    res_w = np.where(bt.valid[:, :, None], bt.weighted(every, res), 0.0)
    jac_w = np.where(mask[:, :, None], jac, 0.0)
    safe = np.where(fitted[:, None, None], jac_w, 1.0)
    loo = _loo_hat(safe, res_w, bt.valid, bt.weight)
    idents, _ = _svd_stats(safe, names)
    d = sky.derivatives(idx, names, x)
    sig = _sigma(d, res_w.reshape(m, -1), safe, n[idx])
    rec = _Scored(
        names, idx, bt, x, fitted, res_w, jac_w, d, sky, {int(i): r for r, i in enumerate(idx)}
    )
    for r, i in enumerate(idx):
        if r in singles:
            scored[i].append((singles[r], rec))
            continue
        if not fitted[r] or idents[r] is None:
            single[i] = True
            scored[i].append((Candidate(names, math.nan), rec))
            continue
        sug = idents[r][1]
        errors = zeros.with_vector(names, x[r])
        cd = _candidate(kins[i], names, x[r], float(sig[r]), float(loo[r]), errors)
        cd = dataclasses.replace(cd, suggested=sug if sug and len(sug) < p else ())
        scored[i].append((cd, rec))


def _nested(clean, want: list[int], scored, opt: CalibrationOptions, single) -> dict:
    """Module rule 5 for the heliostats ``want``: {heliostat: (nested RMS, fold choices,
    how)}; a heliostat with a doubtful inner choice is marked ``single``."""
    folds = {i: outer_folds(clean[i], opt.outer_k, opt.seed) for i in want}
    # Every (heliostat, fold) pair of every fitted candidate, refitted per candidate set.
    results: dict[tuple[int, int], tuple] = {}  # (id of _Scored, row) → per-fold arrays
    recs = {id(rec): rec for i in want for _, rec in scored[i] if rec is not None}
    for rec in recs.values():
        rows, fold_no, train, test_sizes = [], [], [], []
        for i in want:
            r = rec.row_of.get(i)
            if r is None or not rec.fitted[r]:
                continue
            nmax = rec.bt.steps.shape[1]
            for f, t in enumerate(folds[i]):
                m = np.zeros(nmax, dtype=bool)
                m[: len(clean[i])] = True
                m[t] = False
                rows.append(r)
                fold_no.append(f)
                train.append(m)
                test_sizes.append(len(t))
        if not rows:
            continue
        got = _refit(rec, np.array(rows, dtype=np.int64), np.array(train))
        for k, (r, f) in enumerate(zip(rows, fold_no, strict=True)):
            results[(id(rec), r, f)] = tuple(a[k] for a in got)
    out = {}
    held_pairs: dict[int, list] = {}  # id(rec) → [(heliostat, fold, row, x)]
    choice: dict[int, list] = {}
    for i in want:
        per_fold = []
        ok = True
        for f in range(len(folds[i])):
            entries = []
            for _, rec in scored[i]:
                key = (id(rec), rec.row_of.get(i), f) if rec is not None else None
                got = results.get(key) if key is not None else None
                if got is None:  # not fitted on all records, or too few records
                    entries.append((math.nan, math.nan, False, 0.0))
                else:
                    entries.append(got[:4])
            k, doubt = _choose(entries)
            if doubt:
                single[i] = True
                ok = False
                break
            if k is None:
                per_fold = None
                break
            per_fold.append(k)
        if not ok:
            continue
        if per_fold is None:
            out[i] = (math.nan, (), _how(clean[i], folds[i]))
            continue
        choice[i] = per_fold
        for f, k in enumerate(per_fold):
            cd, rec = scored[i][k]
            row = rec.row_of[i]
            held_pairs.setdefault(id(rec), []).append((i, f, row, results[(id(rec), row, f)][4]))
    held: dict[int, list] = {i: [None] * len(folds[i]) for i in choice}
    for key, items in held_pairs.items():
        rec = recs[key]
        sel = np.array([it[2] for it in items], dtype=np.int64)
        x = np.array([it[3] for it in items])
        res, _ = rec.bt.evaluate(sel, x, want_jac=0)
        nrm = np.linalg.norm(res, axis=-1)
        for (i, f, _, _), v in zip(items, nrm, strict=True):
            held[i][f] = v[folds[i][f]]
    for i, per_fold in choice.items():
        e = np.concatenate(held[i])
        chosen = tuple(scored[i][k][0].names for k in per_fold)
        out[i] = (float(np.sqrt(np.mean(np.square(e)))), chosen, _how(clean[i], folds[i]))
    return out


def _how(obs: Observations, folds) -> str:
    return "leave-one-out" if len(folds) == len(obs) else f"{len(folds)}-fold"


def _refit(rec: _Scored, rows: NDArray[np.int64], train: NDArray[np.bool_]):
    """:func:`~heliostat.calibration.selection._refit_score` for a stack of (heliostat
    row of ``rec``, training mask (P, N)): (loo, sky sigma, at bound, |x|/bound ratio,
    x) per pair."""
    bt, names = rec.bt, rec.names
    pn, p = len(rows), len(names)
    mask = np.repeat(train, 2, axis=1)
    nt = train.sum(axis=1)
    x = rec.x[rows].copy()
    r = np.where(mask, rec.res_w[rows].reshape(pn, -1), 0.0)
    j = np.where(mask[:, :, None], rec.jac_w[rows], 0.0)
    going = np.ones(pn, dtype=bool)
    good = np.array([_feasible(int(k), p) for k in nt])
    dx = np.zeros((pn, p))
    sv = np.zeros((pn, p))
    for it in range(REFIT_ITERATIONS):
        g = np.flatnonzero(going & good)
        if g.size == 0:
            break
        if it:
            res, jac = bt.evaluate(rows[g], x[g], want_jac=2)
            rw = bt.weighted(rows[g], res).reshape(len(g), -1)
            r[g] = np.where(mask[g], rw, 0.0)
            j[g] = np.where(mask[g][:, :, None], jac, 0.0)
            fin = np.all(np.isfinite(r[g]), axis=1) & np.all(np.isfinite(j[g]), axis=(1, 2))
            good[g[~fin]] = False
            g = g[fin]
            r[~good], j[~good] = 0.0, 0.0
        dx[g], sv[g] = _lstsq(j[g], -r[g], 2 * nt[g])
        x[g] += dx[g]
        going[g[np.max(np.abs(dx[g]), axis=1) < REFIT_TOL]] = False
    res_lin = r + np.einsum("mip,mp->mi", j, dx)
    safe = np.where(good[:, None, None], j, 1.0)
    inl = train & good[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        loo = _loo_hat(safe, res_lin.reshape(pn, -1, 2), inl, bt.weight[rows])
    loo = np.where(good, loo, math.nan)
    d = (rec.d_sky[0][rows], rec.d_sky[1][rows]) if rec.d_sky is not None else None
    sig = _sigma(d, res_lin, safe, nt, np.where(good[:, None], sv, 1.0))
    # The derivatives at the all-records fit: within a few % of the single path's (taken
    # at the fold's refit; degenerate sets move far along their weak direction). Near the
    # limit the fold's own derivatives decide.
    near = np.flatnonzero(
        good & (sig >= SKY_RECHECK[0] * SKY_SIGMA_LIMIT_MRAD)
        & (sig <= SKY_RECHECK[1] * SKY_SIGMA_LIMIT_MRAD)
    )  # fmt: skip
    if near.size:
        dn = rec.sky.derivatives(rec.heliostats[rows[near]], names, x[near])
        sig[near] = _sigma(dn, res_lin[near], safe[near], nt[near])
    sig = np.where(good, sig, math.nan)
    bound = np.array([0.999 * v for v in bt.ub])
    ratio = np.max(np.abs(x) / bt.ub, axis=1)
    at_bound = np.any(np.abs(x) >= bound, axis=1) & good
    return loo, sig, at_bound, np.where(good, ratio, 0.0), x


def _final(
    kins, obs, names: tuple[str, ...], idx: list[int], opt: CalibrationOptions
) -> list[FitResult]:
    """The chosen set's robust fit on every record, cross-validated as ``opt`` says (as
    :func:`calibrate_heliostat`: ``fit_heliostat`` + ``with_cross_validation``, both
    batched)."""
    ks, os_ = [kins[i] for i in idx], [obs[i] for i in idx]
    fits = fit_batch(ks, os_, names, opt.residual, loo="hat" if opt.loo == "hat" else "none")
    return cross_validate_batch(ks, os_, fits, opt.loo, opt.kfold, opt.residual)
