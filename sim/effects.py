"""Effects outside the fitted kinematic model: what a real plant adds to the simulator's
clean geometry.

The calibration fits a rigid kinematic chain (:mod:`heliostat.kinematics.errors`). A real
heliostat also sags under gravity, bends as its pylon warms on the sunny side, shakes in
the wind, has facets whose combined spot centre wanders with the incidence angle, reports
encoder counts that are quantised and lag by backlash, stands a few millimetres from
where the survey put it, keeps a clock that is off by a second or so, and sees the sun
through an atmosphere that is not the standard one. Each effect is a small pure function
from (state, draw) to a perturbation; :class:`Effects` holds the switches and magnitudes,
:func:`draw_heliostat`, :func:`draw_campaign` and :func:`draw_visits` the random draws
(12 significant digits, :func:`sim.reproduce.stable_float`, like
:func:`sim.observe.draw_true_errors`), :func:`world_beam` chains them for a visit.

Effect table (defaults of :meth:`Effects.realistic`; every magnitude is an order of
magnitude, not a measured property of one plant):

=============  ==========================================================  ==============
name           form                                                        default draw
=============  ==========================================================  ==============
``sag``        normal droops in elevation by a·cos(normal elevation) [1]_   a ~ U(0.2, 0.8) mrad
``thermal``    pylon bends away from the sun by α·ΔT_side·L/d, ΔT_side =   ΔT_max ~ U(1, 4) K
               ΔT_max·sin⁺(sun elevation); pylon grows α·L·(T − 20 °C),
               T from a daily ambient curve [2]_
``wind``       normal jitter N(0, σ) per axis per visit, σ = σ₁₀·(v/10)²,   σ₁₀ = 0.5 mrad,
               v ~ Weibull(k=2) per visit [1]_                              scale 4.5 m/s
``canting``    beam-centroid offset c₀ + c₂·sin²(incidence) [3]_            c₀ ~ N(0, 0.2),
                                                                           c₂ ~ N(0, 1.0) mrad
``encoder``    joint angle = reported + U(−q/2, q/2) − s·b/2, s = sign of   q = 2π/2¹⁶ rad,
               the last move, b = backlash [4]_                             b ~ U(0.1, 0.5) mrad
``survey``     pivot and target centre off their surveyed place [1]_       N(0, 5 mm) pivot,
                                                                           N(0, 3 mm) target
``clock``      plant clock off by o + d·(t − t₀) [5]_                       o ~ N(0, 1 s),
                                                                           d ~ N(0, 10 ppm)
``refraction`` refraction of the real atmosphere (pressure, the ambient   P ~ N(P_site, 1 kPa)
               curve's temperature) against the standard one the plant
               assumes, Sæmundsson's formula [6]_, [7]_
=============  ==========================================================  ==============

Frames: the campaign renders each frame from the effected beam (:func:`effective_normal`:
the normal that reflects the true sun into the effected beam), so the spot in a frame
and the ``true_spot_*`` columns are the same effected spot. The target's survey error is
applied as a shift of the heliostat relative to the target (a rigid translation of the
target is the opposite translation of everything else, and the camera measures in the
target's own frame), so frames and CSV stay consistent.

References
----------
.. [1] J. C. Sattler, M. Röger, P. Schwarzbözl, R. Buck, A. Macke, C. Raeder and
   J. Göttsche, "Review of heliostat calibration and tracking control methods," Solar
   Energy 207, 110-132, 2020. doi:10.1016/j.solener.2020.06.030 (error sources of
   heliostat tracking: gravity, wind, temperature, survey; orders of magnitude only).
.. [2] S. Timoshenko and J. N. Goodier, *Theory of Elasticity*, 2nd ed., McGraw-Hill,
   1951, ch. 14 (thermal bending of a beam with a linear transverse temperature
   gradient: curvature α·ΔT/d); steel α = 12e-6 K⁻¹.
.. [3] S. A. Jones, "A comparison of on-axis and off-axis heliostat alignment
   strategies," Sandia National Laboratories, SAND96-0566C, 1996 (off-axis aberration
   of canted heliostats grows with the incidence angle; order of magnitude only).
.. [4] Absolute encoders of 16 bit per turn (q = 0.096 mrad) are a common grade; the
   backlash range is of the order of the controller emulator's (:mod:`sim.controllers`,
   20 steps = 0.35 mrad on a 1000 steps/deg axis).
.. [5] A quartz clock of 10 ppm drifts 0.86 s a day; 1 s offset is an assumption for a
   controller synchronised daily (order of magnitude, not a source).
.. [6] T. Sæmundsson, "Astronomical refraction," Sky and Telescope 72, 70, 1986 (as
   given in J. Meeus, *Astronomical Algorithms*, 2nd ed., 1998, eq. 16.4).
.. [7] G. G. Bennett, "The calculation of astronomical refraction in marine
   navigation," Journal of Navigation 35(2), 255-259, 1982.
   doi:10.1017/S0373463300022037 (used in the tests as an independent check).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from heliostat.frames import Site, azel_to_enu, normalize, reflect
from heliostat.kinematics import HeliostatKinematics, KinematicErrors
from sim.reproduce import stable_float

#: Names of the effects, in the order of the effect table (CLI ``--effects``).
EFFECT_NAMES: tuple[str, ...] = (
    "sag",
    "thermal",
    "wind",
    "canting",
    "encoder",
    "survey",
    "clock",
    "refraction",
)

#: Linear thermal expansion of structural steel. [1/K]
STEEL_ALPHA_PER_K = 12e-6


#: Temperature at which the field was surveyed (pylon length reference). [°C]
SURVEY_TEMPERATURE_C = 20.0

#: The plant's sun model assumes this air temperature for refraction
#: (:func:`heliostat.sun.sun_position` default). [°C]
PLANT_TEMPERATURE_C = 12.0

_UP = np.array([0.0, 0.0, 1.0])


@dataclass(frozen=True, slots=True)
class Effects:
    """Switches and magnitudes of the effects outside the fitted model.

    The default is everything off (the simulator's earlier, clean behaviour);
    :meth:`realistic` switches everything on. Magnitudes are those of the module's table.

    Attributes
    ----------
    sag, thermal, wind, canting, encoder, survey, clock, refraction : bool
        Switches.
    sag_mrad : (float, float)
        Range of the normal's droop at a horizontal normal (uniform). [mrad]
    thermal_side_dt_k : (float, float)
        Range of the sunny-minus-shaded pylon temperature difference at zenith sun. [K]
    pylon_height_m, pylon_diameter_m : float
        Pylon of the bending and growth formulas. [m]
    ambient_mean_c, ambient_mean_sd_k, ambient_amplitude_k : float, float, (float, float)
        Daily ambient curve T = mean + amplitude·cos(2π(solar hour − 15)/24); the mean
        drawn once per campaign. [°C], [K], [K]
    wind_scale_m_s : float
        Weibull (k = 2) scale of the wind speed at a visit. [m/s]
    wind_jitter_mrad_at_10_m_s : float
        Normal jitter σ per axis at 10 m/s (∝ v²). [mrad]
    canting_const_mrad, canting_incidence_mrad : float
        σ of the constant and the sin²(incidence) parts of the beam-centroid offset. [mrad]
    encoder_bits : int
        Encoder counts per turn = 2**encoder_bits.
    backlash_mrad : (float, float)
        Range of the backlash per axis (uniform). [mrad]
    pivot_sigma_m, target_sigma_m : float
        σ per ENU axis of the pivot and target survey errors. [m]
    clock_offset_sigma_s, clock_drift_sigma_ppm : float
        σ of the clock offset [s] and drift [1e-6].
    pressure_sigma_pa : float
        σ of the air pressure around the standard pressure at the site altitude. [Pa]
    """

    sag: bool = False
    thermal: bool = False
    wind: bool = False
    canting: bool = False
    encoder: bool = False
    survey: bool = False
    clock: bool = False
    refraction: bool = False
    sag_mrad: tuple[float, float] = (0.2, 0.8)
    thermal_side_dt_k: tuple[float, float] = (1.0, 4.0)
    pylon_height_m: float = 4.0
    pylon_diameter_m: float = 0.5
    ambient_mean_c: float = 12.0
    ambient_mean_sd_k: float = 4.0
    ambient_amplitude_k: tuple[float, float] = (3.0, 7.0)
    wind_scale_m_s: float = 4.5
    wind_jitter_mrad_at_10_m_s: float = 0.5
    canting_const_mrad: float = 0.2
    canting_incidence_mrad: float = 1.0
    encoder_bits: int = 16
    backlash_mrad: tuple[float, float] = (0.1, 0.5)
    pivot_sigma_m: float = 0.005
    target_sigma_m: float = 0.003
    clock_offset_sigma_s: float = 1.0
    clock_drift_sigma_ppm: float = 10.0
    pressure_sigma_pa: float = 1000.0

    @classmethod
    def none(cls) -> Effects:
        """Every effect off (the clean simulator)."""
        return cls()

    @classmethod
    def realistic(cls) -> Effects:
        """Every effect on, at the table's magnitudes."""
        return cls.from_names(EFFECT_NAMES)

    @classmethod
    def from_names(cls, names: Iterable[str]) -> Effects:
        """Effects switched on by name (default magnitudes).

        Raises
        ------
        ValueError
            Naming an unknown effect and the known ones.
        """
        names = [n.strip() for n in names if n.strip()]
        bad = [n for n in names if n not in EFFECT_NAMES]
        if bad:
            raise ValueError(
                f"unknown effect(s) {', '.join(map(repr, bad))}; known: {', '.join(EFFECT_NAMES)}"
            )
        return cls(**{n: True for n in names})

    @property
    def on(self) -> tuple[str, ...]:
        """Names of the effects switched on, in table order."""
        return tuple(n for n in EFFECT_NAMES if getattr(self, n))

    @property
    def any(self) -> bool:
        return bool(self.on)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- draws
@dataclass(frozen=True, slots=True)
class HeliostatDraw:
    """One heliostat's static effect draws (SI units; zero where an effect is off).

    Attributes
    ----------
    sag_rad : float
        Droop of the normal at a horizontal normal. [rad]
    thermal_side_dt_k : float
        Sunny-minus-shaded pylon temperature difference at zenith sun. [K]
    canting_const_rad, canting_incidence_rad : tuple of 2 float
        Beam-centroid offset: constant part and the part ∝ sin²(incidence), along the
        beam frame's horizontal and upward axes (:func:`beam_frame`). [rad]
    pivot_error_enu_m : tuple of 3 float
        True pivot minus surveyed pivot. [m]
    backlash_rad : tuple of 2 float
        Backlash per axis (joint angle). [rad]
    """

    sag_rad: float = 0.0
    thermal_side_dt_k: float = 0.0
    canting_const_rad: tuple[float, float] = (0.0, 0.0)
    canting_incidence_rad: tuple[float, float] = (0.0, 0.0)
    pivot_error_enu_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    backlash_rad: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True, slots=True)
