"""The emulated controller's physics and command handling, on an injected clock."""

from __future__ import annotations

import pytest
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    WriteMultipleRegistersRequest,
)

from firmware_bridge import registers as R
from heliostat.kinematics import error_names
from sim.controllers import ControllerModel, ControllerSpec, EmulatedBus, ManualClock


def _ctl(**kw):
    clock = ManualClock()
    spec = ControllerSpec(address=7, start_steps=(0, 0), **kw)
    return ControllerModel(spec, clock=clock, param_names=error_names("azel")), clock


def _write(c, start, regs):
    return c.handle(WriteMultipleRegistersRequest(address=start, registers=regs, dev_id=7))


def _status(c) -> R.Status:
    rr = c.handle(ReadHoldingRegistersRequest(address=R.STATUS_START, count=R.STATUS_COUNT))
    return R.Status.from_registers(rr.registers)


def test_slew_rate_and_arrival():
    c, clock = _ctl(slew_steps_per_s=(1000.0, 500.0), backlash_steps=(0.0, 0.0))
    _write(c, R.COMMAND_START, R.encode_command(1, R.CommandCode.MOVE, (3000, -1000)))
    clock.advance(1.0)
    st = _status(c)
    # After 1 s at 1000 and 500 steps/s: exactly 1000 and -500 steps travelled.
    assert st.position_steps == (1000, -500)
    assert R.Flag.AXIS1_MOVING in st.flags and R.Flag.AXIS2_MOVING in st.flags
    clock.advance(10.0)
    st = _status(c)
    assert st.position_steps == (3000, -1000)
    assert not st.flags & (R.Flag.AXIS1_MOVING | R.Flag.AXIS2_MOVING)
    assert st.last_command_id == 1


def test_backlash_output_lags_motor_on_reversal():
    c, clock = _ctl(slew_steps_per_s=(1e6, 1e6), backlash_steps=(40.0, 0.0))
    _write(c, R.COMMAND_START, R.encode_command(1, R.CommandCode.MOVE, (1000, 0)))
    clock.advance(1.0)
    c.advance()
    # Moving up, the output trails the motor by half the dead band.
    assert c.output_steps[0] == pytest.approx(980.0)
    _write(c, R.COMMAND_START, R.encode_command(2, R.CommandCode.MOVE, (990, 0)))
    clock.advance(1.0)
    c.advance()
    # A 10-step reversal stays inside the 40-step dead band: the output does not move.
    assert c.motor_steps[0] == 990 and c.output_steps[0] == pytest.approx(980.0)


def test_limits_reject_and_nothing_moves():
    c, clock = _ctl()
    rr = _write(c, R.COMMAND_START, R.encode_command(9, R.CommandCode.MOVE, (0, 92001)))
    assert rr.isError() and rr.exception_code == 3
    st = _status(c)
    assert st.reject_code is R.RejectCode.SETPOINT_OUT_OF_LIMITS
    assert st.rejected_command_id == 9 and st.last_command_id == 0
    assert c.target_steps == [0, 0] and c.applied == []


def test_repeated_command_id_is_not_applied_twice_and_reuse_is_refused():
    c, clock = _ctl()
    regs = R.encode_command(5, R.CommandCode.MOVE, (100, 200))
    assert not _write(c, R.COMMAND_START, regs).isError()
    assert not _write(c, R.COMMAND_START, regs).isError()  # a retried frame: acknowledged
    assert c.applied_counts[5] == 1
    other = R.encode_command(5, R.CommandCode.MOVE, (300, 200))
    rr = _write(c, R.COMMAND_START, other)
    assert rr.isError() and _status(c).reject_code is R.RejectCode.COMMAND_ID_REUSED
    assert c.target_steps == [100, 200]


def test_reset_keeps_command_history_and_targets():
    c, clock = _ctl()
    regs = R.encode_command(11, R.CommandCode.MOVE, (500, 600))
    _write(c, R.COMMAND_START, regs)
    c.reset(boot_s=0.5)
    assert c.handle(ReadHoldingRegistersRequest(address=16, count=4)) is None  # booting
    clock.advance(0.6)
    st = _status(c)
    assert st.boot_count == 1 and st.last_command_id == 11
    assert st.target_steps == (500, 600) and R.Flag.BOOTED in st.flags
    _write(c, R.COMMAND_START, regs)  # the bridge retrying after the reset
    assert c.applied_counts[11] == 1


