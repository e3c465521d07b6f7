"""The ledger book: compute-energy entries, recorded gains, summary, SQLite and CSV.

Entries are per stage (vision, calibration, bridge, ml_training, ml_inference) and method
(classical, ml). ML training energy is amortised over the inferences that use the model:
a training entry names its ``model_id`` and may declare ``expected_inferences`` over the
model's life; inference entries name the ``model_id`` and count ``n_inferences``. The book
charges ``training_J × used / max(expected, used)`` (all of it when no expectation is
declared), so a model trained once and used by many fields is shared among them.

A training entry that declares ``expected_inferences`` while the book holds no inference of
its model is charged in full (the explicit upper estimate, said in :attr:`Summary.notes`),
never 0 J.

The summary sets the compute CO2 (grid electricity, facility energy = IT × PUE) against
the CO2 the gained heat displaces (gas boiler), under each grid preset:

* payback time = compute kg CO2e / (displaced kg per plant operating hour) [h], with the
  compute figure's relative uncertainty beside it;
* energy return ratio = thermal energy gained in a clear-sky year / compute energy spent in
  that year (the run's compute × ``runs_per_year`` calibration runs a year) [-];
* scopes: ``all``, each method against no calibration, ``ml over classical`` (ML's extra
  compute against its extra heat: the increment), and each heliostat that has its own
  entries. (A "mean heliostat" row would equal ``all`` by construction: both sides divide
  by N.)

Storage: tables ``ledger_meta`` (schema version), ``ledger_entries``, ``ledger_gains`` in a
SQLite file in WAL mode that other parts of the history may share.
"""

from __future__ import annotations

import csv
import json
import math
import platform
import sqlite3
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from heliostat.ledger.carbon import GRID_PRESETS, CarbonIntensity, Energy
from heliostat.ledger.energy import Measurement, cpu_model_name
from heliostat.ledger.grid_series import GridSeries, intensity_at

#: Version of the ledger tables in the history file.
SCHEMA_VERSION = 1
STAGES = ("vision", "calibration", "bridge", "ml_training", "ml_inference")
METHODS = ("classical", "ml")

#: CodeCarbon ``emissions.csv`` columns we fill, in CodeCarbon's order (energies kWh,
#: emissions kg, powers W, durations s; energies and powers include the PUE, as there).
CODECARBON_COLUMNS = (
    "timestamp",
    "project_name",
    "run_id",
    "experiment_id",
    "duration",
    "emissions",
    "emissions_rate",
    "cpu_power",
    "gpu_power",
    "ram_power",
    "cpu_energy",
    "gpu_energy",
    "ram_energy",
    "energy_consumed",
    "os",
    "python_version",
    "cpu_model",
    "tracking_mode",
    "pue",
)
#: Our columns after CodeCarbon's.
LEDGER_COLUMNS = (
    "stage",
    "method",
    "heliostat_id",
    "energy_source",
    "rel_uncertainty",
    "model_id",
    "n_inferences",
    "expected_inferences",
    "grid",
    "grid_kg_co2e_per_kwh",
    "grid_basis",
    "note",
)


