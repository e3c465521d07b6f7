"""``heliostat sim campaign``: simulate a calibration campaign and write its folder.

The simulator is imported lazily (the plant-side package must not depend on it).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from heliostat.commands._common import print_json
from heliostat.kinematics import drive_names
from heliostat.progress import Progress

#: Files a campaign folder holds; an existing folder with ``campaign.json`` is replaced.
_CAMPAIGN_FILES = ("campaign.json", "field.toml", "camera.toml", "truth.json", "observations.csv")


def parse_size(text: str) -> tuple[int, int]:
    """``"WxH"`` → (width_px, height_px)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels, got {text!r}") from None
    if w < 16 or h < 16:
        raise argparse.ArgumentTypeError(f"camera size must be at least 16x16, got {text!r}")
    return w, h


def prepare_out_dir(out: Path) -> None:
    """Create ``out``; an earlier campaign there is replaced, any other content refused.

    Raises
    ------
    ValueError
        When ``out`` is a file or a non-empty folder that is not a campaign folder.
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / "campaign.json").is_file():
            raise ValueError(
                f"--out {out}: folder is not empty and holds no campaign.json; "
                "choose an empty or new folder"
            )
        for name in _CAMPAIGN_FILES:
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "frames", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def add_campaign_options(
    p: argparse.ArgumentParser,
    days: int,
    frame_heliostats: int,
    frames_per_heliostat: int | None = None,
) -> None:
    """Options shared by ``sim campaign`` and ``demo``."""
    p.add_argument("--days", type=int, default=days, help=f"days of campaign (default {days})")
    p.add_argument(
        "--start", default="2025-04-01", help="first day, YYYY-MM-DD UTC (default 2025-04-01)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--drives",
        choices=(*drive_names(), "mixed"),
        default="mixed",
        help="drive types of a generated field (default mixed)",
    )
    p.add_argument(
        "--interval-h", type=float, default=1.5, help="hours between visits (default 1.5)"
    )
    p.add_argument(
        "--cloudiness",
        type=float,
        default=0.2,
        help="fraction of time under cloud, 0 = clear (default 0.2)",
    )
    p.add_argument(
        "--noise-mrad",
        type=float,
        default=0.2,
        help="spot measurement noise as beam error per axis [mrad] (default 0.2)",
    )
    p.add_argument(
        "--frame-heliostats",
        type=int,
        default=frame_heliostats,
        help=f"first N heliostats get camera frames; 0 = image-free (default {frame_heliostats})",
    )
    p.add_argument(
        "--frames-per-heliostat",
        type=int,
        default=frames_per_heliostat,
        help="frames for the first M visits of each framed heliostat "
        f"(default {frames_per_heliostat if frames_per_heliostat is not None else 'all'})",
    )
    p.add_argument(
        "--min-elevation-deg",
        type=float,
        default=10.0,
        help="no visits with the sun lower than this [deg] (default 10)",
    )
    p.add_argument(
        "--spot-shape",
        choices=("round", "faceted", "streaky"),
        default="round",
        help="flux-spot shape in the frames (default round)",
    )
    p.add_argument(
        "--camera-size",
        type=parse_size,
        default=(1280, 1024),
        metavar="WxH",
        help="camera sensor size in pixels (default 1280x1024)",
    )
    p.add_argument(
        "--target-style",
        choices=("sunlit", "aruco"),
        default="sunlit",
        help="sunlit: a real Jülich empty-target image in sunlight, camera exposed for the "
        "board, registered by the camera pose; aruco: the ArUco board in diffuse light "
        "(default sunlit)",
    )
    p.add_argument(
        "--target-images",
        default="",
        metavar="DIR",
        help="folder of the plant's own empty-target images for --target-style sunlit "
        "(rectified, cropped to the corner marks; default: the shipped Jülich set)",
    )
    p.add_argument(
        "--bit-depth",
        type=int,
        choices=(8, 10, 12, 14, 16),
        default=None,
        help="camera ADC bits (default 8 for sunlit, as the Jülich camera; 12 for aruco)",
    )
    p.add_argument(
        "--effects",
        default="all",
        metavar="NAMES",
        help="effects outside the fitted model, comma-separated from sag, thermal, wind, "
        "canting, encoder, survey, clock, refraction; 'all' (default, realistic) or 'none' "
        "(see sim/effects.py)",
    )
    p.add_argument(
        "--no-effects",
        action="store_const",
        const="none",
        dest="effects",
        help="the clean simulator: the truth lies inside the fitted model (= --effects none)",
    )


def effects_from_text(text: str):
    """``--effects`` value → :class:`sim.effects.Effects` (``all``, ``none`` or names).

    Raises
    ------
    ValueError
        Naming the unknown effect and the known ones.
    """
    from sim.effects import Effects

    text = (text or "none").strip().lower()
    if text == "all":
        return Effects.realistic()
    if text == "none":
        return Effects.none()
    try:
        return Effects.from_names(text.split(","))
    except ValueError as exc:
        raise ValueError(f"--effects: {exc}") from None


def settings_from_args(args: argparse.Namespace):
    """The simulated campaign's settings from the command line.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed ``heliostat sim campaign`` (or ``demo``) options: start date, days,
        interval [h], minimum sun elevation [deg], pointing noise [mrad], cloudiness,
        frame options, ``--effects`` (absent = none).

    Returns
    -------
    sim.campaign.CampaignSettings
    """

    from sim.campaign import CampaignSettings

    style = getattr(args, "target_style", "aruco")
    bits = getattr(args, "bit_depth", None)
    return CampaignSettings(
        start_date=args.start,
        days=args.days,
        interval_h=args.interval_h,
        min_elevation_deg=getattr(args, "min_elevation_deg", 10.0),
        spot_shape=getattr(args, "spot_shape", "round"),
        noise_mrad=args.noise_mrad,
        cloudiness=args.cloudiness,
        frame_heliostats=args.frame_heliostats,
        frames_per_heliostat=args.frames_per_heliostat,
        camera_width_px=args.camera_size[0],
        camera_height_px=args.camera_size[1],
        target_style=style,
        target_images=getattr(args, "target_images", "") or "",
        camera_bit_depth=bits if bits is not None else (8 if style == "sunlit" else 12),
        effects=effects_from_text(getattr(args, "effects", "none")),
    )


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``heliostat sim campaign`` parser to ``sub``, ``heliostat sim``'s subcommands."""
    p = sub.add_parser(
        "campaign",
        help="simulate a calibration campaign (frames, observations.csv, truth)",
        description="Simulate a calibration campaign on a field (from --field, or generated "
        "with --heliostats) and write frames, observations.csv, field.toml, camera.toml, "
        "truth.json and campaign.json to --out. Same seed, same bytes.",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--field", help="field.toml of the plant to simulate")
    src.add_argument(
        "--heliostats", type=int, help="generate a field with N heliostats (default 20)"
    )
    p.add_argument("--truth", help="truth.json with the true errors (default: drawn from --seed)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--plan",
        default=None,
        help="plan.json from `heliostat plan`: visit at the planned times (its start date "
        "and days replace --start and --days) instead of rounds every --interval-h",
    )
    add_campaign_options(p, days=3, frame_heliostats=2)
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(func=run)


def build_plant(args: argparse.Namespace):
    """Field and truth from --field/--truth or generated from --heliostats and --seed."""
    import numpy as np

    from heliostat.config import load_field
    from sim.campaign import Seeds
    from sim.field import draw_truth, generate_field, load_truth

    seeds = Seeds.from_seed(args.seed)
    if getattr(args, "field", None):
        field_cfg = load_field(args.field)
    else:
        n = args.heliostats if args.heliostats is not None else 20
        if n < 1:
            raise ValueError(f"--heliostats must be at least 1, got {n}")
        field_cfg = generate_field(n, np.random.default_rng(seeds.layout), drives=args.drives)
    if getattr(args, "truth", None):
        truth = load_truth(args.truth, field_cfg)
    else:
        truth = draw_truth(field_cfg, np.random.default_rng(seeds.truth))
    return field_cfg, truth


def plan_schedule_for(path, field_cfg, settings):
    """A plan file's visits as the simulated campaign's schedule.

    The simulated campaign observes one target (:func:`sim.campaign.pick_target`), so the
    plan must schedule that one only. Returns the settings with the plan's start date,
    days and elevation limit, the schedule frame, and the manifest's ``plan`` entry.

    Raises
    ------
    InputError
        For a plan naming heliostats or targets the field lacks, or other targets.
    """
    from dataclasses import replace

    from heliostat.campaign.plan_file import check_plan_field, load_plan
    from heliostat.errors import InputError
    from sim.campaign import campaign_field, pick_target

    plan = load_plan(path)
    check_plan_field(plan, field_cfg.heliostats, field_cfg.targets, str(path))
    target = pick_target(campaign_field(field_cfg, settings), settings.target_id)
    other = sorted(set(plan.targets) - {target.id})
    if other:
        raise InputError(
            f"{path}: plans target(s) {', '.join(other)}; the simulated campaign observes "
            f"{target.id!r} only (plan with --targets {target.id})"
        )
    settings = replace(
        settings,
        start_date=plan.start_date,
        days=plan.days,
        min_elevation_deg=min(settings.min_elevation_deg, plan.min_elevation_deg),
    )
    info = {"file": Path(path).name, "policy": plan.policy, "visits": len(plan.visits)}
    return settings, plan.schedule_frame(target.id), info


def run(args: argparse.Namespace) -> int:
    """Run ``heliostat sim campaign``: simulate a calibration campaign (frames,
    ``observations.csv``, configs, hidden truth) into ``--out``.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line; this reads ``--json``, ``--out``, ``--seed``.

    Returns
    -------
    int
        Exit code: 0.
    """

    from sim.campaign import write_campaign

    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    settings = settings_from_args(args)
    field_cfg, truth = build_plant(args)
    schedule, plan_info = None, None
    if getattr(args, "plan", None):
        settings, schedule, plan_info = plan_schedule_for(args.plan, field_cfg, settings)
    out = Path(args.out)
    prepare_out_dir(out)
    t0 = time.perf_counter()
    result, man = write_campaign(
        out,
        field_cfg,
        truth,
        settings,
        args.seed,
        progress=Progress("campaign"),
        schedule=schedule,
        plan_info=plan_info,
    )
    if args.json:
        print_json(man)
        return 0
    c = man["counts"]
    skipped = ", ".join(f"{k} {v}" for k, v in c["skipped"].items() if v) or "none"
    print(
        f"campaign: {c['heliostats']} heliostats, {settings.days} day(s) from "
        f"{settings.start_date}, {c['observations']} observations of {c['scheduled_visits']} "
        f"visits (left out: {skipped}), {man['frames']['written']} frames, "
        f"{time.perf_counter() - t0:.1f} s -> {out}"
    )
    return 0
