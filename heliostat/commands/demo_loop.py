"""The demo's closed loop after the campaign: detection → calibration → delivery →
verification → ledger → report.

Each stage is ``fn(ctx) -> dict`` (see :mod:`heliostat.commands.demo`). The compute of the
stages that would run on a plant (vision, calibration, bridge) is metered with the
ledger's :class:`~heliostat.ledger.EnergyMeter`; everything the simulator does stands in
for the physical world and is not charged.

Verification is honest about what "after" means: on a held-out day the heliostats are
commanded with the fitted model, and "before" with the nominal model, at the same times;
both are scored through the *true* model (integer steps). At the day's highest sun the
fitted setpoints also go through the Modbus bridge to the emulated controllers, whose axes
move (with the world's backlash when the simulator draws it, else their own), and the
physical axis positions are scored the same way ("as delivered"). The emulated
controllers' own CPU time is not charged to the plant.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from heliostat.commands._common import id_sort_key
from heliostat.progress import Progress

#: Sun elevation below which the held-out verification skips a time. [deg]
VERIFY_MIN_ELEVATION_DEG = 15.0


def _thread_cpu_s(native_id: int) -> float:
    """CPU time (user + system) a thread of this process has used. [s]"""
    try:
        fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _emulator_cpu_s(ctx) -> float:
    """CPU time used so far by the emulated controllers' threads (the simulator's, not the
    plant's: it is taken out of the metered blocks). [s]"""
    emu = ctx.state.get("emulators")
    if not emu:
        return 0.0
    return sum(
        _thread_cpu_s(eb._thread.native_id) for eb in emu[1].values() if eb._thread is not None
    )


@contextmanager
def _metered(ctx, stage: str, method: str = "classical", **kw):
    """Meter a block's compute energy and keep it as a ledger entry in ``ctx.state``.

    The emulated controllers serve their buses from threads of this process; with the
    CPU-time model their CPU time is subtracted (it stands in for the controllers'
    firmware, not for plant computing). RAPL counts the whole socket and cannot split it.
    """
    from dataclasses import replace

    from heliostat.ledger import EnergyMeter
    from heliostat.ledger.book import LedgerEntry

    meter = ctx.state.get("_meter")
    if meter is None:
        meter = ctx.state["_meter"] = EnergyMeter(poll_interval_s=None)
    emu0 = _emulator_cpu_s(ctx)
    with meter:
        yield
    emu_s = _emulator_cpu_s(ctx) - emu0
    entry = LedgerEntry.from_measurement(meter.measurement, stage, method, **kw)
    if emu_s > 0 and entry.source == "cpu-model":
        emu_j = min(meter.cpu_model.energy_j(emu_s, 0.0, 0.0)[0], entry.cpu_j)
        entry = replace(
            entry,
            energy_j=entry.energy_j - emu_j,
            cpu_j=entry.cpu_j - emu_j,
            note=f"{entry.note}; emulated controllers' {emu_s:.3f} s CPU excluded".lstrip("; "),
        )
    ctx.state.setdefault("ledger_entries", []).append(entry)
    ctx.state.setdefault("energy_j", {})[stage] = (
        ctx.state.get("energy_j", {}).get(stage, 0.0) + entry.energy_j
    )


def _target(ctx):
    from sim.campaign import pick_target

    return pick_target(ctx.state["field"])


# --------------------------------------------------------------------------- detect
def stage_detect(ctx) -> dict[str, Any]:
    """Find the spot in every campaign frame; measured spots replace simulated ones."""
    from heliostat.vision.io import load_image
    from heliostat.vision.pipeline import detect_campaign

    cdir: Path = ctx.state["campaign_dir"]
    frames = ctx.state["observations"]["frame"].fillna("").astype(str).str.len() > 0
    if not frames.any():
        ctx.state["example_frames"] = []
        return {"frames": 0, "detected": 0, "failed": 0, "note": "campaign made no frames"}
    from heliostat.vision.methods import first_use_note

    note = first_use_note("classical")
    # The first frame carries the one-time start-up (imports, target registration,
    # loading or compiling kernels): its share of the stage's CPU time is kept apart, so
    # the ledger scales only the per-frame part to image-free observations.
    cpu_first: list[float] = []
    with _metered(ctx, "vision"), Progress("detect", first_note=note) as progress:
        cpu0 = time.process_time()

        def tick(done: int, total: int) -> None:
            if not cpu_first:
                cpu_first.append(time.process_time() - cpu0)
            progress(done, total)

        df, outcomes = detect_campaign(cdir, progress=tick)
        cpu_all = time.process_time() - cpu0
    ctx.state["vision_first_frame_share"] = (
        min(1.0, cpu_first[0] / cpu_all) if cpu_first and cpu_all > 0 else None
    )
    out = ctx.out / "detect"
    out.mkdir(exist_ok=True)
    df.to_csv(out / "observations.csv", index=False)
    framed = df["frame"].fillna("").astype(str).str.len() > 0
    d = df[framed]
    err_m = np.hypot(d["spot_x_m"] - d["true_spot_x_m"], d["spot_y_m"] - d["true_spot_y_m"])
    ok = np.isfinite(err_m.to_numpy())
    ctx.state["observations"] = df
    examples = []
    camera = ctx.state["camera"]
    tgt = _target(ctx)
    for o in outcomes[:2]:
        if o.result is None or not o.result.ok:
            continue
        # the pipeline reports each frame as <campaign folder>/<frame column>
        rel = Path(os.path.relpath(o.path, cdir)).as_posix()
        img = load_image(o.path)
        row = d[d["frame"] == rel]
        truth_uv = None
        if len(row):
            xy = row[["true_spot_x_m", "true_spot_y_m"]].to_numpy(float)[0]
            truth_uv = camera.project(tgt.plane_to_enu(xy))[0]
        examples.append((img, (o.result.u_px, o.result.v_px), truth_uv, rel))
    ctx.state["example_frames"] = examples
    res: dict[str, Any] = {
        "frames": int(framed.sum()),
        "detected": int(ok.sum()),
        "failed": int((~ok).sum()),
        "energy_j": round(ctx.state["energy_j"]["vision"], 3),
    }
    if ok.any():
        e_mm = err_m.to_numpy()[ok] * 1e3
        res["spot_error_mm_median"] = round(float(np.median(e_mm)), 2)
        res["spot_error_mm_max"] = round(float(np.max(e_mm)), 2)
    return res


