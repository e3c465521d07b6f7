"""``heliostat bench paint``: PAINT's calibration benchmark on a folder of PAINT records.

For every heliostat under the root (any layout of
:mod:`heliostat.calibration.paint_layout`), the records are split as paint-csp's
``DatasetSplitter`` splits them (:mod:`heliostat.calibration.paint_splits`); the
heliostat's error parameters are chosen and fitted on its **training** records only, and
the pointing error is measured on its **test** records (the validation records are
reported, not used by our fit). The error is the angle between the reflected beam and the
ray from the mirror centre (pivot + concentrator translation) to the measured spot
[mrad], the residual of :func:`heliostat.calibration.fit.pointing_residuals`.

Record metadata (sun azimuth/elevation in PAINT's convention, record time) comes from the
record files and, for the time, from a calibration metadata CSV under the root
(``heliostat paint fetch`` writes ``metadata/<ID>-calibration-metadata.csv``; paint-csp's
``get_heliostat_metadata`` writes ``metadata/calibration_metadata_*.csv``). Only records
our reader accepts are split.

With an ARTIST interpreter (``artist_python``), the same split is handed to
``heliostat/bench/artist_runner.py`` in that interpreter, which runs ARTIST's kinematic
reconstruction and measures the same angle on the same test records.
"""

from __future__ import annotations

import json
import math
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from heliostat.calibration.fit import pointing_residuals
from heliostat.calibration.observations import Observations
from heliostat.calibration.paint import PaintCampaign, load_paint_root
from heliostat.calibration.paint_fetch import read_metadata
from heliostat.calibration.paint_splits import TEST, TRAIN, VALIDATION, dataset_splits
from heliostat.errors import InputError
from heliostat.kinematics import HeliostatKinematics, KinematicErrors

#: The runner ARTIST's interpreter executes (stand-alone: it does not import heliostat).
ARTIST_RUNNER = Path(__file__).resolve().with_name("artist_runner.py")


