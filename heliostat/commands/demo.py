"""``heliostat demo``: the whole loop on a simulated plant, stage by stage.

The demo is a sequence of named stages (:data:`DEMO_STAGES`), each a function taking the
shared :class:`DemoContext` and returning a small JSON-able dict that goes into
``summary.json`` under the stage's name. Later stages (detection, calibration, bridge
delivery, ledger, report) are appended to the tuple; they find what earlier stages made
in ``ctx.state`` (``field``, ``truth``, ``campaign_dir``, ``observations``, ``camera``)
and write their own files in a subfolder of ``ctx.out``.

Today the stages are:

``plant``
    generate a field (radial-staggered, mixed drives) and draw its hidden true errors;
``campaign``
    run a calibration campaign in the simulator: frames for a few visits, the rest
    image-free, written to ``<out>/campaign/``.

The simulator is imported lazily inside the stages.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from heliostat.commands._common import print_json
from heliostat.commands.sim_campaign import (
    add_campaign_options,
    prepare_out_dir,
    settings_from_args,
)
from heliostat.progress import Progress


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What the demo does (the CLI's options).

    Attributes
    ----------
    heliostats : int
        Size of the simulated field.
    days : int
        Days of calibration campaign.
    seed : int
        Seed of everything random.
    out : str
        Output folder.
    drives : str
        ``"mixed"`` or a registered drive type (``"azel"``, ``"linear"``, …).
    start : str
        First campaign day, ``YYYY-MM-DD`` UTC.
    frame_heliostats : int
        The first this-many heliostats get camera frames.
    frames_per_heliostat : int or None
        Each of those heliostats gets frames for its first this-many visits (a sun-on and
        a dark frame each); None = all its visits.
    camera_size : (int, int)
        Camera sensor (width, height). [px]
    interval_h, cloudiness, noise_mrad, min_elevation_deg : float
        Campaign settings (see :class:`sim.campaign.CampaignSettings`).
    spot_shape : str
        Flux-spot shape in the frames: ``"round"``, ``"faceted"`` or ``"streaky"``.
    target_style : str
        ``"sunlit"`` (a real empty-target image in sunlight, registered by the camera
        pose) or ``"aruco"`` (the ArUco board); see :mod:`sim.campaign`.
    target_images : str
        Folder of empty-target images for ``sunlit`` (empty = the shipped Jülich set).
    bit_depth : int or None
        Camera ADC bits; None = 8 for ``sunlit``, 12 for ``aruco``.
    effects : str
        Effects outside the fitted model: ``"all"``, ``"none"`` or comma-separated names
        (:data:`sim.effects.EFFECT_NAMES`).
    """

    heliostats: int = 50
    days: int = 3
    seed: int = 0
    out: str = "demo_out"
    drives: str = "mixed"
    start: str = "2025-04-01"
    frame_heliostats: int = 2
    frames_per_heliostat: int | None = 3
    camera_size: tuple[int, int] = (1280, 1024)
    interval_h: float = 1.5
    cloudiness: float = 0.2
    noise_mrad: float = 0.2
    min_elevation_deg: float = 10.0
    spot_shape: str = "round"
    target_style: str = "sunlit"
    target_images: str = ""
    bit_depth: int | None = None
    effects: str = "all"

    def __post_init__(self) -> None:
        if self.heliostats < 1:
            raise ValueError(f"--heliostats must be at least 1, got {self.heliostats}")
        if self.days < 1:
            raise ValueError(f"--days must be at least 1, got {self.days}")
        if self.seed < 0:
            raise ValueError(f"--seed must be >= 0, got {self.seed}")


@dataclass(slots=True)
class DemoContext:
    """Shared state of a demo run.

    Attributes
    ----------
    options : DemoOptions
    out : Path
        Output folder (exists).
    state : dict
        Objects stages hand on (``field``, ``truth``, ``campaign_dir``, ...).
    log : callable
        Prints a progress line for a person (stderr).
    """

    options: DemoOptions
    out: Path
    state: dict[str, Any] = field(default_factory=dict)
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True)