# --------------------------------------------------------------------------- calibrate
def stage_calibrate(ctx) -> dict[str, Any]:
    """Fit every heliostat's error model; write the corrections file."""
    from heliostat.calibration.corrections import (
        corrections_document,
        heliostat_entry,
        write_corrections,
    )
    from heliostat.calibration.field import calibrate_field, make_jobs, too_few_to_choose
    from heliostat.calibration.observations import observations_from_frame

    field_cfg = ctx.state["field"]
    with _metered(ctx, "calibration"):
        obs, rejected = observations_from_frame(ctx.state["observations"], field_cfg)
        # Each heliostat's parameter set chosen by nested cross-validation
        # (heliostat.calibration.selection.calibrate_heliostat, as `heliostat calibrate`).
        kins = {h: x.kinematics for h, x in field_cfg.heliostats.items()}
        # as `heliostat calibrate`: too few records to choose a set are a failed fit
        # that says so, not a one-parameter guess
        jobs, few = [], {}
        for job in make_jobs(kins, obs, select=True):
            r = too_few_to_choose(job)
            if r is None:
                jobs.append(job)
            else:
                few[job.observations.heliostat_id] = r
        # Sequential: the meter charges this process's CPU time; `heliostat calibrate
        # --workers` runs big fields in parallel.
        with Progress("fits") as progress:
            fits = {**calibrate_field(jobs, backend="sequential", progress=progress), **few}
    ok = {h: r for h, r in fits.items() if r.success}
    # for the report's per-heliostat table: every fit kept (failed ones too) and the sun
    # directions each heliostat was seen at
    ctx.state.update(fit_results=dict(fits), sun_enu={h: o.u_sun_enu for h, o in obs.items()})
    out = ctx.out / "calibrate"
    out.mkdir(exist_ok=True)
    doc = corrections_document(
        [heliostat_entry(r) for r in ok.values()], str(ctx.state["campaign_dir"] / "field.toml")
    )
    write_corrections(out / "corrections.json", doc)
    ctx.state.update(fits=ok, corrections=doc, all_fits=dict(fits))

    def med(key: str) -> float:
        v = [getattr(r, key) for r in ok.values() if math.isfinite(getattr(r, key))]
        return round(float(np.median(v)), 3) if v else float("nan")

    return {
        "fitted": len(ok),
        "failed": {h: fits[h].reason for h in sorted(fits, key=id_sort_key) if not fits[h].success},
        "rejected_rows": len(rejected),
        "parameter_sets": _chosen_sets(ok.values()),
        "with_identifiability_warning": sum(
            any(w.startswith("parameters poorly identifiable") for w in r.warnings)
            for r in ok.values()
        ),
        "rms_before_mrad_median": med("rms_before_mrad"),
        "rms_after_mrad_median": med("rms_after_mrad"),
        "loo_rms_mrad_median": med("loo_rms_mrad"),
        "nested_rms_mrad_median": _median(
            [(r.selection or {}).get("nested_rms_mrad", math.nan) for r in ok.values()]
        ),
        "energy_j": round(ctx.state["energy_j"]["calibration"], 3),
        "corrections": str(out / "corrections.json"),
    }


def _median(v) -> float:
    v = [x for x in v if x is not None and math.isfinite(x)]
    return round(float(np.median(v)), 3) if v else float("nan")


def _chosen_sets(fits) -> dict[str, int]:
    """Heliostats per chosen parameter set, ``"<drive>: <names>"`` → count."""
    out: dict[str, int] = {}
    for r in fits:
        key = f"{r.drive}: {','.join(r.names)}"
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------- deliver
def _start_emulators(ctx):
    from dataclasses import replace

    from heliostat.kinematics import error_names
    from sim.controllers import ControllerModel, EmulatedBus, ManualClock, specs_for_field

    field_cfg = ctx.state["field"]
    # One backlash per simulated plant: when the world draws each heliostat's backlash
    # (the encoder effect, which the campaign's observations and the held-out scores
    # carry), the emulated drives take up none of their own, else it would count twice.
    world_backlash = False
    if ctx.state.get("effect_draws"):
        from sim.effects import draws_from_dict

        world_backlash = draws_from_dict(ctx.state["effect_draws"])[0].encoder
    clock = ManualClock()
    buses = {}
    for name, bus in field_cfg.buses.items():
        models = [
            ControllerModel(
                replace(s, backlash_steps=(0.0, 0.0)) if world_backlash else s,
                clock=clock,
                param_names=error_names(s.drive),
            )
            for s in specs_for_field(field_cfg, name)
        ]
        if not models:
            continue
        eb = EmulatedBus(models, baudrate=bus.baudrate, parity=bus.parity, stopbits=bus.stopbits)
        eb.start(announce_port=False)
        buses[name] = eb
    ctx.state["emulators"] = (clock, buses)
    return clock, buses


def _run_on_buses(ctx, commands, batch: str):
    """Deliver commands through the bridge, every bus at once
    (:func:`firmware_bridge.fleet.deliver_buses`); returns the outcomes, bus by bus."""
    import contextlib

    from firmware_bridge.delivery import Bridge
    from firmware_bridge.errors import ActuatorError
    from firmware_bridge.fleet import BusJob, deliver_buses
    from firmware_bridge.journal import Journal
    from firmware_bridge.transport import ModbusLink

    field_cfg = ctx.state["field"]
    _, buses = ctx.state["emulators"]
    journal = Journal(ctx.out / "bridge-journal.sqlite")

    @contextlib.contextmanager
    def connect(port, bus):
        with ModbusLink(
            port,
            baudrate=bus.baudrate,
            parity=bus.parity,
            stopbits=bus.stopbits,
            timeout_s=bus.timeout_s,
        ) as link:
            yield Bridge(link, journal)

    jobs = []
    for name, eb in buses.items():
        mine = tuple(c for c in commands if field_cfg.heliostats[c.heliostat].bus == name)
        if mine:
            bus = field_cfg.buses[name]
            jobs.append(
                BusJob(
                    name,
                    eb.port,
                    f"{batch}-{name}",
                    "demo",
                    mine,
                    lambda port=eb.port, bus=bus: connect(port, bus),
                )
            )
    shown = Progress(batch.split("-")[0])  # the commands of all buses, counted together
    total = sum(len(j.commands) for j in jobs)
    done: dict[str, int] = {}

    def progress(bus, _o, i, _n):  # deliver_buses serialises these calls
        done[bus] = i
        shown(sum(done.values()), total)

    try:
        results = deliver_buses(jobs, progress)
    finally:
        journal.close()
    for r in results:
        if r.error:  # an emulated bus that fails is a bug of the demo: say which
            raise ActuatorError(f"bus {r.bus!r} ({r.port}): {r.error}")
    return [o for r in results for o in r.outcomes]


