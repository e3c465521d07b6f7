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


def run(args, clock=None, source=None, confirm=None, link_factory=None, clock_check=None) -> int:
    """Run the command (the keyword arguments are the hardware roots tests inject;
    ``clock_check`` returns a :class:`~heliostat.campaign.clock_sync.ClockSync`, asked
    when the campaign runs on the PC's own clock)."""
    from heliostat.campaign import RunOptions, SystemClock, load_plant, run_campaign
    from heliostat.campaign.clock_sync import check_clock_sync, clock_warning

    if args.max_visits is not None and args.max_visits < 1:
        raise ValueError(f"--max-visits must be at least 1, got {args.max_visits}")
    plant = load_plant(args.config)
    warning, sync = None, None
    if clock is None or clock_check is not None:  # a simulated clock needs no NTP
        sync = (clock_check or check_clock_sync)()
        warning = clock_warning(sync)
        if warning:
            _log(warning)
    clock = clock or SystemClock()
    options = RunOptions(
        dry_run=args.dry_run,
        yes=args.yes,
        until_utc=_until(args, clock),
        max_visits=args.max_visits,
        send_corrections=not args.no_corrections,
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
        return 0
    oc = ", ".join(f"{k} {v}" for k, v in sorted(summary["outcomes"].items())) or "none"
    print(
        f"campaign run {summary['run_id']} {summary['start_utc']} .. {summary['end_utc']}: "
        f"{summary['visits']} visits ({oc}); history in {summary['history_db']}"
    )
    c = summary.get("corrections")
    if c:
        sent = ", ".join(f"{h} {s}" for h, s in c["sent"].items()) or "none"
        print(
            f"corrections: {len(c['proposed'])} proposed, {len(c['refused'])} refused by "
            f"safety, {len(c['declined'])} not confirmed, sent: {sent}"
        )
    return 0 if not (c and any(s != "confirmed" for s in c["sent"].values())) else 1
