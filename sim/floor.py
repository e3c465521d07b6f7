"""How good is good: held-out pointing error of a calibration against the simulator's
world, for our pipeline, the nominal model and an oracle fit.

One heliostat of a field gets a clean-sky campaign (:func:`sim.campaign.simulate_campaign`
on a one-heliostat field, with the chosen :class:`sim.effects.Effects`), and is scored on
held-out days after the campaign: each model aims at the target centre with the plant's
sun, the world (:func:`sim.effects.pointing_error_mrad`: true kinematics, every effect,
fresh wind and encoder draws) reflects the true sun, and the error is the beam's angle to
the aim point; RMS over the held-out times. [mrad]

The oracle knows the true model family: every kinematic error term of the drive plus the
parameters of each effect switched on (sag amplitude, pylon side temperature difference,
canting offsets, backlash, pivot-minus-target survey offset, clock offset and drift), the
plant's weather (ambient curve and pressure, which a plant measures) and the backlash
rule; it does not know the draws. It is a MAP fit: least squares on the spot residuals
(σ of the noise) plus Gaussian priors of the simulator's own spreads, and it aims by
iterating its world model to the aim point. Random per-visit effects (wind jitter,
encoder quantisation) are noise to it as to everyone. It is the floor of a model-based
calibration on these observations, not a bound on every method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from heliostat.config import FieldConfig
from heliostat.frames import intersect_plane
from heliostat.kinematics import KinematicErrors, KinematicsError, error_names
from heliostat.kinematics.drives._base import BACKLASH
from heliostat.sun import sun_position
from sim.campaign import CampaignSettings, pick_target, simulate_campaign
from sim.effects import (
    CampaignDraw,
    Effects,
    HeliostatDraw,
    VisitDraws,
    ambient_c,
    approach_signs,
    draws_from_dict,
    pointing_error_mrad,
    true_sun,
    world_beam,
)

#: Held-out visits: every this many minutes on the held-out days, sun above the campaign's
#: minimum elevation.
HELDOUT_STEP_MIN = 20


@dataclass(frozen=True, slots=True)
class Case:
    """One heliostat's campaign and what scoring it needs."""

    field: FieldConfig
    hid: str
    truth: KinematicErrors
    observations: pd.DataFrame
    effects: Effects
    cdraw: CampaignDraw
    hdraw: HeliostatDraw
    settings: CampaignSettings


def make_case(
    field_cfg: FieldConfig,
    hid: str,
    truth: KinematicErrors,
    effects: Effects,
    seed: int,
    *,
    start: str = "2025-03-01",
    days: int = 4,
    interval_h: float = 1.5,
    noise_mrad: float = 0.2,
) -> Case:
    """Clean-sky, image-free campaign of heliostat ``hid`` alone."""
    one = replace(field_cfg, heliostats={hid: field_cfg.heliostats[hid]})
    settings = CampaignSettings(
        start_date=start,
        days=days,
        interval_h=interval_h,
        noise_mrad=noise_mrad,
        cloudiness=0.0,
        frame_heliostats=0,
        effects=effects,
    )
    res = simulate_campaign(one, {hid: truth}, settings, seed)
    if res.effect_draws is not None:
        _, cdraw, hdraws = draws_from_dict(res.effect_draws)
        hdraw = hdraws[hid]
    else:
        cdraw, hdraw = CampaignDraw(), HeliostatDraw()
    return Case(one, hid, truth, res.observations, effects, cdraw, hdraw, settings)


def heldout_times(case: Case, days: int = 2) -> tuple[pd.DatetimeIndex, NDArray]:
    """Plant times and the plant's sun on the ``days`` days after the campaign."""
    s = case.settings
    d0 = pd.Timestamp(s.start_date, tz="UTC") + pd.Timedelta(days=s.days)
    t = pd.date_range(d0, d0 + pd.Timedelta(days=days), freq=f"{HELDOUT_STEP_MIN}min")[:-1]
    sp = sun_position(case.field.site, t)
    up = sp.elevation_rad > math.radians(s.min_elevation_deg + 5.0)
    return t[up], sp.u_sun_enu[up]