def test_watchdog_stows_after_silence():
    c, clock = _ctl(slew_steps_per_s=(1e6, 1e6))
    _write(c, R.REG_WATCHDOG_TIMEOUT, [20])  # 2.0 s
    _write(c, R.COMMAND_START, R.encode_command(1, R.CommandCode.MOVE, (100, 100)))
    clock.advance(1.9)
    c.advance()
    assert c.target_steps == [100, 100]
    clock.advance(0.2)  # 2.1 s without a frame
    st = _status(c)
    assert R.Flag.WATCHDOG_EXPIRED in st.flags
    assert st.target_steps == c.spec.stow_steps
    # A new move is accepted and clears the expiry.
    _write(c, R.COMMAND_START, R.encode_command(2, R.CommandCode.MOVE, (5, 5)))
    assert R.Flag.WATCHDOG_EXPIRED not in _status(c).flags


def test_parameter_set_needs_matching_crc_and_plausible_values():
    c, _ = _ctl()
    vals = [1e-3] * len(error_names("azel"))
    block = R.encode_params(vals)
    _write(c, R.REG_PARAM_STAGING, block)
    rr = _write(c, R.COMMAND_START, R.encode_command(3, R.CommandCode.APPLY_PARAMS, arg=1234))
    assert rr.isError() and _status(c).reject_code is R.RejectCode.PARAM_CRC_MISMATCH
    crc = R.crc16_regs(block)
    assert not _write(
        c, R.COMMAND_START, R.encode_command(4, R.CommandCode.APPLY_PARAMS, arg=crc)
    ).isError()
    st = _status(c)
    assert st.param_set_id == 4 and R.Flag.PARAMS_VALID in st.flags
    bad = R.encode_params([0.5] + [0.0] * 14)  # 0.5 rad is no calibration correction
    _write(c, R.REG_PARAM_STAGING, bad)
    rr = _write(
        c, R.COMMAND_START, R.encode_command(6, R.CommandCode.APPLY_PARAMS, arg=R.crc16_regs(bad))
    )
    assert rr.isError() and _status(c).reject_code is R.RejectCode.PARAM_OUT_OF_RANGE
    assert _status(c).param_set_id == 4


def test_bus_answers_only_its_own_addresses():
    from pymodbus.framer.rtu import FramerRTU
    from pymodbus.pdu import DecodePDU

    bus = EmulatedBus([ControllerModel(ControllerSpec(address=a)) for a in (1, 2)], timing=False)
    fr = FramerRTU(DecodePDU(False))
    req = lambda a: fr.buildFrame(ReadHoldingRegistersRequest(address=0, count=2, dev_id=a))  # noqa: E731
    reply, _ = bus.handle_frame(req(2))
    assert reply is not None and reply[0] == 2
    assert bus.handle_frame(req(3)) == (None, 0.0)  # nobody at 3: silence, not an exception
    assert bus.stats.ignored_foreign == 1
    # A single flipped bit fails the CRC: the frame is dropped, never misread.
    bad = bytearray(req(1))
    bad[3] ^= 0x10
    assert bus.handle_frame(bytes(bad)) == (None, 0.0)


@pytest.mark.parametrize("timing", [False, True])
def test_two_requests_in_one_write_are_both_answered(timing):
    """Both frames of one write are served, one after the other. A pty delivers what the
    master wrote, not the line's silences, so the bus takes the second frame as sent
    after the first exchange (it starts when the line is free again) instead of dropping
    it or merging the two into one frame with a bad CRC."""
    import os
    import select

    from pymodbus.framer.rtu import FramerRTU
    from pymodbus.pdu import DecodePDU

    ctls = [ControllerModel(ControllerSpec(address=a)) for a in (1, 2)]
    framer = FramerRTU(DecodePDU(False))
    reqs = [
        framer.buildFrame(ReadHoldingRegistersRequest(address=0, count=8, dev_id=a)) for a in (1, 2)
    ]
    with EmulatedBus(ctls, timing=timing) as bus:
        fd = os.open(bus.port, os.O_RDWR | os.O_NOCTTY)
        try:
            os.write(fd, reqs[0] + reqs[1])
            want = 2 * R.fc03_response_bytes(8)
            got = b""
            while len(got) < want and select.select([fd], [], [], 1.0)[0]:
                got += os.read(fd, 256)
        finally:
            os.close(fd)
    assert bus.stats.frames_in == 2 and bus.stats.replies == 2
    n = R.fc03_response_bytes(8)
    assert len(got) == want
    for k, addr in enumerate((1, 2)):
        used, dev_id, _, data = framer.decode(got[k * n : (k + 1) * n])
        assert used and dev_id == addr and data[0] == 3  # function code 3, CRC valid
        regs = [int.from_bytes(data[2 + 2 * i : 4 + 2 * i], "big") for i in range(8)]
        assert regs[R.REG_MAGIC] == R.MAGIC
