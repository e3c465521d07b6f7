"""The GenICam frame source, against a fake with harvesters' interface (no GenTL producer
is at hand): exposure and gain set by hand, a software trigger per frame, the frame's
pixels as the camera delivers them, timeouts as FrameSourceError."""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from heliostat.campaign.config import load_plant
from heliostat.campaign.genicam import GenICamSource
from heliostat.campaign.sources import CaptureRequest, FrameSourceError, open_source
from heliostat.config import ConfigError

DATA = Path(__file__).parent / "data"
W, H = 64, 48


class Node:
    def __init__(self, value=None) -> None:
        self.value = value


class Command:
    def __init__(self, on_execute) -> None:
        self.on_execute = on_execute

    def execute(self) -> None:
        self.on_execute()


class FakeCamera:
    """A 12-bit mono camera: a spot of 1000 DN per ms of exposure (at gain 0 dB) on a dark
    board, delivered once per software trigger (or always, free-running)."""

    def __init__(self, serial: str) -> None:
        self.serial_number = serial
        self.triggers = 0
        self.started = self.destroyed = False
        self.node_map = SimpleNamespace(
            ExposureAuto=Node("Continuous"),
            ExposureTime=Node(10000.0),  # µs
            GainAuto=Node("Continuous"),
            Gain=Node(0.0),
            TriggerMode=Node("Off"),
            TriggerSource=Node("Line0"),
            TriggerSelector=Node("FrameStart"),
            TriggerSoftware=Command(self._trigger),
        )
        self.pending = 0

    def _trigger(self) -> None:
        self.triggers += 1
        self.pending += 1

    def frame(self) -> np.ndarray:
        nm = self.node_map
        img = np.full((H, W), 64, np.uint16)
        peak = nm.ExposureTime.value / 1000.0 * 1000.0 * 10 ** (nm.Gain.value / 20)
        img[20:23, 30:33] += np.uint16(min(peak, 4095 - 64))
        return img


class FakeAcquirer:
    def __init__(self, cam: FakeCamera) -> None:
        self.cam = cam
        self.remote_device = SimpleNamespace(node_map=cam.node_map)

    def start(self) -> None:
        self.cam.started = True

    def stop(self) -> None:
        self.cam.started = False

    def destroy(self) -> None:
        self.cam.destroyed = True

    @contextmanager
    def fetch(self, timeout: float):
        cam = self.cam
        if not cam.started:
            raise RuntimeError("acquisition not started")
        if cam.node_map.TriggerMode.value == "On":
            if cam.pending == 0:
                raise TimeoutError(f"no buffer within {timeout} s")  # genicam's TimeoutException
            cam.pending -= 1
        img = cam.frame()
        comp = SimpleNamespace(width=W, height=H, data=img.ravel())
        yield SimpleNamespace(payload=SimpleNamespace(components=[comp]))


class FakeHarvester:
    def __init__(self, cameras: list[FakeCamera]) -> None:
        self.cameras, self.files, self.resets = cameras, [], 0
        self.device_info_list: list = []

    def add_file(self, path: str) -> None:
        self.files.append(path)

    def update(self) -> None:
        self.device_info_list = [
            SimpleNamespace(serial_number=c.serial_number) for c in self.cameras
        ]

    def create(self, search_key=0):
        if isinstance(search_key, dict):
            (cam,) = [c for c in self.cameras if c.serial_number == search_key["serial_number"]]
        else:
            cam = self.cameras[search_key]
        return FakeAcquirer(cam)

    def reset(self) -> None:
        self.resets += 1


def _req(phase="on"):
    return CaptureRequest(
        "H001", phase, "2026-03-01T10:00:00Z", pd.Timestamp("2026-03-01T10:00:05Z")
    )


