"""Refit cross-validation of many heliostats' fits at once.

:func:`~heliostat.calibration.crossval.with_cross_validation` refits each held-out part
(one record for leave-one-out, a fold for k-fold) by ``fit_heliostat`` from the full fit:
30 records make 30 + 5 small least-squares problems per heliostat, more work than the fit
itself. Here every (heliostat, held-out part) pair of a batch is one row of the batched
Levenberg–Marquardt (:func:`heliostat.calibration.batch._lm`, the training rows as its
row mask), started from the heliostat's fit, and the held-out residuals come from one
compiled evaluation. The folds are :mod:`~heliostat.calibration.crossval`'s (the fit's
inliers; k-fold over :func:`~heliostat.calibration.crossval.canonical_order` with the
seed-0 permutation). The row weights are the whole record set's, not each training
part's: weights differ from those only by a common factor (the median σ), which leaves
the least-squares minimum where it is.

A heliostat whose refits do not all converge, or end at a bound (scipy's ``dogbox``
handles bounds, projected steps do not), is cross-validated by
:func:`~heliostat.calibration.crossval.with_cross_validation`, so its figures (or NaN)
are the single path's; the others agree with it to the optimisers' tolerances
(``tests/test_selection_batch.py``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from heliostat.calibration.batch import CHUNK, _Batch, _kernels, _lm
from heliostat.calibration.crossval import canonical_order, with_cross_validation
from heliostat.calibration.fit import FitResult, inlier_mask
from heliostat.calibration.observations import Observations
from heliostat.kinematics import HeliostatKinematics


def cross_validate_batch(
    kinematics_list: Sequence[HeliostatKinematics],
    observations_list: Sequence[Observations],
    results: Sequence[FitResult],
    loo: str = "refit",
    k: int | None = 5,
    residual: str = "angle",
) -> list[FitResult]:
    """:func:`~heliostat.calibration.crossval.with_cross_validation` of many fits of one
    drive type and parameter set, batched.

    Parameters
    ----------
    kinematics_list, observations_list : sequences
        As the fits were made.
    results : sequence of FitResult
        The fits (a failed one is returned as it is).
    loo : {"refit", "hat", "none"}
        ``"refit"`` fills ``loo_rms_mrad`` by refits; ``"hat"`` and ``"none"`` leave the
        value the result has (``fit_batch(loo="hat")`` computes the hat form).
    k : int or None
        k-fold cross-validation (None or 0: ``kfold_rms_mrad`` stays NaN).
    residual : {"angle", "plane"}

    Returns
    -------
    list of FitResult
    """
    kins, obs, res = list(kinematics_list), list(observations_list), list(results)
    if not (len(kins) == len(obs) == len(res)):
        raise ValueError(f"{len(kins)} kinematics, {len(obs)} observation sets, {len(res)} fits")
    if loo not in ("refit", "hat", "none"):
        raise ValueError(f"loo must be 'refit', 'hat' or 'none', got {loo!r}")
    out = list(res)
    todo = [i for i, r in enumerate(res) if r.success and (loo == "refit" or k)]
    if not todo:
        return out
    names = res[todo[0]].names
    kern = _kernels()
    same = all(res[i].names == names for i in todo) and len({kins[i].drive for i in todo}) == 1
    ok_kernel = same and names and kern.supports(kins[todo[0]])
    ok_kernel = ok_kernel and all(n in kern.SLOTS for n in names)
    done: dict[int, FitResult] = {}
    if ok_kernel:
        for lo in range(0, len(todo), CHUNK):
            part = todo[lo : lo + CHUNK]
            try:
                got = _chunk([kins[i] for i in part], [obs[i] for i in part],
                             [res[i] for i in part], loo, k, residual)  # fmt: skip
            except (ValueError, ArithmeticError, np.linalg.LinAlgError):
                continue
            done.update({i: r for i, r in zip(part, got, strict=True) if r is not None})
    for i in todo:
        if i in done:
            out[i] = done[i]
            continue
        r = res[i]
        cv = with_cross_validation(kins[i], obs[i], r, "refit" if loo == "refit" else "none",
                                   k or None, residual)  # fmt: skip
        out[i] = cv if loo == "refit" else dataclasses.replace(cv, loo_rms_mrad=r.loo_rms_mrad)
    return out


def _folds(n: int, k: int | None) -> list[NDArray[np.int64]] | None:
    """k-fold parts of ``n`` rows already in canonical order (crossval.kfold_rms)."""
    if not k:
        return None
    rng = np.random.default_rng(0)
    return list(np.array_split(rng.permutation(n), k))


def _chunk(kins, obs, res, loo: str, k: int | None, residual: str) -> list[FitResult | None]:
    """One chunk: the refit figures of each fit, None where the single path decides."""
    b = len(kins)
    names = res[0].names
    p = len(names)
    inl = []
    for o, r in zip(obs, res, strict=True):
        s = o.subset(inlier_mask(r, o))
        inl.append(s.subset(canonical_order(s)))  # the order k-fold draws its folds over
    bt = _Batch(kins, inl, names, [r.errors for r in res], residual)
    nmax = bt.steps.shape[1]
    # (heliostat, part, held-out rows, training mask) for every refit
    rows_h, parts, tests, train = [], [], [], []
    kinds: list[tuple[int, str]] = []
    for i, o in enumerate(inl):
        n = len(o)
        want = []
        if loo == "refit":
            want.append(("loo", [np.array([q]) for q in range(n)]))
        n_in = len(obs[i]) - res[i].n_outliers
        if k and n_in >= 2 * k:
            want.append(("kfold", _folds(n, k)))
        for kind, folds in want:
            kinds.append((i, kind))
            for t in folds:
                m = np.zeros(nmax, dtype=bool)
                m[:n] = True
                m[t] = False
                rows_h.append(i)
                parts.append(len(kinds) - 1)
                tests.append(t)
                train.append(m)
    out: list[FitResult | None] = list(res)
    if not rows_h:
        return out
    sel = np.array(rows_h, dtype=np.int64)
    train_a = np.array(train)
    x0 = np.array([r.errors.to_vector(names) for r in res])[sel]
    x, conv = _lm(bt, sel, x0, train_a, robust=False)
    few = 2 * train_a.sum(axis=1) < p + 1
    conv &= ~np.any(np.abs(x) >= 0.999 * bt.ub, axis=1) | few
    r_all, _ = bt.evaluate(sel, x, want_jac=0)
    norms = np.linalg.norm(r_all, axis=-1)
    figures: dict[tuple[int, str], float] = {}
    bad: set[int] = set()
    held: dict[int, list[NDArray[np.float64]]] = {}
    nan_part: set[int] = set()
    for q, (part, t) in enumerate(zip(parts, tests, strict=True)):
        i = rows_h[q]
        if few[q]:
            nan_part.add(part)  # fit_heliostat fails: too few residuals
        elif not conv[q]:
            bad.add(i)
        held.setdefault(part, []).append(norms[q, t])
    for part, (i, kind) in enumerate(kinds):
        if part in nan_part:
            figures[(i, kind)] = math.nan
        else:
            e = np.concatenate(held[part])
            figures[(i, kind)] = float(np.sqrt(np.mean(e**2))) if e.size else math.nan
    for i in range(b):
        if i in bad:
            out[i] = None
            continue
        r = res[i]
        loo_v = figures.get((i, "loo"), r.loo_rms_mrad if loo != "refit" else math.nan)
        kf = figures.get((i, "kfold"), math.nan)
        out[i] = dataclasses.replace(r, loo_rms_mrad=loo_v, kfold_rms_mrad=kf)
    return out
