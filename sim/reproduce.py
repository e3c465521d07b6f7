"""Reproducible simulator output: numbers written at a precision every machine agrees on,
and a content comparison of two campaign folders.

The same seed gives the same *content* on any machine, not the same bytes: geometry passes
through transcendental functions and BLAS whose last bits differ between CPUs (a camera
roll of -2.0e-16 deg on one machine is -3.98e-16 on another). So the simulator's writers
pass their numbers through :func:`stable_numbers` (round-off about zero becomes 0, other
floats keep :data:`SIG_DIGITS` significant digits), and :func:`campaign_differences`
compares two campaign folders with tolerances that say what may differ and why.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = ["SIG_DIGITS", "ZERO_BELOW", "campaign_differences", "stable_float", "stable_numbers"]

#: Significant digits of a float in a simulator-written file. Round-off of a double is
#: ~1e-16 relative; 12 digits leave four digits of margin and still resolve 1 nm at 1 km.
SIG_DIGITS = 12

#: Magnitudes below this are round-off of an exact zero in every quantity these files
#: hold (metres, radians, degrees, pixels, DN): written as 0.
ZERO_BELOW = 1e-12


def stable_float(x: float) -> float:
    """``x`` with round-off removed: 0.0 below :data:`ZERO_BELOW`, else :data:`SIG_DIGITS`
    significant digits (and never ``-0.0``)."""
    x = float(x)
    if not math.isfinite(x):
        return x
    if abs(x) < ZERO_BELOW:
        return 0.0
    return float(f"{x:.{SIG_DIGITS}g}") + 0.0


def stable_numbers(obj: Any) -> Any:
    """A copy of nested dicts/lists/tuples with every float passed through
    :func:`stable_float` (ints, bools and strings unchanged)."""
    if isinstance(obj, bool | int | np.integer | str) or obj is None:
        return obj
    if isinstance(obj, float | np.floating):
        return stable_float(obj)
    if isinstance(obj, Mapping):
        return {k: stable_numbers(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | np.ndarray):
        return [stable_numbers(v) for v in obj]
    return obj


# --------------------------------------------------------------------------- comparison
#: Relative tolerance on parsed TOML/JSON numbers. Written at 12 significant digits
#: (5e-13 relative); inputs that differ in the last bit between CPUs can straddle a
#: rounding step once in a while and amplify through a few trig calls: 1e-9 keeps a margin
#: of 1000 and still catches any change of the model (the smallest simulated quantity,
#: a 1e-4 rad error, is 1e5 times larger than what this lets through).
REL_TOL = 1e-9

#: Observation floats are written with 6 decimals; a last-bit difference can flip the
#: sixth: up to 1e-6 apart, 2e-6 with margin.
CSV_ATOL = 2e-6

#: Step counts are rounded from a continuous position; a last-bit difference can flip a
#: rounding at .5: one step apart at most.
STEPS_ATOL = 1


def _compare(a: Any, b: Any, where: str, out: list[str]) -> None:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        if set(a) != set(b):
            out.append(f"{where}: keys differ: {sorted(set(a) ^ set(b))}")
            return
        for k in a:
            _compare(a[k], b[k], f"{where}.{k}" if where else str(k), out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{where}: lengths differ ({len(a)} vs {len(b)})")
            return
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _compare(x, y, f"{where}[{i}]", out)
    elif isinstance(a, float) or isinstance(b, float):
        if not (
            isinstance(a, int | float)
            and isinstance(b, int | float)
            and math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ZERO_BELOW)
        ):
            out.append(f"{where}: {a!r} vs {b!r}")
    elif a != b:
        out.append(f"{where}: {a!r} vs {b!r}")


def _csv_differences(a: Path, b: Path, name: str, out: list[str]) -> None:
    import pandas as pd

    da = pd.read_csv(a, keep_default_na=False)
    db = pd.read_csv(b, keep_default_na=False)
    if list(da.columns) != list(db.columns) or len(da) != len(db):
        out.append(f"{name}: columns or row count differ ({da.shape} vs {db.shape})")
        return
    for col in da.columns:
        x, y = da[col], db[col]
        if x.dtype.kind == "f" or y.dtype.kind == "f":
            bad = ~np.isclose(x.to_numpy(float), y.to_numpy(float), rtol=0.0, atol=CSV_ATOL)
        elif x.dtype.kind == "i" and col.endswith("_steps"):
            bad = np.abs(x.to_numpy() - y.to_numpy()) > STEPS_ATOL
        else:
            bad = x.astype(str).to_numpy() != y.astype(str).to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            out.append(
                f"{name}: column {col!r} differs in {int(bad.sum())} rows "
                f"(first: line {i + 2}, {x.iloc[i]!r} vs {y.iloc[i]!r})"
            )


def _image_differences(a: Path, b: Path, name: str, out: list[str]) -> None:
    """Frames compared by pixel statistics: the noise is drawn from a seeded generator
    whose rejection samplers call ``log``/``exp``, so one last-bit difference may shift
    every later draw; the scene (levels, spot position and power) may not change."""
    import cv2

    ia = cv2.imread(str(a), cv2.IMREAD_UNCHANGED)
    ib = cv2.imread(str(b), cv2.IMREAD_UNCHANGED)
    if ia is None or ib is None:
        out.append(f"{name}: not a readable image")
        return
    if ia.shape != ib.shape or ia.dtype != ib.dtype:
        out.append(f"{name}: {ia.dtype} {ia.shape} vs {ib.dtype} {ib.shape}")
        return
    fa, fb = ia.astype(float), ib.astype(float)
    # Levels: mean and percentiles agree to 0.5 % of the frame's range or 2 DN (the
    # noise of a re-drawn frame moves a percentile by well under that on >= 0.3 Mpx).
    span = max(float(fa.max() - fa.min()), 1.0)
    qa = np.percentile(fa, [1, 50, 99, 99.9])
    qb = np.percentile(fb, [1, 50, 99, 99.9])
    tol = max(0.005 * span, 2.0)
    if abs(fa.mean() - fb.mean()) > tol or np.any(np.abs(qa - qb) > tol):
        out.append(f"{name}: levels differ (mean {fa.mean():.2f} vs {fb.mean():.2f})")
        return
    # Scene: the brightness-weighted centre of the light above the median agrees to
    # 0.05 px (re-drawn noise moves it by ~0.001 px on these frames).
    ca = _light_centre(fa - qa[1])
    cb = _light_centre(fb - qb[1])
    if np.hypot(*(ca - cb)) > 0.05:
        out.append(f"{name}: light centre {ca.round(3)} vs {cb.round(3)} px")


def _light_centre(f: np.ndarray) -> np.ndarray:
    w = np.clip(f, 0.0, None)
    total = max(float(w.sum()), 1e-12)
    rows, cols = np.indices(w.shape)
    return np.array([(w * cols).sum() / total, (w * rows).sum() / total])


def campaign_differences(a: str | Path, b: str | Path) -> list[str]:
    """How two simulated campaign folders differ in content (empty when they agree).

    TOML and JSON are parsed and compared numerically (:data:`REL_TOL`), the observations
    CSV column by column (:data:`CSV_ATOL`, :data:`STEPS_ATOL`), PNG frames by pixel
    statistics; any other file byte for byte. Each difference names the file and where.
    """
    a, b = Path(a), Path(b)
    fa = {p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file()}
    fb = {p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file()}
    out: list[str] = []
    if fa != fb:
        out.append(f"files differ: {sorted(fa ^ fb)}")
    for name in sorted(fa & fb):
        pa, pb = a / name, b / name
        if name.endswith((".toml", ".json")):
            parse = tomllib.loads if name.endswith(".toml") else json.loads
            found: list[str] = []
            _compare(parse(pa.read_text("utf-8")), parse(pb.read_text("utf-8")), "", found)
            out.extend(f"{name}: {d}" for d in found)
        elif name.endswith(".csv"):
            _csv_differences(pa, pb, name, out)
        elif name.endswith(".png"):
            _image_differences(pa, pb, name, out)
        elif pa.read_bytes() != pb.read_bytes():
            out.append(f"{name}: bytes differ")
    return out
