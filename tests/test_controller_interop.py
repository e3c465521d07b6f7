"""Interoperability: third-party Modbus masters drive our emulator, and our bridge drives
a controller served by pymodbus's own server — over real pty serial lines."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
from pymodbus.client import ModbusSerialClient

from firmware_bridge import registers as R
from firmware_bridge.delivery import ActuatorCommand, Bridge
from firmware_bridge.errors import ControllerRejected
from firmware_bridge.transport import ModbusLink
from sim.controller_fixtures import PtyNullModem, ReferenceServer
from sim.controllers import ControllerModel, ControllerSpec, EmulatedBus


@pytest.fixture
def bus():
    ctls = [ControllerModel(ControllerSpec(address=a, slew_steps_per_s=(1e6, 1e6))) for a in (1, 2)]
    with EmulatedBus(ctls, timing=False) as b:
        yield b


def test_stock_pymodbus_client_reads_and_writes_our_emulator(bus):
    client = ModbusSerialClient(bus.port, baudrate=115200, timeout=0.5, retries=0)
    assert client.connect()
    try:
        ident = client.read_holding_registers(R.IDENTITY_START, count=R.IDENTITY_COUNT, device_id=2)
        assert ident.registers[R.REG_MAGIC] == R.MAGIC
        regs = R.encode_command(77, R.CommandCode.MOVE, (-1500, 45000))
        rr = client.write_registers(R.COMMAND_START, regs, device_id=2)
        assert not rr.isError() and rr.count == R.COMMAND_COUNT
        # Status is readable both as holding (FC3) and as input registers (FC4).
        for read in (client.read_holding_registers, client.read_input_registers):
            st = R.Status.from_registers(
                read(R.STATUS_START, count=R.STATUS_COUNT, device_id=2).registers
            )
            assert st.last_command_id == 77 and st.target_steps == (-1500, 45000)
        # The other controller on the bus was not touched.
        st1 = R.Status.from_registers(
            client.read_holding_registers(
                R.STATUS_START, count=R.STATUS_COUNT, device_id=1
            ).registers
        )
        assert st1.last_command_id == 0
        # An address nobody has: silence (timeout), not an answer from someone else.
        with pytest.raises(Exception, match="No response"):
            client.read_holding_registers(0, count=1, device_id=9)
        # Writing a read-only register is an exception 2 (illegal data address).
        rr = client.write_register(R.REG_FLAGS, 1, device_id=1)
        assert rr.isError() and rr.exception_code == 2
    finally:
        client.close()


@pytest.mark.skipif(shutil.which("mbpoll") is None, reason="mbpoll is not installed")
def test_mbpoll_reads_status_and_writes_setpoints(bus):
    base = ["mbpoll", "-m", "rtu", "-b", "115200", "-P", "none", "-1", "-o", "1"]
    # mbpoll counts registers from 1 (-0 would use PDU addresses).
    cmd = R.encode_command(4242, R.CommandCode.MOVE, (1234, 5678))
    w = subprocess.run(
        base
        + ["-a", "1", "-t", "4", "-r", str(R.COMMAND_START + 1), bus.port]
        + [str(v) for v in cmd],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert w.returncode == 0, w.stdout + w.stderr
    r = subprocess.run(
        base + ["-a", "1", "-t", "4", "-r", str(R.REG_LAST_CMD_ID + 1), "-c", "2", bus.port],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    vals = [int(line.split(":")[1]) for line in r.stdout.splitlines() if line.startswith("[")]
    assert R.regs_to_u32(vals) == 4242
    assert bus.controllers[1].target_steps == [1234, 5678]


def test_bridge_drives_a_pymodbus_server_with_our_register_layout():
    with PtyNullModem() as cable, ReferenceServer(cable.port_a, addresses=(5,)):
        with ModbusLink(cable.port_b, timeout_s=0.5) as link:
            br = Bridge(link)
            assert br.identity(5)["drive"] == "azel"
            out = br.deliver(ActuatorCommand("X", 5, "move", (100, 200)), 42)
            assert out.state == "confirmed"
            st = br.status(5)
            assert st.last_command_id == 42 and st.target_steps == (100, 200)
            params = tuple(float(v) for v in (1e-3, -2e-3, 5e-4) + (0.0,) * 12)
            assert br.deliver(ActuatorCommand("X", 5, "params", params=params), 43).state == (
                "confirmed"
            )
            out = br.deliver(ActuatorCommand("X", 5, "move", (100, 99999)), 44)
            assert out.state == "rejected" and out.exception_code == 3
            assert "SETPOINT_OUT_OF_LIMITS" in out.detail
            with pytest.raises(ControllerRejected) as exc:
                out.raise_for_state()
            assert isinstance(exc.value, IOError) and exc.value.exception_code == 3


def test_unreachable_controller_is_reported_within_a_bound(bus):
    from firmware_bridge.delivery import RetryPolicy

    with ModbusLink(bus.port, timeout_s=0.05, inter_frame_s=0.0) as link:
        br = Bridge(link, retry=RetryPolicy(max_attempts=3, backoff_s=0.01))
        t0 = time.monotonic()
        out = br.deliver(ActuatorCommand("X", 9, "move", (1, 1)), 1)
        dt = time.monotonic() - t0
    assert out.state == "unreachable" and out.attempts == 3
    # 3 attempts × (timeout 0.05 s, one request each) + back-off 0.01 + 0.02 s = 0.18 s;
    # allow 2 s for a loaded CI host — the point is that it ends, not how fast.
    assert dt < 2.0
    assert br.health[9].consecutive_failures == 1 and br.health[9].last_seen_utc is None


def test_pymodbus_own_write_retry_cannot_double_a_command(bus):
    # pymodbus's client re-sends a request whose reply it did not get (retries=3 by
    # default). Lose the first reply to a command write: the client re-sends the same
    # frame, the controller recognises the command id and does not apply it again.
    orig = bus.handle_frame
    seen = {"n": 0}

    def lose_first_reply(raw):
        reply, late = orig(raw)
        seen["n"] += 1
        return (None, 0.0) if seen["n"] == 1 else (reply, late)

    bus.handle_frame = lose_first_reply
    client = ModbusSerialClient(bus.port, baudrate=115200, timeout=0.2, retries=3)
    assert client.connect()
    try:
        regs = R.encode_command(31337, R.CommandCode.MOVE, (10, 20))
        rr = client.write_registers(R.COMMAND_START, regs, device_id=1)
        assert not rr.isError() and rr.retries == 1  # pymodbus did retry once
    finally:
        client.close()
    assert seen["n"] == 2
    assert bus.controllers[1].applied_counts[31337] == 1


def test_bridge_reaches_the_bus_through_a_socket_url(bus):
    from sim.controller_fixtures import TcpSerialGateway

    with TcpSerialGateway(bus.port) as gw, ModbusLink(gw.url, timeout_s=0.5) as link:
        assert gw.url.startswith("socket://127.0.0.1:")
        out = Bridge(link).deliver(ActuatorCommand("X", 2, "move", (7, 8)), 99)
    assert out.state == "confirmed" and bus.controllers[2].target_steps == [7, 8]
