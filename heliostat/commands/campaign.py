"""``heliostat campaign --config plant.toml``: the calibration campaign on a plant."""

from __future__ import annotations

import argparse
import sys

from heliostat.commands._common import print_json, print_table


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``heliostat campaign`` parser to ``sub``, the CLI's top-level subcommands."""
    p = sub.add_parser(
        "campaign",
        help="run a calibration campaign on the plant (camera, controllers, history)",
        description="Bring each heliostat onto the calibration target in turn, take sun-on "
        "and sun-off frames, measure the spot, append the observation to the history, fit "
        "each heliostat once its sun positions are enough and well spread, and propose the "
        "corrections (sent only after confirmation or --yes). Interrupted, it resumes where "
        "it stopped. See docs/campaign.md.",
    )
    p.add_argument("--config", required=True, help="plant.toml")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan for the current slot; open no port, move nothing, write nothing",
    )
    p.add_argument(
        "--at",
        metavar="TIME",
        help="with --dry-run: plan for this UTC time instead of now (ISO 8601 with Z)",
    )
    p.add_argument(
        "--simulate",
        action="store_true",
        help="rehearse: run this plant's campaign against the simulated plant "
        "(`heliostat sim serve`'s controllers, camera and clock, with hidden true errors); "
        "history, journal and frames go to --rehearsal-dir, never to the plant's",
    )
    p.add_argument(
        "--start",
        metavar="TIME",
        help="with --simulate: simulated start time, ISO 8601 UTC (default: now)",
    )
    p.add_argument(
        "--served",
        metavar="SERVED_JSON",
        help="with --simulate: rehearse against a running `heliostat sim serve` (its "
        "served.json), following its clock, instead of starting one in this process",
    )
    p.add_argument(
        "--rehearsal-dir",
        help="with --simulate: folder of the rehearsal's history, journal and frames "
        "(default: rehearsal/ beside plant.toml)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="with --simulate: seed of the true errors and noise"
    )
    p.add_argument("--truth", help="with --simulate: truth.json (default: drawn from --seed)")
    p.add_argument("--yes", action="store_true", help="send the corrections without asking")
    end = p.add_mutually_exclusive_group()
    end.add_argument("--hours", type=float, default=None, help="run this long (default: config)")
    end.add_argument("--until", default=None, help="run until this UTC time (ISO 8601 with Z)")
    p.add_argument("--max-visits", type=int, default=None, help="stop after this many visits")
    p.add_argument(
        "--no-corrections",
        action="store_true",
        help="observe and fit only; propose no corrections at the end",
    )
    p.add_argument(
        "--plan",
        default=None,
        help="plan.json from `heliostat plan`: visit each heliostat in its planned window "
        "(this plant's target only) instead of taking turns in every slot",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def _until(args, clock):
    import pandas as pd

    if args.hours is not None:
        if not args.hours > 0:
            raise ValueError(f"--hours must be positive, got {args.hours!r}")
        return clock.now_utc() + pd.Timedelta(hours=args.hours)
    if args.until is not None:
        try:
            t = pd.Timestamp(args.until)
        except ValueError:
            raise ValueError(f"--until: not an ISO 8601 time: {args.until!r}") from None
        if t.tzinfo is None:
            raise ValueError(f"--until {args.until!r} has no timezone (write e.g. ...Z)")
        return t.tz_convert("UTC")
    return None


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        print(f"{question} no terminal to ask: pass --yes to send", file=sys.stderr)
        return False
    ans = input(f"{question} [y/N] ")
    return ans.strip().lower() in ("y", "yes")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class _FixedClock:
    """A clock standing at one time (``--dry-run --at``): a plan never waits."""

    def __init__(self, t_utc) -> None:
        self.t_utc = t_utc

    def now_utc(self):
        return self.t_utc

    def sleep(self, seconds: float) -> None:
        pass


def _utc(text: str, option: str):
    from heliostat.sun import utc_time

    return utc_time(text, option)


def _check_options(args) -> None:
    if args.max_visits is not None and args.max_visits < 1:
        raise ValueError(f"--max-visits must be at least 1, got {args.max_visits}")
    if args.at and not args.dry_run:
        raise ValueError("--at previews a plan: use it with --dry-run")
    if args.simulate and args.dry_run:
        raise ValueError("--simulate runs a rehearsal; --dry-run only plans: use one of them")
    if args.served and (args.start or args.truth):
        raise ValueError("--served follows the served plant's clock and truth: no --start, --truth")
    for opt in ("start", "rehearsal_dir", "truth", "served"):
        if getattr(args, opt) and not args.simulate:
            raise ValueError(f"--{opt.replace('_', '-')} is for a rehearsal: add --simulate")


def run(args, clock=None, source=None, confirm=None, link_factory=None, clock_check=None) -> int:
    """Run the command (the keyword arguments are the hardware roots tests inject;
    ``clock_check`` returns a :class:`~heliostat.campaign.clock_sync.ClockSync`, asked
    when the campaign runs on the PC's own clock)."""
    from heliostat.campaign import SystemClock, load_plant
    from heliostat.campaign.clock_sync import check_clock_sync, clock_warning

    _check_options(args)
    plant = load_plant(args.config)
    if args.simulate:
        return _rehearse(args, plant, confirm)
    sync = warning = None
    if (clock is None and not args.at) or clock_check is not None:
        # the PC's own clock: is it synchronised? (a simulated clock needs no NTP)
        sync = (clock_check or check_clock_sync)()
        warning = clock_warning(sync)
        if warning:
            _log(warning)
    if clock is None:
        clock = _FixedClock(_utc(args.at, "--at")) if args.at else SystemClock()
    return _run(args, plant, clock, source, confirm, link_factory, (sync, warning))


def _rehearse(args, plant, confirm) -> int:
    """``--simulate``: the plant's campaign against the plant in a box (sim/serve.py)."""
    from dataclasses import replace
    from pathlib import Path

    import pandas as pd

    from heliostat.campaign.sources import FolderSource
    from heliostat.commands.sim_serve import build_server
    from sim.serve import ServeClock, TriggeredFolderSource

    rdir = Path(args.rehearsal_dir) if args.rehearsal_dir else plant.path.parent / "rehearsal"
    _claim_rehearsal_dir(rdir, args)
    if args.served:
        return _rehearse_served(args, plant, confirm, rdir)
    start = _utc(args.start, "--start") if args.start else pd.Timestamp.now(tz="UTC").floor("s")
    # the rehearsal's line: no faults, as fast as the host (waits run on the simulated clock)
    sargs = argparse.Namespace(
        seed=args.seed, truth=args.truth, target=plant.target.id, style="auto", no_timing=True,
        watchdog_s=60.0, corrupt_p=0.0, drop_p=0.0, truncate_p=0.0, late_p=0.0, reset_p=0.0,
    )  # fmt: skip
    clock = ServeClock(start, speed=0.0)  # time moves only when the campaign waits
    server = build_server(
        sargs, field_cfg=plant.field, camera_cfg=plant.camera, frames_dir=rdir / "incoming",
        clock=clock,
    )  # fmt: skip
    with server:
        sim_plant = replace(
            plant,
            field=server.field_with_ports("pty"),
            history_db=rdir / "history.sqlite",
            journal=rdir / "bridge-journal.sqlite",
            frames_dir=rdir / "frames",
            source=replace(plant.source, type="folder", folder=rdir / "incoming"),
        )
        folder = FolderSource(rdir / "incoming", plant.source.timeout_s, plant.source.poll_s, clock)
        source = TriggeredFolderSource(server, folder)
        _log(
            f"rehearsal of {plant.path} against the simulated plant: "
            f"{len(server.controllers)} emulated controller(s), true errors "
            + (f"from {args.truth}" if args.truth else f"drawn from seed {args.seed}")
            + f", clock from {_iso(start)}; files in {rdir}"
        )
        rc = _run(args, sim_plant, clock, source, confirm, None)
        _report_truth(sim_plant, server.truth)
    return rc


def _rehearse_served(args, plant, confirm, rdir) -> int:
    """``--simulate --served``: against a running ``sim serve``, through its ports and
    control endpoint (its clock, its camera triggers, its truth)."""
    import json
    from dataclasses import replace
    from pathlib import Path

    from heliostat.campaign.sources import FolderSource
    from heliostat.errors import InputError
    from sim.field import load_truth
    from sim.serve import ControlClient, RemoteCamera, RemoteClock, TriggeredFolderSource

    path = Path(args.served)
    try:
        doc = json.loads(path.read_text())
        buses, control, trig = doc["buses"], doc["control"], Path(doc["triggered_dir"])
    except FileNotFoundError:
        raise InputError(f"--served {path}: not found (is `sim serve` running?)") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"--served {path}: not a served.json of `sim serve` ({exc})") from None
    missing = sorted({h.bus for h in plant.field.heliostats.values()} - set(buses))
    if missing:
        raise InputError(
            f"--served {path}: serves no bus {', '.join(missing)} of {plant.field_path}"
        )
    for hid, h in plant.field.heliostats.items():
        if h.address not in buses[h.bus]["addresses"]:
            raise InputError(f"--served {path}: no controller {h.address} ({hid}) on {h.bus}")
    field_cfg = replace(
        plant.field,
        buses={n: replace(b, port=buses[n]["pty"]) for n, b in plant.field.buses.items()
               if n in buses},
    )  # fmt: skip
    client = ControlClient(control)
    try:
        clock = RemoteClock(client)
        sim_plant = replace(
            plant,
            field=field_cfg,
            history_db=rdir / "history.sqlite",
            journal=rdir / "bridge-journal.sqlite",
            frames_dir=rdir / "frames",
            source=replace(plant.source, type="folder", folder=trig),
        )
        folder = FolderSource(trig, plant.source.timeout_s, plant.source.poll_s, clock)
        source = TriggeredFolderSource(RemoteCamera(client), folder)
        _log(
            f"rehearsal of {plant.path} against the served plant of {path} (pid "
            f"{doc.get('pid')}), following its clock (now {_iso(clock.now_utc())}); "
            f"files in {rdir}"
        )
        rc = _run(args, sim_plant, clock, source, confirm, None)
        truth = client.call("truth")["truth"]
    finally:
        client.close()
    tfile = rdir / "served-truth.json"
    tfile.write_text(json.dumps(truth))
    _report_truth(sim_plant, load_truth(tfile, plant.field))
    return rc


