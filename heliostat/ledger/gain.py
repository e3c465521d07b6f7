"""What better pointing gains: intercept, target temperature, thermal energy, CO2.

Beam and intercept
------------------
The beam spread, the intercept of a Gaussian beam on a circular or rectangular aperture
(with a pointing error of a given radial RMS, ``treatment="gaussian"`` or ``"fixed"``) and
the atmospheric attenuation come from :mod:`heliostat.optics`, the one home the simulator
uses too; its docstring states the model. A pointing error of X mrad RMS is a spread over
time (and heliostats), not a fixed offset: the Gaussian treatment matches what an RMS is,
and it is what a field of heliostats with independent residuals sees on average.

Target
------
The target is a lumped absorber of area ``A_abs`` at one temperature T:

``α·P/A_abs = εσ_SB(T⁴ − T_amb⁴) + h(T − T_amb) + U(T − T_fluid)``

where ``U(T − T_fluid)`` is the useful heat drawn into a fluid/process at ``T_fluid``. With
no losses but radiation and no useful heat its limit is the stagnation temperature
``T_stag = (α·C·G/(ε·σ_SB))^¼`` with C·G = P/A_abs the concentrated flux.

Two receivers, two kinds of gain
--------------------------------
* **No flow control** (fixed U and fluid temperature, the balance above): better pointing
  shows up as a higher target temperature. ΔT is this receiver's figure. Its useful heat
  ``U·A·max(T − T_f, 0)`` is a threshold quantity: when T_f sits just under the "before"
  temperature a small ΔT looks like a large relative heat gain.
* **Flow-controlled** (the pump holds the receiver at its outlet temperature ``T_hold``, as
  real receivers are run): the temperature does not change; the gain is heat,
  ``Q = max(α·P − A·(εσ(T_hold⁴ − T_a⁴) + h(T_hold − T_a)), 0)``. Every heat, energy and
  CO2 figure of :class:`GainResult` (``thermal_*``, ``co2_*``) is this receiver's.

The annual figures are for a **clear-sky** year (pvlib Ineichen); multiply by a site's
clear-sky fraction (``dni_scale``) for a real one.

Which receiver
--------------
:func:`gain_point` is the one place that chooses: given a field config, its own receiver
(the target named ``receiver``, else the first) with the field's geometry; without one, a
named reference point (:data:`OPERATING_POINTS`), which is **hypothetical** and labelled so.
The demo, ``heliostat ledger gain`` and ``heliostat bench compare`` all call it.

The field is N identical copies of one representative heliostat (slant range D, elevation
of the aim point seen from the heliostat β, due pole-ward of the tower's north/south
side). Power on the target: ``P = N·DNI·A_m·cos θ_i·ρ·τ_atm(D)·η_int``, with the
Vittitoe–Biggs clear-day (23 km visibility) attenuation
(:func:`heliostat.optics.atmospheric_attenuation`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from heliostat.frames import Site, normalize
from heliostat.ledger.carbon import (
    DEFAULT_BOILER_EFFICIENCY,
    GAS_KG_CO2_PER_KWH_FUEL,
    Energy,
    displaced_gas_emissions,
)
from heliostat.optics import (
    SUN_SHAPE_RAD,
    Aperture,
    CircularAperture,
    RectangularAperture,
    astigmatism_sigma_rad,
    atmospheric_attenuation,
    beam_sigma_rad,
    pointing_intercept,
)

#: Stefan–Boltzmann constant (CODATA 2018, exact in SI). [W m⁻² K⁻⁴]
SIGMA_SB = 5.670374419e-8
#: Zero °C. [K]
ZERO_C_K = 273.15


# ------------------------------------------------------------------- thermal balance
def stagnation_temperature_k(
    flux_w_m2: ArrayLike, absorptivity: float = 1.0, emissivity: float = 1.0
) -> NDArray[np.float64]:
    """Stagnation temperature ``(α·C·G/(ε·σ))^¼`` of an absorber under a flux C·G. [K]"""
    q = np.asarray(flux_w_m2, float)
    if np.any(q < 0):
        raise ValueError(f"flux must be >= 0 [W/m²], got {flux_w_m2!r}")
    if not (0 < emissivity <= 1 and 0 < absorptivity <= 1):
        raise ValueError(
            f"absorptivity and emissivity must lie in (0, 1], got {absorptivity!r}, {emissivity!r}"
        )
    return (absorptivity * q / (emissivity * SIGMA_SB)) ** 0.25


@dataclass(frozen=True, slots=True)
class Absorber:
    """Lumped thermal model of the target.

    Attributes
    ----------
    area_m2 : float
        Area that absorbs the flux and loses heat (≥ the aperture for a cavity's
        aperture, the tube area for an external receiver). [m²]
    absorptivity, emissivity : float
        Solar absorptance α and thermal emittance ε. [-]
    h_conv_w_m2k : float
        Convective loss coefficient. [W m⁻² K⁻¹]
    u_useful_w_m2k : float
        Conductance to the fluid/process that takes the useful heat (0: none). [W m⁻² K⁻¹]
    t_fluid_k : float
        Temperature of that fluid/process. [K]
    t_amb_k : float
        Ambient (and sky) temperature. [K]
    t_hold_k : float or None
        Outlet temperature a flow-controlled receiver is held at (None: ``t_fluid_k``). [K]
    """

    area_m2: float
    absorptivity: float = 0.95
    emissivity: float = 0.9
    h_conv_w_m2k: float = 20.0
    u_useful_w_m2k: float = 0.0
    t_fluid_k: float = 298.15
    t_amb_k: float = 298.15
    t_hold_k: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.area_m2) and self.area_m2 > 0):
            raise ValueError(f"absorber area_m2 must be > 0, got {self.area_m2!r}")
        for k in ("absorptivity", "emissivity"):
            v = getattr(self, k)
            if not 0 < v <= 1:
                raise ValueError(f"absorber {k} must lie in (0, 1], got {v!r}")
        for k in ("h_conv_w_m2k", "u_useful_w_m2k", "t_fluid_k", "t_amb_k"):
            v = getattr(self, k)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"absorber {k} must be finite and >= 0, got {v!r}")
        if self.t_hold_k is not None and not (math.isfinite(self.t_hold_k) and self.t_hold_k > 0):
            raise ValueError(f"absorber t_hold_k must be > 0 [K], got {self.t_hold_k!r}")

    @property
    def hold_k(self) -> float:
        """Outlet temperature of the flow-controlled receiver. [K]"""
        return self.t_fluid_k if self.t_hold_k is None else self.t_hold_k

    def held_useful_w(self, power_w: ArrayLike) -> NDArray[np.float64]:
        """Useful heat of a flow-controlled receiver held at :attr:`hold_k`. [W]

        ``Q = max(α·P − A·(εσ(T_h⁴ − T_a⁴) + h(T_h − T_a)), 0)``: what is absorbed minus
        the losses at the held temperature; 0 when the losses exceed it (no flow).
        """
        p = np.asarray(power_w, float)
        th, ta = self.hold_k, self.t_amb_k
        loss = self.area_m2 * (
            self.emissivity * SIGMA_SB * (th**4 - ta**4) + self.h_conv_w_m2k * (th - ta)
        )
        return np.maximum(self.absorptivity * p - loss, 0.0)

    def temperature_k(self, power_w: ArrayLike) -> NDArray[np.float64]:
        """Steady-state temperature under an incident power (energy balance). [K]

        Solves ``α·P/A = εσ(T⁴ − T_a⁴) + h(T − T_a) + U·max(T − T_f, 0)`` for T by
        bisection. The useful-heat term is one-sided, as in :meth:`useful_w`: a receiver
        too cold to heat its fluid is drained (no flow), never heated by it — so the
        temperature never exceeds the stagnation temperature. The right side increases
        with T, so the root is unique; ``[T_a, max(T_a, T_f) + (αP/(Aεσ))^¼]`` holds it.
        """
        q_abs = self.absorptivity * np.asarray(power_w, float) / self.area_m2
        if np.any(~np.isfinite(q_abs)) or np.any(q_abs < 0):
            raise ValueError(f"power_w must be finite and >= 0, got {power_w!r}")
        es = self.emissivity * SIGMA_SB
        ta, tf = self.t_amb_k, self.t_fluid_k

        def net(t):
            return (
                es * (t**4 - ta**4)
                + self.h_conv_w_m2k * (t - ta)
                + self.u_useful_w_m2k * np.maximum(t - tf, 0.0)
                - q_abs
            )

        lo = np.full_like(q_abs, ta)
        hi = max(ta, tf) + (q_abs / es) ** 0.25 + 1.0
        for _ in range(200):  # halving a < 1e4 K bracket 200 times reaches float resolution
            mid = 0.5 * (lo + hi)
            pos = net(mid) > 0
            hi = np.where(pos, mid, hi)
            lo = np.where(pos, lo, mid)
            if np.all(hi - lo <= 1e-9 * hi):
                break
        return 0.5 * (lo + hi)

    def useful_w(self, temperature_k: ArrayLike) -> NDArray[np.float64]:
        """Useful heat ``U·A·(T − T_f)``, 0 when negative (receiver drained). [W]"""
        t = np.asarray(temperature_k, float)
        return np.maximum(self.u_useful_w_m2k * self.area_m2 * (t - self.t_fluid_k), 0.0)


# ------------------------------------------------------------------- operating points
@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """A field, its target and its site, reduced to one representative heliostat.

    Attributes
    ----------
    name : str
    site : Site
    n_heliostats : int
        Heliostats in the field (all like the representative one).
    mirror_area_m2 : float
        Reflective area per heliostat. [m²]
    slant_m : float
        Representative heliostat-to-aim-point distance. [m]
    aim_elevation_rad : float
        Elevation of the aim point seen from the heliostat. [rad]
    heliostat_bearing_rad : float
        Azimuth of the heliostat seen from the tower (clockwise from north; 0 = a north
        field, for the northern hemisphere). [rad]
    aperture : CircularAperture or RectangularAperture
    absorber : Absorber
    reflectivity : float
        Mirror reflectivity (clean). [-]
    other_efficiency : float
        Everything the representative heliostat does not model: shading, blocking,
        soiling, availability, the spread of cosine factors over a real field. [-]
    slope_rad : float
        Mirror slope error per axis (of the normal). [rad]
    sun_shape_rad : float
        Sun shape per axis. [rad]
    tracking_rad : float
        Extra tracking jitter of the beam not captured by the calibration RMS. [rad]
    focal_m : float or None
        Focal length; None means focused at the slant range.
    min_elevation_rad : float
        Sun elevation below which the plant does not operate. [rad]
    note : str
        Where the figures come from.
    hypothetical : bool
        A reference point of our own making, not a plant's (shown as such everywhere).
    """

    name: str
    site: Site
    n_heliostats: int
    mirror_area_m2: float
    slant_m: float
    aim_elevation_rad: float
    aperture: Aperture
    absorber: Absorber
    heliostat_bearing_rad: float = 0.0
    reflectivity: float = 0.93
    other_efficiency: float = 1.0
    slope_rad: float = 1.5e-3
    sun_shape_rad: float = SUN_SHAPE_RAD
    tracking_rad: float = 0.0
    focal_m: float | None = None
    min_elevation_rad: float = math.radians(5.0)
    note: str = ""
    hypothetical: bool = False

    @property
    def label(self) -> str:
        """The name, with "(hypothetical reference point)" for a point of our own making."""
        return f"{self.name} (hypothetical reference point)" if self.hypothetical else self.name

    def __post_init__(self) -> None:
        if not (isinstance(self.n_heliostats, int) and self.n_heliostats >= 1):
            raise ValueError(f"n_heliostats must be an integer >= 1, got {self.n_heliostats!r}")
        for k in ("mirror_area_m2", "slant_m"):
            v = getattr(self, k)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{k} must be > 0, got {v!r}")
        for k in ("reflectivity", "other_efficiency"):
            v = getattr(self, k)
            if not 0 < v <= 1:
                raise ValueError(f"{k} must lie in (0, 1], got {v!r}")

    def u_to_aim_enu(self) -> NDArray[np.float64]:
        """Unit vector from the heliostat to the aim point, ENU."""
        b, e = self.heliostat_bearing_rad, self.aim_elevation_rad
        # heliostat sits at bearing b from the tower, so it looks back toward b + π
        return normalize(
            np.array([-math.sin(b) * math.cos(e), -math.cos(b) * math.cos(e), math.sin(e)])
        )


def heliogen_like() -> OperatingPoint:
    """A Heliogen-like high-temperature point (illustrative, not Heliogen's data).

    A compact field of 400 small heliostats (2 m² each) at ~75 m slant range around a
    tower in Lancaster, California, on a 0.5 m radius cavity aperture; heat drawn to a
    process at 800 °C; ``other_efficiency`` 0.9 (blocking, soiling). At clear-sky noon the
    target runs at ~1,200-1,300 °C.
    """
    return OperatingPoint(
        name="heliogen-like",
        site=Site(34.70, -118.14, 720.0, "Lancaster, CA"),
        n_heliostats=400,
        mirror_area_m2=2.0,
        slant_m=75.0,
        aim_elevation_rad=math.radians(25.0),
        aperture=CircularAperture(0.5),
        absorber=Absorber(
            area_m2=math.pi * 0.5**2,
            absorptivity=0.95,
            emissivity=0.9,
            h_conv_w_m2k=20.0,
            u_useful_w_m2k=600.0,
            t_fluid_k=800.0 + ZERO_C_K,
            t_amb_k=298.15,
        ),
        reflectivity=0.93,
        other_efficiency=0.9,
        slope_rad=1.5e-3,
        note="illustrative: ~400 small heliostats, >1000 °C target (Heliogen 2019 "
        "announcement); sizes chosen by us",
        hypothetical=True,
    )


def plant_like() -> OperatingPoint:
    """A molten-salt tower plant (Gemasolar-like, illustrative).

    2,650 heliostats of 120 m², representative slant 500 m, external cylindrical receiver
    8.4 m × 10.6 m (seen as a rectangle; 280 m² of tubes), salt between 290 and 565 °C
    (mean 427 °C), near Seville. ``other_efficiency`` 0.6 (shading, blocking, soiling,
    the field's spread of cosine factors) brings the noon power to ~140 MW, near the
    plant's 120 MWt receiver rating.
    """
    return OperatingPoint(
        name="plant-like",
        site=Site(37.56, -5.33, 100.0, "near Seville"),
        n_heliostats=2650,
        mirror_area_m2=120.0,
        slant_m=500.0,
        aim_elevation_rad=math.radians(15.0),
        aperture=RectangularAperture(8.4, 10.6),
        absorber=Absorber(
            area_m2=math.pi * 8.4 * 10.6,
            absorptivity=0.95,
            emissivity=0.88,
            h_conv_w_m2k=20.0,
            u_useful_w_m2k=2000.0,
            t_fluid_k=427.0 + ZERO_C_K,
            t_amb_k=298.15,
            t_hold_k=565.0 + ZERO_C_K,
        ),
        reflectivity=0.93,
        other_efficiency=0.6,
        slope_rad=1.5e-3,
        note="illustrative: Gemasolar's public figures (2,650 × 120 m², 120 MWt "
        "receiver); heat-transfer figures chosen by us",
        hypothetical=True,
    )


OPERATING_POINTS = {"heliogen-like": heliogen_like, "plant-like": plant_like}


# ------------------------------------------------------------------- time series
@dataclass(frozen=True, slots=True)
class FieldState:
    """The field at a set of times for one pointing error.

    Attributes (arrays of shape (N,))
    ----------
    cosine : cos θ_i of the sun on the mirror. [-]
    intercept : share of reflected power inside the aperture. [-]
    power_w : power on the target (whole field). [W]
    temperature_k : absorber steady-state temperature. [K]
    stagnation_k : stagnation temperature ``(αP/(Aεσ))^¼``. [K]
    useful_w : useful heat of the receiver without flow control (fixed U, T_f). [W]
    held_w : useful heat of the flow-controlled receiver held at its outlet temperature. [W]
    operating : sun above the minimum elevation and DNI > 0.
    """

    cosine: NDArray[np.float64]
    intercept: NDArray[np.float64]
    power_w: NDArray[np.float64]
    temperature_k: NDArray[np.float64]
    stagnation_k: NDArray[np.float64]
    useful_w: NDArray[np.float64]
    held_w: NDArray[np.float64]
    operating: NDArray[np.bool_]


def field_state(
    point: OperatingPoint,
    u_sun_enu: ArrayLike,
    dni_w_m2: ArrayLike,
    pointing_rms_rad: float,
    treatment: str = "gaussian",
) -> FieldState:
    """Power, intercept, temperature and useful heat for sun vectors and DNI values.

    Parameters
    ----------
    point : OperatingPoint
    u_sun_enu : array_like of shape (N, 3)
        Unit vectors toward the sun, ENU.
    dni_w_m2 : array_like of shape (N,)
        Direct normal irradiance (clear sky or measured). [W m⁻²]
    pointing_rms_rad : float
        Radial RMS pointing error of the reflected beam. [rad]
    treatment : {"gaussian", "fixed"}
        See :func:`pointing_intercept`.
    """
    s = np.atleast_2d(np.asarray(u_sun_enu, float))
    if s.ndim != 2 or s.shape[1] != 3:
        raise ValueError(f"u_sun_enu must have shape (N, 3), got {s.shape}")
    dni = np.asarray(dni_w_m2, float).reshape(-1)
    if dni.shape[0] != s.shape[0]:
        raise ValueError(f"dni_w_m2 has {dni.shape[0]} values for {s.shape[0]} sun vectors")
    if np.any(~np.isfinite(dni)) or np.any(dni < 0):
        raise ValueError("dni_w_m2 must be finite and >= 0")
    t = point.u_to_aim_enu()
    n = normalize(s + t)
    cos_i = np.clip(np.sum(n * s, axis=-1), 0.0, 1.0)
    inc = np.arccos(cos_i)
    focal = point.slant_m if point.focal_m is None else point.focal_m
    ast = astigmatism_sigma_rad(point.mirror_area_m2, point.slant_m, focal, inc)
    sb = beam_sigma_rad(point.sun_shape_rad, point.slope_rad, point.tracking_rad, ast)
    eta = pointing_intercept(point.aperture, sb, point.slant_m, pointing_rms_rad, treatment)
    up = s[:, 2] > math.sin(point.min_elevation_rad)
    operating = up & (dni > 0)
    p = (
        point.n_heliostats
        * dni
        * point.mirror_area_m2
        * cos_i
        * point.reflectivity
        * point.other_efficiency
        * atmospheric_attenuation(point.slant_m)
        * eta
    )
    p = np.where(operating, p, 0.0)
    temp = point.absorber.temperature_k(p)
    stag = stagnation_temperature_k(
        p / point.absorber.area_m2, point.absorber.absorptivity, point.absorber.emissivity
    )
    useful = np.where(operating, point.absorber.useful_w(temp), 0.0)
    held = np.where(operating, point.absorber.held_useful_w(p), 0.0)
    return FieldState(cos_i, np.asarray(eta, float), p, temp, stag, useful, held, operating)


def _day_times(site: Site, date: str | pd.Timestamp, step_s: float) -> pd.DatetimeIndex:
    """Times over one solar day (±12 h around approximate solar noon), UTC."""
    day = pd.Timestamp(date)
    if day.tzinfo is not None:
        day = day.tz_convert("UTC").tz_localize(None)
    noon = day.normalize() + pd.Timedelta(hours=12.0 - site.longitude_deg / 15.0)
    n = int(round(86400.0 / step_s))
    return pd.date_range(
        noon - pd.Timedelta(hours=12), periods=n, freq=pd.Timedelta(seconds=step_s), tz="UTC"
    )


@dataclass(frozen=True, slots=True)
class GainResult:
    """The gain of going from one pointing error to another at an operating point.

    Temperatures (``t_*``, :attr:`delta_t_k`) are the receiver **without flow control**
    (fixed U, fluid at T_f). Energies (``thermal_*``) and CO2 are the useful heat of the
    **flow-controlled** receiver held at ``t_hold_k``, whole field unless named
    ``per_heliostat``. Annual figures are for a **clear-sky** year.
    """

    point: str
    before_mrad: float
    after_mrad: float
    treatment: str
    n_heliostats: int
    noon_utc: str
    intercept_before: float
    intercept_after: float
    power_before_w: float
    power_after_w: float
    t_before_k: float
    t_after_k: float
    stagnation_before_k: float
    stagnation_after_k: float
    thermal_before_kwh_per_day: float
    thermal_after_kwh_per_day: float
    operating_hours_per_day: float
    thermal_gain_kwh_per_year: float
    operating_hours_per_year: float
    boiler_efficiency: float
    gas_kg_per_kwh: float
    label: str = ""
    hypothetical: bool = False
    t_hold_k: float = math.nan
    thermal_before_kwh_per_year: float = math.nan
    thermal_after_kwh_per_year: float = math.nan
    no_flow_gain_kwh_per_day: float = math.nan
    extra: dict = field(default_factory=dict)

    @property
    def delta_t_k(self) -> float:
        """Temperature rise at clear-sky noon of the chosen day, receiver without flow
        control. [K]"""
        return self.t_after_k - self.t_before_k

    @property
    def thermal_gain_kwh_per_day(self) -> float:
        """Extra useful heat over the chosen day, flow-controlled receiver. [kWh]"""
        return self.thermal_after_kwh_per_day - self.thermal_before_kwh_per_day

    @property
    def co2_avoided_kg_per_day(self) -> float:
        """Gas CO2 the extra heat displaces over the chosen day. [kg]"""
        return displaced_gas_emissions(
            Energy.from_kwh(self.thermal_gain_kwh_per_day),
            self.boiler_efficiency,
            self.gas_kg_per_kwh,
        ).kg_co2e

    @property
    def co2_avoided_kg_per_year(self) -> float:
        """Gas CO2 the extra heat displaces over a clear-sky year. [kg]"""
        return displaced_gas_emissions(
            Energy.from_kwh(self.thermal_gain_kwh_per_year),
            self.boiler_efficiency,
            self.gas_kg_per_kwh,
        ).kg_co2e

    def as_dict(self) -> dict:
        """Flat dictionary with units in the keys (for JSON and the book)."""
        return {
            "point": self.point,
            "label": self.label or self.point,
            "hypothetical": self.hypothetical,
            "temperature_receiver": "no flow control (fixed U, fluid at T_f)",
            "heat_receiver": "flow-controlled, held at its outlet temperature",
            "t_hold_c": self.t_hold_k - ZERO_C_K,
            "annual_basis": "clear-sky year (pvlib Ineichen, 21st of each month x its days)",
            "before_mrad": self.before_mrad,
            "after_mrad": self.after_mrad,
            "treatment": self.treatment,
            "n_heliostats": self.n_heliostats,
            "noon_utc": self.noon_utc,
            "intercept_before": self.intercept_before,
            "intercept_after": self.intercept_after,
            "power_before_w": self.power_before_w,
            "power_after_w": self.power_after_w,
            "t_before_c": self.t_before_k - ZERO_C_K,
            "t_after_c": self.t_after_k - ZERO_C_K,
            "delta_t_k": self.delta_t_k,
            "stagnation_before_c": self.stagnation_before_k - ZERO_C_K,
            "stagnation_after_c": self.stagnation_after_k - ZERO_C_K,
            "thermal_before_kwh_per_day": self.thermal_before_kwh_per_day,
            "thermal_after_kwh_per_day": self.thermal_after_kwh_per_day,
            "thermal_gain_kwh_per_day": self.thermal_gain_kwh_per_day,
            "thermal_gain_kwh_per_day_per_heliostat": self.thermal_gain_kwh_per_day
            / self.n_heliostats,
            "co2_avoided_kg_per_day": self.co2_avoided_kg_per_day,
            "operating_hours_per_day": self.operating_hours_per_day,
            "no_flow_gain_kwh_per_day": self.no_flow_gain_kwh_per_day,
            "thermal_gain_kwh_per_year": self.thermal_gain_kwh_per_year,
            "thermal_before_kwh_per_year": self.thermal_before_kwh_per_year,
            "thermal_after_kwh_per_year": self.thermal_after_kwh_per_year,
            "co2_avoided_kg_per_year": self.co2_avoided_kg_per_year,
            "operating_hours_per_year": self.operating_hours_per_year,
            "boiler_efficiency": self.boiler_efficiency,
            "gas_kg_co2_per_kwh": self.gas_kg_per_kwh,
            **self.extra,
        }


def pointing_gain(
    point: OperatingPoint,
    before_mrad: float,
    after_mrad: float,
    date: str = "2025-03-21",
    step_s: float = 600.0,
    treatment: str = "gaussian",
    boiler_efficiency: float = DEFAULT_BOILER_EFFICIENCY,
    gas_kg_per_kwh: float = GAS_KG_CO2_PER_KWH_FUEL,
    year: int | None = None,
    dni_scale: float = 1.0,
) -> GainResult:
    """Gain of improving the pointing from ``before_mrad`` to ``after_mrad`` (radial RMS).

    Clear-sky DNI (pvlib Ineichen, no network) at the point's site. The day figures are
    for ``date``; the year figure sums the 21st of each month × the days of that month
    (a clear-sky year: multiply by a site's clear-sky fraction, or pass ``dni_scale``).
    Temperatures are those of the receiver without flow control; heat, the
    flow-controlled receiver's (see the module docstring).

    Parameters
    ----------
    point : OperatingPoint
    before_mrad, after_mrad : float
        Radial RMS pointing error of the reflected beam before and after calibration. [mrad]
    date : str
        Day of the day figures (its year is used for the annual figure unless ``year``).
    step_s : float
        Integration step. [s]
    treatment : {"gaussian", "fixed"}
    boiler_efficiency, gas_kg_per_kwh : float
        The gas heat the solar heat replaces.
    dni_scale : float
        Factor on clear-sky DNI (e.g. 0.8 for a hazier site). [-]
    """
    from heliostat.sun import clear_sky_dni, sun_position

    for name, v in (("before_mrad", before_mrad), ("after_mrad", after_mrad)):
        if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be a finite number >= 0 [mrad], got {v!r}")
    if not (step_s > 0 and 86400 % step_s == 0):
        raise ValueError(f"step_s must divide a day (86400 s), got {step_s!r}")
    if not (math.isfinite(dni_scale) and dni_scale >= 0):
        raise ValueError(f"dni_scale must be >= 0, got {dni_scale!r}")
    day0 = pd.Timestamp(date)
    yr = year or day0.year
    days = [day0] + [pd.Timestamp(yr, m, 21) for m in range(1, 13)]
    weights = [0.0] + [pd.Timestamp(yr, m, 1).days_in_month for m in range(1, 13)]
    idx = _day_times(point.site, days[0], step_s)
    for d in days[1:]:
        idx = idx.append(_day_times(point.site, d, step_s))
    sp = sun_position(point.site, idx)
    dni = clear_sky_dni(point.site, idx) * dni_scale
    before = field_state(point, sp.u_sun_enu, dni, before_mrad * 1e-3, treatment)
    after = field_state(point, sp.u_sun_enu, dni, after_mrad * 1e-3, treatment)
    n = len(idx) // len(days)
    h = step_s / 3600.0

    def per_day(x):
        return np.asarray(x, float).reshape(len(days), n).sum(axis=1)

    wb_kwh = per_day(before.held_w) * h / 1e3
    wa_kwh = per_day(after.held_w) * h / 1e3
    nf_kwh = per_day(after.useful_w - before.useful_w) * h / 1e3
    hours = per_day(after.held_w > 0) * h
    w = np.asarray(weights)
    # Noon of the chosen day: the step with the highest sun.
    elev = sp.u_sun_enu[:n, 2]
    k = int(np.argmax(elev))
    return GainResult(
        point=point.name,
        before_mrad=float(before_mrad),
        after_mrad=float(after_mrad),
        treatment=treatment,
        n_heliostats=point.n_heliostats,
        noon_utc=idx[k].isoformat(),
        intercept_before=float(before.intercept[k]),
        intercept_after=float(after.intercept[k]),
        power_before_w=float(before.power_w[k]),
        power_after_w=float(after.power_w[k]),
        t_before_k=float(before.temperature_k[k]),
        t_after_k=float(after.temperature_k[k]),
        stagnation_before_k=float(before.stagnation_k[k]),
        stagnation_after_k=float(after.stagnation_k[k]),
        thermal_before_kwh_per_day=float(wb_kwh[0]),
        thermal_after_kwh_per_day=float(wa_kwh[0]),
        operating_hours_per_day=float(hours[0]),
        thermal_gain_kwh_per_year=float(np.sum((wa_kwh - wb_kwh) * w)),
        operating_hours_per_year=float(np.sum(hours * w)),
        boiler_efficiency=boiler_efficiency,
        gas_kg_per_kwh=gas_kg_per_kwh,
        label=point.label,
        hypothetical=point.hypothetical,
        t_hold_k=point.absorber.hold_k,
        thermal_before_kwh_per_year=float(np.sum(wb_kwh * w)),
        thermal_after_kwh_per_year=float(np.sum(wa_kwh * w)),
        no_flow_gain_kwh_per_day=float(nf_kwh[0]),
        extra={"site": point.site.name, "date": str(day0.date()), "dni_scale": dni_scale},
    )


def point_for_field(
    point: OperatingPoint,
    cfg,
    target_id: str | None = None,
    label: str = "",
    target_aperture: bool = True,
) -> OperatingPoint:
    """An operating point reshaped to a field config: its site, heliostat count, mean mirror
    area, reflectivity and slope error, mean slant range and bearing to a target, and (with
    ``target_aperture``) the target as the aperture (absorber area = target area; else the
    point's own aperture and absorber stay). The absorber's other properties stay those of
    ``point``.

    Raises
    ------
    ValueError, KeyError
        For a field without heliostats or targets, or an unknown ``target_id``.
    """
    if not cfg.targets or not cfg.heliostats:
        raise ValueError(f"{cfg.source}: needs at least one target and one heliostat")
    tid = target_id or next(iter(cfg.targets))
    if tid not in cfg.targets:
        raise KeyError(f"{cfg.source}: no target {tid!r} (have {', '.join(cfg.targets)})")
    tgt = cfg.targets[tid]
    hs = list(cfg.heliostats.values())
    pos = np.array([h.kinematics.position_enu_m for h in hs], float)
    v = tgt.centre_enu_m - pos
    dist = np.linalg.norm(v, axis=1)
    mean_v = v.mean(axis=0)
    aperture = dict(
        aperture=RectangularAperture(tgt.width_m, tgt.height_m),
        absorber=replace(point.absorber, area_m2=tgt.width_m * tgt.height_m),
    )
    return with_changes(
        point,
        **(aperture if target_aperture else {}),
        site=cfg.site,
        n_heliostats=len(hs),
        mirror_area_m2=float(np.mean([h.mirror.width_m * h.mirror.height_m for h in hs])),
        slant_m=float(dist.mean()),
        aim_elevation_rad=float(math.atan2(mean_v[2], math.hypot(mean_v[0], mean_v[1]))),
        heliostat_bearing_rad=float(math.atan2(-mean_v[0], -mean_v[1]) % (2 * math.pi)),
        reflectivity=float(np.mean([h.mirror.reflectivity for h in hs])),
        slope_rad=float(np.mean([h.mirror.slope_error_mrad for h in hs])) * 1e-3,
        name=f"{point.name} @ {label or cfg.source}:{tid}",
    )


def with_changes(point: OperatingPoint, **changes) -> OperatingPoint:
    """A copy of an operating point with some fields changed (``dataclasses.replace``)."""
    return replace(point, **changes)


#: Outlet temperature a field's own receiver is held at when the field config says nothing:
#: low-temperature process heat, what a flat target of a small field (tens of suns,
#: stagnation a few hundred °C) can serve. ``heliostat ledger gain --fluid-c`` overrides. [°C]
FIELD_RECEIVER_FLUID_C = 150.0


def default_receiver_id(cfg) -> str:
    """The field's own receiver: the target named ``receiver`` (or containing it), else the
    first target."""
    if not cfg.targets:
        raise ValueError(f"{cfg.source}: the field has no targets")
    ids = list(cfg.targets)
    return next((t for t in ids if t == "receiver"), None) or next(
        (t for t in ids if "receiver" in t.lower()), ids[0]
    )


def gain_point(
    cfg=None,
    target_id: str | None = None,
    reference: str = "heliogen-like",
    label: str = "",
    fluid_c: float | None = None,
) -> OperatingPoint:
    """The one choice of receiver for every gain figure (demo, ``ledger gain``, ``bench``).

    Parameters
    ----------
    cfg : FieldConfig or None
        A field config. Given: the field's own receiver (``target_id``, default
        :func:`default_receiver_id`) as aperture and absorber, with the field's site,
        heliostats and geometry; thermal properties (α, ε, h, U) those of ``reference``,
        fluid and outlet at ``fluid_c`` (default :data:`FIELD_RECEIVER_FLUID_C`).
        None: the named reference point itself, hypothetical.
    target_id : str or None
    reference : str
        Key of :data:`OPERATING_POINTS`.
    label : str
        How to name the field (default its file).
    fluid_c : float or None
        Fluid and outlet temperature. [°C]
    """
    if reference not in OPERATING_POINTS:
        raise ValueError(
            f"unknown operating point {reference!r}: expected one of {', '.join(OPERATING_POINTS)}"
        )
    point = OPERATING_POINTS[reference]()
    if cfg is None:
        if fluid_c is not None:
            t = fluid_c + ZERO_C_K
            point = replace(point, absorber=replace(point.absorber, t_fluid_k=t, t_hold_k=t))
        return point
    tid = target_id or default_receiver_id(cfg)
    t = (FIELD_RECEIVER_FLUID_C if fluid_c is None else fluid_c) + ZERO_C_K
    fp = point_for_field(point, cfg, tid, label=label)
    return replace(
        fp,
        name=f"{label or cfg.source}:{tid}",
        absorber=replace(fp.absorber, t_fluid_k=t, t_hold_k=t),
        hypothetical=False,
        note=f"the field's own receiver {tid!r}; thermal properties assumed "
        f"(α, ε, h, U of {reference}; fluid and outlet at {t - ZERO_C_K:g} °C)",
    )
