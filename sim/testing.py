"""pytest plugin: the simulated plant as a test bench for other projects.

Enable it in a project's tests (it is deliberately not a ``pytest11`` entry point, which
would load it into every project that installs this package)::

    pytest -p sim.testing              # on the command line, or in conftest.py:
    pytest_plugins = ["sim.testing"]

Fixtures (function scope; each test gets a fresh plant)
-------------------------------------------------------
``plant_clock`` : :class:`sim.plant.PlantClock`
    Simulated time: called it returns seconds (the controllers' clock), ``now_utc()`` /
    ``sleep(s)`` make it a campaign clock, ``advance(s)`` / ``advance_to(t)`` move it.
    Nothing sleeps: a day of campaign runs in seconds.
``heliostat_plant`` : :class:`sim.plant.SimPlant`
    A generated field with hidden true errors (``truth``), its emulated controllers on
    a pty bus, ``plant.toml`` / ``field.toml`` / ``camera.toml`` in ``root``; seeded.
``emulated_bus`` : :class:`EmulatedBusHandle`
    The plant's controllers as a Modbus RTU master sees them: ``port`` (a device path to
    open with pyserial/pymodbus/your firmware tool), ``field_path``, the controller
    models by address and by heliostat (ground truth: ``applied`` commands, axes), the
    bus's fault counts, and the fault knobs (``faults`` can be changed mid-test).
``camera`` : :class:`PlantCamera`
    Frames of the plant's calibration target at the clock's time with the spot of
    wherever the heliostat physically points, and the truth of each sun-on frame.
``fault_scenario`` : :class:`FaultScenario`
    Parametrises a test over named line-fault scenarios (:data:`FAULT_SCENARIOS`); the
    plant's bus (hence ``emulated_bus``) runs under the scenario.

Markers
-------
``@pytest.mark.heliostat_plant(n=2, seed=5, style="aruco", watchdog_s=60.0, drives="azel")``
    Size, seed, target style (``"aruco"`` or ``"sunlit"``: a real empty-target image in
    sunlight), controller watchdog and drive types (``"azel"``, ``"linear"``,
    ``"mixed"``) of the plant.
``@pytest.mark.plant_clock(start_utc="2025-04-01T05:30:00Z")``
    Start of the simulated time.
``@pytest.mark.bus_faults(corrupt_p=0, drop_p=0, truncate_p=0, late_p=0, reset_p=0, seed=0)``
    Line-fault probabilities per frame (:class:`sim.controllers.FaultProfile`).
``@pytest.mark.fault_scenarios("clean", "lossy", ...)``
    The scenarios a test using ``fault_scenario`` runs under (default: all).
``@pytest.mark.camera(seed=1)``
    Seed of the camera's sensor noise (and sunlit conditions).

See ``docs/testing.md`` for a worked example of a downstream project's test.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sim.controllers import FaultProfile
from sim.plant import START_UTC, PlantClock

__all__ = [
    "FAULT_SCENARIOS",
    "EmulatedBusHandle",
    "FaultScenario",
    "PlantCamera",
    "Shot",
]


@dataclass(frozen=True, slots=True)
class FaultScenario:
    """A named line-fault scenario of the emulated bus.

    Attributes
    ----------
    name : str
    faults : sim.controllers.FaultProfile
        Per-frame fault probabilities (request and reply apart).
    watchdog_s : float or None
        Controllers' watchdog timeout (None: the plant's). [s]
    description : str
    """

    name: str
    faults: FaultProfile = field(default_factory=FaultProfile)
    watchdog_s: float | None = None
    description: str = ""


#: The scenarios ``fault_scenario`` runs a test under, by name.
FAULT_SCENARIOS: dict[str, FaultScenario] = {
    s.name: s
    for s in (
        FaultScenario("clean", description="no faults"),
        FaultScenario("noisy", FaultProfile(corrupt_p=0.05), description="5 % bit errors"),
        FaultScenario("lossy", FaultProfile(drop_p=0.05), description="5 % frames lost"),
        FaultScenario(
            "truncated", FaultProfile(truncate_p=0.05), description="5 % frames cut short"
        ),
        FaultScenario(
            "late",
            FaultProfile(late_p=0.05, late_s=0.3),
            description="5 % of replies 0.3 s late (after a master's usual timeout)",
        ),
        FaultScenario(
            "resets",
            FaultProfile(reset_p=0.02),
            description="2 % of requests reset the controller (reply lost, 50 ms boot)",
        ),
        FaultScenario(
            "watchdog",
            watchdog_s=5.0,
            description="controllers stow after 5 s of simulated time without contact",
        ),
        FaultScenario(
            "rough",
            FaultProfile(corrupt_p=0.02, drop_p=0.02, truncate_p=0.01, reset_p=0.005),
            description="a bit of everything",
        ),
    )
}

_MARKERS = (
    "heliostat_plant(n=2, seed=5, style='aruco', watchdog_s=60.0, drives='azel'): the "
    "simulated plant of sim.testing's heliostat_plant fixture",
    "plant_clock(start_utc): start of sim.testing's simulated time",
    "bus_faults(corrupt_p, drop_p, truncate_p, late_p, reset_p, seed): line faults of "
    "sim.testing's emulated bus",
    "fault_scenarios(*names): scenarios of sim.testing's fault_scenario parameter "
    f"({', '.join(FAULT_SCENARIOS)})",
    "camera(seed=1): seed of sim.testing's camera noise",
)


def pytest_configure(config: pytest.Config) -> None:
    for line in _MARKERS:
        config.addinivalue_line("markers", line)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "fault_scenario" not in metafunc.fixturenames:
        return
    mark = metafunc.definition.get_closest_marker("fault_scenarios")
    names = tuple(mark.args) if mark and mark.args else tuple(FAULT_SCENARIOS)
    unknown = [n for n in names if n not in FAULT_SCENARIOS]
    if unknown:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid}: unknown fault scenario(s) "
            f"{', '.join(map(repr, unknown))}; known: {', '.join(FAULT_SCENARIOS)}"
        )
    metafunc.parametrize("fault_scenario", [FAULT_SCENARIOS[n] for n in names], ids=names)


def _marker_kwargs(request: pytest.FixtureRequest, name: str, allowed: tuple[str, ...]) -> dict:
    mark = request.node.get_closest_marker(name)
    if mark is None:
        return {}
    if mark.args:
        raise pytest.UsageError(f"@pytest.mark.{name} takes keyword arguments only")
    bad = sorted(set(mark.kwargs) - set(allowed))
    if bad:
        raise pytest.UsageError(
            f"@pytest.mark.{name}: unknown argument(s) {', '.join(bad)}; "
            f"known: {', '.join(allowed)}"
        )
    return dict(mark.kwargs)


# --------------------------------------------------------------------------- fixtures
@pytest.fixture
def plant_clock(request: pytest.FixtureRequest) -> PlantClock:
    """Simulated plant time (manual; see :class:`sim.plant.PlantClock`)."""
    kw = _marker_kwargs(request, "plant_clock", ("start_utc",))
    return PlantClock(kw.get("start_utc", START_UTC))


@pytest.fixture
def heliostat_plant(request: pytest.FixtureRequest, plant_clock, tmp_path: Path) -> Iterator:
    """A started simulated plant (:class:`sim.plant.SimPlant`), stopped after the test."""
    from sim.plant import make_sim_plant

    kw = _marker_kwargs(request, "heliostat_plant", ("n", "seed", "style", "watchdog_s", "drives"))
    fkw = _marker_kwargs(
        request,
        "bus_faults",
        ("corrupt_p", "drop_p", "truncate_p", "late_p", "reset_p", "late_s", "boot_s", "seed"),
    )
    bus_seed = int(fkw.pop("seed", 0))
    faults = FaultProfile(**fkw)
    if "fault_scenario" in request.fixturenames:
        scenario = request.getfixturevalue("fault_scenario")
        faults = scenario.faults
        if scenario.watchdog_s is not None:
            kw["watchdog_s"] = scenario.watchdog_s
    plant = make_sim_plant(
        tmp_path / "plant",
        n=int(kw.get("n", 2)),
        seed=int(kw.get("seed", 5)),
        clock=plant_clock,
        faults=faults,
        bus_seed=bus_seed,
        watchdog_s=float(kw.get("watchdog_s", 60.0)),
        style=kw.get("style", "aruco"),
        drives=kw.get("drives", "azel"),
    )
    try:
        yield plant
    finally:
        plant.stop()


@dataclass
class EmulatedBusHandle:
    """The plant's RS-485 bus as a Modbus RTU master (your code) meets it.

    Attributes
    ----------
    port : str
        Device path of the pty (open it like ``/dev/ttyUSB0``: 8N1, the field's baud rate).
    field_path : Path
        ``field.toml`` whose bus points at ``port``.
    bus : sim.controllers.EmulatedBus
    controllers : dict int -> sim.controllers.ControllerModel
        By Modbus address; ground truth (``applied``, ``target_steps``,
        ``output_steps``, ``flags``).
    by_heliostat : dict str -> sim.controllers.ControllerModel
    """

    port: str
    field_path: Path
    bus: object
    controllers: dict
    by_heliostat: dict

    @property
    def stats(self):
        """What happened on the line so far (:class:`sim.controllers.BusStats`)."""
        return self.bus.stats

    @property
    def faults(self) -> FaultProfile:
        """Line-fault probabilities now in force."""
        return self.bus.faults

    @faults.setter
    def faults(self, profile: FaultProfile) -> None:
        if not isinstance(profile, FaultProfile):
            raise TypeError(f"faults must be a sim.controllers.FaultProfile, got {profile!r}")
        self.bus.faults = profile

    def reset(self, address: int) -> None:
        """Power-cycle one controller (its reply to the next request is lost while booting)."""
        with self.bus._lock:
            self.controllers[address].reset()


@pytest.fixture
def emulated_bus(heliostat_plant) -> EmulatedBusHandle:
    """The plant's controllers on their virtual serial port (:class:`EmulatedBusHandle`)."""
    ctl = {m.spec.address: m for m in heliostat_plant.controllers.values()}
    return EmulatedBusHandle(
        heliostat_plant.port,
        heliostat_plant.root / "field.toml",
        heliostat_plant.bus,
        ctl,
        dict(heliostat_plant.controllers),
    )


@dataclass(frozen=True, slots=True)
class Shot:
    """One frame of the simulated camera.

    Attributes
    ----------
    image : ndarray (H, W)
        Raw values (uint16 for 12-bit, uint8 for the 8-bit sunlit camera). [DN]
    phase : {"on", "off"}
    time_utc : Timestamp
    truth : sim.camera.FrameTruth or None
        For a sun-on frame: the flux centroid on the target (``centroid_xy_m`` [m],
        ``centroid_px`` [px], ``fraction_on_target``...); None for a sun-off frame.
    """

    image: object
    phase: str
    time_utc: object
    truth: object = None


class PlantCamera:
    """The plant's camera at the clock's time (a campaign ``FrameSource`` as well).

    Parameters
    ----------
    plant : sim.plant.SimPlant
    clock : sim.plant.PlantClock
    seed : int
        Sensor noise (and the sunlit conditions).
    """

    def __init__(self, plant, clock: PlantClock, seed: int = 1) -> None:
        self.plant, self.clock = plant, clock
        self._cam = plant.camera(seed)
        self.config = self._cam.camera  # heliostat.config.CameraConfig
        self.target = self._cam.target  # heliostat.config.Target
        self._n = 0

    @property
    def truths(self) -> dict:
        """Flux centroid of every sun-on frame, by (heliostat, slot). [m, target plane]"""
        return self._cam.truths

    def capture(self, request):
        """:class:`~heliostat.campaign.sources.FrameSource` interface."""
        return self._cam.capture(request)

    def shoot(self, heliostat_id: str, phase: str = "on") -> Shot:
        """A frame of the target now, with ``heliostat_id``'s beam where its axes point
        (its sun-off frame follows its sun-on frame at the same exposure)."""
        from heliostat.campaign.sources import CaptureRequest

        if heliostat_id not in self._cam.controllers:
            raise KeyError(f"no heliostat {heliostat_id!r} in the plant")
        if phase not in ("on", "off"):
            raise ValueError(f"phase must be 'on' or 'off', got {phase!r}")
        if phase == "on":
            self._n += 1
        t = self.clock.now_utc()
        img = self._cam.capture(CaptureRequest(heliostat_id, phase, f"shot{self._n}", t))
        return Shot(img, phase, t, self._cam.last_truth if phase == "on" else None)

    def pair(self, heliostat_id: str) -> tuple[Shot, Shot]:
        """A sun-on frame and its sun-off frame (same exposure), as a plant takes them.

        The sun-off frame is of the target with the heliostat where it is: move it off
        the target between the two if your test needs a clean dark frame (the campaign
        does), or use this pair for a spot-free check.
        """
        return self.shoot(heliostat_id, "on"), self.shoot(heliostat_id, "off")

    def close(self) -> None:
        pass


@pytest.fixture
def camera(request: pytest.FixtureRequest, heliostat_plant, plant_clock) -> PlantCamera:
    """The plant's simulated camera (:class:`PlantCamera`)."""
    kw = _marker_kwargs(request, "camera", ("seed",))
    return PlantCamera(heliostat_plant, plant_clock, int(kw.get("seed", 1)))
