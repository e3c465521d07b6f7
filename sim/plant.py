"""The simulated plant for campaigns: a camera against emulated controllers, and a
rehearsal plant (tests, rehearsals).

:class:`SimulatedCamera` is a :class:`~heliostat.campaign.sources.FrameSource`: for a
sun-on request it reads the *physical* axis positions of the emulated controller
(:class:`sim.controllers.ControllerModel`, backlash included), runs them through the
heliostat's TRUE error model to a mirror pose, throws the flux spot
(:func:`sim.optics.flux_spot`) for the sun at the clock's time and renders the frame
(:func:`sim.camera.render_frame`); a sun-off request renders the target with the spot of
wherever the heliostat now points (nothing, once it is off the target) at the same
exposure. :class:`FolderFeeder` writes those frames into a watched folder and takes them
back through a :class:`~heliostat.campaign.sources.FolderSource`, so the folder path of
a plant is exercised too.

:func:`make_sim_plant` builds a rehearsal plant (field, hidden truth, emulated controllers
on a pty, ``plant.toml``). This is a harness around the plant's campaign code, so it lives
in the simulator: the plant's packages never import ``sim``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from heliostat.campaign.sources import CaptureRequest, FolderSource


class SimulatedCamera:
    """Frames rendered from emulated controllers and true errors.

    Parameters
    ----------
    field : FieldConfig
    camera : CameraConfig
        With a pose.
    target : Target
    truth : mapping heliostat id -> KinematicErrors
        True errors.
    controllers : mapping heliostat id -> sim.controllers.ControllerModel
        The emulated controllers (their clock must be the campaign's).
    rng : numpy.random.Generator
        Sensor noise.
    neighbours : sequence of sim.optics.FluxSpot
        Spots of heliostats not under test that stay on the target (in sun-on and sun-off
        frames alike), e.g. others aimed at the target for their own measurement.
    """

    def __init__(
        self, field, camera, target, truth: Mapping, controllers: Mapping, rng, neighbours=()
    ) -> None:
        self.field, self.camera, self.target = field, camera, target
        self.truth, self.controllers, self.rng = truth, controllers, rng
        self.neighbours = list(neighbours)
        self._exposure: float | None = None
        self._sun_on: tuple | None = None  # (heliostat, slot, u_sun, dni) of the sun-on frame
        self.truths: dict[tuple[str, str], NDArray] = {}
        self.requests: list[CaptureRequest] = []

    def _spot(self, request: CaptureRequest):
        from heliostat.sun import clear_sky_dni, sun_position
        from sim.optics import flux_spot

        hid = request.heliostat_id
        h = self.field.heliostats[hid]
        model = self.controllers[hid]
        model.advance()
        steps = np.array([model.output_steps], dtype=float)
        pose = h.kinematics.forward(steps, self.truth[hid])
        sun = self._sun_on
        if request.phase != "off" or sun is None or sun[:2] != (hid, request.slot):
            # the sun-off frame follows within seconds: it reuses the sun-on frame's sun
            t = pd.DatetimeIndex([request.time_utc])
            u_sun = sun_position(self.field.site, t).u_sun_enu[0]
            sun = (hid, request.slot, u_sun, float(clear_sky_dni(self.field.site, t)[0]))
            self._sun_on = sun
        return flux_spot(h, pose, sun[2], sun[3], self.target, rng=None)

    def capture(self, request: CaptureRequest) -> NDArray:
        from sim.camera import render_frame

        self.requests.append(request)
        spot = self._spot(request)
        hit = self.target.contains(spot.centre_xy_m[None])[0]
        if request.phase == "on":
            img, truths = render_frame(
                self.camera, self.target, [spot, *self.neighbours], rng=self.rng
            )
            self._exposure = truths[0].exposure
            self.truths[(request.heliostat_id, request.slot)] = truths[0].centroid_xy_m
            return img
        spots = ([spot] if hit else []) + self.neighbours
        img, _ = render_frame(
            self.camera, self.target, spots, rng=self.rng, exposure=self._exposure
        )
        return img

    def close(self) -> None:
        pass


class FolderFeeder:
    """Puts each simulated frame into a watched folder and takes it back through a
    :class:`FolderSource` (as a camera program and the plant's campaign would)."""

    def __init__(self, camera: SimulatedCamera, folder: str | Path, clock) -> None:
        self.camera = camera
        self.folder = Path(folder)
        self.source = FolderSource(self.folder, timeout_s=10.0, poll_s=1.0, clock=clock)
        self.n = 0

    def capture(self, request: CaptureRequest) -> NDArray:
        import cv2

        img = self.camera.capture(request)
        self.n += 1
        name = f"{self.n:06d}_{request.heliostat_id}_{request.phase}.png"
        tmp = self.folder / f".{name}"
        if not cv2.imwrite(str(tmp), img):
            raise OSError(f"{tmp}: could not write the frame")
        tmp.replace(self.folder / name)
        return self.source.capture(request)

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- rehearsal
#: Start of the rehearsal day (before sunrise at the simulator's Jülich site).
START_UTC = "2025-04-01T05:30:00Z"

PLANT_TOML = """
[plant]
field = "field.toml"
camera = "camera.toml"
history_db = "history.sqlite"
frames_dir = "frames"

[camera_source]
type = "folder"
folder = "incoming"
timeout_s = 10.0
poll_s = 1.0

[schedule]
slot_minutes = 60
min_elevation_deg = 15
settle_timeout_s = 120
poll_s = 5
duration_h = 12

[fit]
min_points = 6
min_azimuth_spread_deg = 40
min_elevation_spread_deg = 10
refit_after = 3
"""


@dataclass
class SimPlant:
    """A rehearsal plant (see :func:`make_sim_plant`)."""

    root: Path
    field: object
    truth: dict
    clock: object  # sim.controllers.ManualClock, shared by the controllers
    bus: object  # sim.controllers.EmulatedBus
    controllers: dict  # heliostat id -> sim.controllers.ControllerModel

    @property
    def plant_toml(self) -> Path:
        return self.root / "plant.toml"

    def plant(self):
        from heliostat.campaign.config import load_plant

        return load_plant(self.plant_toml)

    def utc_clock(self, start_utc: str = START_UTC):
        """UTC time on the controllers' manual clock (sleeping advances both)."""
        from heliostat.campaign.schedule import SteppedClock

        return SteppedClock(start_utc, self.clock)

    def source(self, clock, seed: int = 1, neighbours=()) -> FolderFeeder:
        """Simulated camera feeding the plant's watched folder (``neighbours``: see
        :class:`SimulatedCamera`)."""
        p = self.plant()
        cam = SimulatedCamera(
            p.field,
            p.camera,
            p.target,
            self.truth,
            self.controllers,
            np.random.default_rng(seed),
            neighbours,
        )
        return FolderFeeder(cam, p.source.folder, clock)

    def stop(self) -> None:
        self.bus.stop()


def make_sim_plant(root: Path, n: int = 2, seed: int = 5, plant_toml: str = PLANT_TOML):
    """A rehearsal plant: a field of ``n`` az-el heliostats with hidden true errors,
    their emulated controllers on one pty bus (started; call ``stop()``), and
    ``plant.toml``, ``field.toml`` (the bus on the pty) and ``camera.toml`` in ``root``."""
    from heliostat.config import dumps_toml, field_to_dict
    from heliostat.kinematics import error_names
    from sim.camera import camera_to_dict, place_camera
    from sim.campaign import pick_target
    from sim.controllers import ControllerModel, EmulatedBus, ManualClock, specs_for_field
    from sim.field import draw_truth, generate_field

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    field = generate_field(n, rng, drives="azel")
    truth = draw_truth(field, rng)
    clock = ManualClock()
    models = [
        ControllerModel(s, clock=clock, param_names=error_names(s.drive))
        for s in specs_for_field(field, "bus1")
    ]
    # timing=False: the line is as fast as the host (the campaign's waits run on the
    # manual clock, not on the wire)
    bus = EmulatedBus(models, timing=False)
    port = bus.start(announce_port=False)
    d = field_to_dict(field)
    d["buses"]["bus1"]["port"] = port
    (root / "field.toml").write_text(dumps_toml(d))
    cam = place_camera(field, pick_target(field), width_px=256, height_px=208)
    (root / "camera.toml").write_text(dumps_toml(camera_to_dict(cam)))
    (root / "plant.toml").write_text(plant_toml)
    by_addr = {m.spec.address: m for m in models}
    ctl = {hid: by_addr[h.address] for hid, h in field.heliostats.items()}
    return SimPlant(root, field, truth, clock, bus, ctl)