def stage_deliver(ctx) -> dict[str, Any]:
    """Upload each fitted parameter set to its (emulated) controller over Modbus RTU.

    Checked heliostat by heliostat: a parameter set the safety limits refuse is reported
    and not sent, and that heliostat stays on its nominal model (``bridge apply`` on the
    CLI refuses a whole file instead, so that an engineer looks at it first).
    """
    from firmware_bridge.errors import SafetyRefused
    from firmware_bridge.safety import plan_corrections

    # A new simulated plant each run: an earlier demo's journal would mark these batches
    # as already delivered (which is exactly what it is for on a real plant).
    for suffix in ("", "-wal", "-shm"):
        (ctx.out / f"bridge-journal.sqlite{suffix}").unlink(missing_ok=True)
    _start_emulators(ctx)
    doc = ctx.state["corrections"]
    refused: dict[str, str] = {}
    measured: dict[str, dict[str, float]] = {}
    with _metered(ctx, "bridge"):
        cmds = []
        for rec in doc["heliostats"]:
            one = {**doc, "heliostats": [rec]}
            try:
                cmds += plan_corrections(
                    ctx.state["field"],
                    one,
                    params=True,
                    setpoints="none",
                    corrections_mrad=measured,
                )
            except SafetyRefused as exc:
                refused[rec["heliostat"]] = str(exc).split("nothing sent: ", 1)[-1]
        outcomes = _run_on_buses(ctx, cmds, "params")
    ctx.state["deliver_outcomes"] = outcomes
    not_applied = dict(refused)
    for o in outcomes:
        if o.state != "confirmed":
            not_applied[o.heliostat] = f"{o.state}: {o.detail}"
    for hid in not_applied:  # these heliostats stay on the nominal model
        ctx.state["fits"].pop(hid, None)
    ctx.state["refused"] = refused
    ctx.state["delivery"] = {
        "states": {o.heliostat: (o.state, o.detail) for o in outcomes},
        "correction_mrad": {h: m["params_mrad"] for h, m in measured.items() if "params_mrad" in m},
        "parameters": {r["heliostat"]: dict(r.get("parameters") or {}) for r in doc["heliostats"]},
    }
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.state] = counts.get(o.state, 0) + 1
    return {
        "commands": len(cmds),
        "outcomes": counts,
        "refused_by_safety": refused,
        # The planner's figure for each refused set: its largest mirror turn. [mrad]
        "refused_correction_mrad": {
            h: round(measured[h]["params_mrad"], 3)
            if "params_mrad" in measured.get(h, {})
            else None
            for h in sorted(refused, key=id_sort_key)
        },
        "max_correction_mrad": ctx.state["field"].safety.max_correction_mrad,
        "not_confirmed": {
            h: not_applied[h] for h in sorted(not_applied, key=id_sort_key) if h not in refused
        },
        "ports": [eb.port for eb in ctx.state["emulators"][1].values()],
        "energy_j": round(ctx.state["energy_j"]["bridge"], 3),
    }


def record_history(ctx, db: Path) -> dict[str, int]:
    """The demo's campaign in the history database's campaign tables, as a plant's
    campaign leaves it (``heliostat history --db <out>/history.sqlite``): the
    observations, each heliostat's fit, its correction (sent, refused by the safety
    limit, or failed) and the bridge's outcome. Returns the counts written."""
    from heliostat.calibration.observations import OBSERVATION_COLUMNS
    from heliostat.campaign.history import History, ObservationRecord

    obs = ctx.state.get("observations")
    fits = ctx.state.get("all_fits", {})
    outcomes = {o.heliostat: o for o in ctx.state.get("deliver_outcomes", [])}
    refused = ctx.state.get("refused", {})
    ports = {name: eb.port for name, eb in ctx.state.get("emulators", (None, {}))[1].items()}
    field_cfg = ctx.state["field"]
    now = pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
    n = {"observations": 0, "fits": 0, "deliveries": 0}
    last_id: dict[str, int] = {}

    def num(v) -> float:  # noqa: ANN001 - a CSV cell: number or NaN
        return float(v) if pd.notna(v) else math.nan

    def sign(v) -> int | None:  # noqa: ANN001 - a CSV cell: ±1 or empty
        return int(v) if pd.notna(v) and v != "" else None

    with History(db) as hist:
        if obs is not None:
            rows = obs.reindex(columns=list(OBSERVATION_COLUMNS))
            recs = [
                ObservationRecord(
                    r.heliostat_id,
                    str(r.time_utc),
                    str(r.time_utc),
                    float(r.sun_azimuth_deg),
                    float(r.sun_elevation_deg),
                    int(r.axis1_steps),
                    int(r.axis2_steps),
                    str(r.target_id),
                    num(r.spot_x_m),
                    num(r.spot_y_m),
                    num(r.spot_e_m),
                    num(r.spot_n_m),
                    num(r.spot_u_m),
                    num(r.sigma_m),
                    "" if pd.isna(r.quality_flags) else str(r.quality_flags),
                    "" if pd.isna(r.frame) else str(r.frame),
                    run_id="demo",
                    axis1_approach=sign(r.axis1_approach),
                    axis2_approach=sign(r.axis2_approach),
                )  # fmt: skip
                for r in rows.itertuples(index=False)
            ]
            for rec, oid in zip(recs, hist.add_observations(recs), strict=True):
                if oid is not None:
                    last_id[rec.heliostat_id] = oid
                    n["observations"] += 1
        shown = Progress("history")
        for k, hid in enumerate(sorted(fits, key=id_sort_key)):
            shown(k, len(fits))
            fid = hist.add_fit(fits[hid], now, last_id.get(hid, 0), run_id="demo")
            n["fits"] += 1
            if not fits[hid].success:
                continue
            cid = hist.propose(fid, hid, now)
            if hid in refused:
                hist.set_correction(cid, "refused", now, refused[hid])
            elif hid in outcomes:
                o = outcomes[hid]
                hist.add_delivery(cid, now, ports.get(field_cfg.heliostats[hid].bus, ""), o)
                hist.set_correction(cid, "sent" if o.state == "confirmed" else "failed", now)
                n["deliveries"] += 1
        shown(len(fits), len(fits))
    return n


# --------------------------------------------------------------------------- verify
def _miss_mrad(kin, errors_true, steps, sun, aim) -> np.ndarray:
    """Angle between the true beam and the direction to the aim point. [mrad]"""
    from heliostat.frames import angle_between, normalize

    r, c = kin.reflected(steps, sun, errors_true)
    return angle_between(r, normalize(aim - c)) * 1e3


