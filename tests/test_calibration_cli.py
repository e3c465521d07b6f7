"""``heliostat calibrate``: JSON output, rejected rows on stderr, corrections file."""

import json

import numpy as np
import pandas as pd
import pytest

from heliostat.calibration import read_corrections
from heliostat.cli import main
from heliostat.config import load_field
from sim.observe import draw_true_errors, simulate_observations

FIELD_PATH = "tests/data/field_small.toml"
FIELD = load_field(FIELD_PATH)
TIMES = [
    d + pd.Timedelta(minutes=m)
    for d in pd.date_range("2025-03-01T00:00Z", periods=5, freq="1D")
    for m in np.linspace(420, 920, 6)
]


@pytest.fixture(scope="module")
def obs_csv(tmp_path_factory):
    rng = np.random.default_rng(31)
    frames = []
    for hid in ("H001", "AA39"):
        hel = FIELD.heliostats[hid]
        truth = draw_true_errors(hel.kinematics.drive, rng, translation_m=0.0)
        frames.append(
            simulate_observations(hel, truth, FIELD.targets["cal1"], FIELD.site, TIMES, rng)
        )
    df = pd.concat(frames, ignore_index=True)
    df.loc[3, "heliostat_id"] = "XX99"
    path = tmp_path_factory.mktemp("cli") / "obs.csv"
    df.to_csv(path, index=False)
    return path


def test_json_output_rejections_and_corrections_file(obs_csv, tmp_path, capsys):
    out = tmp_path / "corr.json"
    rc = main(
        [
            "calibrate",
            str(obs_csv),
            "--field",
            FIELD_PATH,
            "--json",
            "--loo",
            "hat",
            "--kfold",
            "0",
            "--out",
            str(out),
            "--at",
            "2025-03-06T10:00:00Z",
        ]
    )
    cap = capsys.readouterr()
    assert rc == 0
    assert "row 5" in cap.err and "XX99" in cap.err  # data row 3 is CSV line 5
    res = json.loads(cap.out)
    assert [r["heliostat"] for r in res] == ["H001", "AA39"]
    for r in res:
        for key in ("n_points", "parameters", "rms_before_mrad", "rms_after_mrad", "loo_rms_mrad"):
            assert key in r
        assert all(k.endswith(("_rad", "_m")) for k in r["parameters"])
        assert r["rms_after_mrad"] < 0.4 < 2.0 < r["rms_before_mrad"]
    assert res[0]["n_points"] == 29  # one row rejected
    doc = read_corrections(out)
    assert [h["heliostat"] for h in doc["heliostats"]] == ["H001", "AA39"]
    sp = doc["heliostats"][1]["setpoints"][0]
    assert sp["time_utc"] == "2025-03-06T10:00:00Z" and isinstance(sp["axis1_steps"], int)


def test_params_selects_groups(obs_csv, capsys):
    rc = main(
        [
            "calibrate",
            str(obs_csv),
            "--field",
            FIELD_PATH,
            "--json",
            "--loo",
            "none",
            "--kfold",
            "0",
            "--params",
            "zero_offsets,mirror_collimation_rad",
        ]
    )
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res[0]["parameters"]) == {
        "axis1_zero_rad",
        "axis2_zero_rad",
        "mirror_collimation_rad",
    }


def test_bad_params_and_missing_field_are_one_line_errors(obs_csv, capsys):
    assert main(["calibrate", str(obs_csv), "--field", FIELD_PATH, "--params", "wobble"]) == 2
    assert "wobble" in capsys.readouterr().err
    assert main(["calibrate", str(obs_csv)]) == 2
    assert "--field" in capsys.readouterr().err


def test_paint_directory(capsys):
    rc = main(
        [
            "calibrate",
            "--paint",
            "tests/data/paint/AA39",
            "--spot",
            "utis",
            "--json",
            "--kfold",
            "0",
        ]
    )
    cap = capsys.readouterr()
    assert rc == 0
    assert "199999-calibration-properties.json" in cap.err
    (r,) = json.loads(cap.out)
    assert r["heliostat"] == "AA39" and r["n_points"] == 36
    assert r["loo_rms_mrad"] is not None and 0.2 < r["loo_rms_mrad"] < 1.0