class CampaignDraw:
    """Draws shared by the whole plant (SI units; zero where an effect is off).

    Attributes
    ----------
    clock_offset_s : float
        Plant clock minus true time at ``clock_epoch``. [s]
    clock_drift : float
        Plant clock rate error. [s/s]
    clock_epoch : str
        UTC time the offset refers to (the campaign's first day, ISO 8601).
    target_error_enu_m : tuple of 3 float
        True target centre minus surveyed centre. [m]
    ambient_mean_c, ambient_amplitude_k : float
        Daily ambient temperature curve. [°C], [K]
    pressure_pa : float
        Air pressure (refraction); 0 = the plant's standard pressure. [Pa]
    """

    clock_offset_s: float = 0.0
    clock_drift: float = 0.0
    clock_epoch: str = "2025-01-01T00:00:00Z"
    target_error_enu_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    ambient_mean_c: float = PLANT_TEMPERATURE_C
    ambient_amplitude_k: float = 0.0
    pressure_pa: float = 0.0


@dataclass(frozen=True, slots=True)
class VisitDraws:
    """Per-visit draws of one heliostat, arrays of length N (zero where off).

    Attributes
    ----------
    wind_m_s : ndarray (N,)
        Wind speed. [m/s]
    jitter_rad : ndarray (N, 2)
        Normal tilt by the wind (elevation, azimuth direction). [rad]
    encoder_rad : ndarray (N, 2)
        Joint angle minus the reported encoder angle (quantisation). [rad]
    """

    wind_m_s: NDArray[np.float64]
    jitter_rad: NDArray[np.float64]
    encoder_rad: NDArray[np.float64]

    @classmethod
    def zeros(cls, n: int) -> VisitDraws:
        return cls(np.zeros(n), np.zeros((n, 2)), np.zeros((n, 2)))

    def take(self, idx: ArrayLike) -> VisitDraws:
        return VisitDraws(self.wind_m_s[idx], self.jitter_rad[idx], self.encoder_rad[idx])