def stage_verify(ctx) -> dict[str, Any]:
    """Held-out day: pointing error before (nominal) and after (fitted), the fitted
    setpoints driven through the bridge, the spots of two heliostats measured on camera.

    When the campaign simulated effects outside the fitted model (``effect_draws``), the
    held-out errors are those of the same world (:func:`sim.effects.pointing_error_mrad`:
    sag, thermal, wind, canting, encoder, survey, clock, refraction as drawn)."""
    from firmware_bridge.delivery import ActuatorCommand
    from heliostat.calibration.corrections import setpoints_in_order
    from heliostat.sun import sun_position

    field_cfg = ctx.state["field"]
    truth = ctx.state["truth"]
    fits = ctx.state["fits"]
    tgt = _target(ctx)
    aim = tgt.centre_enu_m
    day = pd.Timestamp(ctx.options.start, tz="UTC") + pd.Timedelta(days=ctx.options.days)
    times = pd.date_range(day + pd.Timedelta(hours=4), day + pd.Timedelta(hours=20), freq="1h")
    sp = sun_position(field_cfg.site, times)
    up = sp.elevation_rad > math.radians(VERIFY_MIN_ELEVATION_DEG)
    sun = sp.u_sun_enu[up]
    before: dict[str, np.ndarray] = {}
    after: dict[str, np.ndarray] = {}
    # Heliostats whose fit failed or whose correction safety refused keep the nominal
    # model: their "after" is their "before".
    applied = {hid: (fits[hid].errors if hid in fits else None) for hid in truth}
    # the held-out visits' own wind and encoder draws, one stream per heliostat
    world, world_seed = None, ctx.options.seed + 1
    index = {hid: i for i, hid in enumerate(field_cfg.heliostats)}
    if ctx.state.get("effect_draws"):
        from sim.effects import draws_from_dict, pointing_error_mrad, true_sun

        world = draws_from_dict(ctx.state["effect_draws"])
        # the true sun at the held-out times, once for the field (per time, so a
        # heliostat's subset of the times is a subset of these rows)
        sun_true = true_sun(field_cfg.site, sp.times[up], sun, world[0], world[1])
    for hid, errors in applied.items():
        kin = field_cfg.heliostats[hid].kinematics
        try:
            nominal = np.rint(kin.inverse(np.broadcast_to(aim, sun.shape), sun))
            # visited in order from stow: a fitted backlash aimed for each move's direction
            fitted = setpoints_in_order(kin, errors, np.broadcast_to(aim, sun.shape), sun)
        except ValueError:
            continue
        keep = kin.within_limits(fitted) & kin.within_limits(nominal)
        if world is not None:  # the simulator's effects outside the fitted model
            effects, cdraw, hdraws = world
            t_keep = sp.times[up][keep]
            for out_d, st in ((before, nominal), (after, fitted)):
                out_d[hid] = pointing_error_mrad(
                    kin, truth[hid], st[keep], t_keep, sun[keep], field_cfg.site, aim,
                    effects, cdraw, hdraws[hid],
                    np.random.default_rng([world_seed, index[hid]]), sun_true[keep],
                )  # fmt: skip
            continue
        before[hid] = _miss_mrad(kin, truth[hid], nominal[keep], sun[keep], aim)
        after[hid] = _miss_mrad(kin, truth[hid], fitted[keep], sun[keep], aim)
    ctx.state.update(verify_before=before, verify_after=after)

    # Through the wire at the held-out day's highest sun: fitted setpoints as absolute
    # moves, the emulated axes travel, the positions they arrive at are what the world
    # sees (with the world's backlash for the move each axis made, else the emulator's).
    k = int(np.argmax(np.where(up, sp.elevation_rad, -np.inf)))
    s_noon = sp.u_sun_enu[k]
    cmds, planned, starts = [], {}, {}
    _, buses = ctx.state["emulators"]
    for hid, fit in fits.items():
        h = field_cfg.heliostats[hid]
        # aimed for the move from where the controller stands now (the simulator's truth)
        start = np.array(buses[h.bus].controllers[h.address].motor_steps, dtype=float)
        st = setpoints_in_order(h.kinematics, fit.errors, aim, s_noon[None], start)[0]
        st = st.astype(int)
        if h.kinematics.within_limits(st)[0]:
            cmds.append(ActuatorCommand(hid, h.address, "move", (int(st[0]), int(st[1]))))
            planned[hid], starts[hid] = st, start
    with _metered(ctx, "bridge"):
        outcomes = _run_on_buses(ctx, cmds, f"verify-{times[k]:%Y%m%dT%H%M}")
    reported = _wait_and_read_positions(ctx, planned)
    wire_err = []
    if world is not None:
        sun_noon = true_sun(field_cfg.site, times[k : k + 1], s_noon[None], world[0], world[1])
    for hid, pos in reported.items():
        h = field_cfg.heliostats[hid]
        if world is not None:
            effects, cdraw, hdraws = world
            wire_err.append(
                pointing_error_mrad(
                    h.kinematics, truth[hid], np.asarray(pos, float)[None], times[k : k + 1],
                    s_noon[None], field_cfg.site, aim, effects, cdraw, hdraws[hid],
                    np.random.default_rng([world_seed, index[hid], 1]), sun_noon, starts[hid],
                )[0]
            )  # fmt: skip
            continue
        wire_err.append(_miss_mrad(h.kinematics, truth[hid], pos[None], s_noon[None], aim)[0])
    ctx.state["verify_positions"] = (s_noon, reported)
    confirmed = sum(o.state == "confirmed" for o in outcomes)
    measured = _measure_on_camera(ctx, s_noon, reported)

    b = np.concatenate(list(before.values())) if before else np.empty(0)
    a = np.concatenate(list(after.values())) if after else np.empty(0)
    per_b = np.array([np.sqrt(np.mean(v**2)) for v in before.values() if v.size])
    per_a = np.array([np.sqrt(np.mean(v**2)) for v in after.values() if v.size])
    # the corrected heliostats alone (the others' "after" is their nominal "before")
    a_fit = [v for h, v in after.items() if h in fits]
    a_fit = np.concatenate(a_fit) if a_fit else np.empty(0)
    wire = np.array(wire_err)
    ctx.state.update(
        rms_before_mrad=float(np.sqrt(np.mean(b**2))),
        rms_after_mrad=float(np.sqrt(np.mean(a**2))),
        rms_delivered_mrad=float(np.sqrt(np.mean(wire**2))) if wire.size else float("nan"),
    )

    def q(v: np.ndarray, p: float) -> float:
        return round(float(np.percentile(v, p)), 3) if v.size else float("nan")

    return {
        "held_out_day": f"{day:%Y-%m-%d}",
        "times": int(up.sum()),
        "heliostats": len(after),
        "heliostats_corrected": len(fits),
        # Failed fits, refused or unconfirmed corrections: on the nominal model, their
        # "after" is their "before", and the noon moves through the controllers leave
        # them out.
        "heliostats_not_corrected": sorted(set(truth) - set(fits), key=id_sort_key),
        "before_mrad_median": q(b, 50),
        "before_mrad_p95": q(b, 95),
        "after_mrad_median": q(a, 50),
        "after_mrad_p95": q(a, 95),
        "after_corrected_mrad_median": q(a_fit, 50),
        "after_corrected_mrad_p95": q(a_fit, 95),
        "rms_before_mrad": round(ctx.state["rms_before_mrad"], 3),
        "rms_after_mrad": round(ctx.state["rms_after_mrad"], 3),
        "per_heliostat_rms_after_mrad_max": q(per_a, 100),
        "per_heliostat_rms_before_mrad_median": q(per_b, 50),
        "moves_confirmed": f"{confirmed}/{len(cmds)}",
        "after_via_controllers_mrad_median": q(np.array(wire_err), 50),
        "after_via_controllers_mrad_p95": q(np.array(wire_err), 95),
        **measured,
    }