def _aim(case: Case):
    return pick_target(case.field, case.settings.target_id).centre_enu_m


def score(case: Case, steps: NDArray, times, sun, seed: int | None = 0) -> float:
    """RMS held-out pointing error of commanded ``steps`` in the case's world; ``seed``
    seeds the per-visit draws (wind, encoder), None leaves them out (the part a
    calibration can act on). [mrad]"""
    kin = case.field.heliostats[case.hid].kinematics
    ok = np.all(np.isfinite(steps), axis=1)
    err = pointing_error_mrad(
        kin, case.truth, steps[ok], times[ok], sun[ok], case.field.site, _aim(case),
        case.effects, case.cdraw, case.hdraw,
        None if seed is None else np.random.default_rng(seed),
    )  # fmt: skip
    return float(np.sqrt(np.mean(err**2)))


def kinematic_steps(
    case: Case, errors: KinematicErrors | None, times, sun, iterations: int = 2
) -> NDArray:
    """Integer steps of a kinematic model aiming at the target centre (NaN: unreachable).

    A model with backlash terms aims for the direction each axis will arrive from: the
    world's rule (:func:`sim.effects.approach_signs`, visit to visit in order), found by
    aiming without it and then ``iterations`` times with the directions of the last
    steps (the signs settle at once but where a step change is a few steps)."""
    kin = case.field.heliostats[case.hid].kinematics
    aim = np.broadcast_to(_aim(case), sun.shape)

    def inverse(approach):
        try:
            return np.rint(kin.inverse(aim, sun, errors, approach))
        except KinematicsError:
            out = np.full((len(sun), 2), np.nan)
            for i in range(len(sun)):
                a = None if approach is None else approach[i : i + 1]
                try:
                    out[i] = np.rint(kin.inverse(aim[i : i + 1], sun[i : i + 1], errors, a))[0]
                except KinematicsError:
                    pass
            return out

    steps = inverse(None)
    if errors is None or not any(errors.get(n) for n in BACKLASH):
        return steps
    for _ in range(iterations):
        ok = np.all(np.isfinite(steps), axis=1)
        a = np.zeros_like(steps)
        a[ok] = approach_signs(steps[ok])
        steps = inverse(a)
    return steps


# --------------------------------------------------------------------------- the oracle
def _effect_params(effects: Effects) -> list[tuple[str, float]]:
    """(name, prior σ) of the oracle's effect parameters for the effects switched on."""
    out: list[tuple[str, float]] = []
    if effects.sag:
        out.append(("sag_rad", 1e-3))
    if effects.thermal:
        out.append(("thermal_side_dt_k", 5.0))
    if effects.canting:
        c0, c2 = effects.canting_const_mrad * 1e-3, effects.canting_incidence_mrad * 1e-3
        out += [("c0h", c0), ("c0v", c0), ("c2h", c2), ("c2v", c2)]
    if effects.encoder:
        out += [("bl1", 1e-3), ("bl2", 1e-3)]
    if effects.survey:
        s = math.hypot(effects.pivot_sigma_m, effects.target_sigma_m)
        out += [("de", s), ("dn", s), ("du", s)]
    if effects.clock:
        out += [
            ("clock_s", effects.clock_offset_sigma_s),
            ("drift", 1e-6 * effects.clock_drift_sigma_ppm),
        ]
    return out


def _kin_names(drive: str) -> tuple[str, ...]:
    """The oracle's kinematic terms: the chain's, not the backlash (an effect parameter,
    ``bl1``/``bl2``, applied by the world model)."""
    return tuple(n for n in error_names(drive) if n not in BACKLASH)


