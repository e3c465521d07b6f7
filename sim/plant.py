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
from contextlib import nullcontext
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
    boards : sequence of sim.real_texture.BoardImage, optional
        Real empty-target images: the ``sunlit`` style (:mod:`sim.real_texture`), each
        sun-on / sun-off pair under conditions drawn by
        :func:`sim.real_texture.draw_conditions` (board level, contrast, a shadow of the
        tower structure, ambient drift). None: the ArUco board in diffuse light.
    lock : context manager, optional
        Held while the controllers are read (a bus serving them from another thread).
    """

    def __init__(
        self,
        field,
        camera,
        target,
        truth: Mapping,
        controllers: Mapping,
        rng,
        neighbours=(),
        boards=None,
        lock=None,
    ) -> None:
        self.field, self.camera, self.target = field, camera, target
        self.truth, self.controllers, self.rng = truth, controllers, rng
        self.neighbours = list(neighbours)
        self.boards = list(boards) if boards else []
        self._lock = lock
        self._exposure: float | None = None
        self._ambient_w_m2: float | None = None
        self._conditions = None  # SunlitConditions of the last sun-on frame
        self._sun_on: tuple | None = None  # (heliostat, slot, u_sun, dni) of the sun-on frame
        self.truths: dict[tuple[str, str], NDArray] = {}
        #: FrameTruth of the last sun-on frame (None before the first one).
        self.last_truth = None
        self.requests: list[CaptureRequest] = []

    def _spot(self, request: CaptureRequest):
        from heliostat.sun import clear_sky_dni, sun_position
        from sim.optics import flux_spot

        hid = request.heliostat_id
        h = self.field.heliostats[hid]
        model = self.controllers[hid]
        with self._lock or nullcontext():
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
        try:
            return flux_spot(h, pose, sun[2], sun[3], self.target, rng=None)
        except ValueError:  # the beam misses the target plane (sun behind, stowed...)
            return None

    def capture(self, request: CaptureRequest) -> NDArray:
        from sim.camera import render_frame

        self.requests.append(request)
        spot = self._spot(request)
        hit = spot is not None and self.target.contains(spot.centre_xy_m[None])[0]
        if request.phase == "on":
            if spot is None:  # nothing of this heliostat on the target plane
                return self._no_spot(request)
            kw = {}
            if self.boards:
                from sim.real_texture import draw_conditions

                cond = draw_conditions(self.rng, self.target, len(self.boards))
                self._conditions = cond
                kw = dict(
                    board=self.boards[cond.image],
                    shadow=cond.shadow,
                    board_fraction=cond.board_fraction,
                    contrast=cond.contrast,
                )
            img, truths = render_frame(
                self.camera, self.target, [spot, *self.neighbours], rng=self.rng, **kw
            )
            self._exposure = truths[0].exposure
            self._ambient_w_m2 = truths[0].ambient_w_m2
            self.last_truth = truths[0]
            self.truths[(request.heliostat_id, request.slot)] = truths[0].centroid_xy_m
            return img
        spots = ([spot] if hit else []) + self.neighbours
        kw = {}
        cond = self._conditions
        if self.boards and cond is not None:
            # the sun-off frame: same board and exposure, the ambient drifted, the shadow moved
            kw = dict(
                board=self.boards[cond.image],
                shadow=cond.dark_shadow,
                ambient_w_m2=self._ambient_w_m2 * (1.0 + cond.drift),
            )
            if self._exposure is None:  # the sun-on frame had no spot: exposed for the board
                kw["board_fraction"] = cond.board_fraction
        img, _ = render_frame(
            self.camera, self.target, spots, rng=self.rng, exposure=self._exposure, **kw
        )
        return img

    def _no_spot(self, request: CaptureRequest) -> NDArray:
        """A sun-on frame without the heliostat's beam (truth: none)."""
        from sim.camera import render_frame

        kw: dict = {}
        self._conditions = None
        if self.boards:  # the sunlit board, exposed for the board, without the beam
            from sim.real_texture import draw_conditions

            cond = self._conditions = draw_conditions(self.rng, self.target, len(self.boards))
            kw = dict(
                board=self.boards[cond.image],
                shadow=cond.shadow,
                board_fraction=cond.board_fraction,
            )
        img, truths = render_frame(self.camera, self.target, self.neighbours, rng=self.rng, **kw)
        self._exposure = truths[0].exposure if truths else None
        self._ambient_w_m2 = truths[0].ambient_w_m2 if truths else 150.0
        self.last_truth = None
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