#: Buses polled side by side while the verified heliostats travel.
POLL_THREADS = 4


def _wait_and_read_positions(ctx, planned: dict, step_s: float = 15.0, max_steps: int = 40):
    """Let the emulated axes travel (the controllers' clock runs ``step_s`` per round) while
    the bridge polls every moving controller's status over the wire — the polling also
    keeps their watchdogs from stowing them — until all report arrival.

    Returns the *physical* (load-side) axis positions of the arrived heliostats, which
    differ from the motor counts the controllers report by the backlash taken up on the
    way in: that is where the mirrors really are. [steps]"""
    from concurrent.futures import ThreadPoolExecutor

    from firmware_bridge.delivery import Bridge
    from firmware_bridge.errors import ControllerTimeout
    from firmware_bridge.transport import ModbusLink

    field_cfg = ctx.state["field"]
    clock, buses = ctx.state["emulators"]
    reported: dict[str, np.ndarray] = {}
    pending = dict(planned)
    links = {}
    try:
        for name, eb in buses.items():
            bus = field_cfg.buses[name]
            links[name] = ModbusLink(
                eb.port,
                baudrate=bus.baudrate,
                parity=bus.parity,
                stopbits=bus.stopbits,
                timeout_s=bus.timeout_s,
            )
            links[name].__enter__()

        def poll(bus: str, hids: list[str]) -> list[str]:
            """The heliostats of one bus that report arrival (one thread per bus: the
            buses' lines work side by side, as deliver_buses drives them)."""
            arrived = []
            for hid in hids:
                h = field_cfg.heliostats[hid]
                try:
                    st = Bridge(links[bus]).status(h.address)
                except ControllerTimeout:
                    continue  # asked again next round (the emulators share this process)
                if tuple(st.position_steps) == tuple(st.target_steps):
                    arrived.append(hid)
            return arrived

        # A few buses at a time: the emulated controllers answer from threads of this
        # process, and 41 pollers beside them made replies miss their 0.2 s timeout.
        with ThreadPoolExecutor(max_workers=max(1, min(len(links), POLL_THREADS))) as pool:
            for _ in range(max_steps):
                if not pending:
                    break
                clock.advance(step_s)
                by_bus: dict[str, list[str]] = {}
                for hid in pending:
                    by_bus.setdefault(field_cfg.heliostats[hid].bus, []).append(hid)
                arrived = {h for got in pool.map(poll, by_bus, by_bus.values()) for h in got}
                for hid in [h for h in pending if h in arrived]:  # in the planned order
                    h = field_cfg.heliostats[hid]
                    ctrl = buses[h.bus].controllers[h.address]  # the simulator's truth
                    reported[hid] = np.array(ctrl.output_steps, dtype=float)
                    del pending[hid]
    finally:
        for link in links.values():
            link.__exit__(None, None, None)
    return reported


def _measure_on_camera(ctx, u_sun, reported, n: int = 2) -> dict[str, Any]:
    """Render the spots of the first ``n`` verified heliostats and measure them."""
    from heliostat.sun import clear_sky_dni
    from heliostat.vision import detect_spot, prepare_flat
    from heliostat.vision.pipeline import register_for_camera
    from sim.camera import render_pair
    from sim.optics import flux_spot

    field_cfg, truth, camera = ctx.state["field"], ctx.state["truth"], ctx.state["camera"]
    if camera is None:
        return {"camera_checked": 0}
    tgt = _target(ctx)
    rng = np.random.default_rng(ctx.options.seed + 7)
    dni = 850.0
    try:
        t = pd.Timestamp(ctx.options.start, tz="UTC") + pd.Timedelta(
            days=ctx.options.days, hours=12
        )
        dni = float(clear_sky_dni(field_cfg.site, [t])[0])
    except ValueError:
        pass
    errs, reg, flat, shown = [], None, None, []
    sunlit = getattr(ctx.options, "target_style", "aruco") == "sunlit"
    if sunlit:
        from sim.camera import render_sunlit_pair
        from sim.real_texture import draw_conditions, load_board_image, target_image_paths

        paths = target_image_paths(ctx.options.target_images or None)
    for hid, pos in list(reported.items())[:n]:
        h = field_cfg.heliostats[hid]
        pose = h.kinematics.forward(pos[None], truth[hid])
        spot = flux_spot(h, pose, u_sun, dni, tgt, rng=rng)
        if sunlit:  # the campaign's real-looking board, a sun-off frame with drift
            cond = draw_conditions(rng, tgt, len(paths))
            board = load_board_image(paths[cond.image])
            on, dark, truths = render_sunlit_pair(
                camera, tgt, [spot], rng=rng, board=board, conditions=cond
            )
        else:
            on, dark, truths = render_pair(camera, tgt, [spot], rng=rng)
        if reg is None:
            reg = register_for_camera(camera, tgt, dark)
        if flat is None or sunlit:  # a sunlit board changes from one pair to the next
            flat = prepare_flat(dark, reg, black_level_dn=camera.black_level_dn)
        with _metered(ctx, "vision", heliostat_id=hid):
            res = detect_spot(
                on,
                reg,
                dark=dark,
                flat=flat,
                black_level_dn=camera.black_level_dn,
                bit_depth=camera.bit_depth,
                expected_xy_m=(0.0, 0.0),
                target=tgt,
            )
        if res.ok:
            errs.append(
                float(
                    np.hypot(
                        res.x_m - truths[0].centroid_xy_m[0], res.y_m - truths[0].centroid_xy_m[1]
                    )
                )
            )
            shown.append((on, (res.u_px, res.v_px), truths[0].centroid_px, f"verify {hid}"))
    ctx.state.setdefault("example_frames", []).extend(shown)
    if not errs:
        return {"camera_checked": 0}
    return {"camera_checked": len(errs), "camera_spot_error_mm_max": round(1e3 * max(errs), 2)}


# --------------------------------------------------------------------------- ledger
def _all_framed_j(
    compute_j: float, vision_j: float, first_share: float | None, n_framed: int, n_obs: int
) -> tuple[float, float | None]:
    """Compute energy had every observation been framed, and the first frame's part. [J]

    The vision energy per further frame is that of the frames after the first (which
    carries the stage's one-time start-up, ``first_share`` of its CPU time); it is scaled to
    the ``n_obs - n_framed`` image-free observations. With one frame, or no split, every
    framed observation's mean is used (start-up included: an upper bound).
    """
    if not n_framed or not vision_j or n_obs <= n_framed:
        return compute_j, None
    if first_share is None or n_framed < 2:
        return compute_j + vision_j * (n_obs / n_framed - 1.0), None
    startup_j = vision_j * first_share
    per_frame_j = (vision_j - startup_j) / (n_framed - 1)
    return compute_j + per_frame_j * (n_obs - n_framed), startup_j


