"""``heliostat bench compare``: runs end to end, table == JSON, verdict follows the figures."""

from __future__ import annotations

import argparse
import json
import math

import pytest

from heliostat.bench.compare import CompareSettings, run_comparison, summary_rows


@pytest.fixture(scope="module")
def result():
    # Tiny but complete: 6 frames, 3 heliostats over 5 days (~30 points each).
    return run_comparison(CompareSettings(frames=6, heliostats=3, days=5, train_points=20))


def test_every_part_is_measured(result):
    s, p, g = result["spots"], result["pointing"], result["gain"]
    for m in ("classical", "ml"):
        assert s[m]["error_mm"]["n"] + s[m]["failed"] == 6
        assert s[m]["energy_per_frame_j"] > 0
        assert p["energy_per_calibration_j"][m] > 0
        assert set(g[m]["payback_hours"]) == {"us", "california", "renewable-cloud"}
        assert g[m]["compute_j_per_heliostat_calibration"] > 0
    # Calibration must improve on the uncalibrated (nominal) model by a wide margin:
    # simulated errors are 1-3 mrad per term vs 0.2 mrad measurement noise.
    rms = p["heldout_rms_mrad"]
    assert rms["classical"] < 0.25 * rms["nominal"]
    assert g["training_energy_j"] > 0
    assert math.isclose(
        g["training_energy_per_use_j"],
        (g["training_energy_j"] + g["training_data_energy_j"]) / g["amortised_over_uses"],
    )


def test_verdict_follows_the_numbers(result):
    s, rms, v = result["spots"], result["pointing"]["heldout_rms_mrad"], result["verdict"]
    ml_better = (
        s["ml"]["error_mm"]["median"] < s["classical"]["error_mm"]["median"]
        and s["ml"]["error_mm"]["p95"] < s["classical"]["error_mm"]["p95"]
    )
    assert v["default_method"] == ("onnx" if ml_better else "classical")
    assert v["hybrid_not_worse"] == (rms["ml"] <= rms["classical"] + 1e-9)
    if rms["ml"] > rms["classical"] + 1e-9:
        assert "WORSE" in v["text"]


def test_table_rows_are_the_json_figures(result):
    rows = {r["metric"] + "|" + r["unit"]: r for r in summary_rows(result)}
    r = rows["spot error median|mm"]
    assert r["classical"] == result["spots"]["classical"]["error_mm"]["median"]
    assert r["ml"] == result["spots"]["ml"]["error_mm"]["median"]
    r = rows["pointing held-out RMS after calibration|mrad"]
    assert r["ml"] == result["pointing"]["heldout_rms_mrad"]["ml"]


def test_cli_writes_json_and_plots(tmp_path, capsys):
    from heliostat.commands.bench import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["bench", "compare", "--frames", "3", "--train-points", "20", "--out", str(tmp_path),
         "--json"]
    )  # fmt: skip
    assert args.func(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["verdict"]["default_method"] in ("classical", "onnx")
    assert (tmp_path / "compare.json").exists()
    for f in ("spot_error_cdf.png", "pointing_heldout.png", "energy.png"):
        assert (tmp_path / f).stat().st_size > 1000


def test_cli_rejects_bad_arguments(tmp_path):
    from heliostat.commands.bench import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", "compare", "--frames", "0", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--frames: expected at least 1"):
        args.func(args)


def test_ml_charged_against_its_increment_and_point_labelled(result):
    # Regression (issue 18): ML that used less compute "never" paid back. The increment
    # follows the four quadrants of (extra compute, extra heat); no field given, so the
    # gain is the hypothetical reference point's and says so.
    g = result["gain"]
    assert g["hypothetical_point"] and "hypothetical" in g["operating_point"]
    inc = g["ml_increment"]
    d_j, d_th = inc["extra_compute_j_per_heliostat_calibration"], inc["extra_thermal_kwh_per_year"]
    for grid, h in inc["payback_hours"].items():
        if d_j <= 0 and d_th >= 0:
            assert h == 0.0 and inc["verdict"][grid].startswith("at once")
        elif d_th <= 0:
            assert math.isinf(h) and inc["verdict"][grid].startswith("never")
        else:
            assert 0 < h < math.inf
