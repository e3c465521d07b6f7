"""Energy ledger: what the computing costs against what the better pointing gains.

* :mod:`~heliostat.ledger.energy` — the energy meter (RAPL, NVML, CPU model);
* :mod:`~heliostat.ledger.carbon` — units, grid presets, gas displacement;
* :mod:`~heliostat.ledger.gain` — intercept, target temperature, thermal gain;
* :mod:`~heliostat.ledger.book` — entries, amortisation, summary, SQLite, CSV;
* :mod:`~heliostat.ledger.amortise` — does a training run repay itself (heliostat-years);
* :mod:`~heliostat.ledger.grid_series` — hourly grid intensity from a CSV;
* :mod:`~heliostat.ledger.system` — whole-system energy (idle PC, cameras);
* :mod:`~heliostat.ledger.units` — human units for the output.

See ``docs/ledger.md``.
"""

from heliostat.ledger.carbon import (
    GRID_PRESETS,
    CarbonIntensity,
    Emissions,
    Energy,
    Power,
    grid_intensity,
)
from heliostat.ledger.energy import CpuPowerModel, EnergyMeter, Measurement, measure_energy

__all__ = [
    "GRID_PRESETS",
    "CarbonIntensity",
    "CpuPowerModel",
    "Emissions",
    "Energy",
    "EnergyMeter",
    "Measurement",
    "Power",
    "grid_intensity",
    "measure_energy",
]