class PlantClock:
    """The plant's simulated time: a manual seconds clock that is also a UTC clock.

    One object serves both sides of a rehearsal: called, it returns seconds (the
    :class:`sim.controllers.ControllerModel` clock, axes and watchdog); ``now_utc`` and
    ``sleep`` make it a campaign :class:`~heliostat.campaign.schedule.Clock`, so a
    campaign that waits advances the controllers with it and a day runs in seconds.

    Parameters
    ----------
    start_utc : str or Timestamp
        UTC time at 0 s (timezone-aware, e.g. ``2025-04-01T05:30:00Z``).
    """

    def __init__(self, start_utc=START_UTC) -> None:
        t = pd.Timestamp(start_utc)
        if t.tzinfo is None:
            raise ValueError(f"start_utc must carry a timezone (e.g. ...Z), got {start_utc!r}")
        self.start_utc = t.tz_convert("UTC")
        self.t_s = 0.0

    def __call__(self) -> float:
        """Seconds since ``start_utc``. [s]"""
        return self.t_s

    def advance(self, dt_s: float) -> None:
        """Move time forward by ``dt_s``. [s]"""
        if not dt_s >= 0:
            raise ValueError(f"a clock cannot run backwards (dt_s={dt_s!r})")
        self.t_s += float(dt_s)

    def advance_to(self, t_utc) -> None:
        """Move time forward to ``t_utc`` (timezone-aware; not before now)."""
        t = pd.Timestamp(t_utc)
        if t.tzinfo is None:
            raise ValueError(f"time must be timezone-aware UTC, got {t_utc!r}")
        self.advance((t - self.now_utc()).total_seconds())

    def now_utc(self) -> pd.Timestamp:
        """Current simulated time, UTC."""
        return self.start_utc + pd.Timedelta(seconds=self.t_s)

    def sleep(self, seconds: float) -> None:
        """What a campaign's wait does here: advance, at once. [s]"""
        if seconds > 0:
            self.advance(seconds)


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


#: Target styles of a rehearsal plant (see :func:`make_sim_plant`).
PLANT_STYLES = ("aruco", "sunlit")


@dataclass
class SimPlant:
    """A rehearsal plant (see :func:`make_sim_plant`)."""

    root: Path
    field: object
    truth: dict
    clock: object  # sim.controllers.ManualClock, shared by the controllers
    bus: object  # sim.controllers.EmulatedBus
    controllers: dict  # heliostat id -> sim.controllers.ControllerModel
    style: str = "aruco"
    seed: int = 5

    @property
    def plant_toml(self) -> Path:
        return self.root / "plant.toml"

    @property
    def port(self) -> str:
        """The pty path the controllers are served on."""
        return self.bus.port

    def plant(self):
        from heliostat.campaign.config import load_plant

        return load_plant(self.plant_toml)

    def utc_clock(self, start_utc: str = START_UTC):
        """UTC time on the controllers' manual clock (sleeping advances both)."""
        from heliostat.campaign.schedule import SteppedClock

        return SteppedClock(start_utc, self.clock)

    def camera(self, seed: int = 1, neighbours=()) -> SimulatedCamera:
        """The simulated camera of the plant's target (``neighbours``: see
        :class:`SimulatedCamera`); real sunlit boards for the ``sunlit`` style."""
        p = self.plant()
        boards = None
        if self.style == "sunlit":
            from sim.real_texture import load_board_image, target_image_paths

            boards = [load_board_image(f) for f in target_image_paths()]
        return SimulatedCamera(
            p.field,
            p.camera,
            p.target,
            self.truth,
            self.controllers,
            np.random.default_rng(seed),
            neighbours,
            boards=boards,
        )

    def source(self, clock, seed: int = 1, neighbours=()) -> FolderFeeder:
        """Simulated camera feeding the plant's watched folder (``neighbours``: see
        :class:`SimulatedCamera`)."""
        return FolderFeeder(self.camera(seed, neighbours), self.plant().source.folder, clock)

    def on_target_steps(self, heliostat_id: str, t_utc) -> tuple[int, int] | None:
        """Setpoint of the NOMINAL model that puts the beam on the target centre at
        ``t_utc`` (what the plant would send; the true errors move the spot off it), or
        None when unreachable. [steps]"""
        from heliostat.campaign.schedule import on_target_steps
        from heliostat.sun import sun_position
        from sim.campaign import pick_target

        h = self.field.heliostats[heliostat_id]
        target = pick_target(self.field)
        u_sun = sun_position(self.field.site, pd.DatetimeIndex([pd.Timestamp(t_utc)])).u_sun_enu
        st = on_target_steps(h, target.centre_enu_m, u_sun)
        return None if st is None else (int(st[0]), int(st[1]))

    def move(self, heliostat_id: str, steps: tuple[int, int]) -> None:
        """Set a controller's target as its local panel would (no Modbus traffic); the
        axes then slew as the clock advances. It counts as contact for the watchdog,
        which stows the heliostat when nothing else talks to it for its timeout. [steps]"""
        from firmware_bridge import registers as R

        m = self.controllers[heliostat_id]
        lo, hi = m.spec.min_steps, m.spec.max_steps
        if not all(a <= s <= b for s, a, b in zip(steps, lo, hi, strict=True)):
            raise ValueError(f"{heliostat_id}: setpoint {steps} outside the travel {lo}..{hi}")
        with self.bus._lock:
            m.advance()
            m.t_contact_s = m.clock()
            m.target_steps = [int(steps[0]), int(steps[1])]
            m.flags &= ~(R.Flag.STOWING | R.Flag.STOWED | R.Flag.WATCHDOG_EXPIRED)

    def stop(self) -> None:
        self.bus.stop()


