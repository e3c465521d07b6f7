"""The campaign's tables in the plant history database (SQLite, WAL, via
:mod:`heliostat.store`; the ledger's ``ledger_*`` tables live in the same file).

``campaign_observations``
    one row per (heliostat, slot): the measured spot, motor steps read back from the
    controller, sun position, frames. The UNIQUE key makes a resumed campaign unable to
    record a slot twice.
``campaign_visits``
    visits that did not give an observation (unreachable, move failed, no spot, ...),
    same key, so a resumed run does not retry them in the same slot.
``campaign_fits``
    every fit: parameters, standard errors, RMS before/after, leave-one-out, and the
    predicted pointing change against the heliostat's previous successful fit (drift:
    the beam change of :func:`heliostat.kinematics.pointing.pointing_change`).
``campaign_corrections``
    parameter sets proposed from fits, and what became of them (refused by safety,
    declined, approved, sent).
``campaign_deliveries``
    the bridge's outcome for each correction sent.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from heliostat.calibration.observations import (
    OBSERVATION_COLUMNS,
    SUN_TOLERANCE_DEG,
    Observations,
    Rejection,
    observations_from_frame,
)
from heliostat.errors import InputError
from heliostat.store import ensure_schema, open_db, wrap_file_errors

#: Visit outcomes a later run retries (the cause may be gone: a camera program that was
#: restarted). Every other outcome of a slot is final.
RETRY_OUTCOMES = ("no_frame",)

COMPONENT = "campaign"
#: v2: ``axis1_approach``, ``axis2_approach`` (direction of each axis's last move, ±1 or
#: NULL) added to ``campaign_observations``; a v1 file gains them (NULL) when opened for
#: writing, and reads as NULL when opened read-only.
SCHEMA_VERSION = 2
#: Columns added after v1, with their SQL type.
_ADDED_COLUMNS = {"axis1_approach": "INTEGER", "axis2_approach": "INTEGER"}

_DDL = """
CREATE TABLE IF NOT EXISTS campaign_observations (
    id INTEGER PRIMARY KEY,
    heliostat_id TEXT NOT NULL,
    slot_utc TEXT NOT NULL,
    time_utc TEXT NOT NULL,
    sun_azimuth_deg REAL NOT NULL,
    sun_elevation_deg REAL NOT NULL,
    axis1_steps INTEGER NOT NULL,
    axis2_steps INTEGER NOT NULL,
    target_id TEXT NOT NULL,
    spot_x_m REAL, spot_y_m REAL,
    spot_e_m REAL, spot_n_m REAL, spot_u_m REAL,
    sigma_m REAL,
    quality_flags TEXT NOT NULL DEFAULT '',
    frame TEXT NOT NULL DEFAULT '',
    dark_frame TEXT NOT NULL DEFAULT '',
    run_id TEXT NOT NULL DEFAULT '',
    axis1_approach INTEGER, axis2_approach INTEGER,
    UNIQUE (heliostat_id, slot_utc)
);
CREATE TABLE IF NOT EXISTS campaign_visits (
    id INTEGER PRIMARY KEY,
    heliostat_id TEXT NOT NULL,
    slot_utc TEXT NOT NULL,
    time_utc TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    run_id TEXT NOT NULL DEFAULT '',
    UNIQUE (heliostat_id, slot_utc)
);
CREATE TABLE IF NOT EXISTS campaign_fits (
    id INTEGER PRIMARY KEY,
    heliostat_id TEXT NOT NULL,
    time_utc TEXT NOT NULL,
    drive TEXT NOT NULL,
    success INTEGER NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    n_points INTEGER NOT NULL,
    n_outliers INTEGER NOT NULL DEFAULT 0,
    last_observation_id INTEGER NOT NULL,
    names TEXT NOT NULL,
    parameters TEXT NOT NULL,
    parameter_std TEXT NOT NULL,
    rms_before_mrad REAL, rms_after_mrad REAL, loo_rms_mrad REAL,
    condition REAL,
    warnings TEXT NOT NULL DEFAULT '[]',
    previous_fit_id INTEGER REFERENCES campaign_fits(id),
    pointing_change_rms_mrad REAL,
    pointing_change_max_mrad REAL,
    field TEXT NOT NULL DEFAULT '',
    run_id TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS campaign_fits_heliostat ON campaign_fits(heliostat_id, id);
CREATE TABLE IF NOT EXISTS campaign_corrections (
    id INTEGER PRIMARY KEY,
    fit_id INTEGER NOT NULL REFERENCES campaign_fits(id),
    heliostat_id TEXT NOT NULL,
    created_utc TEXT NOT NULL,
    updated_utc TEXT NOT NULL,
    state TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    UNIQUE (fit_id)
);
CREATE TABLE IF NOT EXISTS campaign_deliveries (
    id INTEGER PRIMARY KEY,
    correction_id INTEGER NOT NULL REFERENCES campaign_corrections(id),
    heliostat_id TEXT NOT NULL,
    time_utc TEXT NOT NULL,
    port TEXT NOT NULL,
    address INTEGER NOT NULL,
    command_id INTEGER,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS campaign_corrections_heliostat
    ON campaign_corrections(heliostat_id, id);
CREATE INDEX IF NOT EXISTS campaign_deliveries_heliostat
    ON campaign_deliveries(heliostat_id, id);
"""

#: States of a proposed correction (``reverted``: sent, then taken back by
#: ``heliostat bridge revert``).
CORRECTION_STATES = (
    "proposed",
    "refused",
    "declined",
    "approved",
    "sent",
    "failed",
    "reverted",
)

OBS_COLUMNS = (
    *OBSERVATION_COLUMNS[:1],
    "slot_utc",
    *OBSERVATION_COLUMNS[1:],
    "dark_frame",
    "run_id",
)

#: The columns :func:`observations_from_frame` reads (not the frame paths, run, flags).
_VALIDATED_COLUMNS = tuple(
    c
    for c in OBS_COLUMNS
    if c not in ("slot_utc", "quality_flags", "frame", "dark_frame", "run_id")
)


def _num(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(float(v)) else float(v)


@dataclass(frozen=True, slots=True)
class ObservationRecord:
    """One campaign observation (a row of ``campaign_observations``).

    Attributes
    ----------
    heliostat_id, slot_utc, time_utc : str
        Slot key and time of the sun-on frame (ISO 8601 UTC).
    sun_azimuth_deg, sun_elevation_deg : float
        Sun at ``time_utc`` (SPA at the site). [deg]
    axis1_steps, axis2_steps : int
        Positions the controller reported after settling. [steps]
    target_id : str
    spot_x_m, spot_y_m : float
        Measured spot, target plane. [m]
    spot_e_m, spot_n_m, spot_u_m : float
        The same in ENU. [m]
    sigma_m : float
        1-sigma spot uncertainty. [m]
    quality_flags, frame, dark_frame, run_id : str
    axis1_approach, axis2_approach : int or None
        Direction of each axis's last move before the frame (+1 steps grew, −1 fell;
        None: not known).
    """

    heliostat_id: str
    slot_utc: str
    time_utc: str
    sun_azimuth_deg: float
    sun_elevation_deg: float
    axis1_steps: int
    axis2_steps: int
    target_id: str
    spot_x_m: float
    spot_y_m: float
    spot_e_m: float
    spot_n_m: float
    spot_u_m: float
    sigma_m: float
    quality_flags: str = ""
    frame: str = ""
    dark_frame: str = ""
    run_id: str = ""
    axis1_approach: int | None = None
    axis2_approach: int | None = None

    def __post_init__(self) -> None:
        for name in ("axis1_approach", "axis2_approach"):
            v = getattr(self, name)
            if v is not None and v not in (-1, 1):
                raise ValueError(f"{name} must be +1, -1 or None, got {v!r}")


class History:
    """The campaign tables of a history database.

    Parameters
    ----------
    path : str or Path
        SQLite file (created with WAL journaling); ``":memory:"`` for a scratch one.
    readonly : bool
        Open an existing file read-only (``heliostat history``); the tables are then not
        created, and a file without them reads as empty.
    """

    def __init__(self, path: str | Path, readonly: bool = False) -> None:
        self.path = str(path)
        self.con = open_db(path, readonly=readonly)
        self.readonly = readonly
        if not readonly:
            ensure_schema(self.con, COMPONENT, SCHEMA_VERSION, _DDL)
        have = {r[1] for r in self.con.execute("PRAGMA table_info(campaign_observations)")}
        #: Columns a v1 file lacks (read as NULL).
        self._missing = {c for c in _ADDED_COLUMNS if have and c not in have}
        if not readonly and self._missing:
            self._add_columns()

    def _add_columns(self) -> None:
        """Bring a v1 ``campaign_observations`` table up to v2 (the missing columns
        added, NULL)."""
        with self.con:
            for col in sorted(self._missing):
                self.con.execute(
                    f"ALTER TABLE campaign_observations ADD COLUMN {col} {_ADDED_COLUMNS[col]}"
                )
        self._missing = set()

    def _select(self, cols: Iterable[str]) -> str:
        """SELECT list of ``cols``; a column an old file lacks reads as NULL."""
        return ", ".join(f"NULL AS {c}" if c in self._missing else c for c in cols)

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _has_tables(self) -> bool:
        row = self.con.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'campaign_observations'"
        ).fetchone()
        return row is not None

    def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        if self.readonly and not self._has_tables():
            return []
        return self.con.execute(sql, tuple(args)).fetchall()

    # ------------------------------------------------------------------ observations
    def done_keys(self, run_id: str | None = None) -> set[tuple[str, str]]:
        """(heliostat, slot) pairs already observed or recorded as skipped.

        With ``run_id``, a slot skipped for a reason another run may not share
        (:data:`RETRY_OUTCOMES`, e.g. ``no_frame``: the camera program was restarted)
        by *another* run is not done: a resumed campaign visits it again.
        """
        rows = self._rows(
            "SELECT heliostat_id, slot_utc, '', '' FROM campaign_observations "
            "UNION SELECT heliostat_id, slot_utc, outcome, run_id FROM campaign_visits"
        )
        return {
            (r[0], r[1])
            for r in rows
            if run_id is None or r[2] not in RETRY_OUTCOMES or r[3] == run_id
        }

    def add_observation(self, rec: ObservationRecord) -> int | None:
        """Store an observation; None (and nothing stored) if its slot is already taken."""
        return self.add_observations([rec])[0]

    def add_observations(self, records: Iterable[ObservationRecord]) -> list[int | None]:
        """Store observations in one transaction (:meth:`add_observation` each: the id,
        or None when the slot is already taken)."""
        ids: list[int | None] = []
        with self.con:
            for rec in records:
                vals = [getattr(rec, c) for c in OBS_COLUMNS]
                vals = [_num(v) if isinstance(v, float) else v for v in vals]
                cur = self.con.execute(
                    f"INSERT OR IGNORE INTO campaign_observations ({', '.join(OBS_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(OBS_COLUMNS))})",
                    vals,
                )
                if cur.rowcount:  # a retried slot: its earlier no_frame record is void now
                    self.con.execute(
                        "DELETE FROM campaign_visits WHERE heliostat_id = ? AND slot_utc = ?"
                        f" AND outcome IN ({', '.join('?' * len(RETRY_OUTCOMES))})",
                        (rec.heliostat_id, rec.slot_utc, *RETRY_OUTCOMES),
                    )
                ids.append(cur.lastrowid if cur.rowcount else None)
        return ids

    def add_visit(
        self, heliostat_id: str, slot_utc: str, time_utc: str, outcome: str, detail: str, run_id=""
    ) -> None:
        """Record a visit that gave no observation (kept: first record of a slot wins,
        except that a retried slot's :data:`RETRY_OUTCOMES` record is replaced)."""
        retry = ", ".join(f"'{o}'" for o in RETRY_OUTCOMES)
        with self.con:
            self.con.execute(
                "INSERT INTO campaign_visits (heliostat_id, slot_utc, time_utc, outcome,"
                " detail, run_id) VALUES (?,?,?,?,?,?)"
                " ON CONFLICT (heliostat_id, slot_utc) DO UPDATE SET"
                " time_utc = excluded.time_utc, outcome = excluded.outcome,"
                " detail = excluded.detail, run_id = excluded.run_id"
                f" WHERE campaign_visits.outcome IN ({retry})",
                (heliostat_id, slot_utc, time_utc, outcome, detail, run_id),
            )

    def observations(self, heliostat_id: str | None = None) -> pd.DataFrame:
        """Observations (columns of ``observations.csv`` plus ``id``, ``slot_utc``,
        ``dark_frame``, ``run_id``), in id order."""
        sql = "SELECT id, " + self._select(OBS_COLUMNS) + " FROM campaign_observations"
        args: tuple = ()
        if heliostat_id is not None:
            sql += " WHERE heliostat_id = ?"
            args = (heliostat_id,)
        rows = self._rows(sql + " ORDER BY id", args)
        df = pd.DataFrame([tuple(r) for r in rows], columns=["id", *OBS_COLUMNS])
        for c in ("spot_x_m", "spot_y_m", "spot_e_m", "spot_n_m", "spot_u_m", "sigma_m"):
            df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
        return df

    def observed_heliostat_ids(self) -> list[str]:
        """Heliostats with at least one observation, in id (text) order (read from the
        UNIQUE index, not the rows)."""
        rows = self._rows("SELECT DISTINCT heliostat_id FROM campaign_observations ORDER BY 1")
        return [r[0] for r in rows]

    def observations_between(
        self, first_id: str, last_id: str, columns: Iterable[str] | None = None
    ) -> pd.DataFrame:
        """Observations of the heliostats ``first_id`` ≤ id ≤ ``last_id`` (text order),
        with :meth:`observations`' columns (or ``id`` and ``columns`` of them), by
        heliostat then row id: one SQL query over the (heliostat_id, slot_utc) index."""
        cols = ["id", *(OBS_COLUMNS if columns is None else columns)]
        unknown = [c for c in cols if c != "id" and c not in OBS_COLUMNS]
        if unknown:
            raise ValueError(f"no observation column(s) {', '.join(unknown)}")
        if self.readonly and not self._has_tables():
            return pd.DataFrame(columns=cols)
        cur = self.con.cursor()
        cur.row_factory = None  # plain tuples: a third of the time of sqlite3.Row
        cur.execute(
            f"SELECT {self._select(cols)} FROM campaign_observations"
            " WHERE heliostat_id BETWEEN ? AND ? ORDER BY heliostat_id, id",
            (first_id, last_id),
        )
        df = pd.DataFrame(cur.fetchall(), columns=cols)
        for c in ("spot_x_m", "spot_y_m", "spot_e_m", "spot_n_m", "spot_u_m", "sigma_m"):
            if c in df.columns:
                df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
        return df

    def iter_observations(
        self,
        field,
        chunk_heliostats: int = 10_000,
        sun_tolerance_deg: float = SUN_TOLERANCE_DEG,
    ) -> Iterator[tuple[dict[str, Observations], list[Rejection]]]:
        """Validated observations in chunks of whole heliostats, for fields too large to
        hold at once (:func:`heliostat.calibration.field.calibrate_stream`).

        Each chunk is one query (:meth:`observations_between`) over up to
        ``chunk_heliostats`` heliostats in id order, validated by
        :func:`~heliostat.calibration.observations.observations_from_frame` against
        ``field`` (a :class:`~heliostat.config.FieldConfig`); a heliostat is never split
        between chunks, and its rows keep their id order. Rejections number rows by
        their id in ``campaign_observations``.

        Yields
        ------
        observations : dict of str to Observations
        rejected : list of Rejection
        """
        if chunk_heliostats < 1:
            raise ValueError(f"chunk_heliostats must be at least 1, got {chunk_heliostats}")
        ids = self.observed_heliostat_ids()
        for i in range(0, len(ids), chunk_heliostats):
            part = ids[i : i + chunk_heliostats]
            df = self.observations_between(part[0], part[-1], _VALIDATED_COLUMNS)
            if df.empty:  # deleted since the ids were read
                continue
            yield observations_from_frame(
                df, field, sun_tolerance_deg, row_numbers=df["id"].to_numpy(dtype="int64")
            )

    def visits(self, heliostat_id: str | None = None) -> pd.DataFrame:
        sql = "SELECT heliostat_id, slot_utc, time_utc, outcome, detail FROM campaign_visits"
        args: tuple = ()
        if heliostat_id is not None:
            sql += " WHERE heliostat_id = ?"
            args = (heliostat_id,)
        rows = self._rows(sql + " ORDER BY id", args)
        return pd.DataFrame(
            [tuple(r) for r in rows],
            columns=["heliostat_id", "slot_utc", "time_utc", "outcome", "detail"],
        )

    # ------------------------------------------------------------------ fits
    def add_fit(
        self,
        result,
        time_utc: str,
        last_observation_id: int,
        previous_fit_id: int | None = None,
        pointing_change_mrad: tuple[float, float] | None = None,
        field: str = "",
        run_id: str = "",
    ) -> int:
        """Store a :class:`~heliostat.calibration.fit.FitResult`; returns its id."""
        rms_c, max_c = pointing_change_mrad or (math.nan, math.nan)
        with self.con:
            cur = self.con.execute(
                "INSERT INTO campaign_fits (heliostat_id, time_utc, drive, success, reason,"
                " n_points, n_outliers, last_observation_id, names, parameters, parameter_std,"
                " rms_before_mrad, rms_after_mrad, loo_rms_mrad, condition, warnings,"
                " previous_fit_id, pointing_change_rms_mrad, pointing_change_max_mrad, field,"
                " run_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    result.heliostat_id,
                    time_utc,
                    result.drive,
                    int(bool(result.success)),
                    result.reason,
                    int(result.n_points),
                    int(result.n_outliers),
                    int(last_observation_id),
                    json.dumps(list(result.names)),
                    json.dumps(result.parameters() if result.success else {}),
                    json.dumps({k: _num(v) for k, v in result.std.items()}),
                    _num(result.rms_before_mrad),
                    _num(result.rms_after_mrad),
                    _num(result.loo_rms_mrad),
                    _num(result.condition),
                    json.dumps(list(result.warnings)),
                    previous_fit_id,
                    _num(rms_c),
                    _num(max_c),
                    field,
                    run_id,
                ),
            )
        return int(cur.lastrowid)

    def fits(self, heliostat_id: str | None = None, success_only: bool = False) -> list[dict]:
        """Fits in id order, JSON columns decoded."""
        sql = "SELECT * FROM campaign_fits"
        where, args = [], []
        if heliostat_id is not None:
            where.append("heliostat_id = ?")
            args.append(heliostat_id)
        if success_only:
            where.append("success = 1")
        if where:
            sql += " WHERE " + " AND ".join(where)
        out = []
        for r in self._rows(sql + " ORDER BY id", args):
            d = dict(r)
            for k in ("names", "parameters", "parameter_std", "warnings"):
                d[k] = json.loads(d[k])
            d["success"] = bool(d["success"])
            out.append(d)
        return out

    def last_fit(self, heliostat_id: str, success_only: bool = False) -> dict | None:
        f = self.fits(heliostat_id, success_only)
        return f[-1] if f else None

    # ------------------------------------------------------------------ corrections
    def propose(self, fit_id: int, heliostat_id: str, now_utc: str) -> int:
        """A correction row for a fit (existing one returned unchanged)."""
        with self.con:
            self.con.execute(
                "INSERT OR IGNORE INTO campaign_corrections (fit_id, heliostat_id, created_utc,"
                " updated_utc, state) VALUES (?,?,?,?,'proposed')",
                (fit_id, heliostat_id, now_utc, now_utc),
            )
        row = self.con.execute(
            "SELECT id FROM campaign_corrections WHERE fit_id = ?", (fit_id,)
        ).fetchone()
        return int(row[0])

    def set_correction(self, correction_id: int, state: str, now_utc: str, detail: str = ""):
        if state not in CORRECTION_STATES:
            raise ValueError(f"correction state must be one of {CORRECTION_STATES}, got {state!r}")
        with self.con:
            self.con.execute(
                "UPDATE campaign_corrections SET state = ?, detail = ?, updated_utc = ? "
                "WHERE id = ?",
                (state, detail, now_utc, correction_id),
            )

    def corrections(self, heliostat_id: str | None = None) -> list[dict]:
        sql = (
            "SELECT c.*, f.parameters AS parameters FROM campaign_corrections c "
            "JOIN campaign_fits f ON f.id = c.fit_id"
        )
        args: tuple = ()
        if heliostat_id is not None:
            sql += " WHERE c.heliostat_id = ?"
            args = (heliostat_id,)
        out = []
        for r in self._rows(sql + " ORDER BY c.id", args):
            d = dict(r)
            d["parameters"] = json.loads(d["parameters"])
            out.append(d)
        return out

    def add_delivery(self, correction_id: int, time_utc: str, port: str, outcome) -> None:
        """Store a bridge :class:`~firmware_bridge.delivery.Outcome` for a correction."""
        with self.con:
            self.con.execute(
                "INSERT INTO campaign_deliveries (correction_id, heliostat_id, time_utc, port,"
                " address, command_id, state, attempts, detail) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    correction_id,
                    outcome.heliostat,
                    time_utc,
                    port,
                    outcome.address,
                    outcome.command_id,
                    outcome.state,
                    outcome.attempts,
                    outcome.detail,
                ),
            )

    def deliveries(self, heliostat_id: str | None = None) -> list[dict]:
        sql = "SELECT * FROM campaign_deliveries"
        args: tuple = ()
        if heliostat_id is not None:
            sql += " WHERE heliostat_id = ?"
            args = (heliostat_id,)
        return [dict(r) for r in self._rows(sql + " ORDER BY id", args)]

    def check_integrity(self) -> None:
        """Read every page of the file once (``PRAGMA quick_check``): a damaged file is
        an error here, before a summary built from indexes alone (counts) could report
        numbers from it without touching the damaged rows.

        Raises
        ------
        InputError
            The file is damaged (naming it).
        """
        if self.readonly and not self._has_tables():
            return
        rows = self.con.execute("PRAGMA quick_check").fetchall()
        if rows and rows[0][0] != "ok":
            first = " ".join(str(rows[0][0]).split())[:160]  # one line
            raise sqlite3.DatabaseError(f"database disk image is malformed: {first}")

    def has_heliostat(self, heliostat_id: str) -> bool:
        """Whether any observation, visit or fit names the heliostat (index look-ups)."""
        rows = self._rows(
            "SELECT 1 WHERE EXISTS (SELECT 1 FROM campaign_observations WHERE heliostat_id = ?)"
            " OR EXISTS (SELECT 1 FROM campaign_visits WHERE heliostat_id = ?)"
            " OR EXISTS (SELECT 1 FROM campaign_fits WHERE heliostat_id = ?)",
            (heliostat_id,) * 3,
        )
        return bool(rows)

    def heliostat_ids(self) -> list[str]:
        rows = self._rows(
            "SELECT heliostat_id FROM campaign_observations UNION "
            "SELECT heliostat_id FROM campaign_visits UNION "
            "SELECT heliostat_id FROM campaign_fits ORDER BY 1"
        )
        return [r[0] for r in rows]


