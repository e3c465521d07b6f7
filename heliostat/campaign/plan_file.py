"""The campaign plan file (``plan.json``): which heliostat visits which target when.

Written by ``heliostat plan`` (:mod:`heliostat.campaign.plan`), read by ``heliostat
campaign --plan`` and ``heliostat sim campaign --plan``. One JSON document::

    {
      "format": "heliostat-plan/1",
      "field": "field.toml", "policy": "design", "start_date": "2025-04-01", "days": 3,
      "targets": ["cal1"], "visit_s": 180.0, "min_elevation_deg": 15.0,
      "noise_mrad": 0.2, "target_error_mrad": 0.15,
      "heliostats": {"H001": {"target": "cal1", "drive": "azel", "parameters": [...],
                              "visits": 9, "expected_error_mrad": 0.14,
                              "condition": 41.0, "done": true, "reason": ""}},
      "visits": [{"heliostat": "H001", "target": "cal1", "start_utc": "2025-04-01T05:03:00Z",
                  "sun_azimuth_deg": 81.2, "sun_elevation_deg": 15.4}, ...],
      "summary": {...}
    }

A visit occupies its target from ``start_utc`` for ``visit_s`` seconds. Visits are sorted
by start time; no two visits share a target and overlap, and no heliostat is in two places
at once (checked on reading).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from heliostat.errors import InputError
from heliostat.sun import utc_time

#: Schema tag of a plan file.
PLAN_FORMAT = "heliostat-plan/1"


@dataclass(frozen=True, slots=True)
class PlannedVisit:
    """One visit of a plan.

    Attributes
    ----------
    heliostat_id, target_id : str
    start_utc : pandas.Timestamp
        Timezone-aware UTC start; the visit holds the target for the plan's ``visit_s``.
    sun_azimuth_deg, sun_elevation_deg : float
        Sun at the middle of the visit (for a person reading the plan). [deg]
    """

    heliostat_id: str
    target_id: str
    start_utc: pd.Timestamp
    sun_azimuth_deg: float
    sun_elevation_deg: float


@dataclass(frozen=True, slots=True)
class HeliostatPlan:
    """What the plan expects of one heliostat.

    Attributes
    ----------
    target_id, drive : str
    parameters : tuple of str
        The parameter set the design makes identifiable.
    visits : int
    expected_error_mrad : float
        E of :mod:`heliostat.campaign.design` after the planned visits. [mrad]
    condition : float
        Condition number of the visits' column-normalised Jacobian (inf: not identifiable).
    done : bool
        E reached the plan's target error within the plan's days.
    reason : str
        Why a heliostat is not planned (unreachable), else empty.
    """

    target_id: str
    drive: str
    parameters: tuple[str, ...]
    visits: int
    expected_error_mrad: float
    condition: float
    done: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Plan:
    """A campaign plan (see the module docstring for the fields)."""

    field: str
    policy: str
    start_date: str
    days: int
    targets: tuple[str, ...]
    visit_s: float
    min_elevation_deg: float
    noise_mrad: float
    target_error_mrad: float
    heliostats: dict[str, HeliostatPlan]
    visits: tuple[PlannedVisit, ...]
    summary: dict[str, Any] = field(default_factory=dict)

    def schedule_frame(self, target_id: str | None = None) -> pd.DataFrame:
        """Visits as a frame with ``heliostat_id``, ``target_id`` and ``time_utc`` (the
        visit's start), sorted by time; only ``target_id``'s when given."""
        v = [x for x in self.visits if target_id is None or x.target_id == target_id]
        return pd.DataFrame(
            {
                "heliostat_id": [x.heliostat_id for x in v],
                "target_id": [x.target_id for x in v],
                "time_utc": pd.DatetimeIndex([x.start_utc for x in v], tz="UTC"),
            }
        )


def _iso(t: pd.Timestamp) -> str:
    return pd.Timestamp(t).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def _num(v: float) -> float | None:
    return None if not math.isfinite(v) else round(float(v), 6)


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """The plan as the JSON document of the module docstring."""
    return {
        "format": PLAN_FORMAT,
        "field": plan.field,
        "policy": plan.policy,
        "start_date": plan.start_date,
        "days": plan.days,
        "targets": list(plan.targets),
        "visit_s": plan.visit_s,
        "min_elevation_deg": plan.min_elevation_deg,
        "noise_mrad": plan.noise_mrad,
        "target_error_mrad": plan.target_error_mrad,
        "heliostats": {
            hid: {
                "target": h.target_id,
                "drive": h.drive,
                "parameters": list(h.parameters),
                "visits": h.visits,
                "expected_error_mrad": _num(h.expected_error_mrad),
                "condition": _num(h.condition),
                "done": h.done,
                "reason": h.reason,
            }
            for hid, h in plan.heliostats.items()
        },
        "visits": [
            {
                "heliostat": v.heliostat_id,
                "target": v.target_id,
                "start_utc": _iso(v.start_utc),
                "sun_azimuth_deg": round(v.sun_azimuth_deg, 3),
                "sun_elevation_deg": round(v.sun_elevation_deg, 3),
            }
            for v in plan.visits
        ],
        "summary": plan.summary,
    }


def write_plan(plan: Plan, path: str | Path) -> None:
    """Write ``plan.json`` (via a temporary file, so a reader never sees half a plan)."""
    p = Path(path)
    tmp = p.with_name("." + p.name + ".tmp")
    tmp.write_text(json.dumps(plan_to_dict(plan), indent=1) + "\n", encoding="utf-8")
    tmp.replace(p)


def _req(d: dict, key: str, kind, where: str):
    if key not in d:
        raise InputError(f"{where}: missing key '{key}'")
    v = d[key]
    ok = (
        isinstance(v, kind) and not isinstance(v, bool) if kind is not bool else isinstance(v, bool)
    )
    if not ok:
        raise InputError(
            f"{where}: key '{key}': expected {getattr(kind, '__name__', kind)}, got {v!r}"
        )
    return v


def _float(d: dict, key: str, where: str) -> float:
    v = d.get(key)
    if v is None:
        if key in d:
            return math.nan
        raise InputError(f"{where}: missing key '{key}'")
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise InputError(f"{where}: key '{key}': expected a number, got {v!r}")
    return float(v)


def _time(text: Any, where: str) -> pd.Timestamp:
    if not isinstance(text, str):
        raise InputError(f"{where}: expected an ISO 8601 UTC time, got {text!r}")
    return utc_time(text, where)


def plan_from_dict(doc: Any, source: str = "plan") -> Plan:
    """Validate a plan document; errors name ``source`` and the key or visit."""
    if not isinstance(doc, dict):
        raise InputError(f"{source}: expected a JSON object")
    if doc.get("format") != PLAN_FORMAT:
        raise InputError(
            f"{source}: key 'format': expected {PLAN_FORMAT!r}, got {doc.get('format')!r}"
        )
    targets = _req(doc, "targets", list, source)
    visit_s = _float(doc, "visit_s", source)
    if not visit_s > 0:
        raise InputError(f"{source}: key 'visit_s': expected a positive duration, got {visit_s}")
    hs: dict[str, HeliostatPlan] = {}
    for hid, h in _req(doc, "heliostats", dict, source).items():
        w = f"{source}: heliostats.{hid}"
        if not isinstance(h, dict):
            raise InputError(f"{w}: expected an object")
        hs[hid] = HeliostatPlan(
            _req(h, "target", str, w),
            _req(h, "drive", str, w),
            tuple(_req(h, "parameters", list, w)),
            _req(h, "visits", int, w),
            _float(h, "expected_error_mrad", w),
            _float(h, "condition", w),
            _req(h, "done", bool, w),
            h.get("reason", "") or "",
        )
    visits = []
    for i, v in enumerate(_req(doc, "visits", list, source)):
        w = f"{source}: visits[{i}]"
        if not isinstance(v, dict):
            raise InputError(f"{w}: expected an object")
        tid = _req(v, "target", str, w)
        if tid not in targets:
            raise InputError(f"{w}: target {tid!r} is not among the plan's targets {targets}")
        visits.append(
            PlannedVisit(
                _req(v, "heliostat", str, w),
                tid,
                _time(v.get("start_utc"), f"{w}: key 'start_utc'"),
                _float(v, "sun_azimuth_deg", w),
                _float(v, "sun_elevation_deg", w),
            )
        )
    check_occupancy(visits, visit_s, source)
    return Plan(
        _req(doc, "field", str, source),
        _req(doc, "policy", str, source),
        _req(doc, "start_date", str, source),
        _req(doc, "days", int, source),
        tuple(targets),
        visit_s,
        _float(doc, "min_elevation_deg", source),
        _float(doc, "noise_mrad", source),
        _float(doc, "target_error_mrad", source),
        hs,
        tuple(visits),
        doc.get("summary", {}) or {},
    )


def check_occupancy(visits, visit_s: float, source: str = "plan") -> None:
    """Refuse visits out of time order, two overlapping visits on one target, or one
    heliostat in two overlapping visits.

    Raises
    ------
    InputError
        Naming the two visits (by index) that clash.
    """
    dur = pd.Timedelta(seconds=visit_s)
    last_target: dict[str, tuple[int, pd.Timestamp]] = {}
    last_heliostat: dict[str, tuple[int, pd.Timestamp]] = {}
    prev = None
    for i, v in enumerate(visits):
        if prev is not None and v.start_utc < prev:
            raise InputError(f"{source}: visits[{i}] starts before visits[{i - 1}] (not sorted)")
        prev = v.start_utc
        for book, key, what in (
            (last_target, v.target_id, "target"),
            (last_heliostat, v.heliostat_id, "heliostat"),
        ):
            if key in book and v.start_utc < book[key][1] + dur:
                raise InputError(
                    f"{source}: visits[{i}] and visits[{book[key][0]}] hold {what} {key!r} "
                    f"at the same time (a visit lasts {visit_s:g} s)"
                )
            book[key] = (i, v.start_utc)


def load_plan(path: str | Path) -> Plan:
    """Read and validate ``plan.json``.

    Raises
    ------
    InputError
        Naming the file and the key or visit that is wrong.
    """
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{p}: cannot read the plan: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{p}: not JSON (line {exc.lineno}: {exc.msg})") from None
    return plan_from_dict(doc, str(p))


def check_plan_field(plan: Plan, heliostat_ids, target_ids, source: str = "plan") -> None:
    """Refuse a plan naming heliostats or targets the field does not have."""
    hs, ts = set(heliostat_ids), set(target_ids)
    for i, v in enumerate(plan.visits):
        if v.heliostat_id not in hs:
            raise InputError(
                f"{source}: visits[{i}]: heliostat {v.heliostat_id!r} is not in the field"
            )
        if v.target_id not in ts:
            raise InputError(f"{source}: visits[{i}]: target {v.target_id!r} is not in the field")
