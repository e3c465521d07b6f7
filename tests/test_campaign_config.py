"""plant.toml validation, frame sources and the campaign's pure schedule functions."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from heliostat.campaign import SteppedClock, load_plant
from heliostat.campaign.schedule import (
    azimuth_spread_rad,
    off_target_steps,
    on_target_steps,
    slot_key,
    spread_ok,
)
from heliostat.campaign.sources import CaptureRequest, FolderSource, FrameSourceError, OpenCVSource
from heliostat.config import ConfigError, load_field
from sim.controllers import ManualClock

DATA = Path(__file__).parent / "data"

GOOD = """
[plant]
field = "field.toml"
camera = "camera.toml"
history_db = "hist.sqlite"

[camera_source]
type = "opencv"
device = 0

[schedule]
heliostats = ["H002", "H001"]
slot_minutes = 20
off_target_offset_deg = [0.0, 4.0]

[fit]
min_points = 10
window_days = 2
"""

CAMERA = """
[camera]
width_px = 640
height_px = 512
fx_px = 1500.0
fy_px = 1500.0
target = "cal1"
"""


@pytest.fixture
def plant_dir(tmp_path):
    shutil.copy(DATA / "field_small.toml", tmp_path / "field.toml")
    (tmp_path / "camera.toml").write_text(CAMERA)
    (tmp_path / "plant.toml").write_text(GOOD)
    return tmp_path


def test_good_plant_toml(plant_dir):
    p = load_plant(plant_dir / "plant.toml")
    assert p.schedule.heliostats == ("H002", "H001")
    assert p.schedule.slot_s == 1200.0
    assert p.schedule.off_target_offset_rad == (0.0, math.radians(4.0))
    assert p.history_db == plant_dir / "hist.sqlite"  # relative to plant.toml
    assert p.journal == plant_dir / "hist-bridge-journal.sqlite"
    assert p.target.id == "cal1" and p.source.type == "opencv" and p.source.device == 0
    assert p.fit.min_points == 10 and p.fit.window_s == 2 * 86400.0


def test_history_db_defaults_to_heliostat_db(plant_dir, monkeypatch):
    text = GOOD.replace('history_db = "hist.sqlite"\n', "")
    (plant_dir / "plant.toml").write_text(text)
    monkeypatch.setenv("HELIOSTAT_DB", str(plant_dir / "env.sqlite"))
    assert load_plant(plant_dir / "plant.toml").history_db == plant_dir / "env.sqlite"


@pytest.mark.parametrize(
    ("old", "new", "key", "expected"),
    [
        ("slot_minutes = 20", "slot_minute = 20", "schedule.slot_minute", "unknown key"),
        ('["H002", "H001"]', '["H002", "H009"]', "schedule.heliostats[1]", "'H009' is not in"),
        ('type = "opencv"', 'type = "usb"', "camera_source.type", "expected one of opencv"),
        ("device = 0", "device = -1", "camera_source.device", "index >= 0"),
        ("device = 0", 'folder = "in"', "camera_source.folder", 'only for type = "folder"'),
        ("min_points = 10", "min_points = 1", "fit.min_points", "expected an integer in [3"),
        ("[0.0, 4.0]", "[0.0, 0.1]", "schedule.off_target_offset_deg", "at least 0.5 deg"),
        ("[0.0, 4.0]", "[4.0]", "schedule.off_target_offset_deg", "expected 2 finite numbers"),
        ("[0.0, 4.0]", "[0, 1e9]", "schedule.off_target_offset_deg", "within +-15 deg"),
        ("[0.0, 4.0]", "[-15.5, 0]", "schedule.off_target_offset_deg", "within +-15 deg"),
        ("window_days = 2", 'groups = ["tilt"]', "fit.groups", "unknown azel group 'tilt'"),
        ('camera = "camera.toml"', "", "plant.camera", "missing (required)"),
    ],
)
def test_config_errors_name_file_and_key(plant_dir, old, new, key, expected):
    path = plant_dir / "plant.toml"
    assert old in GOOD
    path.write_text(GOOD.replace(old, new))
    with pytest.raises(ConfigError) as exc:
        load_plant(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: key '{key}'"), msg
    assert expected in msg


def test_errors_in_referenced_files_name_both(plant_dir):
    (plant_dir / "plant.toml").write_text(GOOD.replace("field.toml", "nofield.toml"))
    with pytest.raises(
        ConfigError,
        match=r"nofield.toml: file not found \(referenced by .*"
        r"plant.toml: key 'plant.field'\)",
    ):
        load_plant(plant_dir / "plant.toml")
    (plant_dir / "plant.toml").write_text(GOOD)
    (plant_dir / "camera.toml").write_text(CAMERA.replace("fx_px = 1500.0", "fx_px = -1.0"))
    with pytest.raises(ConfigError) as exc:
        load_plant(plant_dir / "plant.toml")
    assert f"{plant_dir / 'camera.toml'}: key 'camera.fx_px'" in str(exc.value)
    assert "key 'plant.camera'" in str(exc.value)


def test_target_must_exist(plant_dir):
    (plant_dir / "camera.toml").write_text(CAMERA.replace('"cal1"', '"cal9"'))
    with pytest.raises(ConfigError, match=r"plant.toml: key 'plant.camera': target 'cal9'"):
        load_plant(plant_dir / "plant.toml")


# --------------------------------------------------------------------------- sources
def _req(phase="on"):
    return CaptureRequest("H001", phase, "2025-04-01T10:00:00Z", pd.Timestamp("2025-04-01T10:00Z"))


def test_folder_source_takes_new_complete_files_in_order(tmp_path):
    import cv2

    man = ManualClock()
    clock = SteppedClock("2025-04-01T10:00:00Z", man)
    old = np.full((20, 30), 7, np.uint16)
    cv2.imwrite(str(tmp_path / "old.png"), old)
    src = FolderSource(tmp_path, timeout_s=5.0, poll_s=1.0, clock=clock)
    cv2.imwrite(str(tmp_path / "b.png"), np.full((20, 30), 2, np.uint16))
    cv2.imwrite(str(tmp_path / "a.png"), np.full((20, 30), 1, np.uint16))
    (tmp_path / "c.png.part").write_bytes(b"half a file")
    (tmp_path / ".d.png").write_bytes(b"being written")
    # same mtime resolution is possible: order by mtime, then name (mtimes just after
    # now: files older than the capture request would be stale, test_campaign_sources.py)
    import os
    import time

    now_ns = time.time_ns()
    os.utime(tmp_path / "b.png", ns=(now_ns, now_ns + 1_000_000_000))
    os.utime(tmp_path / "a.png", ns=(now_ns, now_ns + 2_000_000_000))
    assert src.capture(_req()).max() == 2  # b is older
    assert src.capture(_req()).max() == 1
    # nothing new: waits on the clock (no real sleep) and gives up after the timeout
    with pytest.raises(FrameSourceError, match="no new frame within 5 s"):
        src.capture(_req())
    assert man() == pytest.approx(5.0)


def test_folder_source_unreadable_file(tmp_path):
    src = FolderSource(tmp_path, clock=SteppedClock("2025-04-01T10:00:00Z", ManualClock()))
    (tmp_path / "x.png").write_bytes(b"not a png")
    with pytest.raises(FrameSourceError, match="x.png"):
        src.capture(_req())


class FakeCapture:
    def __init__(self, device, opened=True):
        self.device, self.opened, self.grabs, self.n = device, opened, 0, 0

    def isOpened(self):  # noqa: N802 - OpenCV's name
        return self.opened

    def grab(self):
        self.grabs += 1
        return True

    def read(self):
        self.n += 1
        img = np.zeros((4, 5, 3), np.uint8)
        img[..., 2] = 200  # red in BGR
        return True, img

    def release(self):
        self.opened = False


def test_opencv_source_discards_stale_frames_and_converts_to_grey():
    caps = []
    src = OpenCVSource(
        "rtsp://cam/stream",
        discard_frames=3,
        capture_factory=lambda d: caps.append(FakeCapture(d)) or caps[-1],
    )
    img = src.capture(_req())
    assert caps[0].device == "rtsp://cam/stream" and caps[0].grabs == 3
    # OpenCV's grey: 0.299 R + 0.587 G + 0.114 B (R = 200) -> 59.8, rounded
    assert img.shape == (4, 5) and int(img[0, 0]) == 60
    src.close()
    assert not caps[0].opened
    bad = OpenCVSource(7, capture_factory=lambda d: FakeCapture(d, opened=False))
    with pytest.raises(FrameSourceError, match="camera 7: cv2.VideoCapture cannot open"):
        bad.capture(_req())


# --------------------------------------------------------------------------- schedule
def test_slots_and_clock():
    assert slot_key(pd.Timestamp("2025-04-01T10:29:59Z"), 1800) == "2025-04-01T10:00:00Z"
    assert slot_key(pd.Timestamp("2025-04-01T10:30:00Z"), 1800) == "2025-04-01T10:30:00Z"
    with pytest.raises(ValueError, match="timezone"):
        slot_key(pd.Timestamp("2025-04-01T10:30:00"), 1800)
    with pytest.raises(ValueError, match="timezone"):
        SteppedClock("2025-04-01T10:00:00", ManualClock())
    man = ManualClock()
    c = SteppedClock("2025-04-01T10:00:00Z", man)
    c.sleep(90.0)
    assert c.now_utc() == pd.Timestamp("2025-04-01T10:01:30Z") and man() == 90.0


def test_azimuth_spread_wraps_around_north():
    d = np.radians
    assert azimuth_spread_rad(d([350.0, 10.0])) == pytest.approx(d(20.0))
    assert azimuth_spread_rad(d([90.0, 180.0, 270.0])) == pytest.approx(d(180.0))
    assert azimuth_spread_rad(d([100.0])) == 0.0
    ok, why = spread_ok(d([100, 120, 140]), d([20, 30, 40]), 4, d(30), d(10))
    assert not ok and why == "3 of 4 observations"
    ok, why = spread_ok(d([100, 110, 120, 125]), d([20, 30, 40, 41]), 4, d(30), d(10))
    assert not ok and "azimuth spread 25.0 deg" in why
    ok, why = spread_ok(d([100, 120, 140, 160]), d([20, 22, 24, 25]), 4, d(30), d(10))
    assert not ok and "elevation spread 5.0 deg" in why
    assert spread_ok(d([100, 120, 140, 160]), d([20, 30, 40, 41]), 4, d(30), d(10)) == (True, "")


def test_setpoints_on_and_off_target():
    from heliostat.frames import azel_to_enu, intersect_plane, reflect

    cfg = load_field(DATA / "field_small.toml")
    h, tgt = cfg.heliostats["H001"], cfg.targets["cal1"]
    sun = azel_to_enu(np.radians(160.0), np.radians(40.0))[None]
    on = on_target_steps(h, tgt.centre_enu_m, sun)
    # the nominal beam of the integer setpoint lands within rounding of the centre:
    # 1 step = 1/1000 deg ~ 17 urad of joint angle, the beam ~ 2x at ~100 m -> < 10 mm
    pose = h.kinematics.forward(on[None].astype(float))
    hit = intersect_plane(
        pose.centre_enu_m, reflect(pose.u_normal_enu, sun), tgt.centre_enu_m, tgt.u_normal_enu
    )
    assert np.abs(tgt.enu_to_plane(hit)).max() < 0.01
    off = off_target_steps(h, on, (0.0, math.radians(3.0)))
    assert off[0] == on[0] and abs(off[1] - on[1]) == 3000  # 1000 steps/deg
    # near the upper travel limit the offset goes the other way
    top = np.array([0, h.kinematics.axis2.max_steps - 1000])
    assert off_target_steps(h, top, (0.0, math.radians(3.0)))[1] == top[1] - 3000
    # the sun behind the target's back: unreachable
    assert on_target_steps(h, tgt.centre_enu_m, np.array([[0.0, 0.0, -1.0]])) is None


def test_cli_reports_config_errors_in_one_line(plant_dir, monkeypatch, capsys):
    import heliostat.cli as cli

    (plant_dir / "plant.toml").write_text(GOOD.replace("slot_minutes = 20", "slot_minutes = 0.1"))
    assert cli.main(["campaign", "--config", str(plant_dir / "plant.toml"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err == (
        f"heliostat: error: {plant_dir / 'plant.toml'}: key 'schedule.slot_minutes': "
        "expected a value in [1.0, 1440], got 0.1"
    )
    assert cli.main(["history", "--db", str(plant_dir / "none.sqlite")]) == 2
    assert "history database not found" in capsys.readouterr().err


def test_a_wrong_port_stops_the_run_at_once(plant_dir, monkeypatch, capsys):
    import heliostat.cli as cli

    field = plant_dir / "field.toml"
    field.write_text(field.read_text().replace('port = "loop://"', 'port = "/dev/no-such-tty"'))
    plant = plant_dir / "plant.toml"
    plant.write_text(GOOD.replace("device = 0", 'folder = "in"').replace('"opencv"', '"folder"'))
    assert cli.main(["campaign", "--config", str(plant), "--max-visits", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("heliostat: error: cannot open serial port '/dev/no-such-tty'")


def test_config_check_knows_plant_toml(plant_dir, capsys):
    from heliostat.cli import main

    assert main(["config", "check", str(plant_dir / "plant.toml")]) == 0
    assert "(plant): field" in capsys.readouterr().out
    (plant_dir / "plant.toml").write_text(GOOD.replace("slot_minutes = 20", "slot_minutes = 0.1"))
    assert main(["config", "check", str(plant_dir / "plant.toml")]) == 2
    assert "schedule.slot_minutes" in capsys.readouterr().err


def test_folder_arrival_tolerance_from_plant_toml(plant_dir):
    folder = GOOD.replace("device = 0", 'folder = "in"').replace('"opencv"', '"folder"')
    (plant_dir / "plant.toml").write_text(
        folder.replace('folder = "in"', 'folder = "in"\narrival_tolerance_s = 7.5')
    )
    assert load_plant(plant_dir / "plant.toml").source.arrival_tolerance_s == 7.5
    (plant_dir / "plant.toml").write_text(
        folder.replace('folder = "in"', 'folder = "in"\narrival_tolerance_s = -1.0')
    )
    with pytest.raises(ConfigError, match=r"camera_source\.arrival_tolerance_s"):
        load_plant(plant_dir / "plant.toml")