def _utc_now() -> str:
    return pd.Timestamp.now(tz="UTC").isoformat()


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """The compute energy of one piece of work.

    Attributes
    ----------
    stage : str
        One of :data:`STAGES`.
    method : str
        One of :data:`METHODS`.
    energy_j : float
        IT energy (without PUE). [J]
    source : str
        Where the figure comes from ("rapl", "cpu-model", "rapl+nvml", "strubell-eq1",
        "given", ...).
    pue : float
        Power usage effectiveness of where it ran. [-]
    cpu_j, gpu_j, ram_j : float
        Breakdown of ``energy_j`` when known. [J]
    duration_s : float
        Wall time. [s]
    rel_uncertainty : float
        Relative standard uncertainty of ``energy_j``. [-]
    heliostat_id : str
        The heliostat it served ("" = the whole field).
    model_id : str
        ML model trained or used ("" if none).
    n_inferences : int
        Inferences in this entry (ml_inference).
    expected_inferences : int
        Inferences the model is expected to serve in its life (ml_training; 0 = not
        declared, charge all of it here).
    timestamp_utc : str
        ISO 8601 UTC time of the work.
    project_name, run_id, note : str
    """

    stage: str
    method: str
    energy_j: float
    source: str
    pue: float = 1.0
    cpu_j: float = 0.0
    gpu_j: float = 0.0
    ram_j: float = 0.0
    duration_s: float = 0.0
    rel_uncertainty: float = float("nan")
    heliostat_id: str = ""
    model_id: str = ""
    n_inferences: int = 0
    expected_inferences: int = 0
    timestamp_utc: str = field(default_factory=_utc_now)
    project_name: str = "heliostat"
    run_id: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"ledger entry stage must be one of {STAGES}, got {self.stage!r}")
        if self.method not in METHODS:
            raise ValueError(f"ledger entry method must be one of {METHODS}, got {self.method!r}")
        if self.stage.startswith("ml_") and self.method != "ml":
            raise ValueError(f"stage {self.stage!r} needs method 'ml', got {self.method!r}")
        for k in ("energy_j", "cpu_j", "gpu_j", "ram_j", "duration_s"):
            v = getattr(self, k)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ValueError(f"ledger entry {k} must be finite and >= 0, got {v!r}")
        if not (math.isfinite(self.pue) and self.pue >= 1):
            raise ValueError(f"ledger entry pue must be >= 1, got {self.pue!r}")
        if not self.source:
            raise ValueError("ledger entry source must say where the energy figure comes from")
        if self.stage in ("ml_training", "ml_inference") and not self.model_id:
            raise ValueError(f"stage {self.stage!r} needs a model_id")
        for k in ("n_inferences", "expected_inferences"):
            v = getattr(self, k)
            if not (isinstance(v, int) and v >= 0):
                raise ValueError(f"ledger entry {k} must be an integer >= 0, got {v!r}")
        if self.stage == "ml_inference" and self.n_inferences < 1:
            raise ValueError("an ml_inference entry needs n_inferences >= 1")
        ts = pd.Timestamp(self.timestamp_utc)
        if ts.tzinfo is None:
            raise ValueError(f"timestamp_utc must carry a UTC offset, got {self.timestamp_utc!r}")

    @classmethod
    def from_measurement(
        cls, m: Measurement, stage: str, method: str, **kwargs: object
    ) -> LedgerEntry:
        """An entry from a meter's :class:`~heliostat.ledger.energy.Measurement`."""
        note = "; ".join(m.notes)
        if m.model_basis:
            note = f"{note}; {m.model_basis}" if note else m.model_basis
        return cls(
            stage=stage,
            method=method,
            energy_j=m.it_energy.joules,
            source=m.source,
            pue=m.pue,
            cpu_j=m.cpu_j,
            gpu_j=m.gpu_j,
            ram_j=m.ram_j,
            duration_s=m.duration_s,
            rel_uncertainty=m.rel_uncertainty,
            note=str(kwargs.pop("note", "")) or note,
            **kwargs,  # type: ignore[arg-type]
        )

    @property
    def facility_energy(self) -> Energy:
        """IT energy × PUE."""
        return Energy(self.energy_j * self.pue)


@dataclass(frozen=True, slots=True)
class GainRecord:
    """A modelled gain kept in the book (from :class:`~heliostat.ledger.gain.GainResult`).

    Attributes
    ----------
    point : str
        Operating point name.
    method : str
        Calibration method that produced the "after" error ("" = any).
    n_heliostats : int
    before_mrad, after_mrad : float
        Radial RMS pointing error. [mrad]
    delta_t_k : float
        Target temperature rise at noon. [K]
    thermal_gain_kwh_per_day, thermal_gain_kwh_per_year : float
        Extra useful heat, whole field. [kWh]
    operating_hours_per_year : float
        Plant operating hours in that year. [h]
    co2_avoided_kg_per_year : float
        Gas CO2 displaced in that year. [kg]
    details : dict
        The full gain result.
    timestamp_utc : str
    """

    point: str
    method: str
    n_heliostats: int
    before_mrad: float
    after_mrad: float
    delta_t_k: float
    thermal_gain_kwh_per_day: float
    thermal_gain_kwh_per_year: float
    operating_hours_per_year: float
    co2_avoided_kg_per_year: float
    details: dict = field(default_factory=dict)
    timestamp_utc: str = field(default_factory=_utc_now)

    @classmethod
    def from_result(cls, result, method: str = "") -> GainRecord:
        """From a :class:`~heliostat.ledger.gain.GainResult`."""
        if method not in ("", *METHODS):
            raise ValueError(f"gain method must be '' or one of {METHODS}, got {method!r}")
        return cls(
            point=result.point,
            method=method,
            n_heliostats=result.n_heliostats,
            before_mrad=result.before_mrad,
            after_mrad=result.after_mrad,
            delta_t_k=result.delta_t_k,
            thermal_gain_kwh_per_day=result.thermal_gain_kwh_per_day,
            thermal_gain_kwh_per_year=result.thermal_gain_kwh_per_year,
            operating_hours_per_year=result.operating_hours_per_year,
            co2_avoided_kg_per_year=result.co2_avoided_kg_per_year,
            details=result.as_dict(),
        )


