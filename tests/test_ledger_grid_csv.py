"""Hourly grid carbon intensity from a CSV (issue 18, item 3): each entry is charged at
the hour its energy was used; the annual preset outside the series; the CSV export says
which. Reference values are worked by hand from the rows written here (g → kg: /1000)."""

from __future__ import annotations

import csv

import pytest

from heliostat.errors import InputError
from heliostat.ledger.book import GainRecord, LedgerEntry, summarise, write_csv
from heliostat.ledger.carbon import GRID_PRESETS
from heliostat.ledger.grid_series import read_grid_csv

# Electricity Maps' export layout: naive times in a column that says UTC, two intensities.
EM = (
    "Datetime (UTC),Country,Carbon Intensity gCO₂eq/kWh (direct),"
    "Carbon Intensity gCO₂eq/kWh (LCA),Renewable Percentage\n"
    "2025-06-21 10:00:00,DE,300,400,50\n"
    "2025-06-21 11:00:00,DE,200,250,60\n"
    "2025-06-21 12:00:00,DE,100,150,70\n"
)


def _entry(ts: str, kwh: float) -> LedgerEntry:
    return LedgerEntry(stage="calibration", method="classical", energy_j=kwh * 3.6e6,
                       source="given", timestamp_utc=ts)  # fmt: skip


@pytest.fixture()
def series(tmp_path):
    p = tmp_path / "DE_2025_hourly.csv"
    p.write_text(EM, encoding="utf-8")
    return read_grid_csv(p, GRID_PRESETS["us"])


def test_reads_export_layout_and_charges_by_hour(series):
    # The LCA column is preferred (life-cycle, like the presets): 400, 250, 150 g/kWh.
    assert series.intensity_at("2025-06-21T10:30:00+00:00") == (
        0.4,
        "hourly: csv:DE_2025_hourly.csv",
    )
    assert series.intensity_at("2025-06-21T13:00:00+02:00")[0] == 0.25  # 11:00 UTC
    assert series.intensity_at("2025-06-21T12:59:59+00:00")[0] == 0.15
    k, basis = series.intensity_at("2025-06-21T13:00:00+00:00")  # after the last hour
    assert k == GRID_PRESETS["us"].kg_per_kwh and basis == "annual fallback: us"
    with pytest.raises(ValueError, match="UTC offset"):
        series.intensity_at("2025-06-21T10:30:00")


def test_summary_and_export_use_the_hour(series, tmp_path):
    es = [
        _entry("2025-06-21T10:15:00+00:00", 2.0),  # 2 kWh × 0.40 = 0.80 kg
        _entry("2025-06-21T12:45:00+00:00", 1.0),  # 1 kWh × 0.15 = 0.15 kg
        _entry("2025-06-22T12:00:00+00:00", 1.0),  # outside: 1 kWh × 0.4327 (US preset)
    ]
    g = GainRecord("p", "", 10, 3.0, 0.5, 1.0, 10.0, 3650.0, 4000.0, 4000.0,
                   timestamp_utc="2025-06-21T12:00:00+00:00")  # fmt: skip
    s = summarise(es, [g], series)
    us = GRID_PRESETS["us"].kg_per_kwh
    a = s.payback[0]
    assert a.compute_kg_co2e == pytest.approx(0.80 + 0.15 + us)
    assert a.payback_hours == pytest.approx((0.95 + us) / (4000.0 / 4000.0))
    assert any("2 entries at hourly" in n and "1 entries at annual fallback: us" in n
               for n in s.notes)  # fmt: skip
    out = tmp_path / "e.csv"
    write_csv(out, es, series)
    rows = list(csv.DictReader(open(out)))
    assert [r["grid_basis"] for r in rows] == [
        "hourly: csv:DE_2025_hourly.csv", "hourly: csv:DE_2025_hourly.csv",
        "annual fallback: us",
    ]  # fmt: skip
    assert float(rows[0]["emissions"]) == pytest.approx(0.80)
    assert float(rows[1]["grid_kg_co2e_per_kwh"]) == pytest.approx(0.15)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("time,gCO2e/kWh\n2025-06-21 10:00,100\n", r":2: timestamp .* no UTC offset"),
        ("timestamp,gCO2e/kWh\n2025-06-21T10:00Z,abc\n", r":2: .* is not a number"),
        ("timestamp,gCO2e/kWh\n2025-06-21T10:00Z,-5\n", r":2: .* must be >= 0"),
        ("timestamp,gCO2e/kWh\n2025-06-21T11:00Z,1\n2025-06-21T10:00Z,1\n", r":3: .*increase"),
        ("timestamp,load_mw\n2025-06-21T10:00Z,1\n", "no intensity column"),
    ],
)
def test_bad_csv_names_file_and_line(tmp_path, text, match):
    p = tmp_path / "g.csv"
    p.write_text(text)
    with pytest.raises(InputError, match=match):
        read_grid_csv(p, GRID_PRESETS["us"])