def stage_ledger(ctx) -> dict[str, Any]:
    """Book the metered compute; model the gain; payback under each grid preset.

    The gain is the field's own receiver's (:func:`~heliostat.ledger.gain.gain_point`, the
    one choice ``heliostat ledger gain --site field.toml`` and ``bench compare`` make too).
    """
    from heliostat.ledger import GRID_PRESETS, grid_intensity
    from heliostat.ledger.book import GainRecord, LedgerBook
    from heliostat.ledger.gain import gain_point, pointing_gain
    from heliostat.ledger.system import SystemPower

    field_cfg = ctx.state["field"]
    point = gain_point(field_cfg, label="demo field")
    # Whole system (stated assumptions): the PC idles and the camera stays on for the
    # campaign's wall-clock days.
    system = SystemPower()
    campaign_h = 24.0 * float(ctx.options.days)
    system_j = system.energy(campaign_h).joules
    # The gain takes the worse of the model's after-error (whole held-out day) and the
    # error as delivered through the controllers (noon, with backlash).
    after = max(ctx.state["rms_after_mrad"], np.nan_to_num(ctx.state["rms_delivered_mrad"]))
    gain = pointing_gain(
        point,
        ctx.state["rms_before_mrad"],
        float(after),
        date=f"{pd.Timestamp(ctx.options.start):%Y-%m-%d}",
    )
    db = ctx.out / "history.sqlite"
    if db.exists():
        db.unlink()
    entries = ctx.state.get("ledger_entries", [])
    with LedgerBook(db) as book:
        for e in entries:
            book.add(e)
        book.add_gain(GainRecord.from_result(gain, "classical"))
        summaries = {
            name: book.summary(grid_intensity(name), system_j=system_j).as_dict()
            for name in GRID_PRESETS
        }
        book.export_csv(ctx.out / "emissions.csv", grid_intensity("us"))
    record_history(ctx, db)
    compute_j = sum(e.facility_energy.joules for e in entries)
    payback, whole = {}, {}
    for name, s in summaries.items():
        row = next((r for r in s["payback"] if r["scope"] == "all"), None)
        if row is not None:
            payback[name] = row
        row = next((r for r in s["payback"] if r["scope"] == "whole system"), None)
        if row is not None:
            whole[name] = row["payback_hours"]
    # Coverage: the vision stage ran only on the observations that have frames; the
    # others are image-free simulated spots. The explicit estimate scales the measured
    # vision energy per framed observation to all of them.
    obs = ctx.state.get("observations")
    n_obs = int(len(obs)) if obs is not None else 0
    n_framed = (
        int((obs["frame"].fillna("").astype(str).str.len() > 0).sum())
        if obs is not None and "frame" in obs
        else 0
    )
    vision_j = sum(e.facility_energy.joules for e in entries if e.stage == "vision")
    all_framed_j, startup_j = _all_framed_j(
        compute_j, vision_j, ctx.state.get("vision_first_frame_share"), n_framed, n_obs
    )
    ctx.state.update(gain=gain, ledger_summaries=summaries, payback=payback)
    first = next(iter(payback.values()), {})
    return {
        "compute_j": round(compute_j, 2),
        "compute_kwh": compute_j / 3.6e6,
        "compute_rel_uncertainty": first.get("compute_rel_uncertainty"),
        "compute_scope": "marginal CPU/RAM of this process (idle power of the PC and the "
        "cameras not included)",
        "framed_observations": n_framed,
        "observations": n_obs,
        "compute_j_if_every_observation_framed": round(all_framed_j, 1),
        "vision_first_frame_j": None if startup_j is None else round(startup_j, 2),
        "kg_co2e_us_grid": compute_j / 3.6e6 * grid_intensity("us").kg_per_kwh,
        "operating_point": point.label,
        "hypothetical_point": point.hypothetical,
        "receiver_note": point.note,
        "before_rms_mrad": float(ctx.state["rms_before_mrad"]),
        "after_rms_mrad_used": float(after),
        "gain_date": f"{pd.Timestamp(ctx.options.start):%Y-%m-%d}",
        "delta_t_k_no_flow_control": gain.delta_t_k,
        "t_hold_c": gain.t_hold_k - 273.15,
        "thermal_gain_kwh_per_day_flow_controlled": gain.thermal_gain_kwh_per_day,
        "co2_avoided_kg_per_day": gain.co2_avoided_kg_per_day,
        "payback_hours": {k: v.get("payback_hours") for k, v in payback.items()},
        "whole_system": {
            "assumed_w": system.watts,
            "pc_idle_w": system.pc_idle_w,
            "cameras": system.n_cameras,
            "camera_w": system.camera_w,
            "campaign_hours": campaign_h,
            "energy_j": system_j,
            "payback_hours": whole,
        },
        "energy_return_ratio_one_run_per_year": first.get("energy_return_ratio"),
        "annual_basis": "clear-sky year",
        "database": str(db),
    }


def _names(ids, most: int | None) -> str:
    ids = list(ids)
    if most is None or len(ids) <= most:
        return ", ".join(ids)
    return ", ".join(ids[:most]) + f" and {len(ids) - most} more"


def not_corrected_sentences(st: dict, most: int | None = 20) -> list[str]:
    """The heliostats the demo left uncorrected, named with the reason (demo summary and
    report): failed fits by kind of failure, parameter sets the safety limit refused
    with their correction, and sets the controllers did not confirm. ``most`` names per
    sentence (None: all)."""
    from heliostat.commands.calibrate import failure_kind

    out = []
    failed = st.get("calibrate", {}).get("failed", {})
    kinds: dict[str, list[str]] = {}
    for hid, why in failed.items():
        kinds.setdefault(failure_kind(why), []).append(hid)
    for kind, ids in sorted(kinds.items()):
        out.append(f"fit failed ({kind}), {len(ids)}: {_names(ids, most)}")
    d = st.get("deliver", {})
    refused = d.get("refused_correction_mrad", {})
    if refused:
        limit = d.get("max_correction_mrad", float("nan"))
        each = [
            f"{h} ({v:.1f} mrad)" if v is not None else f"{h} ({d['refused_by_safety'][h]})"
            for h, v in refused.items()
        ]
        out.append(
            f"correction refused by the safety limit of {limit:g} mrad, {len(each)}: "
            + _names(each, most)
        )
    unconfirmed = d.get("not_confirmed", {})
    if unconfirmed:
        each = [f"{h} ({why})" for h, why in unconfirmed.items()]
        out.append(f"not confirmed by the controller, {len(each)}: " + _names(each, most))
    # the rest of those the verification left uncorrected had no usable observation
    named = set(failed) | set(refused) | set(unconfirmed)
    unseen = [h for h in st.get("verify", {}).get("heliostats_not_corrected", []) if h not in named]
    if unseen:
        out.append(f"no usable observation (not fitted), {len(unseen)}: " + _names(unseen, most))
    return out


