"""Ground truth for pointing: true error parameters and image-free observations.

A heliostat is commanded with the *nominal* model (what the plant believes) to put its
beam on an aim point; the beam actually leaves along the *true* model (nominal + true
errors). Where it hits the target is the observation a perfect camera would report.
Measurement noise is added as a beam-direction error (two independent Gaussian angles
perpendicular to the beam, σ per axis), which is how a camera's centroid noise looks
from the heliostat.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from heliostat.calibration.observations import OBSERVATION_COLUMNS as CSV_COLUMNS
from heliostat.calibration.observations import Observations
from heliostat.config import Heliostat, Target
from heliostat.frames import Site, intersect_plane, normalize
from heliostat.kinematics import HeliostatKinematics, KinematicErrors, error_names
from heliostat.kinematics.drives._base import BACKLASH
from heliostat.sun import sun_position
from sim.reproduce import stable_float

#: Columns of ``observations.csv`` written by the simulator, in order (docs/observations.md):
#: the format's columns, then the ground truth.
OBSERVATION_COLUMNS: tuple[str, ...] = (*CSV_COLUMNS, "true_spot_x_m", "true_spot_y_m")


def draw_true_errors(
    drive: str,
    rng: np.random.Generator,
    angular_mrad: tuple[float, float] = (1.0, 3.0),
    translation_m: float = 0.01,
    stroke_m: float = 0.0005,
) -> KinematicErrors:
    """Draw a realistic error set: each angular term uniform in magnitude within
    ``angular_mrad`` with a random sign, translations N(0, ``translation_m``), linear
    actuator initial-stroke errors N(0, ``stroke_m``).

    Parameters
    ----------
    drive : str
        Name of a registered drive type.
    rng : numpy.random.Generator
        Seeded generator (the caller owns the seed).
    angular_mrad : (float, float)
        Range of the magnitude of each angular error term. [mrad]
    translation_m : float
        Standard deviation of each translation term. [m]
    stroke_m : float
        Standard deviation of each initial-stroke term. [m] On a Jülich-type lever
        (≈0.3 m) 0.5 mm turns the joint by ≈1.5 mrad, in line with the angular terms;
        2 mm would give ≈7 mrad per axis, beyond the 1–3 mrad spread asked for.

    Each value keeps :data:`sim.reproduce.SIG_DIGITS` significant digits.
    """
    lo, hi = angular_mrad
    values = []
    for name in error_names(drive):
        if name in BACKLASH:
            # a property of the drive's gears, not of the kinematic chain: drawn by the
            # effects (sim.effects, "encoder"); zero here, no number drawn, so the other
            # terms' draws are those of the seed before the backlash parameters existed
            values.append(0.0)
        elif name.endswith("_rad"):
            values.append(rng.choice([-1.0, 1.0]) * rng.uniform(lo, hi) * 1e-3)
        elif name.startswith("actuator"):
            values.append(rng.normal(0.0, stroke_m))
        else:
            values.append(rng.normal(0.0, translation_m))
    # 12 significant digits (sim.reproduce): truth.json then holds the truth exactly, and
    # the same seed draws the same truth on any CPU.
    return KinematicErrors(drive, tuple(stable_float(v) for v in values))


def perturb_directions(
    u: ArrayLike, sigma_rad: float, rng: np.random.Generator
) -> NDArray[np.float64]:
    """Tilt unit vectors by independent Gaussian angles (σ per perpendicular axis)."""
    v = normalize(u)
    if sigma_rad == 0:
        return v
    helper = np.where(np.abs(v[:, 2:3]) < 0.9, [[0.0, 0.0, 1.0]], [[1.0, 0.0, 0.0]])
    a = normalize(np.cross(v, helper))
    b = np.cross(v, a)
    d = rng.normal(0.0, sigma_rad, size=(v.shape[0], 2))
    return normalize(v + d[:, :1] * a + d[:, 1:] * b)


def simulate_observations(
    heliostat: Heliostat,
    true_errors: KinematicErrors,
    target: Target,
    site: Site,
    times: Sequence | pd.DatetimeIndex,
    rng: np.random.Generator,
    noise_mrad: float = 0.2,
    aim_xy_m: ArrayLike = (0.0, 0.0),
) -> pd.DataFrame:
    """Image-free calibration observations of one heliostat.

    At each time the heliostat is commanded (integer steps) by the nominal model to aim
    at ``aim_xy_m`` on the target; the true model reflects the sun; the spot is where
    that beam (tilted by ``noise_mrad`` per axis) meets the target plane.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`OBSERVATION_COLUMNS`; ``true_spot_*`` hold the noise-free spot.
        Times with the sun below 5° elevation are left out.
    """
    sp = sun_position(site, times)
    keep = sp.elevation_rad > np.radians(5.0)
    sun = sp.u_sun_enu[keep]
    n = sun.shape[0]
    kin = heliostat.kinematics
    aim = np.broadcast_to(target.plane_to_enu(np.asarray(aim_xy_m, dtype=float)), (n, 3))
    steps = np.rint(kin.inverse(aim, sun))
    pose = kin.forward(steps, true_errors)
    s = sun
    r_true = 2.0 * np.sum(pose.u_normal_enu * s, axis=1, keepdims=True) * pose.u_normal_enu - s
    hit_true = intersect_plane(pose.centre_enu_m, r_true, target.centre_enu_m, target.u_normal_enu)
    r_meas = perturb_directions(r_true, noise_mrad * 1e-3, rng)
    hit = intersect_plane(pose.centre_enu_m, r_meas, target.centre_enu_m, target.u_normal_enu)
    xy = target.enu_to_plane(hit)
    xy_true = target.enu_to_plane(hit_true)
    slant = np.linalg.norm(hit_true - pose.centre_enu_m, axis=1)
    return observation_frame(
        heliostat.id,
        [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in sp.times[keep]],
        sp.azimuth_rad[keep],
        sp.elevation_rad[keep],
        steps,
        target.id,
        xy,
        hit,
        noise_mrad * 1e-3 * slant,
        xy_true,
    )


def observation_frame(
    heliostat_id: str,
    times_utc: Sequence[str],
    sun_azimuth_rad: ArrayLike,
    sun_elevation_rad: ArrayLike,
    steps: NDArray,
    target_id: str,
    spot_xy_m: NDArray,
    spot_enu_m: NDArray,
    sigma_m: ArrayLike,
    true_xy_m: NDArray,
    quality_flags: Sequence[str] | str = "",
    frames: Sequence[str] | str = "",
    approach: NDArray | None = None,
) -> pd.DataFrame:
    """Rows of ``observations.csv`` (:data:`OBSERVATION_COLUMNS`) for one heliostat.

    ``steps`` (N, 2) are integer motor steps; ``spot_xy_m`` (N, 2) and ``spot_enu_m`` (N, 3)
    the measured spot, ``true_xy_m`` (N, 2) the noise-free one; angles in rad;
    ``approach`` (N, 2) the direction (±1) of each axis's last move (None: not known,
    the columns hold None and a CSV's cells stay empty).
    """
    if approach is None:
        a1: Sequence | None = None
        a2: Sequence | None = None
    else:
        a1, a2 = (np.asarray(approach)[:, i].astype(np.int64) for i in range(2))
    return pd.DataFrame(
        {
            "heliostat_id": heliostat_id,
            "time_utc": list(times_utc),
            "sun_azimuth_deg": np.degrees(sun_azimuth_rad),
            "sun_elevation_deg": np.degrees(sun_elevation_rad),
            "axis1_steps": steps[:, 0].astype(np.int64),
            "axis2_steps": steps[:, 1].astype(np.int64),
            "target_id": target_id,
            "spot_x_m": spot_xy_m[:, 0],
            "spot_y_m": spot_xy_m[:, 1],
            "spot_e_m": spot_enu_m[:, 0],
            "spot_n_m": spot_enu_m[:, 1],
            "spot_u_m": spot_enu_m[:, 2],
            "sigma_m": sigma_m,
            "quality_flags": quality_flags,
            "frame": frames,
            "axis1_approach": a1,
            "axis2_approach": a2,
            "true_spot_x_m": true_xy_m[:, 0],
            "true_spot_y_m": true_xy_m[:, 1],
        },
        columns=list(OBSERVATION_COLUMNS),
    )


def simulate_field_observations(
    heliostat: Heliostat,
    n: int,
    target: Target,
    site: Site,
    times: Sequence | pd.DatetimeIndex,
    rng: np.random.Generator,
    noise_mrad: float = 0.2,
    spread_m: tuple[float, float] = (40.0, 20.0),
    translation_m: float = 0.0,
    angular_mrad: tuple[float, float] = (1.0, 3.0),
    stroke_m: float = 0.0005,
) -> tuple[list[HeliostatKinematics], NDArray[np.float64], list[Observations]]:
    """Image-free observations of ``n`` heliostats at once (vectorised over the field).

    Each heliostat is ``heliostat``'s kinematics moved to a pivot drawn uniformly within
    ±``spread_m`` (east, north) of it, with its own true errors
    (:func:`draw_true_errors`, translations N(0, ``translation_m``)). Unlike
    :func:`simulate_observations` the command is the nominal chain's analytic aim from
    the pivot (:func:`heliostat.kinematics.model.nominal_angles`, mirror offset ignored:
    the spot lands within about the offset of the aim point), so no per-heliostat
    inverse is solved; the true chain then reflects the sun and the noisy beam meets the
    target plane, as there. Times with the sun below 5° are left out; a heliostat whose
    steps leave the travel limits or whose beam misses the plane is dropped (so fewer than
    ``n`` may return).

    Returns
    -------
    kinematics : list of HeliostatKinematics
    truths : ndarray of shape (H, E)
        True error values in :func:`~heliostat.kinematics.error_names` order. [rad, m]
    observations : list of Observations
        One entry per heliostat kept (H ≤ n), ids ``F000000``, ``F000001``, … (the
        draw's index).
    """
    from heliostat.kinematics.model import nominal_angles

    kin0 = heliostat.kinematics
    sp = sun_position(site, times)
    keep = sp.elevation_rad > np.radians(5.0)
    sun = sp.u_sun_enu[keep]  # (T, 3)
    stamps = tuple(t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in sp.times[keep])
    t_n = sun.shape[0]
    offs = np.zeros((n, 3))
    offs[:, :2] = rng.uniform(-1.0, 1.0, (n, 2)) * np.asarray(spread_m)
    pos = np.asarray(kin0.position_enu_m) + offs  # (H, 3)
    # draw_true_errors' distributions, drawn for the whole field at once.
    names = error_names(kin0.drive)
    truths = np.empty((n, len(names)))
    for k, name in enumerate(names):
        if name in BACKLASH:
            truths[:, k] = 0.0  # as draw_true_errors: no number drawn
        elif name.endswith("_rad"):
            sign = rng.choice([-1.0, 1.0], n)
            truths[:, k] = sign * rng.uniform(angular_mrad[0], angular_mrad[1], n) * 1e-3
        elif name.startswith("actuator"):
            truths[:, k] = rng.normal(0.0, stroke_m, n)
        else:
            truths[:, k] = rng.normal(0.0, translation_m, n)
    aim = target.centre_enu_m
    u_normal = normalize(sun[None] + normalize(aim - pos)[:, None])  # (H, T, 3)
    theta = nominal_angles(kin0.spec.chain, u_normal.reshape(-1, 3)).reshape(n, t_n, 2)
    if kin0.spec.axis1_full_turn:
        # The branch of axis 1 nearest its mid-travel, as HeliostatKinematics' inverse
        # starts from (the chain is 2π-periodic in θ1).
        mid = 0.5 * (kin0.axis1.min_steps + kin0.axis1.max_steps)
        ref = float(kin0.axis1.steps_to_angle(mid))
        theta[..., 0] = ref + np.mod(theta[..., 0] - ref + np.pi, 2 * np.pi) - np.pi
    steps = np.rint(kin0.angles_to_steps(theta))
    ok = np.all(np.isfinite(steps), axis=(1, 2))
    for i, axis in enumerate(kin0.axes):
        ok &= np.all((steps[..., i] >= axis.min_steps) & (steps[..., i] <= axis.max_steps), 1)
    # True chain with every heliostat's errors as (H, 1) columns against (H, T) steps.
    vals = {name: truths[:, k : k + 1] for k, name in enumerate(names)}
    st = np.where(np.isfinite(steps), steps, 0.0)
    normal, centre = kin0.chain(kin0.steps_to_angles_values(st, vals), vals)
    centre = centre + offs[:, None, :]
    r_true = 2.0 * np.sum(normal * sun, axis=-1, keepdims=True) * normal - sun
    ok &= np.all(np.isfinite(r_true), axis=(1, 2))
    r_true = np.where(np.isfinite(r_true), r_true, [0.0, 0.0, 1.0])
    r_meas = perturb_directions(r_true.reshape(-1, 3), noise_mrad * 1e-3, rng).reshape(n, t_n, 3)
    hit = intersect_plane(centre, r_meas, target.centre_enu_m, target.u_normal_enu)
    ok &= np.all(np.isfinite(hit), axis=(1, 2))
    # σ of the spot on the target; "not given" (NaN) without noise, as the CSV reader
    # reads a 0.
    sigma_m = noise_mrad * 1e-3 * np.linalg.norm(hit - centre, axis=-1)
    if noise_mrad <= 0:
        sigma_m = np.full(sigma_m.shape, np.nan)
    kins, kept, obs = [], [], []
    ids = (target.id,) * t_n
    rows = np.arange(2, 2 + t_n, dtype=np.int64)
    tc = np.broadcast_to(target.centre_enu_m, (t_n, 3)).copy()
    tn = np.broadcast_to(target.u_normal_enu, (t_n, 3)).copy()
    for h in np.flatnonzero(ok):
        kins.append(replace(kin0, position_enu_m=tuple(float(v) for v in pos[h])))
        kept.append(h)
        obs.append(
            Observations(
                f"F{h:06d}", sun, steps[h].astype(np.int64), hit[h], tc, tn, ids,
                sigma_m[h], rows, stamps,
            )
        )  # fmt: skip
    return kins, truths[np.array(kept, dtype=np.int64)], obs