# ------------------------------------------------------------------- amortisation
def attributed_energy_j(
    entries: Sequence[LedgerEntry], notes: list[str] | None = None
) -> dict[int, float]:
    """Facility energy charged to each entry (by index), with training amortised. [J]

    Training of model m is charged ``E_train × used_m / max(expected_m, used_m)`` where
    ``used_m`` counts the inferences of m in these entries (``expected_m = 0`` → all). With
    ``expected_m > 0`` but no inference of m logged, the training is charged in full and a
    line saying so is appended to ``notes`` (never a silent 0 J).
    """
    used: dict[str, int] = {}
    for e in entries:
        if e.stage == "ml_inference":
            used[e.model_id] = used.get(e.model_id, 0) + e.n_inferences
    out: dict[int, float] = {}
    for i, e in enumerate(entries):
        j = e.facility_energy.joules
        if e.stage == "ml_training" and e.expected_inferences > 0:
            u = used.get(e.model_id, 0)
            if u == 0:
                if notes is not None:
                    notes.append(
                        f"model {e.model_id!r}: {e.expected_inferences} inferences expected but "
                        "none logged; its training is charged in full (upper estimate)"
                    )
            else:
                j *= u / max(e.expected_inferences, u)
        out[i] = j
    return out


def increment_payback_hours(d_compute_kg: float, d_displaced_kg_per_h: float) -> tuple[float, str]:
    """Payback of one method's increment over another. [h], and the verdict in words.

    Parameters
    ----------
    d_compute_kg : float
        Extra compute CO2e of the method (negative: it uses less). [kg]
    d_displaced_kg_per_h : float
        Extra CO2 it displaces per plant operating hour (negative: it gains less). [kg h⁻¹]

    Returns
    -------
    hours : float
        0 when the method costs no more and gains no less; inf when it never pays back.
    verdict : str
    """
    if d_compute_kg <= 0 and d_displaced_kg_per_h >= 0:
        return 0.0, "at once: no more compute and no less heat"
    if d_compute_kg <= 0:
        return math.inf, (
            f"never: it saves {-d_compute_kg:.3g} kg CO2e of compute once but displaces "
            f"{-d_displaced_kg_per_h:.3g} kg less per operating hour"
        )
    if d_displaced_kg_per_h <= 0:
        return math.inf, "never: more compute and no more heat"
    return d_compute_kg / d_displaced_kg_per_h, "pays back"


# ------------------------------------------------------------------- summary
@dataclass(frozen=True, slots=True)
class PaybackRow:
    """Compute against gain for one scope (a method, all, one heliostat).

    Attributes
    ----------
    scope : str
        "all", "classical", "ml", "ml over classical", or a heliostat id.
    compute_kwh : float
        Facility compute energy charged to the scope (an increment may be < 0). [kWh]
    compute_kg_co2e : float
        Its CO2e under the grid. [kg]
    thermal_gain_kwh_per_year : float [kWh]
    displaced_kg_co2_per_year : float [kg]
    payback_hours : float
        Plant operating hours until the displaced CO2 equals the compute CO2. [h]
    energy_return_ratio : float
        A clear-sky year's thermal gain / the compute of that year (``compute_kwh`` ×
        ``runs_per_year``). [-]
    compute_rel_uncertainty : float
        Relative standard uncertainty of the compute figure (NaN: unknown). [-]
    runs_per_year : float
        Calibration runs a year the energy return ratio assumes. [1/year]
    verdict : str
        In words ("pays back", "never: ...", "at once: ...").
    against : str
        What the gain is measured against ("no calibration", "classical calibration").
    """

    scope: str
    compute_kwh: float
    compute_kg_co2e: float
    thermal_gain_kwh_per_year: float
    displaced_kg_co2_per_year: float
    payback_hours: float
    energy_return_ratio: float
    compute_rel_uncertainty: float = math.nan
    runs_per_year: float = 1.0
    verdict: str = ""
    against: str = "no calibration"


