"""Per-heliostat triage after a calibration run: status, flags, reason and next step.

One :class:`HeliostatRecord` per heliostat says what happened to it (fitted, refused,
delivered, ...), how far it points before and after, and what an operator should do
next, in words ("needs 3 more visits at these sun positions: ...", "check actuator 2",
"correction above the safety limit of 20 mrad: inspect before forcing"). The records are
built from plain inputs (fit results, sun directions, delivery states, verification
errors) by :func:`heliostat_records`; :func:`next_steps` groups them into the "what to
do next" list of the report and ``summary.json`` (``docs/report.md``).

Pure: no I/O, no plotting; the fit results are read through their attributes only
(``success``, ``reason``, ``names``, ``parameters()``, ``n_points``, ``n_outliers``,
``condition``, ``suggested_names``, ``loo_rms_mrad``), so any fit result with these
works whatever parameter set the model selection chose.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

#: Statuses, worst first (the order of the "what to do next" list).
STATUSES: tuple[str, ...] = (
    "not observed",
    "fit failed",
    "refused",
    "not delivered",
    "check",
    "unidentifiable",
    "fitted",
    "corrected",
)

#: Condition number of the fit's column-normalised Jacobian above which the fitted
#: parameters are poorly identifiable (:data:`heliostat.calibration.fit.COND_WARN`).
COND_FLAG = 300.0

#: A corrected heliostat is flagged "high after" when its held-out error exceeds both this
#: many robust standard deviations above the corrected heliostats' median and twice that
#: median: an outlier of the field, not the tail of its spread.
HIGH_AFTER_K = 5.0

#: A refused correction's largest term points at the hardware only when it is at least
#: this many of its standard errors (and the fit is not ill-conditioned); a real slipped
#: zero of 30 mrad fitted from 20 visits lies hundreds of standard errors out.
TERM_SIGMA = 5.0

#: Elevation splitting low from high sun in the visit advice. [deg]
LOW_SUN_DEG = 30.0


@dataclass(frozen=True, slots=True)
class HeliostatRecord:
    """What happened to one heliostat and what to do about it.

    Attributes
    ----------
    heliostat, drive : str
    status : str
        One of :data:`STATUSES`: ``corrected`` (fitted, delivered and confirmed, nothing
        flagged), ``fitted`` (fitted, not sent), ``unidentifiable`` (corrected, but the sun
        positions seen do not pin the chosen parameters down: good near those positions,
        uncertain in another season), ``check`` (corrected, but a parameter at its bound
        or an error after far above the field's asks a look), ``not delivered`` (the
        controller did not confirm), ``refused`` (the safety
        limit refused the correction), ``fit failed``, ``not observed``.
    before_mrad, after_mrad : float
        RMS beam pointing error on the held-out day with the nominal model and with what
        the heliostat runs after the run (its nominal model when not corrected); NaN when
        not verified. [mrad]
    parameters : tuple of str
        Parameters the fit chose (empty when the fit failed).
    observations, outliers : int
        Observations the fit had, and those it set aside as gross outliers.
    loo_mrad : float
        The fit's leave-one-out pointing error (NaN when not computed). [mrad]
    condition : float
        Condition number of the fit's column-normalised Jacobian (NaN when not fitted).
    correction_mrad : float
        Largest mirror rotation the fitted parameter set commands, as the safety check
        measured it (NaN when not checked). [mrad]
    flags : tuple of str
        Short machine-readable marks: ``too-few-visits``, ``not-converged``, ``no-beam``,
        ``reduced-set`` (fitted on fewer parameters than the drive's default),
        ``ill-conditioned``, ``clustered-sun``, ``at-bound:<param>``, ``outliers:<n>``,
        ``high-after``, ``above-limit``, ``delivery:<state>``.
    delivery : str
        ``confirmed``, ``refused``, ``failed``, ``unreachable``, ``rejected``,
        ``superseded`` or ``not sent``.
    reason : str
        Why the status is what it is, in words (empty for ``corrected``).
    next_step : str
        What an operator does next (empty when nothing).
    """

    heliostat: str
    drive: str
    status: str
    before_mrad: float = math.nan
    after_mrad: float = math.nan
    parameters: tuple[str, ...] = ()
    observations: int = 0
    outliers: int = 0
    loo_mrad: float = math.nan
    condition: float = math.nan
    correction_mrad: float = math.nan
    flags: tuple[str, ...] = ()
    delivery: str = "not sent"
    reason: str = ""
    next_step: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (non-finite floats become None, figures rounded to 1 µrad)."""

        def num(v: float) -> float | None:
            return round(float(v), 3) if math.isfinite(v) else None

        return {
            "heliostat": self.heliostat,
            "drive": self.drive,
            "status": self.status,
            "before_mrad": num(self.before_mrad),
            "after_mrad": num(self.after_mrad),
            "parameters": list(self.parameters),
            "observations": self.observations,
            "outliers": self.outliers,
            "loo_mrad": num(self.loo_mrad),
            "condition": round(self.condition, 1) if math.isfinite(self.condition) else None,
            "correction_mrad": num(self.correction_mrad),
            "flags": list(self.flags),
            "delivery": self.delivery,
            "reason": self.reason,
            "next_step": self.next_step,
        }


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the bridge did with the fitted parameter sets.

    Attributes
    ----------
    states : dict of str to (str, str)
        Per heliostat sent: (outcome state, detail).
    refused : dict of str to str
        Per heliostat refused by the safety checks: the refusal's text.
    correction_mrad : dict of str to float
        Largest mirror rotation each checked parameter set commands. [mrad]
    max_correction_mrad : float
        The field's safety limit. [mrad]
    parameters : dict of str to dict of str to float
        The parameter set each heliostat's check saw (the corrections file's values);
        where absent, the fit's. [rad or m]
    """

    states: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    refused: Mapping[str, str] = field(default_factory=dict)
    correction_mrad: Mapping[str, float] = field(default_factory=dict)
    max_correction_mrad: float = math.nan
    parameters: Mapping[str, Mapping[str, float]] = field(default_factory=dict)


# --------------------------------------------------------------------------- sun sectors
def sun_sectors(u_sun_enu: ArrayLike) -> list[str]:
    """Label each sun direction with its sector of the sky: time of day (morning: sun
    azimuth 30–150°, afternoon 210–330°, midday otherwise) × height (below or above
    :data:`LOW_SUN_DEG`).

    Parameters
    ----------
    u_sun_enu : array_like of shape (N, 3)
        Unit vectors toward the sun, site ENU.

    Returns
    -------
    list of str
        One label per row, e.g. ``"morning, below 30°"``.
    """
    u = np.atleast_2d(np.asarray(u_sun_enu, dtype=float))
    if u.shape[-1] != 3:
        raise ValueError(f"u_sun_enu must have shape (N, 3), got {u.shape}")
    el = np.degrees(np.arcsin(np.clip(u[:, 2], -1.0, 1.0)))
    # sine of the azimuth (clockwise from north): +1 due east, -1 due west
    s = u[:, 0] / np.maximum(np.hypot(u[:, 0], u[:, 1]), 1e-12)
    when = np.where(s > 0.5, "morning", np.where(s < -0.5, "afternoon", "midday"))
    high = np.where(el >= LOW_SUN_DEG, f"above {LOW_SUN_DEG:g}°", f"below {LOW_SUN_DEG:g}°")
    return [f"{w}, {h}" for w, h in zip(when, high, strict=True)]


_SECTOR_ORDER = [
    f"{w}, {h} {LOW_SUN_DEG:g}°"
    for w in ("morning", "midday", "afternoon")
    for h in ("below", "above")
]


def missing_sectors(have: Sequence[str], reachable: Sequence[str] | None = None) -> list[str]:
    """Sky sectors (of :func:`sun_sectors`) in ``reachable`` with no visit in ``have``,
    in the order morning → afternoon, low → high."""
    got = set(have)
    ok = set(reachable) if reachable is not None else set(_SECTOR_ORDER)
    return [s for s in _SECTOR_ORDER if s in ok and s not in got]


# --------------------------------------------------------------------------- parameters
_ACTUATOR = re.compile(r"^(?:axis|actuator)(\d)_")


def hardware_hint(param: str) -> str:
    """The part of a heliostat a kinematic parameter points at, as an instruction."""
    m = _ACTUATOR.match(param)
    if m and "_tilt" in param:
        return f"check the tilt of axis {m[1]} (pedestal, foundation)"
    if m and "_offset" in param:
        return f"check the surveyed position of axis {m[1]}"
    if m and "_zero" in param:
        return f"check actuator {m[1]} (its zero: reference switch, slipped coupling)"
    if m:
        return f"check actuator {m[1]}"
    if param.startswith("mirror_"):
        return "check the mirror mounting and canting"
    if "nonorthogonality" in param:
        return "check the alignment of the two axes"
    return "check the heliostat"


def _angular_mrad(params: Mapping[str, float]) -> tuple[str, float] | None:
    """The angular parameter with the largest magnitude, in mrad (None if none)."""
    ang = {k: abs(float(v)) * 1e3 for k, v in params.items() if k.endswith("_rad")}
    if not ang:
        return None
    k = max(ang, key=ang.__getitem__)
    return k, ang[k]


def _visits(n: int) -> str:
    return f"{n} more visit{'s' if n != 1 else ''}"


# --------------------------------------------------------------------------- records
def heliostat_records(
    ids: Sequence[str],
    drives: Mapping[str, str],
    fits: Mapping[str, Any],
    sun_enu: Mapping[str, ArrayLike],
    before_mrad: Mapping[str, float] | None = None,
    after_mrad: Mapping[str, float] | None = None,
    delivery: Delivery | None = None,
    default_parameters: Callable[[str], Sequence[str]] | None = None,
    fit_bound: Callable[[str, str], float] | None = None,
) -> list[HeliostatRecord]:
    """One record per heliostat of ``ids`` (in that order).

    Parameters
    ----------
    ids : sequence of str
        Every heliostat of the field.
    drives : mapping of str to str
        Drive type per heliostat.
    fits : mapping of str to FitResult
        The fit finally kept per heliostat (failed ones included); absent = not observed.
    sun_enu : mapping of str to array_like of shape (N, 3)
        Sun directions of each heliostat's observations (site ENU).
    before_mrad, after_mrad : mapping of str to float, optional
        Held-out RMS pointing error per heliostat, nominal model and as run after the
        calibration. [mrad]
    delivery : Delivery, optional
        What the bridge did; None = nothing was sent.
    default_parameters : callable, optional
        ``drive -> names`` the fit uses when nothing is chosen (to flag a reduced set).
    fit_bound : callable, optional
        ``(drive, parameter) -> bound`` of the fit (to flag a parameter at its bound).
        [rad or m]

    Returns
    -------
    list of HeliostatRecord
    """
    before_mrad = before_mrad or {}
    after_mrad = after_mrad or {}
    dl = delivery
    # the sky sectors of each heliostat's visits; the field's together are those the
    # campaign could reach (the advice names no sector the sun never visited)
    seen = {h: sun_sectors(v) for h, v in sun_enu.items() if len(np.asarray(v))}
    reach = sorted({s for v in seen.values() for s in v}) or None
    corrected_after = [
        float(after_mrad[h])
        for h in ids
        if h in after_mrad
        and math.isfinite(after_mrad[h])
        and getattr(fits.get(h), "success", False)
        and (dl is None or h not in dl.refused)
        and (dl is None or dl.states.get(h, ("confirmed", ""))[0] == "confirmed")
    ]
    high_after = math.inf
    if len(corrected_after) >= 5:
        med = float(np.median(corrected_after))
        mad = 1.4826 * float(np.median(np.abs(np.asarray(corrected_after) - med)))
        high_after = max(med + HIGH_AFTER_K * mad, 2.0 * med)

    out = []
    for hid in ids:
        fit = fits.get(hid)
        drive = drives.get(hid, getattr(fit, "drive", ""))
        b = float(before_mrad.get(hid, math.nan))
        a = float(after_mrad.get(hid, math.nan))
        sectors = seen.get(hid, [])
        lacking = missing_sectors(sectors, reach)
        where = (
            ": " + "; ".join(lacking)
            if lacking
            else " of another season (every time of day is covered: the sun's declination "
            "must change)"
        )
        if fit is None or getattr(fit, "n_points", 0) == 0:
            out.append(
                HeliostatRecord(
                    hid,
                    drive,
                    "not observed",
                    b,
                    a,
                    flags=("no-observations",),
                    reason="no usable observation of this heliostat",
                    next_step="check that the camera sees its spot on the target (a large "
                    "error far from the tower puts the spot off the target: aim it by hand) "
                    "and that the campaign schedules it; then re-run the campaign for it",
                )
            )
            continue
        names = tuple(getattr(fit, "names", ()))
        n = int(getattr(fit, "n_points", 0))
        common = dict(
            before_mrad=b,
            observations=n,
            outliers=int(getattr(fit, "n_outliers", 0)),
            condition=float(getattr(fit, "condition", math.nan)),
        )
        clustered = len(set(sectors)) <= 1 and n > 1
        if not fit.success:
            reason = str(fit.reason)
            flags: list[str] = []
            if "too few" in reason:
                flags.append("too-few-visits")
                # n >= p: 2p residuals for p parameters, twice the bare minimum, so the
                # outlier test and the leave-one-out check have room.
                need = max(len(names) - n, math.ceil((len(names) + 1) / 2) - n, 1)
                step = f"needs {_visits(need)} at these sun positions{where}"
            elif "did not converge" in reason or "not identifiable" in reason:
                flags.append("not-converged")
                sugg = tuple(getattr(fit, "suggested_names", ()))
                step = f"needs {_visits(max(len(lacking), 2))} at these sun positions{where}"
                if sugg:
                    step += f"; or fit fewer parameters ({', '.join(sugg)})"
            elif "no beam" in reason:
                flags.append("no-beam")
                step = (
                    "check its position, drive and axis directions in the field file and the "
                    "observation rows named in the reason (a spot behind the mirror)"
                )
            else:
                step = "re-run the calibration of this heliostat and read its full reason"
            if clustered:
                flags.append("clustered-sun")
            out.append(
                HeliostatRecord(
                    hid,
                    drive,
                    "fit failed",
                    b,
                    a,
                    flags=tuple(flags),
                    reason=reason,
                    next_step=step,
                    **{k: v for k, v in common.items() if k != "before_mrad"},
                )
            )
            continue
        params = dict(fit.parameters()) if hasattr(fit, "parameters") else {}
        flags = []
        hints: list[str] = []
        if default_parameters is not None and len(names) < len(tuple(default_parameters(drive))):
            flags.append("reduced-set")
        cond = common["condition"]
        if math.isfinite(cond) and cond > COND_FLAG:
            flags.append("ill-conditioned")
        if clustered:
            flags.append("clustered-sun")
        if fit_bound is not None:
            for k, v in params.items():
                if abs(v) >= 0.999 * fit_bound(drive, k):
                    flags.append(f"at-bound:{k}")
                    hints.append(
                        f"{k} reached the fit bound: {hardware_hint(k)}, or fit without it"
                    )
        if common["outliers"]:
            flags.append(f"outliers:{common['outliers']}")
        corr = math.nan
        state, detail = "not sent", ""
        if dl is not None:
            corr = float(dl.correction_mrad.get(hid, math.nan))
            if hid in dl.refused:
                state, detail = "refused", dl.refused[hid].removeprefix(f"{hid}: ")
            elif hid in dl.states:
                state, detail = dl.states[hid]
        rec = dict(
            common,
            after_mrad=a,
            parameters=names,
            loo_mrad=float(getattr(fit, "loo_rms_mrad", math.nan)),
            correction_mrad=corr,
            delivery=state,
        )
        if state == "refused":
            limit = dl.max_correction_mrad if dl is not None else math.nan
            flags.append("above-limit")
            big = _angular_mrad(dl.parameters.get(hid, params) if dl is not None else params)
            size = f"{corr:.1f} mrad " if math.isfinite(corr) else ""
            step = (
                f"correction {size}above the safety limit of {limit:g} mrad: inspect before forcing"
            )
            if big is not None:
                bound = f"at-bound:{big[0]}" in flags
                sd = float(getattr(fit, "std", {}).get(big[0], 0.0)) * 1e3
                # a poorly identified fit trades parameters off against each other: its
                # largest term is then more likely the data than the hardware. Weak: an
                # ill-conditioned fit, or the term within TERM_SIGMA standard errors of 0
                weak = "ill-conditioned" in flags or not big[1] >= TERM_SIGMA * sd
                pm = f" ± {sd:.1f}" if sd > 0 and math.isfinite(sd) else ""
                step += f"; largest term {big[0]} = {big[1]:.1f}{pm} mrad" + (
                    " (at the fit bound)" if bound else ""
                )
                if weak:
                    why = (
                        f"condition {cond:.3g}"
                        if "ill-conditioned" in flags
                        else f"under {TERM_SIGMA:g} standard errors"
                    )
                    more = (
                        f"visits at: {'; '.join(lacking)}"
                        if lacking
                        else "visits in another season"
                    )
                    step += (
                        f", poorly determined ({why}): refit first ({more}; or fewer "
                        f"parameters), then {hardware_hint(big[0])} if it stays"
                    )
                else:
                    step += f": {hardware_hint(big[0])}"
            out.append(
                HeliostatRecord(
                    hid,
                    drive,
                    "refused",
                    flags=tuple(flags),
                    reason=detail,
                    next_step=step,
                    **rec,
                )
            )
            continue
        if state not in ("confirmed", "not sent"):
            flags.append(f"delivery:{state}")
            what = {
                "unreachable": "the controller did not answer: check its power, bus wiring "
                "and address",
                "failed": "the controller answered but did not apply it: check its status "
                "and error register",
                "rejected": "the controller rejected the parameter set: check its firmware limits",
            }.get(state, "check the controller")
            out.append(
                HeliostatRecord(
                    hid,
                    drive,
                    "not delivered",
                    flags=tuple(flags),
                    reason=f"{state}: {detail}" if detail else state,
                    next_step=f"{what}; then re-run the same delivery command to resume",
                    **rec,
                )
            )
            continue
        if math.isfinite(a) and a > high_after:
            flags.append("high-after")
            hints.append(
                f"error after correction {a:.2f} mrad, an outlier of the field: re-measure it "
                "on camera and check the mounting (effects the model does not fit)"
            )
        if "ill-conditioned" in flags:
            hints.append(
                f"needs {_visits(max(len(lacking), 2))} at these sun positions{where}"
                if lacking
                else f"needs visits at sun positions{where}"
            )
        serious = any(f.startswith(("at-bound", "high-after")) for f in flags)
        if serious:
            status = "check"
        elif "ill-conditioned" in flags:
            status = "unidentifiable"
        else:
            status = "corrected" if state == "confirmed" else "fitted"
        why = [f"{f.split(':', 1)[1]} at the fit bound" for f in flags if f.startswith("at-bound:")]
        if "ill-conditioned" in flags:
            why.append(
                f"parameters poorly identifiable from these sun positions (condition number "
                f"{cond:.3g} > {COND_FLAG:g})"
            )
        if "high-after" in flags:
            why.append(f"held-out error after {a:.2f} mrad, above {high_after:.2f} mrad")
        if not why and "reduced-set" in flags:
            why.append(
                f"fitted on {len(names)} parameters (the sun positions cannot identify more)"
            )
        out.append(
            HeliostatRecord(
                hid,
                drive,
                status,
                flags=tuple(flags),
                reason="; ".join(why),
                next_step="; ".join(hints),
                **rec,
            )
        )
    return out


# --------------------------------------------------------------------------- next steps
@dataclass(frozen=True, slots=True)
class NextStep:
    """A group of heliostats that need the same kind of action.

    Attributes
    ----------
    status : str
        The records' status.
    title : str
        The group in words, with its count.
    action : str
        What to do, for the whole group.
    heliostats : tuple of str
        The heliostats, worst first within the group.
    """

    status: str
    title: str
    action: str
    heliostats: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "status": self.status,
            "title": self.title,
            "action": self.action,
            "heliostats": list(self.heliostats),
        }


_GROUP_ACTION = {
    "not observed": "Check the schedule and the camera's view of their spots; re-run the "
    "campaign for them.",
    "fit failed": "Schedule the visits each one needs (its row in the table says how many "
    "and at which sun positions), then calibrate them again.",
    "refused": "Do not force them. Where the fit is well identified a correction this "
    "large points at a mechanical fault (slipped actuator zero, loose mirror): inspect it; "
    "where the row says the fit is poorly identifiable, refit with more visits first.",
    "not delivered": "Fix the controller or the bus (each row says which), then re-run the "
    "same delivery command: it resumes where it stopped.",
    "check": "Corrected, but flagged: a parameter at its bound points at the actuator to "
    "check; an error after far above the field's asks for a look on camera.",
    "unidentifiable": "Corrected and good near the sun positions seen; schedule visits at "
    "the sun positions each row names (often another season) so that the next campaign "
    "pins every parameter down.",
    "fitted": "Deliver the corrections (heliostat bridge apply).",
}

_GROUP_TITLE = {
    "not observed": "not observed",
    "fit failed": "fit failed",
    "refused": "correction refused by the safety limit",
    "not delivered": "correction not confirmed by the controller",
    "check": "corrected, to check",
    "unidentifiable": "corrected, parameters poorly identifiable",
    "fitted": "fitted, not yet delivered",
}


def next_steps(records: Sequence[HeliostatRecord]) -> list[NextStep]:
    """The "what to do next" list: one group per status that needs an action, worst
    status first; within a group the heliostats with the largest error after come first.
    """
    out = []
    for status in STATUSES:
        if status not in _GROUP_ACTION:
            continue
        rs = [r for r in records if r.status == status]
        if not rs:
            continue
        rs.sort(key=lambda r: -(r.after_mrad if math.isfinite(r.after_mrad) else -1.0))
        title = f"{_GROUP_TITLE[status]}: {len(rs)} heliostat{'s' if len(rs) != 1 else ''}"
        out.append(NextStep(status, title, _GROUP_ACTION[status], tuple(r.heliostat for r in rs)))
    return out


def status_counts(records: Sequence[HeliostatRecord]) -> dict[str, int]:
    """Heliostats per status, in the order of :data:`STATUSES` (absent statuses left out)."""
    return {s: n for s in STATUSES if (n := sum(r.status == s for r in records))}
