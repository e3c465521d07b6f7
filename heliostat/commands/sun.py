"""``heliostat sun``: the sun's position for a site."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pandas as pd

from heliostat.commands._common import print_json, print_table


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``heliostat sun`` parser to ``sub``, the CLI's top-level subcommands."""
    p = sub.add_parser(
        "sun",
        help="sun azimuth, elevation and ENU vector for a site",
        description="Print the sun's azimuth (clockwise from north), apparent "
        "elevation and ENU unit vector at the site of a field config.",
    )
    p.add_argument(
        "--site",
        required=True,
        metavar="FIELD_TOML",
        help="field.toml whose [site] gives the location",
    )
    p.add_argument(
        "--time",
        action="append",
        metavar="ISO",
        help="UTC time(s) with offset, e.g. 2025-06-21T12:00:00Z (default: now); "
        "repeat for several",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``heliostat sun``: sun azimuth [deg, clockwise from north], elevation [deg] and
    ENU unit vector at the site of ``--site`` for each ``--time`` (default: now, UTC).

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line; this reads ``--json``, ``--site``, ``--time``.

    Returns
    -------
    int
        Exit code: 0.
    """

    from heliostat.config import load_field
    from heliostat.sun import sun_position, to_utc_index

    site = load_field(args.site).site
    times = args.time or [pd.Timestamp.now(tz="UTC").isoformat()]
    idx = to_utc_index(times)
    sp = sun_position(site, idx)
    rows = [
        {
            "time_utc": t.isoformat(),
            "azimuth_deg": math.degrees(az),
            "elevation_deg": math.degrees(el),
            "u_sun_enu": np.round(u, 9).tolist(),
            "above_horizon": bool(el > 0),
        }
        for t, az, el, u in zip(idx, sp.azimuth_rad, sp.elevation_rad, sp.u_sun_enu, strict=True)
    ]
    if args.json:
        print_json(rows if len(rows) > 1 else rows[0])
    else:
        print(
            f"site {site.name or args.site}: lat {site.latitude_deg:.6f}°, "
            f"lon {site.longitude_deg:.6f}°, alt {site.altitude_m:.1f} m"
        )
        print_table(
            [{**r, "u_sun_enu": " ".join(f"{x:+.6f}" for x in r["u_sun_enu"])} for r in rows],
            ["time_utc", "azimuth_deg", "elevation_deg", "u_sun_enu"],
        )
    return 0
