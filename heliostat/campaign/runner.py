"""The calibration campaign on a plant: the demo's loop with real ports and a camera.

In every time slot the heliostats take turns on the target. A visit:

1. setpoint of the nominal model for the aim point at the current sun
   (:func:`~heliostat.campaign.schedule.on_target_steps`), checked by the bridge's safety
   limits (:func:`firmware_bridge.safety.plan_move`), sent as an absolute MOVE through the
   journaled :class:`~firmware_bridge.delivery.Bridge`;
2. settle: the controller's status is polled until the axes report arrival at the
   setpoint; the reported positions are the observation's motor steps;
3. sun-on frame; then the heliostat moves off the target by the configured joint-angle
   offset, settles, sun-off frame (it stays off, leaving the target to the next one);
4. the spot is measured (registration from the camera config or the target's markers,
   the sun-off frame as dark and flat), and the observation is appended to the history
   at once, keyed by (heliostat, slot); a visit that gives none is recorded with why;
5. when the heliostat has enough, well-spread sun positions, and enough new ones since its
   last fit, it is fitted and the fit stored with its drift against the previous one.

At the end of a run the latest successful fit of each heliostat not yet delivered is
proposed as a parameter set, checked by the safety limits, shown, and sent only after
confirmation (``--yes``, an interactive yes, or ``safety.require_confirmation = false``).

Interrupting a run loses at most the visit in progress: the next run skips every
(heliostat, slot) already in the history and the bridge journal resumes its commands.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from firmware_bridge import registers as R
from firmware_bridge.errors import ActuatorError, ControllerTimeout, PortError, SafetyRefused
from heliostat.campaign.config import PlantConfig
from heliostat.campaign.history import History, ObservationRecord
from heliostat.campaign.schedule import (
    Clock,
    iso_utc,
    off_target_steps,
    on_target_steps,
    slot_key,
    slot_start,
    spread_ok,
)
from heliostat.campaign.sources import CaptureRequest, FrameSource, FrameSourceError
from heliostat.corrections_format import FORMAT as CORRECTIONS_FORMAT
from heliostat.errors import InputError
from heliostat.kinematics.pointing import pointing_change
from heliostat.paths import join_inside
from heliostat.sun import sun_position

#: Status reads tried in a row before a settling heliostat counts as unreachable.
STATUS_ATTEMPTS = 5

Log = Callable[[str], None]
Confirm = Callable[[str], bool]


def _approach(
    before: tuple[int, int] | None, after: tuple[int, int]
) -> tuple[int | None, int | None]:
    """Direction of each axis's move from ``before`` to ``after`` (±1; None where the
    axis did not move or the position before is not known: its gears sit on the side of
    an earlier move)."""
    if before is None:
        return (None, None)
    return tuple(
        None if a == b else (1 if a > b else -1) for b, a in zip(before, after, strict=True)
    )


class VisitSkipped(Exception):
    """A visit that gives no observation: ``outcome`` (a short tag) and the detail."""

    def __init__(self, outcome: str, detail: str) -> None:
        super().__init__(f"{outcome}: {detail}")
        self.outcome, self.detail = outcome, detail


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How one run behaves.

    Attributes
    ----------
    dry_run : bool
        Print the plan; open no port, move nothing, write nothing.
    yes : bool
        Send corrections without asking.
    until_utc : Timestamp, optional
        Stop at this time (default: start + the schedule's duration).
    max_visits : int, optional
        Stop after this many visits (observed or skipped).
    send_corrections : bool
        Propose (and, confirmed, send) corrections at the end of the run.
    run_id : str
    visits : tuple of PlannedVisit, optional
        A plan's visits (``heliostat plan``): instead of taking turns in every slot, each
        heliostat is visited in its planned window (start + the plan's ``visit_s``);
        visits on other targets are left out, a window that has passed is missed.
    visit_s : float
        Length of a planned visit's window. [s]
    """

    dry_run: bool = False
    yes: bool = False
    until_utc: pd.Timestamp | None = None
    max_visits: int | None = None
    send_corrections: bool = True
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    visits: tuple | None = None
    visit_s: float = 180.0


