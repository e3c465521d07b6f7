"""PAINT's benchmark splits: ours (heliostat.calibration.paint_splits) against paint-csp's
``DatasetSplitter`` run on the same metadata file in a separate interpreter, and the
splits' defining properties on their own."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from heliostat.calibration.paint_fetch import METADATA_COLUMNS, read_metadata
from heliostat.calibration.paint_splits import SPLITS, dataset_splits, kmeans_labels
from heliostat.errors import InputError

RUNNER = Path(__file__).resolve().parent / "data" / "paint_stac" / "run_paint_splits.py"


def make_metadata(path: Path, seed: int = 20260416) -> pd.DataFrame:
    """A calibration metadata CSV in paint-csp's format: 4 heliostats with 41, 26, 13 and
    6 records over two years, integer record ids, some repeated sun positions."""
    rng = np.random.default_rng(seed)
    rows = []
    rid = 70000
    for hid, n in (("AA23", 41), ("AB11", 26), ("BC07", 13), ("AA39", 6)):
        t0 = pd.Timestamp("2021-01-01", tz="UTC")
        days = np.sort(rng.integers(0, 730, n))
        for k, d in enumerate(days):
            t = t0 + pd.Timedelta(days=int(d), hours=float(rng.uniform(7, 16)))
            az, el = float(rng.uniform(-100, 100)), float(rng.uniform(5, 62))
            if hid == "AB11" and k % 5 == 4:  # a repeated sun position
                az, el = rows[-1]["Azimuth"], rows[-1]["Elevation"]
            row = {"Id": rid, "HeliostatId": hid, "Azimuth": az, "Elevation": el}
            row.update({c: 0.0 for c in METADATA_COLUMNS if c not in row and c != "DateTime"})
            row["DateTime"] = t.strftime("%Y-%m-%dT%H:%M:%SZ")
            rows.append(row)
            rid += int(rng.integers(1, 40))
    df = pd.DataFrame(rows).set_index("Id")
    df = df.sample(frac=1.0, random_state=3)  # the archive's order is not sorted
    df.to_csv(path)
    return df


def _paint_runner() -> list[str]:
    py = os.environ.get("PAINT_PYTHON")
    if py and Path(py).exists():
        return [py, str(RUNNER)]
    py = os.environ.get("PAINT_SPLITS_PYTHON")
    wheel = os.environ.get("PAINT_CSP_WHEEL")
    if py and wheel and Path(py).exists() and Path(wheel).exists():
        return [py, str(RUNNER), "--wheel", wheel]
    pytest.skip(
        "paint-csp's DatasetSplitter not at hand: set PAINT_PYTHON (a venv with paint-csp) "
        "or PAINT_SPLITS_PYTHON (pandas + scikit-learn) with PAINT_CSP_WHEEL"
    )


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize(("train", "val"), [(10, 3), (5, 4)])
def test_splits_match_paint_csp(tmp_path, split, train, val):
    runner = _paint_runner()
    csv = tmp_path / "calibration_metadata.csv"
    make_metadata(csv)
    res = subprocess.run(
        [*runner, str(csv), split, str(train), str(val)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    theirs = json.loads(res.stdout)
    ours = dataset_splits(read_metadata(csv), split, train, val)
    assert ours.split.to_dict() == theirs["split"]
    assert sorted(ours.dropped) == theirs["dropped"]
    # The same records in the same order (PAINT's output order per heliostat).
    assert list(ours.split.index) == theirs["order"]


@pytest.fixture()
def metadata(tmp_path):
    csv = tmp_path / "m.csv"
    make_metadata(csv)
    return read_metadata(csv)


def test_azimuth_split_orders_by_azimuth(metadata):
    r = dataset_splits(metadata, "azimuth", 10, 3)
    assert r.dropped == ("AA39", "BC07")  # 6 and 13 < 10 + 2*3
    for hid in ("AA23", "AB11"):
        ids = r.heliostat.index[r.heliostat == hid]
        az = metadata.loc[ids, "Azimuth"]
        lab = r.split.loc[ids]
        assert (lab == "train").sum() == 10 and (lab == "validation").sum() == 3
        assert az[lab == "train"].max() <= az[lab == "test"].min()
        assert az[lab == "test"].max() <= az[lab == "validation"].min()


def test_solstice_split_trains_nearest_to_winter(metadata):
    r = dataset_splits(metadata, "solstice", 5, 4)
    ids = r.heliostat.index[r.heliostat == "AA23"]
    t = metadata.loc[ids, "DateTime"]

    def to_winter(x):
        return min(abs((x - pd.Timestamp(year=x.year + d, month=12, day=21, hour=12, tz="UTC"))
                       .total_seconds()) for d in (-1, 0, 1))  # fmt: skip

    dw = t.map(to_winter)
    lab = r.split.loc[ids]
    assert (lab == "train").sum() == 5
    assert dw[lab == "train"].max() <= dw[lab == "test"].min()


def test_balanced_and_high_variance_sizes(metadata):
    for split in ("balanced", "high_variance"):
        r = dataset_splits(metadata, split, 5, 4)
        assert r.dropped == ("AA39",)
        for hid in ("AA23", "AB11", "BC07"):
            lab = r.split[r.heliostat == hid]
            assert lab.value_counts().to_dict() == {"train": 5, "validation": 4, "test": 4}
        # Deterministic (seeded as PAINT seeds it).
        again = dataset_splits(metadata, split, 5, 4)
        pd.testing.assert_series_equal(r.split, again.split)


def test_kmeans_finds_separated_blobs():
    rng = np.random.default_rng(7)
    centres = np.array([[-60.0, 20.0], [0.0, 55.0], [70.0, 15.0]])
    x = np.concatenate([c + rng.normal(0, 1.0, (15, 2)) for c in centres])
    labels = kmeans_labels(x, 3)
    # Each blob one label, three labels in all (blobs 30+ deg apart, spread 1 deg).
    assert {len(set(labels[i * 15 : (i + 1) * 15])) for i in range(3)} == {1}
    assert len(set(labels)) == 3


def test_bad_arguments(metadata):
    with pytest.raises(InputError, match="--split"):
        dataset_splits(metadata, "random", 5, 2)
    with pytest.raises(InputError, match="no heliostat has the 100 records"):
        dataset_splits(metadata, "azimuth", 90, 5)
    with pytest.raises(InputError, match="DateTime"):
        dataset_splits(metadata.drop(columns="DateTime"), "azimuth", 5, 2)