#: Columns of ``observations.csv`` (docs/observations.md) the history fills.
CSV_COLUMNS = OBSERVATION_COLUMNS


# An SQLite error of the history's file becomes an InputError naming it (exit 2).
wrap_file_errors(
    History,
    InputError,
    "history database",
    [
        n
        for n, f in vars(History).items()
        if callable(f) and (not n.startswith("_") or n == "__init__")
    ],
)


def write_observations_csv(hist: History, path: str | Path, heliostat_id: str | None = None):
    """Write the observations as an ``observations.csv`` (for ``heliostat calibrate``).

    The ``frame`` column is left empty: the history keeps frame paths relative to the
    campaign's ``frames_dir``, not to the CSV. Returns the number of rows.
    """
    df = hist.observations(heliostat_id)
    out = df[list(CSV_COLUMNS)].copy()
    out["frame"] = ""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    out.to_csv(tmp, index=False, float_format="%.6f")
    tmp.replace(p)
    return len(out)


# --------------------------------------------------------------------------- drift
def parameter_sets(hist: History, heliostat_id: str) -> list[dict[str, Any]]:
    """The parameter sets a heliostat's controller confirmed, oldest first, without the
    reverted ones: one dict per confirmed delivery with ``correction_id``, ``fit_id``,
    ``delivered_utc``, ``drive`` and ``parameters`` (name -> value, rad / m)."""
    fits = {f["id"]: f for f in hist.fits(heliostat_id)}
    corr = {c["id"]: c for c in hist.corrections(heliostat_id)}
    out = []
    for d in hist.deliveries(heliostat_id):
        c = corr.get(d["correction_id"])
        if d["state"] != "confirmed" or c is None or c["state"] == "reverted":
            continue
        f = fits[c["fit_id"]]
        out.append(
            {
                "correction_id": c["id"],
                "fit_id": f["id"],
                "delivered_utc": d["time_utc"],
                "drive": f["drive"],
                "parameters": dict(f["parameters"]),
            }
        )
    return out


