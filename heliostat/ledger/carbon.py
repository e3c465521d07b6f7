"""Units of the ledger (energy, power, mass of CO2e, grid carbon intensity) and grid presets.

Energy is held in joules inside and shown in kWh at the edges; CO2e is held in kg and
shown in lb only where a source states lb (Strubell et al. 2019). Conversions are written
exactly: 1 kWh = 3.6e6 J, 1 lb = 0.45359237 kg (international avoirdupois pound).

The unit types follow codecarbon's ``Energy.from_ujoules`` idea: a quantity is built with a
named constructor that says the unit, so ``Energy.from_kwh(27)`` cannot be mistaken for
27 J.

References
----------
.. [1] E. Strubell, A. Ganesh and A. McCallum, "Energy and Policy Considerations for Deep
   Learning in NLP," Proc. ACL 2019, pp. 3645-3650. doi:10.18653/v1/P19-1355
.. [2] U.S. EPA, "Emissions & Generation Resource Integrated Database (eGRID)"; the US
   average 0.954 lb CO2/kWh is the figure Strubell et al. [1] use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Joules in one kilowatt-hour (exact). [J kWh⁻¹]
J_PER_KWH = 3.6e6
#: Kilograms in one international avoirdupois pound (exact). [kg lb⁻¹]
KG_PER_LB = 0.45359237


def _finite(name: str, value: float) -> float:
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return v


def _finite_nonneg(name: str, value: float) -> float:
    v = _finite(name, value)
    if v < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return v


@dataclass(frozen=True, slots=True, order=True)
class Energy:
    """An amount of energy. Build with a named constructor; stored in joules.

    Attributes
    ----------
    joules : float
        The energy. [J]
    """

    joules: float

    def __post_init__(self) -> None:
        _finite("energy (J)", self.joules)

    @classmethod
    def from_joules(cls, j: float) -> Energy:
        """Energy from joules. [J]"""
        return cls(float(j))

    @classmethod
    def from_ujoules(cls, uj: float) -> Energy:
        """Energy from microjoules (RAPL ``energy_uj``). [µJ]"""
        return cls(float(uj) / 1e6)

    @classmethod
    def from_mjoules(cls, mj: float) -> Energy:
        """Energy from millijoules (NVML total energy). [mJ]"""
        return cls(float(mj) / 1e3)

    @classmethod
    def from_kwh(cls, kwh: float) -> Energy:
        """Energy from kilowatt-hours. [kWh]"""
        return cls(float(kwh) * J_PER_KWH)

    @classmethod
    def from_power(cls, power_w: float, duration_s: float) -> Energy:
        """Energy of a constant power over a duration. [W], [s]"""
        return cls(_finite("power_w", power_w) * _finite_nonneg("duration_s", duration_s))

    @property
    def kwh(self) -> float:
        """The energy in kilowatt-hours. [kWh]"""
        return self.joules / J_PER_KWH

    def __add__(self, other: Energy) -> Energy:
        if not isinstance(other, Energy):
            return NotImplemented
        return Energy(self.joules + other.joules)

    def __sub__(self, other: Energy) -> Energy:
        if not isinstance(other, Energy):
            return NotImplemented
        return Energy(self.joules - other.joules)

    def __mul__(self, factor: float) -> Energy:
        return Energy(self.joules * float(factor))

    __rmul__ = __mul__


@dataclass(frozen=True, slots=True, order=True)
class Power:
    """A power. Stored in watts.

    Attributes
    ----------
    watts : float
        The power. [W]
    """

    watts: float

    def __post_init__(self) -> None:
        _finite("power (W)", self.watts)

    @classmethod
    def from_watts(cls, w: float) -> Power:
        """Power from watts. [W]"""
        return cls(float(w))

    @classmethod
    def from_energy(cls, energy: Energy, duration_s: float) -> Power:
        """Mean power of an energy spent over a duration. [s]"""
        d = _finite("duration_s", duration_s)
        if d <= 0:
            raise ValueError(f"duration_s must be > 0 for a mean power, got {duration_s!r}")
        return cls(energy.joules / d)

    @property
    def kw(self) -> float:
        """The power in kilowatts. [kW]"""
        return self.watts / 1e3


@dataclass(frozen=True, slots=True, order=True)
class Emissions:
    """A mass of CO2-equivalent. Stored in kilograms.

    Attributes
    ----------
    kg_co2e : float
        The mass. [kg CO2e]
    """

    kg_co2e: float

    def __post_init__(self) -> None:
        _finite("emissions (kg CO2e)", self.kg_co2e)

    @classmethod
    def from_kg(cls, kg: float) -> Emissions:
        """Emissions from kilograms. [kg CO2e]"""
        return cls(float(kg))

    @classmethod
    def from_lb(cls, lb: float) -> Emissions:
        """Emissions from pounds (as Strubell et al. state them). [lb CO2e]"""
        return cls(float(lb) * KG_PER_LB)

    @property
    def lb(self) -> float:
        """The mass in pounds. [lb CO2e]"""
        return self.kg_co2e / KG_PER_LB

    @property
    def tonnes(self) -> float:
        """The mass in metric tonnes. [t CO2e]"""
        return self.kg_co2e / 1e3

    def __add__(self, other: Emissions) -> Emissions:
        if not isinstance(other, Emissions):
            return NotImplemented
        return Emissions(self.kg_co2e + other.kg_co2e)


@dataclass(frozen=True, slots=True)
class CarbonIntensity:
    """CO2e emitted per unit of electricity (or fuel) energy.

    Attributes
    ----------
    kg_per_kwh : float
        The intensity. [kg CO2e kWh⁻¹]
    name : str
        Short name (a preset key or "user").
    source : str
        Where the figure comes from.
    """

    kg_per_kwh: float
    name: str = "user"
    source: str = "given by the user"

    def __post_init__(self) -> None:
        _finite_nonneg("carbon intensity (kg CO2e/kWh)", self.kg_per_kwh)

    @classmethod
    def from_kg_per_kwh(cls, v: float, name: str = "user", source: str = "given by the user"):
        """Intensity from kg CO2e per kWh. [kg kWh⁻¹]"""
        return cls(float(v), name, source)

    @classmethod
    def from_lb_per_kwh(cls, v: float, name: str = "user", source: str = "given by the user"):
        """Intensity from lb CO2e per kWh. [lb kWh⁻¹]"""
        return cls(float(v) * KG_PER_LB, name, source)

    @classmethod
    def from_g_per_kwh(cls, v: float, name: str = "user", source: str = "given by the user"):
        """Intensity from g CO2e per kWh (codecarbon's unit). [g kWh⁻¹]"""
        return cls(float(v) / 1e3, name, source)

    @property
    def lb_per_kwh(self) -> float:
        """The intensity in lb CO2e per kWh. [lb kWh⁻¹]"""
        return self.kg_per_kwh / KG_PER_LB

    def emissions(self, energy: Energy) -> Emissions:
        """CO2e of an energy at this intensity."""
        return Emissions(energy.kwh * self.kg_per_kwh)


#: Grid presets. Figures in lb/kWh exactly as their sources print them.
GRID_PRESETS: dict[str, CarbonIntensity] = {
    "us": CarbonIntensity.from_lb_per_kwh(
        0.954,
        "us",
        "US average, 0.954 lb CO2e/kWh: Strubell et al. 2019 (ACL), Sec. 2, from the "
        "EPA's figure; doi:10.18653/v1/P19-1355",
    ),
    "california": CarbonIntensity.from_lb_per_kwh(
        0.47,
        "california",
        "California grid, 0.47 lb CO2e/kWh: Barnard's re-analysis of Strubell et al.",
    ),
    "renewable-cloud": CarbonIntensity.from_lb_per_kwh(
        0.033,
        "renewable-cloud",
        "Renewable-matched cloud data centre, 0.033 lb CO2e/kWh: Barnard's re-analysis "
        "of Strubell et al.",
    ),
}

#: Natural gas burnt for heat: CO2 per kWh of fuel (the project issue's figure, close to
#: the UK government GHG conversion factor for natural gas, ~0.18 kg CO2/kWh gross CV).
GAS_KG_CO2_PER_KWH_FUEL = 0.181
#: Default efficiency of the gas boiler the solar heat replaces. [-]
DEFAULT_BOILER_EFFICIENCY = 0.9

#: Strubell et al.'s PUE (2018 global data-centre average, Uptime Institute). [-]
STRUBELL_PUE = 1.58


def grid_intensity(name_or_value: str | float) -> CarbonIntensity:
    """A grid preset by name, or a user number in kg CO2e/kWh.

    Parameters
    ----------
    name_or_value : str or float
        A key of :data:`GRID_PRESETS` ("us", "california", "renewable-cloud"), or a number
        (as float or numeric string) in kg CO2e per kWh.

    Raises
    ------
    ValueError
        Unknown preset name, or a negative / non-finite number.
    """
    if isinstance(name_or_value, str):
        key = name_or_value.strip().lower()
        if key in GRID_PRESETS:
            return GRID_PRESETS[key]
        try:
            v = float(key)
        except ValueError:
            raise ValueError(
                f"unknown grid preset {name_or_value!r}: expected one of "
                f"{', '.join(GRID_PRESETS)} or a number in kg CO2e/kWh"
            ) from None
        return CarbonIntensity.from_kg_per_kwh(v)
    return CarbonIntensity.from_kg_per_kwh(float(name_or_value))


def displaced_gas_emissions(
    thermal: Energy,
    boiler_efficiency: float = DEFAULT_BOILER_EFFICIENCY,
    gas_kg_per_kwh: float = GAS_KG_CO2_PER_KWH_FUEL,
) -> Emissions:
    """CO2 avoided when solar heat replaces heat from a natural-gas boiler.

    ``kg = kWh_thermal / boiler_efficiency * gas_kg_per_kwh``.

    Parameters
    ----------
    thermal : Energy
        Useful heat delivered instead of the boiler's.
    boiler_efficiency : float
        Boiler efficiency, in (0, 1]. [-]
    gas_kg_per_kwh : float
        CO2 per kWh of gas burnt. [kg CO2 kWh⁻¹]
    """
    eta = _finite("boiler_efficiency", boiler_efficiency)
    if not 0 < eta <= 1:
        raise ValueError(f"boiler_efficiency must lie in (0, 1], got {boiler_efficiency!r}")
    return Emissions(thermal.kwh / eta * _finite_nonneg("gas_kg_per_kwh", gas_kg_per_kwh))


def strubell_kwh(hours: float, power_w: float, pue: float = STRUBELL_PUE) -> Energy:
    """Strubell et al.'s Eq. (1): p_t = PUE · t · (p_c + p_r + g·p_g) / 1000 [kWh].

    Parameters
    ----------
    hours : float
        Training time t. [h]
    power_w : float
        The combined average draw p_c + p_r + g·p_g (CPU + DRAM + g GPUs), as their
        Table 3 prints it in its "Power (W)" column. [W]
    pue : float
        Power usage effectiveness (1.58 in the paper). [-]

    Returns
    -------
    Energy
        Facility energy, PUE included.
    """
    return Energy.from_kwh(pue * hours * power_w / 1000.0)  # Eq. (1)
