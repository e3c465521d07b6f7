"""Time-varying grid carbon intensity: an hourly series read from a CSV.

The layout public grid-data exports use (Electricity Maps, National Grid ESO's carbon
intensity API as CSV, WattTime): one row per hour, a timestamp column and a column in
gCO2e/kWh. Energy is charged at the intensity of the hour it was used; outside the series
the annual preset (``fallback``) is used, and each charge says which
(:meth:`GridSeries.intensity_at`).

Columns recognised (case-insensitive): the timestamp is the first column whose name
contains "time" or "date"; the intensity the first whose name contains "gco2" (prefer one
that also says "lca" when several do, life-cycle being what the presets are), or the
column named by ``column``. Timestamps must carry a UTC offset, or the column's name must
say "UTC" (as "Datetime (UTC)" does); naive local times are refused.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from heliostat.errors import InputError
from heliostat.ledger.carbon import CarbonIntensity


@dataclass(frozen=True, slots=True)
class GridSeries:
    """An hourly (or other fixed-step) carbon-intensity series with an annual fallback.

    Attributes
    ----------
    start_ns : ndarray of int64, shape (N,)
        Start of each interval, UTC nanoseconds since the epoch, increasing.
    series_kg_per_kwh : ndarray of float, shape (N,)
        Intensity over each interval. [kg CO2e kWh⁻¹]
    step_ns : int
        Interval length (the series' median spacing). [ns]
    fallback : CarbonIntensity
        Used outside the series.
    name, source : str
    """

    start_ns: np.ndarray
    series_kg_per_kwh: np.ndarray
    step_ns: int
    fallback: CarbonIntensity
    name: str = "csv"
    source: str = ""

    def intensity_at(self, timestamp_utc: str | pd.Timestamp) -> tuple[float, str]:
        """Intensity at a time [kg CO2e kWh⁻¹] and the basis ("hourly: <name>" or
        "annual fallback: <preset>")."""
        t = pd.Timestamp(timestamp_utc)
        if t.tzinfo is None:
            raise ValueError(f"timestamp must carry a UTC offset, got {timestamp_utc!r}")
        ns = t.tz_convert("UTC").value
        i = int(np.searchsorted(self.start_ns, ns, side="right")) - 1
        if i >= 0 and ns < self.start_ns[i] + self.step_ns:
            return float(self.series_kg_per_kwh[i]), f"hourly: {self.name}"
        return self.fallback.kg_per_kwh, f"annual fallback: {self.fallback.name}"

    @property
    def mean_kg_per_kwh(self) -> float:
        """Mean intensity over the series (for energy with no time). [kg CO2e kWh⁻¹]"""
        return float(np.mean(self.series_kg_per_kwh))

    @property
    def kg_per_kwh(self) -> float:
        """The series' mean (shown in headers; charges use :meth:`intensity_at`)."""
        return self.mean_kg_per_kwh

    def emissions(self, energy):
        """CO2e of an energy with no time attached: at the series' mean intensity."""
        from heliostat.ledger.carbon import Emissions

        return Emissions(energy.kwh * self.mean_kg_per_kwh)


def intensity_at(grid, timestamp_utc: str) -> tuple[float, str]:
    """Intensity of a preset or a series at a time [kg CO2e kWh⁻¹], and its basis."""
    if isinstance(grid, GridSeries):
        return grid.intensity_at(timestamp_utc)
    return grid.kg_per_kwh, f"annual: {grid.name}"


def _pick(names: list[str], column: str | None, path: Path) -> tuple[int, int]:
    low = [n.strip().lower() for n in names]
    t = next((i for i, n in enumerate(low) if "time" in n or "date" in n), None)
    if t is None:
        raise InputError(f"{path}: no timestamp column (a header containing 'time' or 'date')")
    if column is not None:
        if column not in names:
            raise InputError(f"{path}: no column {column!r} (have {', '.join(names)})")
        return t, names.index(column)
    cands = [i for i, n in enumerate(low) if "gco2" in n.replace("₂", "2")]
    if not cands:
        raise InputError(f"{path}: no intensity column (a header containing 'gCO2', in g/kWh)")
    lca = [i for i in cands if "lca" in low[i]]
    return t, (lca or cands)[0]


def read_grid_csv(
    path: str | Path, fallback: CarbonIntensity, column: str | None = None
) -> GridSeries:
    """Read an hourly carbon-intensity CSV (timestamp, gCO2e/kWh).

    Raises
    ------
    InputError
        Missing columns, an unreadable timestamp or value (naming the line), naive
        timestamps in a column that does not say UTC, fewer than one row, or times out of
        order.
    """
    p = Path(path)
    try:
        with open(p, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise InputError(f"{p}: no such grid CSV") from None
    if len(rows) < 2:
        raise InputError(f"{p}: needs a header and at least one row")
    names = rows[0]
    ti, vi = _pick(names, column, p)
    says_utc = "utc" in names[ti].lower()
    ts, vals = [], []
    for ln, r in enumerate(rows[1:], start=2):
        if not r or all(not c.strip() for c in r):
            continue
        try:
            t = pd.Timestamp(r[ti])
        except (ValueError, IndexError):
            raise InputError(f"{p}:{ln}: cannot read timestamp {r[ti : ti + 1]!r}") from None
        if t.tzinfo is None:
            if not says_utc:
                raise InputError(
                    f"{p}:{ln}: timestamp {r[ti]!r} has no UTC offset and column "
                    f"{names[ti]!r} does not say UTC"
                )
            t = t.tz_localize("UTC")
        try:
            v = float(r[vi])
        except (ValueError, IndexError):
            raise InputError(
                f"{p}:{ln}: {names[vi]!r} is not a number: {r[vi : vi + 1]!r}"
            ) from None
        if not (math.isfinite(v) and v >= 0):
            raise InputError(f"{p}:{ln}: {names[vi]!r} must be >= 0 gCO2e/kWh, got {v!r}")
        ts.append(t.tz_convert("UTC").value)
        vals.append(v / 1e3)
    if not ts:
        raise InputError(f"{p}: no data rows")
    start = np.asarray(ts, np.int64)
    if np.any(np.diff(start) <= 0):
        k = int(np.argmax(np.diff(start) <= 0)) + 3
        raise InputError(f"{p}:{k}: timestamps must increase")
    step = int(np.median(np.diff(start))) if len(start) > 1 else 3_600_000_000_000
    return GridSeries(
        start, np.asarray(vals, float), step, fallback, f"csv:{p.name}",
        f"{p} column {names[vi]!r}, fallback {fallback.name}",
    )  # fmt: skip