def _s(v: float) -> float:
    return stable_float(v)


def draw_heliostat(effects: Effects, rng: np.random.Generator) -> HeliostatDraw:
    """Static draws of one heliostat. The generator always yields the same count of
    numbers (switches only zero the values), so switching one effect off leaves the
    others' draws unchanged."""
    sag = rng.uniform(*effects.sag_mrad) * 1e-3
    dt = rng.uniform(*effects.thermal_side_dt_k)
    c0 = rng.normal(0.0, effects.canting_const_mrad * 1e-3, 2)
    c2 = rng.normal(0.0, effects.canting_incidence_mrad * 1e-3, 2)
    piv = rng.normal(0.0, effects.pivot_sigma_m, 3)
    bl = rng.uniform(*effects.backlash_mrad, 2) * 1e-3
    e = effects
    return HeliostatDraw(
        sag_rad=_s(sag) if e.sag else 0.0,
        thermal_side_dt_k=_s(dt) if e.thermal else 0.0,
        canting_const_rad=tuple(_s(v) if e.canting else 0.0 for v in c0),
        canting_incidence_rad=tuple(_s(v) if e.canting else 0.0 for v in c2),
        pivot_error_enu_m=tuple(_s(v) if e.survey else 0.0 for v in piv),
        backlash_rad=tuple(_s(v) if e.encoder else 0.0 for v in bl),
    )