def ledger_sentences(lg: dict) -> list[str]:
    """The ledger in words with human units (demo summary and report)."""
    from heliostat.ledger.units import format_energy, format_mass
    from heliostat.ledger.units import format_operating_hours as format_hours

    rel = lg.get("compute_rel_uncertainty")
    rel = float("nan") if rel is None else rel
    pb = ", ".join(
        f"{k} {format_hours(h if h is not None else float('inf'), rel)}"
        for k, h in lg["payback_hours"].items()
    )
    hyp = " (hypothetical)" if lg.get("hypothetical_point") else ""
    heat_day = format_energy(lg["thermal_gain_kwh_per_day_flow_controlled"] * 3.6e6)
    out = [
        f"Compute: {format_energy(lg['compute_j'], rel)} "
        f"({format_mass(lg['kg_co2e_us_grid'], rel)} CO2e on the US grid), "
        f"{lg['compute_scope']}; vision was metered on {lg['framed_observations']} framed "
        f"observations of {lg['observations']} (every one framed: about "
        f"{format_energy(lg['compute_j_if_every_observation_framed'], rel)}"
        + (
            f", the first frame's one-time start-up of "
            f"{format_energy(lg['vision_first_frame_j'], rel)} counted once)."
            if lg.get("vision_first_frame_j") is not None
            else ")."
        ),
        f"Gain of {lg['before_rms_mrad']:.2f} -> {lg['after_rms_mrad_used']:.2f} mrad RMS "
        f"(reflected beam) at {lg['operating_point']}{hyp}: receiver without flow control "
        f"+{lg['delta_t_k_no_flow_control']:.2g} K at noon; flow-controlled at "
        f"{lg['t_hold_c']:g} °C +{heat_day} of heat/day, "
        f"{format_mass(lg['co2_avoided_kg_per_day'])} CO2/day of gas displaced "
        "(clear sky).",
        f"Payback in plant operating hours: {pb} (± the meter's uncertainty only).",
    ]
    ws = lg.get("whole_system")
    if ws:
        wpb = ", ".join(
            f"{k} {format_hours(h if h is not None else float('inf'))}"
            for k, h in ws["payback_hours"].items()
        )
        out.append(
            f"Whole system (assumed: PC idle {ws['pc_idle_w']:g} W + {ws['cameras']} camera × "
            f"{ws['camera_w']:g} W over {ws['campaign_hours']:g} h of campaign): "
            f"{format_energy(ws['energy_j'])} more; payback {wpb}."
        )
    return out


# --------------------------------------------------------------------------- report
def heliostat_triage(ctx) -> list:
    """One :class:`~heliostat.triage.HeliostatRecord` per heliostat of the demo's field,
    from what the stages left in ``ctx.state`` (missing stages: fewer facts)."""
    from heliostat.calibration.fit import resolve_names
    from heliostat.triage import Delivery, heliostat_records

    field_cfg = ctx.state["field"]
    ids = list(field_cfg.heliostats)
    kin = {h: field_cfg.heliostats[h].kinematics for h in ids}

    def rms(d: dict, h: str) -> float:
        v = d.get(h)
        return float(np.sqrt(np.mean(v**2))) if v is not None and v.size else float("nan")

    dl = ctx.state.get("delivery")
    delivery = None
    if dl is not None:
        delivery = Delivery(
            dl["states"],
            ctx.state.get("refused", {}),
            dl["correction_mrad"],
            field_cfg.safety.max_correction_mrad,
            dl.get("parameters", {}),
        )
    spec = {k.drive: k.spec for k in kin.values()}
    return heliostat_records(
        ids,
        {h: k.drive for h, k in kin.items()},
        ctx.state.get("fit_results", {}),
        ctx.state.get("sun_enu", {}),
        {h: rms(ctx.state.get("verify_before", {}), h) for h in ids},
        {h: rms(ctx.state.get("verify_after", {}), h) for h in ids},
        delivery,
        default_parameters=resolve_names,
        fit_bound=lambda drive, name: spec[drive].fit_bound(name),
    )


#: Columns of the report's per-heliostat table: (record key, heading, numeric, digits,
#: tooltip, cell class).
_TABLE_COLUMNS = (
    ("heliostat", "heliostat", False, 0, "", ""),
    ("status", "status", False, 0, "worst first when sorted", ""),
    ("before_mrad", "before [mrad]", True, 2, "held-out RMS beam error, nominal model", ""),
    ("after_mrad", "after [mrad]", True, 2, "held-out RMS beam error as it runs now", ""),
    ("delivery", "delivery", False, 0, "what the controller did with the set", ""),
    ("next_step", "next step", False, 0, "", "wide"),
    ("reason", "reason", False, 0, "", "wide"),
    ("flags", "flags", False, 0, "", "small"),
    ("parameters", "parameters chosen", False, 0, "the fitted parameter set", "small"),
    ("observations", "visits", True, 0, "observations the fit had", ""),
    ("loo_mrad", "leave-one-out [mrad]", True, 2, "the fit's cross-validated error", ""),
    ("correction_mrad", "correction [mrad]", True, 1, "largest mirror turn of the set", ""),
    ("drive", "drive", False, 0, "", ""),
)