def _claim_rehearsal_dir(rdir, args) -> None:
    """A rehearsal folder serves one simulated plant (seed or truth file): a second run
    with the same resumes it; another plant's run is refused (its history would mix)."""
    import json

    from heliostat.errors import InputError

    rdir.mkdir(parents=True, exist_ok=True)
    tag = rdir / "rehearsal.json"
    want = {"seed": args.seed, "truth": str(args.truth or "")}
    if args.served:
        want = {"served": str(args.served)}
    if tag.exists():
        try:
            have = json.loads(tag.read_text())
        except ValueError:
            have = None
        if have != want:
            raise InputError(
                f"{rdir}: holds a rehearsal of another simulated plant ({have}); "
                "pass another --rehearsal-dir or remove that folder"
            )
    else:
        tag.write_text(json.dumps(want))


def _iso(t) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _report_truth(plant, truth) -> None:
    """After a rehearsal: each fitted heliostat's pointing against the hidden truth."""
    from pathlib import Path

    from heliostat.campaign import History
    from heliostat.kinematics import KinematicErrors
    from heliostat.kinematics.pointing import pointing_change

    if not Path(plant.history_db).exists():
        return
    rows = []
    with History(plant.history_db, readonly=True) as h:
        for hid in plant.schedule.heliostats:
            f = h.last_fit(hid, success_only=True)
            if f is None:
                continue
            fitted = KinematicErrors.from_dict(f["drive"], f["parameters"])
            kin = plant.field.heliostats[hid].kinematics
            aim = plant.target.centre_enu_m
            left = pointing_change(kin, truth[hid], fitted, aim)
            rows.append(
                {
                    "heliostat": hid,
                    "points": f["n_points"],
                    "fit_rms_mrad": f["rms_after_mrad"],
                    "error_left_vs_truth_rms_mrad": left.beam_rms_mrad,
                    "max_mrad": left.beam_max_mrad,
                }
            )
    if rows:
        _log("rehearsal: fitted heliostats against the hidden truth (beam, over the sky):")
        print_table(rows, stream=sys.stderr)
    else:
        _log("rehearsal: no heliostat fitted (see the run's reasons above)")