#: Prior σ of the kinematic terms: the simulator's spreads (sim.observe.draw_true_errors).
def _kin_sigma(name: str) -> float:
    if name.endswith("_rad"):
        return 3e-3
    if name.startswith("actuator"):
        return 0.5e-3
    return 0.01


@dataclass(frozen=True, slots=True)
class OracleModel:
    """The oracle's fitted world: kinematic errors, effect draws, clock."""

    errors: KinematicErrors
    hdraw: HeliostatDraw
    cdraw: CampaignDraw


def _unpack(case: Case, names, x) -> OracleModel:
    kin_names = _kin_names(case.truth.drive)
    k = len(kin_names)
    errors = KinematicErrors.zeros(case.truth.drive).with_vector(kin_names, x[:k])
    v = dict(zip([n for n, _ in names], x[k:], strict=True))
    hd = HeliostatDraw(
        sag_rad=v.get("sag_rad", 0.0),
        thermal_side_dt_k=v.get("thermal_side_dt_k", 0.0),
        canting_const_rad=(v.get("c0h", 0.0), v.get("c0v", 0.0)),
        canting_incidence_rad=(v.get("c2h", 0.0), v.get("c2v", 0.0)),
        pivot_error_enu_m=(v.get("de", 0.0), v.get("dn", 0.0), v.get("du", 0.0)),
        backlash_rad=(v.get("bl1", 0.0), v.get("bl2", 0.0)),
    )
    cd = replace(
        case.cdraw,
        clock_offset_s=v.get("clock_s", 0.0),
        clock_drift=v.get("drift", 0.0),
        target_error_enu_m=(0.0, 0.0, 0.0),
    )
    return OracleModel(errors, hd, cd)


class _SunModel:
    """True sun as a function of the clock parameters, linearised in the clock error
    (the sun moves 0.07 mrad/s; the oracle's clock error is seconds)."""

    def __init__(self, case: Case, times: pd.DatetimeIndex, plant_sun: NDArray) -> None:
        eff = replace(case.effects, clock=False)
        self.s0 = true_sun(case.field.site, times, plant_sun, eff, case.cdraw)
        if case.effects.clock:
            h = 30.0
            later = sun_position(case.field.site, times + pd.Timedelta(seconds=h)).u_sun_enu
            earlier = sun_position(case.field.site, times - pd.Timedelta(seconds=h)).u_sun_enu
            self.ds = (later - earlier) / (2 * h)
        else:
            self.ds = np.zeros_like(self.s0)
        epoch = pd.Timestamp(case.cdraw.clock_epoch)
        self.dt_s = np.asarray((times - epoch).total_seconds(), dtype=float)

    def __call__(self, cd: CampaignDraw) -> NDArray:
        err = cd.clock_offset_s + cd.clock_drift * self.dt_s
        s = self.s0 - err[:, None] * self.ds  # true time = plant time − clock error
        return s / np.linalg.norm(s, axis=1, keepdims=True)


def _predict_hit(case: Case, m: OracleModel, steps, approach, sun, temp) -> NDArray:
    kin = case.field.heliostats[case.hid].kinematics
    c, _, r = world_beam(
        kin, m.errors, steps, sun, case.effects, m.hdraw, m.cdraw,
        VisitDraws.zeros(len(steps)), approach, temp,
    )  # fmt: skip
    tgt = pick_target(case.field, case.settings.target_id)
    return intersect_plane(c, r, tgt.centre_enu_m, tgt.u_normal_enu)