Stage = tuple[str, Callable[[DemoContext], dict[str, Any]]]


# --------------------------------------------------------------------------- stages
def stage_plant(ctx: DemoContext) -> dict[str, Any]:
    """Generate the plant and its hidden true errors."""
    import numpy as np

    from sim.campaign import Seeds
    from sim.field import draw_truth, generate_field

    o = ctx.options
    seeds = Seeds.from_seed(o.seed)
    field_cfg = generate_field(o.heliostats, np.random.default_rng(seeds.layout), drives=o.drives)
    truth = draw_truth(field_cfg, np.random.default_rng(seeds.truth))
    ctx.state.update(field=field_cfg, truth=truth)
    drives: dict[str, int] = {}
    for h in field_cfg.heliostats.values():
        drives[h.kinematics.drive] = drives.get(h.kinematics.drive, 0) + 1
    pos = np.array([h.position_enu_m for h in field_cfg.heliostats.values()])
    dist = np.linalg.norm(pos[:, :2], axis=1)
    ang = [
        abs(v) * 1e3 for e in truth.values() for n, v in e.to_dict().items() if n.endswith("_rad")
    ]
    return {
        "heliostats": len(field_cfg.heliostats),
        "drives": drives,
        "buses": len(field_cfg.buses),
        "targets": list(field_cfg.targets),
        "distance_to_tower_m": [round(float(dist.min()), 1), round(float(dist.max()), 1)],
        "true_angular_errors_mrad": [round(min(ang), 2), round(max(ang), 2)],
    }


def stage_campaign(ctx: DemoContext) -> dict[str, Any]:
    """Simulate the calibration campaign and write it to ``<out>/campaign``."""
    import numpy as np
    import pandas as pd

    from sim.campaign import campaign_field, write_campaign

    o = ctx.options
    args = argparse.Namespace(
        start=o.start,
        days=o.days,
        interval_h=o.interval_h,
        min_elevation_deg=o.min_elevation_deg,
        spot_shape=o.spot_shape,
        noise_mrad=o.noise_mrad,
        cloudiness=o.cloudiness,
        frame_heliostats=o.frame_heliostats,
        frames_per_heliostat=o.frames_per_heliostat,
        camera_size=o.camera_size,
        target_style=o.target_style,
        target_images=o.target_images,
        bit_depth=o.bit_depth,
        effects=o.effects,
    )
    settings = settings_from_args(args)
    cdir = ctx.out / "campaign"
    prepare_out_dir(cdir)
    field_cfg = ctx.state["field"]
    result, man = write_campaign(
        cdir, field_cfg, ctx.state["truth"], settings, o.seed, progress=Progress("campaign")
    )
    obs = result.observations
    field_cfg = campaign_field(field_cfg, settings)  # as written: a sunlit board has no markers
    ctx.state.update(
        field=field_cfg,
        effect_draws=result.effect_draws,
        campaign_dir=cdir,
        observations=obs,
        camera=result.camera,
        campaign_manifest=man,
    )
    out: dict[str, Any] = {
        "folder": str(cdir),
        "days": o.days,
        "start_date": o.start,
        "visits": result.scheduled,
        "observations": len(obs),
        "skipped": result.skipped,
        "frames": result.frames_written,
        "observations_with_frames": man["counts"]["observations_with_frames"],
        "image_free_observations": len(obs) - man["counts"]["observations_with_frames"],
    }
    if len(obs):
        # beam pointing error before calibration: angle, seen from the heliostat, between
        # the aim point (target centre) and the true spot
        from heliostat.frames import angle_between

        tgt = field_cfg.target(result.target_id)
        pos = np.array([field_cfg.heliostats[h].position_enu_m for h in obs["heliostat_id"]])
        true_enu = tgt.plane_to_enu(obs[["true_spot_x_m", "true_spot_y_m"]].to_numpy())
        err_rad = angle_between(true_enu - pos, tgt.centre_enu_m - pos)
        off = np.hypot(obs["true_spot_x_m"], obs["true_spot_y_m"]).to_numpy()
        out["uncalibrated_spot_offset_m_median"] = round(float(np.median(off)), 3)
        out["uncalibrated_pointing_error_mrad_median"] = round(float(np.median(err_rad)) * 1e3, 2)
        t = pd.DatetimeIndex(pd.to_datetime(obs["time_utc"]))
        out["first_time_utc"] = t.min().strftime("%Y-%m-%dT%H:%M:%SZ")
        out["last_time_utc"] = t.max().strftime("%Y-%m-%dT%H:%M:%SZ")
    return out