def _rel_unc(entries: Sequence[LedgerEntry], charged: dict[int, float], idx: Iterable[int]):
    """Relative uncertainty of a sum of charged energies; the meters' errors are taken as
    fully correlated (one CPU model, one RAPL calibration), so σ's add linearly."""
    idx = list(idx)
    tot = sum(charged[i] for i in idx)
    if tot <= 0 or any(math.isnan(entries[i].rel_uncertainty) for i in idx):
        return math.nan
    return sum(charged[i] * entries[i].rel_uncertainty for i in idx) / tot


def _payback(
    scope: str,
    compute_j: float,
    gain: GainRecord,
    share: float,
    grid: CarbonIntensity,
    rel_unc: float = math.nan,
    runs_per_year: float = 1.0,
    compute_kg: float | None = None,
) -> PaybackRow:
    kwh = compute_j / 3.6e6
    kg = kwh * grid.kg_per_kwh
    th = gain.thermal_gain_kwh_per_year * share
    disp = gain.co2_avoided_kg_per_year * share
    per_h = disp / gain.operating_hours_per_year if gain.operating_hours_per_year > 0 else 0.0
    payback = kg / per_h if per_h > 0 else math.inf
    verdict = "pays back" if per_h > 0 else "never: no heat gained"
    if compute_kg is not None:
        kg = compute_kg
        payback = kg / per_h if per_h > 0 else math.inf
    err = th / (kwh * runs_per_year) if kwh > 0 else math.inf
    return PaybackRow(scope, kwh, kg, th, disp, payback, err, rel_unc, runs_per_year, verdict)


@dataclass(frozen=True, slots=True)
class Summary:
    """The book under one grid.

    Attributes
    ----------
    grid : CarbonIntensity
    by_stage : list of dict
        Rows: stage, method, entries, compute_kwh (charged, facility), kg_co2e, sources.
    payback : list of PaybackRow
        Empty when the book holds no gain.
    gain : GainRecord or None
        The gain used.
    notes : list of str
        Estimates the summary had to make (e.g. training charged in full).
    """

    grid: CarbonIntensity
    by_stage: list[dict]
    payback: list[PaybackRow]
    gain: GainRecord | None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "grid": self.grid.name,
            "grid_kg_co2e_per_kwh": self.grid.kg_per_kwh,
            "grid_source": self.grid.source,
            "by_stage": self.by_stage,
            "payback": [asdict(r) for r in self.payback],
            "notes": list(self.notes),
            "gain": None
            if self.gain is None
            else {k: v for k, v in asdict(self.gain).items() if k != "details"},
        }