def draw_campaign(
    effects: Effects, site: Site, start_date: str, rng: np.random.Generator
) -> CampaignDraw:
    """Plant-wide draws (same count of numbers whatever the switches)."""
    off = rng.normal(0.0, effects.clock_offset_sigma_s)
    drift = rng.normal(0.0, effects.clock_drift_sigma_ppm * 1e-6)
    tgt = rng.normal(0.0, effects.target_sigma_m, 3)
    t_mean = rng.normal(effects.ambient_mean_c, effects.ambient_mean_sd_k)
    t_amp = rng.uniform(*effects.ambient_amplitude_k)
    dp = rng.normal(0.0, effects.pressure_sigma_pa)
    e = effects
    weather = e.thermal or e.refraction
    return CampaignDraw(
        clock_offset_s=_s(off) if e.clock else 0.0,
        clock_drift=_s(drift) if e.clock else 0.0,
        clock_epoch=pd.Timestamp(start_date, tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ"),
        target_error_enu_m=tuple(_s(v) if e.survey else 0.0 for v in tgt),
        ambient_mean_c=_s(t_mean) if weather else PLANT_TEMPERATURE_C,
        ambient_amplitude_k=_s(t_amp) if weather else 0.0,
        pressure_pa=_s(standard_pressure_pa(site) + dp) if e.refraction else 0.0,
    )


def draw_visits(effects: Effects, n: int, rng: np.random.Generator) -> VisitDraws:
    """Per-visit draws for ``n`` visits (same count of numbers whatever the switches)."""
    v = effects.wind_scale_m_s * rng.weibull(2.0, n)
    z = rng.normal(0.0, 1.0, (n, 2))
    u = rng.uniform(-0.5, 0.5, (n, 2))
    sigma = effects.wind_jitter_mrad_at_10_m_s * 1e-3 * (v / 10.0) ** 2
    q = 2.0 * math.pi / 2**effects.encoder_bits
    stable = np.vectorize(stable_float, otypes=[float])
    if n == 0:
        return VisitDraws.zeros(0)
    return VisitDraws(
        stable(v) if effects.wind else np.zeros(n),
        stable(z * sigma[:, None]) if effects.wind else np.zeros((n, 2)),
        stable(u * q) if effects.encoder else np.zeros((n, 2)),
    )


# --------------------------------------------------------------------------- closed forms
def standard_pressure_pa(site: Site) -> float:
    """Standard-atmosphere pressure at the site altitude (the plant's assumption). [Pa]"""
    import pvlib

    return float(pvlib.atmosphere.alt2pres(site.altitude_m))


def saemundsson_refraction_rad(
    true_elevation_rad: ArrayLike, pressure_pa: float = 101000.0, temperature_c: float = 10.0
) -> NDArray[np.float64]:
    """Refraction R (apparent − true elevation) for a true elevation, Sæmundsson 1986.

    R = 1.02′ · cot(h + 10.3/(h + 5.11)) · (P/101 kPa) · (283 K/(273 K + T)),
    h in degrees [6]_ (Meeus eq. 16.4 with its pressure/temperature factor). [rad]
    """
    h = np.degrees(np.asarray(true_elevation_rad, dtype=float))
    r_arcmin = 1.02 / np.tan(np.radians(h + 10.3 / (h + 5.11)))
    r_arcmin = r_arcmin * (pressure_pa / 101000.0) * (283.0 / (273.0 + np.asarray(temperature_c)))
    return np.radians(r_arcmin / 60.0)


def ambient_c(times: pd.DatetimeIndex, site: Site, draw: CampaignDraw) -> NDArray[np.float64]:
    """Ambient temperature on the daily curve: mean + amplitude·cos(2π(h − 15)/24), h the
    local mean solar hour (UTC + longitude/15°). [°C]"""
    t = pd.DatetimeIndex(times)
    hour = (t.hour + t.minute / 60.0 + t.second / 3600.0).to_numpy(float)
    solar_h = hour + site.longitude_deg / 15.0
    return draw.ambient_mean_c + draw.ambient_amplitude_k * np.cos(
        2.0 * math.pi * (solar_h - 15.0) / 24.0
    )


def clock_error_s(times: pd.DatetimeIndex, draw: CampaignDraw) -> NDArray[np.float64]:
    """Plant clock minus true time at plant times ``times``. [s]"""
    dt = (pd.DatetimeIndex(times) - pd.Timestamp(draw.clock_epoch)).total_seconds()
    return draw.clock_offset_s + draw.clock_drift * np.asarray(dt, dtype=float)


def sag_droop_rad(u_normal_enu: NDArray, sag_rad: float) -> NDArray[np.float64]:
    """Gravity droop of the normal's elevation: a·cos(elevation of the normal). [rad]"""
    el = np.arcsin(np.clip(u_normal_enu[:, 2], -1.0, 1.0))
    return sag_rad * np.cos(el)


def thermal_tilt_rad(
    u_sun_enu: NDArray, side_dt_k: float, height_m: float, diameter_m: float
) -> NDArray[np.float64]:
    """Pylon tilt away from the sun, α·ΔT·L/d with ΔT = side_dt_k·max(sin(sun el), 0) [2]_.
    [rad]"""
    dt = side_dt_k * np.maximum(u_sun_enu[:, 2], 0.0)
    return STEEL_ALPHA_PER_K * dt * height_m / diameter_m


def pylon_growth_m(temp_c: NDArray, height_m: float) -> NDArray[np.float64]:
    """Pylon length change from the survey temperature, α·L·(T − 20 °C). [m]"""
    return STEEL_ALPHA_PER_K * height_m * (np.asarray(temp_c, dtype=float) - SURVEY_TEMPERATURE_C)


def incidence_rad(u_normal_enu: NDArray, u_sun_enu: NDArray) -> NDArray[np.float64]:
    """Angle between the sun and the mirror normal. [rad]"""
    return np.arccos(np.clip(np.sum(u_normal_enu * u_sun_enu, axis=1), -1.0, 1.0))


def canting_offset_rad(
    incidence: NDArray, const_rad: Sequence[float], incidence_rad_: Sequence[float]
) -> NDArray[np.float64]:
    """Beam-centroid offset (horizontal, up) of c₀ + c₂·sin²(incidence). Shape (N, 2). [rad]"""
    s2 = np.sin(incidence)[:, None] ** 2
    return np.asarray(const_rad)[None, :] + np.asarray(incidence_rad_)[None, :] * s2


def backlash_rad(approach: NDArray, backlash: Sequence[float]) -> NDArray[np.float64]:
    """Joint angle minus reported angle after a move in direction ``approach`` (±1 per
    axis): the load lags by half the backlash. Shape (N, 2). [rad]"""
    return -0.5 * np.asarray(approach, dtype=float) * np.asarray(backlash)[None, :]


def approach_signs(steps: NDArray, start: ArrayLike = (0.0, 0.0)) -> NDArray[np.float64]:
    """Direction (±1) of the last move of each axis when the heliostat goes from visit to
    visit in order, starting at ``start`` (stow); no move counts as +1 (the controller's
    rule, :func:`heliostat.calibration.corrections.move_directions`)."""
    from heliostat.calibration.corrections import move_directions

    return move_directions(steps, start)


# --------------------------------------------------------------------------- geometry
def beam_frame(u: NDArray) -> tuple[NDArray, NDArray]:
    """Two unit vectors perpendicular to each direction: horizontal (up × u) and the
    upward one (u × horizontal)."""
    h = np.cross(_UP[None, :], u)
    small = np.linalg.norm(h, axis=1) < 1e-9
    h[small] = np.array([1.0, 0.0, 0.0])
    h = normalize(h)
    return h, np.cross(u, h)


def tilt(u: NDArray, angles: NDArray) -> NDArray[np.float64]:
    """Tilt directions by small angles along their :func:`beam_frame` axes (exact
    rotation by the angle's norm)."""
    h, v = beam_frame(u)
    d = angles[:, :1] * h + angles[:, 1:] * v
    a = np.linalg.norm(d, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(a > 0, d / np.where(a > 0, a, 1.0), 0.0)
    return normalize(u * np.cos(a) + w * np.sin(a))


def rotate(u: NDArray, axis: NDArray, angle: NDArray) -> NDArray[np.float64]:
    """Rodrigues rotation of vectors ``u`` about unit ``axis`` by ``angle`` (N,). [rad]"""
    c, s = np.cos(angle)[:, None], np.sin(angle)[:, None]
    k = axis
    return u * c + np.cross(k, u) * s + k * np.sum(k * u, axis=1, keepdims=True) * (1.0 - c)


def effective_normal(r_enu: NDArray, u_sun_enu: NDArray) -> NDArray[np.float64]:
    """The normal that reflects ``u_sun_enu`` into ``r_enu`` (bisector)."""
    return normalize(r_enu + u_sun_enu)


# --------------------------------------------------------------------------- the sun
def true_sun(
    site: Site,
    plant_times: pd.DatetimeIndex,
    plant_sun_enu: NDArray,
    effects: Effects,
    draw: CampaignDraw,
) -> NDArray[np.float64]:
    """The sun as it is at the plant's times: ``plant_sun_enu`` (the plant's model: its
    clock, standard refraction) unless clock or refraction effects are on; then the sun at
    the true time, with the refraction of the drawn pressure and the ambient curve's
    temperature instead of the standard one. Shape (N, 3)."""
    if not (effects.clock or effects.refraction) or len(plant_times) == 0:
        return plant_sun_enu
    from heliostat.sun import sun_position

    times = pd.DatetimeIndex(plant_times)
    if effects.clock:
        times = times - pd.to_timedelta(clock_error_s(times, draw), unit="s")
    sp = sun_position(site, times)
    el = sp.elevation_rad
    if effects.refraction:
        p0 = standard_pressure_pa(site)
        geo = el.copy()
        for _ in range(6):  # invert apparent = geo + R(geo): contraction by |R'| < 0.03
            geo = el - saemundsson_refraction_rad(geo, p0, PLANT_TEMPERATURE_C)
        temp = ambient_c(plant_times, site, draw)
        el = geo + saemundsson_refraction_rad(geo, draw.pressure_pa, temp)
    return azel_to_enu(sp.azimuth_rad, el)


# --------------------------------------------------------------------------- a visit
def world_beam(
    kin: HeliostatKinematics,
    errors: KinematicErrors,
    steps: NDArray,
    u_sun_enu: NDArray,
    effects: Effects,
    hdraw: HeliostatDraw,
    cdraw: CampaignDraw,
    visits: VisitDraws | None = None,
    approach: NDArray | None = None,
    temp_c: NDArray | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """The beam of reported ``steps`` in the real world, relative to the surveyed target.

    Parameters
    ----------
    kin : HeliostatKinematics
        Nominal kinematics (surveyed pivot).
    errors : KinematicErrors
        True kinematic errors.
    steps : ndarray (N, 2)
        Reported motor steps.
    u_sun_enu : ndarray (N, 3)
        The true sun (:func:`true_sun`).
    effects, hdraw, cdraw, visits
        Switches and draws; ``visits`` None = no per-visit draws.
    approach : ndarray (N, 2), optional
        Direction of the last move per axis (backlash); None = +1.
    temp_c : ndarray (N,), optional
        Ambient temperature (pylon growth); None = survey temperature.

    Returns
    -------
    centre_enu_m, u_normal_enu, u_beam_enu : ndarray (N, 3)
        Mirror centre shifted by pivot minus target survey error (so the surveyed target
        stands for the true one), the effective normal and the beam's centroid direction.
    """
    n = steps.shape[0]
    if not effects.any:
        pose = kin.forward(steps, errors)
        return pose.centre_enu_m, pose.u_normal_enu, reflect(pose.u_normal_enu, u_sun_enu)
    if visits is None:
        visits = VisitDraws.zeros(n)
    theta = kin.steps_to_angles(steps, errors)
    if effects.encoder:
        a = np.ones((n, 2)) if approach is None else approach
        theta = theta + visits.encoder_rad + backlash_rad(a, hdraw.backlash_rad)
    pose = kin.forward_angles(theta, errors)
    c = pose.centre_enu_m.copy()
    u = pose.u_normal_enu
    if effects.survey:
        c = c + np.asarray(hdraw.pivot_error_enu_m) - np.asarray(cdraw.target_error_enu_m)
    if effects.thermal:
        t = np.full(n, SURVEY_TEMPERATURE_C) if temp_c is None else temp_c
        c[:, 2] += pylon_growth_m(t, effects.pylon_height_m)
        tau = thermal_tilt_rad(
            u_sun_enu, hdraw.thermal_side_dt_k, effects.pylon_height_m, effects.pylon_diameter_m
        )
        s_h = u_sun_enu * np.array([1.0, 1.0, 0.0])
        ok = np.linalg.norm(s_h, axis=1) > 1e-9
        k = np.zeros_like(s_h)
        k[ok] = normalize(np.cross(s_h[ok], _UP[None, :]))
        u = rotate(u, k, np.where(ok, tau, 0.0))  # top of the pylon away from the sun
    if effects.sag:
        droop = sag_droop_rad(u, hdraw.sag_rad)
        u = tilt(u, np.stack([np.zeros(n), -droop], axis=1))
    if effects.wind:
        u = tilt(u, visits.jitter_rad)
    r = reflect(u, u_sun_enu)
    if effects.canting:
        off = canting_offset_rad(
            incidence_rad(u, u_sun_enu), hdraw.canting_const_rad, hdraw.canting_incidence_rad
        )
        r = tilt(r, off)
    return c, effective_normal(r, u_sun_enu), r


# --------------------------------------------------------------------------- records
def draws_to_dict(
    effects: Effects,
    cdraw: CampaignDraw,
    hdraws: Mapping[str, HeliostatDraw],
    visits: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The ``effects`` section of ``truth.json``: switches, magnitudes, every draw."""
    return {
        "on": list(effects.on),
        "settings": effects.to_dict(),
        "units": "names ending _rad radians, _m metres, _s seconds, _k kelvin, _c °C, "
        "_pa pascal, _m_s metres per second; clock_drift s/s",
        "campaign": asdict(cdraw),
        "heliostats": {hid: asdict(d) for hid, d in hdraws.items()},
        "visits": dict(visits or {}),
    }


def _tuple_fields(cls, rec: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for f in fields(cls):
        if f.name in rec:
            v = rec[f.name]
            out[f.name] = tuple(float(x) for x in v) if isinstance(v, list) else v
    return out


def draws_from_dict(
    data: Mapping[str, Any],
) -> tuple[Effects, CampaignDraw, dict[str, HeliostatDraw]]:
    """Inverse of :func:`draws_to_dict` (the per-visit records stay plain data).

    Raises
    ------
    ValueError
        Naming the key that is missing or malformed.
    """
    try:
        settings = dict(data["settings"])
        for k, v in settings.items():
            if isinstance(v, list):
                settings[k] = tuple(v)
        effects = Effects(**settings)
        cdraw = CampaignDraw(**_tuple_fields(CampaignDraw, data["campaign"]))
        hdraws = {
            hid: HeliostatDraw(**_tuple_fields(HeliostatDraw, rec))
            for hid, rec in data["heliostats"].items()
        }
    except (KeyError, TypeError) as exc:
        raise ValueError(f"effects section of truth.json: missing or bad key {exc}") from None
    return effects, cdraw, hdraws


def with_position(kin: HeliostatKinematics, position_enu_m: Sequence[float]) -> HeliostatKinematics:
    """``kin`` at another pivot position."""
    return replace(kin, position_enu_m=tuple(float(v) for v in position_enu_m))


def sun_enu_from_azel_deg(az_deg: ArrayLike, el_deg: ArrayLike) -> NDArray[np.float64]:
    """Unit sun vectors from azimuth/elevation in degrees (CSV columns)."""
    return azel_to_enu(np.radians(np.asarray(az_deg, float)), np.radians(np.asarray(el_deg, float)))


# --------------------------------------------------------------------------- scoring
def pointing_error_mrad(
    kin: HeliostatKinematics,
    errors: KinematicErrors,
    steps: NDArray,
    plant_times: pd.DatetimeIndex,
    plant_sun_enu: NDArray,
    site: Site,
    aim_enu_m: NDArray,
    effects: Effects,
    cdraw: CampaignDraw,
    hdraw: HeliostatDraw,
    rng: np.random.Generator | None = None,
    true_sun_enu: NDArray | None = None,
    start: ArrayLike = (0.0, 0.0),
) -> NDArray[np.float64]:
    """Beam pointing error of commanded ``steps`` in the real world: the angle between the
    effected beam (:func:`world_beam`, the true sun of :func:`true_sun`) and the direction
    from the (effected) mirror centre to the aim point. Per-visit draws (wind, encoder)
    come from ``rng`` (None = zero); backlash from moving visit to visit in the given
    order, from ``start`` [steps]. ``true_sun_enu``: :func:`true_sun` of these times
    when the caller has it (it is the same for every heliostat at the same times; a
    field's worth of solar position calls is most of the cost). Shape (N,). [mrad]"""
    from heliostat.frames import angle_between

    n = steps.shape[0]
    sun = (
        np.asarray(true_sun_enu, dtype=float)
        if true_sun_enu is not None
        else true_sun(site, pd.DatetimeIndex(plant_times), plant_sun_enu, effects, cdraw)
    )
    vis = draw_visits(effects, n, rng) if rng is not None else VisitDraws.zeros(n)
    temp = ambient_c(pd.DatetimeIndex(plant_times), site, cdraw)
    c, _, r = world_beam(
        kin, errors, steps, sun, effects, hdraw, cdraw, vis, approach_signs(steps, start), temp
    )
    return angle_between(r, normalize(np.asarray(aim_enu_m) - c)) * 1e3