def _loop(name: str) -> Callable[[DemoContext], dict[str, Any]]:
    """A stage of :mod:`heliostat.commands.demo_loop`, imported when it runs."""

    def run(ctx: DemoContext) -> dict[str, Any]:
        from heliostat.commands import demo_loop

        return getattr(demo_loop, f"stage_{name}")(ctx)

    run.__name__ = f"stage_{name}"
    return run


#: The demo's stages, in order. Append ``(name, function)`` pairs for later stages.
DEMO_STAGES: tuple[Stage, ...] = (
    ("plant", stage_plant),
    ("campaign", stage_campaign),
    ("detect", _loop("detect")),
    ("calibrate", _loop("calibrate")),
    ("deliver", _loop("deliver")),
    ("verify", _loop("verify")),
    ("ledger", _loop("ledger")),
    ("report", _loop("report")),
)


# --------------------------------------------------------------------------- runner
#: What a demo writes into its folder; an earlier demo's copies are removed first, so a run
#: that fails half-way never leaves an old summary or report beside new data.
DEMO_OUTPUTS = ("summary.json", "report.html", "emissions.csv", "history.sqlite",
                "history.sqlite-wal", "history.sqlite-shm", "bridge-journal.sqlite",
                "bridge-journal.sqlite-wal", "bridge-journal.sqlite-shm")  # fmt: skip
DEMO_FOLDERS = ("campaign", "detect", "calibrate")