def revert_target(hist: History, heliostat_id: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(the set the controller holds by the history, the one before it) for a revert.

    The one before is the latest earlier confirmed set of *another* correction; None means
    the controller had no correction before (revert to the nominal set, all zero).

    Raises
    ------
    InputError
        No parameter set was confirmed on this heliostat (nothing to revert).
    """
    sets = parameter_sets(hist, heliostat_id)
    if not sets:
        raise InputError(
            f"{hist.path}: no parameter set confirmed on {heliostat_id}'s controller; "
            "nothing to revert"
        )
    current = sets[-1]
    earlier = [s for s in sets[:-1] if s["correction_id"] != current["correction_id"]]
    return current, (earlier[-1] if earlier else None)


def parameter_changes(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, float]:
    """Change of each parameter from fit ``a`` to fit ``b`` (absent = 0, nominal), in
    display units: ``*_rad`` in mrad (key ``*_mrad``), ``*_m`` in mm (key ``*_mm``)."""
    out = {}
    for name in sorted(set(a) | set(b), key=lambda n: (list(a) + list(b)).index(n)):
        d = float(b.get(name, 0.0)) - float(a.get(name, 0.0))
        if name.endswith("_rad"):
            out[name[: -len("_rad")] + "_mrad"] = d * 1e3
        elif name.endswith("_m"):
            out[name[: -len("_m")] + "_mm"] = d * 1e3
        else:
            out[name] = d
    return out


# --------------------------------------------------------------------------- reports
def heliostat_record(hist: History, heliostat_id: str) -> dict[str, Any]:
    """A heliostat's record: observations, fits over time, drift between successive
    successful fits, corrections and deliveries (what ``heliostat history`` shows).

    Raises
    ------
    KeyError
        If the database knows nothing of the heliostat.
    """
    if not hist.has_heliostat(heliostat_id):
        ids = hist.heliostat_ids()
        known = ", ".join(ids[:20]) or "none"
        if len(ids) > 20:
            known += f", ... ({len(ids)} heliostats)"
        raise KeyError(
            f"{hist.path}: no campaign record of heliostat {heliostat_id!r} (have: {known})"
        )
    obs = hist.observations(heliostat_id)
    vis = hist.visits(heliostat_id)
    fits = hist.fits(heliostat_id)
    keep = (
        "id",
        "time_utc",
        "success",
        "reason",
        "n_points",
        "n_outliers",
        "rms_before_mrad",
        "rms_after_mrad",
        "loo_rms_mrad",
        "parameters",
        "parameter_std",
        "warnings",
    )
    ok = [f for f in fits if f["success"]]
    drift = []
    for a, b in zip(ok, ok[1:], strict=False):
        same = b["previous_fit_id"] == a["id"]
        drift.append(
            {
                "from_fit": a["id"],
                "to_fit": b["id"],
                "from_utc": a["time_utc"],
                "to_utc": b["time_utc"],
                "days": (pd.Timestamp(b["time_utc"]) - pd.Timestamp(a["time_utc"])).total_seconds()
                / 86400.0,
                "pointing_change_rms_mrad": b["pointing_change_rms_mrad"] if same else None,
                "pointing_change_max_mrad": b["pointing_change_max_mrad"] if same else None,
                "parameter_changes": parameter_changes(a["parameters"], b["parameters"]),
            }
        )
    return {
        "heliostat": heliostat_id,
        "observations": {
            "count": int(len(obs)),
            "first_utc": str(obs["time_utc"].iloc[0]) if len(obs) else None,
            "last_utc": str(obs["time_utc"].iloc[-1]) if len(obs) else None,
            "skipped": {str(k): int(v) for k, v in vis["outcome"].value_counts().items()},
        },
        "fits": [{k: f[k] for k in keep} for f in fits],
        "drift": drift,
        "corrections": [
            {k: c[k] for k in ("id", "fit_id", "created_utc", "updated_utc", "state", "detail")}
            for c in hist.corrections(heliostat_id)
        ],
        "deliveries": [
            {k: d[k] for k in ("time_utc", "port", "address", "command_id", "state", "attempts")}
            for d in hist.deliveries(heliostat_id)
        ],
    }


def overview(hist: History) -> list[dict[str, Any]]:
    """One line per heliostat: counts, latest fit, latest drift, last delivery.

    The same rows as :func:`heliostat_record` gives heliostat by heliostat, read with one
    pass per table (grouped counts, the successful fits' summary columns, the last
    delivery per heliostat), so that a 10,000-heliostat history takes seconds, not hours.
    """
    ids = hist.heliostat_ids()
    if not ids:
        return []

    def counts(table: str) -> dict[str, int]:
        sql = f"SELECT heliostat_id, COUNT(*) FROM {table} GROUP BY heliostat_id"
        return {r[0]: int(r[1]) for r in hist._rows(sql)}

    n_obs, n_skipped, n_fits = (
        counts(t) for t in ("campaign_observations", "campaign_visits", "campaign_fits")
    )
    # The last two successful fits of each heliostat (in id order): the latest, and the
    # drift between them (its pointing change only when the latest was fitted against it).
    last2: dict[str, list] = {}
    for r in hist._rows(
        "SELECT heliostat_id, id, time_utc, rms_after_mrad, loo_rms_mrad, previous_fit_id,"
        " pointing_change_rms_mrad FROM campaign_fits WHERE success = 1 ORDER BY id"
    ):
        pair = last2.setdefault(r[0], [])
        pair.append(tuple(r))
        del pair[:-2]
    delivered = {
        r[0]: r[1]
        for r in hist._rows(
            "SELECT d.heliostat_id, d.state FROM campaign_deliveries d JOIN (SELECT"
            " heliostat_id, MAX(id) AS id FROM campaign_deliveries GROUP BY heliostat_id) m"
            " ON d.id = m.id"
        )
    }
    rows = []
    for hid in ids:
        ok = last2.get(hid, [])
        last = ok[-1] if ok else None
        drift = None
        if len(ok) == 2 and ok[1][5] == ok[0][1]:
            drift = ok[1][6]
        rows.append(
            {
                "heliostat": hid,
                "observations": n_obs.get(hid, 0),
                "skipped": n_skipped.get(hid, 0),
                "fits": n_fits.get(hid, 0),
                "last_fit_utc": last[2] if last else None,
                "rms_after_mrad": last[3] if last else None,
                "loo_rms_mrad": last[4] if last else None,
                "drift_rms_mrad": drift,
                "last_delivery": delivered.get(hid),
            }
        )
    return rows
