"""Register codecs, CRC and line timing of the controller register map."""

from __future__ import annotations

import math

import numpy as np
import pytest

from firmware_bridge import registers as R


def _crc16_modbus_bitwise(data: bytes) -> int:
    """Independent CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF), bit by bit as
    in the Modbus over Serial Line spec V1.02 §6.2.2; returns (low byte << 8) | high byte,
    i.e. the two bytes in wire order."""
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return ((crc & 0xFF) << 8) | (crc >> 8)


def test_crc_matches_spec_example_and_bitwise_reference():
    # A widely published Modbus RTU frame: read 10 holding registers from address 0 of
    # slave 1 is "01 03 00 00 00 0A C5 CD" (CRC low byte first on the wire).
    body = bytes.fromhex("01030000000A")
    assert _crc16_modbus_bitwise(body) == 0xC5CD
    assert R.crc16_regs([0x0103, 0x0000, 0x000A]) == 0xC5CD
    rng = np.random.default_rng(7)
    for _ in range(20):
        regs = [int(x) for x in rng.integers(0, 0x10000, size=int(rng.integers(1, 30)))]
        data = b"".join(r.to_bytes(2, "big") for r in regs)
        assert R.crc16_regs(regs) == _crc16_modbus_bitwise(data)


def _crc16_modbus_catalogue(data: bytes) -> int:
    """CRC-16/MODBUS as the CRC catalogue states it (check value 0x4B37 for b"123456789")."""
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def test_parameter_crc_is_the_catalogue_value_byte_swapped():
    # docs/controller-registers.md "Parameter CRC byte order": CMD_ARG / PARAM_CRC hold
    # CRC-16/MODBUS in wire byte order. The worked examples there, pinned:
    from pymodbus.framer.rtu import FramerRTU

    assert _crc16_modbus_catalogue(b"123456789") == 0x4B37  # the catalogue's check value
    assert FramerRTU.compute_CRC(b"123456789") == 0x374B  # what the bridge computes
    regs = [0x3132, 0x3334, 0x3536, 0x3738]  # ASCII "12345678"
    assert _crc16_modbus_catalogue(b"12345678") == 0x37DD
    assert R.crc16_regs(regs) == 0xDD37
    zeros = R.encode_params([0.0] * 15)  # an az-el block of zeros: 15, then 30 x 0
    assert zeros == [15] + [0] * 30
    assert _crc16_modbus_catalogue(bytes([0, 15]) + bytes(60)) == 0xAE15
    assert R.crc16_regs(zeros) == 0x15AE
    # The register goes big-endian on the wire: the CRC's low byte first, as in a frame.
    cmd = R.encode_command(1, R.CommandCode.APPLY_PARAMS, arg=R.crc16_regs(zeros))
    assert cmd[3].to_bytes(2, "big") == bytes([0xAE15 & 0xFF, 0xAE15 >> 8])


@pytest.mark.parametrize("v", [0, 1, -1, 123456, -123456, R.I32_MIN, R.I32_MAX])
def test_i32_round_trip_and_word_order(v):
    regs = R.i32_to_regs(v)
    assert R.regs_to_i32(regs) == v
    # High word first: -1 is all ones, 65536 is [1, 0].
    assert R.i32_to_regs(65536) == [1, 0]
    assert R.i32_to_regs(-1) == [0xFFFF, 0xFFFF]


def test_codecs_refuse_out_of_range():
    with pytest.raises(ValueError, match="i32"):
        R.i32_to_regs(2**31)
    with pytest.raises(ValueError, match="u32"):
        R.u32_to_regs(-1)
    with pytest.raises(ValueError, match="finite"):
        R.f32_to_regs(math.nan)
    with pytest.raises(ValueError, match="command id"):
        R.encode_command(0, R.CommandCode.STOW)


def test_float32_parameter_block_round_trip():
    vals = [1e-3, -2.5e-4, 0.0, 0.17755, -1e-6]
    back = R.decode_params(R.encode_params(vals))
    # float32 keeps 24 significant bits: relative error ≤ 2**-24.
    np.testing.assert_allclose(back, vals, rtol=2**-24, atol=0)
    assert R.encode_params([1.0])[1:] == [0x3F80, 0x0000]  # IEEE-754: 1.0f = 0x3F800000