def stage_report(ctx) -> dict[str, Any]:
    """Write ``report.html`` (self-contained) from what the stages made: a summary, the
    "what to do next" list, the per-heliostat table, field maps on their own scales,
    frames, the spread of errors and the ledger. The per-heliostat records and the next
    steps also go into ``summary.json`` (keys ``heliostats`` and ``next_steps``)."""
    from heliostat import viz
    from heliostat.report import Column, DataTable, Section, groups_html, write_report
    from heliostat.triage import STATUSES, next_steps, status_counts

    field_cfg = ctx.state["field"]
    st = ctx.state["stages"]
    ids = list(field_cfg.heliostats)
    pos = np.array([field_cfg.heliostats[h].position_enu_m for h in ids])
    records = heliostat_triage(ctx)
    steps = next_steps(records)
    by_id = {r.heliostat: r for r in records}
    ctx.state["heliostat_records"] = [r.as_dict() for r in records]
    ctx.state["next_steps"] = [g.as_dict() for g in steps]
    counts = status_counts(records)

    b = np.array([r.before_mrad for r in records])
    a = np.array([r.after_mrad for r in records])
    # corrected = verified with its fit (ctx.state["fits"] lost the refused and unconfirmed)
    corrected = np.array([r.heliostat in ctx.state.get("fits", {}) for r in records])
    v = st.get("verify", {})
    lg = st.get("ledger", {})
    left_out = v.get("heliostats_not_corrected", [])
    paragraphs = [
        f"A simulated plant of {len(ids)} heliostats, calibrated from "
        f"{st.get('campaign', {}).get('observations', '?')} observations over "
        f"{ctx.options.days} day(s) and verified on a held-out day. Status: "
        + ", ".join(f"{n} {s}" for s, n in counts.items())
        + "."
    ]
    if left_out:
        paragraphs.append(
            f"{len(left_out)} heliostat(s) not corrected (they stay on the nominal model: "
            "their 'after' is their 'before', and the 'as delivered' row leaves them out):"
        )
        paragraphs += not_corrected_sentences(st, most=30)
    groups = [
        {
            "title": g.title,
            "action": g.action,
            "status": g.status,
            "items": [
                (h, by_id[h].next_step or by_id[h].reason or by_id[h].status) for h in g.heliostats
            ],
        }
        for g in steps
    ]
    table = DataTable(
        f"All {len(records)} heliostats: click a heading to sort, type to filter",
        [Column(*c) for c in _TABLE_COLUMNS],
        [[r.as_dict()[c[0]] for c in _TABLE_COLUMNS] for r in records],
        STATUSES,
    )
    a_ok = a[corrected & np.isfinite(a)]
    spread = {"before, all": b}
    if a_ok.size:
        spread["after, corrected"] = a_ok
    if (~corrected & np.isfinite(a)).any():
        spread["after, not corrected"] = a[~corrected & np.isfinite(a)]
    sections = [
        Section(
            "Summary",
            paragraphs,
            [
                (
                    "pointing error of the reflected beam on the held-out day [mrad]",
                    [
                        {
                            "": "before (nominal model)",
                            "median": v.get("before_mrad_median"),
                            "p95": v.get("before_mrad_p95"),
                            "rms": v.get("rms_before_mrad"),
                        },
                        {
                            "": "after (fitted model)",
                            "median": v.get("after_mrad_median"),
                            "p95": v.get("after_mrad_p95"),
                            "rms": v.get("rms_after_mrad"),
                        },
                        {
                            "": "after, as delivered at noon (controllers, backlash)"
                            + (
                                f"; leaves out the {len(left_out)} heliostat(s) not corrected"
                                if left_out
                                else ""
                            ),
                            "median": v.get("after_via_controllers_mrad_median"),
                            "p95": v.get("after_via_controllers_mrad_p95"),
                            "rms": "",
                        },
                    ],
                ),
                (
                    "heliostats by status",
                    [{"status": s, "heliostats": n} for s, n in counts.items()],
                ),
            ],
        ),
        Section(
            "What to do next",
            ["Worst first; each heliostat with its own next step."],
            blocks=[groups_html(groups)],
        ),
        Section(
            "Heliostats",
            [
                "Errors are the RMS over the held-out day's hours. Filter by words (a "
                "heliostat, a flag, a drive) or by figures: after>2, visits<6, "
                "correction>15. The address keeps the view, to bookmark or send."
            ],
            data_table=table,
        ),
        Section(
            "Field maps",
            [
                "Each map has its own colour scale, up to its 98th percentile: the spread "
                "after calibration shows instead of one dark colour. Red crosses: not "
                "corrected (their after is their before)."
            ],
            figures=[
                ("field map", viz.field_map_png(pos, b, a, corrected=corrected, labels=ids)),
                ("spread of the per-heliostat error", viz.spread_png(spread)),
            ],
        ),
        Section(
            "Frames",
            [
                "Campaign and verification frames with the detected (red) and true (green) "
                "spot centre."
            ],
            figures=[
                (title, viz.frame_png(img, uv, tuv, title))
                for img, uv, tuv, title in ctx.state.get("example_frames", [])[:4]
            ],
        ),
        Section(
            "Residuals",
            figures=[
                (
                    "held-out pointing error",
                    viz.histogram_png(
                        {
                            "before": np.concatenate(list(ctx.state["verify_before"].values())),
                            "after": np.concatenate(list(ctx.state["verify_after"].values())),
                        }
                    ),
                )
            ],
        ),
    ]
    if "gain" in ctx.state:
        from heliostat.ledger.units import format_energy, format_mass
        from heliostat.ledger.units import format_operating_hours as format_hours

        g = ctx.state["gain"]
        rel = lg.get("compute_rel_uncertainty")
        rel = float("nan") if rel is None else rel
        finite = [
            r["payback_hours"]
            for r in ctx.state["payback"].values()
            if math.isfinite(r.get("payback_hours", math.inf))
        ]
        hours = np.linspace(0.0, 3.0 * max(finite) if finite else 2.0, 100)
        kg_h = g.co2_avoided_kg_per_day / max(g.operating_hours_per_day, 1e-9)
        compute = {
            name: r["compute_kg_co2e"]
            for name, r in ctx.state["payback"].items()
            if "compute_kg_co2e" in r
        }
        sections.append(
            Section(
                "Does the computing pay back its carbon?",
                ledger_sentences(lg),
                [
                    (
                        "Time until the heat gained has displaced the computing's CO2, by grid",
                        [
                            {
                                "electricity grid": k,
                                "computing's CO2e": format_mass(r["compute_kg_co2e"], rel),
                                "payback (plant operating time)": format_hours(
                                    r["payback_hours"], rel
                                ),
                                "payback with the idle PC and camera (assumed)": format_hours(
                                    lg.get("whole_system", {})
                                    .get("payback_hours", {})
                                    .get(k, math.inf)
                                ),
                                "heat gained per year / computing energy (one run a year)": (
                                    f"{r['energy_return_ratio']:.2g}"
                                ),
                            }
                            for k, r in ctx.state["payback"].items()
                        ],
                    ),
                    (
                        "The gain, per receiver model",
                        [
                            {
                                "figure": "receiver temperature rise at noon",
                                "receiver": "no flow control (fixed U, fluid at T_f)",
                                "value": f"{g.delta_t_k:.2g} K",
                            },
                            {
                                "figure": "extra heat per day",
                                "receiver": f"flow-controlled, held at {lg['t_hold_c']:g} °C",
                                "value": format_energy(g.thermal_gain_kwh_per_day * 3.6e6),
                            },
                            {
                                "figure": "extra heat per clear-sky year",
                                "receiver": f"flow-controlled, held at {lg['t_hold_c']:g} °C",
                                "value": format_energy(g.thermal_gain_kwh_per_year * 3.6e6),
                            },
                        ],
                    ),
                ],
                [("balance", viz.balance_png(hours, compute, kg_h))],
            )
        )
    path = write_report(
        ctx.out / "report.html",
        "Heliostat calibration demo",
        sections,
        subtitle=f"seed {ctx.options.seed}, start {ctx.options.start}",
    )
    return {"report": str(path), "bytes": path.stat().st_size, "statuses": counts}


def stop_emulators(ctx) -> None:
    """Stop the emulated buses (the runner calls it whatever happens)."""
    emu = ctx.state.pop("emulators", None)
    if emu:
        for eb in emu[1].values():
            eb.stop()