class BusPool:
    """Open links and bridges, one per bus, sharing one journal.

    Parameters
    ----------
    plant : PlantConfig
    link_factory : callable, optional
        ``Bus -> ModbusLink`` (default: :class:`firmware_bridge.transport.ModbusLink` on
        the bus's port and settings).
    sleep : callable
        The bridge's back-off waits.
    """

    def __init__(self, plant: PlantConfig, link_factory=None, sleep=None) -> None:
        from firmware_bridge.journal import Journal

        self.plant = plant
        self.journal = Journal(plant.journal)
        self._factory = link_factory
        self._sleep = sleep
        self._links: dict[str, Any] = {}
        self._bridges: dict[str, Any] = {}

    def bridge(self, bus_name: str):
        from firmware_bridge.delivery import Bridge, RetryPolicy

        if bus_name not in self._bridges:
            bus = self.plant.field.buses[bus_name]
            if self._factory is not None:
                link = self._factory(bus)
            else:
                from firmware_bridge.transport import ModbusLink

                link = ModbusLink(
                    bus.port,
                    baudrate=bus.baudrate,
                    parity=bus.parity,
                    stopbits=bus.stopbits,
                    timeout_s=bus.timeout_s,
                )
            link.open()
            self._links[bus_name] = link
            kw = {"sleep": self._sleep} if self._sleep is not None else {}
            self._bridges[bus_name] = Bridge(link, self.journal, RetryPolicy(), **kw)
        return self._bridges[bus_name]

    def port(self, bus_name: str) -> str:
        return self.plant.field.buses[bus_name].port

    def close(self) -> None:
        for link in self._links.values():
            link.close()
        self._links.clear()
        self._bridges.clear()
        self.journal.close()


def _format_parameters(parameters: dict[str, float]) -> str:
    """``axis1_zero -1.234 mrad, mirror_offset_e +5.0 mm, ...`` for a person to check."""
    out = []
    for name, v in parameters.items():
        if name.endswith("_rad"):
            out.append(f"{name[:-4]} {v * 1e3:+.3f} mrad")
        elif name.endswith("_m"):
            out.append(f"{name[:-2]} {v * 1e3:+.1f} mm")
        else:
            out.append(f"{name} {v:+.4g}")
    return ", ".join(out)


def _steps(v) -> tuple[int, int]:
    return (int(v[0]), int(v[1]))


def next_sun_above(site, t_utc: pd.Timestamp, min_elevation_rad: float, horizon_h: float = 48.0):
    """First time within ``horizon_h`` after ``t_utc`` at which the sun's elevation reaches
    ``min_elevation_rad`` (to the minute), or None (polar night, or never that high)."""
    times = pd.date_range(pd.Timestamp(t_utc).ceil("min"), periods=int(horizon_h * 60), freq="min")
    el = sun_position(site, times).elevation_rad
    above = np.flatnonzero(el >= min_elevation_rad)
    return None if above.size == 0 else times[int(above[0])]