def _run(args, plant, clock, source, confirm, link_factory, clock_sync=(None, None)) -> int:
    from heliostat.campaign import RunOptions, run_campaign

    visits, visit_s = None, 180.0
    if getattr(args, "plan", None):
        from heliostat.campaign.plan_file import check_plan_field, load_plan

        plan = load_plan(args.plan)
        check_plan_field(plan, plant.field.heliostats, plant.field.targets, str(args.plan))
        if plant.target.id not in plan.targets:
            raise ValueError(
                f"--plan {args.plan}: plans targets {', '.join(plan.targets)}, this plant "
                f"observes {plant.target.id!r}"
            )
        visits, visit_s = plan.visits, plan.visit_s
    options = RunOptions(
        dry_run=args.dry_run,
        yes=args.yes,
        until_utc=_until(args, clock),
        max_visits=args.max_visits,
        send_corrections=not args.no_corrections,
        visits=visits,
        visit_s=visit_s,
    )
    summary = run_campaign(
        plant,
        clock=clock,
        source=source,
        options=options,
        log=_log,
        confirm=confirm or _confirm,
        link_factory=link_factory,
    )
    sync, warning = clock_sync
    if sync is not None:
        summary["clock_sync"] = {
            "synchronised": "unknown" if sync.synchronised is None else sync.synchronised,
            "offset_s": sync.offset_s,
            "detail": sync.detail,
            "warning": warning,
        }
    if args.json:
        print_json(summary)
        return 0
    if args.dry_run:
        print(
            f"dry run at {summary['time_utc']} (slot {summary['slot_utc']}), sun az "
            f"{summary['sun_azimuth_deg']:.1f} el {summary['sun_elevation_deg']:.1f} deg; "
            "nothing sent"
        )
        if summary.get("idle_reason"):
            print(f"no visits: {summary['idle_reason']} (preview another time with --at TIME)")
        rows = [
            {
                "heliostat": v["heliostat"],
                "bus": v["bus"],
                "address": v["address"],
                "action": v["action"],
                "on_target_steps": v.get("on_steps", ""),
                "off_target_steps": v.get("off_steps", ""),
            }
            for v in summary["visits"]
        ]
        print_table(rows)
        if summary.get("next_planned") is not None:
            nxt = ", ".join(f"{v['heliostat']} {v['start_utc']}" for v in summary["next_planned"])
            print(f"next planned visits: {nxt or 'none left'}")
        return 0
    oc = ", ".join(f"{k} {v}" for k, v in sorted(summary["outcomes"].items())) or "none"
    print(
        f"campaign run {summary['run_id']} {summary['start_utc']} .. {summary['end_utc']}: "
        f"{summary['visits']} visits ({oc}); history in {summary['history_db']}"
    )
    if summary.get("idle_reason"):
        print(f"no visits: {summary['idle_reason']}")
    c = summary.get("corrections")
    if c:
        sent = ", ".join(f"{h} {s}" for h, s in c["sent"].items()) or "none"
        print(
            f"corrections: {len(c['proposed'])} proposed, {len(c['refused'])} refused by "
            f"safety, {len(c['declined'])} not confirmed, sent: {sent}"
        )
    return 0 if not (c and any(s != "confirmed" for s in c["sent"].values())) else 1