@dataclass(frozen=True, slots=True)
class BenchRow:
    """One heliostat, one method.

    Attributes
    ----------
    heliostat_id, method : str
        ``method`` is ``"heliostat"`` (ours) or ``"artist"``.
    n_train, n_validation, n_test : int
    parameters : tuple of str
        What was fitted (ours: the selected set; ARTIST: its reconstruction's).
    test_rms_mrad, test_max_mrad : float
        Pointing error over the test records (NaN when not fitted). [mrad]
    train_rms_mrad : float
        The same on the training records (the fit's own residual). [mrad]
    uncalibrated_test_rms_mrad : float
        Test error of the nominal model (nothing fitted). [mrad]
    time_s : float
        Wall time of the choice and fit (ours) or of ARTIST's reconstruction. [s]
    note : str
    """

    heliostat_id: str
    method: str
    n_train: int
    n_validation: int
    n_test: int
    parameters: tuple[str, ...]
    test_rms_mrad: float
    test_max_mrad: float
    train_rms_mrad: float
    uncalibrated_test_rms_mrad: float
    time_s: float
    note: str = ""

    def summary(self) -> dict:
        return {
            "heliostat": self.heliostat_id,
            "method": self.method,
            "n_train": self.n_train,
            "n_validation": self.n_validation,
            "n_test": self.n_test,
            "parameters": list(self.parameters),
            "test_rms_mrad": self.test_rms_mrad,
            "test_max_mrad": self.test_max_mrad,
            "train_rms_mrad": self.train_rms_mrad,
            "uncalibrated_test_rms_mrad": self.uncalibrated_test_rms_mrad,
            "time_s": self.time_s,
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class BenchResult:
    """All rows, the field figures and what was left out."""

    split: str
    training_size: int
    validation_size: int
    rows: tuple[BenchRow, ...]
    field: dict[str, dict]
    dropped: tuple[str, ...]
    refused: tuple[tuple[str, str], ...]
    notes: tuple[str, ...] = field(default_factory=tuple)


def _rms(v: np.ndarray) -> float:
    return float(math.sqrt(np.mean(np.square(v)))) if len(v) else math.nan


def record_id(path: str | Path) -> str:
    """``125284-calibration-properties.json`` → ``"125284"``."""
    return Path(path).name.split("-", 1)[0]


def _times(root: Path) -> dict[str, pd.Timestamp]:
    out: dict[str, pd.Timestamp] = {}
    for p in sorted(root.rglob("*.csv")):
        if "calibration" not in p.name or "metadata" not in p.name:
            continue
        df = read_metadata(p)
        for rid, t in df["DateTime"].items():
            if pd.notna(t):
                out[str(rid)] = t
    return out


def campaign_metadata(camp: PaintCampaign, times: dict[str, pd.Timestamp]) -> pd.DataFrame:
    """Metadata of the records our reader accepted, in paint-csp's columns (index ``Id``):
    ``HeliostatId``, ``Azimuth`` / ``Elevation`` (PAINT's, from the record file) [deg],
    ``DateTime`` (UTC; NaT when no metadata file gives it), ``obs_index`` (row in
    ``camp.observations``)."""
    obs = camp.observations
    if obs is None:
        return pd.DataFrame(columns=["HeliostatId", "Azimuth", "Elevation", "DateTime"])
    rows = []
    for i, r in enumerate(obs.rows):
        path = Path(camp.files[int(r)])
        d = json.loads(path.read_text())
        rid = record_id(path)
        rows.append(
            {
                "Id": rid,
                "HeliostatId": camp.heliostat_id,
                "Azimuth": float(d["sun_azimuth"]),
                "Elevation": float(d["sun_elevation"]),
                "DateTime": times.get(rid, pd.NaT),
                "obs_index": i,
            }
        )
    return pd.DataFrame(rows).set_index("Id")


def fit_ours(
    kin: HeliostatKinematics, train: Observations, tests: dict[str, Observations]
) -> tuple[tuple[str, ...], dict[str, np.ndarray], float, str]:
    """Calibrate on ``train`` as the product does
    (:func:`heliostat.calibration.calibrate_heliostat`: the parameter set chosen by
    cross-validation, the robust fit; no nested error, which the test records replace);
    per-record errors on each set in ``tests`` [mrad], wall time [s], note."""
    from heliostat.calibration.selection import CalibrationOptions, calibrate_heliostat

    t0 = time.perf_counter()
    cal = calibrate_heliostat(kin, train, CalibrationOptions(nested=False, loo="none"))
    dt = time.perf_counter() - t0
    r = cal.fit
    if not cal.names:
        return (), {}, dt, f"not fitted: {cal.reason}"
    if not r.success:
        return cal.names, {}, dt, f"fit failed: {r.reason}"
    errs = {k: pointing_residuals(kin, o, r.errors) for k, o in tests.items()}
    return cal.names, errs, dt, ""


def run_artist(
    artist_python: str,
    jobs: list[dict],
    timeout_s: float = 3600.0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, dict]:
    """Run ``artist_runner.py`` in ``artist_python`` on ``jobs``; its results by heliostat.

    Raises
    ------
    InputError
        When the interpreter is missing or the runner fails (its last error line quoted).
    """
    py = Path(artist_python)
    if not py.exists():
        raise InputError(f"--artist-python: {py}: no such interpreter")
    if progress:
        progress(f"ARTIST: {len(jobs)} heliostat(s) in {py}")
    try:
        # In a scratch folder: ARTIST writes a runtime_log.txt into its working directory.
        with tempfile.TemporaryDirectory() as scratch:
            res = subprocess.run(
                [str(py), str(ARTIST_RUNNER)],
                input=json.dumps({"jobs": jobs}),
                capture_output=True,
                text=True,
                timeout=timeout_s,
                cwd=scratch,
            )
    except subprocess.TimeoutExpired:
        raise InputError(
            f"--artist-python: ARTIST runner timed out after {timeout_s:g} s"
        ) from None
    except OSError as exc:
        raise InputError(f"--artist-python: {py}: {exc}") from None
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise InputError(f"--artist-python: ARTIST runner failed (exit {res.returncode}): {last}")
    try:
        out = json.loads(res.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        raise InputError("--artist-python: the ARTIST runner printed no JSON result") from None
    return {r["heliostat"]: r for r in out.get("results", [])}


def run_bench(
    root: str | Path,
    split: str,
    training_size: int,
    validation_size: int,
    *,
    spot: str = "helios",
    artist_python: str | None = None,
    artist_options: dict | None = None,
    progress: Callable[[str], None] | None = None,
) -> BenchResult:
    """PAINT's benchmark on every heliostat under ``root`` (module docstring).

    Raises
    ------
    InputError
        When no heliostat with records is found or none has enough records for the split.
    """
    say = progress or (lambda _m: None)
    root = Path(root)
    archive = load_paint_root(root, spot)
    if not archive.campaigns:
        raise InputError(f"{root}: no heliostat with readable calibration records")
    times = _times(root)
    camps = {c.heliostat_id: c for c in archive.campaigns if c.observations is not None}
    md = pd.concat([campaign_metadata(c, times) for c in camps.values()])
    if split == "solstice" and md["DateTime"].isna().any():
        n = int(md["DateTime"].isna().sum())
        raise InputError(
            f"{root}: the solstice split needs each record's time; {n} record(s) have none "
            "(the calibration-properties files hold no time: fetch with `heliostat paint fetch`, "
            "which writes metadata/<ID>-calibration-metadata.csv, or put paint-csp's "
            "calibration metadata CSV under the root)"
        )
    sp = dataset_splits(md, split, training_size, validation_size)
    rows: list[BenchRow] = []
    jobs: list[dict] = []
    plan: dict[str, dict[str, list[int]]] = {}
    for hid in sorted(set(sp.heliostat)):
        camp = camps[hid]
        obs = camp.observations
        ids = sp.heliostat.index[sp.heliostat == hid]
        lab = sp.split.loc[ids]
        idx = {k: md.loc[lab.index[lab == k], "obs_index"].astype(int).tolist()
               for k in (TRAIN, VALIDATION, TEST)}  # fmt: skip
        plan[hid] = idx
        kin = camp.field.heliostats[hid].kinematics
        train = obs.subset(np.array(idx[TRAIN]))
        test = obs.subset(np.array(idx[TEST]))
        say(f"{hid}: {len(idx[TRAIN])} train, {len(idx[VALIDATION])} validation, "
            f"{len(idx[TEST])} test records")  # fmt: skip
        uncal = pointing_residuals(kin, test, KinematicErrors.zeros(kin.drive))
        names, errs, dt, note = fit_ours(kin, train, {"train": train, "test": test})
        te = errs.get("test", np.array([]))
        rows.append(
            BenchRow(
                hid, "heliostat", len(idx[TRAIN]), len(idx[VALIDATION]), len(idx[TEST]), names,
                _rms(te) if errs else math.nan,
                float(np.max(te)) if len(te) else math.nan,
                _rms(errs["train"]) if errs else math.nan,
                _rms(uncal), dt, note,
            )
        )  # fmt: skip
        if artist_python:
            files = [camp.files[int(r)] for r in obs.rows]
            jobs.append(
                {
                    "heliostat": hid,
                    "properties": str(camp.field.source),
                    "tower": camp.tower,
                    "spot": spot,
                    "train": [files[i] for i in idx[TRAIN]],
                    "validation": [files[i] for i in idx[VALIDATION]],
                    "test": [files[i] for i in idx[TEST]],
                    **(artist_options or {}),
                }
            )
    if artist_python and jobs:
        got = run_artist(artist_python, jobs, progress=say)
        by_id = {r.heliostat_id: r for r in rows}
        for j in jobs:
            hid = j["heliostat"]
            a = got.get(hid, {"error": "no result from the runner"})
            ours = by_id[hid]
            te = np.asarray(a.get("test_errors_mrad") or [], dtype=float)
            tr = np.asarray(a.get("train_errors_mrad") or [], dtype=float)
            rows.append(
                BenchRow(
                    hid, "artist", ours.n_train, ours.n_validation, ours.n_test,
                    tuple(a.get("parameters", ())),
                    _rms(te), float(np.max(te)) if len(te) else math.nan, _rms(tr),
                    ours.uncalibrated_test_rms_mrad
                    if not a.get("uncalibrated_test_errors_mrad")
                    else _rms(np.asarray(a["uncalibrated_test_errors_mrad"], dtype=float)),
                    float(a.get("time_s", math.nan)), str(a.get("error") or a.get("note", "")),
                )
            )  # fmt: skip
    rows.sort(key=lambda r: (r.heliostat_id, r.method != "heliostat"))
    field_summary = {}
    for method in sorted({r.method for r in rows}, key=lambda m: m != "heliostat"):
        rs = [r for r in rows if r.method == method]
        ok = [r for r in rs if math.isfinite(r.test_rms_mrad)]
        field_summary[method] = {
            "heliostats": len(rs),
            "fitted": len(ok),
            "test_rms_mrad_median": float(np.median([r.test_rms_mrad for r in ok]))
            if ok
            else math.nan,
            "test_rms_mrad_mean": float(np.mean([r.test_rms_mrad for r in ok])) if ok else math.nan,
            # Over every test record of the fitted heliostats.
            "test_rms_mrad_pooled": float(
                math.sqrt(
                    sum(r.n_test * r.test_rms_mrad**2 for r in ok) / sum(r.n_test for r in ok)
                )
            )
            if ok
            else math.nan,
            "time_s_per_heliostat_median": float(np.median([r.time_s for r in rs])),
        }
    notes = []
    without = [h for h in archive.without_records]
    if without:
        notes.append(f"no records: {', '.join(without)}")
    return BenchResult(
        split, training_size, validation_size, tuple(rows), field_summary, sp.dropped,
        archive.refused, tuple(notes),
    )  # fmt: skip
