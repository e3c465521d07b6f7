"""Frames → detection → observations.

The orchestration layer over the pure detector: it resolves frame paths, loads images
through an injectable loader (:func:`heliostat.vision.io.load_image` by default), pairs
each sun-on frame with its sun-off frame (``<stem>_dark<ext>``, the simulator's and the
campaign folder's convention), builds a flat field from the sun-off frames, and fills the
``spot_*`` columns of an observations table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from heliostat.config import CameraConfig, Target, load_camera, load_field
from heliostat.errors import InputError
from heliostat.paths import join_inside
from heliostat.vision.auto import detect_spot_auto
from heliostat.vision.classical import DetectOptions, SpotResult
from heliostat.vision.io import DARK_SUFFIX, dark_path, load_image
from heliostat.vision.signal import FlatField, SpotInFlatError, prepare_flat, validate_frame
from heliostat.vision.target import TargetRegistration, register_aruco, register_corners

__all__ = [
    "DARK_SUFFIX",
    "FrameOutcome",
    "dark_path",
    "detect_campaign",
    "fill_observations",
    "mean_flat",
    "register_for_camera",
]


Loader = Callable[[Path], NDArray]


@dataclass(frozen=True, slots=True)
class FrameOutcome:
    """What happened to one frame: a result, or the error that stopped it."""

    path: str
    result: SpotResult | None
    error: str = ""


def mean_flat(
    frames: Iterable[NDArray], registration: TargetRegistration, *, black_level_dn: float
) -> FlatField:
    """Flat field from several sun-off frames (any exposures): each one, less the black
    level, is scaled to a median of 1 on the board, then they are averaged. Averaging N
    frames cuts the flat's own noise by sqrt(N). A frame with a spot on the target (a
    neighbour's, when its heliostat was on the target too) is left out.

    Raises
    ------
    InputError
        No frames, a frame with no signal on the board, or every frame with a spot.
    """
    acc = None
    n = n_spot = 0
    spot_err = None
    for f in frames:
        try:
            ff = prepare_flat(f, registration, black_level_dn=black_level_dn)
        except SpotInFlatError as exc:
            n_spot += 1
            spot_err = exc
            continue
        acc = ff.gain_roi.astype(np.float64) if acc is None else acc + ff.gain_roi
        n += 1
    if acc is None:
        if spot_err is not None:
            raise InputError(f"mean_flat: all {n_spot} sun-off frames have a spot ({spot_err})")
        raise InputError("mean_flat: no sun-off frames given")
    return FlatField((acc / n).astype(np.float32), registration.maps.roi)


def _flag_join(*parts: str | Sequence[str]) -> str:
    out: list[str] = []
    for p in parts:
        items = p.split("|") if isinstance(p, str) else list(p)
        for it in items:
            it = it.strip()
            if it and it not in out:
                out.append(it)
    return "|".join(out)


def fill_observations(
    obs: pd.DataFrame,
    base_dir: str | Path,
    registration: TargetRegistration,
    *,
    target: Target | None = None,
    black_level_dn: float = 0.0,
    bit_depth: int | None = None,
    flat: FlatField | None = None,
    auto_flat: bool = True,
    aim_xy_m: ArrayLike | None = None,
    options: DetectOptions = DetectOptions(),  # noqa: B008 - frozen, immutable default
    load: Loader = load_image,
    detector: Callable[..., SpotResult] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[pd.DataFrame, list[FrameOutcome]]:
    """Measure the spot in every row's frame and fill the spot columns.

    ``detector`` (default :func:`~heliostat.vision.auto.detect_spot_auto`: the classical
    detector with its background model chosen from the frames) may be any
    function with its signature and result, e.g. one of
    :func:`heliostat.vision.methods.detector_for`.

    Parameters
    ----------
    obs : DataFrame
        Observations (``observations.csv`` columns); rows with an empty ``frame`` are
        left as they are.
    base_dir : str or Path
        Folder the ``frame`` paths are relative to (the CSV's folder).
    registration : TargetRegistration
        The camera's target registration.
    target : Target, optional
        Pose for the ENU columns (``spot_e_m`` ...); without it they are left empty.
    black_level_dn : float
        Sensor offset, for the flat field. [DN]
    bit_depth : int, optional
        ADC bits (saturation level).
    flat : FlatField, optional
        Flat field; when None and ``auto_flat``, the mean of all the rows' sun-off frames.
    aim_xy_m : array_like (2,), optional
        Commanded aim point in the target plane [m] for every row (e.g. the target centre
        of a calibration campaign); columns ``aim_x_m``/``aim_y_m``, when present, win.
        The detector picks the candidate spot nearest to it.
    options : DetectOptions
    load : callable
        Path → image array (injectable for tests and other image sources).
    progress : callable, optional
        ``progress(done, total)`` after each frame.

    Returns
    -------
    DataFrame
        A copy with ``spot_x_m``, ``spot_y_m``, ``spot_e_m``, ``spot_n_m``, ``spot_u_m``,
        ``sigma_m`` and ``quality_flags`` replaced for rows with frames. A row whose frame
        fails gets NaN spots and a ``vision_error`` or detector flag — never the old value.
    list of FrameOutcome
        One per row with a frame, in row order.
    """
    if "frame" not in obs.columns:
        raise InputError("observations: no 'frame' column, so there are no frames to measure")
    base = Path(base_dir)
    out = obs.copy()
    for col in ("spot_x_m", "spot_y_m", "spot_e_m", "spot_n_m", "spot_u_m", "sigma_m"):
        if col not in out.columns:
            out[col] = np.nan
        out[col] = pd.to_numeric(out[col], errors="coerce").astype(float)
    if "quality_flags" not in out.columns:
        out["quality_flags"] = ""
    out["quality_flags"] = out["quality_flags"].fillna("").astype(str)
    frames = out["frame"].fillna("").astype(str).str.strip()
    rows = [i for i in out.index if frames[i]]
    if aim_xy_m is not None:
        aim_default = np.asarray(aim_xy_m, dtype=float).ravel()
        if aim_default.shape != (2,) or not np.all(np.isfinite(aim_default)):
            raise InputError(f"aim_xy_m: expected 2 finite numbers, got {aim_xy_m!r}")
    else:
        aim_default = None
    has_aim_cols = "aim_x_m" in out.columns and "aim_y_m" in out.columns

    if flat is None and auto_flat:
        darks = []
        for i in rows:
            try:
                dp = dark_path(join_inside(base, frames[i], f"row {i}: frame"))
            except InputError:
                continue  # reported with the row below
            if dp.is_file():
                try:
                    darks.append(validate_frame(load(dp), str(dp), registration.image_size_px))
                except InputError:
                    continue
        if darks:
            try:
                flat = mean_flat(darks, registration, black_level_dn=black_level_dn)
            except InputError:
                flat = None
    outcomes: list[FrameOutcome] = []
    for k, i in enumerate(rows):
        if progress is not None and k:
            progress(k, len(rows))
        path = base / frames[i]
        aim = aim_default
        if has_aim_cols:
            a = np.array([out.at[i, "aim_x_m"], out.at[i, "aim_y_m"]], dtype=float)
            if np.all(np.isfinite(a)):
                aim = a
        try:
            path = join_inside(base, frames[i], f"observations row {i}: frame")
            img = load(path)
            dp = dark_path(path)
            dark = load(dp) if dp.is_file() else None
            res = (detector or detect_spot_auto)(
                img,
                registration,
                dark=dark,
                flat=flat,
                black_level_dn=black_level_dn,
                bit_depth=bit_depth,
                expected_xy_m=aim,
                target=target,
                options=options,
            )
        except (InputError, OSError, ValueError) as exc:
            outcomes.append(FrameOutcome(str(path), None, str(exc)))
            for col in ("spot_x_m", "spot_y_m", "spot_e_m", "spot_n_m", "spot_u_m", "sigma_m"):
                out.at[i, col] = math.nan
            out.at[i, "quality_flags"] = _flag_join(out.at[i, "quality_flags"], "vision_error")
            continue
        outcomes.append(FrameOutcome(str(path), res))
        out.at[i, "spot_x_m"] = res.x_m
        out.at[i, "spot_y_m"] = res.y_m
        out.at[i, "spot_e_m"] = res.e_m
        out.at[i, "spot_n_m"] = res.n_m
        out.at[i, "spot_u_m"] = res.u_m
        out.at[i, "sigma_m"] = res.sigma_m
        out.at[i, "quality_flags"] = _flag_join(out.at[i, "quality_flags"], res.flags)
    if progress is not None and rows:
        progress(len(rows), len(rows))
    return out, outcomes


def register_for_camera(
    camera: CameraConfig, target: Target, image: NDArray | None = None
) -> TargetRegistration:
    """The registration a camera config allows, in order of preference: its surveyed
    ``corners_px``; the target's ArUco markers found in ``image`` (a sun-off frame is
    best); the target corners projected through the camera's surveyed pose.

    Raises
    ------
    InputError
        None of the three is available, or the chosen one fails.
    """
    size = (camera.width_px, camera.height_px)
    kw = dict(k_px=camera.k_px, dist_coeffs=camera.dist_coeffs)
    if camera.corners_px is not None:
        return register_corners(
            camera.corners_px, target.width_m, target.height_m, size, markers=target.markers, **kw
        )
    if target.markers is not None and image is not None:
        return register_aruco(image, target.markers, target.width_m, target.height_m, **kw)
    if camera.position_enu_m is not None and camera.r_enu_cam is not None:
        corners = camera.project(target.corners_enu_m())
        return register_corners(
            corners, target.width_m, target.height_m, size, markers=target.markers, **kw
        )
    raise InputError(
        f"camera for target {target.id!r}: no corners_px, no pose, and no frame to find "
        "the target's markers in"
    )


def detect_campaign(
    folder: str | Path,
    *,
    black_level_dn: float | None = None,
    aim_xy_m: ArrayLike | None = (0.0, 0.0),
    registration: TargetRegistration | None = None,
    options: DetectOptions = DetectOptions(),  # noqa: B008 - frozen, immutable default
    load: Loader = load_image,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[pd.DataFrame, list[FrameOutcome]]:
    """Fill a campaign folder's observations from its frames (``field.toml``,
    ``camera.toml``, ``observations.csv`` and ``frames/``, as the simulator writes them).

    Parameters
    ----------
    folder : str or Path
    black_level_dn : float, optional
        Sensor offset [DN]; default: ``black_level_dn`` of the folder's ``camera.toml``.
    aim_xy_m : array_like (2,) or None
        The aim point of every visit in the target plane [m] (campaigns aim at the centre).
    registration : TargetRegistration, optional
        Default: :func:`register_for_camera` (markers found in the first sun-off frame).
    progress : callable, optional
        ``progress(done, total)`` after each frame.

    Returns
    -------
    See :func:`fill_observations`.
    """
    root = Path(folder)
    field = load_field(root / "field.toml")
    camera = load_camera(root / "camera.toml")
    obs_path = root / "observations.csv"
    try:
        obs = pd.read_csv(obs_path, dtype={"frame": str, "quality_flags": str})
    except FileNotFoundError:
        raise InputError(f"{obs_path}: file not found") from None
    tid = camera.target or str(obs["target_id"].dropna().iloc[0])
    target = field.target(tid)
    if registration is None:
        ref = None
        for f in obs["frame"].fillna(""):
            if f.strip() and dark_path(root / f).is_file():
                ref = load(dark_path(root / f))
                break
        registration = register_for_camera(camera, target, ref)
    return fill_observations(
        obs,
        root,
        registration,
        target=target,
        black_level_dn=camera.black_level_dn if black_level_dn is None else black_level_dn,
        bit_depth=camera.bit_depth,
        aim_xy_m=aim_xy_m,
        options=options,
        load=load,
        progress=progress,
    )
