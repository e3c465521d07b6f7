"""FolderSource: a frame is taken only if it arrived after its capture request.

A frame that lands after its capture timed out (that visit is recorded ``no_frame``) must
never be taken by the next capture as its own frame: it would be a stale image attributed
to another heliostat and time. The campaign's clock here is a ``SteppedClock`` (nothing
really sleeps), so "how long ago a file arrived" is set on the file's mtime with
``os.utime`` relative to the real time now, as a camera program writing it that long ago
would have left it.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd
import pytest

from heliostat.campaign import SteppedClock
from heliostat.campaign.sources import CaptureRequest, FolderSource, FrameSourceError
from sim.controllers import ManualClock


def _write(path, value, age_s=None):
    import cv2

    assert cv2.imwrite(str(path), np.full((20, 30), value, np.uint16))
    if age_s is not None:
        t_ns = time.time_ns() - int(age_s * 1e9)
        os.utime(path, ns=(t_ns, t_ns))


def _source(tmp_path, **kw):
    man = ManualClock()
    clock = SteppedClock("2025-04-01T10:00:00Z", man)
    logs: list[str] = []
    src = FolderSource(tmp_path, timeout_s=5.0, poll_s=1.0, clock=clock, log=logs.append, **kw)
    return src, clock, logs


def _req(clock, hid="H001", phase="on"):
    return CaptureRequest(hid, phase, "2025-04-01T10:00:00Z", clock.now_utc())


def test_a_frame_landing_after_its_capture_timed_out_is_not_taken_by_the_next_visit(tmp_path):
    src, clock, logs = _source(tmp_path)
    # visit 1 (H001): the camera program is late, the capture times out -> no_frame
    with pytest.raises(FrameSourceError, match="no new frame"):
        src.capture(_req(clock, "H001"))
    # H001's frame lands 60 s later, while the campaign moves on to H002
    clock.sleep(120.0)
    _write(tmp_path / "late_H001.png", 99, age_s=60.0)
    # visit 2 (H002): the late frame arrived 60 s before this request: not H002's frame
    with pytest.raises(FrameSourceError, match="no new frame"):
        src.capture(_req(clock, "H002"))
    assert not (tmp_path / "late_H001.png").exists()
    assert (tmp_path / "stale" / "late_H001.png").is_file()  # moved aside, kept for a person
    assert any("late_H001.png" in m and "stale" in m for m in logs)
    # a frame that arrives for H002 is taken; the stale one never comes back
    _write(tmp_path / "H002.png", 5)
    assert src.capture(_req(clock, "H002")).max() == 5


def test_a_stale_frame_is_set_aside_and_the_fresh_one_behind_it_taken(tmp_path):
    src, clock, logs = _source(tmp_path)
    _write(tmp_path / "a_stale.png", 1, age_s=30.0)
    _write(tmp_path / "b_fresh.png", 2)
    # the stale file is older, so without the check it would be taken first
    assert src.capture(_req(clock)).max() == 2
    assert (tmp_path / "stale" / "a_stale.png").is_file()
    assert len(logs) == 1


def test_arrival_tolerance(tmp_path):
    # tolerance 10 s: a frame 4 s older than the request (a camera clock or trigger a
    # little ahead) is taken, one 20 s older is not. Margins of >= 6 s on either side
    # keep real time passing during the test (well under a second) from mattering.
    src, clock, _ = _source(tmp_path, arrival_tolerance_s=10.0)
    _write(tmp_path / "x.png", 3, age_s=4.0)
    assert src.capture(_req(clock)).max() == 3
    _write(tmp_path / "y.png", 4, age_s=20.0)
    with pytest.raises(FrameSourceError, match=r"1 stale frame\(s\) set aside"):
        src.capture(_req(clock))
    assert (tmp_path / "stale" / "y.png").is_file()


def test_request_time_before_the_capture_call_counts(tmp_path):
    # the rule is relative to the request's time, not to when capture() is called: a
    # frame that arrived after a request made 30 s (campaign clock) before the call is
    # that request's frame; one that arrived before it is not
    src, clock, _ = _source(tmp_path)
    req = _req(clock)
    clock.sleep(30.0)
    _write(tmp_path / "before.png", 1, age_s=45.0)
    _write(tmp_path / "after.png", 2, age_s=15.0)
    assert src.capture(req).max() == 2
    assert (tmp_path / "stale" / "before.png").is_file()


def test_a_name_clash_in_stale_keeps_both(tmp_path):
    src, clock, _ = _source(tmp_path)
    (tmp_path / "stale").mkdir()
    _write(tmp_path / "stale" / "f.png", 1)
    _write(tmp_path / "f.png", 2, age_s=60.0)
    with pytest.raises(FrameSourceError):
        src.capture(_req(clock))
    assert len(list((tmp_path / "stale").glob("f*.png"))) == 2


def test_negative_tolerance_is_refused(tmp_path):
    with pytest.raises(ValueError, match="arrival_tolerance_s"):
        FolderSource(tmp_path, arrival_tolerance_s=-1.0)


def test_request_time_must_be_utc(tmp_path):
    src, _, _ = _source(tmp_path)
    req = CaptureRequest("H001", "on", "s", pd.Timestamp("2025-04-01T10:00"))
    with pytest.raises(ValueError, match="timezone-aware"):
        src.capture(req)


class LateFirstFrame:
    """The rehearsal camera, except that the first sun-on frame lands only after its
    capture timed out — just before the next visit's capture looks into the folder."""

    def __init__(self, feeder) -> None:
        self.feeder, self.n, self.pending = feeder, 0, None

    def capture(self, request):
        self.n += 1
        if self.n == 1:
            self.first = request
            self.pending = self.feeder.camera.capture(request)  # rendered, not delivered
            return self.feeder.source.capture(request)  # times out: no_frame
        if self.pending is not None:
            # it lands 1 s (campaign clock) after the first capture gave up
            lands = self.first.time_utc + pd.Timedelta(seconds=self.feeder.source.timeout_s + 1)
            self.late_age_s = (request.time_utc - lands).total_seconds()
            _write_image(self.feeder.folder / "late_frame.png", self.pending, self.late_age_s)
            self.pending = None
        return self.feeder.capture(request)

    def close(self) -> None:
        pass


