"""``plant.toml``: what a calibration campaign on a real plant runs with.

It names the plant's other config files (``field.toml`` with the buses, ``camera.toml``),
where frames come from, the schedule, the history database and the fit thresholds. The
whole file is validated up front, with errors that name the file, the dotted key and what
was expected (the helpers of :mod:`heliostat.config`); relative paths are relative to the
folder of ``plant.toml``. The schema, with an example, is in ``docs/campaign.md``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from heliostat.config import (
    CameraConfig,
    ConfigError,
    FieldConfig,
    Target,
    _load_toml,
    _Table,
    load_camera,
    load_field,
)
from heliostat.kinematics import group_names

#: History database when neither plant.toml nor ``$HELIOSTAT_DB`` name one.
DEFAULT_DB = "heliostat-history.sqlite"
SOURCE_TYPES = ("opencv", "folder", "genicam")


#: Largest joint-angle offset per axis for the sun-off frame (config bound). [deg]
MAX_OFF_TARGET_OFFSET_DEG = 15.0


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """Where camera frames come from.

    Attributes
    ----------
    type : {"opencv", "folder", "genicam"}
        ``opencv``: ``cv2.VideoCapture`` on a device index or a URL; ``folder``: image
        files another program drops into a watched folder; ``genicam``: an industrial
        camera through `harvesters` and a GenTL producer
        (:mod:`heliostat.campaign.genicam`).
    device : int or str
        OpenCV device index or stream URL (``rtsp://...``, a file path).
    folder : Path or None
        Watched folder (``folder`` type).
    timeout_s : float
        Longest wait for a frame. [s]
    poll_s : float
        Interval between looks into the folder. [s]
    discard_frames : int
        Frames read and dropped before the one kept (OpenCV buffers stale frames).
    arrival_tolerance_s : float
        ``folder``: a frame that arrived more than this before its capture request is
        stale (set aside, never used). [s]
    cti : Path or None
        ``genicam``: the GenTL producer file.
    serial : str or None
        ``genicam``: the camera's serial number (default: the first camera).
    exposure_s, gain_db : float or None
        ``genicam``: fixed exposure [s] (``exposure_us`` in plant.toml) and gain [dB];
        None keeps the camera's (automatic control off either way).
    trigger : {"software", "free"}
        ``genicam``: a software trigger per frame, or a free-running stream.
    """

    type: str
    device: int | str = 0
    folder: Path | None = None
    timeout_s: float = 30.0
    poll_s: float = 0.5
    discard_frames: int = 2
    arrival_tolerance_s: float = 2.0
    cti: Path | None = None
    serial: str | None = None
    exposure_s: float | None = None
    gain_db: float | None = None
    trigger: str = "software"


@dataclass(frozen=True, slots=True)
class ScheduleConfig:
    """How heliostats take turns on the target.

    Attributes
    ----------
    heliostats : tuple of str
        Order of the visits within a slot (default: every heliostat, field order).
    slot_s : float
        Length of a time slot; each heliostat is observed at most once per slot. [s]
    min_elevation_rad : float
        No visits with the sun below this. [rad]
    settle_timeout_s, poll_s : float
        Longest wait for the axes to arrive, and the status-poll interval. [s]
    off_target_offset_rad : tuple of 2 float
        Joint-angle offset (axis 1, axis 2) from the on-target setpoint for the sun-off
        frame; applied with the opposite sign when that would leave the travel. [rad]
    aim_xy_m : tuple of 2 float
        Aim point in the target plane. [m]
    duration_s : float
        Longest run. [s]
    """

    heliostats: tuple[str, ...]
    slot_s: float = 1800.0
    min_elevation_rad: float = math.radians(15.0)
    settle_timeout_s: float = 180.0
    poll_s: float = 2.0
    off_target_offset_rad: tuple[float, float] = (0.0, math.radians(3.0))
    aim_xy_m: tuple[float, float] = (0.0, 0.0)
    duration_s: float = 12 * 3600.0


@dataclass(frozen=True, slots=True)
class FitConfig:
    """When a heliostat has data enough to fit.

    Attributes
    ----------
    min_points : int
        Observations needed.
    min_azimuth_spread_rad, min_elevation_spread_rad : float
        Smallest spread of the sun's azimuth (the arc the sun positions cover) and
        elevation (max − min) among them. [rad]
    refit_after : int
        New observations since the last fit before the next one.
    groups : tuple of str or None
        A fixed set of error-parameter groups to fit (None: each heliostat's set chosen
        by nested cross-validation, :func:`heliostat.calibration.calibrate_heliostat`).
    window_s : float or None
        Fit only the observations of this last span before the newest one (None: all),
        so that a heliostat that drifted is fitted on its present state. [s]
    """

    min_points: int = 8
    min_azimuth_spread_rad: float = math.radians(30.0)
    min_elevation_spread_rad: float = math.radians(10.0)
    refit_after: int = 3
    groups: tuple[str, ...] | None = None
    window_s: float | None = None


@dataclass(frozen=True, slots=True)
class PlantConfig:
    """A validated ``plant.toml`` with the configs it references."""

    path: Path
    field_path: Path
    camera_path: Path
    field: FieldConfig
    camera: CameraConfig
    target: Target
    source: SourceConfig
    schedule: ScheduleConfig
    fit: FitConfig = field(default_factory=FitConfig)
    history_db: Path = Path(DEFAULT_DB)
    journal: Path = Path("bridge-journal.sqlite")
    frames_dir: Path | None = None


def _path(t: _Table, key: str, base: Path, default=...) -> Path:
    v = t.str_(key, default)
    if not v.strip():
        raise t.err(key, "expected a non-empty path")
    p = Path(os.path.expanduser(v))
    return p if p.is_absolute() else base / p


def _sub(t: _Table, path: Path, key: str, loader):
    """Load a referenced config; its own errors name its file, prefixed with who named it."""
    try:
        return loader(path)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (referenced by {t.path}: key '{t._key(key)}')") from None


def _source(t: _Table, base: Path) -> SourceConfig:
    genicam_keys = {"cti", "serial", "exposure_us", "gain_db", "trigger"}
    t.check_unknown(
        {"type", "device", "folder", "timeout_s", "poll_s", "discard_frames", "arrival_tolerance_s"}
        | genicam_keys
    )
    kind = t.str_("type", choices=SOURCE_TYPES)
    for k in sorted(genicam_keys):
        if kind != "genicam" and t.has(k):
            raise t.err(k, f'only for type = "genicam" (this source is "{kind}")')
    timeout = t.num("timeout_s", 30.0, lo=0, lo_open=True)
    if kind == "genicam":
        for k in ("device", "folder"):
            if t.has(k):
                raise t.err(k, 'not for type = "genicam" (name the camera with serial)')
        exposure_us = None
        if t.has("exposure_us"):
            exposure_us = t.num("exposure_us", lo=0, lo_open=True)
        return SourceConfig(
            kind,
            timeout_s=timeout,
            cti=_path(t, "cti", base),
            serial=t.str_("serial") if t.has("serial") else None,
            exposure_s=None if exposure_us is None else exposure_us * 1e-6,
            gain_db=t.num("gain_db") if t.has("gain_db") else None,
            trigger=t.str_("trigger", "software", choices=("software", "free")),
        )
    poll = t.num("poll_s", 0.5, lo=0, lo_open=True)
    discard = t.int_("discard_frames", 2, lo=0, hi=100)
    if kind == "opencv":
        if t.has("folder"):
            raise t.err("folder", 'only for type = "folder" (this source is "opencv")')
        dev = t.raw("device", 0)
        if isinstance(dev, bool) or not isinstance(dev, int | str) or dev == "":
            raise t.err("device", f"expected a device index (integer) or a URL, got {dev!r}")
        if isinstance(dev, int) and dev < 0:
            raise t.err("device", f"expected a device index >= 0, got {dev}")
        return SourceConfig(kind, dev, None, timeout, poll, discard)
    if t.has("device"):
        raise t.err("device", 'only for type = "opencv" (this source is "folder")')
    tol = t.num("arrival_tolerance_s", 2.0, lo=0.0)
    return SourceConfig(kind, 0, _path(t, "folder", base), timeout, poll, discard, tol)


def _schedule(t: _Table, cfg: FieldConfig) -> ScheduleConfig:
    t.check_unknown(
        {
            "heliostats",
            "slot_minutes",
            "min_elevation_deg",
            "settle_timeout_s",
            "poll_s",
            "off_target_offset_deg",
            "aim_xy_m",
            "duration_h",
        }
    )
    ids = t.raw("heliostats", [])
    if not isinstance(ids, list) or not all(isinstance(x, str) for x in ids):
        raise t.err("heliostats", f"expected a list of heliostat ids, got {ids!r}")
    for i, hid in enumerate(ids):
        if hid not in cfg.heliostats:
            raise t.err(
                f"heliostats[{i}]",
                f"heliostat {hid!r} is not in the field config {cfg.source}",
            )
    if len(set(ids)) != len(ids):
        dup = next(h for h in ids if ids.count(h) > 1)
        raise t.err("heliostats", f"heliostat {dup!r} is listed twice")
    off = t.vec("off_target_offset_deg", 2, default=[0.0, 3.0])
    if max(abs(v) for v in off) > MAX_OFF_TARGET_OFFSET_DEG:
        raise t.err(
            "off_target_offset_deg",
            f"expected each joint-angle offset within +-{MAX_OFF_TARGET_OFFSET_DEG:g} deg "
            f"(enough to take the spot off the target, not to sweep the beam across the "
            f"plant), got {off}",
        )
    if math.hypot(*off) < 0.5:
        raise t.err(
            "off_target_offset_deg",
            f"expected an offset of at least 0.5 deg (the spot must leave the target), got {off}",
        )
    return ScheduleConfig(
        tuple(ids) or tuple(cfg.heliostats),
        t.num("slot_minutes", 30.0, lo=1.0, hi=24 * 60) * 60.0,
        math.radians(t.num("min_elevation_deg", 15.0, lo=0.0, hi=89.0)),
        t.num("settle_timeout_s", 180.0, lo=0, lo_open=True),
        t.num("poll_s", 2.0, lo=0, lo_open=True),
        (math.radians(off[0]), math.radians(off[1])),
        t.vec("aim_xy_m", 2, default=[0.0, 0.0]),
        t.num("duration_h", 12.0, lo=0, lo_open=True, hi=24 * 366) * 3600.0,
    )


def _fit(t: _Table, cfg: FieldConfig) -> FitConfig:
    t.check_unknown(
        {
            "min_points",
            "min_azimuth_spread_deg",
            "min_elevation_spread_deg",
            "refit_after",
            "groups",
            "window_days",
        }
    )
    groups = None
    if t.has("groups"):
        g = t.raw("groups")
        if not isinstance(g, list) or not g or not all(isinstance(x, str) for x in g):
            raise t.err("groups", f"expected a non-empty list of parameter groups, got {g!r}")
        for drive in sorted({h.kinematics.drive for h in cfg.heliostats.values()}):
            known = group_names(drive)
            bad = [x for x in g if x not in known]
            if bad:
                raise t.err(
                    "groups",
                    f"unknown {drive} group {bad[0]!r} (known: {', '.join(known)})",
                )
        groups = tuple(g)
    return FitConfig(
        t.int_("min_points", 8, lo=3, hi=100_000),
        math.radians(t.num("min_azimuth_spread_deg", 30.0, lo=0.0, hi=360.0)),
        math.radians(t.num("min_elevation_spread_deg", 10.0, lo=0.0, hi=90.0)),
        t.int_("refit_after", 3, lo=1, hi=100_000),
        groups,
        t.num("window_days", lo=0, lo_open=True) * 86400.0 if t.has("window_days") else None,
    )


def default_db() -> Path:
    """``$HELIOSTAT_DB`` or ``heliostat-history.sqlite`` (the ledger's default too)."""
    return Path(os.environ.get("HELIOSTAT_DB") or DEFAULT_DB)


def load_plant(path: str | Path) -> PlantConfig:
    """Read and validate a ``plant.toml`` and the field and camera configs it names.

    Raises
    ------
    ConfigError
        Naming the file and the key for anything missing or invalid (an error inside
        ``field.toml`` or ``camera.toml`` names that file and the plant.toml key that
        referenced it).
    """
    root = _load_toml(path)
    base = Path(root.path).resolve().parent
    root.check_unknown({"plant", "camera_source", "schedule", "fit"})
    p = root.table("plant")
    p.check_unknown({"field", "camera", "history_db", "journal", "frames_dir", "target"})
    field_path = _path(p, "field", base)
    camera_path = _path(p, "camera", base)
    cfg = _sub(p, field_path, "field", load_field)
    camera = _sub(p, camera_path, "camera", load_camera)
    if not cfg.buses:
        raise ConfigError(
            f"{field_path}: key 'buses': the campaign needs at least one [buses.NAME] with the "
            f"serial port of the controllers (referenced by {root.path}: key 'plant.field')"
        )
    tid = p.str_("target", "") or camera.target
    if tid:
        if tid not in cfg.targets:
            key = "target" if p.has("target") else "camera"
            raise p.err(
                key,
                f"target {tid!r} is not in the field config {field_path} "
                f"(have: {', '.join(cfg.targets)})",
            )
        target = cfg.targets[tid]
    else:
        target = next((t for t in cfg.targets.values() if t.markers is not None), None)
        if target is None:
            raise p.err("target", "missing: the field has no target with markers to default to")
    db = _path(p, "history_db", base) if p.has("history_db") else default_db()
    journal = (
        _path(p, "journal", base)
        if p.has("journal")
        else db.with_name(db.stem + "-bridge-journal.sqlite")
    )
    frames = _path(p, "frames_dir", base) if p.has("frames_dir") else None
    src = _source(root.table("camera_source"), base)
    sched = _schedule(root.table("schedule", {}), cfg)
    fit = _fit(root.table("fit", {}), cfg)
    return PlantConfig(
        Path(root.path),
        field_path,
        camera_path,
        cfg,
        camera,
        target,
        src,
        sched,
        fit,
        db,
        journal,
        frames,
    )
