"""Choose a heliostat's error-parameter set by cross-validation, and say why.

With few records the drive's default set (8 parameters for the linear drive) is more than
the data can carry: a fit then trades parameters against each other and sits on their
bounds (issue 16: a real heliostat's axis-1 zero offset on its −50 mrad bound against the
actuator-1 stroke, with 6 records). This module picks, among a ladder of nested candidate
sets (:func:`candidate_sets`), the one with the smallest leave-one-out pointing error, and
reports an honest error for the whole procedure.

Rule
----
1. Candidates (:func:`candidate_sets`): one zero offset alone (each), both zero offsets,
   then the drive's default groups added one at a time in the order of
   :data:`GROUP_PRIORITY` (first-axis tilt, non-orthogonality, canting, actuator
   strokes), ending with the default set.
2. A candidate of p parameters is *feasible* on n records when a leave-one-out check of it
   is possible: 2(n − 1) ≥ p + 1 residual components.
3. Each feasible candidate is fitted (plain least squares) and scored by its leave-one-out
   RMS pointing error (:func:`~heliostat.calibration.crossval.loo_hat`, the closed form).
   A candidate whose fit puts a parameter on its bound is *not* chosen (the bound, not the
   data, decided that value) and is reported as such.
4. The chosen set is the one with the smallest score; a larger set must beat every smaller
   one by :data:`MIN_GAIN` (relative), else the smaller one is kept.
5. The reported error is **nested** leave-one-out: for each record, steps 2–4 are rerun on
   the other records, the set they choose is fitted on them, and the held-out record's
   pointing error is measured. The RMS over the records estimates the error of the
   procedure (selection included), not of one lucky set; it is larger than the chosen
   set's own leave-one-out score, which is biased low by the choice.

The pointing error is the angle of the reflected beam against the ray from the **mirror
centre** (the pivot plus the concentrator translation, as :mod:`heliostat.calibration.fit`
defines its residual) to the measured spot, in mrad.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from heliostat.calibration.crossval import loo_hat
from heliostat.calibration.fit import fit_heliostat, pointing_residuals
from heliostat.calibration.observations import Observations
from heliostat.errors import CalibrationError
from heliostat.kinematics import HeliostatKinematics, default_groups, names_for_groups

#: Order in which parameter groups join the candidate ladder (the most-determined first:
#: zero offsets move every beam; strokes act only through the actuator geometry).
GROUP_PRIORITY = (
    "zero_offsets",
    "first_axis_tilt",
    "nonorthogonality",
    "canting",
    "actuator_stroke",
    "joint_translations",
)
#: Relative improvement of the leave-one-out score a larger set needs over a smaller one.
MIN_GAIN = 0.05


def candidate_sets(drive: str) -> tuple[tuple[str, ...], ...]:
    """The nested ladder of parameter sets for a drive, smallest first (module rule 1)."""
    groups = [g for g in GROUP_PRIORITY if g in default_groups(drive)]
    groups += [g for g in default_groups(drive) if g not in groups]
    zero = names_for_groups(drive, ["zero_offsets"]) if "zero_offsets" in groups else ()
    out: list[tuple[str, ...]] = [(n,) for n in zero]
    for i in range(len(groups)):
        s = names_for_groups(drive, groups[: i + 1])
        if s not in out:
            out.append(s)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Candidate:
    """One candidate set's score on the records.

    Attributes
    ----------
    names : tuple of str
    loo_rms_mrad : float
        Leave-one-out RMS pointing error (NaN when not feasible or the fit failed). [mrad]
    at_bound : tuple of str
        Parameters the fit put on their bound (such a candidate is not chosen).
    note : str
        Why the candidate was not scored or not eligible (empty otherwise).
    """

    names: tuple[str, ...]
    loo_rms_mrad: float
    at_bound: tuple[str, ...] = ()
    note: str = ""


@dataclass(frozen=True, slots=True)
class Selection:
    """The chosen parameter set, the candidates' scores and the honest error.

    Attributes
    ----------
    names : tuple of str
        The chosen set (empty when no candidate is feasible).
    candidates : tuple of Candidate
    nested_loo_rms_mrad : float
        Nested leave-one-out RMS pointing error of the whole procedure (NaN when the
        records are too few for it). [mrad]
    reason : str
        Which set was chosen and why, in one sentence.
    """

    names: tuple[str, ...]
    candidates: tuple[Candidate, ...]
    nested_loo_rms_mrad: float
    reason: str

    def summary(self) -> dict:
        """A JSON-ready dictionary."""
        return {
            "chosen": list(self.names),
            "nested_loo_rms_mrad": self.nested_loo_rms_mrad,
            "reason": self.reason,
            "candidates": [
                {
                    "parameters": list(c.names),
                    "loo_rms_mrad": c.loo_rms_mrad,
                    "at_bound": list(c.at_bound),
                    "note": c.note,
                }
                for c in self.candidates
            ],
        }


def _feasible(n: int, p: int) -> bool:
    return 2 * (n - 1) >= p + 1


def score(
    kin: HeliostatKinematics, obs: Observations, names: Sequence[str], residual: str = "angle"
) -> Candidate:
    """Fit ``names`` and score them by leave-one-out (module rule 3)."""
    names = tuple(names)
    n = len(obs)
    if not _feasible(n, len(names)):
        return Candidate(names, math.nan, (), f"{n} records: too few for a check of {len(names)}")
    try:
        r = fit_heliostat(kin, obs, names, residual, robust=False)
    except CalibrationError as exc:
        return Candidate(names, math.nan, (), f"fit failed: {exc}")
    if not r.success:
        return Candidate(names, math.nan, (), f"fit failed: {r.reason}")
    x = r.errors.to_vector(names)
    at_bound = tuple(
        nm for nm, v in zip(names, x, strict=True) if abs(v) >= 0.999 * kin.spec.fit_bound(nm)
    )
    loo = loo_hat(kin, obs, r, residual)
    note = f"{', '.join(at_bound)} on the bound: not eligible" if at_bound else ""
    return Candidate(names, float(loo), at_bound, note)


def _choose(cands: Sequence[Candidate]) -> Candidate | None:
    best: Candidate | None = None
    for c in cands:  # smallest first: a larger set must beat the best so far by MIN_GAIN
        if c.at_bound or not math.isfinite(c.loo_rms_mrad):
            continue
        if best is None or c.loo_rms_mrad < (1.0 - MIN_GAIN) * best.loo_rms_mrad:
            best = c
    return best


def select_parameters(
    kin: HeliostatKinematics,
    obs: Observations,
    residual: str = "angle",
    candidates: Sequence[Sequence[str]] | None = None,
    nested: bool = True,
) -> Selection:
    """Choose the parameter set by leave-one-out and estimate its error by nested
    leave-one-out (module docstring, rules 1–5).

    Parameters
    ----------
    kin : HeliostatKinematics
    obs : Observations
    residual : {"angle", "plane"}
    candidates : sequence of sequences of str, optional
        Default: :func:`candidate_sets` of the drive.
    nested : bool
        Compute the nested leave-one-out error (n × candidates fits).

    Returns
    -------
    Selection
        ``names`` empty when no candidate is feasible and eligible.
    """
    cands = [tuple(c) for c in (candidates or candidate_sets(kin.drive))]
    scored = tuple(score(kin, obs, c, residual) for c in cands)
    best = _choose(scored)
    if best is None:
        return Selection((), scored, math.nan, _none_reason(len(obs), scored))
    nested_rms = math.nan
    if nested:
        held = []
        for i in range(len(obs)):
            keep = np.setdiff1d(np.arange(len(obs)), [i])
            train = obs.subset(keep)
            inner = _choose([score(kin, train, c, residual) for c in cands])
            if inner is None:
                held = []
                break
            r = fit_heliostat(kin, train, inner.names, residual, robust=False)
            if not r.success:
                held = []
                break
            held.append(pointing_residuals(kin, obs.subset([i]), r.errors, residual)[0])
        if held:
            nested_rms = float(np.sqrt(np.mean(np.square(held))))
    full = scored[-1]
    why = (
        f"chose {len(best.names)} of {len(full.names)} parameters "
        f"({', '.join(best.names)}): smallest leave-one-out error {best.loo_rms_mrad:.3g} mrad "
        f"among {sum(math.isfinite(c.loo_rms_mrad) for c in scored)} feasible nested sets "
        f"(a larger set must gain {MIN_GAIN:.0%})"
    )
    if best.names != full.names:
        why += (
            f"; the full set: {full.loo_rms_mrad:.3g} mrad"
            if math.isfinite(full.loo_rms_mrad)
            else f"; the full set: {full.note or 'not scored'}"
        )
        if full.at_bound:
            why += f" ({', '.join(full.at_bound)} on the bound)"
    return Selection(best.names, scored, nested_rms, why)


def _none_reason(n: int, scored: Sequence[Candidate]) -> str:
    if not any(math.isfinite(c.loo_rms_mrad) for c in scored):
        return f"{n} records: too few for a leave-one-out check of any candidate set"
    return "every scored candidate put a parameter on its bound"
