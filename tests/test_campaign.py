"""``heliostat campaign`` end to end against the simulator: emulated controllers on a pty
(ManualClock, no real sleeps), a simulated camera filling a watched folder, the history
in SQLite. Ground truth: the controllers' record of applied commands and the hidden true
errors of the simulated heliostats."""

from __future__ import annotations

import argparse
import io
import json
import math
from contextlib import redirect_stdout

import numpy as np
import pandas as pd
import pytest

from firmware_bridge import registers as R
from heliostat.campaign import History, RunOptions, run_campaign
from heliostat.commands import campaign as campaign_cmd
from heliostat.kinematics import KinematicErrors
from heliostat.kinematics.pointing import pointing_change
from sim.plant import make_sim_plant

END_UTC = pd.Timestamp("2025-04-01T17:30:00Z")


class Interrupt:
    """Frame source that raises KeyboardInterrupt at its ``at``-th capture (Ctrl-C in
    the middle of a visit: the heliostat is on the target, nothing recorded yet)."""

    def __init__(self, inner, at: int) -> None:
        self.inner, self.at, self.n = inner, at, 0

    def capture(self, request):
        self.n += 1
        if self.n == self.at:
            self.interrupted = request
            raise KeyboardInterrupt
        return self.inner.capture(request)

    def close(self) -> None:
        pass


def _keys(df: pd.DataFrame) -> list[tuple[str, str]]:
    return sorted(zip(df["heliostat_id"], df["slot_utc"], strict=True))


def _no_command_applied_twice(sp) -> None:
    for m in sp.controllers.values():
        assert max(m.applied_counts.values(), default=0) <= 1


@pytest.fixture(scope="module")
def campaigns(tmp_path_factory):
    """Two identical simulated plants: A runs the day uninterrupted (corrections not
    confirmed), B is interrupted mid-visit and resumed (corrections confirmed)."""
    out = {}
    a = make_sim_plant(tmp_path_factory.mktemp("a"))
    b = make_sim_plant(tmp_path_factory.mktemp("b"))
    try:
        clock = a.utc_clock()
        asked: list[str] = []
        out["a_summary"] = run_campaign(
            a.plant(),
            clock=clock,
            source=a.source(clock),
            options=RunOptions(until_utc=END_UTC),
            confirm=lambda q: asked.append(q) or False,
        )
        out["a_asked"] = asked
        out["a_applied"] = {h: list(m.applied) for h, m in a.controllers.items()}

        clock_b = b.utc_clock()
        src = b.source(clock_b)
        stop = Interrupt(src, at=9)  # 9th frame: the sun-on frame of the 5th visit
        with pytest.raises(KeyboardInterrupt):
            run_campaign(
                b.plant(), clock=clock_b, source=stop, options=RunOptions(until_utc=END_UTC)
            )
        with History(b.plant().history_db, readonly=True) as h:
            out["b_before"] = h.observations()
        out["b_interrupted_at"] = stop.interrupted
        out["b_summary"] = run_campaign(
            b.plant(),
            clock=clock_b,
            source=src,
            options=RunOptions(until_utc=END_UTC),
            confirm=lambda q: True,
        )
        out["b_truths"] = dict(src.camera.truths)
        out["a"], out["b"] = a, b
        yield out
    finally:
        a.stop()
        b.stop()