def summarise(
    entries: Sequence[LedgerEntry],
    gains: Sequence[GainRecord],
    grid: CarbonIntensity | GridSeries,
    runs_per_year: float = 1.0,
    system_j: float = 0.0,
) -> Summary:
    """Compute CO2 against displaced CO2 under one grid.

    With a :class:`~heliostat.ledger.grid_series.GridSeries` each entry is charged at the
    intensity of its hour (its ``timestamp_utc``), the annual fallback outside the series;
    :attr:`Summary.notes` counts each basis.

    The latest gain record of a method is used for that method's payback, the latest of
    any method for "all" and for the per-heliostat rows. Field-wide entries are shared
    equally by the field's heliostats; entries naming a heliostat are charged to it.
    ``ml over classical`` (needs a gain of each method and entries of each) charges ML's
    extra compute against ML's extra heat over classical calibration.

    Parameters
    ----------
    runs_per_year : float
        Calibration runs a year, for the energy return ratio (a year of heat against a
        year of compute). [1/year]
    system_j : float
        Standing energy of the calibration system over the campaign (idle PC, cameras;
        :class:`~heliostat.ledger.system.SystemPower`). > 0 adds a ``whole system`` row:
        the marginal compute plus this, charged at the annual/mean intensity. [J]
    """
    if not (math.isfinite(runs_per_year) and runs_per_year > 0):
        raise ValueError(f"runs_per_year must be > 0, got {runs_per_year!r}")
    notes: list[str] = []
    charged = attributed_energy_j(entries, notes)
    kgs: dict[int, float] = {}
    bases: dict[str, int] = {}
    for i, e in enumerate(entries):
        k, basis = intensity_at(grid, e.timestamp_utc)
        kgs[i] = charged[i] / 3.6e6 * k
        bases[basis] = bases.get(basis, 0) + 1
    if isinstance(grid, GridSeries):
        notes.append(
            "grid intensity: " + ", ".join(f"{n} entries at {b}" for b, n in sorted(bases.items()))
        )

    def kg_of(idx) -> float:
        return sum(kgs[i] for i in idx)

    rows: dict[tuple[str, str], dict] = {}
    for i, e in enumerate(entries):
        r = rows.setdefault(
            (e.stage, e.method),
            {
                "stage": e.stage,
                "method": e.method,
                "entries": 0,
                "compute_kwh": 0.0,
                "kg_co2e": 0.0,
                "sources": set(),
            },
        )
        r["entries"] += 1
        r["compute_kwh"] += charged[i] / 3.6e6
        r["kg_co2e"] += kgs[i]
        r["sources"].add(e.source)
    by_stage = [
        {**r, "sources": "|".join(sorted(r["sources"]))}
        for _, r in sorted(rows.items(), key=lambda kv: (STAGES.index(kv[0][0]), kv[0][1]))
    ]
    payback: list[PaybackRow] = []
    latest = gains[-1] if gains else None
    if latest is not None:
        n = latest.n_heliostats
        total = sum(charged.values())
        allidx = range(len(entries))
        payback.append(
            _payback("all", total, latest, 1.0, grid, _rel_unc(entries, charged, allidx),
                     runs_per_year, kg_of(allidx))
        )  # fmt: skip
        if system_j > 0:
            sys_kg = system_j / 3.6e6 * grid.kg_per_kwh
            payback.append(
                _payback("whole system", total + system_j, latest, 1.0, grid, math.nan,
                         runs_per_year, kg_of(allidx) + sys_kg)
            )  # fmt: skip
        by_m: dict[str, tuple[float, GainRecord | None, float]] = {}
        for m in METHODS:
            idx = [i for i, e in enumerate(entries) if e.method == m]
            if not idx:
                continue
            own = next((x for x in reversed(gains) if x.method == m), None)
            g = own or latest
            js = sum(charged[i] for i in idx)
            by_m[m] = (js, own, kg_of(idx))
            payback.append(
                _payback(m, js, g, 1.0, grid, _rel_unc(entries, charged, idx), runs_per_year,
                         kg_of(idx))
            )  # fmt: skip
        if "ml" in by_m and "classical" in by_m and by_m["ml"][1] and by_m["classical"][1]:
            (j_ml, g_ml, kg_ml), (j_cl, g_cl, kg_cl) = by_m["ml"], by_m["classical"]
            d_kwh = (j_ml - j_cl) / 3.6e6
            d_kg = kg_ml - kg_cl
            d_th = g_ml.thermal_gain_kwh_per_year - g_cl.thermal_gain_kwh_per_year
            d_disp = g_ml.co2_avoided_kg_per_year - g_cl.co2_avoided_kg_per_year
            hours = max(g_ml.operating_hours_per_year, 1e-9)
            pb, verdict = increment_payback_hours(d_kg, d_disp / hours)
            err = d_th / (d_kwh * runs_per_year) if d_kwh > 0 else math.inf
            payback.append(
                PaybackRow("ml over classical", d_kwh, d_kg, d_th, d_disp, pb, err, math.nan,
                           runs_per_year, verdict, "classical calibration")
            )  # fmt: skip
        elif "ml" in by_m:
            notes.append(
                "ml over classical: needs a gain recorded for each method "
                "(`ledger gain --db F --method classical|ml`) and entries of each"
            )
        shared = [i for i, e in enumerate(entries) if not e.heliostat_id]
        shared_j = sum(charged[i] for i in shared)
        for hid in sorted({e.heliostat_id for e in entries if e.heliostat_id}):
            idx = [i for i, e in enumerate(entries) if e.heliostat_id == hid]
            own = sum(charged[i] for i in idx)
            payback.append(
                _payback(hid, own + shared_j / n, latest, 1.0 / n, grid,
                         _rel_unc(entries, charged, idx + shared), runs_per_year,
                         kg_of(idx) + kg_of(shared) / n)
            )  # fmt: skip
    return Summary(grid, by_stage, payback, latest, notes)


# ------------------------------------------------------------------- the book
_ENTRY_COLS = (
    "timestamp_utc",
    "project_name",
    "run_id",
    "stage",
    "method",
    "heliostat_id",
    "energy_j",
    "pue",
    "cpu_j",
    "gpu_j",
    "ram_j",
    "duration_s",
    "source",
    "rel_uncertainty",
    "model_id",
    "n_inferences",
    "expected_inferences",
    "note",
)


