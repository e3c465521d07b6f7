"""The plant in a box: a field's controllers, a camera and a clock in one process.

:class:`PlantServer` is what ``heliostat sim serve`` runs and what ``heliostat campaign
--simulate`` rehearses against (one mechanism for both):

* the field's controllers (:class:`sim.controllers.ControllerModel`), one
  :class:`~sim.controllers.EmulatedBus` per bus, each served on a pty (always) and
  optionally over TCP (:mod:`sim.modbus_tcp`): Modbus RTU framing over a TCP stream
  (what pyserial's ``socket://`` URL opens, as from a serial device server) and plain
  Modbus TCP (MBAP header; ``mbpoll -m tcp``, SCADA systems) through a gateway in front
  of the same emulated line (its faults included: a request or reply the line loses
  comes back as exception 0x0B, "gateway target device failed to respond");
* a camera (:class:`sim.plant.SimulatedCamera` for the campaign's sun-on / sun-off
  requests through :meth:`PlantServer.trigger`; a free-running frame of every beam on the
  target through :meth:`PlantServer.snapshot`), writing PNGs into a watched folder with
  the ground truth beside each in JSON;
* a simulated clock (:class:`ServeClock`): it runs at ``speed`` × real time from
  ``start_utc`` and jumps forward when a client (a rehearsed campaign) waits.

A campaign in another process follows the served plant through its control endpoint
(:class:`ControlServer`, JSON lines on loopback): :class:`RemoteClock` reads and jumps
the served clock, :class:`RemoteCamera` triggers the served camera (``heliostat campaign
--simulate --served served.json``).

All controllers of all buses, the TCP servers and the camera share one lock, so the
physics is read and changed by one thread at a time. Stopping the server closes every
port and withdraws every announcement (:mod:`firmware_bridge.ports`).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from firmware_bridge.ports import announce, withdraw
from sim.controllers import ControllerModel, EmulatedBus, FaultProfile, specs_for_field
from sim.modbus_tcp import ModbusTcpServer, RtuTcpServer, TcpServer, parse_host_port


class ServeClock:
    """Simulated time of a served plant: ``speed`` × real time, plus jumps.

    Called, it returns seconds since ``start_utc`` (the controllers' clock);
    ``now_utc`` / ``sleep`` make it a campaign clock whose waits jump the time forward
    at once (the controllers' axes and watchdogs move with it). ``speed=0`` stops the
    real-time drift: time moves only when advanced.

    Parameters
    ----------
    start_utc : str or Timestamp
        Timezone-aware start.
    speed : float
        Simulated seconds per real second (>= 0). [1]
    monotonic : callable
        Real seconds (tests inject a fake). [s]
    """

    def __init__(self, start_utc, speed: float = 1.0, monotonic=time.monotonic) -> None:
        t = pd.Timestamp(start_utc)
        if t.tzinfo is None:
            raise ValueError(f"start time must carry a timezone (e.g. ...Z), got {start_utc!r}")
        if not (np.isfinite(speed) and speed >= 0):
            raise ValueError(f"speed must be a finite number >= 0, got {speed!r}")
        self.start_utc = t.tz_convert("UTC")
        self.speed = float(speed)
        self._monotonic = monotonic
        self._t0 = monotonic()
        self._offset_s = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._offset_s + self.speed * (self._monotonic() - self._t0)

    def advance(self, dt_s: float) -> None:
        """Jump forward by ``dt_s``. [s]"""
        if not dt_s >= 0:
            raise ValueError(f"a clock cannot run backwards (dt_s={dt_s!r})")
        with self._lock:
            self._offset_s += float(dt_s)

    def now_utc(self) -> pd.Timestamp:
        return self.start_utc + pd.Timedelta(seconds=self())

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.advance(seconds)


@dataclass
class BusEndpoints:
    """Where one bus of a served plant is reachable."""

    name: str
    addresses: list[int]
    pty: str
    rtu_tcp: str = ""  # socket://HOST:PORT
    modbus_tcp: str = ""  # HOST:PORT

    def as_dict(self) -> dict:
        d = {"pty": self.pty, "addresses": self.addresses}
        if self.rtu_tcp:
            d["rtu_tcp"] = self.rtu_tcp
        if self.modbus_tcp:
            d["modbus_tcp"] = self.modbus_tcp
        return d


@dataclass
class PlantServer:
    """A field's controllers, camera and clock, served (see the module doc).

    Parameters
    ----------
    field : heliostat.config.FieldConfig
    truth : mapping heliostat id -> KinematicErrors
        The hidden true errors the camera renders with.
    camera : heliostat.config.CameraConfig
        With a pose.
    target : heliostat.config.Target
    frames_dir : Path or None
        Watched folder the camera writes into (None: frames are only returned).
    clock : ServeClock
    faults : FaultProfile
    seed : int
        Fault draws and sensor noise.
    watchdog_s : float
        Controllers' watchdog timeout, 0 = off. [s]
    timing : bool
        Model the RS-485 line's timing on the ptys.
    tcp, modbus_tcp : (host, port) or None
        First bus's TCP endpoints; bus i listens on port + i (port 0: any free port).
    boards : sequence of sim.real_texture.BoardImage, optional
        Real sunlit boards for the camera (None: the ArUco board).
    trigger_dir : Path, optional
        Folder for the frames a campaign triggers (default ``frames_dir``; apart from the
        free-running frames so a campaign's watched folder gets only its own).
    control : (host, port) or None
        Control endpoint for a campaign in another process (:class:`ControlServer`).
    announce_ports : bool
        Announce the ptys and ``socket://`` URLs as simulated (:mod:`firmware_bridge.ports`).
    """

    field: object
    truth: Mapping
    camera: object
    target: object
    frames_dir: Path | None
    clock: ServeClock
    faults: FaultProfile = field(default_factory=FaultProfile)
    seed: int = 0
    watchdog_s: float = 60.0
    timing: bool = True
    tcp: tuple[str, int] | None = None
    modbus_tcp: tuple[str, int] | None = None
    boards: list | None = None
    trigger_dir: Path | None = None
    control: tuple[str, int] | None = None
    announce_ports: bool = True

    def __post_init__(self) -> None:
        from heliostat.kinematics import error_names
        from sim.plant import SimulatedCamera

        if self.field.heliostats.keys() - self.truth.keys():
            missing = sorted(self.field.heliostats.keys() - self.truth.keys())
            raise ValueError(f"no true errors for heliostat(s) {', '.join(missing[:5])}")
        self.lock = threading.RLock()
        self.buses: dict[str, EmulatedBus] = {}
        self.controllers: dict[str, ControllerModel] = {}
        for i, bname in enumerate(sorted({h.bus for h in self.field.heliostats.values()})):
            models = []
            for spec in specs_for_field(self.field, bname):
                m = ControllerModel(spec, clock=self.clock, param_names=error_names(spec.drive))
                m.watchdog_timeout_ds = int(round(self.watchdog_s * 10))
                models.append(m)
            b = self.field.buses.get(bname)
            bus = EmulatedBus(
                models,
                baudrate=b.baudrate if b else 115200,
                parity=b.parity if b else "N",
                stopbits=b.stopbits if b else 1,
                faults=self.faults,
                seed=self.seed + i,
                timing=self.timing,
            )
            bus._lock = self.lock  # one lock over every controller of the plant
            self.buses[bname] = bus
            by_addr = {m.spec.address: m for m in models}
            for hid, h in self.field.heliostats.items():
                if h.bus == bname:
                    self.controllers[hid] = by_addr[h.address]
        self._camera = SimulatedCamera(
            self.field,
            self.camera,
            self.target,
            self.truth,
            self.controllers,
            np.random.default_rng(self.seed),
            boards=self.boards,
            lock=self.lock,
        )
        self._tcp_servers: list[TcpServer] = []
        self._announced: list[str] = []
        self.endpoints: dict[str, BusEndpoints] = {}
        self.control_address = ""
        self._n_frames = 0
        self._started = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> dict[str, BusEndpoints]:
        """Open the ptys and TCP listeners; returns the endpoints by bus name."""
        if self._started:
            return self.endpoints
        self._started = True
        try:
            for i, (bname, bus) in enumerate(self.buses.items()):
                pty = bus.start(announce_port=False)
                ep = BusEndpoints(bname, sorted(bus.controllers), pty)
                if self.tcp is not None:
                    host, port = self.tcp
                    srv = RtuTcpServer(bus, host, port + i if port else 0, self.lock)
                    self._tcp_servers.append(srv)
                    ep.rtu_tcp = f"socket://{srv.address}"
                if self.modbus_tcp is not None:
                    host, port = self.modbus_tcp
                    srv = ModbusTcpServer(bus, host, port + i if port else 0, self.lock)
                    self._tcp_servers.append(srv)
                    ep.modbus_tcp = srv.address
                self.endpoints[bname] = ep
            if self.control is not None:
                ctl = ControlServer(self, *self.control)
                self._tcp_servers.append(ctl)
                self.control_address = ctl.address
            for srv in self._tcp_servers:
                srv.start()
            if self.announce_ports:
                ports = [e.pty for e in self.endpoints.values()]
                ports += [e.rtu_tcp for e in self.endpoints.values() if e.rtu_tcp]
                announce(ports)
                self._announced = ports
            for d in (self.frames_dir, self.trigger_dir):
                if d is not None:
                    Path(d).mkdir(parents=True, exist_ok=True)
        except BaseException:
            self.stop()
            raise
        return self.endpoints

    def stop(self) -> None:
        """Close every port and withdraw the announcement (safe to call twice)."""
        for srv in self._tcp_servers:
            srv.stop()
        self._tcp_servers.clear()
        for bus in self.buses.values():
            bus.stop()
        if self._announced:
            withdraw(self._announced)
            self._announced = []

    def __enter__(self) -> PlantServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def field_with_ports(self, kind: str = "pty"):
        """The field with each bus's port set to where it is served now.

        ``kind``: ``"pty"`` or ``"rtu_tcp"`` (``socket://`` URLs).
        """
        from dataclasses import replace

        buses = {}
        for name, b in self.field.buses.items():
            ep = self.endpoints.get(name)
            port = getattr(ep, kind) if ep is not None else b.port
            buses[name] = replace(b, port=port or b.port)
        return replace(self.field, buses=buses)

    # ------------------------------------------------------------------ camera
    def _write(self, img, stem: str, truth: dict, folder=None) -> Path:
        import cv2

        d = Path(folder or self.frames_dir)
        tmp = d / f".{stem}.png"
        if not cv2.imwrite(str(tmp), img):
            raise OSError(f"{tmp}: could not write the frame")
        (d / f".{stem}.json").write_text(json.dumps(truth, indent=1))
        (d / f".{stem}.json").replace(d / f"{stem}.json")
        tmp.replace(d / f"{stem}.png")  # the frame appears last, complete
        return d / f"{stem}.png"

    def trigger(self, request) -> tuple[np.ndarray, Path | None]:
        """Take the frame a campaign asks for (a :class:`CaptureRequest`) now, write it
        into the watched folder with its truth; returns the image and the file."""
        img = self._camera.capture(request)
        self._n_frames += 1
        t = self.clock.now_utc()
        truth = {
            "time_utc": t.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "heliostat": request.heliostat_id,
            "phase": request.phase,
        }
        lt = self._camera.last_truth
        if request.phase == "on" and lt is not None:
            truth["centroid_xy_m"] = [float(v) for v in lt.centroid_xy_m]
            truth["centroid_px"] = [float(v) for v in lt.centroid_px]
            truth["fraction_on_target"] = float(lt.fraction_on_target)
        folder = self.trigger_dir or self.frames_dir
        if folder is None:
            return img, None
        stem = f"{self._n_frames:06d}_{request.heliostat_id}_{request.phase}"
        return img, self._write(img, stem, truth, folder)

    def truth_dict(self) -> dict:
        """The hidden true errors as ``truth.json`` content."""
        from sim.field import truth_to_dict

        return truth_to_dict(self.truth, seed=self.seed)

    def snapshot(self) -> tuple[np.ndarray, dict, Path | None]:
        """A free-running camera frame now: every beam on the target plane drawn,
        auto-exposed; truth per heliostat whose beam lands on the target."""
        from heliostat.campaign.sources import CaptureRequest
        from sim.camera import render_frame

        t = self.clock.now_utc()
        spots, ids = [], []
        for hid in self.controllers:
            spot = self._camera._spot(CaptureRequest(hid, "snap", "", t))
            if spot is not None and self.target.contains(spot.centre_xy_m[None])[0]:
                spots.append(spot)
                ids.append(hid)
        img, truths = render_frame(self.camera, self.target, spots, rng=self._camera.rng)
        truth = {
            "time_utc": t.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "spots": {
                hid: {
                    "centroid_xy_m": [float(v) for v in tr.centroid_xy_m],
                    "centroid_px": [float(v) for v in tr.centroid_px],
                    "fraction_on_target": float(tr.fraction_on_target),
                }
                for hid, tr in zip(ids, truths, strict=True)
            },
        }
        self._n_frames += 1
        if self.frames_dir is None:
            return img, truth, None
        stem = f"{t.strftime('%Y%m%dT%H%M%S')}_{self._n_frames:06d}"
        return img, truth, self._write(img, stem, truth)


class TriggeredFolderSource:
    """The campaign's camera against a served plant: each request triggers the server's
    camera (a :class:`PlantServer` in process or a :class:`RemoteCamera`), which writes
    into the watched folder; the frame is then taken back through the plant's own
    :class:`~heliostat.campaign.sources.FolderSource` (as with a hardware-triggered camera
    and its vendor's program)."""

    def __init__(self, server, folder_source) -> None:
        self.server, self.source = server, folder_source

    def capture(self, request):
        self.server.trigger(request)
        return self.source.capture(request)

    def close(self) -> None:
        self.source.close()


class ControlServer(TcpServer):
    """The served plant's control endpoint: one JSON object per line each way.

    Requests: ``{"op": "now"}``; ``{"op": "sleep", "s": 30}`` (jump the clock);
    ``{"op": "trigger", "heliostat": "H001", "phase": "on", "slot": "..."}`` (take a
    frame now into the trigger folder); ``{"op": "truth"}``. Replies carry ``"ok"`` and
    ``"t_s"`` / ``"time_utc"`` (the clock after the request), or ``"error"``.
    """

    kind = "control"

    def __init__(self, server: PlantServer, host: str, port: int) -> None:
        super().__init__(host, port, server.lock)
        self.server = server

    def _handle(self, req: dict) -> dict:
        from heliostat.campaign.sources import CaptureRequest

        srv, op = self.server, req.get("op")
        out: dict = {"ok": True}
        if op == "now":
            pass
        elif op == "sleep":
            srv.clock.sleep(float(req["s"]))
        elif op == "trigger":
            if req.get("phase") not in ("on", "off"):
                raise ValueError(f"phase must be 'on' or 'off', got {req.get('phase')!r}")
            hid = str(req["heliostat"])
            if hid not in srv.controllers:
                raise ValueError(f"no heliostat {hid!r} in the served field")
            creq = CaptureRequest(hid, req["phase"], str(req.get("slot", "")), srv.clock.now_utc())
            _, path = srv.trigger(creq)
            out["frame"] = str(path) if path else ""
        elif op == "truth":
            out["truth"] = srv.truth_dict()
        else:
            raise ValueError(f"unknown op {op!r} (now, sleep, trigger, truth)")
        t = srv.clock()
        out.update(t_s=t, time_utc=(srv.clock.start_utc + pd.Timedelta(seconds=t)).isoformat())
        return out

    def _serve_conn(self, conn: socket.socket) -> None:
        f = conn.makefile("rwb")
        conn.settimeout(None)
        while not self._stop.is_set():
            line = f.readline()
            if not line:
                return
            try:
                out = self._handle(json.loads(line))
            except (ValueError, KeyError, TypeError) as exc:
                out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            f.write((json.dumps(out) + "\n").encode())
            f.flush()


class ControlClient:
    """A connection to a served plant's control endpoint (``HOST:PORT``)."""

    def __init__(self, address: str, timeout_s: float = 60.0) -> None:
        host, port = parse_host_port(address, "control")
        try:
            self._sock = socket.create_connection((host, port), timeout=timeout_s)
        except OSError as exc:
            raise ConnectionError(
                f"served plant at {address}: cannot connect ({exc.strerror or exc}); "
                "is `heliostat sim serve` running?"
            ) from None
        self._f = self._sock.makefile("rwb")
        self._lock = threading.Lock()

    def call(self, op: str, **kw) -> dict:
        with self._lock:
            try:
                self._f.write((json.dumps({"op": op, **kw}) + "\n").encode())
                self._f.flush()
                line = self._f.readline()
            except OSError as exc:
                raise ConnectionError(f"served plant: {exc}") from None
        if not line:
            raise ConnectionError("served plant: connection closed (did `sim serve` stop?)")
        out = json.loads(line)
        if not out.get("ok"):
            raise ValueError(f"served plant refused {op!r}: {out.get('error')}")
        return out

    def close(self) -> None:
        self._f.close()
        self._sock.close()


class RemoteClock:
    """The served plant's clock, as a campaign :class:`~heliostat.campaign.schedule.Clock`:
    ``sleep`` jumps the served clock (controllers and camera follow)."""

    def __init__(self, client: ControlClient) -> None:
        self.client = client

    def now_utc(self) -> pd.Timestamp:
        return pd.Timestamp(self.client.call("now")["time_utc"]).tz_convert("UTC")

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.client.call("sleep", s=float(seconds))


class RemoteCamera:
    """Triggers the served camera (it writes into its trigger folder)."""

    def __init__(self, client: ControlClient) -> None:
        self.client = client

    def trigger(self, request) -> None:
        self.client.call(
            "trigger", heliostat=request.heliostat_id, phase=request.phase, slot=request.slot
        )


def draw_or_load_truth(field, truth_path: str | Path | None, seed: int) -> dict:
    """True errors from ``truth.json`` or drawn from ``seed``."""
    from sim.field import draw_truth, load_truth

    if truth_path:
        return load_truth(truth_path, field)
    return draw_truth(field, np.random.default_rng(seed))
