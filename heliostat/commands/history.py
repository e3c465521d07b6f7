"""``heliostat history``: a heliostat's calibration record from the history database."""

from __future__ import annotations

import argparse
import sys

from heliostat.commands._common import print_json, print_table

#: Same default as ``heliostat ledger`` (``heliostat.campaign.config.DEFAULT_DB``).
DEFAULT_DB = "heliostat-history.sqlite"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``heliostat history`` parser to ``sub``, the CLI's top-level subcommands."""
    p = sub.add_parser(
        "history",
        help="a heliostat's record: observations, fits over time, drift, deliveries",
        description="Show what the history database holds: per heliostat the number of "
        "observations, its fits over time (parameters, RMS, leave-one-out), the drift "
        "between successive fits (predicted pointing change and parameter changes, mrad) "
        "and the corrections delivered.",
    )
    p.add_argument(
        "--db",
        default=None,
        help=f"history SQLite file (default ${{HELIOSTAT_DB}} or {DEFAULT_DB})",
    )
    p.add_argument("--heliostat", default=None, help="heliostat id (default: an overview)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--csv",
        default=None,
        metavar="FILE",
        help="also write the observations (of --heliostat, or all) as an observations.csv "
        "for 'heliostat calibrate'",
    )
    p.set_defaults(func=run)


def _f(v, fmt: str = ".3f") -> str:
    return "-" if v is None else format(v, fmt)


def run(args) -> int:
    """Run ``heliostat history``: the history database's overview, or one heliostat's
    record (observations, fits, drift [mrad], deliveries); ``--csv`` writes the
    observations.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line; this reads ``--csv``, ``--db``, ``--heliostat``,
        ``--json``.

    Returns
    -------
    int
        Exit code: 0.
    """

    from heliostat.campaign.config import default_db
    from heliostat.campaign.history import (
        History,
        heliostat_record,
        overview,
        write_observations_csv,
    )

    db = args.db or str(default_db())
    with History(db, readonly=True) as hist:
        hist.check_integrity()  # the overview reads indexes; a damaged row must not pass
        if args.csv:
            if args.heliostat is not None:
                heliostat_record(hist, args.heliostat)  # unknown heliostat: KeyError
            n = write_observations_csv(hist, args.csv, args.heliostat)
            print(f"{n} observation(s) written to {args.csv}", file=sys.stderr)
        if args.heliostat is None:
            rows = overview(hist)
            if args.json:
                print_json({"db": db, "heliostats": rows})
            elif not rows:
                print(f"{db}: no campaign records")
            else:
                print_table(rows)
            return 0
        rec = heliostat_record(hist, args.heliostat)
    if args.json:
        print_json({"db": db, **rec})
        return 0
    o = rec["observations"]
    skipped = ", ".join(f"{k} {v}" for k, v in o["skipped"].items()) or "none"
    print(f"heliostat {rec['heliostat']} in {db}")
    print(
        f"observations  {o['count']} ({o['first_utc'] or '-'} .. {o['last_utc'] or '-'}); "
        f"visits skipped: {skipped}"
    )
    print(f"fits          {len(rec['fits'])}")
    if rec["fits"]:
        print_table(
            [
                {
                    "fit": f["id"],
                    "time_utc": f["time_utc"],
                    "ok": "yes" if f["success"] else f"no: {f['reason']}",
                    "points": f["n_points"],
                    "rms_before_mrad": _f(f["rms_before_mrad"]),
                    "rms_after_mrad": _f(f["rms_after_mrad"]),
                    "loo_mrad": _f(f["loo_rms_mrad"]),
                }
                for f in rec["fits"]
            ]
        )
        last = next((f for f in reversed(rec["fits"]) if f["success"]), None)
        if last is not None:
            print(f"parameters of fit {last['id']} (± 1 sigma):")
            for name, v in last["parameters"].items():
                sd = last["parameter_std"].get(name)
                scale, unit = (1e3, "mrad") if name.endswith("_rad") else (1e3, "mm")
                short = name.rsplit("_", 1)[0]
                print(f"  {short:<28} {v * scale:+9.3f} ± {_f(sd * scale if sd else None)} {unit}")
    if rec["drift"]:
        print("drift between successive fits (beam pointing change if aimed with the older fit):")
        print_table(
            [
                {
                    "fits": f"{d['from_fit']}->{d['to_fit']}",
                    "to_utc": d["to_utc"],
                    "days": f"{d['days']:.2f}",
                    "rms_mrad": _f(d["pointing_change_rms_mrad"]),
                    "max_mrad": _f(d["pointing_change_max_mrad"]),
                    "largest_parameter_change": max(
                        d["parameter_changes"].items(),
                        key=lambda kv: abs(kv[1]),
                        default=("-", 0.0),
                    )[0]
                    + f" {max(d['parameter_changes'].values(), key=abs, default=0.0):+.3f}",
                }
                for d in rec["drift"]
            ]
        )
    if rec["corrections"]:
        print("corrections:")
        print_table(rec["corrections"])
    if rec["deliveries"]:
        print("deliveries:")
        print_table(rec["deliveries"])
    return 0
