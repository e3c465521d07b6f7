"""Plan a calibration campaign for a whole field: who visits which target when.

Time is cut into *slots* of ``visit_s`` (a visit: move on, settle, sun-on frame, move
off, sun-off frame; a few minutes), grouped into *bins* of ``bin_s`` within which the sun
counts as one position (15 min: the sun moves ≤ 3.75°). A slot is usable when the sun
stays at least ``min_elevation_rad`` high from its start to its end. Each target (camera)
holds one heliostat per slot; a heliostat is visited at most once per bin.

Every heliostat is assigned to one target: among those it can reach on most of the
evaluation sky, the one with the fewest heliostats so far. Then the days are walked bin by
bin; in each bin every target's usable slots go to heliostats of that target not yet
calibrated:

``design``
    the heliostats for which this sun position removes the largest share of their
    expected held-out error E² (:mod:`heliostat.campaign.design`, Eq. 2), among those
    for which the visit is worth at least ``worth`` of the most one visit at any bin left
    in the day could bring (so nobody is visited at a poor sun position while a good one
    is coming, and everybody is eligible at the latest in the day's last bin);
``round-robin``
    the next ones in field order (cyclic), whatever the sun — the naive schedule, given
    the same stopping rule so that the two are compared on the visits they need.

A heliostat is calibrated (no more visits) once E ≤ ``target_error_mrad``. Its Jacobians
are evaluated at the bins' sun positions of one day and reused for ``jacobian_every_days``
days (the sun's declination moves ≤ 0.4° a day). The evaluation sky, over which E averages
the pointing error, is every hour of :data:`EVAL_DAYS` days spread over the ``eval_days``
(default: the planned days) with the sun above the elevation limit.

Clouds are not planned for: a visit lost to a cloud is a visit the campaign repeats (the
runner does not, yet; re-plan with the history — future work).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from heliostat.calibration.fit import identifiability, resolve_names
from heliostat.campaign import design as D
from heliostat.campaign.plan_file import HeliostatPlan, Plan, PlannedVisit
from heliostat.errors import InputError
from heliostat.kinematics import HeliostatKinematics
from heliostat.plant import FieldConfig
from heliostat.sun import sun_position

POLICIES = ("design", "round-robin")
#: A heliostat is assigned only to a target it reaches on at least this share of the
#: evaluation sky.
MIN_REACH = 0.5
#: Days sampled for the evaluation sky.
EVAL_DAYS = 12


@dataclass(frozen=True, slots=True)
class PlanSettings:
    """How to plan.

    Attributes
    ----------
    start_date : str
        First day, ``YYYY-MM-DD`` (UTC).
    days : int
        Days available.
    target_ids : tuple of str
        Targets (each with its camera) that take visits at the same time.
    visit_s : float
        Time one visit holds a target. [s]
    bin_s : float
        Span within which the sun counts as one position (a multiple of ``visit_s``). [s]
    min_elevation_rad : float
        No visits with the sun lower. [rad]
    noise_mrad : float
        Measurement noise, beam direction per axis. [mrad]
    target_error_mrad : float
        Expected held-out error E at which a heliostat needs no more visits. [mrad]
    groups : tuple of str or None
        Parameter groups fitted (None: each drive's defaults).
    policy : {"design", "round-robin"}
    jacobian_every_days : int
        Days one evaluation of the Jacobians serves.
    eval_days : int or None
        Days from the start whose sky the calibration must serve (None: ``days``).
    worth : float
        ``design``: a heliostat takes a slot only when the visit lowers its E² by at
        least this fraction of the most that one visit at any bin of the day could.
    capacity_share : float
        Share of each target's slots this plan may use (the rest serve other work; a
        sample of n heliostats of an N-heliostat field with share n/N sees the field's
        congestion). [1]
    """

    start_date: str
    days: int
    target_ids: tuple[str, ...]
    visit_s: float = 180.0
    bin_s: float = 900.0
    min_elevation_rad: float = math.radians(15.0)
    noise_mrad: float = 0.2
    target_error_mrad: float = 0.15
    groups: tuple[str, ...] | None = None
    policy: str = "design"
    jacobian_every_days: int = 7
    eval_days: int | None = None
    worth: float = 0.5
    capacity_share: float = 1.0

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        if not isinstance(self.days, int) or not 1 <= self.days <= 3660:
            raise ValueError(f"days must be an integer in [1, 3660], got {self.days!r}")
        if not self.target_ids:
            raise ValueError("at least one target is needed")
        if not (math.isfinite(self.visit_s) and 10.0 <= self.visit_s <= 3600.0):
            raise ValueError(f"visit_s must lie in [10, 3600] s, got {self.visit_s!r}")
        k = self.bin_s / self.visit_s
        if not (k >= 1 and abs(k - round(k)) < 1e-9 and 86400 % self.bin_s == 0):
            raise ValueError(
                f"bin_s must be a whole number of visits ({self.visit_s:g} s) dividing a day, "
                f"got {self.bin_s!r}"
            )
        if not 0.0 <= self.min_elevation_rad < math.pi / 2:
            raise ValueError(
                f"min_elevation_rad must lie in [0, pi/2), got {self.min_elevation_rad!r}"
            )
        for name in ("noise_mrad", "target_error_mrad"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be positive, got {v!r}")
        if not 0.0 <= self.worth <= 1.0:
            raise ValueError(f"worth must lie in [0, 1], got {self.worth!r}")
        if not 0.0 < self.capacity_share <= 1.0:
            raise ValueError(f"capacity_share must lie in (0, 1], got {self.capacity_share!r}")
        if self.eval_days is not None and not 1 <= self.eval_days <= 3660:
            raise ValueError(f"eval_days must lie in [1, 3660], got {self.eval_days!r}")
        if not isinstance(self.jacobian_every_days, int) or self.jacobian_every_days < 1:
            raise ValueError(
                f"jacobian_every_days must be a positive integer, got {self.jacobian_every_days!r}"
            )


def day0_utc(start_date: str) -> pd.Timestamp:
    """Midnight UTC of ``YYYY-MM-DD``."""
    try:
        t = pd.Timestamp(start_date)
    except (ValueError, TypeError):
        raise ValueError(f"start date must be YYYY-MM-DD, got {start_date!r}") from None
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return t.normalize()


def evaluation_sky(
    field_cfg: FieldConfig, day0: pd.Timestamp, days: int, min_elevation_rad: float
) -> NDArray:
    """Sun vectors of the evaluation sky: every hour (on the half hour, UTC) of at most
    :data:`EVAL_DAYS` days evenly spread over ``days`` days from ``day0``, sun above
    ``min_elevation_rad``. Shape (K, 3)."""
    step = max(1, math.ceil(days / EVAL_DAYS))
    times = pd.DatetimeIndex(
        [
            day0 + pd.Timedelta(days=d, minutes=30 + 60 * h)
            for d in range(0, days, step)
            for h in range(24)
        ]
    )
    sp = sun_position(field_cfg.site, times)
    return sp.u_sun_enu[sp.elevation_rad >= min_elevation_rad]


@dataclass(slots=True)
class _Group:
    """Scheduler state of the heliostats sharing a drive design, parameters and target."""

    kin: HeliostatKinematics
    names: tuple[str, ...]
    target_id: str
    ids: list[str]
    offsets: NDArray[np.float64]  # (n, 3) aim - pivot [m]
    cov: NDArray[np.float64] = field(init=False)  # (n, p, p)
    moment: NDArray[np.float64] = field(init=False)  # (n, p, p)
    err2: NDArray[np.float64] = field(init=False)  # (n,) [mrad²]
    jtab: NDArray[np.float64] | None = None  # (n, B, 2, p) at the bins of the table day
    gains: NDArray[np.float64] = field(init=False)  # (n, B) E² decrease of a visit [mrad²]
    suffix: NDArray[np.float64] = field(init=False)  # (n, B) largest gain from bin b on
    rows: list[list[NDArray]] = field(default_factory=list)

    def refresh_gains(
        self, idx: NDArray[np.intp], noise_mrad: float, bin_ok: NDArray[np.bool_]
    ) -> None:
        """E² decrease of one visit at each bin, and its largest value over the bins
        still to come today (``bin_ok``: bins with usable slots today)."""
        for a in range(0, idx.size, 2000):
            k = idx[a : a + 2000]
            j = self.jtab[k]
            live = np.all(np.isfinite(j), axis=(2, 3))
            g = D.visit_gain(
                self.cov[k][:, None],
                np.where(live[..., None, None], j, 0.0),
                self.moment[k][:, None],
                noise_mrad,
            )
            self.gains[k] = np.where(live, g, 0.0)
        self.refresh_suffix(idx, bin_ok)

    def refresh_suffix(self, idx: NDArray[np.intp], bin_ok: NDArray[np.bool_]) -> None:
        g = np.where(bin_ok, self.gains[idx], 0.0)
        self.suffix[idx] = np.maximum.accumulate(g[:, ::-1], axis=1)[:, ::-1]

    def start(self, sky: NDArray) -> None:
        n, p = len(self.ids), len(self.names)
        prior = D.prior_precision(self.names)
        self.cov = np.broadcast_to(np.diag(1.0 / prior), (n, p, p)).copy()
        self.moment = D.sky_moment(D.pointing_jacobians(self.kin, self.names, self.offsets, sky))
        self.err2 = D.expected_error_mrad(self.cov, self.moment) ** 2
        self.gains = np.zeros((n, 0))
        self.suffix = np.zeros((n, 0))
        self.rows = [[] for _ in range(n)]

    def pending(self, target_err2: float) -> NDArray[np.bool_]:
        return self.err2 > target_err2


def _groups(
    field_cfg: FieldConfig, s: PlanSettings, sky: NDArray
) -> tuple[list[_Group], dict[str, str]]:
    """Heliostats by (drive design, parameters, assigned target); unreachable ones with
    why."""
    targets = [field_cfg.target(t) for t in s.target_ids]
    hs = list(field_cfg.heliostats.values())
    names = {}
    for h in hs:
        try:
            names[h.id] = resolve_names(h.kinematics.drive, s.groups)
        except ValueError as exc:
            raise InputError(f"--groups: {exc}") from None
    # reach share per heliostat and target, batched per drive design
    designs: list[tuple[HeliostatKinematics, list]] = []
    for h in hs:
        k0 = replace(h.kinematics, position_enu_m=(0.0, 0.0, 0.0))
        for k, members in designs:
            if k == k0:
                members.append(h)
                break
        else:
            designs.append((k0, [h]))
    share = {}
    for k0, members in designs:
        pos = np.array([m.position_enu_m for m in members])
        for t in targets:
            r = D.reachable(k0, t.centre_enu_m - pos, sky).mean(axis=1) if len(sky) else 0
            for m, v in zip(members, np.broadcast_to(r, (len(members),)), strict=True):
                share[m.id, t.id] = float(v)
    load = {t.id: 0 for t in targets}
    assigned, unplanned = {}, {}
    for h in hs:
        ok = [t for t in targets if share[h.id, t.id] >= MIN_REACH]
        if not ok:
            unplanned[h.id] = (
                f"reaches none of the targets {', '.join(s.target_ids)} on at least "
                f"{MIN_REACH:.0%} of the sky"
            )
            continue
        best = min(
            ok, key=lambda t: (load[t.id], float(np.linalg.norm(t.centre_enu_m - h.position_enu_m)))
        )
        assigned[h.id] = best.id
        load[best.id] += 1
    groups: list[_Group] = []
    for k0, members in designs:
        for t in targets:
            sel = [m for m in members if assigned.get(m.id) == t.id]
            for nm in dict.fromkeys(names[m.id] for m in sel):
                ms = [m for m in sel if names[m.id] == nm]
                off = np.array([t.centre_enu_m - m.position_enu_m for m in ms])
                groups.append(_Group(k0, nm, t.id, [m.id for m in ms], off))
    return groups, unplanned


def plan_campaign(field_cfg: FieldConfig, s: PlanSettings, field_name: str = "") -> Plan:
    """Plan visits for every heliostat of the field (module docstring).

    Returns
    -------
    Plan
        Visits sorted by start; per heliostat the expected error reached, the condition
        number of its visits and whether it reached the target error; a summary with
        ``days_used`` (days until the last heliostat is done, or None), visit counts.
    """
    for t in s.target_ids:
        if t not in field_cfg.targets:
            raise InputError(
                f"target {t!r} is not in the field (have: {', '.join(field_cfg.targets)})"
            )
    day0 = day0_utc(s.start_date)
    sky = evaluation_sky(field_cfg, day0, s.eval_days or s.days, s.min_elevation_rad)
    groups, unplanned = _groups(field_cfg, s, sky)
    tgt_err2 = s.target_error_mrad**2
    for g in groups:
        g.start(sky)
    per_day = int(round(86400 / s.visit_s))
    per_bin = int(round(s.bin_s / s.visit_s))
    n_bins = per_day // per_bin
    rr_next = {t: 0 for t in s.target_ids}  # round-robin pointer per target
    cap = {t: 0.0 for t in s.target_ids}  # slots owed under capacity_share
    rr_order = {
        t: [(gi, i) for gi, g in enumerate(groups) if g.target_id == t for i in range(len(g.ids))]
        for t in s.target_ids
    }
    visits: list[PlannedVisit] = []
    done_day = None
    table_ok = np.zeros(n_bins, dtype=bool)
    for d in range(s.days):
        if not any(g.pending(tgt_err2).any() for g in groups):
            break
        day = day0 + pd.Timedelta(days=d)
        slots = day + pd.to_timedelta(np.arange(per_day) * s.visit_s, unit="s")
        # sun at every slot's start, middle and end: usable when above the limit throughout
        half = sun_position(
            field_cfg.site,
            day + pd.to_timedelta(np.arange(2 * per_day + 1) * s.visit_s / 2, unit="s"),
        )
        el = half.elevation_rad
        usable = (el[0:-1:2] >= s.min_elevation_rad) & (el[2::2] >= s.min_elevation_rad)
        sp = replace(half, azimuth_rad=half.azimuth_rad[1::2], elevation_rad=el[1::2])
        if d % s.jacobian_every_days == 0:
            centres = day + pd.to_timedelta((np.arange(n_bins) + 0.5) * s.bin_s, unit="s")
            spc = sun_position(field_cfg.site, centres)
            table_ok = spc.elevation_rad >= s.min_elevation_rad - math.radians(10.0)
            for g in groups:
                pend = g.pending(tgt_err2)
                g.jtab = np.full((len(g.ids), n_bins, 2, len(g.names)), np.nan)
                g.gains = np.zeros((len(g.ids), n_bins))
                g.suffix = np.zeros((len(g.ids), n_bins))
                if pend.any() and table_ok.any():
                    g.jtab[np.ix_(pend, table_ok)] = D.pointing_jacobians(
                        g.kin, g.names, g.offsets[pend], spc.u_sun_enu[table_ok]
                    )
                    g.refresh_gains(np.flatnonzero(pend), s.noise_mrad, table_ok)
        bin_ok = table_ok & usable.reshape(n_bins, per_bin).any(axis=1)
        for g in groups:
            g.refresh_suffix(np.arange(len(g.ids)), bin_ok)
        for b in range(n_bins):
            free = np.flatnonzero(usable[b * per_bin : (b + 1) * per_bin]) + b * per_bin
            if free.size == 0 or not table_ok[b]:
                continue
            for t in s.target_ids:
                cap[t] += free.size * s.capacity_share
                m = int(cap[t] + 1e-9)
                cap[t] -= m
                if m == 0:
                    continue
                picks = _pick(groups, t, b, m, s, tgt_err2, rr_order[t], rr_next)
                for slot, (gi, i) in zip(free, picks, strict=False):
                    g = groups[gi]
                    j = g.jtab[i, b]
                    g.cov[i] = D.add_visit(g.cov[i], j, s.noise_mrad)
                    g.err2[i] = D.expected_error_mrad(g.cov[i], g.moment[i]) ** 2
                    g.rows[i].append(j)
                    g.refresh_gains(np.array([i]), s.noise_mrad, bin_ok)
                    visits.append(
                        PlannedVisit(
                            g.ids[i],
                            t,
                            slots[slot],
                            math.degrees(float(sp.azimuth_rad[slot])),
                            math.degrees(float(sp.elevation_rad[slot])),
                        )
                    )
        if done_day is None and not any(g.pending(tgt_err2).any() for g in groups):
            done_day = d + 1
    visits.sort(key=lambda v: (v.start_utc, s.target_ids.index(v.target_id)))
    return _result(field_cfg, s, groups, unplanned, visits, done_day, field_name)


def _pick(groups, t, b, m, s, tgt_err2, order, rr_next) -> list[tuple[int, int]]:
    """Up to ``m`` (group, index) pairs of target ``t`` to visit in bin ``b``."""
    if s.policy == "round-robin":
        out: list[tuple[int, int]] = []
        n = len(order)
        k = rr_next[t]
        for step in range(n):
            if len(out) == m:
                break
            gi, i = order[(k + step) % n]
            g = groups[gi]
            if g.err2[i] > tgt_err2 and np.all(np.isfinite(g.jtab[i, b])):
                out.append((gi, i))
                rr_next[t] = (k + step + 1) % n
        return out
    cand_key, cand_id = [], []
    for gi, g in enumerate(groups):
        if g.target_id != t:
            continue
        j = g.jtab[:, b]
        live = np.flatnonzero(g.pending(tgt_err2) & np.all(np.isfinite(j), axis=(1, 2)))
        if live.size == 0:
            continue
        gain = D.visit_gain(g.cov[live], j[live], g.moment[live], s.noise_mrad)
        # near the most this heliostat could gain at any bin left today (so that everyone
        # is eligible at the latest in the day's last bin: nobody starves)
        worth = gain >= s.worth * g.suffix[live, b]
        cand_key.append(gain[worth] / g.err2[live[worth]])  # share of E² removed
        cand_id.extend((gi, int(i)) for i in live[worth])
    if not cand_id:
        return []
    key = np.concatenate(cand_key)
    top = np.argsort(-key, kind="stable")[:m]
    return [cand_id[k] for k in top if key[k] > 0]


def _result(field_cfg, s, groups, unplanned, visits, done_day, field_name) -> Plan:
    hp: dict[str, HeliostatPlan] = {}
    for g in groups:
        for i, hid in enumerate(g.ids):
            rows = g.rows[i]
            cond = (
                identifiability(np.concatenate(rows), g.names)[0]
                if 2 * len(rows) >= len(g.names)
                else math.inf
            )
            hp[hid] = HeliostatPlan(
                g.target_id,
                g.kin.drive,
                g.names,
                len(rows),
                float(math.sqrt(g.err2[i])),
                float(cond),
                bool(g.err2[i] <= s.target_error_mrad**2),
            )
    for hid, why in unplanned.items():
        h = field_cfg.heliostats[hid]
        hp[hid] = HeliostatPlan("", h.kinematics.drive, (), 0, math.nan, math.inf, False, why)
    hp = {hid: hp[hid] for hid in field_cfg.heliostats}
    n_done = sum(h.done for h in hp.values())
    counts = [h.visits for h in hp.values() if h.visits]
    summary = {
        "heliostats": len(hp),
        "planned": len(hp) - len(unplanned),
        "done": n_done,
        "unreachable": len(unplanned),
        "visits": len(visits),
        "visits_per_heliostat_mean": float(np.mean(counts)) if counts else 0.0,
        "days_used": done_day,
        "last_visit_utc": visits[-1].start_utc.strftime("%Y-%m-%dT%H:%M:%SZ") if visits else None,
        "expected_error_mrad_max": max(
            (h.expected_error_mrad for h in hp.values() if h.visits), default=math.nan
        ),
    }
    return Plan(
        field_name,
        s.policy,
        s.start_date,
        s.days,
        tuple(s.target_ids),
        s.visit_s,
        round(math.degrees(s.min_elevation_rad), 9),
        s.noise_mrad,
        s.target_error_mrad,
        hp,
        tuple(visits),
        summary,
    )
