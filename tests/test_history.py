"""The campaign's history tables and ``heliostat history``: record, fits over time, drift."""

from __future__ import annotations

import argparse
import io
import json
import math
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from heliostat.calibration.fit import FitResult
from heliostat.campaign.history import (
    History,
    ObservationRecord,
    heliostat_record,
    parameter_changes,
)
from heliostat.commands import history as history_cmd
from heliostat.config import load_field
from heliostat.kinematics import KinematicErrors
from heliostat.kinematics.pointing import pointing_change
from heliostat.ledger.book import LedgerBook

DATA = Path(__file__).parent / "data"
NAMES = ("axis1_zero_rad", "axis2_zero_rad", "mirror_collimation_rad")


def _fit(params: dict, rms_after: float = 0.1) -> FitResult:
    e = KinematicErrors.from_dict("azel", params)
    return FitResult(
        "H001",
        "azel",
        NAMES,
        e,
        {n: 1e-4 for n in NAMES},
        True,
        n_points=12,
        rms_before_mrad=5.0,
        rms_after_mrad=rms_after,
        loo_rms_mrad=rms_after * 1.2,
    )


def _obs(slot: str) -> ObservationRecord:
    return ObservationRecord(
        "H001",
        slot,
        slot,
        150.0,
        40.0,
        -40000,
        45000,
        "cal1",
        0.1,
        -0.2,
        0.1,
        0.0,
        49.8,
        0.002,
    )


def test_parameter_changes_in_display_units():
    ch = parameter_changes(
        {"axis1_zero_rad": 1e-3, "mirror_offset_e_m": 0.01},
        {"axis1_zero_rad": 2.5e-3, "axis2_zero_rad": -1e-3},
    )
    assert ch == pytest.approx(
        {"axis1_zero_mrad": 1.5, "mirror_offset_e_mm": -10.0, "axis2_zero_mrad": -1.0}
    )


@pytest.fixture
def db(tmp_path):
    """A history with three fits of H001: the second has drifted by 1 mrad in the
    elevation zero, the third is a failed fit, and a correction delivered."""
    path = tmp_path / "history.sqlite"
    cfg = load_field(DATA / "field_small.toml")
    kin, aim = cfg.heliostats["H001"].kinematics, cfg.targets["cal1"].centre_enu_m
    with LedgerBook(path):  # the ledger's tables live in the same file
        pass
    with History(path) as h:
        ids = [h.add_observation(_obs(f"2025-04-0{d}T10:00:00Z")) for d in (1, 2, 3)]
        assert h.add_observation(_obs("2025-04-01T10:00:00Z")) is None  # slot taken
        h.add_visit("H001", "2025-04-04T10:00:00Z", "2025-04-04T10:00:05Z", "no_spot", "cloud")
        p1 = {"axis1_zero_rad": 2e-3, "axis2_zero_rad": 0.0, "mirror_collimation_rad": 1e-3}
        p2 = {**p1, "axis2_zero_rad": 1e-3}
        f1 = h.add_fit(_fit(p1), "2025-04-01T12:00:00Z", ids[0])
        e1, e2 = (KinematicErrors.from_dict("azel", p) for p in (p1, p2))
        pc = pointing_change(kin, e1, e2, aim)
        change = (pc.beam_rms_mrad, pc.beam_max_mrad)
        f2 = h.add_fit(_fit(p2), "2025-04-03T12:00:00Z", ids[2], f1, change)
        bad = FitResult(
            "H001",
            "azel",
            NAMES,
            KinematicErrors.zeros("azel"),
            {},
            False,
            "3 observations give 6 residuals, too few",
            n_points=3,
        )
        h.add_fit(bad, "2025-04-04T12:00:00Z", ids[2])
        cid = h.propose(f2, "H001", "2025-04-03T12:01:00Z")
        h.set_correction(cid, "approved", "2025-04-03T12:01:00Z")

        class Out:
            heliostat, address, command_id, state, attempts, detail = (
                "H001",
                1,
                77,
                "confirmed",
                1,
                "",
            )

        h.add_delivery(cid, "2025-04-03T12:01:01Z", "/dev/ttyUSB0", Out)
        h.set_correction(cid, "sent", "2025-04-03T12:01:01Z")
    return path, change