class LedgerBook:
    """Ledger tables in a (shared) SQLite history file.

    Parameters
    ----------
    path : path
        SQLite file (created if missing; ":memory:" for a scratch book).

    Raises
    ------
    ValueError
        The file holds ledger tables of a newer schema version.
    """

    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        self.con = sqlite3.connect(self.path)
        if self.path != ":memory:":
            self.con.execute("PRAGMA journal_mode=WAL")
        self._create()

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> LedgerBook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _create(self) -> None:
        with self.con:
            self.con.execute(
                "CREATE TABLE IF NOT EXISTS ledger_meta (key TEXT PRIMARY KEY, value TEXT)"
            )
            row = self.con.execute(
                "SELECT value FROM ledger_meta WHERE key='schema_version'"
            ).fetchone()
            if row is not None and int(row[0]) > SCHEMA_VERSION:
                raise ValueError(
                    f"{self.path}: ledger schema version {row[0]} is newer than this "
                    f"program's {SCHEMA_VERSION}"
                )
            self.con.execute(
                "CREATE TABLE IF NOT EXISTS ledger_entries (id INTEGER PRIMARY KEY, "
                "timestamp_utc TEXT NOT NULL, project_name TEXT, run_id TEXT, "
                "stage TEXT NOT NULL, method TEXT NOT NULL, heliostat_id TEXT, "
                "energy_j REAL NOT NULL, pue REAL NOT NULL, cpu_j REAL, gpu_j REAL, ram_j REAL, "
                "duration_s REAL, source TEXT NOT NULL, rel_uncertainty REAL, model_id TEXT, "
                "n_inferences INTEGER, expected_inferences INTEGER, note TEXT)"
            )
            self.con.execute(
                "CREATE TABLE IF NOT EXISTS ledger_gains (id INTEGER PRIMARY KEY, "
                "timestamp_utc TEXT NOT NULL, point TEXT, method TEXT, n_heliostats INTEGER, "
                "before_mrad REAL, after_mrad REAL, delta_t_k REAL, "
                "thermal_gain_kwh_per_day REAL, thermal_gain_kwh_per_year REAL, "
                "operating_hours_per_year REAL, co2_avoided_kg_per_year REAL, details TEXT)"
            )
            self.con.execute(
                "INSERT OR IGNORE INTO ledger_meta VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )

    def add(self, entry: LedgerEntry) -> None:
        """Store an entry."""
        vals = [getattr(entry, c) for c in _ENTRY_COLS]
        vals = [None if isinstance(v, float) and math.isnan(v) else v for v in vals]
        with self.con:
            self.con.execute(
                f"INSERT INTO ledger_entries ({', '.join(_ENTRY_COLS)}) "
                f"VALUES ({', '.join('?' * len(_ENTRY_COLS))})",
                vals,
            )

    def add_gain(self, gain: GainRecord) -> None:
        """Store a gain record."""
        with self.con:
            self.con.execute(
                "INSERT INTO ledger_gains (timestamp_utc, point, method, n_heliostats, "
                "before_mrad, after_mrad, delta_t_k, thermal_gain_kwh_per_day, "
                "thermal_gain_kwh_per_year, operating_hours_per_year, co2_avoided_kg_per_year, "
                "details) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    gain.timestamp_utc,
                    gain.point,
                    gain.method,
                    gain.n_heliostats,
                    gain.before_mrad,
                    gain.after_mrad,
                    gain.delta_t_k,
                    gain.thermal_gain_kwh_per_day,
                    gain.thermal_gain_kwh_per_year,
                    gain.operating_hours_per_year,
                    gain.co2_avoided_kg_per_year,
                    json.dumps(gain.details, default=float),
                ),
            )

    def recorder(self, stage: str, method: str, **kwargs: object):
        """A callback for :func:`~heliostat.ledger.energy.measure_energy`: stores each call."""

        def rec(m: Measurement) -> None:
            self.add(LedgerEntry.from_measurement(m, stage, method, **kwargs))

        return rec

    def entries(self) -> list[LedgerEntry]:
        """All entries, oldest first."""
        cur = self.con.execute(f"SELECT {', '.join(_ENTRY_COLS)} FROM ledger_entries ORDER BY id")
        out = []
        for row in cur:
            d = dict(zip(_ENTRY_COLS, row, strict=True))
            for k in ("project_name", "run_id", "heliostat_id", "model_id", "note"):
                d[k] = d[k] or ""
            d["rel_uncertainty"] = (
                float("nan") if d["rel_uncertainty"] is None else d["rel_uncertainty"]
            )
            for k in ("cpu_j", "gpu_j", "ram_j", "duration_s"):
                d[k] = d[k] or 0.0
            for k in ("n_inferences", "expected_inferences"):
                d[k] = int(d[k] or 0)
            out.append(LedgerEntry(**d))
        return out

    def gains(self) -> list[GainRecord]:
        """All gain records, oldest first."""
        cur = self.con.execute(
            "SELECT point, method, n_heliostats, before_mrad, after_mrad, delta_t_k, "
            "thermal_gain_kwh_per_day, thermal_gain_kwh_per_year, operating_hours_per_year, "
            "co2_avoided_kg_per_year, details, timestamp_utc FROM ledger_gains ORDER BY id"
        )
        return [
            GainRecord(*row[:10], details=json.loads(row[10] or "{}"), timestamp_utc=row[11])
            for row in cur
        ]

    def summary(
        self, grid: CarbonIntensity | GridSeries, runs_per_year: float = 1.0, system_j: float = 0.0
    ) -> Summary:
        """:func:`summarise` over the stored entries and gains."""
        return summarise(self.entries(), self.gains(), grid, runs_per_year, system_j)

    def summaries(self, runs_per_year: float = 1.0, system_j: float = 0.0) -> list[Summary]:
        """One summary per grid preset."""
        es, gs = self.entries(), self.gains()
        return [summarise(es, gs, g, runs_per_year, system_j) for g in GRID_PRESETS.values()]

    def export_csv(self, path: str | Path, grid: CarbonIntensity) -> int:
        """Write entries as CSV, CodeCarbon's ``emissions.csv`` columns first.

        Returns the number of rows written.
        """
        return write_csv(path, self.entries(), grid)


