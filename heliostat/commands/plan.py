"""``heliostat plan --field F``: plan a calibration campaign (who visits which target when)."""

from __future__ import annotations

import argparse
import math

from heliostat.commands._common import id_sort_key, print_json, print_table


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``heliostat plan`` parser to ``sub``, the CLI's top-level subcommands."""
    p = sub.add_parser(
        "plan",
        help="plan a calibration campaign: sun positions per heliostat, targets, days",
        description="Choose for every heliostat the sun positions that calibrate its "
        "parameter set with the fewest visits (expected held-out pointing error from the "
        "fit's Jacobian) and schedule the field across the targets and days, within the "
        "sun elevation limit. Writes a plan file for `heliostat campaign --plan` and "
        "`heliostat sim campaign --plan`. See docs/campaign.md.",
    )
    p.add_argument("--field", required=True, help="field.toml")
    p.add_argument(
        "--targets",
        default="1",
        help="number of targets (the field's first K) or comma-separated target ids (default 1)",
    )
    p.add_argument("--start", default=None, help="first day, YYYY-MM-DD UTC (default today)")
    p.add_argument("--days", type=int, default=30, help="days available (default 30)")
    p.add_argument("--out", default="plan.json", help="plan file to write (default plan.json)")
    p.add_argument(
        "--visit-minutes",
        type=float,
        default=3.0,
        help="time one visit holds a target (default 3)",
    )
    p.add_argument(
        "--min-elevation-deg",
        type=float,
        default=15.0,
        help="no visits with the sun lower (default 15, as plant.toml)",
    )
    p.add_argument(
        "--noise-mrad",
        type=float,
        default=0.2,
        help="measurement noise, beam per axis [mrad] (default 0.2)",
    )
    p.add_argument(
        "--target-error-mrad",
        type=float,
        default=0.15,
        help="expected held-out error at which a heliostat is done [mrad] (default 0.15)",
    )
    p.add_argument(
        "--groups",
        default=None,
        help="parameter groups to make identifiable, comma-separated (default: each "
        "drive's defaults)",
    )
    p.add_argument(
        "--policy",
        choices=("design", "round-robin"),
        default="design",
        help="design (default) or the naive round-robin, for comparison",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def _targets(text: str, field_cfg) -> tuple[str, ...]:
    text = text.strip()
    if text.isdigit():
        k = int(text)
        have = list(field_cfg.targets)
        if not 1 <= k <= len(have):
            raise ValueError(
                f"--targets {k}: the field has {len(have)} target(s) ({', '.join(have)})"
            )
        return tuple(have[:k])
    ids = tuple(t.strip() for t in text.split(",") if t.strip())
    for t in ids:
        if t not in field_cfg.targets:
            raise ValueError(
                f"--targets: {t!r} is not a target of the field (have: "
                f"{', '.join(field_cfg.targets)})"
            )
    if len(set(ids)) != len(ids) or not ids:
        raise ValueError(f"--targets: expected distinct target ids, got {text!r}")
    return ids


def run(args: argparse.Namespace) -> int:
    """Plan, write ``--out``, print the summary."""
    import pandas as pd

    from heliostat.campaign.plan import PlanSettings, plan_campaign
    from heliostat.campaign.plan_file import write_plan
    from heliostat.config import load_field

    field_cfg = load_field(args.field)
    start = args.start or pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d")
    visit_s = args.visit_minutes * 60.0
    bin_s = visit_s * max(1, round(900.0 / visit_s))
    if 86400 % bin_s:
        raise ValueError(
            f"--visit-minutes {args.visit_minutes:g}: a day must hold a whole number of "
            "visits of 15 min groups (e.g. 1, 2, 3, 5, 15)"
        )
    if not 0 <= args.min_elevation_deg < 90:
        raise ValueError(f"--min-elevation-deg must lie in [0, 90), got {args.min_elevation_deg}")
    settings = PlanSettings(
        start_date=start,
        days=args.days,
        target_ids=_targets(args.targets, field_cfg),
        visit_s=visit_s,
        bin_s=bin_s,
        min_elevation_rad=math.radians(args.min_elevation_deg),
        noise_mrad=args.noise_mrad,
        target_error_mrad=args.target_error_mrad,
        groups=tuple(g.strip() for g in args.groups.split(",")) if args.groups else None,
        policy=args.policy,
    )
    plan = plan_campaign(field_cfg, settings, field_name=str(args.field))
    write_plan(plan, args.out)
    s = plan.summary
    if args.json:
        print_json({**s, "out": str(args.out)})
        return 0
    rows = [
        {
            "heliostat": hid,
            "target": h.target_id or "-",
            "visits": h.visits,
            "expected_error_mrad": h.expected_error_mrad,
            "condition": h.condition,
            "done": "yes" if h.done else (h.reason or "no"),
        }
        for hid, h in sorted(plan.heliostats.items(), key=lambda kv: id_sort_key(kv[0]))
    ]
    print_table(rows)
    days = (
        f"all done in {s['days_used']} day(s)"
        if s["days_used"]
        else (f"{s['done']} of {s['planned']} done within {settings.days} day(s)")
    )
    print(
        f"plan ({settings.policy}): {s['heliostats']} heliostats on "
        f"{', '.join(settings.target_ids)}, {s['visits']} visits of "
        f"{args.visit_minutes:g} min, {days} -> {args.out}"
    )
    return 0