def test_command_block_layout():
    regs = R.encode_command(0x12345678, R.CommandCode.MOVE, (-2, 70000))
    assert regs == [0x1234, 0x5678, 1, 0, 0xFFFF, 0xFFFE, 0x0001, 0x1170]
    assert len(regs) == R.COMMAND_COUNT
    assert len(R.encode_command(5, R.CommandCode.STOW)) == R.COMMAND_SHORT_COUNT


def test_status_decode():
    regs = [0] * R.STATUS_COUNT

    def put(reg, vals):
        regs[reg - R.STATUS_START : reg - R.STATUS_START + len(vals)] = vals

    put(R.REG_FLAGS, [int(R.Flag.STOWED | R.Flag.PARAMS_VALID)])
    put(R.REG_LAST_CMD_ID, R.u32_to_regs(4_000_000_000))
    put(R.REG_AXIS1_POS, R.i32_to_regs(-1234))
    put(R.REG_AXIS2_TARGET, R.i32_to_regs(91000))
    put(R.REG_WATCHDOG_LEFT, [0xFFFF])
    put(R.REG_REJECT_CODE, [int(R.RejectCode.SETPOINT_OUT_OF_LIMITS)])
    st = R.Status.from_registers(regs)
    assert st.last_command_id == 4_000_000_000
    assert st.position_steps == (-1234, 0)
    assert st.target_steps == (0, 91000)
    assert st.watchdog_left_s is None
    assert R.Flag.STOWED in st.flags and R.Flag.FAULT not in st.flags
    assert st.reject_code is R.RejectCode.SETPOINT_OUT_OF_LIMITS
    with pytest.raises(ValueError, match="needs 20 registers"):
        R.Status.from_registers(regs[:5])


def test_line_timing():
    # 8N1 = 10 bits per character: 8 bytes at 9600 baud take 8.333 ms.
    assert R.frame_time_s(8, 9600) == pytest.approx(8 * 10 / 9600, rel=1e-12)
    assert R.char_bits("E", 1) == 11
    # t3.5 is 3.5 characters up to 19200 baud, then fixed at 1.75 ms (spec §2.5.1.1).
    assert R.t35_s(9600) == pytest.approx(3.5 * 10 / 9600, rel=1e-12)
    assert R.t35_s(115200) == 1.75e-3
    # Frame sizes: FC16 of 8 registers is 1+1+2+2+1+16+2 bytes; FC3 reply of 20 is 45.
    assert R.fc16_request_bytes(8) == 25
    assert R.fc03_response_bytes(20) == 45


def test_bridge_does_not_import_sim_or_vision():
    import subprocess
    import sys

    code = (
        "import sys, firmware_bridge.delivery, firmware_bridge.safety, firmware_bridge.journal, "
        "firmware_bridge.transport, firmware_bridge.ports, heliostat.commands.bridge\n"
        "bad = [m for m in sys.modules\n"
        "       if m == 'sim' or m.startswith(('sim.', 'heliostat.vision'))]\n"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_unknown_reject_code_decodes_as_unknown_keeping_the_raw_value():
    regs = [0] * R.STATUS_COUNT
    regs[R.REG_REJECT_CODE - R.STATUS_START] = 99  # not a code of map version 1
    st = R.Status.from_registers(regs)
    assert st.reject_code is R.RejectCode.UNKNOWN and st.reject_code != R.RejectCode.NONE
    assert st.reject_code_raw == 99 and st.reject_name == "UNKNOWN(99)"
    assert st.to_dict()["reject_code"] == "UNKNOWN(99)"
    # Known codes keep their names; 0 is still "no rejection".
    regs[R.REG_REJECT_CODE - R.STATUS_START] = 0
    st0 = R.Status.from_registers(regs)
    assert st0.reject_code is R.RejectCode.NONE and st0.reject_name == "NONE"
