"""PAINT's benchmark dataset splits, re-implemented (numpy/pandas; no paint-csp import).

The definitions are paint-csp 3.1.0's ``paint.data.dataset_splits.DatasetSplitter``; a
test runs that class on the same metadata in a separate interpreter and compares
(``tests/test_paint_splits.py``). Per heliostat, on the calibration metadata (``Azimuth``
and ``Elevation`` of the sun in PAINT's convention [deg], ``DateTime`` UTC):

``azimuth``
    the ``training_size`` records of smallest azimuth train, the ``validation_size`` of
    largest validate, the rest test (sorted by azimuth, then time).
``solstice``
    the ``training_size`` records nearest (in time) to a winter solstice (21 Dec 12:00)
    train, the ``validation_size`` nearest to a summer solstice (21 Jun 12:00) validate,
    the rest test. A record can be near both: the validation label then wins, as in PAINT.
``balanced``
    k-means (k = ``validation_size``, scikit-learn's k-means++ seeding with
    ``random_state=42``, Lloyd iterations) on (azimuth, elevation); one random record
    per cluster validates, another tests (clusters of one are filled from the pool),
    ``training_size`` random others train (Python's ``random`` seeded 42); the rest is
    dropped.
``high_variance``
    the mean distance to the 3 nearest other records in (azimuth, elevation); the
    ``validation_size`` largest validate, the next ``validation_size`` test, the
    following ``training_size`` train; the rest is dropped.

Heliostats with fewer than ``training_size + 2 * validation_size`` records are dropped.
The random draws reproduce PAINT's exactly only with integer record ids (Python's set
order of integers is deterministic, as in PAINT, which reads the ids as integers).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import pandas as pd

from heliostat.errors import InputError

#: Split types (paint_mappings ``AZIMUTH_SPLIT`` … ``HIGH_VARIANCE_SPLIT``).
SPLITS = ("azimuth", "solstice", "balanced", "high_variance")
#: Labels (``TRAIN_INDEX``, ``VALIDATION_INDEX``, ``TEST_INDEX``).
TRAIN, VALIDATION, TEST = "train", "validation", "test"
#: Metadata columns (``HELIOSTAT_ID``, ``AZIMUTH``, ``ELEVATION``, ``DATETIME``).
COL_HELIOSTAT, COL_AZIMUTH, COL_ELEVATION, COL_TIME = (
    "HeliostatId",
    "Azimuth",
    "Elevation",
    "DateTime",
)
SEED = 42  # PAINT's random_state / random.seed


@dataclass(frozen=True, slots=True)
class SplitResult:
    """Splits of every heliostat kept.

    Attributes
    ----------
    split : pandas.Series
        Record id → ``"train"``, ``"validation"`` or ``"test"`` (records not used are
        absent), named ``Split``; index named ``Id``.
    heliostat : pandas.Series
        Record id → heliostat id, for the same records.
    dropped : tuple of str
        Heliostats with too few records.
    """

    split: pd.Series
    heliostat: pd.Series
    dropped: tuple[str, ...]


def _solstice_distance_s(t: pd.Timestamp, month: int) -> float:
    """Seconds from ``t`` to the nearest 21st of ``month`` 12:00 (that year, the one
    before, the one after)."""
    return min(
        abs((t - pd.Timestamp(year=t.year + dy, month=month, day=21, hour=12)).total_seconds())
        for dy in (0, 1, -1)
    )


def _azimuth(h: pd.DataFrame, n_train: int, n_val: int) -> pd.Series:
    h = h.sort_values(by=[COL_AZIMUTH, COL_TIME])
    out = pd.Series(TEST, index=h.index)
    out.loc[h.head(n_train).index] = TRAIN
    out.loc[h.tail(n_val).index] = VALIDATION
    return out


def _solstice(h: pd.DataFrame, n_train: int, n_val: int) -> pd.Series:
    h = h.assign(
        _w=[_solstice_distance_s(t, 12) for t in h[COL_TIME]],
        _s=[_solstice_distance_s(t, 6) for t in h[COL_TIME]],
    )
    out = pd.Series(TEST, index=h.index)
    out.loc[h.sort_values(by=["_w", COL_TIME]).head(n_train).index] = TRAIN
    by_summer = h.sort_values(by=["_s", COL_TIME]).index
    out.loc[by_summer[:n_val]] = VALIDATION
    return out.loc[by_summer]  # PAINT's row order


def _sq_distances(a: np.ndarray, b: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
    """Squared distances as scikit-learn's ``_euclidean_distances`` computes them
    (−2ab + a² + b², clipped at 0), so that near-ties fall the same way."""
    d = -2.0 * (a @ b.T)
    d += np.einsum("ij,ij->i", a, a)[:, None]
    d += b_sq[None, :]
    return np.maximum(d, 0.0, out=d)


def kmeans_labels(x: np.ndarray, k: int, seed: int = SEED, max_iter: int = 300) -> np.ndarray:
    """Cluster labels of scikit-learn's ``KMeans(n_clusters=k, random_state=seed)``
    (k-means++ seeding with 2 + ⌊ln k⌋ local trials, one initialisation, Lloyd
    iterations to strict convergence or a centre shift ≤ 1e-4 × mean variance).

    Parameters
    ----------
    x : ndarray of shape (n, d)
    k : int
    """
    x = np.asarray(x, dtype=float)
    n = x.shape[0]
    if not 1 <= k <= n:
        raise InputError(f"k-means: need 1 <= k <= n records, got k={k}, n={n}")
    tol = float(np.mean(np.var(x, axis=0))) * 1e-4
    x = x - x.mean(axis=0)
    x_sq = np.einsum("ij,ij->i", x, x)
    rs = np.random.RandomState(seed)
    w = np.ones(n)
    trials = 2 + int(np.log(k))
    centers = np.empty((k, x.shape[1]))
    first = rs.choice(n, p=w / w.sum())
    centers[0] = x[first]
    closest = _sq_distances(centers[0:1], x, x_sq)
    pot = closest @ w
    for c in range(1, k):
        vals = rs.uniform(size=trials) * pot
        cand = np.searchsorted(np.cumsum(w * closest, dtype=np.float64), vals)
        np.clip(cand, None, closest.size - 1, out=cand)
        d = _sq_distances(x[cand], x, x_sq)
        np.minimum(closest, d, out=d)
        pots = d @ w.reshape(-1, 1)
        best = int(np.argmin(pots))
        pot = pots[best]
        closest = d[best]
        centers[c] = x[cand[best]]
    closest = closest.ravel()

    def assign(cs: np.ndarray) -> np.ndarray:
        d = np.einsum("ij,ij->i", cs, cs)[None, :] - 2.0 * (x @ cs.T)
        return np.argmin(d, axis=1).astype(np.int32)

    labels_old = np.full(n, -1, dtype=np.int32)
    labels = labels_old
    strict = False
    for _ in range(max_iter):
        labels = assign(centers)
        counts = np.bincount(labels, minlength=k).astype(float)
        sums = np.zeros_like(centers)
        np.add.at(sums, labels, x)
        empty = np.flatnonzero(counts == 0)
        if empty.size:  # scikit-learn's _relocate_empty_clusters_dense
            dist = ((x - centers[labels]) ** 2).sum(axis=1)
            far = np.argpartition(dist, -empty.size)[: -empty.size - 1 : -1]
            for new_id, idx in zip(empty, far, strict=True):
                old_id = labels[idx]
                sums[old_id] -= x[idx]
                sums[new_id] = x[idx]
                counts[new_id] = 1.0
                counts[old_id] -= 1.0
        new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1.0)[:, None], centers)
        shift = float(((new - centers) ** 2).sum())
        centers = new
        if np.array_equal(labels, labels_old):
            strict = True
            break
        if shift <= tol:
            break
        labels_old = labels
    if not strict:
        labels = assign(centers)
    return labels


def _balanced(h: pd.DataFrame, n_train: int, n_val: int) -> pd.Series:
    labels = kmeans_labels(h[[COL_AZIMUTH, COL_ELEVATION]].to_numpy(), n_val)
    rng = random.Random(SEED)  # PAINT: random.seed(42) before the draws
    val: dict = {}
    test: dict = {}
    for label, group in h.assign(_c=labels).groupby("_c"):
        idx = list(group.index)
        if idx:
            val[label] = rng.choice(idx)
        if len(idx) >= 2:
            test[label] = rng.choice([i for i in idx if i != val[label]])
    all_idx = set(h.index)
    used = set(val.values()) | set(test.values())
    missing = n_val - len(test)
    if missing > 0:
        pool = list(all_idx - used)
        rng.shuffle(pool)
        for i in range(missing):
            test[f"extra_{i}"] = pool[i]
    v, t = list(val.values()), list(test.values())
    training_pool = list(all_idx - (set(v) | set(t)))
    rng.shuffle(training_pool)
    tr = training_pool[:n_train]
    out = pd.Series("", index=h.index)
    out.loc[v] = VALIDATION
    out.loc[t] = TEST
    out.loc[tr] = TRAIN
    return out.loc[v + t + tr]


def _high_variance(h: pd.DataFrame, n_train: int, n_val: int, n_neighbors: int = 3) -> pd.Series:
    x = h[[COL_AZIMUTH, COL_ELEVATION]].to_numpy(dtype=float)
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2))
    d.sort(axis=1)
    avg = d[:, 1 : n_neighbors + 1].mean(axis=1)
    order = h.assign(_a=avg).sort_values(by="_a", ascending=False).index
    v = order[:n_val]
    t = order[n_val : 2 * n_val]
    tr = order[2 * n_val : n_train + 2 * n_val]
    out = pd.Series("", index=h.index)
    out.loc[v] = VALIDATION
    out.loc[t] = TEST
    out.loc[tr] = TRAIN
    return out.loc[list(v) + list(t) + list(tr)]


def dataset_splits(
    metadata: pd.DataFrame, split: str, training_size: int, validation_size: int
) -> SplitResult:
    """PAINT's benchmark split of every heliostat in ``metadata``.

    Parameters
    ----------
    metadata : pandas.DataFrame
        One row per record, index the record id; columns ``HeliostatId``, ``Azimuth``
        (PAINT convention: from south, positive toward east) [deg], ``Elevation`` [deg],
        ``DateTime`` (UTC; tz-aware or naive UTC).
    split : {"azimuth", "solstice", "balanced", "high_variance"}
    training_size, validation_size : int
        Records per heliostat for training and validation (at least as many test).

    Returns
    -------
    SplitResult

    Raises
    ------
    InputError
        For an unknown split, sizes below 1, missing columns, or no heliostat left.
    """
    if split not in SPLITS:
        raise InputError(f"--split: expected one of {', '.join(SPLITS)}, got {split!r}")
    if training_size < 1 or validation_size < 1:
        raise InputError(
            f"--train-size/--val-size: expected at least 1, got {training_size}/{validation_size}"
        )
    cols = (COL_HELIOSTAT, COL_AZIMUTH, COL_ELEVATION, COL_TIME)
    missing = [c for c in cols if c not in metadata.columns]
    if missing:
        raise InputError(f"record metadata: column(s) {', '.join(missing)} missing")
    md = metadata.loc[:, list(cols)].copy()
    # PAINT reads the record ids as integers; the balanced split's draws depend on the
    # order of Python sets of ids, deterministic for integers only.
    as_str = md.index.astype(str)
    numeric = bool(len(md)) and all(i.isdigit() for i in as_str)
    if numeric:
        md.index = pd.Index([int(i) for i in as_str], name=md.index.name)
    t = pd.to_datetime(md[COL_TIME], utc=True)
    if split == "solstice" and t.isna().any():
        bad = list(md.index[t.isna()])[:5]
        raise InputError(f"solstice split: record time missing for {bad}")
    md[COL_TIME] = t.dt.tz_localize(None)  # PAINT works on naive UTC times
    md[COL_AZIMUTH] = md[COL_AZIMUTH].astype(float)
    md[COL_ELEVATION] = md[COL_ELEVATION].astype(float)
    need = training_size + 2 * validation_size
    sizes = md.groupby(COL_HELIOSTAT).size()
    dropped = tuple(str(h) for h in sizes.index[sizes < need])
    kept = md[md[COL_HELIOSTAT].map(sizes) >= need]
    if kept.empty:
        raise InputError(
            f"no heliostat has the {need} records a {split} split of {training_size} training "
            f"+ {validation_size} validation (+ at least {validation_size} test) needs "
            f"(most: {int(sizes.max()) if len(sizes) else 0})"
        )
    fn = {
        "azimuth": _azimuth,
        "solstice": _solstice,
        "balanced": _balanced,
        "high_variance": _high_variance,
    }[split]
    parts = [fn(h, training_size, validation_size) for _, h in kept.groupby(COL_HELIOSTAT)]
    s = pd.concat(parts).rename("Split")
    hel = kept.loc[s.index, COL_HELIOSTAT].astype(str)
    if numeric:
        s.index = s.index.astype(str)
        hel.index = s.index
    s.index.name = hel.index.name = "Id"
    return SplitResult(s, hel, dropped)
