"""``heliostat sim serve``, the plant in a box, driven as a user would: started as its own
process, reached over Modbus TCP by ``mbpoll`` and by pymodbus's stock client, over Modbus
RTU-over-TCP (pyserial's ``socket://``) by our bridge, stopped with SIGTERM. Ground truth:
the register map (identity values computed from the field) and the served state files."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

import pandas as pd
import pytest

from firmware_bridge import registers as R
from firmware_bridge.ports import announce_dir, is_simulated
from heliostat.kinematics import error_names
from sim.controller_fixtures import field_toml

MBPOLL = shutil.which("mbpoll")
START_UTC = "2025-06-21T10:00:00Z"
N = 3


class Served:
    """A ``heliostat sim serve`` process and its ``served.json``."""

    def __init__(self, tmp: Path) -> None:
        from sim.plant import make_sim_plant

        # a plant's config folder (its own bus port is a pty that is gone): sim serve
        # serves its field through its camera, a campaign can rehearse against it
        make_sim_plant(tmp / "plant", n=N).stop()
        self.plant = tmp / "plant"
        self.out = tmp / "out"
        cmd = [
            sys.executable, "-m", "heliostat.cli", "sim", "serve",
            "--field", str(self.plant / "field.toml"), "--out", str(self.out),
            "--camera", str(self.plant / "camera.toml"),
            "--tcp", "127.0.0.1:0", "--modbus-tcp", "127.0.0.1:0",
            "--start", START_UTC, "--frame-interval-s", "0.5", "--no-timing", "--seed", "3",
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        state = self.out / "served.json"
        deadline = time.monotonic() + 180  # imports take long on a loaded 2-core host
        while not state.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                out, err = self.proc.communicate()
                raise RuntimeError(f"sim serve did not start: rc {self.proc.returncode}\n{err}")
            time.sleep(0.2)
        self.doc = json.loads(state.read_text())
        bus = self.doc["buses"]["bus1"]
        self.mtcp_host, port = bus["modbus_tcp"].rsplit(":", 1)
        self.mtcp_port = int(port)
        self.rtu_url = bus["rtu_tcp"]
        self.rc: int | None = None

    def stop(self) -> int:
        if self.rc is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.rc = self.proc.returncode
        return self.rc


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    s = Served(tmp_path_factory.mktemp("serve"))
    try:
        yield s
    finally:
        s.stop()


def _expected_identity(address: int) -> list[int]:
    """The identity block the register map defines for controller ``address`` of the
    field (serial: the first 28 bits of SHA-256 of the heliostat id)."""
    import hashlib

    serial = int(hashlib.sha256(f"H{address:03d}".encode()).hexdigest()[:7], 16)
    n = len(error_names("azel"))  # MAX_PARAMS: the az-el parameter block (17)
    return [R.MAGIC, R.MAP_VERSION, 0x0100, 0, R.drive_code("azel"), n, *R.u32_to_regs(serial)]


@pytest.mark.skipif(MBPOLL is None, reason="mbpoll not installed (apt-get install mbpoll)")
def test_mbpoll_reads_and_writes_over_modbus_tcp(served):
    base = [MBPOLL, "-m", "tcp", "-p", str(served.mtcp_port), "-0", "-1"]
    read = subprocess.run(
        [*base, "-a", f"1:{N}", "-t", "3", "-r", "0", "-c", "8", served.mtcp_host],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert read.returncode == 0, read.stderr
    blocks = re.split(r"-- Polling slave (\d+)\.\.\.", read.stdout)[1:]
    got = {
        int(a): [int(v) & 0xFFFF for v in re.findall(r"^\[\d+\]:\s+(-?\d+)", txt, re.M)]
        for a, txt in zip(blocks[::2], blocks[1::2], strict=True)
    }
    # (& 0xFFFF above: read as unsigned whether mbpoll prints them signed or not)
    want = {a: _expected_identity(a) for a in got}
    assert sorted(got) == list(range(1, N + 1))
    assert got == want
    # a write of the watchdog timeout (holding register 48, 0.1 s units), read back
    write = subprocess.run(
        [*base, "-a", "2", "-t", "4", "-r", str(R.REG_WATCHDOG_TIMEOUT), served.mtcp_host, "1234"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert write.returncode == 0, write.stderr
    back = subprocess.run(
        [*base, "-a", "2", "-t", "4", "-r", str(R.REG_WATCHDOG_TIMEOUT), "-c", "1",
         served.mtcp_host],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert re.search(rf"^\[{R.REG_WATCHDOG_TIMEOUT}\]:\s+1234$", back.stdout, re.M), back.stdout


def test_stock_pymodbus_tcp_client(served):
    from pymodbus.client import ModbusTcpClient

    c = ModbusTcpClient(served.mtcp_host, port=served.mtcp_port, timeout=5, retries=0)
    assert c.connect()
    try:
        for a in range(1, N + 1):
            rr = c.read_input_registers(0, count=8, device_id=a)
            assert not rr.isError(), rr
            assert rr.registers == _expected_identity(a)
        # a unit nobody answers for: the gateway's "target device failed to respond"
        rr = c.read_input_registers(0, count=8, device_id=N + 1)
        assert rr.isError() and rr.exception_code == 0x0B
        # an address outside the map: the controller's own "illegal data address"
        rr = c.read_holding_registers(R.MAP_END, count=2, device_id=1)
        assert rr.isError() and rr.exception_code == 2
    finally:
        c.close()


def test_our_bridge_over_rtu_over_tcp(served):
    from heliostat.cli import main

    assert is_simulated(served.rtu_url)  # announced while served: writes need no --yes
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(["bridge", "ping", "--port", served.rtu_url, "--address", "3", "--json"])
    assert rc == 0, buf.getvalue()
    (row,) = json.loads(buf.getvalue())
    ident = _expected_identity(3)
    assert row["ok"] and row["drive"] == "azel" and row["n_params"] == len(error_names("azel"))
    assert row["serial"] == R.regs_to_u32(ident[6:8])
    field = served.doc["served_field"]
    assert served.rtu_url in Path(field).read_text()
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(
            ["bridge", "move", "--field", field, "--heliostat", "H002",
             "--axis1-steps", "1000", "--axis2-steps", "20000"]
        )  # fmt: skip
    assert rc == 0, buf.getvalue()
    from pymodbus.client import ModbusTcpClient

    c = ModbusTcpClient(served.mtcp_host, port=served.mtcp_port, timeout=5, retries=0)
    assert c.connect()
    try:
        rr = c.read_input_registers(R.REG_AXIS1_TARGET, count=4, device_id=2)
    finally:
        c.close()
    assert [R.regs_to_i32(rr.registers[0:2]), R.regs_to_i32(rr.registers[2:4])] == [1000, 20000]


def test_a_campaign_in_another_process_follows_the_served_clock(served, capsys):
    from heliostat.cli import main

    served_json = str(served.out / "served.json")
    argv = ["campaign", "--config", str(served.plant / "plant.toml"), "--simulate",
            "--served", served_json, "--hours", "1", "--no-corrections", "--json"]  # fmt: skip
    assert main(argv) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)
    # the hour from about 10:00 UTC in June (the served clock ran at x1 since its start,
    # so the hour reaches a little into the 11:00 slot): all of the 10:00 slot observed
    n_obs = summary["outcomes"]["observed"]
    assert set(summary["outcomes"]) == {"observed"} and N <= n_obs < 2 * N
    t0, t1 = pd.Timestamp(summary["start_utc"]), pd.Timestamp(summary["end_utc"])
    assert t0 >= pd.Timestamp(START_UTC) and t1 - t0 >= pd.Timedelta(hours=1)  # served time
    assert t1 - t0 < pd.Timedelta(hours=2)
    trig = sorted((served.out / "triggered").glob("*.png"))
    assert len(trig) == 2 * n_obs  # a sun-on and a sun-off frame per visit, on trigger
    assert "against the served plant" in err and "no heliostat fitted" in err  # 1 h: too few


def test_camera_frames_follow_the_simulated_clock(served):
    frames = Path(served.doc["frames_dir"])
    deadline = time.monotonic() + 60
    while not list(frames.glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    truths = sorted(frames.glob("*.json"))
    assert truths, "no frame written"
    doc = json.loads(truths[0].read_text())
    assert doc["time_utc"].startswith("2025-06-21T10:0")  # the served clock, not the host's
    assert truths[0].with_suffix(".png").exists()


def test_sigterm_stops_cleanly_and_withdraws_the_ports(served):
    pid = served.proc.pid
    assert (announce_dir() / f"{pid}.json").exists()
    assert served.stop() == 0
    assert not (served.out / "served.json").exists()
    assert not (served.out / "served-field.toml").exists()
    assert not (announce_dir() / f"{pid}.json").exists()
    assert not is_simulated(served.rtu_url)
    _, err = served.proc.communicate()
    assert "Traceback" not in err


def test_bad_options_are_one_line_errors(tmp_path, capsys):
    from heliostat.cli import main

    (tmp_path / "field.toml").write_text(field_toml(1))
    f = str(tmp_path / "field.toml")
    assert main(["sim", "serve", "--field", f, "--tcp", "localhost"]) == 2
    assert "--tcp: expected HOST:PORT" in capsys.readouterr().err
    assert main(["sim", "serve", "--field", f, "--start", "2025-06-21T10:00:00"]) == 2
    assert "--start '2025-06-21T10:00:00' has no timezone" in capsys.readouterr().err
    assert main(["sim", "serve", "--field", f, "--drop-p", "2"]) == 2
    assert "--drop-p must be in [0, 1]" in capsys.readouterr().err
    assert os.listdir(tmp_path) == ["field.toml"]  # nothing served, nothing written


# --------------------------------------------------------------------------- in process
def _server(n=2, per_bus=247, **kw):
    import numpy as np

    from sim.camera import place_camera
    from sim.campaign import pick_target
    from sim.field import generate_field
    from sim.serve import PlantServer, ServeClock, draw_or_load_truth

    field = generate_field(n, np.random.default_rng(1), drives="azel", per_bus=per_bus)
    target = pick_target(field)
    cam = place_camera(field, target, width_px=128, height_px=104)
    clock = ServeClock(START_UTC, speed=0.0)
    return PlantServer(
        field, draw_or_load_truth(field, None, 0), cam, target, None, clock, timing=False, **kw
    )


def _read_identity_rtu(address: int) -> bytes:
    from pymodbus.framer.rtu import FramerRTU
    from pymodbus.pdu import DecodePDU
    from pymodbus.pdu.register_message import ReadInputRegistersRequest

    req = ReadInputRegistersRequest(address=0, count=8, dev_id=address)
    return FramerRTU(DecodePDU(False)).buildFrame(req)


def test_rtu_over_tcp_answers_back_to_back_frames_in_one_segment():
    import socket

    from pymodbus.framer.rtu import FramerRTU
    from pymodbus.pdu import DecodePDU

    with _server(n=2, tcp=("127.0.0.1", 0)) as srv:
        host, port = srv.endpoints["bus1"].rtu_tcp.removeprefix("socket://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(_read_identity_rtu(1) + _read_identity_rtu(2))  # one TCP segment
            data = b""
            while len(data) < 2 * 21:  # two replies of 1 + 1 + 1 + 16 + 2 bytes
                data += s.recv(4096)
    framer = FramerRTU(DecodePDU(False))
    got = []
    for chunk in (data[:21], data[21:]):
        used, dev_id, _, pdu = framer.decode(chunk)
        assert used == 21
        got.append((dev_id, framer.decoder.decode(pdu).registers[0]))
    assert got == [(1, R.MAGIC), (2, R.MAGIC)]


def test_modbus_tcp_gateway_reports_a_lost_frame_as_exception_0x0b():
    from pymodbus.client import ModbusTcpClient

    from sim.controllers import FaultProfile

    with _server(n=1, modbus_tcp=("127.0.0.1", 0), faults=FaultProfile(drop_p=1.0)) as srv:
        host, port = srv.endpoints["bus1"].modbus_tcp.rsplit(":", 1)
        c = ModbusTcpClient(host, port=int(port), timeout=5, retries=0)
        assert c.connect()
        try:
            rr = c.read_input_registers(0, count=8, device_id=1)
        finally:
            c.close()
        assert rr.isError() and rr.exception_code == 0x0B
        assert srv.buses["bus1"].stats.dropped == 1  # the line lost the request


def test_each_bus_gets_its_own_ports_and_the_served_field_points_at_them():
    # 3 heliostats, 2 per bus: bus1 (addresses 1, 2) and bus2 (address 1)
    with _server(n=3, per_bus=2, tcp=("127.0.0.1", 0), modbus_tcp=("127.0.0.1", 0)) as srv:
        eps = srv.endpoints
        assert [eps[b].addresses for b in ("bus1", "bus2")] == [[1, 2], [1]]
        urls = {eps[b].rtu_tcp for b in eps} | {eps[b].modbus_tcp for b in eps}
        assert len(urls) == 4  # no two endpoints share a port
        f = srv.field_with_ports("rtu_tcp")
        assert {b: f.buses[b].port for b in f.buses} == {b: eps[b].rtu_tcp for b in eps}
        assert all(is_simulated(eps[b].pty) and is_simulated(eps[b].rtu_tcp) for b in eps)
    assert not any(is_simulated(eps[b].pty) or is_simulated(eps[b].rtu_tcp) for b in eps)


def test_serve_clock_runs_at_its_speed_and_jumps_when_a_campaign_waits():
    from sim.serve import ServeClock

    real = [100.0]
    c = ServeClock("2025-06-21T10:00:00Z", speed=60.0, monotonic=lambda: real[0])
    real[0] += 2.0  # two real seconds: two simulated minutes
    assert c() == 120.0
    c.sleep(30.0)
    assert c.now_utc() == pd.Timestamp("2025-06-21T10:02:30Z")
    with pytest.raises(ValueError, match="backwards"):
        c.advance(-1.0)
    with pytest.raises(ValueError, match="speed"):
        ServeClock("2025-06-21T10:00:00Z", speed=-1.0)