def test_exposure_gain_and_trigger_are_set_and_each_capture_triggers_once():
    cams = [FakeCamera("A1"), FakeCamera("B2")]
    harv = FakeHarvester(cams)
    src = GenICamSource("producer.cti", serial="B2", exposure_s=2e-3, gain_db=0.0,
                        harvester_factory=lambda: harv)  # fmt: skip
    img = src.capture(_req("on"))
    nm = cams[1].node_map
    assert harv.files == ["producer.cti"]
    assert (nm.ExposureAuto.value, nm.GainAuto.value) == ("Off", "Off")
    assert nm.ExposureTime.value == pytest.approx(2000.0)  # 2 ms in SFNC's µs
    assert (nm.TriggerMode.value, nm.TriggerSource.value) == ("On", "Software")
    assert cams[1].triggers == 1 and cams[0].triggers == 0
    # The camera's pixels, unscaled: 64 DN of board, the spot 2 ms x 1000 DN/ms above it.
    assert img.dtype == np.uint16 and img.shape == (H, W)
    assert img[21, 31] == 64 + 2000 and img[0, 0] == 64
    # Exposure control between frames (e.g. the sun-off frame at the sun-on exposure).
    src.set_exposure(1e-3)
    assert src.capture(_req("off"))[21, 31] == 64 + 1000 and cams[1].triggers == 2
    src.close()
    assert cams[1].destroyed and not cams[1].started and harv.resets == 1


def test_no_frame_is_a_frame_source_error_naming_the_camera():
    cam = FakeCamera("A1")
    src = GenICamSource("p.cti", harvester_factory=lambda: FakeHarvester([cam]), timeout_s=0.5)
    src.open()
    cam.node_map.TriggerSoftware = Command(lambda: None)  # the trigger is lost
    with pytest.raises(FrameSourceError, match="no frame within 0.5 s for H001 \\(on\\)"):
        src.capture(_req())


def test_free_running_needs_no_trigger_and_a_missing_camera_is_named():
    cam = FakeCamera("A1")
    src = GenICamSource("p.cti", trigger="free", harvester_factory=lambda: FakeHarvester([cam]))
    assert src.capture(_req()).shape == (H, W) and cam.triggers == 0
    assert cam.node_map.TriggerMode.value == "Off"
    other = GenICamSource("p.cti", serial="ZZ", harvester_factory=lambda: FakeHarvester([cam]))
    with pytest.raises(FrameSourceError, match="'ZZ' not found .*found: A1"):
        other.open()
    with pytest.raises(FrameSourceError, match="no GenICam camera found"):
        GenICamSource("p.cti", harvester_factory=lambda: FakeHarvester([])).open()


def test_missing_producer_file_is_named(tmp_path):
    with pytest.raises(FrameSourceError, match="producer .*missing.cti: file not found"):
        GenICamSource(tmp_path / "missing.cti").open()


PLANT = """
[plant]
field = "field.toml"
camera = "camera.toml"

[camera_source]
type = "genicam"
cti = "/opt/vendor/lib/producer.cti"
serial = "22004711"
exposure_us = 250
gain_db = 3.0
timeout_s = 4.0
"""


def test_plant_toml_genicam_source(tmp_path):
    shutil.copy(DATA / "field_small.toml", tmp_path / "field.toml")
    (tmp_path / "camera.toml").write_text(
        '[camera]\nwidth_px = 64\nheight_px = 48\nfx_px = 100.0\nfy_px = 100.0\ntarget = "cal1"\n'
    )
    (tmp_path / "plant.toml").write_text(PLANT)
    s = load_plant(tmp_path / "plant.toml").source
    assert (s.type, s.serial, s.gain_db, s.trigger, s.timeout_s) == (
        "genicam", "22004711", 3.0, "software", 4.0
    )  # fmt: skip
    assert s.exposure_s == pytest.approx(250e-6) and str(s.cti) == "/opt/vendor/lib/producer.cti"
    src = open_source(s)
    assert isinstance(src, GenICamSource) and src.exposure_s == pytest.approx(250e-6)
    (tmp_path / "plant.toml").write_text(PLANT + "device = 0\n")
    with pytest.raises(ConfigError, match="camera_source.device.*genicam"):
        load_plant(tmp_path / "plant.toml")
    (tmp_path / "plant.toml").write_text(PLANT.replace('"genicam"', '"opencv"').replace(
        'cti = "/opt/vendor/lib/producer.cti"\n', ""))  # fmt: skip
    with pytest.raises(ConfigError, match="camera_source.exposure_us.*only for type = .genicam"):
        load_plant(tmp_path / "plant.toml")