def make_sim_plant(
    root: Path,
    n: int = 2,
    seed: int = 5,
    plant_toml: str = PLANT_TOML,
    *,
    clock=None,
    faults=None,
    bus_seed: int = 0,
    watchdog_s: float = 60.0,
    style: str = "aruco",
    drives: str = "azel",
):
    """A rehearsal plant: a field of ``n`` heliostats with hidden true errors,
    their emulated controllers on one pty bus (started; call ``stop()``), and
    ``plant.toml``, ``field.toml`` (the bus on the pty) and ``camera.toml`` in ``root``.

    Parameters
    ----------
    root : Path
        Folder of the plant's files (created).
    n : int
        Heliostats (1..247: one bus).
    seed : int
        Field layout and true errors.
    plant_toml : str
        Text of ``plant.toml``.
    clock : sim.controllers.ManualClock, optional
        Seconds clock of the controllers (default: a new one at 0).
    faults : sim.controllers.FaultProfile, optional
        Line faults of the bus (default none).
    bus_seed : int
        Seed of the fault draws.
    watchdog_s : float
        Controllers' watchdog timeout, 0 = off. [s]
    style : {"aruco", "sunlit"}
        ``aruco``: the ArUco board in diffuse light; ``sunlit``: a real empty-target image
        in sunlight (the target listed without markers, registered by the camera pose).
    drives : str
        ``"azel"``, ``"linear"`` (Juelich-type linear actuators) or ``"mixed"``
        (:func:`sim.field.generate_field`).
    """
    from dataclasses import replace

    from heliostat.config import dumps_toml, field_to_dict
    from heliostat.kinematics import error_names
    from sim.camera import camera_to_dict, place_camera
    from sim.campaign import pick_target
    from sim.controllers import ControllerModel, EmulatedBus, ManualClock, specs_for_field
    from sim.field import draw_truth, generate_field

    if style not in PLANT_STYLES:
        raise ValueError(f"style must be one of {', '.join(PLANT_STYLES)}, got {style!r}")
    if not 1 <= n <= 247:
        raise ValueError(f"n must lie in 1..247 (one bus), got {n!r}")
    if not (watchdog_s >= 0 and watchdog_s * 10 <= 0xFFFE):
        raise ValueError(f"watchdog_s must lie in [0, 6553.4] s, got {watchdog_s!r}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    field = generate_field(n, rng, drives=drives)
    truth = draw_truth(field, rng)
    target = pick_target(field)
    if style == "sunlit" and target.markers is not None:
        # a real board has no ArUco markers: the campaign registers it by the camera pose
        target = replace(target, markers=None)
        targets = {target.id: target}
        targets.update((k, t) for k, t in field.targets.items() if k != target.id)
        field = replace(field, targets=targets)
    clock = ManualClock() if clock is None else clock
    models = []
    for s in specs_for_field(field, "bus1"):
        m = ControllerModel(s, clock=clock, param_names=error_names(s.drive))
        m.watchdog_timeout_ds = int(round(watchdog_s * 10))
        models.append(m)
    # timing=False: the line is as fast as the host (the campaign's waits run on the
    # manual clock, not on the wire)
    bus = EmulatedBus(models, faults=faults, seed=bus_seed, timing=False)
    port = bus.start(announce_port=False)
    try:
        d = field_to_dict(field)
        d["buses"]["bus1"]["port"] = port
        (root / "field.toml").write_text(dumps_toml(d))
        bits = 8 if style == "sunlit" else 12  # the Juelich camera is 8-bit
        cam = place_camera(field, target, width_px=256, height_px=208, bit_depth=bits)
        (root / "camera.toml").write_text(dumps_toml(camera_to_dict(cam)))
        (root / "plant.toml").write_text(plant_toml)
    except BaseException:
        bus.stop()
        raise
    by_addr = {m.spec.address: m for m in models}
    ctl = {hid: by_addr[h.address] for hid, h in field.heliostats.items()}
    return SimPlant(root, field, truth, clock, bus, ctl, style, seed)
