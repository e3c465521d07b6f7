"""A history database read back in chunks of whole heliostats
(:meth:`History.iter_observations`), the streamed field fit from it, and the vectorised
``observations_from_frame`` on frames whose rows share times."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from heliostat.calibration import observations_from_frame
from heliostat.calibration.field import calibrate_field, calibrate_stream, make_jobs
from heliostat.campaign.history import History, ObservationRecord
from heliostat.config import FieldConfig, load_field
from heliostat.sun import sun_position
from sim.observe import draw_true_errors, simulate_observations

BASE = load_field("tests/data/field_small.toml")
TARGET = BASE.targets["cal1"]
TIMES = [
    d + pd.Timedelta(minutes=m)
    for d in pd.date_range("2025-03-01T00:00Z", periods=5, freq="1D")
    for m in np.linspace(420, 920, 6)
]
# Six copies of each template (H001 az-el, AA39 linear): ids sort as A00..A05, B00..B05.
FIELD = FieldConfig(
    BASE.site,
    BASE.targets,
    {
        f"{p}{k:02d}": dataclasses.replace(BASE.heliostats[t], id=f"{p}{k:02d}")
        for p, t in (("A", "H001"), ("B", "AA39"))
        for k in range(6)
    },
)
RECORD_FIELDS = [f.name for f in dataclasses.fields(ObservationRecord)]


def _frame(seed: int = 5) -> pd.DataFrame:
    """Every heliostat of FIELD observed at the same 30 times (times shared by rows);
    B03 keeps only 11 rows, so heliostats differ in size."""
    rng = np.random.default_rng(seed)
    frames = []
    for hel in FIELD.heliostats.values():
        truth = draw_true_errors(hel.kinematics.drive, rng, translation_m=0.0)
        df = simulate_observations(hel, truth, TARGET, FIELD.site, TIMES, rng)
        frames.append(df.iloc[:11] if hel.id == "B03" else df)
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return _frame()


def _records(df: pd.DataFrame) -> list[ObservationRecord]:
    out = []
    for row in df.to_dict("records"):
        vals = {k: row.get(k, "") for k in RECORD_FIELDS if k != "slot_utc"}
        vals["quality_flags"] = vals["quality_flags"] or ""
        vals["frame"] = vals["frame"] or ""
        out.append(ObservationRecord(slot_utc=row["time_utc"], **vals))
    return out


@pytest.fixture(scope="module")
def history(tmp_path_factory, frame):
    path = tmp_path_factory.mktemp("stream") / "history.sqlite"
    with History(path) as hist:
        # written in an order other than the ids', in two transactions
        recs = _records(frame.iloc[::-1])
        hist.add_observations(recs[: len(recs) // 2])
        hist.add_observations(recs[len(recs) // 2 :])
    return path


def _assert_same(a, b):
    assert a.heliostat_id == b.heliostat_id
    np.testing.assert_array_equal(a.steps, b.steps)
    # Stored as 8-byte REALs: spots, planes and sigma come back bit for bit.
    np.testing.assert_array_equal(a.spot_enu_m, b.spot_enu_m)
    np.testing.assert_array_equal(a.target_centre_enu_m, b.target_centre_enu_m)
    np.testing.assert_array_equal(a.target_normal_enu, b.target_normal_enu)
    np.testing.assert_array_equal(a.sigma_m, b.sigma_m)
    # The sun is recomputed from the time by SPA (vectorised transcendentals over another
    # set of times): equal to rounding, far below SPA's own 5e-6 rad.
    np.testing.assert_allclose(a.u_sun_enu, b.u_sun_enu, rtol=0, atol=1e-12)
    assert a.target_ids == b.target_ids
    assert a.times_utc == b.times_utc


@pytest.mark.parametrize("chunk", [1, 5, 7, 12, 100])
def test_chunks_hold_whole_heliostats_and_equal_the_originals(history, frame, chunk):
    original, rejected = observations_from_frame(frame, FIELD)
    assert rejected == []
    seen: list[str] = []
    with History(history, readonly=True) as hist:
        for obs, rej in hist.iter_observations(FIELD, chunk_heliostats=chunk):
            assert rej == []
            assert 1 <= len(obs) <= chunk
            seen.extend(obs)
            for hid, o in obs.items():
                # the written rows were reversed: the stored order is reversed too
                _assert_same(o, original[hid].subset(np.arange(len(o))[::-1]))
                assert np.all(np.diff(o.rows) > 0)  # by row id within a heliostat
    # each heliostat in exactly one chunk, in id order
    assert seen == sorted(FIELD.heliostats)
    assert len(original["B03"]) == 11


def test_rejected_rows_are_numbered_by_their_history_id(tmp_path, frame):
    df = frame.iloc[:3].copy()
    df.loc[1, "heliostat_id"] = "Z99"  # not in the field
    with History(tmp_path / "h.sqlite") as hist:
        ids = hist.add_observations(_records(df))
        chunks = list(hist.iter_observations(FIELD, chunk_heliostats=10))
    rejected = [r for _, rej in chunks for r in rej]
    assert [(r.row, r.reason) for r in rejected] == [
        (ids[1], "heliostat 'Z99' is not in the field config")
    ]
    assert sum(len(o) for obs, _ in chunks for o in obs.values()) == 2


def test_empty_history_yields_nothing_and_bad_chunk_size(tmp_path):
    with History(tmp_path / "h.sqlite") as hist:
        assert list(hist.iter_observations(FIELD)) == []
        with pytest.raises(ValueError, match="chunk_heliostats"):
            list(hist.iter_observations(FIELD, chunk_heliostats=0))


def test_stream_from_history_equals_the_field_fit(history, frame):
    """calibrate_stream over the history's chunks gives calibrate_field's results on the
    whole frame (batches are cut otherwise: equal to the batch stopping tolerance)."""
    kins = {h: FIELD.heliostats[h].kinematics for h in FIELD.heliostats}
    whole = calibrate_field(
        make_jobs(kins, observations_from_frame(frame, FIELD)[0]), "sequential", batch_min=0
    )
    got: dict = {}
    with History(history, readonly=True) as hist:
        chunks = (make_jobs(kins, obs) for obs, _ in hist.iter_observations(FIELD, 5))
        n = calibrate_stream(chunks, got.update, "sequential")
    assert n == len(FIELD.heliostats) == len(got)
    for hid, r in whole.items():
        g = got[hid]
        assert r.success and g.success
        names = r.names
        std = np.array([r.std[k] for k in names])
        diff = np.abs(g.errors.to_vector(names) - r.errors.to_vector(names)) / std
        # row order reversed and batched vs single fits: the optimisers stop within
        # 1e-3 standard errors of each other (field.py's note on batch tolerances)
        assert np.max(diff) < 1e-2, (hid, diff)


def test_observations_from_frame_sun_once_per_time_equals_per_row(frame):
    """Rows sharing times get the sun of their own time: as computed row by row."""
    obs, rejected = observations_from_frame(frame, FIELD)
    assert rejected == []
    for hid, o in obs.items():
        one = [sun_position(FIELD.site, [pd.Timestamp(t)]).u_sun_enu[0] for t in o.times_utc]
        # per-row SPA against the vectorised one: rounding only
        np.testing.assert_allclose(o.u_sun_enu, np.array(one), rtol=0, atol=1e-12)
        # and each heliostat alone gives the same arrays
        alone = observations_from_frame(frame[frame.heliostat_id == hid], FIELD)[0][hid]
        _assert_same(o, alone)
        np.testing.assert_array_equal(o.rows, np.flatnonzero(frame.heliostat_id == hid) + 2)


def test_observations_from_frame_bad_rows_keep_their_messages(frame):
    df = frame.astype(str)
    bad = df.iloc[:9].copy()
    bad.iloc[0, bad.columns.get_loc("heliostat_id")] = "NOPE"
    bad.iloc[1, bad.columns.get_loc("time_utc")] = "2025-03-01T10:00:00"
    bad.iloc[2, bad.columns.get_loc("time_utc")] = "garbageZ"
    bad.iloc[3, bad.columns.get_loc("axis1_steps")] = "1.5"
    bad.iloc[4, bad.columns.get_loc("sigma_m")] = "abc"
    bad.iloc[5, bad.columns.get_loc("target_id")] = "zz"
    bad.iloc[6, bad.columns.get_loc("sun_azimuth_deg")] = "10"
    bad.iloc[7, bad.columns.get_loc("time_utc")] = ""  # angles only: a valid row
    angles_again = bad.iloc[7:8]  # the same angles and steps: a duplicate
    n = len(df)
    got = observations_from_frame(pd.concat([df, bad, angles_again], ignore_index=True), FIELD)
    msgs = [(r.row, r.reason) for r in got[1]]
    line = n + 2  # the first bad row's line number
    assert msgs[:6] == [
        (line, "heliostat 'NOPE' is not in the field config"),
        (line + 1, "time_utc '2025-03-01T10:00:00' has no timezone (write e.g. ...Z)"),
        (line + 2, "time_utc 'garbageZ' is not an ISO 8601 time"),
        (line + 3, "axis1_steps/axis2_steps must be integers"),
        (line + 4, "sigma_m 'abc' is not a finite number"),
        (line + 5, "target 'zz' is not in the field config"),
    ]
    assert msgs[6][0] == line + 6
    assert msgs[6][1].startswith("logged sun angles disagree with the sun computed")
    dup = "(same heliostat, target, time and steps): the measurement is counted once"
    # row 8 of the bad block repeats frame row 8 (same time): a duplicate of line 9
    assert msgs[7] == (line + 8, f"duplicate of line 10 {dup}")
    assert msgs[8] == (line + 9, f"duplicate of line {line + 7} {dup}")
    assert len(msgs) == 9


def test_a_number_column_with_inf_is_rejected_with_its_text(frame):
    df = frame.iloc[:3].copy()  # spot columns are float64 here (as the history gives)
    df.loc[1, "spot_e_m"] = np.inf
    df.loc[2, "sigma_m"] = np.nan  # empty: not given, the row stays
    obs, rejected = observations_from_frame(df, FIELD)
    assert [(r.row, r.reason) for r in rejected] == [(3, "spot_e_m 'inf' is not a finite number")]
    assert len(obs["A00"]) == 2 and np.isnan(obs["A00"].sigma_m[1])


def test_calibrate_cli_streams_a_history_as_it_fits_a_csv(tmp_path, capsys):
    """``heliostat calibrate --history DB`` (chunks of one heliostat) gives the fits of
    ``heliostat calibrate OBS.csv`` on the same observations, and a corrections file
    the reader accepts."""
    from heliostat.cli import main
    from heliostat.corrections_format import read_corrections

    rng = np.random.default_rng(8)
    frames = []
    for hel in BASE.heliostats.values():
        truth = draw_true_errors(hel.kinematics.drive, rng, translation_m=0.0)
        frames.append(simulate_observations(hel, truth, TARGET, BASE.site, TIMES, rng))
    df = pd.concat(frames, ignore_index=True)
    csv = tmp_path / "obs.csv"
    df.to_csv(csv, index=False)
    db = tmp_path / "history.sqlite"
    with History(db) as hist:
        hist.add_observations(_records(df))
    opts = ["--field", "tests/data/field_small.toml", "--no-select", "--kfold", "0", "--json"]
    assert main(["calibrate", str(csv), *opts]) == 0
    whole = {r["heliostat"]: r for r in json.loads(capsys.readouterr().out)}
    out = tmp_path / "corrections.json"
    rc = main(["calibrate", "--history", str(db), "--chunk", "1", "--out", str(out), *opts])
    assert rc == 0
    captured = capsys.readouterr()
    lines = [json.loads(x) for x in captured.out.splitlines()]
    assert sorted(r["heliostat"] for r in lines) == sorted(whole) == sorted(BASE.heliostats)
    for r in lines:
        a = whole[r["heliostat"]]
        assert r["n_points"] == a["n_points"]
        # the same rows, the sun recomputed from the same times (rounding): the same
        # single fits up to the optimiser's stopping tolerance
        for k, v in a["parameters"].items():
            assert r["parameters"][k] == pytest.approx(v, rel=1e-6, abs=1e-9)
    doc = read_corrections(out)
    assert sorted(h["heliostat"] for h in doc["heliostats"]) == sorted(BASE.heliostats)
    assert "corrections of 3 heliostat(s) written" in captured.err


def test_calibrate_cli_history_needs_field(tmp_path, capsys):
    from heliostat.cli import main

    db = tmp_path / "h.sqlite"
    History(db).close()
    assert main(["calibrate", "--history", str(db)]) == 2
    assert "--history needs --field" in capsys.readouterr().err
