"""The ledger book: amortisation, payback arithmetic, SQLite round trip, CSV, CLI."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import sqlite3

import pytest

from heliostat.cli import main
from heliostat.ledger.book import (
    CODECARBON_COLUMNS,
    SCHEMA_VERSION,
    GainRecord,
    LedgerBook,
    LedgerEntry,
    attributed_energy_j,
    increment_payback_hours,
    summarise,
)
from heliostat.ledger.carbon import GRID_PRESETS, CarbonIntensity

TS = "2025-06-21T12:00:00+00:00"


def entry(**kw):
    base = dict(
        stage="calibration", method="classical", energy_j=3.6e6, source="rapl", timestamp_utc=TS
    )
    base.update(kw)
    return LedgerEntry(**base)


def gain(method="", **kw):
    base = dict(
        point="test",
        method=method,
        n_heliostats=10,
        before_mrad=3.0,
        after_mrad=0.5,
        delta_t_k=5.0,
        thermal_gain_kwh_per_day=100.0,
        thermal_gain_kwh_per_year=36500.0,
        operating_hours_per_year=4000.0,
        co2_avoided_kg_per_year=8000.0,
        timestamp_utc=TS,
    )
    base.update(kw)
    return GainRecord(**base)


def test_entry_validation():
    with pytest.raises(ValueError, match="stage must be one of"):
        entry(stage="painting")
    with pytest.raises(ValueError, match="needs method 'ml'"):
        entry(stage="ml_training", method="classical", model_id="m")
    with pytest.raises(ValueError, match="needs a model_id"):
        entry(stage="ml_training", method="ml")
    with pytest.raises(ValueError, match="n_inferences >= 1"):
        entry(stage="ml_inference", method="ml", model_id="m")
    with pytest.raises(ValueError, match="energy_j"):
        entry(energy_j=-1.0)
    with pytest.raises(ValueError, match="source"):
        entry(source="")
    with pytest.raises(ValueError, match="UTC offset"):
        entry(timestamp_utc="2025-06-21T12:00:00")


def test_training_amortised_over_inferences():
    es = [
        entry(
            stage="ml_training",
            method="ml",
            model_id="m",
            energy_j=1000.0,
            expected_inferences=1000,
            pue=1.5,
        ),
        entry(stage="ml_inference", method="ml", model_id="m", energy_j=1.0, n_inferences=100),
        entry(stage="ml_inference", method="ml", model_id="m", energy_j=1.0, n_inferences=150),
        entry(stage="ml_training", method="ml", model_id="k", energy_j=50.0),  # no expectation
    ]
    j = attributed_energy_j(es)
    # 250 of the 1000 expected inferences are in this book: a quarter of 1000 J × PUE 1.5.
    assert j[0] == pytest.approx(1000.0 * 1.5 * 250 / 1000)
    assert j[1] == 1.0 and j[2] == 1.0
    assert j[3] == 50.0  # no expectation declared: charged in full
    # More inferences than expected: the whole training, never more.
    es2 = [
        es[0],
        entry(stage="ml_inference", method="ml", model_id="m", energy_j=1.0, n_inferences=5000),
    ]
    assert attributed_energy_j(es2)[0] == pytest.approx(1500.0)


def test_payback_arithmetic():
    grid = CarbonIntensity.from_kg_per_kwh(0.5)
    es = [
        entry(energy_j=3.6e6),  # 1 kWh classical, field-wide
        entry(stage="vision", energy_j=3.6e6, heliostat_id="H7"),  # 1 kWh for H7
        entry(stage="ml_inference", method="ml", model_id="m", energy_j=7.2e6, n_inferences=1),
    ]
    s = summarise(es, [gain()], grid)
    rows = {r.scope: r for r in s.payback}
    a = rows["all"]
    # 4 kWh → 2 kg at 0.5 kg/kWh; displaced 8000 kg over 4000 h = 2 kg/h → payback 1 h.
    assert a.compute_kwh == pytest.approx(4.0) and a.compute_kg_co2e == pytest.approx(2.0)
    assert a.payback_hours == pytest.approx(1.0)
    assert a.energy_return_ratio == pytest.approx(36500.0 / 4.0)
    assert rows["classical"].compute_kwh == pytest.approx(2.0)
    # ml: 2 kWh · 0.5 kg/kWh = 1 kg, repaid at 2 kg/h in 0.5 h.
    assert rows["ml"].payback_hours == pytest.approx(0.5)
    # Regression: a "per-heliostat (mean)" row divided both sides by N and so equalled
    # "all" by construction; it is gone, only heliostats with their own entries get a row.
    assert set(rows) == {"all", "classical", "ml", "H7"}
    # H7: its own 1 kWh + a tenth of the 3 kWh field-wide = 1.3 kWh; gain a tenth.
    h7 = rows["H7"]
    assert h7.compute_kwh == pytest.approx(1.3)
    assert h7.payback_hours == pytest.approx(1.3 * 0.5 / (800.0 / 4000.0))
    by = {(r["stage"], r["method"]): r for r in s.by_stage}
    assert by[("vision", "classical")]["compute_kwh"] == pytest.approx(1.0)
    # No gain: no payback rows; infinite payback when nothing is displaced.
    assert summarise(es, [], grid).payback == []
    z = summarise(es, [gain(co2_avoided_kg_per_year=0.0)], grid)
    assert math.isinf(z.payback[0].payback_hours)


def test_method_specific_gain_used():
    es = [entry(), entry(stage="ml_inference", method="ml", model_id="m", n_inferences=1)]
    gs = [gain("ml", co2_avoided_kg_per_year=16000.0), gain("classical")]
    rows = {r.scope: r for r in summarise(es, gs, GRID_PRESETS["us"]).payback}
    # ml's own gain displaces twice as much: half the payback time for the same energy.
    assert rows["ml"].payback_hours == pytest.approx(0.5 * rows["classical"].payback_hours)


def test_sqlite_round_trip_wal_and_schema(tmp_path):
    db = tmp_path / "history.sqlite"
    es = [
        entry(heliostat_id="H1", rel_uncertainty=0.05, cpu_j=3e6, ram_j=0.6e6, duration_s=2.0),
        entry(
            stage="ml_training", method="ml", model_id="m", expected_inferences=10, note="8xV100"
        ),
    ]
    with LedgerBook(db) as book:
        for e in es:
            book.add(e)
        book.add_gain(gain())
    # Someone else's table in the same file is left alone.
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE bridge_journal (x INTEGER)")
    con.commit()
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()
    with LedgerBook(db) as book:
        back = book.entries()
        gs = book.gains()
    assert back[0] == es[0]
    # NaN (uncertainty not known) != NaN, so compare it apart from the other fields.
    assert math.isnan(back[1].rel_uncertainty)
    assert dataclasses.replace(back[1], rel_uncertainty=0.0) == dataclasses.replace(
        es[1], rel_uncertainty=0.0
    )
    assert gs[0].co2_avoided_kg_per_year == 8000.0 and gs[0].n_heliostats == 10
    con = sqlite3.connect(db)
    ver = con.execute("SELECT value FROM ledger_meta WHERE key='schema_version'").fetchone()
    assert int(ver[0]) == SCHEMA_VERSION
    con.execute("UPDATE ledger_meta SET value='99' WHERE key='schema_version'")
    con.commit()
    con.close()
    with pytest.raises(ValueError, match="schema version 99 is newer"):
        LedgerBook(db)


def test_csv_matches_codecarbon_columns(tmp_path):
    book = LedgerBook(":memory:")
    book.add(entry(cpu_j=3e6, ram_j=0.6e6, energy_j=3.6e6, duration_s=3600.0, pue=1.5))
    out = tmp_path / "emissions.csv"
    assert book.export_csv(out, GRID_PRESETS["us"]) == 1
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    r = rows[0]
    # CodeCarbon's units: kWh, kg, W, s; energy and power include the PUE.
    assert float(r["energy_consumed"]) == pytest.approx(1.5)
    assert float(r["cpu_energy"]) == pytest.approx(1.25)
    assert float(r["cpu_power"]) == pytest.approx(1250.0)
    assert float(r["emissions"]) == pytest.approx(1.5 * 0.954 * 0.45359237)
    assert float(r["emissions_rate"]) == pytest.approx(float(r["emissions"]) / 3600.0)
    assert list(r)[: len(CODECARBON_COLUMNS)] == list(CODECARBON_COLUMNS)
    try:
        from codecarbon.output_methods.emissions_data import EmissionsData
    except ImportError:
        pytest.skip("codecarbon not installed: column names checked against our list only")

    theirs = [f.name for f in dataclasses.fields(EmissionsData)]
    # Every CodeCarbon-named column we write exists in CodeCarbon, in CodeCarbon's order.
    assert all(c in theirs for c in CODECARBON_COLUMNS)
    assert sorted(CODECARBON_COLUMNS, key=theirs.index) == list(CODECARBON_COLUMNS)


def test_cli_gain_add_summary_export(tmp_path, capsys):
    db = str(tmp_path / "h.sqlite")
    rc = main(
        [
            "ledger",
            "gain",
            "--before-mrad",
            "3",
            "--after-mrad",
            "0.5",
            "--db",
            db,
            "--method",
            "classical",
            "--json",
        ]
    )
    assert rc == 0
    g = json.loads(capsys.readouterr().out)
    assert g["delta_t_k"] > 0 and g["thermal_gain_kwh_per_day"] > 0
    assert g["co2_avoided_kg_per_day"] == pytest.approx(g["thermal_gain_kwh_per_day"] / 0.9 * 0.181)
    assert (
        main(
            [
                "ledger",
                "add",
                "--db",
                db,
                "--stage",
                "calibration",
                "--method",
                "classical",
                "--energy-kwh",
                "0.01",
                "--source",
                "given",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["ledger", "summary", "--db", db, "--grid", "california", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    a = s["payback"][0]
    assert a["scope"] == "all" and a["compute_kwh"] == pytest.approx(0.01)
    per_h = g["co2_avoided_kg_per_year"] / g["operating_hours_per_year"]
    assert a["payback_hours"] == pytest.approx(0.01 * 0.47 * 0.45359237 / per_h)
    assert main(["ledger", "summary", "--db", db]) == 0  # all presets, as a table
    txt = capsys.readouterr().out
    assert "renewable-cloud" in txt and "payback (plant operation)" in txt
    # Human units: the California payback (0.01 kWh given by hand, no stated uncertainty:
    # three figures; 2.13 g against ~8.2 kg/h ≈ 2.6e-4 h ≈ 0.94 s) reads in ms, not as
    # "2.6e-04 h"; the energy in kWh by magnitude.
    from heliostat.ledger.units import format_operating_hours

    assert format_operating_hours(a["payback_hours"]).endswith(" ms")
    assert format_operating_hours(a["payback_hours"]) in txt and "0.01 kWh" in txt
    assert main(["ledger", "export", "--db", db, "--csv", str(tmp_path / "e.csv")]) == 0
    # Errors are one line with exit code 2.
    assert main(["ledger", "summary", "--db", str(tmp_path / "missing.sqlite")]) == 2
    assert "no history database" in capsys.readouterr().err
    assert main(["ledger", "summary", "--db", db, "--grid", "mars"]) == 2
    assert main(["ledger", "gain", "--before-mrad", "-1", "--after-mrad", "0.5"]) == 2
    assert "before_mrad" in capsys.readouterr().err


def test_cli_gain_from_field_config(capsys):
    rc = main(
        [
            "ledger",
            "gain",
            "--before-mrad",
            "3",
            "--after-mrad",
            "0.5",
            "--site",
            "tests/data/field_small.toml",
            "--json",
        ]
    )
    assert rc == 0
    g = json.loads(capsys.readouterr().out)
    assert g["n_heliostats"] == 3 and g["site"] == "Test plant"
    # A 5 m target at ~100 m catches nearly all of a 3 mrad beam before and after.
    assert 0.99 < g["intercept_before"] <= g["intercept_after"] <= 1.0


def test_training_expected_but_never_used_is_charged_in_full_not_zero():
    # Regression: expected_inferences > 0 with no inference logged charged 0 J
    # (0 used / 1000 expected). Reference: the entry's own energy × PUE, by hand.
    es = [
        entry(
            stage="ml_training", method="ml", model_id="m", energy_j=500.0,
            expected_inferences=1000, pue=1.2,
        ),
    ]  # fmt: skip
    notes: list[str] = []
    assert attributed_energy_j(es, notes)[0] == pytest.approx(600.0)
    assert len(notes) == 1 and "'m'" in notes[0] and "in full" in notes[0]
    s = summarise(es, [gain("ml")], CarbonIntensity.from_kg_per_kwh(0.5))
    assert any("charged in full" in n for n in s.notes)
    assert {r.scope: r for r in s.payback}["all"].compute_kwh == pytest.approx(600.0 / 3.6e6)


def test_ml_charged_against_its_increment_over_classical():
    # Regression: ML's compute was set only against the whole gain from "before".
    # Hand-worked: ML 3 kWh, classical 1 kWh at 0.5 kg/kWh → ML's extra 1 kg CO2e.
    # Gains: ML displaces 9000 kg/yr, classical 8000 kg/yr over 4000 h → extra 0.25 kg/h,
    # so the increment pays back in 1 / 0.25 = 4 h; extra heat 40000 − 36500 kWh/yr
    # against 2 kWh: ratio 1750.
    grid = CarbonIntensity.from_kg_per_kwh(0.5)
    es = [
        entry(energy_j=3.6e6),
        entry(stage="ml_inference", method="ml", model_id="m", energy_j=3 * 3.6e6,
              n_inferences=1),
    ]  # fmt: skip
    gs = [
        gain("classical"),
        gain("ml", co2_avoided_kg_per_year=9000.0, thermal_gain_kwh_per_year=40000.0),
    ]
    rows = {r.scope: r for r in summarise(es, gs, grid).payback}
    inc = rows["ml over classical"]
    assert inc.against == "classical calibration"
    assert inc.compute_kwh == pytest.approx(2.0) and inc.compute_kg_co2e == pytest.approx(1.0)
    assert inc.payback_hours == pytest.approx(4.0)
    assert inc.energy_return_ratio == pytest.approx(3500.0 / 2.0)
    # ML cheaper and no worse: pays back at once (not "never", as bench compare said).
    es_cheap = [es[0], dataclasses.replace(es[1], energy_j=0.5 * 3.6e6)]
    inc2 = {r.scope: r for r in summarise(es_cheap, gs, grid).payback}["ml over classical"]
    assert inc2.payback_hours == 0.0 and inc2.verdict.startswith("at once")


def test_increment_payback_verdicts():
    # Closed form: d_kg / d_per_h when both are positive; the other three quadrants.
    assert increment_payback_hours(2.0, 0.5) == (4.0, "pays back")
    assert increment_payback_hours(-1.0, 0.0)[0] == 0.0
    assert math.isinf(increment_payback_hours(1.0, 0.0)[0])
    h, why = increment_payback_hours(-1.0, -0.1)
    assert math.isinf(h) and why.startswith("never") and "saves 1 kg" in why


def test_energy_return_ratio_matches_periods_and_uncertainty_shown():
    # Regression: a year of heat was divided by one run's electricity. With 4 runs a year
    # the year's compute is 4 × 4 kWh: 36500 / 16 (hand-worked).
    grid = CarbonIntensity.from_kg_per_kwh(0.5)
    es = [
        entry(energy_j=3.6e6, rel_uncertainty=0.5),
        entry(energy_j=3 * 3.6e6, rel_uncertainty=0.05),
    ]
    a = summarise(es, [gain()], grid, runs_per_year=4.0).payback[0]
    assert a.runs_per_year == 4.0
    assert a.energy_return_ratio == pytest.approx(36500.0 / 16.0)
    # Correlated meters: σ's add, (0.5·1 + 0.05·3)/4 = 0.1625 (hand-worked).
    assert a.compute_rel_uncertainty == pytest.approx(0.1625)
    with pytest.raises(ValueError, match="runs_per_year"):
        summarise(es, [gain()], grid, runs_per_year=0.0)
