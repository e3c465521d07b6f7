"""Whole-system energy (issue 18, item 4): the PC's idle power and the cameras over the
campaign, beside the metered marginal compute. Reference values worked by hand."""

from __future__ import annotations

import pytest

from heliostat.ledger.book import GainRecord, LedgerEntry, summarise
from heliostat.ledger.carbon import CarbonIntensity
from heliostat.ledger.system import SystemPower


def test_system_energy_hand_worked():
    # (30 W + 2 × 4 W) × 72 h = 2736 Wh = 2.736 kWh.
    sp = SystemPower(30.0, 4.0, 2)
    assert sp.watts == pytest.approx(38.0)
    assert sp.energy(72.0).kwh == pytest.approx(2.736)
    with pytest.raises(ValueError, match="pc_idle_w"):
        SystemPower(-1.0)
    with pytest.raises(ValueError, match="campaign_hours"):
        sp.energy(float("nan"))


def test_whole_system_row_beside_marginal():
    es = [LedgerEntry(stage="calibration", method="classical", energy_j=3.6e6, source="given",
                      timestamp_utc="2025-06-21T12:00:00+00:00")]  # fmt: skip
    g = GainRecord("p", "", 10, 3.0, 0.5, 1.0, 10.0, 3650.0, 4000.0, 8000.0,
                   timestamp_utc="2025-06-21T12:00:00+00:00")  # fmt: skip
    grid = CarbonIntensity.from_kg_per_kwh(0.5)
    sys_j = SystemPower(30.0, 4.0, 1).energy(100.0).joules  # 3.4 kWh
    rows = {r.scope: r for r in summarise(es, [g], grid, system_j=sys_j).payback}
    # marginal 1 kWh → 0.5 kg → 0.25 h at 2 kg/h; whole system 4.4 kWh → 2.2 kg → 1.1 h.
    assert rows["all"].payback_hours == pytest.approx(0.25)
    w = rows["whole system"]
    assert w.compute_kwh == pytest.approx(4.4) and w.compute_kg_co2e == pytest.approx(2.2)
    assert w.payback_hours == pytest.approx(1.1)
    assert "whole system" not in {r.scope for r in summarise(es, [g], grid).payback}