def _write_image(path, img, age_s):
    import cv2

    assert cv2.imwrite(str(path), img)
    t_ns = time.time_ns() - int(age_s * 1e9)
    os.utime(path, ns=(t_ns, t_ns))


def test_campaign_never_attributes_a_late_frame_to_the_next_heliostat(tmp_path):
    import math

    from heliostat.campaign import History, RunOptions, run_campaign
    from sim.plant import make_sim_plant

    sp = make_sim_plant(tmp_path)
    try:
        clock = sp.utc_clock()
        src = LateFirstFrame(sp.source(clock))
        logs: list[str] = []
        src.feeder.source.log = logs.append
        run_campaign(sp.plant(), clock=clock, source=src, options=RunOptions(max_visits=2))
        with History(sp.plant().history_db, readonly=True) as h:
            obs = h.observations()
            visits = h.visits()
    finally:
        sp.stop()
    first, second = src.first.heliostat_id, obs["heliostat_id"].tolist()
    # the frame arrived well outside the 2 s tolerance before the second visit's request
    assert src.late_age_s > 10.0
    assert visits["outcome"].tolist() == ["no_frame"] and visits["heliostat_id"][0] == first
    # the next heliostat is observed from its own frames: the spot is where the simulated
    # camera put its true beam (half a pixel, ~15 mm, as test_campaign)
    assert len(second) == 1 and second[0] != first
    r = obs.iloc[0]
    tx, ty = src.feeder.camera.truths[(r.heliostat_id, r.slot_utc)]
    assert math.hypot(r.spot_x_m - tx, r.spot_y_m - ty) < 0.015
    stale = sp.plant().source.folder / "stale" / "late_frame.png"
    assert stale.is_file()
    assert any("late_frame.png" in m for m in logs)


# --------------------------------------------------------------------------- reused names
def test_a_frame_overwriting_a_fixed_name_is_taken(tmp_path):
    # A camera program that always writes "frame.png": every frame has the same name.
    _write(tmp_path / "frame.png", 1, age_s=30.0)  # present at open: never taken
    src, clock, _ = _source(tmp_path)
    with pytest.raises(FrameSourceError, match="no new frame"):
        src.capture(_req(clock))
    _write(tmp_path / "frame.png", 7)  # the next frame overwrites it
    assert src.capture(_req(clock)).max() == 7
    # taken once: the same file is not taken again by the next visit
    with pytest.raises(FrameSourceError, match="no new frame"):
        src.capture(_req(clock, "H002"))
    _write(tmp_path / "frame.png", 9)
    assert src.capture(_req(clock, "H002")).max() == 9


def test_a_camera_counter_restart_loses_no_frame(tmp_path):
    src, clock, _ = _source(tmp_path)
    _write(tmp_path / "img0001.png", 1)
    assert src.capture(_req(clock)).max() == 1
    # the camera program restarts and counts from 1 again (a new file, same name)
    (tmp_path / "img0001.png").unlink()
    _write(tmp_path / "img0001.png", 2)
    assert src.capture(_req(clock, "H002")).max() == 2


class NoFrames:
    def capture(self, request):
        raise FrameSourceError("camera program not running")

    def close(self) -> None:
        pass


def test_a_slot_without_a_frame_is_retried_when_the_campaign_resumes(tmp_path):
    from heliostat.campaign import History, RunOptions, run_campaign
    from sim.plant import make_sim_plant

    sp = make_sim_plant(tmp_path)
    try:
        clock = sp.utc_clock()
        run_campaign(sp.plant(), clock=clock, source=NoFrames(), options=RunOptions(max_visits=1))
        with History(sp.plant().history_db, readonly=True) as h:
            (first,) = h.visits().itertuples()
        assert first.outcome == "no_frame"
        # The camera program runs again; a new run (same slot) visits that heliostat
        # again instead of keeping the slot's no_frame for good.
        clock = sp.utc_clock()
        run_campaign(
            sp.plant(), clock=clock, source=sp.source(clock), options=RunOptions(max_visits=1)
        )
        with History(sp.plant().history_db, readonly=True) as h:
            obs, visits = h.observations(), h.visits()
    finally:
        sp.stop()
    assert (obs.heliostat_id[0], obs.slot_utc[0]) == (first.heliostat_id, first.slot_utc)
    assert len(visits) == 0  # the no_frame record gave way to the observation


def test_within_one_run_a_no_frame_slot_is_not_retried(tmp_path):
    from heliostat.campaign import History

    with History(tmp_path / "h.sqlite") as h:
        h.add_visit("H001", "s1", "t", "no_frame", "x", run_id="A")
        h.add_visit("H002", "s1", "t", "unreachable", "x", run_id="A")
        assert h.done_keys("A") == {("H001", "s1"), ("H002", "s1")}
        assert h.done_keys("B") == {("H002", "s1")}  # only no_frame is retried
        h.add_visit("H001", "s1", "t2", "no_frame", "again", run_id="B")
        assert h.done_keys("B") == {("H001", "s1"), ("H002", "s1")}
        assert h.visits()["detail"].tolist() == ["again", "x"]