def test_resumed_campaign_has_the_same_observations(campaigns):
    a, b = campaigns["a"], campaigns["b"]
    with History(a.plant().history_db, readonly=True) as ha:
        obs_a = ha.observations()
    with History(b.plant().history_db, readonly=True) as hb:
        obs_b = hb.observations()
        visits_b = hb.visits()
    # a full day of 60-minute slots for 2 heliostats, every visit measured
    assert len(obs_a) >= 16
    assert campaigns["a_summary"]["outcomes"]["observed"] == len(obs_a)
    # none lost, none repeated: the same (heliostat, slot) set, each once
    assert _keys(obs_b) == _keys(obs_a)
    assert len(set(_keys(obs_b))) == len(obs_b)
    assert visits_b.empty
    # the interrupted run had recorded 4 visits; the resumed run kept them untouched
    before = campaigns["b_before"]
    assert len(before) == 4
    kept = obs_b[obs_b["id"].isin(before["id"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, before.reset_index(drop=True))
    # ... and measured the interrupted visit's slot
    req = campaigns["b_interrupted_at"]
    assert (req.heliostat_id, req.slot) in set(_keys(obs_b)) - set(_keys(before))
    # the controllers never applied a command twice (journal + command ids)
    _no_command_applied_twice(a)
    _no_command_applied_twice(b)


def test_observations_match_the_simulated_truth(campaigns):
    """Measured spots agree with where the simulated camera put the true beam; frames are
    kept; every row passes the calibration reader's checks (sun angles vs time)."""
    b = campaigns["b"]
    with History(b.plant().history_db, readonly=True) as h:
        obs = h.observations()
    truth = campaigns["b_truths"]
    err_m = [
        math.hypot(
            r.spot_x_m - truth[(r.heliostat_id, r.slot_utc)][0],
            r.spot_y_m - truth[(r.heliostat_id, r.slot_utc)][1],
        )
        for r in obs.itertuples()
    ]
    # 256 px across the 6 m target: ~29 mm per pixel; allow half a pixel (as test_demo)
    assert max(err_m) < 0.015
    frames = b.plant().frames_dir
    for r in obs.itertuples():
        assert (frames / r.frame).is_file() and (frames / r.dark_frame).is_file()
    from heliostat.calibration.observations import observations_from_frame

    valid, rejected = observations_from_frame(obs, b.plant().field)
    assert not rejected and sum(len(v) for v in valid.values()) == len(obs)
    # exported for `heliostat calibrate`: the same rows pass the CSV reader
    from heliostat.calibration.observations import read_observations
    from heliostat.campaign.history import write_observations_csv

    csv = b.root / "observations.csv"
    with History(b.plant().history_db, readonly=True) as h:
        assert write_observations_csv(h, csv) == len(obs)
    valid, rejected = read_observations(csv, b.plant().field)
    assert not rejected and sum(len(v) for v in valid.values()) == len(obs)
    # each axis's last-move direction: unknown on a heliostat's first visit (the run
    # does not know where it stood), then from the previous visit's off-target position
    cols = ["axis1_approach", "axis2_approach"]
    for hid, g in obs.sort_values("id").groupby("heliostat_id"):
        a = g[cols].to_numpy(dtype=float)
        assert np.all(np.isnan(a[0]))
        assert np.all(np.isin(a[1:], (-1.0, 1.0)) | np.isnan(a[1:]))
        assert np.isin(a[1:], (-1.0, 1.0)).mean() > 0.5
        np.testing.assert_array_equal(valid[hid].approach, np.nan_to_num(a, nan=0.0))


def test_fits_appear_when_thresholds_are_met_and_recover_the_truth(campaigns):
    a = campaigns["a"]
    plant = a.plant()
    aim = plant.target.centre_enu_m
    with History(plant.history_db, readonly=True) as h:
        for hid, hel in plant.field.heliostats.items():
            obs = h.observations(hid)
            fits = h.fits(hid)
            assert fits, f"{hid}: no fit although {len(obs)} well-spread observations"
            # the first fit came when min_points (6) observations were there, not before
            assert fits[0]["n_points"] == 6
            # later fits after refit_after (3) new observations each
            assert [f["n_points"] for f in fits[1:]] == [6 + 3 * k for k in range(1, len(fits))]
            last = fits[-1]
            assert last["success"]
            # pointing of the fitted model against the hidden truth over the sky:
            # aimed with the fit, the true beam misses by far less than when aimed with
            # the nominal model (the simulator's true errors are several mrad; one day of
            # data and 2 mm spot noise leave a fraction of a mrad).
            fitted = KinematicErrors.from_dict("azel", last["parameters"])
            nominal = KinematicErrors.zeros("azel")
            before = pointing_change(hel.kinematics, nominal, a.truth[hid], aim).beam_rms_mrad
            after = pointing_change(hel.kinematics, fitted, a.truth[hid], aim).beam_rms_mrad
            assert before > 2.0
            assert after < before / 4


def test_fits_choose_their_parameter_set_as_calibrate_heliostat_does(campaigns):
    """The runner fits through heliostat.calibration.calibrate_heliostat (campaign.toml
    names no groups): the stored set is the one that function chooses on the same
    observations, and its parameters are the same fit (same code, same inputs)."""
    from heliostat.calibration import calibrate_heliostat, observations_from_frame

    plant = campaigns["a"].plant()
    with History(plant.history_db, readonly=True) as h:
        for hid, hel in plant.field.heliostats.items():
            last = h.fits(hid)[-1]
            df = h.observations(hid)
            df = df[df["id"] <= last["last_observation_id"]]
            obs = observations_from_frame(df, plant.field)[0][hid]
            c = calibrate_heliostat(hel.kinematics, obs)
            assert last["names"] == list(c.names)
            for n, v in c.fit.parameters().items():
                # same computation in the same process: equal to float rounding (1e-12 rad)
                assert last["parameters"][n] == pytest.approx(v, rel=1e-9, abs=1e-12)


def test_corrections_are_not_sent_without_confirmation(campaigns):
    a, b = campaigns["a"], campaigns["b"]
    # A: the question was asked once, answered no: nothing uploaded
    assert len(campaigns["a_asked"]) == 1
    assert sorted(campaigns["a_summary"]["corrections"]["declined"]) == sorted(a.truth)
    for hid, applied in campaigns["a_applied"].items():
        assert all(code != R.CommandCode.APPLY_PARAMS for _, code, _ in applied), hid
        assert a.controllers[hid].param_set_id == 0
    with History(a.plant().history_db, readonly=True) as h:
        assert {c["state"] for c in h.corrections()} == {"declined"}
        assert h.deliveries() == []
    # B: confirmed: each controller holds the latest fit's parameters (float32 on the wire)
    assert campaigns["b_summary"]["corrections"]["sent"] == {h: "confirmed" for h in b.truth}
    with History(b.plant().history_db, readonly=True) as h:
        for hid, m in b.controllers.items():
            assert m.param_set_id != 0
            fit = h.last_fit(hid, success_only=True)
            sent = KinematicErrors.from_dict("azel", fit["parameters"]).to_vector(
                KinematicErrors.zeros("azel").names
            )
            active = np.array(R.decode_params(m.active_params))
            # a set without backlash goes without the trailing pair (older firmware's block)
            assert len(active) in (len(sent), len(sent) - 2)
            assert np.all(sent[len(active) :] == 0.0)
            np.testing.assert_allclose(active, sent[: len(active)], rtol=1e-6, atol=1e-9)
        assert [d["state"] for d in h.deliveries()] == ["confirmed"] * len(b.truth)


def test_a_second_run_with_yes_sends_the_declined_corrections(campaigns):
    """Run A again after its end time with --yes: no visits, the corrections go out."""
    a = campaigns["a"]
    clock = a.utc_clock()  # the same manual clock as run A: already past the end time
    s = run_campaign(
        a.plant(),
        clock=clock,
        source=a.source(clock),
        options=RunOptions(yes=True, until_utc=END_UTC),
    )
    assert s["visits"] == 0
    assert s["corrections"]["sent"] == {h: "confirmed" for h in a.truth}
    # a third run finds nothing left to send
    s = run_campaign(
        a.plant(),
        clock=clock,
        source=a.source(clock),
        options=RunOptions(yes=True, until_utc=END_UTC),
    )
    assert s["corrections"]["proposed"] == []
    _no_command_applied_twice(a)


# --------------------------------------------------------------------------- CLI
def _parse(argv):
    p = argparse.ArgumentParser(prog="heliostat")
    campaign_cmd.register(p.add_subparsers(dest="command"))
    return p.parse_args(argv)


def test_dry_run_sends_nothing(tmp_path):
    sp = make_sim_plant(tmp_path / "plant", n=2)
    try:
        clock = sp.utc_clock("2025-04-01T10:05:00Z")
        args = _parse(["campaign", "--config", str(sp.plant_toml), "--dry-run", "--json"])
        buf = io.StringIO()
        with redirect_stdout(buf):
            assert campaign_cmd.run(args, clock=clock) == 0
        plan = json.loads(buf.getvalue())
        assert sp.bus.stats.frames_in == 0  # not a single frame on the wire
        assert not sp.plant().history_db.exists()  # nothing written
        assert plan["slot_utc"] == "2025-04-01T10:00:00Z"
        plant = sp.plant()
        for v in plan["visits"]:
            assert v["action"] == "visit"
            h = plant.field.heliostats[v["heliostat"]]
            on, off = np.array(v["on_steps"]), np.array(v["off_steps"])
            assert h.kinematics.within_limits(np.array([on, off])).all()
            # sun-off: the configured 3 deg on axis 2 (1000 steps/deg), nothing on axis 1
            d = h.kinematics.steps_to_angles(off.astype(float)) - h.kinematics.steps_to_angles(
                on.astype(float)
            )
            assert abs(d[0]) < 1e-9 and abs(abs(d[1]) - math.radians(3.0)) < 1e-3 / 1000
        # human output too
        args = _parse(["campaign", "--config", str(sp.plant_toml), "--dry-run"])
        buf = io.StringIO()
        with redirect_stdout(buf):
            campaign_cmd.run(args, clock=clock)
        assert "nothing sent" in buf.getvalue() and "H001" in buf.getvalue()
        assert sp.bus.stats.frames_in == 0
    finally:
        sp.stop()


def test_cli_run_without_yes_and_without_terminal_sends_no_corrections(tmp_path):
    sp = make_sim_plant(tmp_path / "plant", n=1)
    try:
        clock = sp.utc_clock("2025-04-01T06:30:00Z")
        args = _parse(["campaign", "--config", str(sp.plant_toml), "--hours", "6.5", "--json"])
        buf = io.StringIO()
        with redirect_stdout(buf):
            # the default confirmation refuses without a terminal (pytest has none)
            rc = campaign_cmd.run(args, clock=clock, source=sp.source(clock))
        s = json.loads(buf.getvalue())
        assert rc == 0
        assert s["outcomes"]["observed"] >= 6 and s["outcomes"]["fits"] >= 1
        assert s["corrections"]["declined"] == ["H001"]
        assert sp.controllers["H001"].param_set_id == 0
    finally:
        sp.stop()


def test_corrections_beyond_the_safety_limit_are_refused(tmp_path):
    sp = make_sim_plant(tmp_path / "plant", n=1)
    try:
        field_toml = sp.root / "field.toml"
        text = field_toml.read_text()
        assert "max_correction_mrad = 20.0" in text
        # the simulated heliostat's errors are several mrad: a 0.1 mrad limit refuses them
        field_toml.write_text(
            text.replace("max_correction_mrad = 20.0", "max_correction_mrad = 0.1")
        )
        clock = sp.utc_clock("2025-04-01T06:30:00Z")
        s = run_campaign(
            sp.plant(),
            clock=clock,
            source=sp.source(clock),
            options=RunOptions(yes=True, until_utc=pd.Timestamp("2025-04-01T13:00:00Z")),
        )
        assert list(s["corrections"]["refused"]) == ["H001"]
        assert "more than the maximum correction 0.1 mrad" in s["corrections"]["refused"]["H001"]
        assert s["corrections"]["sent"] == {}
        assert sp.controllers["H001"].param_set_id == 0
        with History(sp.plant().history_db, readonly=True) as h:
            assert [c["state"] for c in h.corrections()] == ["refused"]
    finally:
        sp.stop()


def test_a_lossy_line_loses_no_observation(tmp_path):
    """Frames dropped and corrupted on the RS-485 line: the bridge retries moves (with
    read-back first, so nothing is applied twice) and the settle loop retries status
    reads; every slot still gets its observation."""
    from sim.controllers import FaultProfile

    sp = make_sim_plant(tmp_path / "plant", n=1, seed=8)
    try:
        f = sp.root / "field.toml"
        f.write_text(f.read_text().replace("timeout_s = 0.2", "timeout_s = 0.05"))
        # 2 % drops + 2 % bit errors per frame: ~8 % of exchanges fail; 5 status reads
        # and 5 move attempts in a row all failing is then < 1e-5 per poll or move
        sp.bus.faults = FaultProfile(drop_p=0.02, corrupt_p=0.02)
        sp.bus.rng = np.random.default_rng(3)
        clock = sp.utc_clock("2025-04-01T06:30:00Z")
        s = run_campaign(
            sp.plant(),
            clock=clock,
            source=sp.source(clock),
            options=RunOptions(
                until_utc=pd.Timestamp("2025-04-01T12:30:00Z"), send_corrections=False
            ),
        )
        st = sp.bus.stats
        assert st.dropped + st.corrupted >= 3  # the line really was lossy
        assert s["outcomes"] == {"observed": 6, "fits": 1}
        _no_command_applied_twice(sp)
    finally:
        sp.stop()


def test_a_neighbour_on_the_target_cancels_and_does_not_spoil_the_flat(tmp_path):
    """Another heliostat's spot stays on the target through the visits, overlapping the
    spots measured. It is in the sun-off frames too, so it cancels in (on - off), and those
    frames are no flat field (dividing by one would suppress the spot where it overlaps):
    the detector is told, the spots are measured to the same accuracy as without it, and
    each is flagged ``spot_in_dark``."""
    from heliostat.vision import SpotInFlatError, prepare_flat
    from heliostat.vision.io import load_image
    from heliostat.vision.pipeline import register_for_camera
    from sim.optics import spot_with_sigma

    sp = make_sim_plant(tmp_path / "plant", n=1, seed=8)
    try:
        clock = sp.utc_clock("2025-04-01T09:30:00Z")
        neighbour = spot_with_sigma([0.35, 0.25], 0.3, 3000.0)
        src = sp.source(clock, neighbours=[neighbour])
        s = run_campaign(
            sp.plant(),
            clock=clock,
            source=src,
            options=RunOptions(
                until_utc=pd.Timestamp("2025-04-01T11:30:00Z"), send_corrections=False
            ),
        )
        assert s["outcomes"].get("observed", 0) >= 2
        p = sp.plant()
        with History(p.history_db, readonly=True) as h:
            obs = h.observations()
        truth = src.camera.truths
        for r in obs.itertuples():
            t = truth[(r.heliostat_id, r.slot_utc)]
            assert math.hypot(r.spot_x_m - t[0], r.spot_y_m - t[1]) < 0.015
            assert "spot_in_dark" in r.quality_flags.split("|")
        dark = load_image(p.frames_dir / obs["dark_frame"].iloc[0])
        reg = register_for_camera(p.camera, p.target, dark)
        with pytest.raises(SpotInFlatError, match="brightness"):
            prepare_flat(dark, reg, black_level_dn=p.camera.black_level_dn)
    finally:
        sp.stop()
