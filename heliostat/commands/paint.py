"""``heliostat paint fetch``: one heliostat's records from PAINT's STAC catalogue.

Writes PAINT's download layout (``<ID>/Properties/…``, ``<ID>/Calibration/…``, the tower
file, ``metadata/<ID>-calibration-metadata.csv``) that ``heliostat calibrate --paint`` and
``heliostat bench paint`` read. Resumable; see :mod:`heliostat.calibration.paint_fetch`.
"""

from __future__ import annotations

import argparse
import sys

from heliostat.commands._common import print_json


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``heliostat paint`` (with ``paint fetch``) to the CLI's subcommands."""
    p = sub.add_parser(
        "paint",
        help="the PAINT archive (DLR/Jülich calibration records): fetch",
        description="Work with PAINT, the public calibration archive of the Jülich solar tower.",
    )
    psub = p.add_subparsers(dest="paint_command", metavar="SUBCOMMAND")
    f = psub.add_parser(
        "fetch",
        help="download one heliostat's records through PAINT's STAC catalogue",
        description="Download a heliostat's properties, calibration records and the tower file "
        "from PAINT's STAC catalogue into PAINT's download layout. Files already complete are "
        "skipped (run again to resume); checksums are verified where the catalogue gives them.",
    )
    f.add_argument("--heliostat", required=True, metavar="ID", help="PAINT heliostat id (AA39)")
    f.add_argument("--max", type=int, metavar="N", help="keep the newest N records")
    f.add_argument("--since", metavar="DATE", help="keep records taken on/after DATE (UTC)")
    f.add_argument("--out", required=True, metavar="DIR", help="output folder")
    f.add_argument(
        "--assets", default="calibration_properties",
        help="comma-separated calibration assets per record: calibration_properties, "
        "flux_image, flux_centered_image, cropped_image, raw_image "
        "(default: calibration_properties)",
    )  # fmt: skip
    f.add_argument(
        "--mirror", metavar="URL",
        help="base URL of a copy of the archive replacing https://paint-database.org "
        "(file:// works)",
    )  # fmt: skip
    f.add_argument("--timeout", type=float, default=60.0, help="per-request timeout [s]")
    f.add_argument("--json", action="store_true", help="machine-readable summary")
    f.set_defaults(func=run_fetch)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_fetch(args: argparse.Namespace) -> int:
    """Run ``heliostat paint fetch``; exit code 0 when every selected file is complete,
    1 when some failed (listed; run again to retry)."""
    from heliostat.calibration.paint_fetch import fetch_heliostat, parse_since

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    s = fetch_heliostat(
        args.heliostat,
        args.out,
        max_records=args.max,
        since=parse_since(args.since) if args.since else None,
        assets=tuple(a.strip() for a in args.assets.split(",") if a.strip()),
        mirror=args.mirror,
        timeout_s=args.timeout,
        progress=progress,
    )
    if args.json:
        print_json(
            {
                "heliostat": s.heliostat_id,
                "records_listed": s.records_listed,
                "records_selected": s.records_selected,
                "files_downloaded": s.downloaded,
                "files_skipped_complete": s.skipped,
                "files_verified": s.verified,
                "failed": [{"url": u, "reason": r} for u, r in s.failed],
                "out": s.out,
            }
        )
    else:
        print(
            f"{s.heliostat_id}: {s.records_selected} of {s.records_listed} records; files: "
            f"{s.downloaded} downloaded, {s.skipped} already complete, {s.verified} checked "
            f"against the catalogue's checksum/size, {len(s.failed)} failed; in {s.out}"
        )
        for _url, reason in s.failed:
            print(f"  failed: {reason}")
    return 1 if s.failed else 0
