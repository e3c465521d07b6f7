"""Calibration observations: the ``observations.csv`` reader and the in-memory record.

One row of ``observations.csv`` is one measurement of one heliostat: the motor steps it
held, the sun (from the UTC time and/or the logged angles) and where its beam hit a
target. The format is documented in ``docs/observations.md``. Reading validates every row
and rejects bad ones with their line number and the reason; good rows go on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from heliostat.config import FieldConfig
from heliostat.frames import angle_between, azel_to_enu
from heliostat.sun import sun_position

#: Default largest disagreement between the logged sun angles and the sun computed from
#: the row's time before the row is rejected. [deg] (0.05° ≈ 0.9 mrad; SPA is good to
#: 0.0003°, so a larger difference means a wrong clock, site or angle convention.)
SUN_TOLERANCE_DEG = 0.05

_REQUIRED = ("heliostat_id", "axis1_steps", "axis2_steps", "target_id")

#: The columns of ``observations.csv`` in their written order (docs/observations.md).
#: Simulators append ground-truth ``true_*`` columns, which readers ignore.
OBSERVATION_COLUMNS: tuple[str, ...] = (
    "heliostat_id",
    "time_utc",
    "sun_azimuth_deg",
    "sun_elevation_deg",
    "axis1_steps",
    "axis2_steps",
    "target_id",
    "spot_x_m",
    "spot_y_m",
    "spot_e_m",
    "spot_n_m",
    "spot_u_m",
    "sigma_m",
    "quality_flags",
    "frame",
    "axis1_approach",
    "axis2_approach",
)
#: Optional columns: the direction of each axis's last move before the measurement (+1:
#: its steps grew, −1: they fell; empty: not known), for the backlash parameters.
APPROACH_COLUMNS: tuple[str, str] = ("axis1_approach", "axis2_approach")
_TZ_SUFFIX = re.compile(r"(Z|[+-]\d\d:?\d\d)$")
#: Smallest spot uncertainty taken (1 µm; a camera pixel on a target is millimetres):
#: smaller values are refused, not used as weights of 1e300. [m]
SIGMA_MIN_M = 1e-6


@dataclass(frozen=True, slots=True)
class Rejection:
    """A row that was not used.

    Attributes
    ----------
    row : int
        Line number in the CSV file (the header is line 1), or the record's index for
        non-CSV sources.
    reason : str
        Why the row was rejected.
    """

    row: int
    reason: str

    def __str__(self) -> str:
        return f"row {self.row}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Observations:
    """Validated observations of one heliostat (N rows).

    Attributes
    ----------
    heliostat_id : str
    u_sun_enu : ndarray of shape (N, 3)
        Unit vector toward the sun, site ENU.
    steps : ndarray of shape (N, 2), int64
        Motor positions of axis 1 and 2 as the controller reported them. [steps]
    spot_enu_m : ndarray of shape (N, 3)
        Measured beam spot on the target. [m]
    target_centre_enu_m, target_normal_enu : ndarray of shape (N, 3)
        Plane of the target each spot lies on. [m], unit
    target_ids : tuple of str
    sigma_m : ndarray of shape (N,)
        1-sigma spot uncertainty, NaN where not given (or given as 0). [m]
    rows : ndarray of shape (N,), int
        Source line numbers (for messages).
    times_utc : tuple of str
        ISO 8601 UTC time per row, ``""`` where only angles were given.
    approach : ndarray of shape (N, 2), optional
        Direction of each axis's last move before the measurement: +1 (steps grew), −1
        (fell), 0 (not known; the backlash term is left out). None (the default) = all 0.
    """

    heliostat_id: str
    u_sun_enu: NDArray[np.float64]
    steps: NDArray[np.int64]
    spot_enu_m: NDArray[np.float64]
    target_centre_enu_m: NDArray[np.float64]
    target_normal_enu: NDArray[np.float64]
    target_ids: tuple[str, ...]
    sigma_m: NDArray[np.float64]
    rows: NDArray[np.int64]
    times_utc: tuple[str, ...]
    approach: NDArray[np.float64] | None = None

    def __post_init__(self) -> None:
        n = self.steps.shape[0]
        if self.approach is None:
            object.__setattr__(self, "approach", np.zeros((n, 2)))
        a = np.asarray(self.approach, dtype=float)
        if a.shape != (n, 2) or not np.all(np.isin(a, (-1.0, 0.0, 1.0))):
            raise ValueError(f"approach must be ({n}, 2) values of -1, 0 or +1")
        object.__setattr__(self, "approach", a)
        for name in ("u_sun_enu", "spot_enu_m", "target_centre_enu_m", "target_normal_enu"):
            a = getattr(self, name)
            if a.shape != (n, 3):
                raise ValueError(f"{name} must have shape ({n}, 3), got {a.shape}")
        if self.steps.shape != (n, 2):
            raise ValueError(f"steps must have shape (N, 2), got {self.steps.shape}")
        for name in ("sigma_m", "rows"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must have shape ({n},)")
        if len(self.target_ids) != n or len(self.times_utc) != n:
            raise ValueError("target_ids and times_utc need one entry per row")

    def __len__(self) -> int:
        return int(self.steps.shape[0])

    def subset(self, index: NDArray) -> Observations:
        """The rows selected by a boolean mask or an integer index array."""
        idx = np.arange(len(self))[np.asarray(index)]
        return Observations(
            self.heliostat_id,
            self.u_sun_enu[idx],
            self.steps[idx],
            self.spot_enu_m[idx],
            self.target_centre_enu_m[idx],
            self.target_normal_enu[idx],
            tuple(self.target_ids[i] for i in idx),
            self.sigma_m[idx],
            self.rows[idx],
            tuple(self.times_utc[i] for i in idx),
            self.approach[idx],
        )

    def both_directions(self, min_rows: int = 1) -> tuple[bool, bool]:
        """Per axis: at least ``min_rows`` records arrived from each direction (a
        backlash is then separable from the zero offset, which it otherwise only
        shifts)."""
        a = self.approach
        return tuple(
            bool(np.sum(a[:, i] > 0) >= min_rows and np.sum(a[:, i] < 0) >= min_rows)
            for i in range(2)
        )


def _num(df: pd.DataFrame, col: str) -> NDArray[np.float64]:
    if col not in df.columns:
        return np.full(len(df), np.nan)
    # Empty and non-numeric cells become NaN (then rejected with a reason where required).
    return pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)


def _text(df: pd.DataFrame, col: str) -> NDArray[np.object_]:
    if col not in df.columns:
        return np.full(len(df), "", dtype=object)
    # an all-empty column is read as float NaN: cast before filling (pandas 4 refuses a
    # str fill value on a float column)
    return df[col].astype(object).fillna("").astype(str).str.strip().to_numpy(dtype=object)


def _groups(keys: NDArray[np.object_], mask: NDArray[np.bool_]) -> dict[str, NDArray[np.int64]]:
    """Row indices per key among the masked rows, keys in first-seen order. O(N)."""
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return {}
    g = pd.Series(idx).groupby(pd.Series(keys[idx]), sort=False).indices
    return {str(k): idx[v] for k, v in g.items()}


def observations_from_frame(
    df: pd.DataFrame,
    field: FieldConfig,
    sun_tolerance_deg: float = SUN_TOLERANCE_DEG,
    first_row: int = 2,
    row_numbers: NDArray[np.int64] | None = None,
) -> tuple[dict[str, Observations], list[Rejection]]:
    """Validate observation rows (columns of ``observations.csv``) against a field.

    Vectorised over the rows: the sun is computed once per distinct time (a field's
    observations share few times), so a frame of 300,000 rows takes about a second.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per observation; column names as in ``docs/observations.md``.
    field : FieldConfig
        Heliostats, targets and the site (for the sun position).
    sun_tolerance_deg : float
        Largest angle between the logged sun direction and the one computed from the
        row's time. [deg]
    first_row : int
        Number reported for the first row (2 = line number in a CSV with a header).
    row_numbers : ndarray of shape (N,), optional
        Number reported for each row instead (e.g. the history database's row ids).

    Returns
    -------
    observations : dict of str to Observations
        Valid rows per heliostat id, in input order.
    rejected : list of Rejection
        Every row not used, with its number and the reason.
    """
    if not np.isfinite(sun_tolerance_deg) or sun_tolerance_deg <= 0:
        raise ValueError(f"sun_tolerance_deg must be positive, got {sun_tolerance_deg!r}")
    missing = [c for c in _REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"observations lack required column(s): {', '.join(missing)}")
    n = len(df)
    if n == 0:
        raise ValueError("no observation rows (only a header)")
    if row_numbers is None:
        rows = np.arange(n, dtype=np.int64) + first_row
    else:
        rows = np.asarray(row_numbers, dtype=np.int64)
        if rows.shape != (n,):
            raise ValueError(f"row_numbers must have shape ({n},), got {rows.shape}")
    reason = np.full(n, "", dtype=object)

    def reject(mask: NDArray[np.bool_], why) -> None:
        new = mask & (reason == "")
        for i in np.flatnonzero(new):
            reason[i] = why(i) if callable(why) else why

    hid = _text(df, "heliostat_id")
    tid = _text(df, "target_id")
    reject(hid == "", "heliostat_id is empty")
    reject(tid == "", "target_id is empty")
    reject(
        ~pd.Series(hid).isin(list(field.heliostats)).to_numpy(),
        lambda i: f"heliostat {hid[i]!r} is not in the field config",
    )
    reject(
        ~pd.Series(tid).isin(list(field.targets)).to_numpy(),
        lambda i: f"target {tid[i]!r} is not in the field config",
    )

    st = np.stack([_num(df, "axis1_steps"), _num(df, "axis2_steps")], axis=1)
    reject(~np.all(np.isfinite(st), axis=1), "axis1_steps/axis2_steps missing or not a number")
    reject(np.any(st != np.round(st), axis=1), "axis1_steps/axis2_steps must be integers")
    ok_steps = np.zeros(n, dtype=bool)
    for h, idx in _groups(hid, reason == "").items():
        ok_steps[idx] = field.heliostats[h].kinematics.within_limits(st[idx])
    reject(
        ~ok_steps,
        lambda i: (
            f"steps ({int(st[i, 0])}, {int(st[i, 1])}) outside the actuator travel of {hid[i]}"
        ),
    )

    # Direction of the last move per axis: +1, -1 or empty (not known).
    approach = np.zeros((n, 2))
    for i, col in enumerate(APPROACH_COLUMNS):
        if col not in df.columns:
            continue
        val = _num(df, col)
        if pd.api.types.is_numeric_dtype(df[col]):
            given = df[col].notna().to_numpy()
        else:
            given = _text(df, col) != ""
        reject(
            given & ~np.isin(val, (-1.0, 1.0)),
            lambda j, col=col: (
                f"{col} {str(df[col].iloc[j]).strip()!r} must be +1 or -1 (direction of the "
                "axis's last move) or empty (not known)"
            ),
        )
        approach[:, i] = np.where(given & np.isin(val, (-1.0, 1.0)), val, 0.0)

    # Spot: ENU if all three are given, else the target-plane (x, y).
    enu = np.stack([_num(df, f"spot_{c}_m") for c in "enu"], axis=1)
    xy = np.stack([_num(df, "spot_x_m"), _num(df, "spot_y_m")], axis=1)
    has_enu = np.all(np.isfinite(enu), axis=1)
    has_xy = np.all(np.isfinite(xy), axis=1)
    reject(~(has_enu | has_xy), "no spot: spot_x_m/spot_y_m and spot_e_m/n_m/u_m are missing")
    # A cell that is given but is no finite number (NaN, Inf, text) is an error of the
    # row, never a value silently dropped (an empty cell means "not given").
    for col in ("spot_x_m", "spot_y_m", "spot_e_m", "spot_n_m", "spot_u_m", "sigma_m"):
        val = _num(df, col)
        if col in df.columns and pd.api.types.is_numeric_dtype(df[col]):
            given = df[col].notna().to_numpy()  # a number column (history): NaN = empty
        else:
            given = _text(df, col) != ""
        reject(
            given & ~np.isfinite(val),
            lambda i, col=col: f"{col} {str(df[col].iloc[i]).strip()!r} is not a finite number",
        )
    spot = enu.copy()
    for t, idx in _groups(tid, (reason == "") & ~has_enu).items():
        spot[idx] = field.targets[t].plane_to_enu(xy[idx])

    # Sun: from the time (SPA at the field's site) and/or the logged angles. Times are
    # parsed and the sun computed once per distinct time string (`inv` maps rows to them).
    times = _text(df, "time_utc")
    az = _num(df, "sun_azimuth_deg")
    el = _num(df, "sun_elevation_deg")
    has_time = times != ""
    has_ang = np.isfinite(az) & np.isfinite(el)
    reject(~has_time & ~has_ang, "neither time_utc nor sun_azimuth_deg/sun_elevation_deg given")
    uniq, inv = np.unique(times.astype(str), return_inverse=True)
    u_naive = np.array([not _TZ_SUFFIX.search(t) if t else False for t in uniq], dtype=bool)
    naive = has_time & u_naive[inv]
    reject(naive, lambda i: f"time_utc {times[i]!r} has no timezone (write e.g. ...Z)")
    u_parsed = pd.to_datetime(
        pd.Series(np.where((uniq != "") & ~u_naive, uniq, None)),
        utc=True,
        errors="coerce",
        format="ISO8601",
    )
    u_valid = ~u_parsed.isna().to_numpy()
    bad_time = has_time & ~naive & ~u_valid[inv]
    reject(bad_time, lambda i: f"time_utc {times[i]!r} is not an ISO 8601 time")
    u_sun = np.full((n, 3), np.nan)
    elev = np.full(n, np.nan)
    use_time = has_time & (reason == "")
    if np.any(use_time):
        need = np.unique(inv[use_time])
        sp = sun_position(field.site, pd.DatetimeIndex(u_parsed.iloc[need]))
        at = np.full(uniq.size, -1, dtype=np.int64)
        at[need] = np.arange(need.size)
        k = at[inv[use_time]]
        u_sun[use_time] = sp.u_sun_enu[k]
        elev[use_time] = sp.elevation_rad[k]
    use_ang = has_ang & (reason == "")
    u_ang = azel_to_enu(np.radians(az), np.radians(el))
    if np.any(use_time & use_ang):
        both = use_time & use_ang
        diff_deg = np.degrees(angle_between(u_sun[both], u_ang[both]))
        disagree = np.zeros(n, dtype=bool)
        disagree[both] = diff_deg > sun_tolerance_deg
        dd = np.full(n, np.nan)
        dd[both] = diff_deg
        reject(
            disagree,
            lambda i: (
                f"logged sun angles disagree with the sun computed from time_utc by "
                f"{dd[i]:.3f}° (tolerance {sun_tolerance_deg}°)"
            ),
        )
    # The row's instant for duplicate detection: the parsed time, else the sun angles
    # (their bit patterns: equal for equal finite floats, as their repr).
    ns = np.where(u_valid, u_parsed.fillna(pd.Timestamp(0, tz="UTC")).astype("int64"), 0)
    key_ns = np.where(use_time, ns[inv], 0)
    key_az = np.where(use_time, 0, np.where(np.isfinite(az), az, 0.0).view(np.int64))
    key_el = np.where(use_time, 0, np.where(np.isfinite(el), el, 0.0).view(np.int64))
    only_ang = use_ang & ~use_time
    u_sun[only_ang] = u_ang[only_ang]
    elev[only_ang] = np.radians(el[only_ang])
    reject((reason == "") & ~(elev > 0), lambda i: "sun below the horizon")

    sigma = _num(df, "sigma_m")
    reject((reason == "") & np.isfinite(sigma) & (sigma < 0), "sigma_m must not be negative")
    reject(
        (reason == "") & (sigma > 0) & (sigma < SIGMA_MIN_M),
        lambda i: (
            f"sigma_m {sigma[i]:g} m is below {SIGMA_MIN_M:g} m: no spot on a target is "
            "located that precisely (it would swamp the fit's weights)"
        ),
    )
    sigma = np.where(sigma > 0, sigma, np.nan)  # 0 (a noise-free simulation): not given

    # The same measurement twice (same heliostat, target, time or sun angles, steps)
    # would count twice in the fit: the later rows are rejected, naming the first.
    cand = np.flatnonzero(reason == "")
    if cand.size:
        keys = pd.DataFrame(
            {
                "h": hid[cand],
                "t": tid[cand],
                "u": use_time[cand],
                "ns": key_ns[cand],
                "az": key_az[cand],
                "el": key_el[cand],
                "s1": st[cand, 0],
                "s2": st[cand, 1],
            }
        )
        group = keys.groupby(list(keys.columns), sort=False).ngroup().to_numpy()
        _, first = np.unique(group, return_index=True)
        first_of = cand[first[group]]
        for i, f in zip(cand, first_of, strict=True):
            if i != f:
                reason[i] = (
                    f"duplicate of line {rows[f]} (same heliostat, target, time and "
                    "steps): the measurement is counted once"
                )

    good = reason == ""
    rejected = [Rejection(int(rows[i]), str(reason[i])) for i in np.flatnonzero(~good)]
    out: dict[str, Observations] = {}
    u_stamps = u_parsed.dt.strftime("%Y-%m-%dT%H:%M:%SZ").fillna("").to_numpy(dtype=object)
    stamps = np.where(use_time, u_stamps[inv], "")
    t_keys = list(field.targets)
    t_code = pd.Series(tid).map({k: j for j, k in enumerate(t_keys)}).to_numpy()
    centres = np.array([field.targets[k].centre_enu_m for k in t_keys], dtype=float)
    normals = np.array([field.targets[k].u_normal_enu for k in t_keys], dtype=float)
    for h, idx in _groups(hid, good).items():
        tc = t_code[idx].astype(np.int64)
        out[str(h)] = Observations(
            str(h),
            u_sun[idx],
            st[idx].astype(np.int64),
            spot[idx],
            centres[tc],
            normals[tc],
            tuple(tid[idx].tolist()),
            sigma[idx],
            rows[idx],
            tuple(stamps[idx].tolist()),
            approach[idx],
        )
    return out, rejected


def read_observations(
    path: str | Path,
    field: FieldConfig,
    sun_tolerance_deg: float = SUN_TOLERANCE_DEG,
) -> tuple[dict[str, Observations], list[Rejection]]:
    """Read and validate an ``observations.csv`` (format: ``docs/observations.md``).

    Raises
    ------
    OSError
        If the file cannot be read.
    ValueError
        If it is not a CSV with the required columns (message names the file).
    """
    p = Path(path)
    try:
        df = pd.read_csv(p, dtype=str, keep_default_na=False, skip_blank_lines=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{p}: not a readable observations CSV: {exc}") from None
    try:
        return observations_from_frame(df, field, sun_tolerance_deg)
    except ValueError as exc:
        raise ValueError(f"{p}: {exc}") from None


def group_rows(obs: Mapping[str, Observations]) -> int:
    """Total number of valid rows over all heliostats."""
    return sum(len(o) for o in obs.values())