def fit_oracle(case: Case) -> OracleModel:
    """MAP fit of the true model family to the case's observations (module doc)."""
    from scipy.optimize import least_squares

    obs = case.observations
    times = pd.DatetimeIndex(pd.to_datetime(obs["time_utc"], utc=True))
    az = np.radians(obs["sun_azimuth_deg"].to_numpy(float))
    el = np.radians(obs["sun_elevation_deg"].to_numpy(float))
    from heliostat.frames import azel_to_enu

    plant_sun = azel_to_enu(az, el)
    steps = obs[["axis1_steps", "axis2_steps"]].to_numpy(float)
    spots = obs[["spot_e_m", "spot_n_m", "spot_u_m"]].to_numpy(float)
    approach = approach_signs(steps)
    temp = ambient_c(times, case.field.site, case.cdraw)
    sun_model = _SunModel(case, times, plant_sun)
    kin_names = _kin_names(case.truth.drive)
    names = _effect_params(case.effects)
    sig = np.array([_kin_sigma(n) for n in kin_names] + [s for _, s in names])
    slant = np.linalg.norm(
        spots - np.asarray(case.field.heliostats[case.hid].position_enu_m), axis=1
    )
    noise = max(case.settings.noise_mrad, 0.05) * 1e-3 * slant[:, None]

    def resid(x):
        m = _unpack(case, names, x * sig)
        hit = _predict_hit(case, m, steps, approach, sun_model(m.cdraw), temp)
        return np.concatenate([((hit - spots) / noise).ravel(), x])

    x0 = np.zeros(len(sig))
    if case.effects.sag:  # start the sag inside its physical range (the droop is positive)
        x0[len(kin_names)] = 0.5e-3 / sig[len(kin_names)]
    sol = least_squares(resid, x0, method="lm", x_scale=1.0)
    return _unpack(case, names, sol.x * sig)


def oracle_steps(case: Case, m: OracleModel, times, plant_sun, iterations: int = 4) -> NDArray:
    """Integer steps the oracle commands: its kinematic inverse, then the aim point moved
    against its world model's predicted miss, ``iterations`` times."""
    kin = case.field.heliostats[case.hid].kinematics
    aim0 = _aim(case)
    sun = _SunModel(case, times, plant_sun)(m.cdraw)
    temp = ambient_c(times, case.field.site, case.cdraw)
    aim = np.broadcast_to(aim0, plant_sun.shape).copy()
    steps = kinematic_steps(case, m.errors, times, plant_sun)
    ok = np.all(np.isfinite(steps), axis=1)
    for _ in range(iterations):
        st = kin.inverse(aim[ok], plant_sun[ok], m.errors)
        hit = _predict_hit(case, m, st, approach_signs(np.rint(st)), sun[ok], temp[ok])
        aim[ok] -= hit - aim0
    steps[ok] = np.rint(kin.inverse(aim[ok], plant_sun[ok], m.errors))
    return steps


# --------------------------------------------------------------------------- one case
def heldout_errors(case: Case, seed: int = 0) -> dict[str, float]:
    """Held-out RMS beam error of the nominal model, our pipeline
    (:func:`heliostat.calibration.calibrate_heliostat` defaults: the parameter set chosen
    by nested cross-validation, robust fit) and the oracle on one case: ``<model>_mrad``
    with the per-visit random effects (wind jitter, encoder quantisation) of the held-out
    visits, as a plant would measure it, and ``<model>_static_mrad`` without them. [mrad]"""
    from heliostat.calibration import calibrate_heliostat, observations_from_frame

    times, sun = heldout_times(case)
    obs, rejected = observations_from_frame(case.observations, case.field)
    if rejected:
        raise RuntimeError(f"simulated rows rejected: {rejected[:3]}")
    kin = case.field.heliostats[case.hid].kinematics
    fit = calibrate_heliostat(kin, obs[case.hid]).fit
    oracle = fit_oracle(case)
    steps = {
        "nominal": kinematic_steps(case, None, times, sun),
        "pipeline": kinematic_steps(case, fit.errors if fit.success else None, times, sun),
        "oracle": oracle_steps(case, oracle, times, sun),
    }
    out: dict[str, float] = {}
    for name, st in steps.items():
        out[f"{name}_mrad"] = score(case, st, times, sun, seed)
        out[f"{name}_static_mrad"] = score(case, st, times, sun, None)
    out["observations"] = len(case.observations)
    return out