def prepare_demo_dir(out: Path) -> None:
    """Create the demo folder (an earlier demo's outputs are removed); refuse a non-empty
    folder that is not an earlier demo's."""
    import shutil

    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "summary.json").is_file():
        raise ValueError(
            f"--out {out}: folder is not empty and holds no summary.json of an earlier demo; "
            "choose an empty or new folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    for name in DEMO_OUTPUTS:
        (out / name).unlink(missing_ok=True)
    for name in DEMO_FOLDERS:
        if (out / name).is_dir():
            shutil.rmtree(out / name)


def run_demo(
    options: DemoOptions,
    stages: tuple[Stage, ...] = DEMO_STAGES,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the demo stages in order and write ``summary.json``.

    Returns
    -------
    dict
        ``{"options": ..., "stages": {name: stage dict with "seconds"}, "seconds": total}``.
    """
    out = Path(options.out)
    prepare_demo_dir(out)
    ctx = DemoContext(options, out)
    if log is not None:
        ctx.log = log
    summary: dict[str, Any] = {"options": asdict(options), "stages": {}}
    ctx.state["stages"] = summary["stages"]
    t_all = time.perf_counter()
    try:
        for i, (name, func) in enumerate(stages, 1):
            ctx.log(f"[{i}/{len(stages)}] {name} ...")
            t0 = time.perf_counter()
            info = dict(func(ctx))
            info["seconds"] = round(time.perf_counter() - t0, 2)
            summary["stages"][name] = info
    finally:
        if "emulators" in ctx.state:
            from heliostat.commands.demo_loop import stop_emulators

            stop_emulators(ctx)
    summary["seconds"] = round(time.perf_counter() - t_all, 2)
    # per heliostat (docs/report.md): status, errors, parameters, flags, delivery, reason
    # and next step; and the "what to do next" groups
    for key, state_key in (("heliostats", "heliostat_records"), ("next_steps", "next_steps")):
        if state_key in ctx.state:
            summary[key] = ctx.state[state_key]
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out / "summary.json")  # atomic: a summary is whole or absent
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """A few readable lines about what the demo did."""
    lines = []
    st = summary["stages"]
    if "plant" in st:
        p = st["plant"]
        drives = ", ".join(f"{n} {k}" for k, n in p["drives"].items())
        lo, hi = p["distance_to_tower_m"]
        elo, ehi = p["true_angular_errors_mrad"]
        lines.append(
            f"plant     {p['heliostats']} heliostats ({drives}) at {lo:.0f}-{hi:.0f} m from the "
            f"tower, {p['buses']} bus(es); hidden errors {elo:.1f}-{ehi:.1f} mrad per angle"
        )
    if "campaign" in st:
        c = st["campaign"]
        lines.append(
            f"campaign  {c['days']} day(s) from {c['start_date']}: {c['observations']} "
            f"observations of {c['visits']} visits; frames for {c['observations_with_frames']} "
            f"visits ({c['frames']} PNGs, sun-on + dark), {c['image_free_observations']} "
            "image-free"
        )
        if "uncalibrated_pointing_error_mrad_median" in c:
            lines.append(
                f"          before calibration: median spot offset "
                f"{c['uncalibrated_spot_offset_m_median']:.2f} m "
                f"({c['uncalibrated_pointing_error_mrad_median']:.1f} mrad beam error)"
            )
        lines.append(f"          written to {c['folder']}")
    if "detect" in st:
        d = st["detect"]
        if not d["frames"]:
            lines.append("detect    no frames in this campaign (--frame-heliostats 0)")
        else:
            lines.append(
                f"detect    {d['detected']}/{d['frames']} frames measured; spot error vs truth "
                f"median {d.get('spot_error_mm_median', float('nan')):.2f} mm, "
                f"max {d.get('spot_error_mm_max', float('nan')):.2f} mm"
            )
    if "calibrate" in st:
        c = st["calibrate"]
        lines.append(
            f"calibrate {c['fitted']} heliostats fitted ({len(c['failed'])} failed), each "
            f"parameter set chosen by nested cross-validation ({len(c['parameter_sets'])} "
            f"different sets); residual RMS median {c['rms_before_mrad_median']:.2f} -> "
            f"{c['rms_after_mrad_median']:.2f} mrad, leave-one-out "
            f"{c['loo_rms_mrad_median']:.2f}, nested {c['nested_rms_mrad_median']:.2f}"
        )
    if "deliver" in st:
        d = st["deliver"]
        oc = ", ".join(f"{v} {k}" for k, v in sorted(d["outcomes"].items())) or "none"
        lines.append(
            f"deliver   {d['commands']} parameter sets over Modbus RTU to emulated controllers: "
            f"{oc}; {len(d['refused_by_safety'])} refused by the safety limits"
        )
    if "verify" in st:
        v = st["verify"]
        lines.append(
            f"verify    held-out day {v['held_out_day']}, beam pointing error median (p95): "
            f"before {v['before_mrad_median']:.2f} ({v['before_mrad_p95']:.2f}) mrad, "
            f"after {v['after_mrad_median']:.2f} ({v['after_mrad_p95']:.2f}) mrad"
            + (
                f"; the {v['heliostats_corrected']} corrected alone: "
                f"{v['after_corrected_mrad_median']:.2f} ({v['after_corrected_mrad_p95']:.2f})"
                f" mrad"
                if v.get("heliostats_not_corrected") and "after_corrected_mrad_median" in v
                else ""
            )
        )
        lines.append(
            f"          as delivered at noon through the controllers (with backlash): "
            f"{v['moves_confirmed']} moves confirmed, error median "
            f"{v['after_via_controllers_mrad_median']:.2f} "
            f"(p95 {v['after_via_controllers_mrad_p95']:.2f}) mrad; "
            f"{v.get('camera_checked', 0)} spots re-measured on camera"
            + (
                f"; leaves out the {len(v['heliostats_not_corrected'])} not corrected"
                if v.get("heliostats_not_corrected")
                else ""
            )
        )
    from heliostat.commands.demo_loop import not_corrected_sentences

    for k, line in enumerate(not_corrected_sentences(st)):
        lines.append(("left out  " if k == 0 else "          ") + line)
    for k, g in enumerate(summary.get("next_steps", [])):
        ids = g["heliostats"]
        names = ", ".join(ids[:8]) + (f" and {len(ids) - 8} more" if len(ids) > 8 else "")
        lines.append(("next      " if k == 0 else "          ") + f"{g['title']} ({names})")
    if summary.get("next_steps") and "report" in st:
        lines.append(
            "          reason and next step per heliostat: the report's table, and "
            '"heliostats" in summary.json'
        )
    if "ledger" in st:
        from heliostat.commands.demo_loop import ledger_sentences

        for k, line in enumerate(ledger_sentences(st["ledger"])):
            lines.append(("ledger    " if k == 0 else "          ") + line)
    if "report" in st:
        lines.append(f"report    {st['report']['report']}")
    known = {"plant", "campaign", "detect", "calibrate", "deliver", "verify", "ledger", "report"}
    for name, info in st.items():
        if name not in known:
            brief = ", ".join(f"{k} {v}" for k, v in info.items() if not isinstance(v, dict))
            lines.append(f"{name:<9} {brief}")
    lines.append(f"done in {summary['seconds']:.1f} s; summary.json in {summary['options']['out']}")
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``heliostat demo`` parser to ``sub``, the CLI's top-level subcommands."""
    d = DemoOptions()
    p = sub.add_parser(
        "demo",
        help="run the whole loop on a simulated plant",
        description="Build a simulated plant, run a short calibration campaign in the "
        "simulator, write its frames and observations to --out and print a summary.",
    )
    p.add_argument(
        "--heliostats", type=int, default=d.heliostats, help=f"field size (default {d.heliostats})"
    )
    p.add_argument("--out", default=d.out, help=f"output folder (default {d.out}/)")
    add_campaign_options(
        p,
        days=d.days,
        frame_heliostats=d.frame_heliostats,
        frames_per_heliostat=d.frames_per_heliostat,
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``heliostat demo``: the whole loop on a simulated plant (campaign, detection,
    calibration, delivery, verification, ledger, report) into ``--out``.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line; this reads ``--camera-size``, ``--cloudiness``,
        ``--days``, ``--drives``, ``--frame-heliostats``, ``--frames-per-heliostat``,
        ``--heliostats``, ``--interval-h``, ``--json``, ``--min-elevation-deg``,
        ``--noise-mrad``, ``--out``, ``--seed``, ``--spot-shape``, ``--start``,
        ``--effects``.

    Returns
    -------
    int
        Exit code: 0 when the demo ran.
    """

    options = DemoOptions(
        heliostats=args.heliostats,
        days=args.days,
        seed=args.seed,
        out=args.out,
        drives=args.drives,
        start=args.start,
        frame_heliostats=args.frame_heliostats,
        frames_per_heliostat=args.frames_per_heliostat,
        camera_size=tuple(args.camera_size),
        interval_h=args.interval_h,
        cloudiness=args.cloudiness,
        noise_mrad=args.noise_mrad,
        min_elevation_deg=args.min_elevation_deg,
        spot_shape=args.spot_shape,
        target_style=args.target_style,
        target_images=args.target_images,
        bit_depth=args.bit_depth,
        effects=args.effects,
    )
    summary = run_demo(options)
    if args.json:
        print_json(summary)
    else:
        print(format_summary(summary))
    return 0