def csv_rows(entries: Iterable[LedgerEntry], grid: CarbonIntensity) -> list[dict]:
    """Entries as CodeCarbon-compatible rows (kWh, kg, W, s; PUE applied like CodeCarbon)."""
    rows = []
    cpu_name = cpu_model_name()
    for e in entries:
        kwh = e.facility_energy.kwh
        k, basis = intensity_at(grid, e.timestamp_utc)
        kg = kwh * k
        d = e.duration_s

        def p(j: float, d: float = d, pue: float = e.pue) -> float:
            return j * pue / d if d > 0 else 0.0

        rows.append(
            {
                "timestamp": e.timestamp_utc,
                "project_name": e.project_name,
                "run_id": e.run_id,
                "experiment_id": "",
                "duration": d,
                "emissions": kg,
                "emissions_rate": kg / d if d > 0 else 0.0,
                "cpu_power": p(e.cpu_j),
                "gpu_power": p(e.gpu_j),
                "ram_power": p(e.ram_j),
                "cpu_energy": e.cpu_j * e.pue / 3.6e6,
                "gpu_energy": e.gpu_j * e.pue / 3.6e6,
                "ram_energy": e.ram_j * e.pue / 3.6e6,
                "energy_consumed": kwh,
                "os": platform.platform(),
                "python_version": platform.python_version(),
                "cpu_model": cpu_name,
                "tracking_mode": "process",
                "pue": e.pue,
                "stage": e.stage,
                "method": e.method,
                "heliostat_id": e.heliostat_id,
                "energy_source": e.source,
                "rel_uncertainty": e.rel_uncertainty,
                "model_id": e.model_id,
                "n_inferences": e.n_inferences,
                "expected_inferences": e.expected_inferences,
                "grid": grid.name,
                "grid_kg_co2e_per_kwh": k,
                "grid_basis": basis,
                "note": e.note,
            }
        )
    return rows


def write_csv(path: str | Path, entries: Iterable[LedgerEntry], grid: CarbonIntensity) -> int:
    """Write :func:`csv_rows` to a file; returns the row count."""
    rows = csv_rows(entries, grid)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*CODECARBON_COLUMNS, *LEDGER_COLUMNS])
        w.writeheader()
        w.writerows(rows)
    return len(rows)


def new_run_id() -> str:
    """A fresh run id (UUID4, like CodeCarbon's)."""
    return str(uuid.uuid4())