def test_record_shows_fits_over_time_and_drift(db):
    path, change = db
    with History(path, readonly=True) as h:
        rec = heliostat_record(h, "H001")
        with pytest.raises(KeyError, match="no campaign record of heliostat 'H009'"):
            heliostat_record(h, "H009")
    assert rec["observations"]["count"] == 3
    assert rec["observations"]["skipped"] == {"no_spot": 1}
    assert [f["success"] for f in rec["fits"]] == [True, True, False]
    (d,) = rec["drift"]  # between the two successful fits only
    assert (d["from_fit"], d["to_fit"]) == (1, 2) and d["days"] == pytest.approx(2.0)
    assert d["parameter_changes"] == pytest.approx(
        {"axis1_zero_mrad": 0.0, "axis2_zero_mrad": 1.0, "mirror_collimation_mrad": 0.0}
    )
    assert d["pointing_change_rms_mrad"] == pytest.approx(change[0])
    assert 1.0 < d["pointing_change_max_mrad"] <= 2.0 + 1e-6  # see the test above
    assert [c["state"] for c in rec["corrections"]] == ["sent"]
    assert rec["deliveries"][0]["command_id"] == 77


def _cli(argv) -> str:
    p = argparse.ArgumentParser(prog="heliostat")
    history_cmd.register(p.add_subparsers(dest="command"))
    args = p.parse_args(argv)
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert args.func(args) == 0
    return buf.getvalue()


def test_history_cli(db, monkeypatch):
    path, _ = db
    out = json.loads(_cli(["history", "--db", str(path), "--heliostat", "H001", "--json"]))
    assert out["drift"][0]["parameter_changes"]["axis2_zero_mrad"] == pytest.approx(1.0)
    text = _cli(["history", "--db", str(path), "--heliostat", "H001"])
    assert "drift between successive fits" in text and "axis2_zero_mrad +1.000" in text
    assert "observations  3" in text and "no_spot 1" in text
    monkeypatch.setenv("HELIOSTAT_DB", str(path))  # the default database
    rows = json.loads(_cli(["history", "--json"]))["heliostats"]
    assert rows[0]["heliostat"] == "H001" and rows[0]["fits"] == 3
    assert rows[0]["drift_rms_mrad"] == pytest.approx(out["drift"][0]["pointing_change_rms_mrad"])
    assert rows[0]["last_delivery"] == "confirmed"
    assert "H001" in _cli(["history"])


def test_history_of_a_file_without_campaign_tables(tmp_path):
    path = tmp_path / "ledger-only.sqlite"
    with LedgerBook(path):
        pass
    assert "no campaign records" in _cli(["history", "--db", str(path)])
    with pytest.raises(ValueError, match="history database not found"):
        _cli(["history", "--db", str(tmp_path / "missing.sqlite")])


def test_fit_nan_figures_are_stored_as_null(tmp_path):
    with History(tmp_path / "h.sqlite") as h:
        r = _fit({"axis1_zero_rad": 1e-3})
        r = FitResult(
            **{s: getattr(r, s) for s in FitResult.__slots__ if s != "loo_rms_mrad"},
            loo_rms_mrad=math.nan,
        )
        h.add_fit(r, "2025-04-01T12:00:00Z", 0)
        assert h.fits()[0]["loo_rms_mrad"] is None
        assert np.isfinite(h.fits()[0]["rms_after_mrad"])


def test_observations_csv(db, tmp_path):
    import pandas as pd

    from heliostat.campaign.history import CSV_COLUMNS

    path, _ = db
    csv = tmp_path / "obs.csv"
    _cli(["history", "--db", str(path), "--heliostat", "H001", "--csv", str(csv), "--json"])
    df = pd.read_csv(csv, keep_default_na=False)
    assert tuple(df.columns) == CSV_COLUMNS
    assert len(df) == 3 and (df["frame"] == "").all()
    assert df["axis1_steps"].tolist() == [-40000] * 3  # integers stay integers
    with pytest.raises(KeyError, match="H009"):
        _cli(["history", "--db", str(path), "--heliostat", "H009", "--csv", str(csv)])
