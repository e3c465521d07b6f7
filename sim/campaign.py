"""Simulated calibration campaigns: schedule, observations, frames, and their files.

Over a few days each heliostat is brought onto the calibration target at well-spread sun
positions (every ``interval_h`` while the sun is above ``min_elevation_deg``; the
heliostats take turns, one at a time, as on a real plant). Each visit:

1. the plant commands integer motor steps from its NOMINAL model, aiming at the target
   centre (``HeliostatKinematics.inverse``, rounded);
2. the beam leaves by the TRUE model (``forward(steps, true_errors)``) and hits the
   target plane: that point is the ground truth ``true_spot_*``;
3. the recorded spot ``spot_*`` is the truth seen through the measurement model of
   :mod:`sim.observe`: the beam direction tilted by ``noise_mrad`` per axis;
4. for the heliostats chosen for images, the camera renders a sun-on frame (the flux spot
   of :func:`sim.optics.flux_spot` dimmed by the clouds) and a dark (sun-off) frame.

Target styles (``CampaignSettings.target_style``): ``aruco`` draws the ArUco board on a
darker wall in diffuse light, the camera exposed for the spot; ``sunlit`` draws a real
empty-target image (:mod:`sim.real_texture`; the shipped Jülich set or
``target_images``) in sunlight, the camera exposed for the board (50-62 % of full scale),
the spot only 1.2-2.5x the board, sometimes a shadow of the tower structure, and the
sun-off frame's ambient drifted by up to ±2 % and its shadow moved
(:func:`sim.camera.render_sunlit_pair`). A sunlit board carries no ArUco markers, so the
campaign's ``field.toml`` lists the target without them (:func:`campaign_field`) and the
frames are registered by the camera's pose.

Visits the plant could not make or measure are left out and counted: sun too low,
beam too weak under cloud (``min_dni_w_m2``), aim outside the actuator travel, spot off
the target. Everything is seeded from one integer, so the same seed gives the same content
(on one machine the same bytes; across CPUs see :mod:`sim.reproduce`).

Layout of a campaign folder (:func:`write_campaign`)::

    campaign.json       manifest: seed, version, settings, counts, file names
    field.toml          plant config (no true errors)
    camera.toml         camera config (when frames were made)
    truth.json          true kinematic errors per heliostat
    observations.csv    one row per visit (columns sim.observe.OBSERVATION_COLUMNS)
    frames/<id>/<UTC time>.png        sun-on frame (the CSV's ``frame`` column)
    frames/<id>/<UTC time>_dark.png   the matching sun-off frame
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from heliostat.config import CameraConfig, FieldConfig, Heliostat, Target, dumps_toml
from heliostat.frames import intersect_plane, reflect
from heliostat.kinematics import KinematicErrors, KinematicsError, Pose
from heliostat.paths import join_inside
from heliostat.vision.io import DARK_SUFFIX
from sim.effects import (
    Effects,
    VisitDraws,
    ambient_c,
    approach_signs,
    draw_campaign,
    draw_heliostat,
    draw_visits,
    draws_to_dict,
    true_sun,
    world_beam,
)
from sim.field import field_toml, truth_json
from sim.observe import OBSERVATION_COLUMNS, observation_frame, perturb_directions
from sim.reproduce import stable_numbers
from sim.sky import Sky, clear_series, cloud_series, daylight_windows

#: Schema tag of ``campaign.json``.
MANIFEST_SCHEMA = "heliostat-sim-campaign/1"

#: Cloud factor below which a row is flagged ``cloud``. [1]
CLOUD_FLAG_FACTOR = 0.9

Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class CampaignSettings:
    """What a campaign does.

    Attributes
    ----------
    start_date : str
        First day, ``YYYY-MM-DD`` (UTC).
    days : int
        Number of days.
    interval_h : float
        Time between two visits of the same heliostat. [h]
    min_elevation_deg : float
        No visits with the sun below this elevation. [deg]
    noise_mrad : float
        Measurement noise of the spot, as a beam-direction error per axis. [mrad]
    cloudiness : float
        Long-run fraction of time under cloud (0 = clear sky). [1]
    min_dni_w_m2 : float
        Visits with less beam irradiance are skipped (spot too faint). [W m⁻²]
    target_id : str
        Target to aim at; empty = the first target carrying markers (else the first).
    frame_heliostats : int
        The first this-many heliostats (field order) get camera frames.
    frames_per_heliostat : int or None
        Each of those heliostats gets frames for its first this-many visits (None = all).
    camera_width_px, camera_height_px : int
        Sensor size of the simulated camera. [px]
    spot_shape : str
        Flux-spot shape passed to :func:`sim.optics.flux_spot`.
    target_style : str
        ``"aruco"`` or ``"sunlit"`` (see the module doc).
    target_images : str
        Folder of empty-target images for ``sunlit``; empty = the shipped Jülich set.
    camera_bit_depth : int
        ADC bits of the simulated camera (the Jülich camera: 8). [bit]
    effects : sim.effects.Effects
        Effects outside the fitted model (switches, magnitudes); default all off, the
        clean simulator. ``heliostat sim campaign`` and ``heliostat demo`` switch them
        all on (:meth:`sim.effects.Effects.realistic`).
    """

    start_date: str = "2025-04-01"
    days: int = 3
    interval_h: float = 1.5
    min_elevation_deg: float = 10.0
    noise_mrad: float = 0.2
    cloudiness: float = 0.2
    min_dni_w_m2: float = 200.0
    target_id: str = ""
    frame_heliostats: int = 2
    frames_per_heliostat: int | None = None
    camera_width_px: int = 1280
    camera_height_px: int = 1024
    spot_shape: str = "round"
    target_style: str = "aruco"
    target_images: str = ""
    camera_bit_depth: int = 12
    effects: Effects = Effects()

    def __post_init__(self) -> None:
        from sim.real_texture import TARGET_STYLES

        if self.target_style not in TARGET_STYLES:
            raise ValueError(
                f"target_style must be one of {', '.join(TARGET_STYLES)}, got {self.target_style!r}"
            )
        if self.camera_bit_depth not in (8, 10, 12, 14, 16):
            raise ValueError(
                f"camera_bit_depth must be 8, 10, 12, 14 or 16, got {self.camera_bit_depth!r}"
            )
        if not isinstance(self.days, int) or self.days < 1:
            raise ValueError(f"days must be a positive integer, got {self.days!r}")
        if not (math.isfinite(self.interval_h) and self.interval_h > 0):
            raise ValueError(f"interval_h must be positive, got {self.interval_h!r}")
        if not -5.0 <= self.min_elevation_deg < 90.0:
            raise ValueError(
                f"min_elevation_deg must lie in [-5, 90), got {self.min_elevation_deg!r}"
            )
        if not (math.isfinite(self.noise_mrad) and self.noise_mrad >= 0):
            raise ValueError(f"noise_mrad must be >= 0, got {self.noise_mrad!r}")
        if self.frame_heliostats < 0:
            raise ValueError(f"frame_heliostats must be >= 0, got {self.frame_heliostats!r}")
        if self.frames_per_heliostat is not None and self.frames_per_heliostat < 0:
            raise ValueError(
                f"frames_per_heliostat must be >= 0, got {self.frames_per_heliostat!r}"
            )


@dataclass(frozen=True, slots=True)
class Seeds:
    """Independent random streams derived from one campaign seed (NumPy SeedSequence)."""

    layout: np.random.SeedSequence
    truth: np.random.SeedSequence
    clouds: np.random.SeedSequence
    noise: np.random.SeedSequence
    frames: np.random.SeedSequence
    effects: np.random.SeedSequence

    @classmethod
    def from_seed(cls, seed: int) -> Seeds:
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        # the sixth child is new: SeedSequence children are keyed by their index, so the
        # first five streams are those of earlier versions (same seed, same draws)
        return cls(*np.random.SeedSequence(int(seed)).spawn(6))


@dataclass(frozen=True, slots=True)
class Frame:
    """One rendered image, to be written at ``path`` (relative to the campaign folder)."""

    path: str
    image: NDArray


@dataclass(frozen=True, slots=True)
class CampaignResult:
    """Observations (``OBSERVATION_COLUMNS``), counts of visits left out, frame count,
    and for a sunlit target each sun-on frame's conditions (image, exposure level,
    contrast, shadow, drift; :func:`sim.real_texture.SunlitConditions`) by frame path."""

    observations: pd.DataFrame
    scheduled: int
    skipped: dict[str, int]
    frames_written: int
    target_id: str
    camera: CameraConfig | None = None
    frame_conditions: dict[str, dict] = field(default_factory=dict)
    effect_draws: dict | None = None


# --------------------------------------------------------------------------- schedule
def pick_target(field_cfg: FieldConfig, target_id: str = "") -> Target:
    """The named target, or the first carrying markers, or the first."""
    if target_id:
        return field_cfg.target(target_id)
    for t in field_cfg.targets.values():
        if t.markers is not None:
            return t
    if not field_cfg.targets:
        raise ValueError(f"field {field_cfg.source!r} has no targets to calibrate on")
    return next(iter(field_cfg.targets.values()))


def campaign_field(field_cfg: FieldConfig, settings: CampaignSettings) -> FieldConfig:
    """The plant as the campaign draws it: for the ``sunlit`` style the calibration target
    (:func:`pick_target`) without ArUco markers (a real board has none), kept first among
    the targets so :func:`pick_target` still finds it; otherwise ``field_cfg`` itself."""
    if settings.target_style != "sunlit":
        return field_cfg
    target = pick_target(field_cfg, settings.target_id)
    if target.markers is None:
        return field_cfg
    targets = {target.id: replace(target, markers=None)}
    targets.update((k, t) for k, t in field_cfg.targets.items() if k != target.id)
    return replace(field_cfg, targets=targets)


def plan_schedule(field_cfg: FieldConfig, settings: CampaignSettings) -> pd.DataFrame:
    """Visit times: per day, from the first minute the sun is above
    ``min_elevation_deg``, a round every ``interval_h``; within a round the heliostats
    follow each other in field order, evenly spread over the interval.

    Returns
    -------
    pandas.DataFrame
        Columns ``heliostat_id`` and ``time_utc`` (UTC timestamps, whole seconds),
        sorted by time. Slots after the day's last minute above the threshold are
        dropped.
    """
    ids = list(field_cfg.heliostats)
    n = len(ids)
    interval = pd.Timedelta(hours=settings.interval_h)
    rows_id: list[str] = []
    rows_t: list[pd.Timestamp] = []
    windows = daylight_windows(
        field_cfg.site, settings.start_date, settings.days, settings.min_elevation_deg
    )
    for a, b in windows:
        k = 0
        while a + k * interval <= b:
            for i, hid in enumerate(ids):
                t = (a + k * interval + i * interval / n).round("s")
                if t <= b:
                    rows_id.append(hid)
                    rows_t.append(t)
            k += 1
    df = pd.DataFrame({"heliostat_id": rows_id, "time_utc": pd.DatetimeIndex(rows_t)})
    return df.sort_values(["time_utc", "heliostat_id"], kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- physics
def command_steps(
    heliostat: Heliostat, aim_enu_m: NDArray, u_sun_enu: NDArray
) -> NDArray[np.float64]:
    """Integer steps the plant sends (nominal model, aim point), NaN where the aim is
    unreachable or outside the travel limits. Shape (N, 2)."""
    kin = heliostat.kinematics
    n = u_sun_enu.shape[0]
    aim = np.broadcast_to(aim_enu_m, (n, 3))
    try:
        theta = kin.inverse_angles(aim, u_sun_enu)
    except KinematicsError:
        theta = np.full((n, 2), np.nan)
        for i in range(n):
            try:
                theta[i] = kin.inverse_angles(aim[i : i + 1], u_sun_enu[i : i + 1])[0]
            except KinematicsError:
                pass
    steps = np.rint(kin.angles_to_steps(theta))
    ok = np.all(np.isfinite(steps), axis=1)
    ok[ok] &= kin.within_limits(steps[ok])
    steps[~ok] = np.nan
    return steps


def true_beam(
    heliostat: Heliostat, steps: NDArray, errors: KinematicErrors, u_sun_enu: NDArray
) -> tuple[Pose, NDArray[np.float64]]:
    """Mirror pose and reflected unit beam of the TRUE model for commanded steps."""
    pose = heliostat.kinematics.forward(steps, errors)
    return pose, reflect(pose.u_normal_enu, u_sun_enu)


def _frame_stem(hid: str, t: pd.Timestamp) -> str:
    return f"frames/{hid}/{t.strftime('%Y%m%dT%H%M%SZ')}"


def simulate_campaign(
    field_cfg: FieldConfig,
    truth: Mapping[str, KinematicErrors],
    settings: CampaignSettings,
    seed: int,
    *,
    camera: CameraConfig | None = None,
    frame_sink: Callable[[Frame], None] | None = None,
    progress: Progress | None = None,
    schedule: pd.DataFrame | None = None,
) -> CampaignResult:
    """Run a campaign in memory.

    Parameters
    ----------
    field_cfg : FieldConfig
        The plant (nominal models).
    truth : mapping heliostat id → KinematicErrors
        True errors; every heliostat of the field needs one.
    settings : CampaignSettings
    seed : int
        Campaign seed; clouds, noise and frames use independent streams of it.
    camera : CameraConfig, optional
        Needed when frames are requested (``settings.frame_heliostats > 0``).
    frame_sink : callable, optional
        Receives each :class:`Frame` as it is rendered (e.g. writes the PNG); the images
        are not kept. Without it no frames are rendered.
    progress : callable, optional
        ``progress(done, total)`` in units of work: one per heliostat and one per frame
        planned (a frame heliostat's visits, at most ``frames_per_heliostat``), called
        after each heliostat and each frame (the frames take most of the time).
    schedule : pandas.DataFrame, optional
        Visit times (columns ``heliostat_id``, ``time_utc``; e.g. a plan's
        :meth:`~heliostat.campaign.plan_file.Plan.schedule_frame`) instead of
        :func:`plan_schedule`'s rounds.

    Returns
    -------
    CampaignResult
    """
    missing = [h for h in field_cfg.heliostats if h not in truth]
    if missing:
        raise ValueError(f"no true errors for heliostat(s) {', '.join(missing[:5])}")
    seeds = Seeds.from_seed(seed)
    target = pick_target(field_cfg, settings.target_id)
    if schedule is None:
        sched = plan_schedule(field_cfg, settings)
    else:
        unknown = sorted(set(schedule["heliostat_id"]) - set(field_cfg.heliostats))
        if unknown:
            raise ValueError(f"schedule names heliostat(s) not in the field: {unknown[:5]}")
        sched = pd.DataFrame(
            {
                "heliostat_id": schedule["heliostat_id"].to_numpy(),
                "time_utc": pd.DatetimeIndex(schedule["time_utc"]).tz_convert("UTC"),
            }
        )
        sched = sched.sort_values(["time_utc", "heliostat_id"], kind="stable")
        sched = sched.reset_index(drop=True)
    times = pd.DatetimeIndex(sched["time_utc"])
    skipped = {"sun_low": 0, "low_dni": 0, "unreachable": 0, "off_target": 0}
    if len(times) == 0:
        empty = pd.DataFrame(columns=list(OBSERVATION_COLUMNS))
        return CampaignResult(empty, 0, skipped, 0, target.id, camera)
    if settings.cloudiness > 0:
        clouds = cloud_series(
            times[0].floor("D"),
            times[-1].ceil("D") + pd.Timedelta(seconds=1),
            np.random.default_rng(seeds.clouds),
            settings.cloudiness,
        )
    else:
        clouds = clear_series(times[0].floor("D"), times[-1].ceil("D") + pd.Timedelta(seconds=1))
    sky = Sky(field_cfg.site, clouds)
    sun_all = sky.sun(times)
    clear_all = sky.clear_dni_w_m2(times)
    cloud_all = sky.cloud_factor(times)
    # effects outside the fitted model (sim.effects): the plant commands with its own sun
    # (its clock, standard refraction); the beam leaves by the true sun and the effects
    effects = settings.effects
    cdraw = draw_campaign(
        effects, field_cfg.site, settings.start_date, np.random.default_rng(seeds.effects)
    )
    sun_true_all = true_sun(field_cfg.site, times, sun_all.u_sun_enu, effects, cdraw)
    temp_all = ambient_c(times, field_cfg.site, cdraw)
    effect_seeds = seeds.effects.spawn(len(field_cfg.heliostats))
    hdraws: dict = {}
    visit_records: dict[str, dict] = {}

    want_frames = frame_sink is not None and settings.frame_heliostats > 0
    if want_frames and camera is None:
        raise ValueError("frames requested but no camera given")
    frame_ids = (
        set(list(field_cfg.heliostats)[: settings.frame_heliostats]) if want_frames else set()
    )
    per_heliostat = settings.frames_per_heliostat
    if per_heliostat is None:
        per_heliostat = math.inf
    frame_rng = np.random.default_rng(seeds.frames)
    sunlit = settings.target_style == "sunlit"
    sched_hids = sched["heliostat_id"].to_numpy()
    planned = {h: int(min(np.sum(sched_hids == h), per_heliostat)) for h in frame_ids}
    work = {"done": 0, "total": len(field_cfg.heliostats) + sum(planned.values())}

    def tick(n: int) -> None:
        work["done"] += n
        if progress:
            progress(work["done"], work["total"])

    image_paths = []
    boards: dict = {}
    conditions: dict[str, dict] = {}
    if want_frames and sunlit:
        from sim.real_texture import target_image_paths

        image_paths = target_image_paths(settings.target_images or None)
    noise_seeds = seeds.noise.spawn(len(field_cfg.heliostats))
    aim = target.centre_enu_m
    parts: list[pd.DataFrame] = []
    frames_written = 0
    hids = list(field_cfg.heliostats)
    for k, hid in enumerate(hids):
        h = field_cfg.heliostats[hid]
        rng = np.random.default_rng(noise_seeds[k])
        idx = np.flatnonzero(sched["heliostat_id"].to_numpy() == hid)
        erng = np.random.default_rng(effect_seeds[k])
        hdraws[hid] = hdraw = draw_heliostat(effects, erng)
        idx_sched = idx
        vdraws = draw_visits(effects, idx.size, erng)
        el = sun_all.elevation_rad[idx]
        dni = clear_all[idx] * cloud_all[idx]
        ok = el > math.radians(settings.min_elevation_deg)
        skipped["sun_low"] += int(np.sum(~ok))
        low = ok & (dni < settings.min_dni_w_m2)
        skipped["low_dni"] += int(np.sum(low))
        ok &= ~low
        idx = idx[ok]
        sun = sun_all.u_sun_enu[idx]
        steps = command_steps(h, aim, sun) if idx.size else np.empty((0, 2))
        reach = np.all(np.isfinite(steps), axis=1)
        skipped["unreachable"] += int(np.sum(~reach))
        idx, sun, steps = idx[reach], sun[reach], steps[reach]
        if idx.size == 0:
            tick(1 + planned.get(hid, 0))
            continue
        if effects.any:
            vis = vdraws.take(np.searchsorted(idx_sched, idx))
            approach = approach_signs(steps)
            sun = sun_true_all[idx]  # the beam leaves by the true sun
            centre, normal, r_true = world_beam(
                h.kinematics, truth[hid], steps, sun, effects, hdraw, cdraw, vis, approach,
                temp_all[idx],
            )  # fmt: skip
            pose = Pose(normal, centre)
        else:
            # the controller's last move per axis (recorded; no backlash without effects)
            vis, approach = VisitDraws.zeros(idx.size), approach_signs(steps)
            pose, r_true = true_beam(h, steps, truth[hid], sun)
        hit_true = intersect_plane(pose.centre_enu_m, r_true, aim, target.u_normal_enu)
        xy_true = target.enu_to_plane(hit_true)
        on = np.all(np.isfinite(xy_true), axis=1) & target.contains(xy_true)
        skipped["off_target"] += int(np.sum(~on))
        idx, sun, steps, r_true = idx[on], sun[on], steps[on], r_true[on]
        pose = Pose(pose.u_normal_enu[on], pose.centre_enu_m[on])
        hit_true, xy_true = hit_true[on], xy_true[on]
        vis, approach = vis.take(on), approach[on]
        if effects.any:
            visit_records[hid] = {
                "time_utc": [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in times[idx]],
                "wind_m_s": vis.wind_m_s.tolist(),
                "jitter_rad": vis.jitter_rad.tolist(),
                "encoder_rad": vis.encoder_rad.tolist(),
                "approach": approach.astype(int).tolist(),
            }
        # measurement model (sim.observe): beam direction tilted by noise_mrad per axis
        r_meas = perturb_directions(r_true, settings.noise_mrad * 1e-3, rng)
        hit = intersect_plane(pose.centre_enu_m, r_meas, aim, target.u_normal_enu)
        xy = target.enu_to_plane(hit)
        slant = np.linalg.norm(hit_true - pose.centre_enu_m, axis=1)
        t_obs = times[idx]
        flags = np.where(cloud_all[idx] < CLOUD_FLAG_FACTOR, "cloud", "")
        frame_col = np.full(idx.size, "", dtype=object)
        rendered = 0
        if hid in frame_ids:
            frames_left = per_heliostat
            from sim.camera import render_frame
            from sim.optics import flux_spot

            for j in range(idx.size):
                if frames_left <= 0:
                    break
                # rng=None: facet canting errors seeded per heliostat, same in every frame
                spot = flux_spot(
                    h,
                    Pose(pose.u_normal_enu[j : j + 1], pose.centre_enu_m[j : j + 1]),
                    sun[j],
                    float(clear_all[idx[j]]),
                    target,
                    shape=settings.spot_shape,
                    rng=None,
                )
                cf = float(cloud_all[idx[j]])
                if sunlit:
                    from sim.camera import render_sunlit_pair
                    from sim.real_texture import draw_conditions, load_board_image

                    cond = draw_conditions(frame_rng, target, len(image_paths))
                    if cond.image not in boards:
                        boards[cond.image] = load_board_image(image_paths[cond.image])
                    on_img, dark_img, ft = render_sunlit_pair(
                        camera,
                        target,
                        [spot],
                        rng=frame_rng,
                        board=boards[cond.image],
                        conditions=cond,
                        cloud_factor=cf,
                    )
                else:
                    on_img, ft = render_frame(
                        camera, target, [spot], rng=frame_rng, cloud_factor=cf
                    )
                    # the dark frame keeps the sun-on frame's exposure, as a camera would
                    dark_img, _ = render_frame(
                        camera, target, [], rng=frame_rng, exposure=ft[0].exposure
                    )
                stem = _frame_stem(hid, t_obs[j])
                if sunlit:
                    conditions[stem + ".png"] = _conditions_dict(cond, image_paths, ft[0])
                frame_sink(Frame(stem + ".png", on_img))
                frame_sink(Frame(stem + DARK_SUFFIX + ".png", dark_img))
                frame_col[j] = stem + ".png"
                frames_written += 2
                frames_left -= 1
                rendered += 1
                tick(1)
        parts.append(
            observation_frame(
                hid,
                t_obs,
                sun_all.azimuth_rad[idx],  # the plant's sun (its clock, standard refraction)
                sun_all.elevation_rad[idx],
                steps,
                target.id,
                xy,
                hit,
                settings.noise_mrad * 1e-3 * slant,
                xy_true,
                quality_flags=flags,
                frames=frame_col,
                approach=approach,
            )
        )
        tick(1 + planned.get(hid, 0) - rendered)
    obs = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(columns=list(OBSERVATION_COLUMNS))
    )
    if len(obs):
        obs = obs.sort_values(["time_utc", "heliostat_id"], kind="stable").reset_index(drop=True)
        obs["time_utc"] = pd.DatetimeIndex(obs["time_utc"]).strftime("%Y-%m-%dT%H:%M:%SZ")
    obs = obs[list(OBSERVATION_COLUMNS)]
    draws = draws_to_dict(effects, cdraw, hdraws, visit_records) if effects.any else None
    return CampaignResult(
        obs, len(sched), skipped, frames_written, target.id, camera, conditions, draws
    )


def _conditions_dict(cond, image_paths, truth) -> dict:
    """A sunlit frame pair's conditions as plain data for ``campaign.json``."""
    sh = cond.shadow
    return stable_numbers(
        {
            "image": image_paths[cond.image].name,
            "board_fraction": cond.board_fraction,
            "contrast": cond.contrast,
            "peak_dn": truth.peak_dn,
            "saturated_fraction": truth.saturated_fraction,
            "dark_ambient_ratio": 1.0 + cond.drift,
            "shadow_polygon_xy_m": None if sh is None else sh.polygon_xy_m.tolist(),
            "shadow_blocked": None if sh is None else sh.blocked,
            "dark_shadow_shift_xy_m": None if sh is None else cond.shadow_shift_xy_m.tolist(),
        }
    )


# --------------------------------------------------------------------------- files
def observations_csv(obs: pd.DataFrame) -> str:
    """``observations.csv`` text: fixed 6-decimal floats (1 µm, 17 nrad in degrees), so
    the bytes do not depend on the last bit of a computation."""
    obs = obs.copy()
    for col in obs.columns:
        if obs[col].dtype.kind == "f":
            obs[col] = obs[col].round(6) + 0.0  # + 0.0 turns a rounded -0.0 into 0.0
    return obs.to_csv(index=False, float_format="%.6f", lineterminator="\n")


def write_png(path: Path, image: NDArray) -> None:
    """Write a grey 8- or 16-bit image as PNG (fixed compression: stable bytes)."""
    import cv2

    if image.ndim != 2 or image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected a 2-D uint8/uint16 image, got {image.dtype} {image.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image, [cv2.IMWRITE_PNG_COMPRESSION, 6]):
        raise OSError(f"{path}: could not write PNG")


def manifest(
    result: CampaignResult,
    settings: CampaignSettings,
    seed: int,
    field_cfg: FieldConfig,
    files: Mapping[str, str],
) -> dict:
    """``campaign.json`` content (no wall-clock times or absolute paths: reproducible)."""
    from heliostat import __version__

    drives: dict[str, int] = {}
    for h in field_cfg.heliostats.values():
        drives[h.kinematics.drive] = drives.get(h.kinematics.drive, 0) + 1
    obs = result.observations
    return {
        "schema": MANIFEST_SCHEMA,
        "version": __version__,
        "seed": int(seed),
        "settings": asdict(settings),
        "target_id": result.target_id,
        "files": dict(files),
        "frames": {
            "naming": "frames/<heliostat>/<YYYYmmddTHHMMSSZ>.png sun-on, "
            f"same stem + '{DARK_SUFFIX}.png' sun-off",
            "written": result.frames_written,
            **({"conditions": result.frame_conditions} if result.frame_conditions else {}),
        },
        "counts": {
            "heliostats": len(field_cfg.heliostats),
            "drives": drives,
            "scheduled_visits": result.scheduled,
            "observations": len(obs),
            "observations_with_frames": int((obs["frame"] != "").sum()) if len(obs) else 0,
            "skipped": dict(result.skipped),
        },
    }


def write_campaign(
    out_dir: str | Path,
    field_cfg: FieldConfig,
    truth: Mapping[str, KinematicErrors],
    settings: CampaignSettings,
    seed: int,
    *,
    progress: Progress | None = None,
    schedule: pd.DataFrame | None = None,
    plan_info: dict | None = None,
) -> tuple[CampaignResult, dict]:
    """Simulate a campaign and write its folder (see the module docstring).

    ``schedule``: visit times instead of the rounds (:func:`simulate_campaign`);
    ``plan_info``: where they came from, recorded in ``campaign.json`` under ``plan``.
    Returns the result and the manifest written to ``campaign.json``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    field_cfg = campaign_field(field_cfg, settings)
    camera = None
    files = {
        "field": "field.toml",
        "truth": "truth.json",
        "observations": "observations.csv",
    }
    if settings.frame_heliostats > 0:
        from sim.camera import camera_to_dict, place_camera

        target = pick_target(field_cfg, settings.target_id)
        camera = place_camera(
            field_cfg,
            target,
            width_px=settings.camera_width_px,
            height_px=settings.camera_height_px,
            bit_depth=settings.camera_bit_depth,
        )
        (out / "camera.toml").write_text(
            "# Simulated camera written by `heliostat sim` (sim/camera.py).\n"
            + dumps_toml(stable_numbers(camera_to_dict(camera))),
            encoding="utf-8",
        )
        files["camera"] = "camera.toml"

    def sink(frame: Frame) -> None:
        write_png(join_inside(out, frame.path, "simulated frame"), frame.image)

    result = simulate_campaign(
        field_cfg,
        truth,
        settings,
        seed,
        camera=camera,
        frame_sink=sink if camera is not None else None,
        progress=progress,
        schedule=schedule,
    )
    (out / "field.toml").write_text(field_toml(field_cfg), encoding="utf-8")
    (out / "truth.json").write_text(
        truth_json(truth, effects=result.effect_draws), encoding="utf-8"
    )
    (out / "observations.csv").write_text(observations_csv(result.observations), encoding="utf-8")
    man = manifest(result, settings, seed, field_cfg, files)
    if plan_info is not None:
        man["plan"] = plan_info
    (out / "campaign.json").write_text(json.dumps(man, indent=2) + "\n", encoding="utf-8")
    return result, man
