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
    assert [r["heliostat"] for r in res] == ["AA39", "H001"]  # sorted by id
    for r in res:
        for key in ("n_points", "parameters", "rms_before_mrad", "rms_after_mrad", "loo_rms_mrad"):
            assert key in r
        assert all(k.endswith(("_rad", "_m")) for k in r["parameters"])
        assert r["rms_after_mrad"] < 0.4 < 2.0 < r["rms_before_mrad"]
    assert res[1]["n_points"] == 29  # one row rejected
    assert f"corrections of 2 heliostat(s) written to {out}" in cap.err
    doc = read_corrections(out)
    assert [h["heliostat"] for h in doc["heliostats"]] == ["AA39", "H001"]
    sp = doc["heliostats"][0]["setpoints"][0]
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


def _text_run(obs_csv, capsys, *extra):
    rc = main(["calibrate", str(obs_csv), "--field", FIELD_PATH, "--kfold", "0", *extra])
    cap = capsys.readouterr()
    return rc, cap.out.splitlines(), cap.err


def test_text_output_sorted_with_summary_line(obs_csv, capsys):
    rc, lines, _ = _text_run(obs_csv, capsys, "--loo", "hat")
    assert rc == 0
    rows = [ln.split()[0] for ln in lines[2:4]]
    assert rows == ["AA39", "H001"]
    summary = lines[-1]
    assert summary.startswith("summary: 2 of 2 heliostat(s) fitted;")
    # The figures of the summary are the table's: median of two values is their mean.
    after = sorted(float(ln.split()[5]) for ln in lines[2:4])
    median = float(summary.split("RMS after fit median ")[1].split(",")[0])
    assert median == pytest.approx(sum(after) / 2, rel=5e-3)  # 4-digit table, 3-digit line


def test_summary_line_counts_failures_by_kind():
    from heliostat.calibration.fit import FitResult
    from heliostat.commands.calibrate import summary_line
    from heliostat.kinematics import KinematicErrors

    z = KinematicErrors.zeros("azel")
    ok = [
        FitResult(f"H{i}", "azel", (), z, {}, True, rms_after_mrad=v, loo_rms_mrad=2 * v)
        for i, v in enumerate([0.1, 0.2, 0.3, 0.4, 10.0], start=1)
    ]
    bad = [
        FitResult("H10", "azel", (), z, {}, False, "2 observations give 4 residuals, too few"),
        FitResult("H9", "azel", (), z, {}, False, "least_squares did not converge: x"),
    ]
    line = summary_line([*ok, *bad])
    assert line.startswith("summary: 5 of 7 heliostat(s) fitted, 2 failed (")
    assert "did not converge: H9" in line and "too few records: H10" in line
    # numpy's linear-interpolation p95 of [0.1, 0.2, 0.3, 0.4, 10]: 0.4 + 0.8 * 9.6 = 8.08
    assert "RMS after fit median 0.3, p95 8.08 mrad" in line
    assert "LOO RMS median 0.6, p95 16.2 mrad" in line


def test_poorly_identifiable_collapsed_and_suggestion_round_trips(obs_csv, capsys):
    """One warning line names both heliostats (one azel, one linear drive) when their
    default sets are fitted as they are (--no-select); passing its suggested --params back
    fits every heliostat with nothing left to warn about."""
    rc, lines, _ = _text_run(obs_csv, capsys, "--loo", "none", "--no-select")
    assert rc == 0
    assert not any("poorly identifiable" in ln and ": warning:" in ln for ln in lines)
    (weak,) = [ln for ln in lines if "poorly identifiable" in ln]
    assert "2 heliostat(s)" in weak and "AA39, H001" in weak
    suggested = weak.split("--params ")[1].split()[0]
    rc, lines, err = _text_run(obs_csv, capsys, "--loo", "none", "--params", suggested)
    assert rc == 0, err
    assert not any("poorly identifiable" in ln for ln in lines)
    assert lines[-1].startswith("summary: 2 of 2 heliostat(s) fitted")


def test_params_of_another_drive_apply_to_that_drive_only(obs_csv, capsys):
    # axis1_tilt_e_rad is an azel (H001) parameter, actuator2_stroke_m a linear (AA39) one.
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
            "zero_offsets,axis1_tilt_e_rad,actuator2_stroke_m,azel:mirror_collimation_rad",
        ]
    )
    cap = capsys.readouterr()
    assert rc == 0
    res = {r["heliostat"]: set(r["parameters"]) for r in json.loads(cap.out)}
    assert res["H001"] == {
        "axis1_zero_rad",
        "axis2_zero_rad",
        "axis1_tilt_e_rad",
        "mirror_collimation_rad",
    }
    assert res["AA39"] == {"axis1_zero_rad", "axis2_zero_rad", "actuator2_stroke_m"}
    assert "axis1_tilt_e_rad not of drive 'linear': ignored for AA39" in cap.err
    assert "actuator2_stroke_m not of drive 'azel': ignored for H001" in cap.err
    # A name of no drive stays a one-line error.
    assert main(["calibrate", str(obs_csv), "--field", FIELD_PATH, "--params", "axis9_rad"]) == 2
    assert "'axis9_rad' is neither a parameter group nor a parameter of any drive" in (
        capsys.readouterr().err
    )