class CampaignRunner:
    """One run of a campaign (see the module docstring).

    Parameters
    ----------
    plant : PlantConfig
    history : History
        Where observations, visits, fits and corrections go (read-only for a dry run).
    source : FrameSource
    clock : Clock
    buses : BusPool or None
        None only for a dry run.
    options : RunOptions
    log : callable
        Progress lines for a person.
    confirm : callable
        ``confirm(question) -> bool``, asked before corrections are sent (unless ``yes``).
    """

    def __init__(
        self,
        plant: PlantConfig,
        history: History,
        source: FrameSource | None,
        clock: Clock,
        buses: BusPool | None,
        options: RunOptions | None = None,
        log: Log = lambda m: None,
        confirm: Confirm = lambda q: False,
    ) -> None:
        options = options or RunOptions()
        if buses is None and not options.dry_run:
            raise ValueError("a campaign run that moves heliostats needs its buses")
        self.plant, self.history, self.source, self.clock = plant, history, source, clock
        self.buses, self.options, self.log, self.confirm = buses, options, log, confirm
        self.aim_enu_m = plant.target.plane_to_enu(np.asarray(plant.schedule.aim_xy_m)[None])[0]
        self._registration = None
        self._flat = None  # the last good flat field (FlatField)
        # the last confirmed setpoint per heliostat in this run: the side each axis's
        # next move comes from (the observations' axis<i>_approach)
        self._last_steps: dict[str, tuple[int, int]] = {}
        self.counts: dict[str, int] = {}

    # ------------------------------------------------------------------ helpers
    def _sun(self, t: pd.Timestamp):
        return sun_position(self.plant.field.site, pd.DatetimeIndex([t]))

    def _count(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    def _move(self, hid: str, steps: tuple[int, int], visit_key: str, phase: str) -> None:
        """Absolute move through the journaled bridge, confirmed by read-back.

        The batch key names the run, the visit and the setpoint: each visit's moves are
        their own batch (a later visit that happens to compute the same setpoint must
        still send it — the heliostat has moved off since).
        """
        from firmware_bridge.safety import plan_move

        h = self.plant.field.heliostats[hid]
        try:
            cmd = plan_move(self.plant.field, hid, steps)
        except SafetyRefused as exc:
            raise VisitSkipped("refused", str(exc)) from None
        key = f"campaign|{visit_key}|{phase}|{steps[0]},{steps[1]}"
        try:
            out = self.buses.bridge(h.bus).run(key, f"campaign {phase}", [cmd])[0]
        except ActuatorError as exc:
            raise VisitSkipped("move_failed", str(exc)) from None
        if out.state != "confirmed":
            raise VisitSkipped("move_failed", f"{out.state}: {out.detail}")
        self._last_steps[hid] = steps

    def _settle(self, hid: str, steps: tuple[int, int]) -> tuple[int, int]:
        """Poll until the controller reports arrival; returns the reported position."""
        h = self.plant.field.heliostats[hid]
        s = self.plant.schedule
        bridge = self.buses.bridge(h.bus)
        waited = 0.0
        moving = R.Flag.AXIS1_MOVING | R.Flag.AXIS2_MOVING
        while True:
            for attempt in range(1, STATUS_ATTEMPTS + 1):
                try:
                    st = bridge.status(h.address)
                    break
                except (ControllerTimeout, PortError) as exc:
                    # a lost or corrupted reply is retried at once (a read changes nothing);
                    # a port fault gets the port reopened (failing that, the run stops)
                    if attempt == STATUS_ATTEMPTS:
                        raise VisitSkipped("unreachable", str(exc)) from None
                    if isinstance(exc, PortError):
                        bridge.link.reopen()
                except ActuatorError as exc:
                    raise VisitSkipped("unreachable", str(exc)) from None
            if st.faults:
                raise VisitSkipped("fault", f"controller {h.address} reports faults {st.faults!r}")
            if tuple(st.target_steps) != steps:
                raise VisitSkipped(
                    "target_changed",
                    f"controller {h.address} now targets {st.target_steps}, expected {steps} "
                    "(watchdog stow or another master?)",
                )
            if tuple(st.position_steps) == steps and not st.flags & moving:
                return _steps(st.position_steps)
            if waited >= s.settle_timeout_s:
                raise VisitSkipped(
                    "settle_timeout",
                    f"{hid} at {st.position_steps}, not at {steps} after {waited:g} s",
                )
            self.clock.sleep(s.poll_s)
            waited += s.poll_s

    def _capture(self, hid: str, phase: str, slot: str) -> tuple[np.ndarray, pd.Timestamp]:
        t = self.clock.now_utc()
        try:
            img = self.source.capture(CaptureRequest(hid, phase, slot, t))
        except FrameSourceError as exc:
            raise VisitSkipped("no_frame", str(exc)) from None
        return img, t

    def _save(self, hid: str, t: pd.Timestamp, on, dark) -> tuple[str, str]:
        d = self.plant.frames_dir
        if d is None:
            return "", ""
        import cv2

        from heliostat.vision.io import dark_path

        on_name = f"{hid}/{t.strftime('%Y%m%dT%H%M%SZ')}.png"
        names = (on_name, dark_path(on_name).as_posix())
        for name, img in zip(names, (on, dark), strict=True):
            p = join_inside(d, name, f"frame of heliostat {hid!r}")
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name("." + p.name)
            if not cv2.imwrite(str(tmp) + ".png", img):
                raise OSError(f"{p}: could not write the frame")
            Path(str(tmp) + ".png").replace(p)
        return names

    def _measure(self, on, dark):
        from heliostat.vision import prepare_flat
        from heliostat.vision.auto import detect_spot_auto
        from heliostat.vision.pipeline import register_for_camera

        cam, tgt = self.plant.camera, self.plant.target
        if self._registration is None:
            try:
                self._registration = register_for_camera(cam, tgt, dark)
            except InputError as exc:
                raise VisitSkipped("no_registration", str(exc)) from None
        reg = self._registration
        # The flat field from this visit's sun-off frame; when it holds a neighbour's
        # spot (or no signal), the last good one.
        try:
            self._flat = flat = prepare_flat(dark, reg, black_level_dn=cam.black_level_dn)
        except InputError:
            flat = self._flat
        try:
            # a dark board: on - off; a sunlit board: the sun-off frame as its empty target
            res = detect_spot_auto(
                on,
                reg,
                dark=dark,
                flat=flat,
                black_level_dn=cam.black_level_dn,
                bit_depth=cam.bit_depth,
                expected_xy_m=self.plant.schedule.aim_xy_m,
                target=tgt,
            )
        except (InputError, ValueError) as exc:
            raise VisitSkipped("no_spot", str(exc)) from None
        if not res.ok:
            raise VisitSkipped("no_spot", "detector: " + ("|".join(res.flags) or "no spot"))
        return res

    # ------------------------------------------------------------------ one visit
    def visit(self, hid: str, slot: str, sun_now=None) -> int | None:
        """Visit one heliostat; returns the observation id (None when skipped).

        ``sun_now``: the sun position at the current clock time, if the caller has it.
        """
        p = self.plant
        t0 = self.clock.now_utc()
        h = p.field.heliostats[hid]
        try:
            sp0 = sun_now if sun_now is not None and sun_now.times[0] == t0 else self._sun(t0)
            u_sun = sp0.u_sun_enu
            on = on_target_steps(h, self.aim_enu_m, u_sun)
            if on is None:
                raise VisitSkipped("unreachable", f"{hid}: no setpoint within the travel")
            off = off_target_steps(h, on, p.schedule.off_target_offset_rad)
            if off is None:
                raise VisitSkipped("no_off_position", f"{hid}: off-target offset leaves the travel")
            on_t, off_t = _steps(on), _steps(off)
            vkey = f"{self.options.run_id}|{hid}|{slot}|{iso_utc(t0)}"
            approach = _approach(self._last_steps.get(hid), on_t)
            self._move(hid, on_t, vkey, "on")
            pos = self._settle(hid, on_t)
            on_img, t_on = self._capture(hid, "on", slot)
            self._move(hid, off_t, vkey, "off")
            self._settle(hid, off_t)
            dark_img, _ = self._capture(hid, "off", slot)
            res = self._measure(on_img, dark_img)
        except VisitSkipped as exc:
            self.history.add_visit(
                hid, slot, iso_utc(t0), exc.outcome, exc.detail, self.options.run_id
            )
            self._count(exc.outcome)
            self.log(f"{slot} {hid}: skipped ({exc.outcome}: {exc.detail})")
            return None
        frame, dark = self._save(hid, t_on, on_img, dark_img)
        sp = self._sun(t_on)
        rec = ObservationRecord(
            hid,
            slot,
            iso_utc(t_on),
            math.degrees(float(sp.azimuth_rad[0])),
            math.degrees(float(sp.elevation_rad[0])),
            pos[0],
            pos[1],
            p.target.id,
            res.x_m,
            res.y_m,
            res.e_m,
            res.n_m,
            res.u_m,
            res.sigma_m,
            "|".join(res.flags),
            frame,
            dark,
            self.options.run_id,
            *approach,
        )
        oid = self.history.add_observation(rec)
        if oid is None:  # the slot was stored meanwhile by another writer: not ours
            self._count("already_stored")
            self.log(f"{slot} {hid}: slot already in the history; this observation not stored")
            return None
        self._count("observed")
        self.log(
            f"{slot} {hid}: spot ({res.x_m:+.3f}, {res.y_m:+.3f}) m at steps {pos}, "
            f"sun az {rec.sun_azimuth_deg:.1f} el {rec.sun_elevation_deg:.1f} deg"
        )
        return oid

    # ------------------------------------------------------------------ fits
    def maybe_fit(self, hid: str) -> int | None:
        """Fit a heliostat when the thresholds are met; returns the fit id or None."""
        from heliostat.calibration.field import Job, run_job
        from heliostat.calibration.fit import resolve_names
        from heliostat.calibration.observations import observations_from_frame
        from heliostat.kinematics import KinematicErrors

        p, fc = self.plant, self.plant.fit
        df = self.history.observations(hid)
        if df.empty:
            return None
        last = self.history.last_fit(hid)
        new = int((df["id"] > (last["last_observation_id"] if last else 0)).sum())
        if last is not None and new < fc.refit_after:
            return None
        if fc.window_s is not None:
            t = pd.to_datetime(df["time_utc"], utc=True, format="ISO8601")
            df = df[t >= t.max() - pd.Timedelta(seconds=fc.window_s)]
        ok, _why = spread_ok(
            np.radians(df["sun_azimuth_deg"].to_numpy(float)),
            np.radians(df["sun_elevation_deg"].to_numpy(float)),
            fc.min_points,
            fc.min_azimuth_spread_rad,
            fc.min_elevation_spread_rad,
        )
        if not ok:
            return None
        h = p.field.heliostats[hid]
        obs, _rejected = observations_from_frame(df, p.field)
        if hid not in obs:
            return None
        # The parameter set is chosen by nested cross-validation unless campaign.toml's
        # [fit] groups fixes it (heliostat.calibration.selection.calibrate_heliostat).
        names = resolve_names(h.kinematics.drive, fc.groups)
        r = run_job(Job(h.kinematics, obs[hid], names, select=fc.groups is None))
        prev = self.history.last_fit(hid, success_only=True)
        change = None
        if prev is not None and r.success:
            e_prev = KinematicErrors.from_dict(prev["drive"], prev["parameters"])
            pc = pointing_change(h.kinematics, e_prev, r.errors, self.aim_enu_m)
            change = (pc.beam_rms_mrad, pc.beam_max_mrad)
        fid = self.history.add_fit(
            r,
            iso_utc(self.clock.now_utc()),
            int(df["id"].max()),
            prev["id"] if prev else None,
            change,
            str(p.field_path),
            self.options.run_id,
        )
        self._count("fits")
        if r.success:
            drift = f", drift {change[0]:.2f} mrad rms" if change else ""
            self.log(
                f"fit {hid}: {r.n_points} points, rms {r.rms_before_mrad:.2f} -> "
                f"{r.rms_after_mrad:.2f} mrad, loo {r.loo_rms_mrad:.2f}{drift}"
            )
            if r.selection is not None:
                self.log(f"    parameters: {r.selection['reason']}")
        else:
            self.log(f"fit {hid}: failed ({r.reason})")
        return fid

    # ------------------------------------------------------------------ plan / run
    def plan(self) -> dict[str, Any]:
        """What the next slot would do (dry run): setpoints, nothing sent."""
        p = self.plant
        now = self.clock.now_utc()
        slot = slot_key(now, p.schedule.slot_s)
        sp = self._sun(now)
        el = float(sp.elevation_rad[0])
        done = self.history.done_keys(self.options.run_id)
        rows = []
        for hid in p.schedule.heliostats:
            h = p.field.heliostats[hid]
            row: dict[str, Any] = {"heliostat": hid, "bus": h.bus, "address": h.address}
            if (hid, slot) in done:
                row["action"] = "done in this slot"
            elif el < p.schedule.min_elevation_rad:
                row["action"] = "sun too low"
            else:
                on = on_target_steps(h, self.aim_enu_m, sp.u_sun_enu)
                off = (
                    off_target_steps(h, on, p.schedule.off_target_offset_rad)
                    if on is not None
                    else None
                )
                if on is None or off is None:
                    row["action"] = "unreachable"
                else:
                    row.update(action="visit", on_steps=_steps(on), off_steps=_steps(off))
            rows.append(row)
        out: dict[str, Any] = {}
        if self.options.visits is not None:
            window = pd.Timedelta(seconds=self.options.visit_s)
            nxt = [
                v
                for v in self._planned()
                if v.start_utc + window > now and (v.heliostat_id, iso_utc(v.start_utc)) not in done
            ][:10]
            out["next_planned"] = [
                {"heliostat": v.heliostat_id, "start_utc": iso_utc(v.start_utc)} for v in nxt
            ]
        out.update({
            "dry_run": True,
            "time_utc": iso_utc(now),
            "slot_utc": slot,
            "sun_azimuth_deg": math.degrees(float(sp.azimuth_rad[0])),
            "sun_elevation_deg": math.degrees(el),
            "visits": rows,
            "history_db": str(p.history_db),
        })  # fmt: skip
        if self.options.visits is None and not any(r["action"] == "visit" for r in rows):
            out["idle_reason"] = self._idle_reason(now, None, el, rows)
        return out

    def _idle_reason(self, start, end, el_rad: float, rows=None) -> str:
        """Why a plan (``end`` None) holds no visit or a run made none: one sentence for
        a person. ``el_rad``: the sun's elevation at the plan's time or the run's end."""
        p, s = self.plant, self.plant.schedule
        if not s.heliostats:
            return "no heliostats are scheduled ([schedule] heliostats is empty)"
        plan = end is None
        end = start if plan else end
        if not plan and end <= start:
            return f"the end time {iso_utc(end)} is not after the start {iso_utc(start)}"
        min_deg = math.degrees(s.min_elevation_rad)
        if el_rad < s.min_elevation_rad:
            nxt = next_sun_above(p.field.site, end, s.min_elevation_rad)
            when = (
                f"it next reaches {min_deg:.0f} deg at {iso_utc(nxt)}"
                if nxt is not None
                else f"it does not reach {min_deg:.0f} deg within 48 h"
            )
            if plan:
                return (
                    f"the sun is below the minimum elevation {min_deg:.0f} deg "
                    f"([schedule] min_elevation_deg) at {iso_utc(end)}; {when}"
                )
            return (
                f"the sun stayed below the minimum elevation {min_deg:.0f} deg "
                f"([schedule] min_elevation_deg) from {iso_utc(start)} to {iso_utc(end)}; {when}"
            )
        actions = sorted({r["action"] for r in rows or []})
        if actions == ["done in this slot"]:
            return (
                "every scheduled heliostat is already observed in this slot "
                f"(history {p.history_db}); the next slot starts "
                f"{iso_utc(slot_start(end, s.slot_s) + pd.Timedelta(seconds=s.slot_s))}"
            )
        if actions == ["unreachable"]:
            return (
                "no scheduled heliostat can put the beam on the target at this sun "
                "position within its travel"
            )
        return "nothing to do: " + ", ".join(actions) if actions else "nothing to do"

    def run(self) -> dict[str, Any]:
        """Visit, observe and fit until the end time (or ``max_visits``); then propose
        corrections. Returns a summary."""
        if self.options.dry_run:
            return self.plan()
        p, s = self.plant, self.plant.schedule
        start = self.clock.now_utc()
        end = self.options.until_utc or start + pd.Timedelta(seconds=s.duration_s)
        visits = 0
        waits: dict[str, int] = {}  # why slots were passed over (sun low, all done)
        last_why = ""
        last_el = float(self._sun(start).elevation_rad[0])
        if self.options.visits is not None:
            visits = self._run_planned(end)
        while self.options.visits is None:
            now = self.clock.now_utc()
            if now >= end:
                break
            if self.options.max_visits is not None and visits >= self.options.max_visits:
                break
            slot = slot_key(now, s.slot_s)
            next_slot = slot_start(now, s.slot_s) + pd.Timedelta(seconds=s.slot_s)
            sun_now = self._sun(now)
            el = last_el = float(sun_now.elevation_rad[0])
            done = (
                self.history.done_keys(self.options.run_id) if el >= s.min_elevation_rad else set()
            )
            pending = [h for h in s.heliostats if (h, slot) not in done]
            if el < s.min_elevation_rad or not pending:
                why = "sun_low" if el < s.min_elevation_rad else "slot_done"
                until = min(next_slot, end)
                if why != last_why or why == "slot_done":
                    what = (
                        f"sun at {math.degrees(el):.1f} deg, below the minimum "
                        f"{math.degrees(s.min_elevation_rad):.0f} deg"
                        if why == "sun_low"
                        else "every scheduled heliostat observed in this slot"
                    )
                    self.log(f"{slot}: {what}; waiting until {iso_utc(until)}")
                waits[why] = waits.get(why, 0) + 1
                last_why = why
                self.clock.sleep((until - now).total_seconds())
                continue
            last_why = ""
            hid = pending[0]
            self.visit(hid, slot, sun_now)
            visits += 1
            self.maybe_fit(hid)
        summary: dict[str, Any] = {
            "run_id": self.options.run_id,
            "start_utc": iso_utc(start),
            "end_utc": iso_utc(self.clock.now_utc()),
            "visits": visits,
            "outcomes": dict(self.counts),
            "history_db": str(p.history_db),
        }
        if visits == 0:
            rows = [{"action": "done in this slot"}] if waits.get("slot_done") else None
            summary["idle_reason"] = self._idle_reason(start, end, last_el, rows)
        if self.options.send_corrections:
            summary["corrections"] = self.corrections()
        return summary

    def _planned(self) -> list:
        """The plan's visits on this plant's target, of the scheduled heliostats."""
        p = self.plant
        keep = set(p.schedule.heliostats)
        return [
            v for v in self.options.visits if v.target_id == p.target.id and v.heliostat_id in keep
        ]

    def _run_planned(self, end: pd.Timestamp) -> int:
        """Visit each planned heliostat in its window; returns the number of visits."""
        s = self.plant.schedule
        window = pd.Timedelta(seconds=self.options.visit_s)
        done = self.history.done_keys(self.options.run_id)
        visits = 0
        for v in self._planned():
            now = self.clock.now_utc()
            if now >= end or (
                self.options.max_visits is not None and visits >= self.options.max_visits
            ):
                break
            key = iso_utc(v.start_utc)
            if (v.heliostat_id, key) in done:
                continue
            if v.start_utc + window <= now:
                self._count("missed")
                continue
            if v.start_utc > now:
                if v.start_utc >= end:
                    break
                self.clock.sleep((v.start_utc - now).total_seconds())
                now = self.clock.now_utc()
            sun_now = self._sun(now)
            if float(sun_now.elevation_rad[0]) < s.min_elevation_rad:
                self._count("sun_low")
                continue
            self.visit(v.heliostat_id, key, sun_now)
            visits += 1
            self.maybe_fit(v.heliostat_id)
        return visits

    # ------------------------------------------------------------------ corrections
    def pending_corrections(self) -> list[dict[str, Any]]:
        """Latest successful fit per heliostat whose parameters were not sent yet."""
        out = []
        done = {
            c["fit_id"]: c["state"]
            for c in self.history.corrections()
            if c["state"] in ("sent", "refused")
        }
        sent_params = {
            c["heliostat_id"]: c["parameters"]
            for c in self.history.corrections()
            if c["state"] == "sent"
        }
        for hid in self.plant.schedule.heliostats:
            f = self.history.last_fit(hid, success_only=True)
            if f is None or f["id"] in done or sent_params.get(hid) == f["parameters"]:
                continue
            out.append(f)
        return out

    def corrections(self) -> dict[str, Any]:
        """Propose, check, show and (confirmed) send the pending parameter sets."""
        from firmware_bridge.safety import plan_corrections

        p = self.plant
        now = iso_utc(self.clock.now_utc())
        fits = self.pending_corrections()
        result: dict[str, Any] = {"proposed": [], "refused": {}, "sent": {}, "declined": []}
        if not fits:
            return result
        plans = []
        for f in fits:
            hid = f["heliostat_id"]
            cid = self.history.propose(f["id"], hid, now)
            entry = {
                "heliostat": hid,
                "drive": f["drive"],
                "parameters": f["parameters"],
                "setpoints": [],
            }
            doc = {"format": CORRECTIONS_FORMAT, "heliostats": [entry]}
            try:
                cmds = plan_corrections(p.field, doc, params=True, setpoints="none")
            except SafetyRefused as exc:
                self.history.set_correction(cid, "refused", now, str(exc))
                result["refused"][hid] = str(exc)
                self.log(f"correction {hid}: refused by the safety limits: {exc}")
                continue
            plans.append((cid, f, cmds))
        for _cid, f, _ in plans:
            line = (
                f"correction {f['heliostat_id']}: fit {f['id']} of {f['n_points']} points, "
                f"rms {f['rms_before_mrad']:.2f} -> {f['rms_after_mrad']:.2f} mrad"
            )
            if f["loo_rms_mrad"] is not None:
                line += f", loo {f['loo_rms_mrad']:.2f} mrad"
            self.log(line)
            self.log("    " + _format_parameters(f["parameters"]))
            result["proposed"].append(f["heliostat_id"])
        if not plans:
            return result
        question = f"Send {len(plans)} parameter set(s) to the controllers?"
        ok = (
            self.options.yes
            or not p.field.safety.require_confirmation
            or bool(self.confirm(question))
        )
        if not ok:
            for cid, f, _ in plans:
                self.history.set_correction(cid, "declined", now, "not confirmed (pass --yes)")
                result["declined"].append(f["heliostat_id"])
            self.log(f"{len(plans)} correction(s) not sent: not confirmed (pass --yes to send)")
            return result
        by_bus: dict[str, list] = {}
        for cid, f, cmds in plans:
            self.history.set_correction(cid, "approved", now)
            bus = p.field.heliostats[f["heliostat_id"]].bus
            by_bus.setdefault(bus, []).append((cid, f, cmds))
        self._deliver(by_bus, now, result)
        return result

    def _deliver(self, by_bus: dict[str, list], now: str, result: dict[str, Any]) -> None:
        """Send the approved parameter sets, every bus at once (one thread per bus,
        :func:`firmware_bridge.fleet.deliver_buses`), and record each outcome; a bus
        that fails marks its own corrections failed, never the other buses'."""
        import contextlib

        from firmware_bridge.fleet import BusJob, deliver_buses

        jobs, owners = [], {}
        for bus, items in by_bus.items():
            owners[bus] = {c.heliostat: cid for cid, _, cs in items for c in cs}
            try:
                bridge = self.buses.bridge(bus)  # opened here, used by the bus's thread
            except ActuatorError as exc:
                self._failed(items, now, str(exc), result)
                self.log(f"bus {bus}: not opened, {len(items)} correction(s) failed: {exc}")
                continue
            jobs.append(
                BusJob(
                    bus,
                    self.buses.port(bus),
                    f"campaign-params|{bus}|" + ",".join(str(f["id"]) for _, f, _ in items),
                    "campaign corrections",
                    tuple(c for _, _, cs in items for c in cs),
                    lambda b=bridge: contextlib.nullcontext(b),
                )
            )
        for r in deliver_buses(jobs):
            for o in r.outcomes:
                cid = owners[r.bus][o.heliostat]
                self.history.add_delivery(cid, now, self.buses.port(r.bus), o)
                state = "sent" if o.state == "confirmed" else "failed"
                self.history.set_correction(cid, state, now, o.detail)
                result["sent"][o.heliostat] = o.state
                self.log(f"correction {o.heliostat}: {o.state} {o.detail}".rstrip())
            tally = ", ".join(f"{v} {k}" for k, v in sorted(r.counts.items())) or "nothing sent"
            self.log(f"bus {r.bus} ({r.port}): {tally} in {r.elapsed_s:.1f} s")
            if r.error:
                ended = {o.heliostat for o in r.outcomes}
                left = [it for it in by_bus[r.bus] if it[1]["heliostat_id"] not in ended]
                self._failed(left, now, r.error, result)
                self.log(f"bus {r.bus} ({r.port}): stopped: {r.error}")

    def _failed(self, items: list, now: str, why: str, result: dict[str, Any]) -> None:
        """Mark corrections failed (their bus stopped before they were delivered)."""
        for cid, f, _ in items:
            self.history.set_correction(cid, "failed", now, why)
            result["sent"][f["heliostat_id"]] = "failed"


def run_campaign(
    plant: PlantConfig,
    *,
    clock: Clock,
    source: FrameSource | None = None,
    options: RunOptions | None = None,
    log: Log = lambda m: None,
    confirm: Confirm = lambda q: False,
    link_factory=None,
) -> dict[str, Any]:
    """Open the history, buses and camera a plant config names, run, close everything.

    A dry run opens the history read-only (when it exists) and neither ports nor camera.
    Otherwise every bus of the scheduled heliostats and the camera are opened first, so
    that a wrong port or a missing camera stops the run at once with its error.
    """
    options = options or RunOptions()
    if options.dry_run:
        if Path(plant.history_db).exists():
            hist = History(plant.history_db, readonly=True)
        else:
            hist = History(":memory:")
        try:
            return CampaignRunner(plant, hist, None, clock, None, options, log, confirm).run()
        finally:
            hist.close()
    from heliostat.campaign.lock import PlantLock
    from heliostat.campaign.sources import open_source

    lock = PlantLock(plant.history_db).acquire()  # refused while another run holds it
    try:
        hist = History(plant.history_db)
    except BaseException:
        lock.release()
        raise
    buses = None
    own_source = source is None
    try:
        buses = BusPool(plant, link_factory)
        for bus in dict.fromkeys(plant.field.heliostats[h].bus for h in plant.schedule.heliostats):
            buses.bridge(bus)  # opens the port: PortError now rather than at every visit
        if source is None:
            size = (plant.camera.width_px, plant.camera.height_px)
            source = open_source(plant.source, clock, log, size)  # stale frames are logged
            if hasattr(source, "open"):
                source.open()
        return CampaignRunner(plant, hist, source, clock, buses, options, log, confirm).run()
    finally:
        if own_source and source is not None:
            source.close()
        if buses is not None:
            buses.close()
        hist.close()
        lock.release()
